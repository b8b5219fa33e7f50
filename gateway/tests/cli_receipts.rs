//! `fedx receipts` as a relying office uses it: the real binary, receipts as grpcurl prints them, the
//! published keys, and the exit statuses (0 valid, 1 not valid, 2 could not decide).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fedx_gateway::signing::{KeyRing, SigningConfig};
use fedx_gateway::verify::receipt::sign_receipt;
use fedx_proto::v1 as pb;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Claim values that must never appear in the output.
const CITIZEN_ID: &str = "110101199003071234";
const NAME: &str = "张伟";
const EMPLOYER: &str = "91310000MA1FL8XQ3K";

struct Fedx {
    dir: tempfile::TempDir,
}

impl Fedx {
    fn new() -> Fedx {
        Fedx { dir: tempfile::tempdir().expect("temp dir") }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The key ring the binary loads for this data directory (the development key, created here).
    fn ring(&self) -> KeyRing {
        KeyRing::load(&SigningConfig::default(), &self.data_dir()).expect("key ring")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, doc: &Value) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, serde_json::to_string_pretty(doc).expect("json")).expect("write");
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        let root: &Path = self.dir.path();
        Command::new(env!("CARGO_BIN_EXE_fedx"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--pki-dir")
            .arg(root.join("pki"))
            .args(args)
            .env_remove("FEDX_CONFIG")
            .env_remove("FEDX_DATA_DIR")
            .env_remove("FEDX_DATABASE_URL")
            .env_remove("FEDX_SIGNING_KEY_FILE")
            .env("FEDX_LOG", "warn")
            .output()
            .expect("fedx runs")
    }

    /// Runs and checks the exit status; returns stdout, stderr.
    fn status(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
        let stderr = String::from_utf8(out.stderr).expect("utf-8 output");
        assert_eq!(out.status.code(), Some(code), "fedx {args:?}\nstdout: {stdout}\nstderr: {stderr}");
        for secret in [CITIZEN_ID, NAME, EMPLOYER] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "fedx {args:?} printed a claim value"
            );
        }
        (stdout, stderr)
    }
}

fn summary() -> pb::ReceiptSummary {
    pb::ReceiptSummary {
        receipt_id: "req_01JC3V6Q9W2X".into(),
        signed_at: None,
        department: "housing".into(),
        purpose: "residence_permit_application".into(),
        legal_basis: Some(pb::LegalBasis {
            basis: Some(pb::legal_basis::Basis::ConsentId("cst_7f3e".into())),
        }),
        worker_ref: "wr_5f2a9c".into(),
        claims: vec![
            pb::Claim {
                claim: Some(pb::claim::Claim::IdentityMatches(pb::IdentityMatches {
                    name: NAME.into(),
                    citizen_id: CITIZEN_ID.into(),
                })),
            },
            pb::Claim {
                claim: Some(pb::claim::Claim::EmployedBy(pb::EmployedBy {
                    employer_usci: EMPLOYER.into(),
                    period: Some(pb::MonthRange {
                        start_month: "2026-01".into(),
                        end_month: "2026-06".into(),
                    }),
                })),
            },
        ],
        results: vec![
            pb::ClaimResult {
                claim_type: "identity_matches".into(),
                verdict: pb::Verdict::Confirmed as i32,
                undetermined_reason: 0,
                attested_by: vec![pb::Provenance {
                    department: "public_security".into(),
                    as_of: Some(prost_types::Timestamp { seconds: 1_790_000_000, nanos: 0 }),
                }],
            },
            pb::ClaimResult {
                claim_type: "employed_by".into(),
                verdict: pb::Verdict::Undetermined as i32,
                undetermined_reason: pb::UndeterminedReason::SourceUnavailable as i32,
                attested_by: vec![],
            },
        ],
    }
}

