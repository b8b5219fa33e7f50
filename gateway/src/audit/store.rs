//! The exchange log's tables (migration `0002_audit.sql`), on SQLite and PostgreSQL.
//!
//! # Tables
//! - `audit_records`: one row per record, every field of [`ExchangeRecord`]; the three lists as JSON
//!   arrays of strings, hashes as 64 lower-case hex digits, times in unix microseconds, u64 values bit
//!   for bit in BIGINT columns.
//! - `audit_nodes`: every interior node (level >= 1) of the RFC 6962 tree, stored when it completes.
//!   Leaf hashes (level 0) are derived from `audit_records.record_hash`.
//! - `audit_head`: one row (`id = 1`): last seq, its hash, the Merkle frontier (compact range) of the
//!   tree over all records, and the retention boundary `pruned_through`.
//! - `audit_checkpoints`: signed checkpoints.
//! - `audit_subjects`: `(worker_ref, seq)` for queries by subject, extended in bulk by the writer between
//!   group commits ([`AuditStore::index_subjects`]) up to `audit_head.subjects_through`; queries by subject
//!   also scan the records after that watermark, so they are complete at every moment. Keeping this
//!   random-key index out of the append transaction is what lets a commit touch only pages at the end of
//!   the log (migration `0004_audit_subjects.sql` has the measurements' reasoning).
//!
//! # Appends
//! [`AuditStore::append`] seals and writes a batch in one transaction that first locks the head row
//! (`SELECT … FOR UPDATE` on PostgreSQL; `BEGIN IMMEDIATE` on SQLite, which takes the database write lock
//! before reading, so two writers can never both read the same head). Gateway replicas sharing one
//! PostgreSQL database therefore append to one chain, without gaps or duplicates.
//!
//! # Connections and durability
//! [`AuditStore::open`] (or [`AuditStore::with_store`]) opens, besides the shared [`Store`] pool used for
//! reads, a small dedicated writer pool on the same URL for appends, checkpoint signing and pruning. On
//! SQLite it is a single connection in WAL mode with `synchronous = FULL` (the WAL is fsynced at every
//! commit, so a committed record survives power loss; the shared pool runs with `NORMAL`), a 10 s busy
//! timeout, statement journals in memory and a 32 MiB page cache. On PostgreSQL it has two connections
//! and uses the server's `synchronous_commit` setting (keep it `on`). Verification on PostgreSQL also
//! opens, on first use, a native two-connection pool (reading rows through sqlx's `Any` driver costs
//! more than hashing them).
//!
//! Appends bind parameters in multi-row `INSERT`s of at most 29 000 parameters; SQLite gets anonymous
//! `?` placeholders (its parser resolves `$n` names by a linear scan: quadratic in large statements).
//!
//! # Retention
//! [`AuditStore::prune`] deletes old records but keeps `audit_nodes` and every checkpoint. It deletes
//! records `1..=pruned_through` where `pruned_through` is the tree size of the newest checkpoint whose
//! records are all older than the cutoff, rounded down to a multiple of 1024: every Merkle node a retained
//! record or the frontier at `pruned_through` needs is then an interior node, still stored. Consequences:
//! - [`AuditStore::nodes`] omits level-0 nodes of pruned records, so an inclusion proof for a pruned
//!   record (or one needing a pruned leaf) cannot be built and answers not-found.
//! - Verification of a pruned log starts at `pruned_through + 1`. The first record's `prev_hash` cannot be
//!   linked to a deleted record; it is anchored by the first checkpoint at or after `pruned_through`
//!   (its head hash and Merkle root, recomputed from the stored frontier nodes at `pruned_through` and the
//!   retained records, must match).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use time::OffsetDateTime;

use super::checkpoint::Checkpoint;
use super::merkle::{self, Frontier, NodeId};
use super::record::{time_from_us, time_to_us, truncate_to_us, Exchange, ExchangeRecord, LegalBasis};
use super::{AuditError, Hash};
use crate::signing::KeyRing;
use crate::store::{Backend, Store, StoreError};

/// Most bind parameters in one statement (SQLite allows 32 766, PostgreSQL 65 535).
const MAX_PARAMS: usize = 29_000;
/// Records deleted per transaction when pruning, so that appends interleave.
const PRUNE_CHUNK: u64 = 10_000;
/// The retention boundary is a multiple of this many records (see the module docs).
pub const PRUNE_ALIGNMENT: u64 = 1024;

pub(crate) const RECORD_COLUMNS: &str = "seq, time_us, request_id, trace_id, caller_dept, caller_role, \
     cert_serial, cert_fingerprint, method, purpose, legal_basis_kind, legal_basis_value, worker_ref, \
     sources_consulted, disclosed_fields, claims_verified, outcome_code, outcome_reason, latency_us, \
     prev_hash, record_hash";
const RECORD_COLUMN_COUNT: usize = 21;

/// Separates the columns of one record in [`AuditStore::record_text`] (ASCII unit separator).
pub(crate) const FIELD_SEP: u8 = 0x1f;
/// Separates records in [`AuditStore::record_text`] (ASCII record separator).
pub(crate) const ROW_SEP: u8 = 0x1e;

fn record_text_expr() -> String {
    let columns: Vec<&str> = RECORD_COLUMNS
        .split(',')
        .map(str::trim)
        .map(|c| {
            if c == "legal_basis_value" {
                "CASE WHEN legal_basis_value IS NULL THEN '' ELSE '=' || legal_basis_value END"
            } else {
                c
            }
        })
        .collect();
    format!("concat({})", columns.join(", '\u{1f}', "))
}

// SQLite aggregates in the order of the ordered subquery (the verifier checks the seqs anyway);
// PostgreSQL is told the order explicitly, since it may aggregate in parallel.
static SQLITE_TEXT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT count(*), group_concat(r, '\u{1e}') FROM (SELECT {} AS r FROM audit_records \
         WHERE seq >= $1 AND seq <= $2 ORDER BY seq)",
        record_text_expr()
    )
});
static POSTGRES_TEXT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT count(*), string_agg({}, '\u{1e}' ORDER BY seq) FROM audit_records \
         WHERE seq >= $1 AND seq <= $2",
        record_text_expr()
    )
});

