//! Opening a department's source database — a SQLite file or a PostgreSQL schema — through sqlx's
//! `Any` driver, so one code path serves both backends (the schema only uses `TEXT` and `BIGINT`, and
//! `$n` placeholders, which both SQLite and PostgreSQL accept).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyConnection;
use sqlx::{AnyPool, Executor, Row};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::dept::Department;
use crate::table::{TableSpec, Value};

/// Version of the source schema written into `source_meta`.
pub const SCHEMA_VERSION: &str = "1";

/// Where one department's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceLocation {
    /// A SQLite database file.
    Sqlite { path: PathBuf },
    /// A schema in a PostgreSQL database.
    Postgres { url: String, schema: String },
}

/// Where all five departments' data lives: one SQLite file per department in a directory
/// (`<dir>/<dept>.db`), or one PostgreSQL schema per department (`<prefix><dept>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceLocationSet {
    SqliteDir(PathBuf),
    Postgres { url: String, schema_prefix: String },
}

/// Default PostgreSQL schema prefix: `fedx_src_public_security`, …
pub const DEFAULT_SCHEMA_PREFIX: &str = "fedx_src_";

impl SourceLocationSet {
    /// PostgreSQL with the default schema prefix.
    pub fn postgres(url: impl Into<String>) -> Self {
        SourceLocationSet::Postgres { url: url.into(), schema_prefix: DEFAULT_SCHEMA_PREFIX.to_owned() }
    }

    /// The location of one department.
    pub fn for_dept(&self, dept: Department) -> SourceLocation {
        match self {
            SourceLocationSet::SqliteDir(dir) => {
                SourceLocation::Sqlite { path: dir.join(format!("{}.db", dept.code())) }
            }
            SourceLocationSet::Postgres { url, schema_prefix } => SourceLocation::Postgres {
                url: url.clone(),
                schema: format!("{schema_prefix}{}", dept.code()),
            },
        }
    }
}

/// How a database is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Request path: the file/schema must exist; nothing is written (`PRAGMA query_only`).
    Read,
    /// Import: create the file/schema if needed.
    Write,
    /// Seeding: like `Write`, with durability relaxed for speed (`synchronous=OFF`).
    BulkLoad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A pool on one department's database.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

/// Errors from opening or preparing a database (configuration, not request-path failures).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid PostgreSQL schema name (use lower-case letters, digits and _)")]
    BadSchemaName,
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Statements run on every new connection.
fn session_statements(loc: &SourceLocation, access: Access, timeout: Duration) -> Vec<String> {
    let ms = timeout.as_millis().max(1);
    match (loc, access) {
        (SourceLocation::Sqlite { .. }, Access::Read) => vec![
            // Readers never write; a stray write is a bug, not a feature.
            "PRAGMA query_only = ON".into(),
            format!("PRAGMA busy_timeout = {ms}"),
            // Memory-mapped reads keep index look-ups in the page cache of the OS.
            "PRAGMA mmap_size = 268435456".into(),
        ],
        (SourceLocation::Sqlite { .. }, Access::Write) => vec![
            "PRAGMA journal_mode = WAL".into(),
            "PRAGMA synchronous = NORMAL".into(),
            format!("PRAGMA busy_timeout = {ms}"),
        ],
        (SourceLocation::Sqlite { .. }, Access::BulkLoad) => vec![
            "PRAGMA journal_mode = WAL".into(),
            // Seeding writes a throw-away dataset; a crash means re-seeding, so skip fsyncs.
            "PRAGMA synchronous = OFF".into(),
            "PRAGMA cache_size = -131072".into(),
            "PRAGMA temp_store = MEMORY".into(),
            format!("PRAGMA busy_timeout = {ms}"),
        ],
        (SourceLocation::Postgres { schema, .. }, Access::Read) => vec![
            format!("SET search_path TO {schema}"),
            format!("SET statement_timeout = {ms}"),
            "SET default_transaction_read_only = on".into(),
        ],
        (SourceLocation::Postgres { schema, .. }, _) => {
            vec![format!("SET search_path TO {schema}")]
        }
    }
}

fn url_of(loc: &SourceLocation, access: Access) -> String {
    match loc {
        SourceLocation::Sqlite { path } => {
            // `rw` refuses to create a missing file: a gateway pointed at the wrong directory must
            // report the source unavailable, not silently serve an empty database.
            let mode = if access == Access::Read { "rw" } else { "rwc" };
            format!("sqlite://{}?mode={mode}", path.display())
        }
        SourceLocation::Postgres { url, .. } => url.clone(),
    }
}

