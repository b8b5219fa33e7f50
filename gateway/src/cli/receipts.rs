//! `fedx receipts …`: checking signed verification receipts offline, and publishing the keys to check
//! them with. The format and the checks are defined in [`crate::verify::receipt`].
//!
//! Exit status of `fedx receipts verify`: 0 the receipt is valid; 1 it is not (the reason is printed);
//! 2 the command could not decide — bad usage, or the receipt, keys or configuration could not be read.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use fedx_proto::v1 as pb;
use serde_json::{json, Value};

use crate::config::{Config, ConfigError};
use crate::signing::{KeyRing, DEV_KEY_FILE};
use crate::verify::claim::wire_type_name;
use crate::verify::receipt::{
    keys_from_json, keys_to_json, receipt_from_json, timestamp_text, verify_receipt,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptsCommand {
    /// Check a signed receipt offline: the signature over the payload, the key, and the key's validity
    /// at the signing time. Prints whether it is valid and why not; for a valid receipt, what it says:
    /// receipt id, signing time, department, purpose, legal basis, worker_ref, and each claim's type and
    /// verdict. The claim values (names, citizen IDs, employers …) are never printed: they are personal
    /// data, even though the payload carries them.
    #[command(after_help = "\
FILE holds the receipt as grpcurl prints it (proto3 JSON): a SignedReceipt
{\"payload\", \"signature\", \"keyId\", \"signedAt\"}, or a whole JointVerifyResponse, VerifyReceiptRequest
or BatchVerifyResponse containing one. `-` reads standard input.

Exit status: 0 the receipt is valid; 1 it is not valid; 2 bad usage, or the receipt, the keys or the
configuration could not be read.")]
    Verify {
        /// The receipt (JSON), or `-` for standard input.
        file: PathBuf,
        /// Public keys to check against, as printed by `fedx receipts keys --format json` or by grpcurl
        /// for GatewayService/GetSigningKeys [default: this gateway's own keys, from the configuration].
        #[arg(long)]
        keys: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print this gateway's public signing keys (current and retired, with their validity), so that
    /// offices can check its receipts offline. `--format json` gives the shape GetSigningKeys returns,
    /// ready to publish and to pass to `fedx receipts verify --keys`. Public keys only.
    Keys {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// A failure that prevented a decision (unreadable or malformed input, no keys): exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(String);

/// Runs the command. An invalid receipt is an error (exit status 1, after the verdict is printed);
/// everything else that fails is an [`InputError`]. The configuration is loaded only when needed (not
/// with `verify --keys`).
pub fn run(
    command: ReceiptsCommand,
    config: impl FnOnce() -> Result<Config, ConfigError>,
) -> anyhow::Result<()> {
    let invalid = match command {
        ReceiptsCommand::Verify { file, keys, format } => verify(&file, keys.as_deref(), format, config),
        ReceiptsCommand::Keys { format } => print_keys(format, config).map(|()| None),
    }
    .map_err(|e| InputError(format!("{e:#}")))?;
    if let Some(reason) = invalid {
        anyhow::bail!("the receipt is not valid ({reason})");
    }
    Ok(())
}

/// Prints the verdict; returns the reason when the receipt is not valid.
fn verify(
    file: &Path,
    keys_file: Option<&Path>,
    format: Format,
    config: impl FnOnce() -> Result<Config, ConfigError>,
) -> anyhow::Result<Option<String>> {
    let doc = read_json(file)?;
    let receipt = receipt_from_json(&doc).with_context(|| format!("{}", file.display()))?;
    let keys = match keys_file {
        Some(path) => {
            let published =
                keys_from_json(&read_json(path)?).with_context(|| format!("{}", path.display()))?;
            anyhow::ensure!(!published.is_empty(), "{}: the keys list is empty", path.display());
            KeyRing::from_public_keys(published)
        }
        None => {
            let config = config()?;
            // The development key is created on first use; a gateway that has none never signed
            // anything, and a fresh key could not check anything either.
            let dev_key = config.data_dir.join("keys").join(DEV_KEY_FILE);
            if config.signing.key_file.is_none() && !dev_key.exists() {
                anyhow::bail!(
                    "this gateway has no signing key ({} does not exist and signing.key_file is not set): \
                     pass --keys with the signing gateway's published keys",
                    dev_key.display()
                );
            }
            let ring = KeyRing::load(&config.signing, &config.data_dir).context("signing keys")?;
            // Verify with the public halves only.
            KeyRing::from_public_keys(ring.public_keys())
        }
    };
    let response = verify_receipt(&keys, &receipt);
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&verdict_json(&receipt, &response))?),
        Format::Table => print_verdict(&receipt, &response),
    }
    Ok((!response.valid).then(|| reason_name(response.reason)))
}

fn print_keys(format: Format, config: impl FnOnce() -> Result<Config, ConfigError>) -> anyhow::Result<()> {
    let config = config()?;
    let keys = KeyRing::load(&config.signing, &config.data_dir).context("signing keys")?.public_keys();
    let doc = keys_to_json(&keys)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        Format::Table => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header([
                "key id",
                "public key (base64)",
                "valid from",
                "valid until",
            ]);
            for k in doc["keys"].as_array().into_iter().flatten() {
                let text = |name: &str| k.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
                let until = k.get("validUntil").and_then(Value::as_str).unwrap_or("(current)").to_owned();
                table.add_row([text("keyId"), text("publicKey"), text("validFrom"), until]);
            }
            println!("{table}");
            println!("{} key(s); `--format json` prints them for publishing", keys.len());
        }
    }
    Ok(())
}

