//! Recomputation of the hash chain, the Merkle tree and the checkpoints over a range of records.
//!
//! [`verify_range`] reads the records in seq ranges of [`CHUNK`] records, two at a time on separate
//! connections: on SQLite each range as one text (see `AuditStore::record_text`), on PostgreSQL as native
//! rows. It re-hashes several ranges at once on all cores while the next ones are fetched; a range in
//! which anything does not decode or check out on this fast path (or whose text is ambiguous) is read
//! again through the strict row decoder, which finds exactly what is wrong. It then walks the ranges in
//! order:
//!
//! 1. seq continuity: every seq from the first to the last of the range, once, in order; a seq beyond the
//!    head row (one the log never issued) counts as a gap too → `SeqGap`;
//! 2. `prev_hash` equals the previous record's `record_hash` (zeros for seq 1) → `PrevHashMismatch`;
//! 3. `record_hash` equals the hash of the record's content; a row that does not decode (a value the
//!    gateway could not have written) fails here as well → `RecordHashMismatch`;
//! 4. each stored checkpoint of that tree size: signature first (`CheckpointSignature`; a row whose fields
//!    do not parse fails here), then `head_hash` against the record and `root_hash` against the Merkle
//!    root rebuilt from the records (`CheckpointMismatch`).
//!
//! It stops at the first failure and reports its seq (a checkpoint's tree size for checkpoint failures).
//!
//! A range not starting at 1 links its first record to the stored hash of record `from_seq - 1` and
//! starts the Merkle frontier from the stored nodes at `from_seq - 1`; a checkpoint of exactly that size
//! is checked against both. A pruned log is verified from `pruned_through + 1`: the first record's
//! `prev_hash` is then anchored by the checkpoint at `pruned_through` if there is one, and by the first
//! checkpoint after it in any case (head hash and root).
//!
//! [`verify_saved_checkpoint`] checks the log against a checkpoint an auditor kept elsewhere, which
//! detects truncation and rewriting even when the attacker also edited the head row and the checkpoints
//! table.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::Row;
use tokio::task::JoinHandle;

use super::checkpoint::Checkpoint;
use super::merkle::{self, Frontier};
use super::record::{fields_hash, record_hash, Fields};
use super::store::{decode_record, parse_hash, row_seq, AuditStore, FastChunk, FIELD_SEP, ROW_SEP};
use super::{AuditError, Hash, ZERO_HASH};
use crate::signing::KeyRing;

/// Records per read (a seq range of this length).
pub const CHUNK: u64 = 4096;
/// Ranges read at once, on separate connections (the database's share of the work is then spread over
/// two of its threads or processes).
const FETCH_AHEAD: usize = 2;

/// The first integrity failure found (`fedx.v1.ChainFailure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainFailure {
    /// A seq is missing, repeated, out of order, or beyond the head.
    SeqGap,
    /// A record's prev_hash differs from the previous record's record_hash.
    PrevHashMismatch,
    /// A record's record_hash differs from the hash of its content.
    RecordHashMismatch,
    /// A checkpoint's head_hash or root_hash differs from the one recomputed from the records.
    CheckpointMismatch,
    /// A checkpoint's signature does not verify under its key.
    CheckpointSignature,
}

/// The outcome of a verification (`fedx.v1.VerifyChainResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub valid: bool,
    /// Records whose hashes were recomputed.
    pub records_checked: u64,
    pub checkpoints_checked: u64,
    /// seq of the first record (or tree size of the first checkpoint) that failed; 0 when valid.
    pub first_invalid_seq: u64,
    pub failure: Option<ChainFailure>,
    /// seq of the last record checked that checked out (0 if none).
    pub head_seq: u64,
    /// Its record_hash (zeros if none).
    pub head_hash: Hash,
}

