//! `fedx certs …`: the administrator's certificate tools.

use clap::{Subcommand, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::authn::Role;
use crate::config::Config;
use crate::pki::{self, CertRequest, PkiPaths, Validity};
use crate::store::certificates::{CertRecord, RevocationReason};
use crate::store::{now_unix, Store};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the CA, the gateway's server certificate and an empty CRL in the PKI directory.
    Init,
    /// Issue a certificate for a department and role, record it in the registry and write it under
    /// <pki-dir>/issued/.
    Issue {
        /// Department code from the registry, e.g. social_insurance.
        #[arg(long)]
        dept: String,
        /// consumer, provider, auditor or admin (must be allowed for the department).
        #[arg(long)]
        role: String,
        /// Validity in days [default: pki.client_cert_days from the configuration].
        #[arg(long)]
        days: Option<u32>,
    },
    /// List issued certificates.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only this department.
        #[arg(long)]
        dept: Option<String>,
    },
    /// Revoke a certificate. Gateways refuse it within one revocation poll interval, on new and open
    /// connections, without a restart; the CRL is rewritten when the CA key is present.
    Revoke {
        /// Serial number (hex), as shown by `fedx certs list`.
        #[arg(long)]
        serial: String,
        /// RFC 5280 reason: unspecified, key-compromise, ca-compromise, affiliation-changed,
        /// superseded, cessation-of-operation, privilege-withdrawn, aa-compromise.
        #[arg(long)]
        reason: String,
    },
    /// Issue a successor (same department and role, new key) for a certificate; the old one stays valid
    /// until it expires or is revoked, so the department can switch over without downtime.
    Renew {
        #[arg(long)]
        serial: String,
        #[arg(long)]
        days: Option<u32>,
    },
    /// Regenerate the CRL from the registry.
    Crl,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub async fn run(command: CertsCommand, config: Config) -> anyhow::Result<()> {
    let paths = PkiPaths::new(&config.pki.dir);
    if let CertsCommand::Init = command {
        let report = pki::init(&paths, &config)?;
        println!("created CA          {}", report.ca_cert.display());
        println!("created server cert {} ({})", report.server_cert.display(), report.server_names.join(", "));
        println!("created CRL         {}", paths.crl().display());
        return Ok(());
    }
    let store = Store::open(&config.database_url()).await?;
    let registry = config.department_registry()?;
    match command {
        CertsCommand::Init => unreachable!("handled above"),
        CertsCommand::Issue { dept, role, days } => {
            let role: Role = role.parse()?;
            let days = days.unwrap_or(config.pki.client_cert_days);
            let request = CertRequest {
                dept: &dept,
                role,
                validity: Validity::days_from_now(days),
                renewed_from: None,
            };
            let issued = pki::issue(&store, &paths, &config, &registry, request).await?;
            print_issued(&issued);
        }
        CertsCommand::List { format, dept } => {
            let records: Vec<_> = store
                .certificates()
                .await?
                .into_iter()
                .filter(|r| dept.as_ref().is_none_or(|d| &r.dept == d))
                .collect();
            match format {
                Format::Table => println!("{}", certificate_table(&records, now_unix())),
                Format::Json => println!("{}", serde_json::to_string_pretty(&certificate_json(&records))?),
            }
        }
        CertsCommand::Revoke { serial, reason } => {
            let reason: RevocationReason = reason.parse().map_err(anyhow::Error::msg)?;
            let (record, crl_written) =
                pki::revoke(&store, &paths, &config, &serial.to_lowercase(), reason).await?;
            println!("revoked {} ({} {}), reason {reason}", record.serial, record.dept, record.role);
            if crl_written {
                println!("CRL rewritten: {}", paths.crl().display());
            } else {
                println!("no CA key here: the CRL was not rewritten (gateways still refuse the certificate)");
            }
        }
        CertsCommand::Renew { serial, days } => {
            let days = days.unwrap_or(config.pki.client_cert_days);
            let issued = pki::renew(&store, &paths, &config, &registry, &serial.to_lowercase(), days).await?;
            print_issued(&issued);
            println!("the previous certificate {serial} stays valid until it expires or is revoked");
        }
        CertsCommand::Crl => {
            let path = pki::write_crl(&store, &paths, &config).await?;
            println!("CRL written: {}", path.display());
        }
    }
    store.close().await;
    Ok(())
}

fn print_issued(issued: &pki::Issued) {
    println!("issued     {} for {} {}", issued.record.serial, issued.record.dept, issued.record.role);
    println!("not after  {}", format_time(issued.record.not_after));
    println!("cert       {}", issued.cert_path.display());
    println!(
        "key        {} (mode 0600; hand it to the department, then delete it here)",
        issued.key_path.display()
    );
}

fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

pub fn certificate_table(records: &[CertRecord], now: i64) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "serial",
        "department",
        "role",
        "not after",
        "status",
    ]);
    for record in records {
        let mut status = record.status(now).as_str().to_owned();
        if let Some(reason) = record.revocation_reason {
            status = format!("{status} ({reason})");
        }
        table.add_row([
            record.serial.clone(),
            record.dept.clone(),
            record.role.clone(),
            format_time(record.not_after),
            status,
        ]);
    }
    table
}

fn certificate_json(records: &[CertRecord]) -> serde_json::Value {
    let now = now_unix();
    records
        .iter()
        .map(|r| {
            serde_json::json!({
                "serial": r.serial,
                "department": r.dept,
                "role": r.role,
                "fingerprint_sha256": r.fingerprint,
                "not_before": format_time(r.not_before),
                "not_after": format_time(r.not_after),
                "status": r.status(now).as_str(),
                "revoked_at": r.revoked_at.map(format_time),
                "revocation_reason": r.revocation_reason.map(|x| x.as_str()),
                "renewed_from": r.renewed_from,
            })
        })
        .collect()
}