/// The whole file (or standard input for `-`), as exactly one JSON document.
fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let mut docs = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    let doc = match docs.next() {
        Some(doc) => doc.with_context(|| format!("{}: not JSON", path.display()))?,
        None => anyhow::bail!("{}: empty (expected a JSON document)", path.display()),
    };
    if docs.next().is_some() {
        anyhow::bail!(
            "{}: more than one JSON document (a BatchVerify stream?); save one receipt per file",
            path.display()
        );
    }
    Ok(doc)
}

/// Proto enum value name without its prefix, e.g. BAD_SIGNATURE; the number if unknown.
fn short_name(full: Option<&str>, prefix: &str, value: i32) -> String {
    full.map(|f| f.strip_prefix(prefix).unwrap_or(f).to_owned()).unwrap_or_else(|| value.to_string())
}

fn reason_name(reason: i32) -> String {
    let full = pb::ReceiptInvalidReason::try_from(reason).ok().map(|r| r.as_str_name());
    short_name(full, "RECEIPT_INVALID_REASON_", reason)
}

fn verdict_name(verdict: i32) -> String {
    short_name(pb::Verdict::try_from(verdict).ok().map(|v| v.as_str_name()), "VERDICT_", verdict)
}

fn undetermined_name(reason: i32) -> String {
    if reason == 0 {
        return String::new();
    }
    let full = pb::UndeterminedReason::try_from(reason).ok().map(|r| r.as_str_name());
    short_name(full, "UNDETERMINED_REASON_", reason)
}

fn time_text(ts: Option<&prost_types::Timestamp>) -> String {
    match ts {
        Some(ts) => timestamp_text(ts).unwrap_or_else(|| "(not a valid time)".into()),
        None => "(none)".into(),
    }
}

fn legal_basis_text(basis: Option<&pb::LegalBasis>) -> String {
    match basis.and_then(|b| b.basis.as_ref()) {
        Some(pb::legal_basis::Basis::Statute(s)) => format!("statute: {s}"),
        Some(pb::legal_basis::Basis::ConsentId(id)) => format!("consent: {id}"),
        None => "(none)".into(),
    }
}

/// One row per result: claim type, verdict, undetermined reason, attesting departments. No claim values.
fn result_rows(summary: &pb::ReceiptSummary) -> Vec<[String; 4]> {
    summary
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let claim_type = if r.claim_type.is_empty() {
                summary.claims.get(i).and_then(wire_type_name).unwrap_or("(unknown)").to_owned()
            } else {
                r.claim_type.clone()
            };
            let attested = r
                .attested_by
                .iter()
                .map(|p| format!("{} (as of {})", p.department, time_text(p.as_of.as_ref())))
                .collect::<Vec<_>>()
                .join(", ");
            [claim_type, verdict_name(r.verdict), undetermined_name(r.undetermined_reason), attested]
        })
        .collect()
}