/// Verifies records `from_seq..=to_seq` (`from_seq` 0 or 1 = from the start, raised to
/// `pruned_through + 1` on a pruned log; `to_seq` `None` = up to the head) and every stored checkpoint
/// of a size in that range. A broken chain is an `Ok` report with `valid = false`; errors are for a
/// database that cannot be read.
pub async fn verify_range(
    store: &AuditStore,
    keys: &KeyRing,
    from_seq: u64,
    to_seq: Option<u64>,
) -> Result<VerifyReport, AuditError> {
    let requested_to = to_seq.unwrap_or(u64::MAX);
    // Read order matters while appends go on: checkpoints, then records, then the head row. Each read
    // sees a state at least as new as the previous one, so in an intact log every checkpoint read is
    // within the head read, and every record too.
    let max_checkpoint_size = max_checkpoint_size(store).await?;
    let max_seq = store.max_record_seq().await?;
    let head = store.head_state().await?;
    let from = from_seq.max(1).max(head.pruned_through.saturating_add(1));
    let last = head.seq.max(max_seq);
    let to = requested_to.min(last);
    let mut report = run(store, keys, from, to, head.seq, Vec::new()).await?;
    if report.valid && max_checkpoint_size > last && requested_to > last {
        // A checkpoint covers records the log no longer has: truncated.
        fail_report(&mut report, last + 1, ChainFailure::SeqGap);
    }
    Ok(report)
}

/// Checks the log against `saved`, a checkpoint kept outside the database: its signature, that the log
/// still holds `saved.tree_size` records, and that the chain up to it verifies and ends in its head hash
/// and Merkle root. A truncated log reports `SeqGap` at (current size + 1); a rewritten one
/// `CheckpointMismatch` at `saved.tree_size` (or the first broken record).
///
/// When the checkpoint lies wholly in the pruned part of the log only its root can be rechecked, from the
/// stored Merkle nodes (or, if those do not reach, by equality with the stored checkpoint of that size).
pub async fn verify_saved_checkpoint(
    store: &AuditStore,
    keys: &KeyRing,
    saved: &Checkpoint,
) -> Result<VerifyReport, AuditError> {
    let mut report = empty_report();
    if saved.tree_size == 0 {
        report.checkpoints_checked = 1;
        if saved.verify_signature(keys).is_err() {
            fail_report(&mut report, 0, ChainFailure::CheckpointSignature);
        } else if saved.root_hash != merkle::empty_root() || saved.head_hash != ZERO_HASH {
            fail_report(&mut report, 0, ChainFailure::CheckpointMismatch);
        }
        return Ok(report);
    }
    if saved.verify_signature(keys).is_err() {
        report.checkpoints_checked = 1;
        fail_report(&mut report, saved.tree_size, ChainFailure::CheckpointSignature);
        return Ok(report);
    }
    let max_seq = store.max_record_seq().await?;
    let head = store.head_state().await?;
    let from = head.pruned_through.saturating_add(1);
    let last = head.seq.max(max_seq);
    if saved.tree_size < from {
        return verify_pruned_checkpoint(store, saved).await;
    }
    let to = saved.tree_size.min(last);
    let mut report = run(store, keys, from, to, head.seq, vec![(saved.clone(), true)]).await?;
    if report.valid && saved.tree_size > last {
        fail_report(&mut report, last + 1, ChainFailure::SeqGap);
    }
    Ok(report)
}

async fn verify_pruned_checkpoint(
    store: &AuditStore,
    saved: &Checkpoint,
) -> Result<VerifyReport, AuditError> {
    let mut report = empty_report();
    report.checkpoints_checked = 1;
    let nodes = store.nodes(&merkle::root_nodes(saved.tree_size)).await?;
    let matches = match merkle::root_from_nodes(saved.tree_size, &nodes) {
        Some(root) => root == saved.root_hash,
        None => store
            .checkpoint_at_size(saved.tree_size)
            .await
            .ok()
            .flatten()
            .is_some_and(|c| c.root_hash == saved.root_hash && c.head_hash == saved.head_hash),
    };
    if !matches {
        fail_report(&mut report, saved.tree_size, ChainFailure::CheckpointMismatch);
    }
    Ok(report)
}

async fn max_checkpoint_size(store: &AuditStore) -> Result<u64, AuditError> {
    use sqlx::Row;
    let row = sqlx::query("SELECT MAX(tree_size) FROM audit_checkpoints").fetch_one(store.pool()).await?;
    Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0) as u64)
}

fn empty_report() -> VerifyReport {
    VerifyReport {
        valid: true,
        records_checked: 0,
        checkpoints_checked: 0,
        first_invalid_seq: 0,
        failure: None,
        head_seq: 0,
        head_hash: ZERO_HASH,
    }
}

fn fail_report(report: &mut VerifyReport, at: u64, failure: ChainFailure) {
    report.valid = false;
    report.first_invalid_seq = at;
    report.failure = Some(failure);
}

