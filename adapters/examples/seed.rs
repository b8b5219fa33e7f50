//! Seeds the five department sources and prints the figures for BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p fedx-adapters --example seed -- --workers 100000 --seed 42 --dir /tmp/fedx-src
//! cargo run --release -p fedx-adapters --example seed -- --workers 10000 --pg postgres://postgres@127.0.0.1:5432/test
//! ```

use std::path::PathBuf;

use fedx_adapters::{seed, SeedOptions, SourceLocationSet};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let workers: u64 = arg(&args, "--workers").unwrap_or("10000".into()).parse()?;
    let seed_value: u64 = arg(&args, "--seed").unwrap_or("42".into()).parse()?;
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or("/tmp/fedx-src".into()));
    let truth =
        PathBuf::from(arg(&args, "--truth").unwrap_or_else(|| dir.join("truth.jsonl").display().to_string()));
    let location = match arg(&args, "--pg") {
        Some(url) => SourceLocationSet::postgres(url),
        None => SourceLocationSet::SqliteDir(dir.clone()),
    };
    std::fs::create_dir_all(&dir)?;
    let mut opts = SeedOptions::new(workers, seed_value);
    opts.progress = true;
    let report = seed(&opts, &location, &truth).await?;
    println!(
        "seeded {} workers, {} enterprises in {:.1} s: {} rows, {:.0} rows/s, {:.1} MiB",
        report.workers,
        report.enterprises,
        report.elapsed.as_secs_f64(),
        report.total_rows(),
        report.rows_per_second(),
        report.total_size_bytes() as f64 / 1048576.0
    );
    for d in &report.depts {
        let rows: Vec<String> = d.rows.iter().map(|(t, n)| format!("{t}={n}")).collect();
        println!(
            "  {:<18} {:>9.1} MiB  index build {:>6.1} s  {}",
            d.dept.code(),
            d.size_bytes as f64 / 1048576.0,
            d.index_time.as_secs_f64(),
            rows.join(" ")
        );
    }
    Ok(())
}
