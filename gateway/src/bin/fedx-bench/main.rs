//! `fedx-bench`: the gateway under load, against the bare transport (issue 10).
//!
//! ```text
//! cargo build --release -p fedx-gateway
//! target/release/fedx-bench --workers 10000 --json bench-10k.json
//! target/release/fedx-bench --workers 10000 --postgres postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! Setup (not measured): seed the five department sources with the real `fedx` binary (or reuse a
//! matching population), create a PKI and consumer certificates for social insurance and public
//! security, write a configuration (shipped defaults, limits lifted), start `fedx serve` as a child
//! process, wait for its health check, and register the consents the view scenario needs. Then each
//! scenario runs a closed loop over mTLS — warm-up, measured window — while the gateway's resident memory
//! is sampled every 100 ms and its CPU time and metrics are read around the window. The bare
//! `grpc.health.v1.Health/Check` on the same server, in the same run, is the baseline every other
//! scenario is compared with. See BENCHMARKS.md, "Load: the gateway against the bare transport".

mod cli;
mod driver;
mod fedx;
mod procfs;
mod report;
mod scenarios;
mod setup;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use fedx_adapters::{Department, SourceLocationSet};
use tonic::transport::Channel;

use cli::{Options, Scenario};
use driver::Run;
use fedx::{Fedx, Gateway, RunConfig};
use procfs::{mib, Machine, RssSampler};
use report::{GatewayMemory, Report, ScenarioResult, Settings};
use setup::{PgServer, Seeded};
use workload::{Credentials, Pool};

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    anyhow::ensure!(
        options.concurrency > 0 && options.connections > 0,
        "--concurrency and --connections must be ≥ 1"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

/// The gateway store of this run, removed afterwards.
enum Store {
    Sqlite,
    Postgres { server: PgServer, database: String },
}

async fn run(options: Options) -> anyhow::Result<()> {
    let started_at =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let mut machine = Machine::probe();
    let bin = Fedx::locate()?;
    let data = options.data.clone().unwrap_or_else(|| setup::default_data_dir(options.workers));
    let run_dir = data.join("runs").join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let data = data.canonicalize()?;
    let run_dir = run_dir.canonicalize()?;

    // The store: a SQLite file in the run directory, or a fresh PostgreSQL database.
    let (store, store_url, sources_pg_url) = match &options.postgres {
        None => (Store::Sqlite, format!("sqlite://{}?mode=rwc", run_dir.join("fedx.db").display()), None),
        Some(url) => {
            let server = PgServer { admin_url: url.clone() };
            let database = format!("fedx_bench_{}", std::process::id());
            server.drop_database(&database).await?;
            server.create(&database).await?;
            let store_url = server.url_of(&database);
            let want = Seeded { workers: options.workers, seed: options.seed };
            let sources = server.url_of(&setup::pg_sources_database(want));
            (Store::Postgres { server, database }, store_url, Some(sources))
        }
    };
    let result = bench(
        &options,
        &bin,
        &data,
        &run_dir,
        &store_url,
        sources_pg_url.as_deref(),
        &started_at,
        &mut machine,
    )
    .await;
    if let Store::Postgres { server, database } = &store {
        if let Err(e) = server.drop_database(database).await {
            eprintln!("could not drop the store database {database}: {e}");
        }
    }
    if options.keep_run {
        eprintln!("run directory kept: {}", run_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    options: &Options,
    bin: &Path,
    data: &Path,
    run_dir: &Path,
    store_url: &str,
    sources_pg_url: Option<&str>,
    started_at: &str,
    machine: &mut Machine,
) -> anyhow::Result<()> {
    let listen = fedx::free_port()?;
    let admin = fedx::free_port()?;
    let pki = run_dir.join("pki");
    let config = RunConfig {
        listen,
        admin,
        data_dir: data,
        pki_dir: &pki,
        store_url,
        sources_postgres_url: sources_pg_url,
        workers: options.workers,
        resolution_cache: !options.no_resolution_cache,
        concurrency: options.concurrency,
    };
    let config_path = run_dir.join("fedx.toml");
    std::fs::write(&config_path, config.to_toml()?)?;
    let fedx = Fedx { bin: bin.to_owned(), config: config_path };
    fedx.ok(&["config", "check"]).context("the generated configuration is refused")?;

    // Sources: seeded once per size and seed, then reused.
    let want = Seeded { workers: options.workers, seed: options.seed };
    let (sources, truth, si_source) = match &options.postgres {
        None => {
            let sources = setup::sqlite_sources(&fedx, data, want, options.reseed)?;
            let location = SourceLocationSet::SqliteDir(data.join("sources"));
            (sources, data.join("truth.jsonl"), location.for_dept(Department::SocialInsurance))
        }
        Some(url) => {
            let server = PgServer { admin_url: url.clone() };
            let truth = data.join(format!("truth-postgres-{}.jsonl", setup::pg_sources_database(want)));
            let sources = setup::pg_sources(&fedx, &server, want, &truth, options.reseed).await?;
            let location = SourceLocationSet::postgres(sources_pg_url.unwrap_or_default());
            (sources, truth, location.for_dept(Department::SocialInsurance))
        }
    };
    eprintln!("sources: {} ({})", sources.location, if sources.reused { "reused" } else { "seeded" });

    // PKI and the two consumer departments.
    fedx.ok(&["certs", "init"])?;
    let (si_cert, si_key) = fedx.issue_consumer("social_insurance")?;
    let (ps_cert, ps_key) = fedx.issue_consumer("public_security")?;
    let social = Credentials::read(&pki.join("ca.crt.pem"), &si_cert, &si_key)?;
    let police = Credentials::read(&pki.join("ca.crt.pem"), &ps_cert, &ps_key)?;

    // The people the calls are about.
    let sampled = workload::sample_truth(&truth, options.workers, options.pool.saturating_mul(2))?;
    let mut people = workload::with_facts(sampled, &si_source, options.pool).await?;
    anyhow::ensure!(!people.is_empty(), "no usable worker in {}", truth.display());
    eprintln!("{} distinct workers in the pool", people.len());

    // The gateway.
    let mut gateway = Gateway::spawn(&fedx, admin, run_dir.join("gateway.log"))?;
    let si_channels = wait_until_serving(&mut gateway, &social, listen, options.connections).await?;
    let ps_channels = police.connect(listen, options.connections).await?;
    let sampler = RssSampler::start(gateway.pid);
    let rss_at_start = procfs::status_bytes(gateway.pid, "VmRSS").unwrap_or(0);

    let consents = if options.scenarios.contains(&Scenario::View) {
        let started = Instant::now();
        let failed = workload::grant_consents(ps_channels[0].clone(), &mut people).await?;
        Some(report::ConsentReport {
            granted: people.len() - failed,
            failed,
            seconds: started.elapsed().as_secs_f64(),
        })
    } else {
        None
    };
    let pool: Pool = Arc::new(people);
    let view_pool: Pool = Arc::new(pool.iter().filter(|p| p.consent_id.is_some()).cloned().collect());

    let batch_streams =
        options.batch_streams.unwrap_or_else(|| (options.concurrency / options.batch_window.max(1)).max(1));
    let mut results: Vec<ScenarioResult> = Vec::new();
    for scenario in &options.scenarios {
        gateway.check_alive()?;
        eprintln!("running {} …", scenario.method());
        let run = match scenario {
            Scenario::Health => Run::unary(options.concurrency, scenarios::health_call(si_channels.clone())),
            Scenario::Resolve => {
                Run::unary(options.concurrency, scenarios::resolve_call(si_channels.clone(), pool.clone()))
            }
            Scenario::View => {
                anyhow::ensure!(
                    !view_pool.is_empty(),
                    "no consent could be registered for the view scenario"
                );
                Run::unary(options.concurrency, scenarios::view_call(ps_channels.clone(), view_pool.clone()))
            }
            Scenario::Verify => {
                Run::unary(options.concurrency, scenarios::verify_call(si_channels.clone(), pool.clone()))
            }
            Scenario::Batch => Run::batch(
                &si_channels,
                pool.clone(),
                batch_streams,
                options.batch_items,
                options.batch_window,
            ),
        };
        sampler.take_peak();
        let result =
            scenarios::measure(&gateway, run, *scenario, options.warmup, options.duration, &sampler).await;
        results.push(result);
    }
    let baseline = results.iter().find(|r| r.scenario == "health").map(|r| r.per_second).filter(|b| *b > 0.0);
    for r in &mut results {
        r.ratio_to_health = baseline.map(|b| r.per_second / b);
    }

    let hwm = procfs::status_bytes(gateway.pid, "VmHWM");
    gateway.check_alive()?;
    gateway.stop().await?;
    machine.load_end = procfs::load_average();
    let memory = GatewayMemory {
        rss_at_start_mib: mib(rss_at_start),
        peak_rss_sampled_mib: mib(sampler.overall_peak().total),
        peak_rss_anon_mib: mib(sampler.overall_peak().anon),
        peak_pss_mib: results.iter().map(|r| r.pss_mib).fold(0.0, f64::max),
        peak_rss_hwm_mib: hwm.map(mib),
    };
    let earlier: Option<serde_json::Value> = match &options.compare {
        Some(path) => Some(serde_json::from_str(&std::fs::read_to_string(path)?).context("--compare")?),
        None => None,
    };
    let targets = report::check_targets(&results, &memory, earlier.as_ref());
    let (git_revision, git_dirty) = git_state();
    let report = Report {
        tool: "fedx-bench",
        started_at: started_at.to_owned(),
        git_revision,
        git_dirty,
        machine: machine.clone(),
        settings: Settings {
            workers: options.workers,
            seed: options.seed,
            backend: if options.postgres.is_some() { "postgresql" } else { "sqlite" },
            concurrency: options.concurrency,
            connections_per_department: options.connections,
            warmup_seconds: options.warmup.as_secs_f64(),
            duration_seconds: options.duration.as_secs_f64(),
            client_threads: options.client_threads.max(1),
            pool: pool.len(),
            resolution_cache: !options.no_resolution_cache,
            batch_items_per_stream: options.batch_items,
            batch_window: options.batch_window,
            batch_streams,
            limits: fedx::LIMITS_NOTE,
            audit: "durable as shipped (SQLite synchronous=FULL / PostgreSQL synchronous_commit=on, group commit ≤ 2,048)",
        },
        sources,
        consents,
        scenarios: results,
        gateway: memory,
        targets,
    };
    println!("{}\n", report::header(&report));
    println!("{}\n", report::table(&report));
    println!("{}\n", report::footer(&report));
    println!("{}", report::targets_table(&report.targets));
    if let Some(path) = &options.json {
        let json = serde_json::to_string_pretty(&report)?;
        if path == Path::new("-") {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
            eprintln!("JSON written to {}", path.display());
        }
    }
    Ok(())
}

/// Connects the first department's channels once the gateway answers its health check (≤ 120 s: a
/// large PostgreSQL source set can take a while to open).
async fn wait_until_serving(
    gateway: &mut Gateway,
    credentials: &Credentials,
    addr: std::net::SocketAddr,
    connections: usize,
) -> anyhow::Result<Vec<Channel>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        gateway.check_alive()?;
        if let Ok(channels) = credentials.connect(addr, connections).await {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channels[0].clone());
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            if let Ok(response) = health.check(request).await {
                if response.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return Ok(channels);
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "fedx serve not healthy after 120 s:\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The commit the binary's sources are at (short), and whether the tree has changes.
fn git_state() -> (Option<String>, Option<bool>) {
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "--short=12", "HEAD"]);
    let dirty =
        revision.as_ref().and(git(&["status", "--porcelain", "--untracked-files=no"])).map(|s| !s.is_empty());
    (revision, dirty)
}