/// One record, decoded and re-hashed.
struct Checked {
    seq: u64,
    /// Stored prev_hash; `None` if malformed.
    prev: Option<Hash>,
    /// Stored record_hash; `None` if malformed.
    stored: Option<Hash>,
    /// The record decodes and its content hashes to `stored`.
    content_ok: bool,
    /// Leaf hash of `stored` (zeros if malformed).
    leaf: Hash,
}

/// The sequential part of verification.
struct Engine {
    next: u64,
    head_seq: u64,
    expect_prev: Option<Hash>,
    frontier: Option<Frontier>,
    last: (u64, Hash),
    records_checked: u64,
    checkpoints_checked: u64,
    failure: Option<(u64, ChainFailure)>,
}

impl Engine {
    fn fail(&mut self, at: u64, failure: ChainFailure) {
        if self.failure.is_none() {
            self.failure = Some((at, failure));
        }
    }

    /// Checks `checkpoint` (whose signature was found good or not) against the state after `self.last`,
    /// whose record hash is `head`.
    fn check_checkpoint(&mut self, checkpoint: &Checkpoint, signature_ok: bool, head: Option<Hash>) {
        self.checkpoints_checked += 1;
        if !signature_ok {
            self.fail(checkpoint.tree_size, ChainFailure::CheckpointSignature);
            return;
        }
        let root_ok = self.frontier.as_ref().is_some_and(|f| f.root() == checkpoint.root_hash);
        if head != Some(checkpoint.head_hash) || !root_ok {
            self.fail(checkpoint.tree_size, ChainFailure::CheckpointMismatch);
        }
    }

    /// Walks one range's records and the checkpoints of sizes in it (sorted by tree size, each with
    /// whether its signature verified).
    fn walk(&mut self, records: &[Checked], checkpoints: &[(Checkpoint, bool)]) {
        let mut pending = checkpoints.iter().peekable();
        for record in records {
            if self.failure.is_some() {
                return;
            }
            if record.seq != self.next {
                self.fail(record.seq.min(self.next), ChainFailure::SeqGap);
                return;
            }
            if record.seq > self.head_seq {
                self.fail(record.seq, ChainFailure::SeqGap);
                return;
            }
            let prev_ok = match (record.prev, self.expect_prev) {
                (None, _) => false,
                (Some(prev), Some(expected)) => prev == expected,
                // Start of a pruned range without a checkpoint at its boundary: trusted.
                (Some(_), None) => true,
            };
            self.records_checked += 1;
            if !prev_ok {
                self.fail(record.seq, ChainFailure::PrevHashMismatch);
                return;
            }
            let stored = match (record.content_ok, record.stored) {
                (true, Some(stored)) => stored,
                _ => {
                    self.fail(record.seq, ChainFailure::RecordHashMismatch);
                    return;
                }
            };
            if let Some(frontier) = self.frontier.as_mut() {
                frontier.push(record.leaf);
            }
            self.expect_prev = Some(stored);
            self.last = (record.seq, stored);
            self.next = record.seq + 1;
            while let Some((checkpoint, signature_ok)) = pending.next_if(|(c, _)| c.tree_size <= record.seq) {
                if checkpoint.tree_size == record.seq {
                    self.check_checkpoint(checkpoint, *signature_ok, Some(stored));
                }
            }
        }
    }
}

/// Checks one record row strictly (the slow path). Errors only when the seq itself is unreadable.
fn check_row(row: &AnyRow) -> Result<Checked, AuditError> {
    let seq = row_seq(row)?;
    let hash_column = |index: usize| row.try_get::<String, _>(index).ok().as_deref().and_then(parse_hash);
    let stored = hash_column(20);
    let content_ok = match decode_record(row) {
        Ok(r) => record_hash(r.seq, &r.exchange, &r.prev_hash) == r.record_hash,
        Err(_) => false,
    };
    Ok(Checked { seq, prev: hash_column(19), stored, content_ok, leaf: leaf_of(stored) })
}

fn leaf_of(stored: Option<Hash>) -> Hash {
    stored.map_or(ZERO_HASH, |h| merkle::leaf_hash(&h))
}

