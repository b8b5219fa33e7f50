//! How the request path runs its read-only SQL against a department's database.
//!
//! * **PostgreSQL** — through the sqlx pool: a query is a network round trip anyway, and the pool
//!   multiplexes it onto the runtime.
//! * **SQLite** — in place, on the calling thread, with rusqlite. A source query is an indexed point read
//!   of pages the OS already caches: a few microseconds of CPU. sqlx's SQLite driver instead hands every
//!   query to the connection's own worker thread and back — two context switches and a lock round per
//!   query, measured at ~75–180 µs of gateway CPU per query under load (BENCHMARKS.md, *Load*), ten times
//!   the query itself. A view is ~15–25 such queries, so the hand-offs were the gateway's main cost.
//!
//!   Running in place means a query holds its tokio worker thread for its duration. That is sound only
//!   because every request-path query is bounded: the SQL is the adapters' own (index look-ups with a
//!   `LIMIT`), a progress handler interrupts any statement past the source timeout, and the connection is
//!   read-only in WAL mode, where readers never wait for writers. Connections are pooled, but a connection
//!   is only ever held while a statement runs, never across an `.await`, so the pool holds at most one per
//!   thread that has run a query.
//!
//! Both paths return the same [`ReadRow`]s, so the department modules write each query once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{ErrorCode, OpenFlags};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

/// Prepared statements kept per SQLite connection: every request-path statement of a department (about
/// 20 for the largest) stays prepared.
const STATEMENT_CACHE: usize = 64;

/// SQLite virtual-machine instructions between two checks of the deadline: ~tens of µs of work.
const PROGRESS_OPS: i32 = 2_000;

/// Idle SQLite connections kept per source; more are opened when threads race, and closed on return.
const MAX_IDLE: usize = 16;

/// One column value, as the request path reads it (text and integers; dates are ISO text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadRow(Vec<Cell>);

