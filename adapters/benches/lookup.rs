//! Candidate look-up latency against a seeded source, printed as percentiles (hdrhistogram).
//!
//! ```text
//! # against an existing dataset (e.g. 1,000,000 workers seeded with examples/seed.rs):
//! FEDX_BENCH_DIR=/tmp/fedx-src1m cargo bench -p fedx-adapters --bench lookup
//! # or let the bench seed a fresh one (default 100,000 workers, into a temp dir):
//! FEDX_BENCH_WORKERS=100000 cargo bench -p fedx-adapters --bench lookup
//! ```
//!
//! Each look-up is awaited before the next starts, so the figures are per-request latency, not
//! throughput.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fedx_adapters::ident::normalize_name;
use fedx_adapters::{open_source, seed, Department, LookupKey, SeedOptions, SourceLocationSet, TruthRecord};
use hdrhistogram::Histogram;
use time::Date;

const SAMPLES: usize = 20_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (dir, _tmp) = match std::env::var("FEDX_BENCH_DIR") {
        Ok(d) => (PathBuf::from(d), None),
        Err(_) => {
            let tmp = tempfile::tempdir().expect("tempdir");
            let workers =
                std::env::var("FEDX_BENCH_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(100_000);
            let set = SourceLocationSet::SqliteDir(tmp.path().to_owned());
            eprintln!("seeding {workers} workers into {}", tmp.path().display());
            seed(&SeedOptions::new(workers, 42), &set, &tmp.path().join("truth.jsonl")).await.expect("seed");
            (tmp.path().to_owned(), Some(tmp))
        }
    };
    let set = SourceLocationSet::SqliteDir(dir.clone());
    let truth_text = std::fs::read_to_string(dir.join("truth.jsonl")).expect("truth.jsonl");
    let all: Vec<TruthRecord> =
        truth_text.lines().map(|l| serde_json::from_str(l).expect("truth line")).collect();
    // Spread the samples over the whole population, not just the first rows.
    let step = (all.len() / SAMPLES).max(1);
    let people: Vec<&TruthRecord> = all.iter().step_by(step).take(SAMPLES).collect();
    println!(
        "candidate look-up latency, {} workers in {}, {} people sampled, sequential requests",
        all.len(),
        dir.display(),
        people.len()
    );
    println!(
        "{:<18} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "department", "key", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "found"
    );
    for dept in Department::ALL {
        let src = open_source(dept, &set.for_dept(dept), Duration::from_secs(2)).await.expect("open source");
        type KeyFn = fn(&TruthRecord) -> LookupKey;
        let kinds: [(&str, KeyFn); 3] = [
            ("citizen_id", |t| LookupKey::CitizenId(t.citizen_id.clone())),
            ("name_birth", |t| LookupKey::NameBirth {
                name_norm: normalize_name(&t.name),
                birth_date: Date::parse(
                    &t.birth_date,
                    time::macros::format_description!("[year]-[month]-[day]"),
                )
                .expect("date"),
            }),
            ("phone", |t| LookupKey::Phone(t.phone.clone())),
        ];
        for (kind, make) in kinds {
            let keys: Vec<LookupKey> = people.iter().map(|t| make(t)).collect();
            // Warm-up: page cache and prepared statements.
            for k in keys.iter().take(500) {
                let _ = src.lookup(k).await;
            }
            let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
            let mut found = 0usize;
            for k in &keys {
                let t0 = Instant::now();
                let c = src.lookup(k).await.expect("lookup");
                h.record(t0.elapsed().as_micros().max(1) as u64).expect("record");
                found += usize::from(!c.is_empty());
            }
            println!(
                "{:<18} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8.1}%",
                dept.code(),
                kind,
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.90),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                100.0 * found as f64 / keys.len() as f64
            );
        }
    }
}
