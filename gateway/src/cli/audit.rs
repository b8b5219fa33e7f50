//! `fedx audit …`: the auditors' offline tools on the gateway store — query, verify, checkpoints,
//! export and retention. They read the same tables the gateway writes, so they work while it runs
//! (SQLite WAL, or PostgreSQL) and when it is down.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::audit::checkpoint::Checkpoint;
use crate::audit::record::{ExchangeRecord, LegalBasis};
use crate::audit::store::{AuditStore, ExchangeFilter};
use crate::audit::verify::{self, VerifyReport};
use crate::config::Config;
use crate::signing::KeyRing;
use crate::store::Store;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List exchange records matching the filters, in ascending seq.
    Query {
        /// Only records at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00+08:00).
        #[arg(long, value_parser = parse_time)]
        since: Option<OffsetDateTime>,
        /// Only records before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<OffsetDateTime>,
        /// Calling department code.
        #[arg(long)]
        dept: Option<String>,
        #[arg(long)]
        purpose: Option<String>,
        /// Full method name, e.g. /fedx.v1.IdentityService/ResolveIdentity.
        #[arg(long)]
        method: Option<String>,
        /// Numeric gRPC status code (0 = OK).
        #[arg(long)]
        outcome: Option<i32>,
        /// Pseudonymous worker reference (wr_…).
        #[arg(long)]
        worker_ref: Option<String>,
        /// Only records with seq greater than this (resume cursor).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Recompute the hash chain and check every stored checkpoint; with --checkpoint, also check the
    /// log against a checkpoint saved outside the database (detects truncation and rewriting).
    /// Exits with status 1 and names the first bad seq when anything fails.
    Verify {
        /// First seq to check [default: the first record].
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last seq to check [default: the head].
        #[arg(long)]
        to: Option<u64>,
        /// A checkpoint file saved earlier with `fedx audit checkpoint --out`.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Sign a checkpoint of the log now (if it grew since the last one) and print the latest; with
    /// --out, save it for later `verify --checkpoint`.
    Checkpoint {
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only print the latest checkpoint; do not sign a new one.
        #[arg(long)]
        no_sign: bool,
    },
    /// Write records (with their hashes) as JSON Lines, for archives and backups.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Delete records older than the retention period, below a checkpoint, keeping the chain
    /// verifiable from that checkpoint.
    Prune {
        /// Override the configured retention (audit.retention_days).
        #[arg(long)]
        older_than_days: Option<u32>,
    },
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("expected RFC 3339 time: {e}"))
}

pub async fn run(command: AuditCommand, config: Config) -> anyhow::Result<()> {
    let store = Store::open(&config.database_url()).await?;
    let audit = AuditStore::with_store(store.clone(), &config.database_url()).await?;
    let keys = || -> anyhow::Result<Arc<KeyRing>> {
        Ok(Arc::new(KeyRing::load(&config.signing, &config.data_dir).context("signing keys")?))
    };
    match command {
        AuditCommand::Query {
            since,
            until,
            dept,
            purpose,
            method,
            outcome,
            worker_ref,
            after,
            limit,
            format,
        } => {
            let filter = ExchangeFilter {
                start: since,
                end: until,
                department: dept,
                purpose,
                method,
                outcome_code: outcome,
                worker_ref,
            };
            let records = audit.query(&filter, after, limit).await?;
            print_records(&records, format)?;
        }
        AuditCommand::Verify { from, to, checkpoint } => {
            let keys = keys()?;
            let report = verify::verify_range(&audit, &keys, from.max(1), to).await?;
            print_report("chain", &report);
            let mut ok = report.valid;
            if let Some(path) = checkpoint {
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let saved = Checkpoint::from_file_text(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let report = verify::verify_saved_checkpoint(&audit, &keys, &saved).await?;
                print_report(
                    &format!("saved checkpoint {} (tree size {})", saved.seq, saved.tree_size),
                    &report,
                );
                ok &= report.valid;
            }
            if !ok {
                anyhow::bail!("the exchange log failed verification");
            }
        }
        AuditCommand::Checkpoint { out, no_sign } => {
            if !no_sign {
                let keys = keys()?;
                match audit.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await? {
                    Some(c) => println!("signed checkpoint {} over {} records", c.seq, c.tree_size),
                    None => println!("the log has not grown since the last checkpoint"),
                }
            }
            let latest = audit
                .checkpoint(None)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no checkpoint has been signed yet"))?;
            let text = latest.to_file_text();
            print!("{text}");
            if let Some(path) = out {
                std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
                println!("saved to {}", path.display());
            }
        }
        AuditCommand::Export { out, from, to } => {
            let (head, _) = audit.head().await?;
            let to = to.unwrap_or(head).min(head);
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?,
            );
            let mut next = from.max(1);
            let mut written = 0u64;
            while next <= to {
                let last = (next + 9_999).min(to);
                for record in audit.records(next, last).await? {
                    serde_json::to_writer(&mut file, &record_json(&record))?;
                    file.write_all(b"\n")?;
                    written += 1;
                }
                next = last + 1;
            }
            file.flush()?;
            println!("exported {written} records to {}", out.display());
        }
        AuditCommand::Prune { older_than_days } => {
            let days = older_than_days.unwrap_or(config.audit.retention_days);
            let cutoff = OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
            let report = audit.prune(cutoff).await?;
            println!("{report:?}");
        }
    }
    store.close().await;
    Ok(())
}