impl ReadRow {
    /// Column `i` as text; `None` for NULL, a missing column or a non-text value.
    pub fn text(&self, i: usize) -> Option<String> {
        match self.0.get(i)? {
            Cell::Text(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Column `i` as an integer; `None` for NULL, a missing column or a non-integer value.
    pub fn int(&self, i: usize) -> Option<i64> {
        match self.0.get(i)? {
            Cell::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn from_any(r: &AnyRow) -> Self {
        ReadRow(
            (0..r.columns().len())
                .map(|i| {
                    if let Ok(Some(s)) = r.try_get::<Option<String>, _>(i) {
                        Cell::Text(s)
                    } else if let Ok(Some(v)) = r.try_get::<Option<i64>, _>(i) {
                        Cell::Int(v)
                    } else {
                        Cell::Null
                    }
                })
                .collect(),
        )
    }

    fn from_sqlite(r: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Self> {
        let mut cells = Vec::with_capacity(columns);
        for i in 0..columns {
            cells.push(match r.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                // Adapters store no floats or blobs; read them as absent rather than fail the request.
                ValueRef::Real(_) | ValueRef::Blob(_) => Cell::Null,
            });
        }
        Ok(ReadRow(cells))
    }
}

/// Why a read failed. Never carries bound values: they are personal data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Pool(#[from] sqlx::Error),
    /// The SQLite file could not be opened or read (missing, unreadable, its directory gone).
    #[error("{0}")]
    SqliteUnavailable(String),
    /// A statement ran past the source timeout and was interrupted.
    #[error("interrupted after {0:?}")]
    SqliteTimeout(Duration),
    #[error("database error {0}")]
    Sqlite(String),
}

/// The read side of one department's database.
pub(crate) enum Reader {
    Pool(AnyPool),
    Sqlite(SqliteReader),
}

impl Reader {
    /// All rows of `sql` with text parameters `$1…` bound to `args`.
    pub async fn rows(&self, sql: &str, args: &[&str]) -> Result<Vec<ReadRow>, ReadError> {
        match self {
            Reader::Pool(pool) => {
                Ok(bound(sql, args).fetch_all(pool).await?.iter().map(ReadRow::from_any).collect())
            }
            Reader::Sqlite(s) => s.rows(sql, args, usize::MAX),
        }
    }

    /// The first row of `sql`, if any.
    pub async fn first(&self, sql: &str, args: &[&str]) -> Result<Option<ReadRow>, ReadError> {
        match self {
            Reader::Pool(pool) => {
                Ok(bound(sql, args).fetch_optional(pool).await?.as_ref().map(ReadRow::from_any))
            }
            Reader::Sqlite(s) => Ok(s.rows(sql, args, 1)?.pop()),
        }
    }

    /// The rows of one record's category, read as a `LEFT JOIN` from the record (bound to `$1`): `None`
    /// if the record does not exist; otherwise its rows, where a single row of NULL joined columns means
    /// a record with nothing in that category. One statement answers both questions.
    pub async fn rows_of_record(&self, sql: &str, record: &str) -> Result<Option<Vec<ReadRow>>, ReadError> {
        let rows = self.rows(sql, &[record]).await?;
        Ok((!rows.is_empty()).then_some(rows))
    }

    /// Whether `sql` returns a row.
    pub async fn exists(&self, sql: &str, args: &[&str]) -> Result<bool, ReadError> {
        Ok(self.first(sql, args).await?.is_some())
    }
}

/// `sql` with text parameters bound in order, for the sqlx pool.
fn bound<'q>(
    sql: &'q str,
    args: &[&'q str],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    args.iter().fold(sqlx::query(sql), |q, a| q.bind(*a))
}

/// Read-only rusqlite connections on one SQLite file, used in place (see the module doc).
pub(crate) struct SqliteReader {
    /// For the one warning this reader may log; never personal data.
    dept: &'static str,
    path: PathBuf,
    timeout: Duration,
    /// Origin of the connections' deadlines (nanoseconds since it).
    epoch: Instant,
    idle: Mutex<Vec<ReadConnection>>,
    warned_samples: AtomicBool,
}

/// A connection and the deadline its progress handler enforces. The handler is installed once, at
/// connect; each statement only stores its deadline, so the hot path allocates no closure.
struct ReadConnection {
    conn: rusqlite::Connection,
    /// Nanoseconds since [`SqliteReader::epoch`].
    deadline: Arc<AtomicU64>,
}

impl SqliteReader {
    /// Opens nothing yet: like the sqlx pool, the first query connects, so a gateway starts while a
    /// source file is missing and reports it unavailable per call.
    pub fn new(dept: &'static str, path: &Path, timeout: Duration) -> Self {
        SqliteReader {
            dept,
            path: path.to_owned(),
            timeout,
            epoch: Instant::now(),
            idle: Mutex::new(Vec::new()),
            warned_samples: AtomicBool::new(false),
        }
    }

    fn connect(&self) -> Result<ReadConnection, ReadError> {
        // Read-write without create, as the sqlx pool's `mode=rw`: a reader of a WAL database needs
        // its shared-memory file, and a missing database must be reported, not created empty.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(&self.path, flags).map_err(classify)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Readers never write; a stray write is a bug. No mmap: pages come from the OS page cache by
        // pread, so resident memory is not charged once per connection for the whole file.
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA mmap_size = 0;").map_err(classify)?;
        conn.busy_timeout(self.timeout).map_err(classify)?;
        if !self.warned_samples.load(Ordering::Relaxed) && has_sample_statistics(&conn) {
            self.warned_samples.store(true, Ordering::Relaxed);
            tracing::warn!(
                dept = self.dept,
                "source database holds STAT4 samples, so SQLite re-plans every look-up; \
                 `fedx sources migrate` removes them"
            );
        }
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let (watched, epoch) = (Arc::clone(&deadline), self.epoch);
        conn.progress_handler(
            PROGRESS_OPS,
            Some(move || nanos_since(epoch) > watched.load(Ordering::Relaxed)),
        );
        Ok(ReadConnection { conn, deadline })
    }

    /// Runs one statement to completion (at most `limit` rows) on a pooled connection, interrupting it
    /// at the source timeout.
    fn rows(&self, sql: &str, args: &[&str], limit: usize) -> Result<Vec<ReadRow>, ReadError> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        let timeout = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        conn.deadline.store(nanos_since(self.epoch).saturating_add(timeout), Ordering::Relaxed);
        let result = run(&conn.conn, sql, args, limit);
        match result {
            Ok(rows) => {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
                Ok(rows)
            }
            // A failed connection is dropped: the next call opens a fresh one (the file may be back).
            Err(e) => Err(match e.sqlite_error_code() {
                Some(ErrorCode::OperationInterrupted) => ReadError::SqliteTimeout(self.timeout),
                _ => classify(e),
            }),
        }
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Whether `sqlite_stat4` holds samples (see `db::drop_sample_statistics`).
fn has_sample_statistics(conn: &rusqlite::Connection) -> bool {
    let table = conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat4'", [], |_| {
            Ok(())
        })
        .is_ok();
    table && conn.query_row("SELECT 1 FROM sqlite_stat4 LIMIT 1", [], |_| Ok(())).is_ok()
}

fn run(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[&str],
    limit: usize,
) -> rusqlite::Result<Vec<ReadRow>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(r) = rows.next()? else { break };
        out.push(ReadRow::from_sqlite(r, columns)?);
    }
    Ok(out)
}

/// Sorts a rusqlite error into "the database is not there" and everything else. Messages name the
/// failure, never a bound value (SQLite does not quote parameters in errors).
fn classify(e: rusqlite::Error) -> ReadError {
    match e.sqlite_error_code() {
        Some(ErrorCode::CannotOpen | ErrorCode::NotADatabase | ErrorCode::SystemIoFailure) => {
            ReadError::SqliteUnavailable(e.to_string())
        }
        Some(code) => ReadError::Sqlite(format!("{code:?}")),
        None => ReadError::Sqlite(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_rows(dir: &Path) -> PathBuf {
        let path = dir.join("src.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, note TEXT);
             INSERT INTO t VALUES ('a', 1, NULL), ('b', 2, 'two'), ('c', 3, 'three');",
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn sqlite_rows_decode_text_integers_and_nulls_with_positional_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let reader =
            Reader::Sqlite(SqliteReader::new("test", &file_with_rows(dir.path()), Duration::from_secs(1)));
        let rows = reader.rows("SELECT k, n, note FROM t WHERE k >= $1 ORDER BY k", &["b"]).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].text(0).as_deref(), rows[0].int(1), rows[0].text(2).as_deref()),
            (Some("b"), Some(2), Some("two"))
        );
        let a = reader.first("SELECT k, n, note FROM t WHERE k = $1 AND n = $2", &["a", "1"]).await.unwrap();
        let a = a.expect("row a");
        assert_eq!((a.text(2), a.int(0)), (None, None), "NULL and a text column read as absent");
        assert!(!reader.exists("SELECT 1 FROM t WHERE k = $1", &["z"]).await.unwrap());
    }

    /// The request path is read-only even though the file is opened read-write (for WAL's shared memory).
    #[tokio::test]
    async fn sqlite_reader_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let reader =
            Reader::Sqlite(SqliteReader::new("test", &file_with_rows(dir.path()), Duration::from_secs(1)));
        let err = reader.rows("DELETE FROM t RETURNING k", &[]).await.unwrap_err();
        assert!(matches!(err, ReadError::Sqlite(_)), "{err:?}");
        assert_eq!(reader.rows("SELECT k FROM t", &[]).await.unwrap().len(), 3);
    }

    /// A statement that would run forever is interrupted at the source timeout, holding its thread no
    /// longer than that, and the reader goes on serving.
    #[tokio::test]
    async fn a_runaway_sqlite_statement_is_interrupted_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_millis(50);
        let reader = Reader::Sqlite(SqliteReader::new("test", &file_with_rows(dir.path()), timeout));
        let started = Instant::now();
        let err = reader
            .first(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                &[],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::SqliteTimeout(t) if t == timeout), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "interrupted late: {:?}", started.elapsed());
        assert_eq!(reader.rows("SELECT k FROM t", &[]).await.unwrap().len(), 3);
    }

    /// A missing file is reported unavailable, not created; once it exists the same reader reads it.
    #[tokio::test]
    async fn a_missing_sqlite_file_is_unavailable_and_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.sqlite");
        let reader = Reader::Sqlite(SqliteReader::new("test", &path, Duration::from_secs(1)));
        let err = reader.first("SELECT 1", &[]).await.unwrap_err();
        assert!(matches!(err, ReadError::SqliteUnavailable(_)), "{err:?}");
        assert!(!path.exists());
        file_with_rows(dir.path());
        assert!(reader.exists("SELECT 1 FROM t", &[]).await.unwrap());
    }
}