fn explanation(receipt: &pb::SignedReceipt, reason: i32) -> String {
    let key = &receipt.key_id;
    match pb::ReceiptInvalidReason::try_from(reason) {
        Ok(pb::ReceiptInvalidReason::UnknownKey) => format!(
            "key {key:?} is not among the keys checked against (another gateway's receipt, or keys not \
             up to date?)"
        ),
        Ok(pb::ReceiptInvalidReason::BadSignature) => format!(
            "the signature does not verify over the payload under key {key}: the receipt was altered, or \
             not signed by that key"
        ),
        Ok(pb::ReceiptInvalidReason::KeyNotValidAtSigning) => format!(
            "key {key} was not valid at {}, the signing time the receipt claims",
            time_text(receipt.signed_at.as_ref())
        ),
        Ok(pb::ReceiptInvalidReason::Malformed) => "not a well-formed fedx-receipt/v1 receipt: signedAt \
             missing, the payload is not a receipt summary, or the signing times inside and outside it \
             differ"
            .into(),
        _ => String::new(),
    }
}

fn print_verdict(receipt: &pb::SignedReceipt, response: &pb::VerifyReceiptResponse) {
    let summary = match (&response.summary, response.valid) {
        (Some(summary), true) => summary,
        _ => {
            println!(
                "receipt NOT VALID: {} — {}",
                reason_name(response.reason),
                explanation(receipt, response.reason)
            );
            return;
        }
    };
    println!("receipt VALID: signed by {} at {}", receipt.key_id, time_text(summary.signed_at.as_ref()));
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let worker_ref = if summary.worker_ref.is_empty() { "(none)" } else { &summary.worker_ref };
    for (name, value) in [
        ("receipt id", summary.receipt_id.clone()),
        ("signed at", time_text(summary.signed_at.as_ref())),
        ("key id", receipt.key_id.clone()),
        ("department", summary.department.clone()),
        ("purpose", summary.purpose.clone()),
        ("legal basis", legal_basis_text(summary.legal_basis.as_ref())),
        ("worker ref", worker_ref.to_owned()),
    ] {
        table.add_row([name.to_owned(), value]);
    }
    println!("{table}");
    let mut claims = Table::new();
    claims.load_preset(UTF8_FULL_CONDENSED).set_header([
        "#",
        "claim type",
        "verdict",
        "reason",
        "attested by",
    ]);
    for (i, [claim_type, verdict, reason, attested]) in result_rows(summary).into_iter().enumerate() {
        claims.add_row([(i + 1).to_string(), claim_type, verdict, reason, attested]);
    }
    println!("{claims}");
    println!("{} claim(s); claim values are not shown (personal data)", summary.results.len());
}

fn verdict_json(receipt: &pb::SignedReceipt, response: &pb::VerifyReceiptResponse) -> Value {
    let summary = response.summary.as_ref().filter(|_| response.valid).map(|s| {
        let results: Vec<Value> = result_rows(s)
            .into_iter()
            .zip(&s.results)
            .map(|([claim_type, ..], r)| {
                let attested: Vec<Value> = r
                    .attested_by
                    .iter()
                    .map(|p| json!({ "department": p.department, "as_of": p.as_of.as_ref().and_then(timestamp_text) }))
                    .collect();
                json!({
                    "claim_type": claim_type,
                    "verdict": pb::Verdict::try_from(r.verdict).map(|v| v.as_str_name().to_owned()).unwrap_or_else(|_| r.verdict.to_string()),
                    "undetermined_reason": pb::UndeterminedReason::try_from(r.undetermined_reason).ok().filter(|u| *u != pb::UndeterminedReason::Unspecified).map(|u| u.as_str_name()),
                    "attested_by": attested,
                })
            })
            .collect();
        let legal_basis = s.legal_basis.as_ref().and_then(|b| b.basis.as_ref()).map(|b| match b {
            pb::legal_basis::Basis::Statute(statute) => json!({ "statute": statute }),
            pb::legal_basis::Basis::ConsentId(id) => json!({ "consent_id": id }),
        });
        json!({
            "receipt_id": s.receipt_id,
            "signed_at": s.signed_at.as_ref().and_then(timestamp_text),
            "department": s.department,
            "purpose": s.purpose,
            "legal_basis": legal_basis,
            "worker_ref": s.worker_ref,
            "results": results,
        })
    });
    let reason = pb::ReceiptInvalidReason::try_from(response.reason)
        .ok()
        .filter(|_| !response.valid)
        .map(|r| r.as_str_name());
    json!({
        "valid": response.valid,
        "reason": reason,
        "explanation": (!response.valid).then(|| explanation(receipt, response.reason)),
        "key_id": receipt.key_id,
        "signed_at": receipt.signed_at.as_ref().and_then(timestamp_text),
        "summary": summary,
    })
}