fn print_report(what: &str, r: &VerifyReport) {
    if r.valid {
        println!(
            "{what}: valid — {} records and {} checkpoints checked; head seq {} hash {}",
            r.records_checked,
            r.checkpoints_checked,
            r.head_seq,
            hex::encode(r.head_hash)
        );
    } else {
        println!(
            "{what}: INVALID — first bad seq {}: {:?} ({} records checked)",
            r.first_invalid_seq, r.failure, r.records_checked
        );
    }
}

fn time_text(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn record_json(r: &ExchangeRecord) -> serde_json::Value {
    let e = &r.exchange;
    let basis = e.legal_basis.as_ref().map(|b| match b {
        LegalBasis::Consent(id) => serde_json::json!({ "consent_id": id }),
        LegalBasis::Statute(s) => serde_json::json!({ "statute": s }),
    });
    serde_json::json!({
        "seq": r.seq,
        "time": time_text(e.time),
        "request_id": e.request_id,
        "trace_id": e.trace_id,
        "caller": {
            "department": e.caller_dept,
            "role": e.caller_role,
            "certificate_serial": e.cert_serial,
            "certificate_fingerprint": e.cert_fingerprint,
        },
        "method": e.method,
        "purpose": e.purpose,
        "legal_basis": basis,
        "worker_ref": e.worker_ref,
        "sources_consulted": e.sources_consulted,
        "disclosed_fields": e.disclosed_fields,
        "claims_verified": e.claims_verified,
        "outcome_code": e.outcome_code,
        "outcome_reason": e.outcome_reason,
        "latency_us": e.latency_us,
        "prev_hash": hex::encode(r.prev_hash),
        "record_hash": hex::encode(r.record_hash),
    })
}

const CSV_COLUMNS: [&str; 10] = [
    "seq",
    "time",
    "department",
    "role",
    "method",
    "purpose",
    "worker_ref",
    "outcome_code",
    "outcome_reason",
    "latency_us",
];

fn csv_row(r: &ExchangeRecord) -> [String; 10] {
    let e = &r.exchange;
    [
        r.seq.to_string(),
        time_text(e.time),
        e.caller_dept.clone(),
        e.caller_role.clone(),
        e.method.clone(),
        e.purpose.clone(),
        e.worker_ref.clone(),
        e.outcome_code.to_string(),
        e.outcome_reason.clone(),
        e.latency_us.to_string(),
    ]
}

fn print_records(records: &[ExchangeRecord], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            for r in records {
                println!("{}", serde_json::to_string(&record_json(r))?);
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout());
            w.write_record(CSV_COLUMNS)?;
            for r in records {
                w.write_record(csv_row(r))?;
            }
            w.flush()?;
        }
        Format::Table => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header(CSV_COLUMNS);
            for r in records {
                table.add_row(csv_row(r));
            }
            println!("{table}");
            println!("{} record(s)", records.len());
        }
    }
    Ok(())
}
