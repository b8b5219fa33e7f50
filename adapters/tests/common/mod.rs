//! Shared test helpers: seeding small worlds into SQLite and PostgreSQL, and PostgreSQL discovery.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fedx_adapters::{seed, Department, NoiseConfig, SeedOptions, SourceLocationSet, TruthRecord};
use futures::FutureExt;
use sqlx::Connection;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL URL if a server answers; `None` (test skips, with a message) otherwise, unless
/// `FEDX_REQUIRE_PG=1`, in which case an unreachable server fails the test.
pub async fn pg_url() -> Option<String> {
    let url = std::env::var("FEDX_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
    let ok = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    if ok {
        return Some(url);
    }
    if std::env::var("FEDX_REQUIRE_PG").as_deref() == Ok("1") {
        panic!("FEDX_REQUIRE_PG=1 but PostgreSQL is unreachable at FEDX_TEST_PG_URL");
    }
    eprintln!("skipping PostgreSQL test: server unreachable (set FEDX_TEST_PG_URL)");
    None
}

/// A schema prefix unique to this process and call, e.g. `fedx_t1234_7_`.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("fedx_t{}_{}_", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Drops the five department schemas under `prefix`.
pub async fn drop_schemas(url: &str, prefix: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    for d in Department::ALL {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {prefix}{} CASCADE", d.code()))
            .execute(&mut conn)
            .await
            .expect("drop schema");
    }
}

/// Runs `body` with a fresh set of PostgreSQL schemas, dropping them afterwards even if it panics.
pub async fn with_pg<F, Fut>(body: F)
where
    F: FnOnce(SourceLocationSet) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(url) = pg_url().await else { return };
    let prefix = unique_prefix();
    let set = SourceLocationSet::Postgres { url: url.clone(), schema_prefix: prefix.clone() };
    let result = std::panic::AssertUnwindSafe(body(set)).catch_unwind().await;
    drop_schemas(&url, &prefix).await;
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Seeds `workers` workers with `noise` and returns the ground truth.
pub async fn seed_world(
    set: &SourceLocationSet,
    dir: &Path,
    workers: u64,
    noise: NoiseConfig,
) -> Vec<TruthRecord> {
    let truth = dir.join("truth.jsonl");
    let mut opts = SeedOptions::new(workers, 7);
    opts.noise = noise;
    let report = seed(&opts, set, &truth).await.expect("seed");
    assert_eq!(report.workers, workers);
    std::fs::read_to_string(&truth)
        .expect("truth file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("truth line"))
        .collect()
}
