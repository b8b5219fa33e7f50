//! Command-line options of `fedx-bench`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Load benchmark of the fedx gateway: seeds (or reuses) department sources, starts the real `fedx`
/// binary on them, and drives it over mTLS with a closed-loop client — a bare gRPC health check as the
/// baseline, then ResolveIdentity, GetWorkerView, JointVerify and BatchVerify — printing calls/s,
/// latency percentiles, errors, the ratio to the baseline and the gateway's memory.
///
/// Build first: `cargo build --release -p fedx-gateway` (the `fedx` binary next to this one is used).
#[derive(Debug, Clone, Parser)]
#[command(name = "fedx-bench", version)]
pub struct Options {
    /// Workers in the seeded population.
    #[arg(long, default_value_t = 10_000)]
    pub workers: u64,

    /// Random seed of the population (the same seed and size give the same data).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Directory for the seeded SQLite sources, the ground truth and the per-run gateway state; reused
    /// when it already holds a population of the same size and seed. Default: `bench-data/<workers>`
    /// under the Cargo target directory.
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Seed again even when the data directory (or PostgreSQL source database) holds a matching population.
    #[arg(long)]
    pub reseed: bool,

    /// Calls in flight at once (closed loop: each of these tasks sends its next call when the last is
    /// answered).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// HTTP/2 connections per department certificate; the tasks share them round-robin (tonic multiplexes
    /// calls as streams on a connection).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,

    /// Measured time per scenario, e.g. `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unmeasured warm-up before each scenario.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Scenarios, in order: health, resolve, view, verify, batch. Ratios need `health` in the same run.
    #[arg(long, value_delimiter = ',', default_value = "health,resolve,view,verify,batch")]
    pub scenarios: Vec<Scenario>,

    /// Run the gateway store and the sources on PostgreSQL: a server URL whose database is used for
    /// administration (e.g. postgres://postgres@127.0.0.1:5432/postgres). The store gets a fresh
    /// database `fedx_bench_<pid>`, dropped afterwards; the sources live in `fedx_bench_src_<workers>_<seed>`,
    /// kept for the next run.
    #[arg(long)]
    pub postgres: Option<String>,

    /// Write the results as JSON to this file (`-` = standard output, after the table).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// An earlier run's JSON (e.g. at 10,000 workers): print this run's throughput relative to it and check
    /// the "within 20 %" scaling target.
    #[arg(long)]
    pub compare: Option<PathBuf>,

    /// Items per BatchVerify stream; a task opens the next stream when one is done.
    #[arg(long, default_value_t = 500)]
    pub batch_items: usize,

    /// Unanswered items a BatchVerify stream keeps in flight (the gateway verifies 16 per stream at once).
    #[arg(long, default_value_t = 16)]
    pub batch_window: usize,

    /// Concurrent BatchVerify streams. Default: concurrency / batch-window, so that as many items are in
    /// flight as unary calls in the other scenarios.
    #[arg(long)]
    pub batch_streams: Option<usize>,

    /// Distinct seeded workers the calls cycle over (people known to public security and social
    /// insurance, no namesakes, with a paid pension month), spread evenly over the population. The same
    /// number at every population size keeps runs comparable: the resolution cache (10,000 entries, 30 s)
    /// sees the same repetition. A 10,000-worker population has ~5,600 such people.
    #[arg(long, default_value_t = 5_000)]
    pub pool: usize,

    /// Turn the gateway's identity-resolution cache off (`identity.cache_capacity = 0`); by default it is
    /// on as shipped (10,000 entries, 30 s), so repeated subjects are resolved from memory.
    #[arg(long)]
    pub no_resolution_cache: bool,

    /// Worker threads of the client's tokio runtime. The client shares the machine with the gateway; the
    /// report gives both processes' CPU time.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,

    /// Keep the run directory (configuration, PKI, gateway store and log) instead of deleting it.
    #[arg(long)]
    pub keep_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Health,
    Resolve,
    View,
    Verify,
    Batch,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::Resolve => "resolve",
            Scenario::View => "view",
            Scenario::Verify => "verify",
            Scenario::Batch => "batch",
        }
    }

    /// What is measured, as shown in the table.
    pub fn method(self) -> &'static str {
        match self {
            Scenario::Health => "grpc.health.v1.Health/Check",
            Scenario::Resolve => "ResolveIdentity",
            Scenario::View => "GetWorkerView (consent)",
            Scenario::Verify => "JointVerify (3 claims)",
            Scenario::Batch => "BatchVerify (per item)",
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len()));
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {s:?} (e.g. 10s, 500ms, 1m)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (ms, s, m)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
    }
}
