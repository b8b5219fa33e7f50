//! The per-backend harness the store suites share: each test runs once on SQLite (in a temporary
//! directory) and once on PostgreSQL (in a fresh database created on `FEDX_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, dropped afterwards). When PostgreSQL is unreachable its
//! tests fail if `FEDX_REQUIRE_PG=1` and are skipped with a notice otherwise.
//!
//! A suite writes `mod support;`, `use support::{run, Backend, Db};`, lists its tests in
//! `backend_suite!(…)` and opens its store from [`Db::url`].
//!
//! [`process`] runs the real `fedx` binary instead (`fedx serve` processes driven over mTLS, the CLI on
//! the same store): `use support::process::{…};`.

#![allow(dead_code)]

pub mod process;

use sqlx::Connection;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates each test once per backend: `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::run(super::Backend::Sqlite, |db| Box::pin(super::$test(db))).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::run(super::Backend::Postgres, |db| Box::pin(super::$test(db))).await
                }
            )*
        }
    };
}

pub type TestFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + 'a>>;

pub async fn run(
    backend: Backend,
    test: impl for<'a> FnOnce(&'a Db) -> TestFuture<'a>,
) -> anyhow::Result<()> {
    let Some(db) = Db::create(backend).await? else {
        return Ok(());
    };
    let result = test(&db).await;
    let dropped = db.drop_database().await;
    result?;
    dropped
}

fn pg_admin_url() -> String {
    std::env::var("FEDX_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database for one test.
pub struct Db {
    pub url: String,
    pg_name: Option<String>,
    _dir: TempDir,
}

impl Db {
    /// `None` when PostgreSQL is unreachable and not required.
    pub async fn create(backend: Backend) -> anyhow::Result<Option<Db>> {
        let dir = tempfile::tempdir()?;
        match backend {
            Backend::Sqlite => Ok(Some(Db {
                url: format!("sqlite://{}?mode=rwc", dir.path().join("fedx.db").display()),
                pg_name: None,
                _dir: dir,
            })),
            Backend::Postgres => {
                let mut admin = match sqlx::PgConnection::connect(&pg_admin_url()).await {
                    Ok(admin) => admin,
                    Err(e) if std::env::var("FEDX_REQUIRE_PG").is_ok_and(|v| v == "1") => {
                        anyhow::bail!("PostgreSQL required (FEDX_REQUIRE_PG=1) but unreachable: {e}")
                    }
                    Err(e) => {
                        eprintln!("skipping PostgreSQL test: server unreachable ({e})");
                        return Ok(None);
                    }
                };
                let name = format!("fedx_store_test_{}", unique_suffix());
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
                admin.close().await?;
                let base = pg_admin_url();
                let server = base.rsplit_once('/').map(|(server, _)| server).unwrap_or(&base);
                Ok(Some(Db { url: format!("{server}/{name}"), pg_name: Some(name), _dir: dir }))
            }
        }
    }

    pub async fn drop_database(&self) -> anyhow::Result<()> {
        if let Some(name) = &self.pg_name {
            let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
            admin.close().await?;
        }
        Ok(())
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