const CHECKPOINT_COLUMNS: &str = "seq, tree_size, root_hash, head_hash, signed_at_us, key_id, signature";

/// Method prefix of AuditService calls, which access histories leave out.
const AUDIT_SERVICE_PREFIX: &str = "/fedx.v1.AuditService/";

/// Filters of [`AuditStore::query`]; they combine with AND, `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeFilter {
    /// Only records with `time >= start`.
    pub start: Option<OffsetDateTime>,
    /// Only records with `time < end`.
    pub end: Option<OffsetDateTime>,
    /// Only records whose caller is this department.
    pub department: Option<String>,
    pub purpose: Option<String>,
    /// Full gRPC method name.
    pub method: Option<String>,
    pub outcome_code: Option<i32>,
    pub worker_ref: Option<String>,
}

/// What [`AuditStore::prune`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Records `1..=pruned_through` are now gone (0 = none ever pruned).
    pub pruned_through: u64,
    /// Records deleted by this call.
    pub records_deleted: u64,
    /// The checkpoint the boundary was derived from (the first checkpoint at or after it), if any.
    pub anchor: Option<Checkpoint>,
}

/// The result of [`AuditStore::record_text`].
pub(crate) struct RecordText {
    /// Records aggregated.
    pub count: u64,
    row: AnyRow,
}

impl RecordText {
    /// The text, borrowed from the row (`None` for no records, or a value that is not text).
    pub fn text(&self) -> Option<&str> {
        self.row.try_get::<Option<&str>, _>(1).ok().flatten()
    }
}

/// The head row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadState {
    /// Last seq appended (0 = empty log).
    pub seq: u64,
    /// record_hash of record `seq` (zeros for an empty log).
    pub head_hash: Hash,
    /// Size of the Merkle tree the frontier describes (always equal to `seq`).
    pub tree_size: u64,
    /// Records with seq <= this were pruned.
    pub pruned_through: u64,
    frontier_hex: String,
}

impl HeadState {
    /// The Merkle frontier over the first `tree_size` leaves.
    pub fn frontier(&self) -> Result<Frontier, AuditError> {
        let ids = Frontier::node_ids(self.tree_size);
        let bytes = hex::decode(&self.frontier_hex)
            .map_err(|_| AuditError::Corrupt("audit_head.frontier is not hex".into()))?;
        if bytes.len() != ids.len() * 32 {
            return Err(AuditError::Corrupt(format!(
                "audit_head.frontier holds {} bytes, tree size {} needs {}",
                bytes.len(),
                self.tree_size,
                ids.len() * 32
            )));
        }
        let hashes = bytes.chunks_exact(32).map(to_hash).collect();
        Frontier::from_nodes(self.tree_size, hashes)
            .ok_or_else(|| AuditError::Corrupt("audit_head.frontier does not fit its tree size".into()))
    }
}

/// The exchange log's storage. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditStore {
    store: Store,
    /// Whether [`AuditStore::open`] opened `store` (and [`AuditStore::close`] closes it).
    owns_store: bool,
    writer: AnyPool,
    url: Arc<str>,
    /// PostgreSQL only: a native pool for verification reads, opened on first use (the `Any` driver
    /// copies every value of every row, which dominates verification time).
    pg_reader: Arc<tokio::sync::OnceCell<sqlx::PgPool>>,
}

/// A range of records as read for fast verification (see `verify`).
pub(crate) enum FastChunk {
    /// SQLite: the range as one text (see [`AuditStore::record_text`]).
    Text(RecordText),
    /// PostgreSQL: native rows, columns in [`RECORD_COLUMNS`] order.
    PgRows(Vec<sqlx::postgres::PgRow>),
}

/// Why one stored record could not be decoded (a tampered or damaged row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowFault {
    pub seq: u64,
    pub column: &'static str,
}

impl RowFault {
    fn into_error(self) -> AuditError {
        AuditError::Corrupt(format!("record {}: column {} is malformed", self.seq, self.column))
    }
}

impl AuditStore {
    /// Opens the log on `url` (`sqlite:…` or `postgres:…`): connects the shared [`Store`], applies
    /// pending migrations, and opens the dedicated writer pool (see the module docs).
    pub async fn open(url: &str) -> Result<AuditStore, AuditError> {
        let store = Store::open(url).await.map_err(store_error)?;
        let mut audit = AuditStore::with_store(store, url).await?;
        audit.owns_store = true;
        Ok(audit)
    }

