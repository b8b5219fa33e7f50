//! Where the benchmark's data lives, and getting it there: the seeded population (reused when it matches),
//! the gateway store (fresh for every run), and on PostgreSQL the databases for both.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use sqlx::{Connection, Row};

use crate::fedx::Fedx;

/// The default data directory: `bench-data/<workers>` in the Cargo target directory this binary was
/// built into (`target/release/fedx-bench` → `target/bench-data/…`), else the system temp directory.
pub fn default_data_dir(workers: u64) -> PathBuf {
    let exe = std::env::current_exe().ok();
    let target = exe.as_deref().and_then(Path::parent).and_then(Path::parent);
    match target {
        Some(target) if target.join("CACHEDIR.TAG").exists() => {
            target.join("bench-data").join(workers.to_string())
        }
        _ => std::env::temp_dir().join("fedx-bench-data").join(workers.to_string()),
    }
}

/// What the marker of a seeded population records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seeded {
    pub workers: u64,
    pub seed: u64,
}

/// How the sources were obtained in this run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourcesReport {
    pub location: String,
    pub reused: bool,
    /// Seeding time when seeded in this run.
    pub seed_seconds: Option<f64>,
}

/// SQLite sources in `<data>/sources/`, the truth in `<data>/truth.jsonl`, the marker in `<data>/seeded.json`.
pub fn sqlite_sources_ready(data: &Path, want: Seeded) -> bool {
    let marker: Option<Seeded> =
        std::fs::read_to_string(data.join("seeded.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    marker == Some(want)
        && data.join("truth.jsonl").exists()
        && fedx_adapters::Department::ALL
            .iter()
            .all(|d| data.join("sources").join(format!("{}.db", d.code())).exists())
}

/// Seeds SQLite sources into `<data>` with the `fedx` binary (unless a matching population is there).
pub fn sqlite_sources(fedx: &Fedx, data: &Path, want: Seeded, reseed: bool) -> anyhow::Result<SourcesReport> {
    let location = data.join("sources").display().to_string();
    if !reseed && sqlite_sources_ready(data, want) {
        // Data seeded by an older build gets what `fedx serve` would expect of it (indexes, statistics).
        fedx.ok(&["sources", "migrate"])?;
        return Ok(SourcesReport { location, reused: true, seed_seconds: None });
    }
    let _ = std::fs::remove_file(data.join("seeded.json"));
    let _ = std::fs::remove_dir_all(data.join("sources"));
    let _ = std::fs::remove_file(data.join("truth.jsonl"));
    std::fs::create_dir_all(data.join("sources"))?;
    eprintln!("seeding {} workers (seed {}) into {location}", want.workers, want.seed);
    let started = Instant::now();
    let (workers, seed) = (want.workers.to_string(), want.seed.to_string());
    let truth = data.join("truth.jsonl").display().to_string();
    let out = fedx.ok(&["sources", "seed", "--workers", &workers, "--seed", &seed, "--truth", &truth])?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{}", out.lines().last().unwrap_or_default());
    std::fs::write(data.join("seeded.json"), serde_json::to_string(&want)?)?;
    Ok(SourcesReport { location, reused: false, seed_seconds: Some(seconds) })
}

/// A PostgreSQL server given by an administration URL (`postgres://user@host:port/db`).
pub struct PgServer {
    pub admin_url: String,
}

impl PgServer {
    /// The URL of database `name` on the same server.
    pub fn url_of(&self, name: &str) -> String {
        let base = self.admin_url.split('?').next().unwrap_or(&self.admin_url);
        let server = base.rsplit_once('/').map(|(server, _)| server).unwrap_or(base);
        format!("{server}/{name}")
    }

    async fn admin(&self) -> anyhow::Result<sqlx::PgConnection> {
        sqlx::PgConnection::connect(&self.admin_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", self.admin_url))
    }

    pub async fn create(&self, name: &str) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
        admin.close().await?;
        Ok(())
    }

    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
        admin.close().await?;
        Ok(())
    }

    async fn exists(&self, name: &str) -> anyhow::Result<bool> {
        let mut admin = self.admin().await?;
        let found = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut admin)
            .await?
            .is_some();
        admin.close().await?;
        Ok(found)
    }

    /// The marker of a seeded population in database `name`, if any.
    async fn seeded(&self, name: &str) -> anyhow::Result<Option<Seeded>> {
        if !self.exists(name).await? {
            return Ok(None);
        }
        let mut conn = sqlx::PgConnection::connect(&self.url_of(name)).await?;
        let row = sqlx::query("SELECT workers, seed FROM public.fedx_bench_seeded LIMIT 1")
            .fetch_optional(&mut conn)
            .await
            .ok()
            .flatten();
        conn.close().await?;
        Ok(row.map(|r| Seeded { workers: r.get::<i64, _>(0) as u64, seed: r.get::<i64, _>(1) as u64 }))
    }

    async fn mark_seeded(&self, name: &str, seeded: Seeded) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.url_of(name)).await?;
        sqlx::query("CREATE TABLE public.fedx_bench_seeded (workers BIGINT NOT NULL, seed BIGINT NOT NULL)")
            .execute(&mut conn)
            .await?;
        sqlx::query("INSERT INTO public.fedx_bench_seeded VALUES ($1, $2)")
            .bind(seeded.workers as i64)
            .bind(seeded.seed as i64)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }
}

/// Name of the PostgreSQL database holding a population's sources (kept between runs).
pub fn pg_sources_database(want: Seeded) -> String {
    format!("fedx_bench_src_{}_{}", want.workers, want.seed)
}

/// Seeds the sources into their PostgreSQL database with the `fedx` binary (whose configuration names
/// it), unless it already holds a matching population and `truth` exists.
pub async fn pg_sources(
    fedx: &Fedx,
    server: &PgServer,
    want: Seeded,
    truth: &Path,
    reseed: bool,
) -> anyhow::Result<SourcesReport> {
    let name = pg_sources_database(want);
    let location = format!("PostgreSQL database {name}, schemas fedx_src_*");
    if !reseed && truth.exists() && server.seeded(&name).await? == Some(want) {
        return Ok(SourcesReport { location, reused: true, seed_seconds: None });
    }
    server.drop_database(&name).await?;
    server.create(&name).await?;
    eprintln!("seeding {} workers (seed {}) into {location}", want.workers, want.seed);
    let started = Instant::now();
    let (workers, seed) = (want.workers.to_string(), want.seed.to_string());
    let truth_arg = truth.display().to_string();
    let out = fedx.ok(&["sources", "seed", "--workers", &workers, "--seed", &seed, "--truth", &truth_arg])?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{}", out.lines().last().unwrap_or_default());
    server.mark_seeded(&name, want).await?;
    Ok(SourcesReport { location, reused: false, seed_seconds: Some(seconds) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_the_server() {
        let server = PgServer { admin_url: "postgres://postgres@127.0.0.1:5432/postgres".into() };
        assert_eq!(server.url_of("fedx_bench_1"), "postgres://postgres@127.0.0.1:5432/fedx_bench_1");
    }
}
