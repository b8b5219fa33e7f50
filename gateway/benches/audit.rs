//! Exchange log throughput: durable appends through [`AuditLog`] under concurrency, and verification
//! speed, on SQLite (temporary directory) and PostgreSQL (a fresh database on `FEDX_TEST_PG_URL`).
//!
//! ```text
//! cargo bench -p fedx-gateway --bench audit
//! FEDX_BENCH_AUDIT_VERIFY=10000000 cargo bench -p fedx-gateway --bench audit
//! ```
//!
//! Env:
//! - `FEDX_BENCH_AUDIT_SECS` (default 5): seconds each append run lasts.
//! - `FEDX_BENCH_AUDIT_APPENDERS` (default `64,256`): concurrent appenders, one run each.
//! - `FEDX_BENCH_AUDIT_VERIFY` (default 1,000,000): records bulk-appended, then verified (0 = skip).
//! - `FEDX_BENCH_AUDIT_BACKENDS` (default `sqlite,postgres`).
//! - `FEDX_BENCH_AUDIT_REUSE=1`: keep the verification database (`$TMPDIR/fedx-bench-audit-N.db`, or
//!   PostgreSQL database `fedx_bench_audit_verify_N`) and reuse it when it already holds N records.
//! - `FEDX_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`); PostgreSQL runs are
//!   skipped with a message when it is unreachable.
//!
//! Appenders each loop `append().await` until the time is up; latency is from the call to its seq. The
//! writer runs with the default `[audit]` configuration (group commit up to 2,048 records, checkpoints
//! every 60 s or 100,000 records); SQLite commits with `synchronous = FULL`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fedx_gateway::audit::record::{Exchange, LegalBasis};
use fedx_gateway::audit::store::AuditStore;
use fedx_gateway::audit::verify::verify_range;
use fedx_gateway::audit::writer::AuditLog;
use fedx_gateway::audit::AuditConfig;
use fedx_gateway::signing::KeyRing;
use hdrhistogram::Histogram;
use sqlx::Connection;
use time::OffsetDateTime;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.replace(['_', ','], "").parse().ok()).unwrap_or(default)
}