    /// Uses `store` (already migrated, connected to `url`) for reads and opens the dedicated writer pool
    /// on the same `url`.
    pub async fn with_store(store: Store, url: &str) -> Result<AuditStore, AuditError> {
        let backend = store.backend();
        let options = AnyConnectOptions::from_str(url)?;
        let writer = AnyPoolOptions::new()
            .max_connections(match backend {
                // One writer is all SQLite allows; a second connection would only wait for the lock.
                Backend::Sqlite => 1,
                Backend::Postgres => 2,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        // fsync the WAL at every commit: a committed record survives power loss.
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        // Statement journals (multi-row INSERTs inside a transaction) in memory rather
                        // than in a temporary file created and deleted per statement; they only serve
                        // to roll back a failed statement, never durability.
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                        // Room for the subject index pages a bulk of random keys touches.
                        conn.execute("PRAGMA cache_size = -32768").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(AuditStore {
            store,
            owns_store: false,
            writer,
            url: Arc::from(url),
            pg_reader: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// The shared store the reads go through.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The pool reads go through.
    pub fn pool(&self) -> &AnyPool {
        self.store.pool()
    }

    /// Closes the pools this store opened (the shared [`Store`] too when [`AuditStore::open`] opened
    /// it; one passed to [`AuditStore::with_store`] belongs to the caller). Later calls fail.
    pub async fn close(&self) {
        if let Some(pool) = self.pg_reader.get() {
            pool.close().await;
        }
        self.writer.close().await;
        if self.owns_store {
            self.store.close().await;
        }
    }

    /// Starts a transaction on the writer pool holding the head-row lock, and reads the head.
    async fn begin_locked(&self) -> Result<(Transaction<'static, Any>, HeadState), AuditError> {
        let (mut tx, sql) = match self.backend() {
            // BEGIN IMMEDIATE takes the write lock (waiting up to busy_timeout) before anything is read,
            // so a deferred read transaction can never fail to upgrade.
            Backend::Sqlite => (
                self.writer.begin_with("BEGIN IMMEDIATE").await?,
                "SELECT seq, head_hash, tree_size, frontier, pruned_through FROM audit_head WHERE id = 1",
            ),
            Backend::Postgres => (
                self.writer.begin().await?,
                "SELECT seq, head_hash, tree_size, frontier, pruned_through FROM audit_head WHERE id = 1 \
                 FOR UPDATE",
            ),
        };
        let row = sqlx::query(sql).fetch_optional(&mut *tx).await?;
        let head = head_from_row(row)?;
        Ok((tx, head))
    }

    /// The head row, unlocked.
    pub async fn head_state(&self) -> Result<HeadState, AuditError> {
        let row = sqlx::query(
            "SELECT seq, head_hash, tree_size, frontier, pruned_through FROM audit_head WHERE id = 1",
        )
        .fetch_optional(self.pool())
        .await?;
        head_from_row(row)
    }

    /// `(seq, record_hash)` of the last record; `(0, zeros)` for an empty log.
    pub async fn head(&self) -> Result<(u64, Hash), AuditError> {
        let head = self.head_state().await?;
        Ok((head.seq, head.head_hash))
    }

    /// Records `1..=pruned_through` were deleted by retention (0 = none).
    pub async fn pruned_through(&self) -> Result<u64, AuditError> {
        Ok(self.head_state().await?.pruned_through)
    }

    /// Seals `entries` as the next records, in order, and commits them in one transaction. Returns the
    /// sealed records (times truncated to whole microseconds). Nothing is written if it fails.
    pub async fn append(&self, entries: &[Exchange]) -> Result<Vec<ExchangeRecord>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (mut tx, head) = self.begin_locked().await?;
        if head.tree_size != head.seq {
            return Err(AuditError::Corrupt(format!(
                "audit_head: tree size {} differs from seq {}",
                head.tree_size, head.seq
            )));
        }
        let mut frontier = head.frontier()?;
        let old_frontier: HashMap<NodeId, Hash> =
            Frontier::node_ids(head.tree_size).into_iter().zip(frontier_hashes(&head)?).collect();

        let mut records = Vec::with_capacity(entries.len());
        let mut new_nodes: Vec<(NodeId, Hash)> = Vec::with_capacity(entries.len() + 64);
        let mut prev = head.head_hash;
        let mut last_leaf = None;
        for (seq, exchange) in (head.seq + 1..).zip(entries) {
            let record = ExchangeRecord::seal(seq, exchange.clone(), prev);
            prev = record.record_hash;
            let leaf = merkle::leaf_hash(&record.record_hash);
            new_nodes.extend(frontier.push(leaf));
            last_leaf = Some(leaf);
            records.push(record);
        }
        let new_seq = head.seq + entries.len() as u64;

        // The new frontier's nodes are the last leaf (odd size), nodes completed now, or old ones.
        let completed: HashMap<NodeId, Hash> = new_nodes.iter().copied().collect();
        let mut frontier_hex = String::with_capacity(64 * 64);
        for id in Frontier::node_ids(new_seq) {
            let hash = if id.level == 0 && id.index == new_seq - 1 {
                last_leaf
            } else {
                completed.get(&id).or_else(|| old_frontier.get(&id)).copied()
            };
            let hash = hash.ok_or_else(|| {
                AuditError::Corrupt(format!("frontier node {id:?} of tree size {new_seq} not found"))
            })?;
            frontier_hex.push_str(&hex::encode(hash));
        }

        self.insert_records(&mut tx, &records).await?;
        self.insert_nodes(&mut tx, &new_nodes).await?;
        sqlx::query(
            "UPDATE audit_head SET seq = $1, head_hash = $2, tree_size = $3, frontier = $4 WHERE id = 1",
        )
        .bind(new_seq as i64)
        .bind(hex::encode(prev))
        .bind(new_seq as i64)
        .bind(frontier_hex)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(records)
    }

    async fn insert_records(
        &self,
        tx: &mut Transaction<'static, Any>,
        records: &[ExchangeRecord],
    ) -> Result<(), AuditError> {
        for chunk in fixed_size_chunks(records, MAX_PARAMS / RECORD_COLUMN_COUNT) {
            let sql = insert_sql(
                self.backend(),
                &format!("INSERT INTO audit_records ({RECORD_COLUMNS}) VALUES "),
                RECORD_COLUMN_COUNT,
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                let e = &r.exchange;
                let (kind, value) = match &e.legal_basis {
                    None => (0i16, None),
                    Some(LegalBasis::Consent(id)) => (1, Some(id.as_str())),
                    Some(LegalBasis::Statute(citation)) => (2, Some(citation.as_str())),
                };
                query = query
                    .bind(r.seq as i64)
                    .bind(e.time_us())
                    .bind(e.request_id.as_str())
                    .bind(e.trace_id.as_str())
                    .bind(e.caller_dept.as_str())
                    .bind(e.caller_role.as_str())
                    .bind(e.cert_serial.as_str())
                    .bind(e.cert_fingerprint.as_str())
                    .bind(e.method.as_str())
                    .bind(e.purpose.as_str())
                    .bind(kind)
                    .bind(value)
                    .bind(e.worker_ref.as_str())
                    .bind(encode_list(&e.sources_consulted))
                    .bind(encode_list(&e.disclosed_fields))
                    .bind(encode_list(&e.claims_verified))
                    .bind(e.outcome_code)
                    .bind(e.outcome_reason.as_str())
                    .bind(e.latency_us as i64)
                    .bind(hex::encode(r.prev_hash))
                    .bind(hex::encode(r.record_hash));
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn insert_nodes(
        &self,
        tx: &mut Transaction<'static, Any>,
        nodes: &[(NodeId, Hash)],
    ) -> Result<(), AuditError> {
        for chunk in fixed_size_chunks(nodes, MAX_PARAMS / 3) {
            let sql = insert_sql(
                self.backend(),
                "INSERT INTO audit_nodes (level, idx, hash) VALUES ",
                3,
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for (id, hash) in chunk {
                query = query.bind(i16::from(id.level)).bind(id.index as i64).bind(hex::encode(hash));
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Records appended but not yet in the subject index (see migration `0004_audit_subjects.sql`).
    pub async fn subject_backlog(&self) -> Result<u64, AuditError> {
        let row = sqlx::query("SELECT seq, subjects_through FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        let seq: i64 = row.try_get(0)?;
        let through: i64 = row.try_get(1)?;
        Ok((seq as u64).saturating_sub(through as u64))
    }

    /// Adds up to `max_records` records after the subject index's watermark to the index, in one
    /// transaction on the writer connection, and returns how many records it covered. The writer calls it
    /// between group commits, in bulk, so that the index's random inserts are paid once per page per bulk
    /// rather than once per record per commit.
    pub async fn index_subjects(&self, max_records: u64) -> Result<u64, AuditError> {
        let (mut tx, head) = self.begin_locked().await?;
        let row =
            sqlx::query("SELECT subjects_through FROM audit_head WHERE id = 1").fetch_one(&mut *tx).await?;
        let through = row.try_get::<i64, _>(0)? as u64;
        let upto = head.seq.min(through.saturating_add(max_records));
        if upto <= through {
            tx.rollback().await?;
            return Ok(0);
        }
        // In key order, so that consecutive inserts land on the same index pages.
        sqlx::query(
            "INSERT INTO audit_subjects (worker_ref, seq) SELECT worker_ref, seq FROM audit_records \
             WHERE seq > $1 AND seq <= $2 AND worker_ref <> '' ORDER BY worker_ref, seq",
        )
        .bind(through as i64)
        .bind(upto as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE audit_head SET subjects_through = $1 WHERE id = 1")
            .bind(upto as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(upto - through)
    }

    /// Records matching `filter` with seq > `after_seq`, ascending, at most `limit`.
    pub async fn query(
        &self,
        filter: &ExchangeFilter,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<ExchangeRecord>, AuditError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut params = Params::default();
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE seq > ");
        sql.push_str(&params.push(Param::Int(after_seq as i64)));
        if let Some(start) = filter.start {
            sql.push_str(" AND time_us >= ");
            sql.push_str(&params.push(Param::Int(time_to_us(start))));
        }
        if let Some(end) = filter.end {
            sql.push_str(" AND time_us < ");
            sql.push_str(&params.push(Param::Int(time_to_us(end))));
        }
        if let Some(dept) = &filter.department {
            sql.push_str(" AND caller_dept = ");
            sql.push_str(&params.push(Param::Text(dept)));
        }
        if let Some(purpose) = &filter.purpose {
            sql.push_str(" AND purpose = ");
            sql.push_str(&params.push(Param::Text(purpose)));
        }
        if let Some(method) = &filter.method {
            sql.push_str(" AND method = ");
            sql.push_str(&params.push(Param::Text(method)));
        }
        if let Some(code) = filter.outcome_code {
            sql.push_str(" AND outcome_code = ");
            sql.push_str(&params.push(Param::Int32(code)));
        }
        if let Some(worker_ref) = &filter.worker_ref {
            sql.push_str(" AND ");
            sql.push_str(&subject_condition(&mut params, worker_ref));
        }
        sql.push_str(" ORDER BY seq LIMIT ");
        sql.push_str(&params.push(Param::Int(clamp_limit(limit))));
        let rows = params.bind(sqlx::query(&sql)).fetch_all(self.pool()).await?;
        decode_rows(&rows)
    }

    /// Exchanges about `worker_ref`, newest first: time in `[start, end)`, seq < `before_seq` (a paging
    /// cursor), at most `limit`; AuditService calls are left out.
    pub async fn access_history(
        &self,
        worker_ref: &str,
        start: Option<OffsetDateTime>,
        end: Option<OffsetDateTime>,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ExchangeRecord>, AuditError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut params = Params::default();
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE ");
        sql.push_str(&subject_condition(&mut params, worker_ref));
        sql.push_str(&format!(
            " AND substr(method, 1, {}) <> '{AUDIT_SERVICE_PREFIX}'",
            AUDIT_SERVICE_PREFIX.len()
        ));
        if let Some(start) = start {
            sql.push_str(" AND time_us >= ");
            sql.push_str(&params.push(Param::Int(time_to_us(start))));
        }
        if let Some(end) = end {
            sql.push_str(" AND time_us < ");
            sql.push_str(&params.push(Param::Int(time_to_us(end))));
        }
        if let Some(before) = before_seq {
            sql.push_str(" AND seq < ");
            sql.push_str(&params.push(Param::Int(before.min(i64::MAX as u64) as i64)));
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ");
        sql.push_str(&params.push(Param::Int(clamp_limit(limit))));
        let rows = params.bind(sqlx::query(&sql)).fetch_all(self.pool()).await?;
        decode_rows(&rows)
    }

    /// Records with `from_seq <= seq <= to_seq`, ascending (all of them: callers page through large
    /// ranges).
    pub async fn records(&self, from_seq: u64, to_seq: u64) -> Result<Vec<ExchangeRecord>, AuditError> {
        let rows = self.record_rows(from_seq, to_seq, usize::MAX).await?;
        decode_rows(&rows)
    }

    /// Raw rows with `from_seq <= seq <= to_seq`, ascending, at most `limit`.
    pub(crate) async fn record_rows(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: usize,
    ) -> Result<Vec<AnyRow>, AuditError> {
        if from_seq > to_seq {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM audit_records WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3"
        ))
        .bind(clamp_seq(from_seq))
        .bind(clamp_seq(to_seq))
        .bind(clamp_limit(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Records `from_seq..=to_seq` as one text, for fast verification: each record's 21 columns (in
    /// [`RECORD_COLUMNS`] order; integers in decimal; `legal_basis_value` as `""` for NULL and `"="`
    /// followed by the value otherwise) joined by [`FIELD_SEP`], records joined by [`ROW_SEP`] in seq
    /// order, and the number of records. One row per call instead of one per record keeps the
    /// per-row cost of the driver out of verification. The text is unambiguous exactly when it holds
    /// `count - 1` row and `20 * count` field separators (values can only add separators); callers
    /// must check that, and fall back to [`AuditStore::record_rows`] otherwise.
    pub(crate) async fn record_text(&self, from_seq: u64, to_seq: u64) -> Result<RecordText, AuditError> {
        let sql = match self.backend() {
            Backend::Sqlite => &*SQLITE_TEXT_SQL,
            Backend::Postgres => &*POSTGRES_TEXT_SQL,
        };
        let row =
            sqlx::query(sql).bind(clamp_seq(from_seq)).bind(clamp_seq(to_seq)).fetch_one(self.pool()).await?;
        let count: i64 = row.try_get(0)?;
        Ok(RecordText { count: count.max(0) as u64, row })
    }

    /// Records `from_seq..=to_seq` in the form fast verification reads.
    pub(crate) async fn fast_chunk(&self, from_seq: u64, to_seq: u64) -> Result<FastChunk, AuditError> {
        match self.backend() {
            Backend::Sqlite => Ok(FastChunk::Text(self.record_text(from_seq, to_seq).await?)),
            Backend::Postgres => {
                let pool = self
                    .pg_reader
                    .get_or_try_init(|| async {
                        sqlx::postgres::PgPoolOptions::new()
                            .max_connections(2)
                            .acquire_timeout(Duration::from_secs(10))
                            .after_connect(|conn, _meta| {
                                Box::pin(async move {
                                    // Range reads by primary key: a plain index scan in key order. Without
                                    // fresh statistics (after a bulk load) the planner may otherwise pick
                                    // a parallel bitmap scan, a sort and JIT compilation for every range.
                                    conn.execute(
                                        "SET enable_bitmapscan = off; SET max_parallel_workers_per_gather = 0; \
                                         SET jit = off",
                                    )
                                    .await?;
                                    Ok(())
                                })
                            })
                            .connect(&self.url)
                            .await
                    })
                    .await?;
                let rows = sqlx::query(&format!(
                    "SELECT {RECORD_COLUMNS} FROM audit_records WHERE seq >= $1 AND seq <= $2 ORDER BY seq"
                ))
                .bind(clamp_seq(from_seq))
                .bind(clamp_seq(to_seq))
                .fetch_all(pool)
                .await?;
                Ok(FastChunk::PgRows(rows))
            }
        }
    }

    /// The largest seq stored in `audit_records` (0 if none).
    pub async fn max_record_seq(&self) -> Result<u64, AuditError> {
        let row = sqlx::query("SELECT MAX(seq) AS m FROM audit_records").fetch_one(self.pool()).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0) as u64)
    }

    /// The stored record_hash of record `seq` (`None` if there is no such record; an error if it is
    /// malformed).
    pub async fn record_hash(&self, seq: u64) -> Result<Option<Hash>, AuditError> {
        match self.stored_record_hash(seq).await? {
            None => Ok(None),
            Some(Some(hash)) => Ok(Some(hash)),
            Some(None) => Err(AuditError::Corrupt(format!("record {seq}: column record_hash is malformed"))),
        }
    }

    /// The stored record_hash of record `seq`: `None` if absent, `Some(None)` if malformed.
    pub(crate) async fn stored_record_hash(&self, seq: u64) -> Result<Option<Option<Hash>>, AuditError> {
        let row = sqlx::query("SELECT record_hash FROM audit_records WHERE seq = $1")
            .bind(clamp_seq(seq))
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| row.try_get::<String, _>(0).ok().as_deref().and_then(parse_hash)))
    }

    /// Merkle node hashes (level 0: leaf hashes of the records; above: stored interior nodes). Nodes
    /// that do not exist (beyond the log, or leaves of pruned records) are absent from the map.
    pub async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, AuditError> {
        let mut out = HashMap::with_capacity(ids.len());
        // Two parameters per interior node, one per leaf.
        for chunk in ids.chunks(MAX_PARAMS / 2) {
            let mut params = Params::default();
            let leaves: Vec<&NodeId> = chunk.iter().filter(|id| id.level == 0).collect();
            let interior: Vec<&NodeId> = chunk.iter().filter(|id| id.level > 0).collect();
            let mut parts = Vec::new();
            if !leaves.is_empty() {
                let list: Vec<String> = leaves
                    .iter()
                    .map(|id| params.push(Param::Int(clamp_seq(id.index.saturating_add(1)))))
                    .collect();
                parts.push(format!(
                    "SELECT 0 AS level, seq - 1 AS idx, record_hash AS hash FROM audit_records \
                     WHERE seq IN ({})",
                    list.join(", ")
                ));
            }
            if !interior.is_empty() {
                let conditions: Vec<String> = interior
                    .iter()
                    .map(|id| {
                        let level = params.push(Param::Small(i16::from(id.level)));
                        let idx = params.push(Param::Int(clamp_seq(id.index)));
                        format!("(level = {level} AND idx = {idx})")
                    })
                    .collect();
                parts.push(format!(
                    "SELECT level, idx, hash FROM audit_nodes WHERE {}",
                    conditions.join(" OR ")
                ));
            }
            if parts.is_empty() {
                continue;
            }
            let sql = parts.join(" UNION ALL ");
            let rows = params.bind(sqlx::query(&sql)).fetch_all(self.pool()).await?;
            for row in rows {
                let level: i64 = row.try_get(0)?;
                let index: i64 = row.try_get(1)?;
                let text: String = row.try_get(2)?;
                let id = NodeId {
                    level: u8::try_from(level)
                        .map_err(|_| AuditError::Corrupt(format!("audit_nodes level {level}")))?,
                    index: index as u64,
                };
                let hash = parse_hash(&text)
                    .ok_or_else(|| AuditError::Corrupt(format!("Merkle node {id:?}: hash is malformed")))?;
                let hash = if id.level == 0 { merkle::leaf_hash(&hash) } else { hash };
                out.insert(id, hash);
            }
        }
        Ok(out)
    }

    /// Signs a checkpoint of the current head if the log has grown since the last one (in one
    /// transaction holding the head lock, so replicas never sign two checkpoints of one size).
    pub async fn sign_checkpoint(
        &self,
        keys: &KeyRing,
        now: OffsetDateTime,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let (mut tx, head) = self.begin_locked().await?;
        let last = sqlx::query("SELECT seq, tree_size FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (last_seq, last_size) = match last {
            Some(row) => (row.try_get::<i64, _>(0)? as u64, row.try_get::<i64, _>(1)? as u64),
            None => (0, 0),
        };
        if head.seq < last_size {
            return Err(AuditError::Corrupt(format!(
                "the log head (seq {}) is behind checkpoint {last_seq} (tree size {last_size})",
                head.seq
            )));
        }
        if head.seq == last_size {
            tx.rollback().await?;
            return Ok(None);
        }
        if head.tree_size != head.seq {
            return Err(AuditError::Corrupt(format!(
                "audit_head: tree size {} differs from seq {}",
                head.tree_size, head.seq
            )));
        }
        let root = head.frontier()?.root();
        let checkpoint =
            Checkpoint::sign(last_seq + 1, head.seq, root, head.head_hash, truncate_to_us(now), keys)
                .map_err(|e| AuditError::Signing(e.to_string()))?;
        sqlx::query(&format!(
            "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(checkpoint.seq as i64)
        .bind(checkpoint.tree_size as i64)
        .bind(hex::encode(checkpoint.root_hash))
        .bind(hex::encode(checkpoint.head_hash))
        .bind(time_to_us(checkpoint.signed_at))
        .bind(checkpoint.key_id.as_str())
        .bind(hex::encode(checkpoint.signature))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(checkpoint))
    }

    /// Checkpoint number `seq`, or the latest when `None`.
    pub async fn checkpoint(&self, seq: Option<u64>) -> Result<Option<Checkpoint>, AuditError> {
        let row = match seq {
            Some(seq) => {
                sqlx::query(&format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq = $1"))
                    .bind(clamp_seq(seq))
                    .fetch_optional(self.pool())
                    .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
                ))
                .fetch_optional(self.pool())
                .await?
            }
        };
        row.as_ref().map(checkpoint_strict).transpose()
    }

    /// The checkpoint covering exactly `tree_size` records, if one was signed.
    pub async fn checkpoint_at_size(&self, tree_size: u64) -> Result<Option<Checkpoint>, AuditError> {
        let row =
            sqlx::query(&format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size = $1"))
                .bind(clamp_seq(tree_size))
                .fetch_optional(self.pool())
                .await?;
        row.as_ref().map(checkpoint_strict).transpose()
    }

    /// Checkpoints with seq < `before_seq` (all when `None`), newest first, at most `limit`.
    pub async fn list_checkpoints(
        &self,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, AuditError> {
        let rows = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(before_seq.map(clamp_seq).unwrap_or(i64::MAX))
        .bind(clamp_limit(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(checkpoint_strict).collect()
    }

    /// Checkpoints with `min_size <= tree_size <= max_size`, by tree size, read leniently: a row whose
    /// hashes, time or signature do not parse is returned with zeros in their place and `false`, so that
    /// verification reports it instead of failing.
    pub(crate) async fn checkpoints_by_size(
        &self,
        min_size: u64,
        max_size: u64,
    ) -> Result<Vec<(Checkpoint, bool)>, AuditError> {
        let rows = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size >= $1 AND tree_size <= $2 \
             ORDER BY tree_size"
        ))
        .bind(clamp_seq(min_size))
        .bind(clamp_seq(max_size))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(checkpoint_lenient).collect()
    }

    /// Deletes records older than `older_than` down to a checkpointed, 1024-aligned boundary (see the
    /// module docs). Merkle nodes and checkpoints are kept.
    pub async fn prune(&self, older_than: OffsetDateTime) -> Result<PruneReport, AuditError> {
        let (mut tx, head) = self.begin_locked().await?;
        // Every record up to `all_old_through` is older than the cutoff.
        let row = sqlx::query("SELECT MIN(seq) FROM audit_records WHERE time_us >= $1")
            .bind(time_to_us(older_than))
            .fetch_one(&mut *tx)
            .await?;
        let all_old_through = match row.try_get::<Option<i64>, _>(0)? {
            Some(first_recent) => (first_recent as u64).saturating_sub(1).min(head.seq),
            None => head.seq,
        };
        let row = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size <= $1 \
             ORDER BY tree_size DESC LIMIT 1"
        ))
        .bind(clamp_seq(all_old_through))
        .fetch_optional(&mut *tx)
        .await?;
        let anchor = row.as_ref().map(checkpoint_strict).transpose()?;
        let boundary = anchor.as_ref().map_or(0, |c| c.tree_size / PRUNE_ALIGNMENT * PRUNE_ALIGNMENT);
        let pruned_through = boundary.max(head.pruned_through);
        if pruned_through > head.pruned_through {
            sqlx::query("UPDATE audit_head SET pruned_through = $1 WHERE id = 1")
                .bind(pruned_through as i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        // Delete in chunks outside the head lock (also finishing an earlier interrupted prune).
        let mut records_deleted = 0;
        let row = sqlx::query("SELECT MIN(seq) FROM audit_records").fetch_one(self.pool()).await?;
        if let Some(min) = row.try_get::<Option<i64>, _>(0)? {
            let mut low = (min as u64).saturating_sub(1);
            while low < pruned_through {
                let high = (low + PRUNE_CHUNK).min(pruned_through);
                records_deleted += sqlx::query("DELETE FROM audit_records WHERE seq > $1 AND seq <= $2")
                    .bind(low as i64)
                    .bind(high as i64)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                low = high;
            }
        }
        // The subject index must not keep references retention has removed from the log.
        if pruned_through > 0 {
            sqlx::query("DELETE FROM audit_subjects WHERE seq <= $1")
                .bind(pruned_through as i64)
                .execute(&self.writer)
                .await?;
        }
        let anchor = if pruned_through == 0 {
            None
        } else {
            let row = sqlx::query(&format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size >= $1 \
                 ORDER BY tree_size LIMIT 1"
            ))
            .bind(pruned_through as i64)
            .fetch_optional(self.pool())
            .await?;
            row.as_ref().map(checkpoint_strict).transpose()?
        };
        Ok(PruneReport { pruned_through, records_deleted, anchor })
    }
}

fn store_error(e: StoreError) -> AuditError {
    match e {
        StoreError::Database(e) => AuditError::Database(e),
        StoreError::Migrate(e) => AuditError::Database(sqlx::Error::Migrate(Box::new(e))),
        other => AuditError::Database(sqlx::Error::Configuration(other.to_string().into())),
    }
}

fn head_from_row(row: Option<AnyRow>) -> Result<HeadState, AuditError> {
    let row = row.ok_or_else(|| AuditError::Corrupt("the audit_head row is missing".into()))?;
    let head_hash: String = row.try_get(1)?;
    Ok(HeadState {
        seq: row.try_get::<i64, _>(0)? as u64,
        head_hash: parse_hash(&head_hash)
            .ok_or_else(|| AuditError::Corrupt("audit_head.head_hash is malformed".into()))?,
        tree_size: row.try_get::<i64, _>(2)? as u64,
        frontier_hex: row.try_get(3)?,
        pruned_through: row.try_get::<i64, _>(4)? as u64,
    })
}

fn frontier_hashes(head: &HeadState) -> Result<Vec<Hash>, AuditError> {
    let bytes = hex::decode(&head.frontier_hex)
        .map_err(|_| AuditError::Corrupt("audit_head.frontier is not hex".into()))?;
    Ok(bytes.chunks_exact(32).map(to_hash).collect())
}

fn to_hash(bytes: &[u8]) -> Hash {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(bytes);
    hash
}

/// Value of each lower-case hex digit; 0x80 marks any other byte.
static HEX_DIGITS: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// 64 lower-case hex digits → hash (anything else → `None`). Hot in verification, hence the table.
pub(crate) fn parse_hash(text: &str) -> Option<Hash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    let mut bad = 0u8;
    for (out, pair) in hash.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (HEX_DIGITS[pair[0] as usize], HEX_DIGITS[pair[1] as usize]);
        bad |= high | low;
        *out = (high << 4) | (low & 0x0f);
    }
    (bad & 0x80 == 0).then_some(hash)
}

/// Lists are stored as JSON arrays of strings.
fn encode_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

fn clamp_seq(seq: u64) -> i64 {
    seq.min(i64::MAX as u64) as i64
}

fn clamp_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// `INSERT … VALUES (…), (…)` for `rows` rows of `columns` parameters. SQLite gets anonymous `?`
/// placeholders (its parser is quadratic in the number of `$n` ones); PostgreSQL `$n`.
/// Splits `items` into chunks whose lengths are powers of two (largest first, at most `max`). Group
/// commits come in every size; one multi-row INSERT per exact size would make the driver prepare a new
/// statement of up to thousands of parameters for almost every batch (and fill its statement cache with
/// them). Power-of-two sizes keep about a dozen statement shapes, all prepared once and reused.
fn fixed_size_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let largest = if max == 0 { 1 } else { 1usize << max.ilog2() };
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = largest.min(1usize << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

fn insert_sql(backend: Backend, head: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * columns * 8);
    sql.push_str(head);
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            n += 1;
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&n.to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

enum Param<'a> {
    Int(i64),
    Int32(i32),
    Small(i16),
    Text(&'a str),
}

/// Bind parameters collected while a query's text is built.
#[derive(Default)]
struct Params<'a> {
    values: Vec<Param<'a>>,
}

impl<'a> Params<'a> {
    /// Adds a parameter and returns its placeholder.
    fn push(&mut self, param: Param<'a>) -> String {
        self.values.push(param);
        format!("${}", self.values.len())
    }

    fn bind(
        self,
        mut query: sqlx::query::Query<'a, Any, sqlx::any::AnyArguments<'a>>,
    ) -> sqlx::query::Query<'a, Any, sqlx::any::AnyArguments<'a>> {
        for value in self.values {
            query = match value {
                Param::Int(v) => query.bind(v),
                Param::Int32(v) => query.bind(v),
                Param::Small(v) => query.bind(v),
                Param::Text(v) => query.bind(v),
            };
        }
        query
    }
}

/// Records about `worker_ref`: those in the subject index, and those after it (`subjects_through`) with
/// that reference. One statement, so one snapshot: the index and its watermark never disagree, and no
/// record is counted twice or missed while the writer extends the index.
fn subject_condition<'a>(params: &mut Params<'a>, worker_ref: &'a str) -> String {
    let indexed = params.push(Param::Text(worker_ref));
    let tail = params.push(Param::Text(worker_ref));
    format!(
        "seq IN (SELECT seq FROM audit_subjects WHERE worker_ref = {indexed} \
         UNION ALL SELECT seq FROM audit_records \
         WHERE seq > (SELECT subjects_through FROM audit_head WHERE id = 1) AND worker_ref = {tail})"
    )
}

fn decode_rows(rows: &[AnyRow]) -> Result<Vec<ExchangeRecord>, AuditError> {
    rows.iter().map(|row| decode_record(row).map_err(RowFault::into_error)).collect()
}

/// The seq of a record row.
pub(crate) fn row_seq(row: &AnyRow) -> Result<u64, AuditError> {
    Ok(row.try_get::<i64, _>(0)? as u64)
}

/// Decodes one `audit_records` row (columns in [`RECORD_COLUMNS`] order), strictly: any value that
/// could not have been written by [`AuditStore::append`] is a fault.
pub(crate) fn decode_record(row: &AnyRow) -> Result<ExchangeRecord, RowFault> {
    let seq = row.try_get::<i64, _>(0).map_err(|_| RowFault { seq: 0, column: "seq" })? as u64;
    let fault = |column: &'static str| RowFault { seq, column };
    let text =
        |index: usize, column: &'static str| row.try_get::<String, _>(index).map_err(|_| fault(column));
    let list = |index: usize, column: &'static str| {
        let json = text(index, column)?;
        serde_json::from_str::<Vec<String>>(&json).map_err(|_| fault(column))
    };
    let time_us: i64 = row.try_get(1).map_err(|_| fault("time_us"))?;
    let kind: i64 = row.try_get(10).map_err(|_| fault("legal_basis_kind"))?;
    let value: Option<String> = row.try_get(11).map_err(|_| fault("legal_basis_value"))?;
    let legal_basis = match (kind, value) {
        (0, None) => None,
        (1, Some(id)) => Some(LegalBasis::Consent(id)),
        (2, Some(citation)) => Some(LegalBasis::Statute(citation)),
        _ => return Err(fault("legal_basis_kind")),
    };
    let exchange = Exchange {
        time: time_from_us(time_us).ok_or_else(|| fault("time_us"))?,
        request_id: text(2, "request_id")?,
        trace_id: text(3, "trace_id")?,
        caller_dept: text(4, "caller_dept")?,
        caller_role: text(5, "caller_role")?,
        cert_serial: text(6, "cert_serial")?,
        cert_fingerprint: text(7, "cert_fingerprint")?,
        method: text(8, "method")?,
        purpose: text(9, "purpose")?,
        legal_basis,
        worker_ref: text(12, "worker_ref")?,
        sources_consulted: list(13, "sources_consulted")?,
        disclosed_fields: list(14, "disclosed_fields")?,
        claims_verified: list(15, "claims_verified")?,
        outcome_code: row.try_get(16).map_err(|_| fault("outcome_code"))?,
        outcome_reason: text(17, "outcome_reason")?,
        latency_us: row.try_get::<i64, _>(18).map_err(|_| fault("latency_us"))? as u64,
    };
    let prev_hash = parse_hash(&text(19, "prev_hash")?).ok_or_else(|| fault("prev_hash"))?;
    let record_hash = parse_hash(&text(20, "record_hash")?).ok_or_else(|| fault("record_hash"))?;
    Ok(ExchangeRecord { seq, exchange, prev_hash, record_hash })
}

/// Decodes a checkpoint row; `false` when a field did not parse (zeros stand in for it).
fn checkpoint_lenient(row: &AnyRow) -> Result<(Checkpoint, bool), AuditError> {
    let seq = row.try_get::<i64, _>(0)? as u64;
    let tree_size = row.try_get::<i64, _>(1)? as u64;
    let mut well_formed = true;
    let mut hash = |index: usize| match row.try_get::<String, _>(index).ok().as_deref().and_then(parse_hash) {
        Some(h) => h,
        None => {
            well_formed = false;
            [0; 32]
        }
    };
    let root_hash = hash(2);
    let head_hash = hash(3);
    let signed_at = match row.try_get::<i64, _>(4).ok().and_then(time_from_us) {
        Some(t) => t,
        None => {
            well_formed = false;
            OffsetDateTime::UNIX_EPOCH
        }
    };
    let key_id = match row.try_get::<String, _>(5) {
        Ok(k) => k,
        Err(_) => {
            well_formed = false;
            String::new()
        }
    };
    let mut signature = [0u8; 64];
    let sig_ok = row
        .try_get::<String, _>(6)
        .ok()
        .filter(|s| !s.bytes().any(|b| b.is_ascii_uppercase()))
        .is_some_and(|s| hex::decode_to_slice(s, &mut signature).is_ok());
    if !sig_ok {
        well_formed = false;
        signature = [0; 64];
    }
    Ok((Checkpoint { seq, tree_size, root_hash, head_hash, signed_at, key_id, signature }, well_formed))
}

fn checkpoint_strict(row: &AnyRow) -> Result<Checkpoint, AuditError> {
    match checkpoint_lenient(row)? {
        (checkpoint, true) => Ok(checkpoint),
        (checkpoint, false) => {
            Err(AuditError::Corrupt(format!("checkpoint {}: a column is malformed", checkpoint.seq)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_have_power_of_two_sizes_and_cover_everything() {
        for n in 0..300usize {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = fixed_size_chunks(&items, 100).collect();
            assert_eq!(chunks.concat(), items);
            assert!(chunks.iter().all(|c| c.len().is_power_of_two() && c.len() <= 64), "{n}");
            // Greedy: sizes never grow, so a batch yields at most log2(n) + n / 64 statements.
            assert!(chunks.windows(2).all(|w| w[0].len() >= w[1].len()), "{n}");
        }
    }

    #[test]
    fn insert_sql_placeholders() {
        assert_eq!(
            insert_sql(Backend::Sqlite, "INSERT INTO t (a, b) VALUES ", 2, 2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            insert_sql(Backend::Postgres, "INSERT INTO t (a, b) VALUES ", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }

    #[test]
    fn parse_hash_is_strict() {
        let h = [0xabu8; 32];
        assert_eq!(parse_hash(&hex::encode(h)), Some(h));
        assert_eq!(parse_hash(&hex::encode(h).to_uppercase()), None);
        assert_eq!(parse_hash("ab"), None);
        assert_eq!(parse_hash(&"zz".repeat(32)), None);
        assert_eq!(parse_hash(&format!("{}g", "0".repeat(63))), None);
        assert_eq!(parse_hash(&format!("{}:", "0".repeat(63))), None);
        assert_eq!(parse_hash(&format!("{}é", "0".repeat(62))), None);
        let all: Hash = std::array::from_fn(|i| (i * 8) as u8);
        assert_eq!(parse_hash(&hex::encode(all)), Some(all));
    }

    #[test]
    fn lists_round_trip_through_json() {
        let items = vec!["a\"b".to_string(), "地方".into(), String::new()];
        let json = encode_list(&items);
        assert_eq!(serde_json::from_str::<Vec<String>>(&json).unwrap(), items);
    }
}