/// Parses a list column (a JSON array of strings) as the strict decoder does, borrowing when the items
/// have no escapes.
fn parse_list(json: &str) -> Option<Vec<Cow<'_, str>>> {
    match serde_json::from_str::<Vec<&str>>(json) {
        Ok(items) => Some(items.into_iter().map(Cow::Borrowed).collect()),
        Err(_) => {
            serde_json::from_str::<Vec<String>>(json).ok().map(|v| v.into_iter().map(Cow::Owned).collect())
        }
    }
}

/// One record's columns as the fast path reads them (borrowed).
struct RawRecord<'a> {
    seq: i64,
    time_us: i64,
    strings: [&'a str; 8],
    kind: i64,
    value: Option<&'a str>,
    worker_ref: &'a str,
    lists: [&'a str; 3],
    outcome_code: i32,
    outcome_reason: &'a str,
    latency_us: i64,
    prev_hash: &'a str,
    record_hash: &'a str,
}

/// Checks one record on the fast path. `None` if anything does not decode exactly as the strict decoder
/// would accept it, or the record does not check out: the caller then redoes the whole range on the
/// slow path, which says precisely what is wrong.
fn check_raw(raw: &RawRecord<'_>) -> Option<Checked> {
    // The time must be representable, as the strict decoder requires.
    super::record::time_from_us(raw.time_us)?;
    let legal_basis = match (raw.kind, raw.value) {
        (0, None) => None,
        (1, Some(v)) => Some((1u8, v)),
        (2, Some(v)) => Some((2u8, v)),
        _ => return None,
    };
    let [sources, disclosed, claims] =
        [parse_list(raw.lists[0])?, parse_list(raw.lists[1])?, parse_list(raw.lists[2])?];
    let prev = parse_hash(raw.prev_hash)?;
    let stored = parse_hash(raw.record_hash)?;
    let [request_id, trace_id, caller_dept, caller_role, cert_serial, cert_fingerprint, method, purpose] =
        raw.strings;
    let content = Fields {
        time_us: raw.time_us,
        request_id,
        trace_id,
        caller_dept,
        caller_role,
        cert_serial,
        cert_fingerprint,
        method,
        purpose,
        legal_basis,
        worker_ref: raw.worker_ref,
        sources_consulted: &sources,
        disclosed_fields: &disclosed,
        claims_verified: &claims,
        outcome_code: raw.outcome_code,
        outcome_reason: raw.outcome_reason,
        latency_us: raw.latency_us as u64,
    };
    let seq = raw.seq as u64;
    if fields_hash(seq, &content, &prev) != stored {
        return None;
    }
    Some(Checked {
        seq,
        prev: Some(prev),
        stored: Some(stored),
        content_ok: true,
        leaf: merkle::leaf_hash(&stored),
    })
}

/// One record of the text form (see `AuditStore::record_text`).
fn check_text_record(text: &str) -> Option<Checked> {
    let mut fields = text.split(FIELD_SEP as char);
    let mut next = || fields.next();
    let seq = next()?.parse::<i64>().ok()?;
    let time_us = next()?.parse::<i64>().ok()?;
    let strings = [next()?, next()?, next()?, next()?, next()?, next()?, next()?, next()?];
    let kind = next()?.parse::<i64>().ok()?;
    let value = next()?;
    // "" for NULL, "=" and the value otherwise.
    let value = if value.is_empty() { None } else { Some(value.strip_prefix('=')?) };
    let worker_ref = next()?;
    let lists = [next()?, next()?, next()?];
    let outcome_code = next()?.parse::<i32>().ok()?;
    let outcome_reason = next()?;
    let latency_us = next()?.parse::<i64>().ok()?;
    let prev_hash = next()?;
    let record_hash = next()?;
    if next().is_some() {
        return None;
    }
    check_raw(&RawRecord {
        seq,
        time_us,
        strings,
        kind,
        value,
        worker_ref,
        lists,
        outcome_code,
        outcome_reason,
        latency_us,
        prev_hash,
        record_hash,
    })
}

/// One native PostgreSQL row (columns in `RECORD_COLUMNS` order). Decoded without sqlx's per-value type
/// check (a measurable share of the time): the columns' types are the schema's, and a value decoded
/// wrongly could only fail the hash and send the range to the strict path.
fn check_pg_row(row: &sqlx::postgres::PgRow) -> Option<Checked> {
    let text = |i: usize| row.try_get_unchecked::<&str, _>(i).ok();
    check_raw(&RawRecord {
        seq: row.try_get_unchecked(0).ok()?,
        time_us: row.try_get_unchecked(1).ok()?,
        strings: [text(2)?, text(3)?, text(4)?, text(5)?, text(6)?, text(7)?, text(8)?, text(9)?],
        kind: i64::from(row.try_get_unchecked::<i16, _>(10).ok()?),
        value: row.try_get_unchecked::<Option<&str>, _>(11).ok()?,
        worker_ref: text(12)?,
        lists: [text(13)?, text(14)?, text(15)?],
        outcome_code: row.try_get_unchecked(16).ok()?,
        outcome_reason: text(17)?,
        latency_us: row.try_get_unchecked(18).ok()?,
        prev_hash: text(19)?,
        record_hash: text(20)?,
    })
}

/// Checks a range read by `AuditStore::fast_chunk`; `None` sends it to the slow path.
fn check_fast(chunk: &FastChunk) -> Option<Vec<Checked>> {
    match chunk {
        FastChunk::Text(text) => check_text(text.count, text.text()),
        FastChunk::PgRows(rows) => {
            let checked: Vec<Checked> = rows.iter().map(check_pg_row).collect::<Option<_>>()?;
            checked.windows(2).all(|w| w[0].seq < w[1].seq).then_some(checked)
        }
    }
}

/// Checks a range in its text form; `None` sends it to the slow path.
///
/// The text is unambiguous when every separator in it is structural (values can only add separators):
/// it must split into exactly `count` records (the number of rows the database aggregated) of exactly
/// 21 fields each.
fn check_text(count: u64, text: Option<&str>) -> Option<Vec<Checked>> {
    let text = match text {
        None => return (count == 0).then(Vec::new),
        Some(text) => text,
    };
    let mut checked = Vec::with_capacity(usize::try_from(count).ok()?);
    for record in text.split(ROW_SEP as char) {
        let record = check_text_record(record)?;
        // The seqs must ascend (the walk checks continuity).
        if checked.last().is_some_and(|last: &Checked| last.seq >= record.seq) {
            return None;
        }
        checked.push(record);
    }
    (checked.len() as u64 == count).then_some(checked)
}

/// Pairs each checkpoint with whether it is well formed and its signature verifies.
fn signed(keys: &KeyRing, checkpoints: Vec<(Checkpoint, bool)>) -> Vec<(Checkpoint, bool)> {
    checkpoints
        .into_iter()
        .map(|(checkpoint, well_formed)| {
            let ok = well_formed && checkpoint.verify_signature(keys).is_ok();
            (checkpoint, ok)
        })
        .collect()
}

/// What the producer fetched for one seq range.
struct Fetched {
    low: u64,
    high: u64,
    /// `None` if the fast read failed.
    fast: Option<FastChunk>,
    checkpoints: Vec<(Checkpoint, bool)>,
}

/// A range being checked on a blocking thread: the records (`None`: redo on the slow path) and its
/// checkpoints with their signature results.
type InFlight = (u64, u64, JoinHandle<(Option<Vec<Checked>>, Vec<(Checkpoint, bool)>)>);

/// Verifies records `from..=to` (`from >= 1`) and the checkpoints of sizes `from - 1..=to`, plus `extra`
/// checkpoints (not stored) of sizes in that range.
async fn run(
    store: &AuditStore,
    keys: &KeyRing,
    from: u64,
    to: u64,
    head_seq: u64,
    extra: Vec<(Checkpoint, bool)>,
) -> Result<VerifyReport, AuditError> {
    let mut engine = Engine {
        next: from,
        head_seq,
        expect_prev: None,
        frontier: None,
        last: (0, ZERO_HASH),
        records_checked: 0,
        checkpoints_checked: 0,
        failure: None,
    };
    if from == 1 {
        engine.expect_prev = Some(ZERO_HASH);
        engine.frontier = Some(Frontier::new());
    } else {
        let boundary = from - 1;
        match store.stored_record_hash(boundary).await? {
            // Pruned: trusted, or anchored by a checkpoint at the boundary (below).
            None => engine.expect_prev = None,
            Some(Some(hash)) => engine.expect_prev = Some(hash),
            // The record before the range is damaged: nothing can link to it.
            Some(None) => engine.fail(from, ChainFailure::PrevHashMismatch),
        }
        let ids = Frontier::node_ids(boundary);
        let nodes = store.nodes(&ids).await?;
        let hashes: Option<Vec<Hash>> = ids.iter().map(|id| nodes.get(id).copied()).collect();
        engine.frontier = hashes.and_then(|h| Frontier::from_nodes(boundary, h));
        let mut at_boundary = store.checkpoints_by_size(boundary, boundary).await?;
        at_boundary.extend(extra.iter().filter(|(c, _)| c.tree_size == boundary).cloned());
        for (checkpoint, signature_ok) in &signed(keys, at_boundary) {
            match engine.expect_prev {
                Some(head) => engine.check_checkpoint(checkpoint, *signature_ok, Some(head)),
                None => {
                    // The record at the boundary was pruned: the checkpoint vouches for its hash.
                    engine.check_checkpoint(checkpoint, *signature_ok, Some(checkpoint.head_hash));
                    if engine.failure.is_none() {
                        engine.expect_prev = Some(checkpoint.head_hash);
                    }
                }
            }
        }
    }

    if from <= to && engine.failure.is_none() {
        // A verify-only copy of the keys, for the blocking threads.
        let verify_keys = Arc::new(KeyRing::from_public_keys(keys.public_keys()));
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Producer: fetches ranges ahead while earlier ones are checked.
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<Result<Fetched, AuditError>>(parallelism + 1);
        let producer_store = store.clone();
        let producer = tokio::spawn(async move {
            use futures::StreamExt;
            let ranges = (0..)
                .map(move |i: u64| from.saturating_add(i.saturating_mul(CHUNK)))
                .take_while(move |low| *low <= to);
            let mut fetches = futures::stream::iter(ranges)
                .map(|low| {
                    let store = producer_store.clone();
                    async move {
                        let high = low.saturating_add(CHUNK - 1).min(to);
                        // A failing fast read (e.g. an SQLite without concat()) leaves it to the slow path.
                        let fast = store.fast_chunk(low, high).await.ok();
                        let checkpoints = store.checkpoints_by_size(low, high).await?;
                        Ok::<_, AuditError>(Fetched { low, high, fast, checkpoints })
                    }
                })
                .buffered(FETCH_AHEAD);
            while let Some(fetched) = fetches.next().await {
                let stop = fetched.is_err();
                if sender.send(fetched).await.is_err() || stop {
                    break;
                }
            }
        });

        let result = async {
            let mut in_flight: VecDeque<InFlight> = VecDeque::new();
            let mut producer_done = false;
            loop {
                while !producer_done && in_flight.len() <= parallelism {
                    match receiver.recv().await {
                        None => producer_done = true,
                        Some(fetched) => {
                            let Fetched { low, high, fast, mut checkpoints } = fetched?;
                            checkpoints.extend(
                                extra
                                    .iter()
                                    .filter(|(c, _)| c.tree_size >= low && c.tree_size <= high)
                                    .cloned(),
                            );
                            checkpoints.sort_by_key(|(c, _)| c.tree_size);
                            let keys = verify_keys.clone();
                            let handle = tokio::task::spawn_blocking(move || {
                                let checked = fast.as_ref().and_then(check_fast);
                                (checked, signed(&keys, checkpoints))
                            });
                            in_flight.push_back((low, high, handle));
                        }
                    }
                }
                let Some((low, high, handle)) = in_flight.pop_front() else {
                    break;
                };
                let (checked, checkpoints) = handle.await.map_err(|_| panicked())?;
                let checked = match checked {
                    Some(checked) => checked,
                    None => {
                        let rows = store.record_rows(low, high, usize::MAX).await?;
                        tokio::task::spawn_blocking(move || {
                            rows.iter().map(check_row).collect::<Result<Vec<_>, _>>()
                        })
                        .await
                        .map_err(|_| panicked())??
                    }
                };
                let walked = tokio::task::spawn_blocking(move || {
                    engine.walk(&checked, &checkpoints);
                    engine
                });
                engine = walked.await.map_err(|_| panicked())?;
                if engine.failure.is_some() {
                    break;
                }
            }
            Ok::<_, AuditError>(engine)
        }
        .await;
        drop(receiver);
        producer.abort();
        engine = result?;
        if engine.failure.is_none() && engine.next <= to {
            // The records stop before the end of the range.
            engine.fail(engine.next, ChainFailure::SeqGap);
        }
    }

    let mut report = VerifyReport {
        valid: engine.failure.is_none(),
        records_checked: engine.records_checked,
        checkpoints_checked: engine.checkpoints_checked,
        first_invalid_seq: 0,
        failure: None,
        head_seq: engine.last.0,
        head_hash: engine.last.1,
    };
    if let Some((at, failure)) = engine.failure {
        fail_report(&mut report, at, failure);
    }
    Ok(report)
}

fn panicked() -> AuditError {
    AuditError::Corrupt("a verification task panicked".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Exchange, ExchangeRecord, LegalBasis};

    fn record(seq: u64, prev: Hash, reason: &str) -> ExchangeRecord {
        let exchange = Exchange {
            time: time::macros::datetime!(2024-01-02 03:04:05.678901 UTC),
            request_id: format!("r{seq}"),
            method: "/fedx.v1.WorkerViewService/GetWorkerView".into(),
            legal_basis: if seq.is_multiple_of(2) { None } else { Some(LegalBasis::Consent("c-1".into())) },
            sources_consulted: vec!["TAX".into(), "a\"b".into()],
            outcome_reason: reason.into(),
            latency_us: u64::MAX - seq,
            ..Exchange::default()
        };
        ExchangeRecord::seal(seq, exchange, prev)
    }

    fn chain(n: u64) -> Vec<ExchangeRecord> {
        let mut prev = ZERO_HASH;
        (1..=n)
            .map(|seq| {
                let r = record(seq, prev, "");
                prev = r.record_hash;
                r
            })
            .collect()
    }

    /// The text form, as `AuditStore::record_text` builds it in SQL.
    fn text_of(records: &[ExchangeRecord]) -> String {
        let rows: Vec<String> = records
            .iter()
            .map(|r| {
                let e = &r.exchange;
                let (kind, value) = match &e.legal_basis {
                    None => ("0", String::new()),
                    Some(LegalBasis::Consent(v)) => ("1", format!("={v}")),
                    Some(LegalBasis::Statute(v)) => ("2", format!("={v}")),
                };
                let fields = [
                    r.seq.to_string(),
                    e.time_us().to_string(),
                    e.request_id.clone(),
                    e.trace_id.clone(),
                    e.caller_dept.clone(),
                    e.caller_role.clone(),
                    e.cert_serial.clone(),
                    e.cert_fingerprint.clone(),
                    e.method.clone(),
                    e.purpose.clone(),
                    kind.to_string(),
                    value,
                    e.worker_ref.clone(),
                    serde_json::to_string(&e.sources_consulted).unwrap(),
                    serde_json::to_string(&e.disclosed_fields).unwrap(),
                    serde_json::to_string(&e.claims_verified).unwrap(),
                    e.outcome_code.to_string(),
                    e.outcome_reason.clone(),
                    (e.latency_us as i64).to_string(),
                    hex::encode(r.prev_hash),
                    hex::encode(r.record_hash),
                ];
                fields.join("\u{1f}")
            })
            .collect();
        rows.join("\u{1e}")
    }

    #[test]
    fn text_form_checks_out() {
        let records = chain(5);
        let checked = check_text(5, Some(&text_of(&records))).expect("fast path accepts");
        assert_eq!(checked.len(), 5);
        for (c, r) in checked.iter().zip(&records) {
            assert_eq!(c.seq, r.seq);
            assert!(c.content_ok);
            assert_eq!(c.prev, Some(r.prev_hash));
            assert_eq!(c.stored, Some(r.record_hash));
            assert_eq!(c.leaf, merkle::leaf_hash(&r.record_hash));
        }
        assert!(check_text(0, None).is_some_and(|c| c.is_empty()));
        assert!(check_text(1, None).is_none());
    }

    #[test]
    fn text_form_refuses_anything_doubtful() {
        let records = chain(3);
        let text = text_of(&records);
        // Count differs from what the text holds.
        assert!(check_text(2, Some(&text)).is_none());
        assert!(check_text(4, Some(&text)).is_none());
        // Altered content, hash left alone.
        assert!(check_text(3, Some(&text.replacen("r2", "r9", 1))).is_none());
        // A legitimate value containing a separator: ambiguous, left to the slow path.
        let odd = record(1, ZERO_HASH, "a\u{1f}b");
        assert!(check_text(1, Some(&text_of(std::slice::from_ref(&odd)))).is_none());
        // Two records forged into one row's values: the row count gives it away.
        let merged = text_of(&records[..2]);
        assert!(check_text(1, Some(&merged)).is_none());
        // Out of order.
        let swapped = text_of(&[records[1].clone(), records[0].clone()]);
        assert!(check_text(2, Some(&swapped)).is_none());
        // Legal basis value without the "=" marker, or with kind 0.
        let bad_value = text.replacen("\u{1f}1\u{1f}=c-1\u{1f}", "\u{1f}1\u{1f}c-1\u{1f}", 1);
        assert_ne!(bad_value, text);
        assert!(check_text(3, Some(&bad_value)).is_none());
        // Upper-case hex is not what the gateway writes.
        let upper = text_of(&records[..1])
            .replace(&hex::encode(records[0].record_hash), &hex::encode_upper(records[0].record_hash));
        assert!(check_text(1, Some(&upper)).is_none());
    }

    fn checked(records: &[ExchangeRecord]) -> Vec<Checked> {
        records
            .iter()
            .map(|r| Checked {
                seq: r.seq,
                prev: Some(r.prev_hash),
                stored: Some(r.record_hash),
                content_ok: r.hash_matches(),
                leaf: merkle::leaf_hash(&r.record_hash),
            })
            .collect()
    }

    fn engine(head_seq: u64) -> Engine {
        Engine {
            next: 1,
            head_seq,
            expect_prev: Some(ZERO_HASH),
            frontier: Some(Frontier::new()),
            last: (0, ZERO_HASH),
            records_checked: 0,
            checkpoints_checked: 0,
            failure: None,
        }
    }

    #[test]
    fn walk_finds_the_first_failure() {
        let records = chain(6);
        let mut e = engine(6);
        e.walk(&checked(&records), &[]);
        assert_eq!((e.failure, e.records_checked, e.last), (None, 6, (6, records[5].record_hash)));

        let mut gap = checked(&records);
        gap.remove(2);
        let mut e = engine(6);
        e.walk(&gap, &[]);
        assert_eq!(e.failure, Some((3, ChainFailure::SeqGap)));

        let mut e = engine(4);
        e.walk(&checked(&records), &[]);
        assert_eq!(e.failure, Some((5, ChainFailure::SeqGap)), "beyond the head");

        let mut broken = checked(&records);
        broken[3].content_ok = false;
        broken[4].prev = Some([1; 32]);
        let mut e = engine(6);
        e.walk(&broken, &[]);
        assert_eq!(e.failure, Some((4, ChainFailure::RecordHashMismatch)));

        let mut unlinked = checked(&records);
        unlinked[1].prev = None;
        let mut e = engine(6);
        e.walk(&unlinked, &[]);
        assert_eq!(e.failure, Some((2, ChainFailure::PrevHashMismatch)));
    }

    #[test]
    fn walk_checks_checkpoints_in_order() {
        let records = chain(6);
        let keys = KeyRing::generate_for_tests();
        let mut frontier = Frontier::new();
        for r in &records[..4] {
            frontier.push(merkle::leaf_hash(&r.record_hash));
        }
        let now = time::OffsetDateTime::now_utc();
        let good = Checkpoint::sign(1, 4, frontier.root(), records[3].record_hash, now, &keys).unwrap();
        let wrong_root = Checkpoint::sign(2, 5, [7; 32], records[4].record_hash, now, &keys).unwrap();

        let mut e = engine(6);
        e.walk(&checked(&records), &[(good.clone(), true), (wrong_root.clone(), true)]);
        assert_eq!(e.failure, Some((5, ChainFailure::CheckpointMismatch)));
        assert_eq!(e.checkpoints_checked, 2);

        let mut e = engine(6);
        e.walk(&checked(&records), &[(good.clone(), false), (wrong_root, true)]);
        assert_eq!(e.failure, Some((4, ChainFailure::CheckpointSignature)));

        // A record failure before a checkpoint wins.
        let mut broken = checked(&records);
        broken[2].content_ok = false;
        let mut e = engine(6);
        e.walk(&broken, &[(good, false)]);
        assert_eq!(e.failure, Some((3, ChainFailure::RecordHashMismatch)));
    }
}