fn pg_admin_url() -> String {
    std::env::var("FEDX_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database for one run, removed afterwards.
struct BenchDb {
    url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    async fn create(backend: &str, tag: &str) -> anyhow::Result<Option<BenchDb>> {
        if backend == "sqlite" {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
            return Ok(Some(BenchDb { url, pg_name: None, _dir: Some(dir) }));
        }
        let mut admin = match sqlx::PgConnection::connect(&pg_admin_url()).await {
            Ok(admin) => admin,
            Err(e) => {
                println!("PostgreSQL unreachable ({e}): skipping its runs");
                return Ok(None);
            }
        };
        let name = format!("fedx_bench_audit_{tag}_{}", std::process::id());
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
        admin.close().await?;
        let base = pg_admin_url();
        let server = base.rsplit_once('/').map(|(server, _)| server).unwrap_or(&base);
        Ok(Some(BenchDb { url: format!("{server}/{name}"), pg_name: Some(name), _dir: None }))
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        if let Some(name) = &self.pg_name {
            let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
            admin.close().await?;
        }
        Ok(())
    }
}

/// A record of realistic size (≈ 450 bytes of content).
fn exchange(i: u64) -> Exchange {
    Exchange {
        time: OffsetDateTime::now_utc(),
        request_id: format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", i, i % 65536, i % 4096, i % 4096, i),
        trace_id: format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        caller_dept: ["HRSS", "TAX", "MPS", "EDU", "SAMR"][(i % 5) as usize].into(),
        caller_role: "ROLE_CONSUMER".into(),
        cert_serial: format!("{:032x}", 0x1000 + i % 5),
        cert_fingerprint: format!("{:064x}", 0xabcdef + i % 5),
        method: "/fedx.v1.WorkerViewService/GetWorkerView".into(),
        purpose: "wage_arrears".into(),
        legal_basis: Some(LegalBasis::Statute("PIPL art. 13(3); 保障农民工工资支付条例".into())),
        worker_ref: format!("wr_{:043}", i % 1_000_003),
        sources_consulted: vec!["MPS".into(), "TAX".into(), "HRSS".into()],
        disclosed_fields: vec![
            "identity.name".into(),
            "employment.employer_usci".into(),
            "employment.start_month".into(),
            "social_insurance.status".into(),
        ],
        claims_verified: vec!["employed_by".into()],
        outcome_code: if i.is_multiple_of(50) { 7 } else { 0 },
        outcome_reason: if i.is_multiple_of(50) { "PURPOSE_NOT_PERMITTED".into() } else { String::new() },
        latency_us: 800 + i % 5000,
    }
}

async fn run() -> anyhow::Result<()> {
    let secs = env_u64("FEDX_BENCH_AUDIT_SECS", 5);
    let verify_n = env_u64("FEDX_BENCH_AUDIT_VERIFY", 1_000_000);
    let appenders: Vec<u64> = std::env::var("FEDX_BENCH_AUDIT_APPENDERS")
        .unwrap_or_else(|_| "64,256".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let backends = std::env::var("FEDX_BENCH_AUDIT_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("audit benchmark: {cores} cores, {secs} s per append run, {verify_n} records verified");

    for backend in backends.split(',').map(str::trim) {
        println!("\n== {backend} ==");
        println!(
            "{:>10} {:>10} {:>12} {:>11} {:>9} {:>9} {:>9} {:>9}",
            "appenders", "records", "records/s", "mean batch", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
        );
        let mut reachable = true;
        for &n in &appenders {
            let Some(db) = BenchDb::create(backend, &format!("a{n}")).await? else {
                reachable = false;
                break;
            };
            append_run(&db.url, n, Duration::from_secs(secs)).await?;
            db.drop_database().await?;
        }
        if reachable && verify_n > 0 {
            if std::env::var("FEDX_BENCH_AUDIT_REUSE").is_ok_and(|v| v == "1") {
                let url = if backend == "sqlite" {
                    let path = std::env::temp_dir().join(format!("fedx-bench-audit-{verify_n}.db"));
                    format!("sqlite://{}?mode=rwc", path.display())
                } else {
                    let name = format!("fedx_bench_audit_verify_{verify_n}");
                    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await?;
                    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
                        .bind(&name)
                        .fetch_optional(&mut admin)
                        .await?
                        .is_some();
                    if !exists {
                        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
                    }
                    admin.close().await?;
                    let base = pg_admin_url();
                    let server = base.rsplit_once('/').map(|(server, _)| server).unwrap_or(&base);
                    format!("{server}/{name}")
                };
                verify_run(&url, verify_n).await?;
            } else if let Some(db) = BenchDb::create(backend, "verify").await? {
                verify_run(&db.url, verify_n).await?;
                db.drop_database().await?;
            }
        }
    }
    Ok(())
}

async fn append_run(url: &str, appenders: u64, duration: Duration) -> anyhow::Result<()> {
    let store = AuditStore::open(url).await?;
    let keys = Arc::new(KeyRing::generate_for_tests());
    let log = AuditLog::start(store.clone(), keys, AuditConfig::default());
    // Warm up: connections opened, statements prepared.
    for i in 0..100 {
        log.append(exchange(i)).await?;
    }
    let before = log.stats();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for t in 0..appenders {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            let mut i = t << 32;
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let e = exchange(i);
                i += 1;
                let begun = Instant::now();
                match log.append(e).await {
                    Ok(_) => histogram.record(begun.elapsed().as_micros() as u64)?,
                    Err(_) => errors += 1,
                }
            }
            Ok::<_, anyhow::Error>((histogram, errors))
        }));
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await??;
        histogram.add(h)?;
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = log.stats();
    log.shutdown().await;
    store.close().await;
    let records = after.records - before.records;
    let commits = (after.commits - before.commits).max(1);
    println!(
        "{:>10} {:>10} {:>12.0} {:>11.1} {:>9} {:>9} {:>9} {:>9}{}",
        appenders,
        records,
        records as f64 / elapsed,
        records as f64 / commits as f64,
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        if errors > 0 { format!("  ({errors} errors)") } else { String::new() }
    );
    Ok(())
}

async fn verify_run(url: &str, n: u64) -> anyhow::Result<()> {
    let store = AuditStore::open(url).await?;
    let keys = KeyRing::generate_for_tests();
    const BATCH: u64 = 5_000;
    let start = Instant::now();
    let mut next = store.head().await?.0;
    let initial = next;
    if next > 0 {
        // A reused database: re-sign its checkpoints with this run's key.
        sqlx::query("DELETE FROM audit_checkpoints").execute(store.pool()).await?;
        store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?;
        println!("reusing a database holding {next} records");
    }
    while next < n {
        let batch: Vec<Exchange> = (next..(next + BATCH).min(n)).map(exchange).collect();
        store.append(&batch).await?;
        next += batch.len() as u64;
        // A checkpoint every 100,000 records, as the writer would sign.
        if next.is_multiple_of(100_000) || next == n {
            store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?;
        }
    }
    let load = start.elapsed().as_secs_f64();
    let loaded = next - initial;
    if loaded > 0 {
        println!(
            "bulk append: {loaded} records in {load:.1} s ({:.0} records/s, batches of {BATCH})",
            loaded as f64 / load
        );
    }

    let start = Instant::now();
    let report = verify_range(&store, &keys, 0, None).await?;
    let took = start.elapsed().as_secs_f64();
    println!(
        "verify_range: {} records, {} checkpoints in {took:.2} s ({:.0} records/s); valid = {}",
        report.records_checked,
        report.checkpoints_checked,
        report.records_checked as f64 / took,
        report.valid
    );
    store.close().await;
    Ok(())
}
