//! Latency of one identity resolution against five department sources, printed as percentiles.
//!
//! ```text
//! # seed once (1,000,000 workers), then point the benchmark at the directory:
//! cargo run --release -p fedx-adapters --example seed -- --workers 1000000 --seed 42 --dir /tmp/fedx-1m
//! FEDX_BENCH_SOURCES=/tmp/fedx-1m cargo bench -p fedx-gateway --bench resolve
//! ```
//!
//! Without FEDX_BENCH_SOURCES a 20,000-worker population is seeded into a temporary directory. Queries
//! are people drawn from the ground truth (`truth.jsonl` in the directory), each resolved once with the
//! resolution cache off, one at a time (the single-query latency the target is about); the name
//! frequency cache is left on as in production. Env: FEDX_BENCH_QUERIES (default 5000).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedx_adapters::{SeedOptions, SourceLocationSet};
use fedx_gateway::identity::eval::{read_truth, EvalMode};
use fedx_gateway::identity::{IdentityConfig, KeyRing, Model, Query, Resolver, Status};
use fedx_gateway::sources::SourceSet;
use hdrhistogram::Histogram;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let _tmp;
    let dir = match std::env::var_os("FEDX_BENCH_SOURCES") {
        Some(d) => PathBuf::from(d),
        None => {
            let t = tempfile::tempdir()?;
            let d = t.path().to_owned();
            eprintln!("FEDX_BENCH_SOURCES not set: seeding 20,000 workers into {}", d.display());
            fedx_adapters::seed(
                &SeedOptions::new(20_000, 42),
                &SourceLocationSet::SqliteDir(d.clone()),
                &d.join("truth.jsonl"),
            )
            .await?;
            _tmp = t;
            d
        }
    };
    let n: usize = std::env::var("FEDX_BENCH_QUERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let truths = read_truth(&dir.join("truth.jsonl"))?;
    let population = truths.len() as u64;
    // Spread the sample over the whole file (stride), so it is not only the first-written rows.
    let stride = (truths.len() / n.max(1)).max(1);
    let sample: Vec<_> = truths.iter().step_by(stride).take(n).cloned().collect();
    drop(truths);

    let config = IdentityConfig { population, cache_capacity: 0, ..IdentityConfig::default() };
    let sources = SourceSet::open(&SourceLocationSet::SqliteDir(dir.clone()), Duration::from_secs(2)).await?;
    let keys = KeyRing::single("bench", &[42u8; 32])?;
    let resolver = Resolver::new(Model::new(config), sources, Arc::new(keys));

    println!(
        "identity resolution latency: {} ({population} workers), {} queries per mode",
        dir.display(),
        sample.len()
    );
    for mode in [EvalMode::IdName, EvalMode::NameBirth] {
        let queries: Vec<Query> =
            sample.iter().filter_map(|t| Query::parse(&mode.subject(t), "subject").ok()).collect();
        // Warm-up: page cache and connection pools.
        for q in queries.iter().take(200) {
            let _ = resolver.resolve_uncached(q).await;
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut resolved = 0;
        let started = Instant::now();
        for q in &queries {
            let t = Instant::now();
            let r = resolver.resolve_uncached(q).await?;
            hist.record(t.elapsed().as_micros().max(1) as u64)?;
            resolved += usize::from(r.status == Status::Resolved);
        }
        let secs = started.elapsed().as_secs_f64();
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  {:<10} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({:.0} q/s sequential, {resolved}/{} resolved)",
            mode.code(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            hist.max() as f64 / 1000.0,
            queries.len() as f64 / secs,
            queries.len()
        );
    }
    Ok(())
}