/// A pool that connects on first use, so a gateway starts even when a source is down; every
/// acquisition is bounded by `acquire_timeout`.
pub(crate) fn connect_lazy(
    loc: &SourceLocation,
    access: Access,
    acquire_timeout: Duration,
    max_connections: u32,
) -> Result<Db, DbError> {
    sqlx::any::install_default_drivers();
    let backend = match loc {
        SourceLocation::Sqlite { .. } => Backend::Sqlite,
        SourceLocation::Postgres { schema, .. } => {
            if !valid_schema_name(schema) {
                return Err(DbError::BadSchemaName);
            }
            Backend::Postgres
        }
    };
    let stmts: Arc<Vec<String>> = Arc::new(session_statements(loc, access, acquire_timeout));
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .after_connect(move |conn, _meta| {
            let stmts = Arc::clone(&stmts);
            Box::pin(async move {
                for s in stmts.iter() {
                    conn.execute(s.as_str()).await?;
                }
                Ok(())
            })
        })
        .connect_lazy(&url_of(loc, access))?;
    Ok(Db { pool, backend })
}

/// Opens a database for writing (import or seeding), creating the SQLite file's directory or the
/// PostgreSQL schema as needed.
pub(crate) async fn open_for_write(
    loc: &SourceLocation,
    access: Access,
    timeout: Duration,
) -> Result<Db, DbError> {
    match loc {
        SourceLocation::Sqlite { path } => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
        }
        SourceLocation::Postgres { url, schema } => {
            if !valid_schema_name(schema) {
                return Err(DbError::BadSchemaName);
            }
            sqlx::any::install_default_drivers();
            let mut conn = <AnyConnection as sqlx::Connection>::connect(url).await?;
            conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await?;
            sqlx::Connection::close(conn).await?;
        }
    }
    // One connection: a single writer is what SQLite wants anyway, and it keeps a transaction on one
    // connection.
    let db = connect_lazy(loc, access, timeout, 1)?;
    Ok(db)
}

/// Brings an existing department database up to the current schema: creates missing tables and
/// indexes (idempotent; existing rows untouched). Needed after an upgrade that adds an index the
/// look-ups name — e.g. data seeded before the person-key indexes gained the record key.
pub async fn migrate_schema(dept: Department, loc: &SourceLocation) -> Result<(), DbError> {
    let db = open_for_write(loc, Access::Write, Duration::from_secs(30)).await?;
    let mut conn = db.pool.acquire().await?;
    let tables = crate::sql_source::tables(dept);
    create_tables(&mut conn, tables).await?;
    create_indexes(&mut conn, tables).await?;
    if db.backend == Backend::Sqlite {
        drop_sample_statistics(&mut conn).await?;
    }
    drop(conn);
    db.pool.close().await;
    Ok(())
}

/// Empties SQLite's `sqlite_stat4` (the per-value samples `ANALYZE` gathers when SQLite is built with
/// STAT4, as the bundled one is), keeping the `sqlite_stat1` summary.
///
/// With samples present, SQLite re-plans a prepared statement every time a bound value changes, in case
/// the value is a skewed one: every source look-up was parsed and planned again, 11 % of the gateway's
/// CPU in a view (BENCHMARKS.md, *Load*). The request path names its indexes (`INDEXED BY`) and gains
/// nothing from the samples.
pub(crate) async fn drop_sample_statistics(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let has_stat4 = sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat4'")
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if has_stat4 {
        conn.execute("DELETE FROM sqlite_stat4").await?;
        // Reload the statistics so that this connection, too, plans without the samples.
        conn.execute("ANALYZE sqlite_schema").await?;
    }
    Ok(())
}

