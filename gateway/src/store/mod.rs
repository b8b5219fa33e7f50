//! The gateway's own store: certificate registry now; consents, audit log and configuration changes as
//! they arrive. SQLite is the embedded default, PostgreSQL the production store.
//!
//! Queries go through sqlx's `Any` driver with `$n` placeholders, which both SQLite and PostgreSQL
//! accept, so each query is written once; where the dialects differ a store branches on [`Backend`].
//! Migrations are kept per backend under `gateway/migrations/{sqlite,postgres}` and embedded in the binary.

pub mod certificates;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL must start with sqlite: or postgres:")]
    UnsupportedUrl,
    #[error("cannot create the database directory: {0}")]
    CreateDir(std::io::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// One migration as [`Store::migration_status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub state: MigrationState,
}

/// Whether a migration is in the store as this binary would apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    Applied,
    /// Not applied yet: `fedx db migrate` applies it.
    Pending,
    /// Applied, but from a different file than this binary carries (edited after release): the store and
    /// the binary disagree about the schema, and migrating refuses to continue.
    Changed,
    /// Started and failed (PostgreSQL runs each in a transaction, so nothing of it remains).
    Failed,
    /// In the store but unknown to this binary: a newer release migrated it.
    Unknown,
}

impl MigrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Changed => "CHANGED",
            MigrationState::Failed => "FAILED",
            MigrationState::Unknown => "unknown (newer release)",
        }
    }
}

/// A pool on the gateway store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects (creating a SQLite file and its directory if needed). Does not migrate.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        if backend == Backend::Sqlite {
            create_sqlite_parent_dir(url)?;
        }
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // One writer at a time is all SQLite allows; extra connections serve readers.
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets the gateway read while the admin CLI writes; the busy timeout makes
                        // a concurrent writer wait instead of failing.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store { pool, backend })
    }

    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.backend.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Every migration this binary knows, with whether and how it was applied to this store. Reads only:
    /// a store never migrated has no migrations table and reports everything pending.
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        let exists_sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => "SELECT COUNT(*) FROM pg_tables WHERE tablename = '_sqlx_migrations'",
        };
        let exists: i64 = sqlx::query_scalar(exists_sql).fetch_one(&self.pool).await?;
        // `success` is a boolean column, which the Any driver cannot read from SQLite: read it as a number.
        let applied: Vec<(i64, Vec<u8>, bool)> = if exists > 0 {
            let rows: Vec<(i64, Vec<u8>, i64)> = sqlx::query_as(
                "SELECT version, checksum, CAST(success AS INTEGER) FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(|(version, checksum, success)| (version, checksum, success != 0)).collect()
        } else {
            Vec::new()
        };
        let known = self.backend.migrator().iter().filter(|m| m.migration_type.is_up_migration());
        let mut out: Vec<MigrationStatus> = known
            .map(|m| {
                let state = match applied.iter().find(|(version, _, _)| *version == m.version) {
                    None => MigrationState::Pending,
                    Some((_, _, false)) => MigrationState::Failed,
                    Some((_, checksum, true)) if checksum.as_slice() != &*m.checksum => {
                        MigrationState::Changed
                    }
                    Some(_) => MigrationState::Applied,
                };
                MigrationStatus { version: m.version, description: m.description.to_string(), state }
            })
            .collect();
        // Applied by a newer binary: this one does not know them.
        for (version, _, _) in &applied {
            if !out.iter().any(|m| m.version == *version) {
                out.push(MigrationStatus {
                    version: *version,
                    description: String::new(),
                    state: MigrationState::Unknown,
                });
            }
        }
        out.sort_by_key(|m| m.version);
        Ok(out)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn create_sqlite_parent_dir(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    match std::path::Path::new(path).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(StoreError::CreateDir)
        }
        _ => Ok(()),
    }
}

/// Current time in unix seconds, the unit of every timestamp column.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