/// The receipt as grpcurl prints it inside a JointVerifyResponse (proto3 JSON).
fn joint_verify_response(receipt: &pb::SignedReceipt) -> Value {
    let signed_at = receipt.signed_at.expect("signed_at");
    let signed_at = OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(signed_at.seconds) * 1_000_000_000 + i128::from(signed_at.nanos),
    )
    .expect("time")
    .format(&Rfc3339)
    .expect("rfc 3339");
    json!({
        "workerRef": "wr_5f2a9c",
        "legalBasis": { "consentId": "cst_7f3e" },
        "results": [
            { "claimType": "identity_matches", "verdict": "VERDICT_CONFIRMED" },
            { "claimType": "employed_by", "verdict": "VERDICT_UNDETERMINED",
              "undeterminedReason": "UNDETERMINED_REASON_SOURCE_UNAVAILABLE" },
        ],
        "receipt": {
            "payload": STANDARD.encode(&receipt.payload),
            "signature": STANDARD.encode(&receipt.signature),
            "keyId": receipt.key_id,
            "signedAt": signed_at,
        },
    })
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn verify_with_the_local_keys() {
    let fedx = Fedx::new();
    let ring = fedx.ring();
    let receipt = sign_receipt(&ring, summary(), OffsetDateTime::now_utc()).expect("signed");
    let doc = joint_verify_response(&receipt);
    let file = fedx.write("receipt.json", &doc);

    let (table, _) = fedx.status(&["receipts", "verify", p(&file)], 0);
    assert!(table.contains("receipt VALID"), "{table}");
    for expected in [
        "req_01JC3V6Q9W2X",
        "housing",
        "residence_permit_application",
        "consent: cst_7f3e",
        "wr_5f2a9c",
        "identity_matches",
        "CONFIRMED",
        "public_security",
        "employed_by",
        "UNDETERMINED",
        "SOURCE_UNAVAILABLE",
        ring.current_key_id(),
        "claim values are not shown",
    ] {
        assert!(table.contains(expected), "{expected} missing from\n{table}");
    }

    let (json, _) = fedx.status(&["receipts", "verify", p(&file), "--format", "json"], 0);
    let json: Value = serde_json::from_str(&json).expect("json output");
    assert_eq!(json["valid"], true);
    assert_eq!(json["reason"], Value::Null);
    assert_eq!(json["key_id"], ring.current_key_id());
    assert_eq!(json["summary"]["receipt_id"], "req_01JC3V6Q9W2X");
    assert_eq!(json["summary"]["signed_at"], doc["receipt"]["signedAt"]);
    assert_eq!(json["summary"]["results"][0]["claim_type"], "identity_matches");
    assert_eq!(json["summary"]["results"][0]["verdict"], "VERDICT_CONFIRMED");
    assert_eq!(
        json["summary"]["results"][1]["undetermined_reason"],
        "UNDETERMINED_REASON_SOURCE_UNAVAILABLE"
    );

    // The bare receipt, snake_case, and inside a BatchVerifyResponse, also from standard input.
    let bare = fedx.write("bare.json", &doc["receipt"]);
    fedx.status(&["receipts", "verify", p(&bare)], 0);
    let r = &doc["receipt"];
    let snake = json!({ "payload": r["payload"], "signature": r["signature"], "key_id": r["keyId"],
                        "signed_at": r["signedAt"] });
    fedx.status(&["receipts", "verify", p(&fedx.write("snake.json", &snake))], 0);
    let batch = fedx.write("batch.json", &json!({ "itemId": "case-17", "result": doc }));
    fedx.status(&["receipts", "verify", p(&batch)], 0);
    let out = Command::new(env!("CARGO_BIN_EXE_fedx"))
        .args(["--data-dir", p(&fedx.data_dir()), "receipts", "verify", "-"])
        .env_remove("FEDX_CONFIG")
        .env_remove("FEDX_DATA_DIR")
        .env_remove("FEDX_SIGNING_KEY_FILE")
        .env("FEDX_LOG", "warn")
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("fedx runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn altered_receipts_are_not_valid() {
    let fedx = Fedx::new();
    let ring = fedx.ring();
    let receipt = sign_receipt(&ring, summary(), OffsetDateTime::now_utc()).expect("signed");
    let doc = joint_verify_response(&receipt);

    // One payload byte changed (after base64 decoding): exit 1, BAD_SIGNATURE.
    let mut payload = receipt.payload.clone();
    let last = payload.len() - 1;
    payload[last] ^= 0x01;
    let mut tampered = doc.clone();
    tampered["receipt"]["payload"] = json!(STANDARD.encode(&payload));
    let file = fedx.write("tampered.json", &tampered);
    let (table, stderr) = fedx.status(&["receipts", "verify", p(&file)], 1);
    assert!(table.contains("NOT VALID") && table.contains("BAD_SIGNATURE"), "{table}");
    assert!(!table.contains("req_01JC3V6Q9W2X"), "nothing from an unverified payload is shown: {table}");
    assert!(stderr.contains("not valid"), "{stderr}");
    let (json, _) = fedx.status(&["receipts", "verify", p(&file), "--format", "json"], 1);
    let json: Value = serde_json::from_str(&json).expect("json output");
    assert_eq!(json["valid"], false);
    assert_eq!(json["reason"], "RECEIPT_INVALID_REASON_BAD_SIGNATURE");
    assert_eq!(json["summary"], Value::Null);

    // Another key id: UNKNOWN_KEY. Another signing time: MALFORMED (the key is valid at both times).
    let mut other_key = doc.clone();
    other_key["receipt"]["keyId"] = json!("ed25519:0000000000000000");
    let (out, _) = fedx.status(&["receipts", "verify", p(&fedx.write("key.json", &other_key))], 1);
    assert!(out.contains("UNKNOWN_KEY"), "{out}");
    let mut other_time = doc.clone();
    other_time["receipt"]["signedAt"] = json!("2030-01-01T00:00:00Z");
    let (out, _) = fedx.status(&["receipts", "verify", p(&fedx.write("time.json", &other_time))], 1);
    assert!(out.contains("MALFORMED"), "{out}");
}

#[test]
fn published_keys_verify_elsewhere() {
    let gateway = Fedx::new();
    let ring = gateway.ring();
    let receipt = sign_receipt(&ring, summary(), OffsetDateTime::now_utc()).expect("signed");

    let (keys, _) = gateway.status(&["receipts", "keys", "--format", "json"], 0);
    let keys: Value = serde_json::from_str(&keys).expect("json keys");
    assert_eq!(keys["keys"][0]["keyId"], ring.current_key_id());
    assert_eq!(
        STANDARD.decode(keys["keys"][0]["publicKey"].as_str().expect("base64")).expect("base64"),
        ring.public_keys()[0].public_key
    );
    assert_eq!(keys["keys"][0]["validFrom"], "1970-01-01T00:00:00Z");
    let (table, _) = gateway.status(&["receipts", "keys"], 0);
    assert!(table.contains(ring.current_key_id()) && table.contains("(current)"), "{table}");

    // An office with no gateway of its own: the published keys are all it needs.
    let office = Fedx::new();
    let keys_file = office.write("keys.json", &keys);
    let receipt_file = office.write("receipt.json", &joint_verify_response(&receipt));
    let (out, _) = office.status(&["receipts", "verify", p(&receipt_file), "--keys", p(&keys_file)], 0);
    assert!(out.contains("receipt VALID"), "{out}");
    // Without --keys it has no keys at all: it cannot decide (2), and creates no key.
    let (_, stderr) = office.status(&["receipts", "verify", p(&receipt_file)], 2);
    assert!(stderr.contains("--keys"), "{stderr}");
    assert!(!office.data_dir().join("keys").exists(), "verify must not create a signing key");

    // Another gateway's keys: UNKNOWN_KEY.
    let other = Fedx::new();
    let (other_keys, _) = other.status(&["receipts", "keys", "--format", "json"], 0);
    let other_keys = office.write("other-keys.json", &serde_json::from_str(&other_keys).expect("json"));
    let (out, _) = office.status(&["receipts", "verify", p(&receipt_file), "--keys", p(&other_keys)], 1);
    assert!(out.contains("UNKNOWN_KEY"), "{out}");

    // The key published as retired before the receipt was signed: KEY_NOT_VALID_AT_SIGNING.
    let mut retired = keys.clone();
    retired["keys"][0]["validFrom"] = json!("2024-01-01T00:00:00Z");
    retired["keys"][0]["validUntil"] = json!("2025-01-01T00:00:00Z");
    let retired = office.write("retired.json", &retired);
    let (out, _) = office.status(&["receipts", "verify", p(&receipt_file), "--keys", p(&retired)], 1);
    assert!(out.contains("KEY_NOT_VALID_AT_SIGNING"), "{out}");
}

#[test]
fn unreadable_input_exits_with_status_2() {
    let fedx = Fedx::new();
    let ring = fedx.ring();
    let receipt = sign_receipt(&ring, summary(), OffsetDateTime::now_utc()).expect("signed");
    let good = fedx.write("receipt.json", &joint_verify_response(&receipt));

    let missing = fedx.path("missing.json");
    let (_, stderr) = fedx.status(&["receipts", "verify", p(&missing)], 2);
    assert!(stderr.contains("missing.json"), "{stderr}");

    std::fs::write(fedx.path("garbage.json"), "{ not json").expect("write");
    let (_, stderr) = fedx.status(&["receipts", "verify", p(&fedx.path("garbage.json"))], 2);
    assert!(stderr.contains("not JSON"), "{stderr}");

    let no_receipt = fedx.write("no-receipt.json", &json!({ "workerRef": "wr_1", "results": [] }));
    let (_, stderr) = fedx.status(&["receipts", "verify", p(&no_receipt)], 2);
    assert!(stderr.contains("no receipt found"), "{stderr}");

    let two = [std::fs::read_to_string(&good).expect("read"), std::fs::read_to_string(&good).expect("read")];
    std::fs::write(fedx.path("stream.json"), two.join("\n")).expect("write");
    let (_, stderr) = fedx.status(&["receipts", "verify", p(&fedx.path("stream.json"))], 2);
    assert!(stderr.contains("more than one JSON document"), "{stderr}");

    let bad_keys = fedx.write("bad-keys.json", &json!({ "keys": [{ "publicKey": "AAAA" }] }));
    let (_, stderr) = fedx.status(&["receipts", "verify", p(&good), "--keys", p(&bad_keys)], 2);
    assert!(stderr.contains("publicKey is 3 bytes"), "{stderr}");
    let (_, stderr) = fedx.status(&["receipts", "verify", p(&good), "--keys", p(&missing)], 2);
    assert!(stderr.contains("missing.json"), "{stderr}");

    // Usage errors are 2 as well (clap).
    fedx.status(&["receipts", "verify"], 2);
    fedx.status(&["receipts", "verify", p(&good), "--format", "yaml"], 2);
}

#[test]
fn receipts_commands_have_help() {
    let fedx = Fedx::new();
    for args in
        [vec!["receipts", "--help"], vec!["receipts", "verify", "--help"], vec!["receipts", "keys", "--help"]]
    {
        let (out, _) = fedx.status(&args, 0);
        assert!(out.contains("Usage:"), "fedx {args:?} --help: {out}");
    }
    let (verify, _) = fedx.status(&["receipts", "verify", "--help"], 0);
    assert!(verify.contains("Exit status") && verify.contains("personal data"), "{verify}");
}