/// Removes a department's existing data so a seed starts from nothing.
pub(crate) async fn wipe(loc: &SourceLocation) -> Result<(), DbError> {
    match loc {
        SourceLocation::Sqlite { path } => {
            for suffix in ["", "-wal", "-shm"] {
                let p = PathBuf::from(format!("{}{suffix}", path.display()));
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        SourceLocation::Postgres { url, schema } => {
            if !valid_schema_name(schema) {
                return Err(DbError::BadSchemaName);
            }
            sqlx::any::install_default_drivers();
            let mut conn = <AnyConnection as sqlx::Connection>::connect(url).await?;
            conn.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str()).await?;
            sqlx::Connection::close(conn).await?;
        }
    }
    Ok(())
}

/// Creates the meta table and the department's tables (idempotent).
pub(crate) async fn create_tables(
    conn: &mut AnyConnection,
    tables: &[&TableSpec],
) -> Result<(), sqlx::Error> {
    conn.execute("CREATE TABLE IF NOT EXISTS source_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        .await?;
    for t in tables {
        conn.execute(t.create_sql().as_str()).await?;
    }
    Ok(())
}

/// Creates the tables' indexes (idempotent). Bulk loads call this after inserting: building an index
/// once over sorted data is much cheaper than maintaining it row by row.
pub(crate) async fn create_indexes(
    conn: &mut AnyConnection,
    tables: &[&TableSpec],
) -> Result<(), sqlx::Error> {
    for t in tables {
        for s in t.index_sql() {
            conn.execute(s.as_str()).await?;
        }
    }
    Ok(())
}

/// Records the snapshot time and schema version.
pub(crate) async fn write_meta(
    conn: &mut AnyConnection,
    dept: Department,
    as_of: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let as_of = as_of.format(&Rfc3339).unwrap_or_default();
    for (k, v) in [
        ("department", dept.code().to_owned()),
        ("schema_version", SCHEMA_VERSION.to_owned()),
        ("as_of", as_of),
    ] {
        sqlx::query(
            "INSERT INTO source_meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(k)
        .bind(v)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Reads the snapshot time; `None` if never recorded.
pub(crate) async fn read_as_of(
    reader: &crate::reader::Reader,
) -> Result<Option<OffsetDateTime>, crate::reader::ReadError> {
    let row = reader.first("SELECT value FROM source_meta WHERE key = 'as_of'", &[]).await?;
    Ok(row.and_then(|r| r.text(0)).and_then(|s| OffsetDateTime::parse(&s, &Rfc3339).ok()))
}

/// Whether `table` already holds a row with these values in `columns` (a unique key). Used by imports to
/// report a clash with existing data as a bad row, with its line number, instead of a failed commit.
pub(crate) async fn key_exists(
    conn: &mut AnyConnection,
    table: &TableSpec,
    columns: &[&str],
    values: &[&Value],
) -> Result<bool, sqlx::Error> {
    let filter: Vec<String> = columns.iter().enumerate().map(|(i, c)| format!("{c} = ${}", i + 1)).collect();
    let sql = format!("SELECT 1 FROM {} WHERE {} LIMIT 1", table.name, filter.join(" AND "));
    let mut q = sqlx::query(&sql);
    for v in values {
        q = match v {
            Value::Text(t) => q.bind(t.clone()),
            Value::Int(i) => q.bind(*i),
        };
    }
    Ok(q.fetch_optional(&mut *conn).await?.is_some())
}

/// Largest number of bind parameters per statement: under SQLite's 32766 and PostgreSQL's 65535.
const MAX_PARAMS: usize = 30_000;
/// More rows per statement stop paying off beyond this; fewer distinct statement shapes also keep the
/// prepared-statement cache small.
const MAX_ROWS_PER_STATEMENT: usize = 500;

/// Inserts rows with multi-row `INSERT … VALUES (…), (…)` statements. Full chunks share one SQL text,
/// so the driver prepares it once and reuses it. Call inside a transaction for speed and atomicity.
pub(crate) async fn insert_rows(
    conn: &mut AnyConnection,
    table: &TableSpec,
    rows: Vec<Vec<Value>>,
) -> Result<u64, sqlx::Error> {
    let cols = table.all_names();
    let ncols = cols.len();
    let per_stmt = (MAX_PARAMS / ncols).clamp(1, MAX_ROWS_PER_STATEMENT);
    let head = format!("INSERT INTO {} ({}) VALUES ", table.name, cols.join(", "));
    // SQLite looks `$n` names up with a linear scan per parameter (quadratic in a 4,000-parameter
    // statement); anonymous `?` binds positionally.
    let positional = conn.backend_name() == "SQLite";
    let mut inserted = 0u64;
    let mut rows = rows.into_iter().peekable();
    let mut full_sql: Option<String> = None;
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(per_stmt).collect();
        let sql = if chunk.len() == per_stmt {
            full_sql.get_or_insert_with(|| values_sql(&head, ncols, per_stmt, positional)).clone()
        } else {
            values_sql(&head, ncols, chunk.len(), positional)
        };
        let mut q = sqlx::query(&sql);
        for row in chunk {
            debug_assert_eq!(row.len(), ncols);
            for v in row {
                q = match v {
                    Value::Text(t) => q.bind(t),
                    Value::Int(i) => q.bind(i),
                };
            }
        }
        inserted += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(inserted)
}

fn values_sql(head: &str, ncols: usize, nrows: usize, positional: bool) -> String {
    let mut sql = String::with_capacity(head.len() + nrows * ncols * 6);
    sql.push_str(head);
    let mut n = 1;
    for r in 0..nrows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..ncols {
            if c > 0 {
                sql.push(',');
            }
            if positional {
                sql.push('?');
            } else {
                sql.push('$');
                sql.push_str(&n.to_string());
            }
            n += 1;
        }
        sql.push(')');
    }
    sql
}

/// On-disk size of a department's data: the SQLite file (plus WAL) or the PostgreSQL schema's tables
/// and indexes.
pub(crate) async fn size_bytes(loc: &SourceLocation, db: &Db) -> Result<u64, DbError> {
    match loc {
        SourceLocation::Sqlite { path } => Ok(file_size(path) + file_size(&wal_path(path))),
        SourceLocation::Postgres { schema, .. } => {
            let row = sqlx::query(
                "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind = 'r'",
            )
            .bind(schema.as_str())
            .fetch_one(&db.pool)
            .await?;
            Ok(row.try_get::<i64, _>(0)?.max(0) as u64)
        }
    }
}

fn wal_path(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", p.display()))
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fedx sources migrate` leaves a SQLite source without STAT4 samples (and with its summary
    /// statistics), whoever ran `ANALYZE` on it before.
    #[tokio::test]
    async fn migrate_drops_stat4_samples_and_keeps_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let loc = SourceLocation::Sqlite { path: dir.path().join("tax.db") };
        let dept = Department::Tax;
        migrate_schema(dept, &loc).await.unwrap();
        let db = open_for_write(&loc, Access::Write, Duration::from_secs(5)).await.unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        for i in 0..50 {
            sqlx::query("INSERT INTO taxpayer (taxpayer_no, id_number, name, id_norm, name_norm) VALUES ($1, $2, 'x', $2, 'x')")
                .bind(format!("T{i}"))
                .bind(format!("{i:018}"))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        conn.execute("ANALYZE").await.unwrap();
        let count = |table: &'static str| format!("SELECT COUNT(*) FROM {table}");
        let stat4: i64 = sqlx::query_scalar(&count("sqlite_stat4")).fetch_one(&mut *conn).await.unwrap();
        assert!(stat4 > 0, "this SQLite gathers STAT4 samples");
        drop(conn);
        db.pool.close().await;

        migrate_schema(dept, &loc).await.unwrap();
        let db = open_for_write(&loc, Access::Write, Duration::from_secs(5)).await.unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let stat4: i64 = sqlx::query_scalar(&count("sqlite_stat4")).fetch_one(&mut *conn).await.unwrap();
        let stat1: i64 = sqlx::query_scalar(&count("sqlite_stat1")).fetch_one(&mut *conn).await.unwrap();
        assert_eq!((stat4, stat1 > 0), (0, true));
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema_name("fedx_src_tax"));
        assert!(!valid_schema_name("fedx; drop table x"));
        assert!(!valid_schema_name("Fedx"));
        assert!(!valid_schema_name(""));
    }

    #[test]
    fn values_sql_numbers_placeholders() {
        assert_eq!(
            values_sql("INSERT INTO t (a, b) VALUES ", 2, 2, false),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4)"
        );
        assert_eq!(values_sql("INSERT INTO t (a) VALUES ", 1, 2, true), "INSERT INTO t (a) VALUES (?),(?)");
    }

    #[test]
    fn locations_per_department() {
        let set = SourceLocationSet::SqliteDir("/x".into());
        assert_eq!(set.for_dept(Department::Tax), SourceLocation::Sqlite { path: "/x/tax.db".into() });
        let pg = SourceLocationSet::postgres("postgres://h/db");
        assert_eq!(
            pg.for_dept(Department::Education),
            SourceLocation::Postgres { url: "postgres://h/db".into(), schema: "fedx_src_education".into() }
        );
    }
}
