//! [`AuditLog`]: the group-commit writer the request path awaits before it answers.
//!
//! Requests hand their [`Exchange`] to one writer task through a bounded queue
//! (`AuditConfig::max_pending`; a full queue refuses at once with [`AuditError::Overloaded`] rather than
//! adding latency). The task takes one exchange, then yields to the scheduler and drains the queue for as
//! long as each yield brings more (so that requests woken by the previous commit's answers can enqueue:
//! no timer, no waiting for more), up to `AuditConfig::max_batch`, and commits them in one transaction:
//! concurrent requests share one commit (and one fsync), a lone request is committed after one yield.
//! Every waiter then
//! gets its seq — or, if the commit failed, the error (fail closed: nothing of that batch was written,
//! and the request path sends no data).
//!
//! A second task signs a checkpoint every `AuditConfig::checkpoint_interval`, or as soon as
//! `AuditConfig::checkpoint_every_records` records were appended since the last one, whichever comes
//! first, and only if the log grew.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch, Mutex, Notify};
use tokio::task::JoinHandle;

use super::checkpoint::Checkpoint;
use super::record::Exchange;
use super::store::AuditStore;
use super::{AuditConfig, AuditError};
use crate::signing::KeyRing;

type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// Handle on the exchange log's writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

/// Counters of the writer since it started (for metrics and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Records committed.
    pub records: u64,
    /// Transactions that failed (each refused all its records).
    pub failed_commits: u64,
    /// Records refused because their transaction failed.
    pub failed_records: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    records: AtomicU64,
    failed_commits: AtomicU64,
    failed_records: AtomicU64,
}

struct Inner {
    store: AuditStore,
    counters: Arc<Counters>,
    keys: Arc<KeyRing>,
    max_pending: usize,
    /// `None` once shutdown began.
    sender: RwLock<Option<mpsc::Sender<(Exchange, Reply)>>>,
    tasks: Mutex<Option<Tasks>>,
}

struct Tasks {
    writer: JoinHandle<()>,
    checkpointer: JoinHandle<()>,
    stop_checkpointer: watch::Sender<bool>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("store", &self.inner.store).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer and checkpoint tasks (on the current tokio runtime: call from within one).
    pub fn start(store: AuditStore, keys: Arc<KeyRing>, config: AuditConfig) -> AuditLog {
        let max_pending = config.max_pending.max(1);
        let (sender, receiver) = mpsc::channel(max_pending);
        let since_checkpoint = Arc::new(AtomicU64::new(0));
        let threshold_reached = Arc::new(Notify::new());
        let (stop_checkpointer, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let writer = tokio::spawn(write_loop(
            store.clone(),
            counters.clone(),
            receiver,
            config.max_batch.max(1),
            config.checkpoint_every_records,
            since_checkpoint.clone(),
            threshold_reached.clone(),
        ));
        let checkpointer = tokio::spawn(checkpoint_loop(
            store.clone(),
            keys.clone(),
            config.checkpoint_interval,
            since_checkpoint,
            threshold_reached,
            stop_rx,
        ));
        AuditLog {
            inner: Arc::new(Inner {
                store,
                counters,
                keys,
                max_pending,
                sender: RwLock::new(Some(sender)),
                tasks: Mutex::new(Some(Tasks { writer, checkpointer, stop_checkpointer })),
            }),
        }
    }

    /// Appends `exchange` and returns its seq once it is committed. Observed as the `audit.append` span
    /// and `fedx_audit_append_duration_seconds` (queue wait and commit, as the request experiences it).
    pub async fn append(&self, exchange: Exchange) -> Result<u64, AuditError> {
        use tracing::Instrument;
        let span = tracing::info_span!("audit.append", fedx.audit.seq = tracing::field::Empty);
        let started = std::time::Instant::now();
        let result = async {
            let (reply, answer) = oneshot::channel();
            {
                let guard = self.inner.sender.read().unwrap_or_else(|poisoned| poisoned.into_inner());
                let sender = guard.as_ref().ok_or(AuditError::WriterStopped)?;
                sender.try_send((exchange, reply)).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => AuditError::Overloaded(self.inner.max_pending),
                    mpsc::error::TrySendError::Closed(_) => AuditError::WriterStopped,
                })?;
            }
            answer.await.unwrap_or(Err(AuditError::WriterStopped))
        }
        .instrument(span.clone())
        .await;
        metrics::histogram!(crate::telemetry::metrics::names::AUDIT_APPEND_DURATION)
            .record(started.elapsed().as_secs_f64());
        if let Ok(seq) = &result {
            span.record("fedx.audit.seq", seq);
        }
        result
    }

    /// Signs a checkpoint of the current head now, if the log grew since the last one.
    pub async fn checkpoint_now(&self) -> Result<Option<Checkpoint>, AuditError> {
        self.inner.store.sign_checkpoint(&self.inner.keys, OffsetDateTime::now_utc()).await
    }

    /// Stops accepting appends, commits those already queued, signs a final checkpoint, and returns
    /// when all of that is done. Appends after this fail with [`AuditError::WriterStopped`].
    pub async fn shutdown(&self) {
        // Holding the lock makes concurrent callers wait for the first one to finish.
        let mut tasks = self.inner.tasks.lock().await;
        self.inner.sender.write().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let Some(tasks) = tasks.take() else {
            return;
        };
        if tasks.writer.await.is_err() {
            tracing::error!("the audit writer task panicked");
        }
        let _ = tasks.stop_checkpointer.send(true);
        if tasks.checkpointer.await.is_err() {
            tracing::error!("the audit checkpoint task panicked");
        }
        if let Err(e) = self.checkpoint_now().await {
            tracing::error!(error = %e, "could not sign the final audit checkpoint");
        }
    }

    pub fn store(&self) -> &AuditStore {
        &self.inner.store
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> WriterStats {
        let c = &self.inner.counters;
        WriterStats {
            commits: c.commits.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            failed_commits: c.failed_commits.load(Ordering::Relaxed),
            failed_records: c.failed_records.load(Ordering::Relaxed),
        }
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.inner.keys
    }
}

/// Records per subject-index bulk: large enough that an index page is written once for many records,
/// small enough that the unindexed tail a subject query scans stays short.
const SUBJECT_INDEX_BULK: u64 = 8_192;
/// A writer idle this long indexes what is left, so a quiet log has no tail to scan.
const SUBJECT_INDEX_IDLE: Duration = Duration::from_millis(200);

/// Extends the subject index between group commits (see [`AuditStore::index_subjects`]). A failure is
/// logged and retried later: queries stay complete without the index (they scan the unindexed tail), so
/// indexing never holds up appends.
struct SubjectIndexer {
    backlog: u64,
}

impl SubjectIndexer {
    async fn new(store: &AuditStore) -> SubjectIndexer {
        let backlog = store.subject_backlog().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the subject index watermark; indexing from the next append");
            1
        });
        SubjectIndexer { backlog }
    }

    async fn run(&mut self, store: &AuditStore) {
        loop {
            match store.index_subjects(SUBJECT_INDEX_BULK * 8).await {
                Ok(0) => {
                    self.backlog = 0;
                    return;
                }
                Ok(indexed) => {
                    self.backlog = self.backlog.saturating_sub(indexed);
                    if self.backlog < SUBJECT_INDEX_BULK {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "subject index not extended; will retry");
                    return;
                }
            }
        }
    }
}

async fn write_loop(
    store: AuditStore,
    counters: Arc<Counters>,
    mut receiver: mpsc::Receiver<(Exchange, Reply)>,
    max_batch: usize,
    checkpoint_every: u64,
    since_checkpoint: Arc<AtomicU64>,
    threshold_reached: Arc<Notify>,
) {
    let mut exchanges = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    let mut subjects = SubjectIndexer::new(&store).await;
    loop {
        let next = if subjects.backlog == 0 {
            receiver.recv().await
        } else {
            match tokio::time::timeout(SUBJECT_INDEX_IDLE, receiver.recv()).await {
                Ok(next) => next,
                Err(_idle) => {
                    subjects.run(&store).await;
                    continue;
                }
            }
        };
        let Some((exchange, reply)) = next else { break };
        exchanges.push(exchange);
        replies.push(reply);
        // Let the requests woken by the previous commit's answers enqueue before the batch is closed:
        // scheduling yields, not a wait. The writer yields again as long as the last yield brought new
        // requests (they are still arriving from tasks that were runnable), and commits as soon as one
        // yield brings none: an idle writer commits a lone request after a single yield.
        loop {
            tokio::task::yield_now().await;
            let before = exchanges.len();
            while exchanges.len() < max_batch {
                match receiver.try_recv() {
                    Ok((exchange, reply)) => {
                        exchanges.push(exchange);
                        replies.push(reply);
                    }
                    Err(_) => break,
                }
            }
            if exchanges.len() == before || exchanges.len() >= max_batch {
                break;
            }
        }
        let commit_started = std::time::Instant::now();
        let appended = store.append(&exchanges).await;
        record_commit(commit_started, &appended, exchanges.len());
        match appended {
            Ok(records) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.records.fetch_add(records.len() as u64, Ordering::Relaxed);
                for (record, reply) in records.iter().zip(replies.drain(..)) {
                    let _ = reply.send(Ok(record.seq));
                }
                let appended = records.len() as u64;
                let total = since_checkpoint.fetch_add(appended, Ordering::Relaxed) + appended;
                if checkpoint_every > 0 && total >= checkpoint_every {
                    threshold_reached.notify_one();
                }
                subjects.backlog += appended;
                if subjects.backlog >= SUBJECT_INDEX_BULK {
                    subjects.run(&store).await;
                }
            }
            Err(e) => {
                counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                counters.failed_records.fetch_add(exchanges.len() as u64, Ordering::Relaxed);
                // Never log the records themselves; their count and the error are enough.
                tracing::error!(error = %e, records = exchanges.len(), "audit append failed; requests refused");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(duplicate(&e)));
                }
            }
        }
        exchanges.clear();
        replies.clear();
    }
    // Shutting down: leave no tail for the next start to scan.
    if subjects.backlog > 0 {
        subjects.run(&store).await;
    }
}

/// One group commit in the metrics: its duration, and its records as committed or refused.
fn record_commit<T>(started: std::time::Instant, result: &Result<Vec<T>, AuditError>, batch: usize) {
    use crate::telemetry::metrics::names;
    metrics::histogram!(names::AUDIT_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
    match result {
        Ok(records) => {
            metrics::counter!(names::AUDIT_COMMITS).increment(1);
            metrics::counter!(names::AUDIT_RECORDS).increment(records.len() as u64);
        }
        Err(_) => metrics::counter!(names::AUDIT_FAILED_RECORDS).increment(batch as u64),
    }
}

async fn checkpoint_loop(
    store: AuditStore,
    keys: Arc<KeyRing>,
    interval: Duration,
    since_checkpoint: Arc<AtomicU64>,
    threshold_reached: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = interval.max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = threshold_reached.notified() => {}
            _ = stop.changed() => return,
        }
        let seen = since_checkpoint.load(Ordering::Relaxed);
        match store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await {
            Ok(_) => {
                since_checkpoint.fetch_sub(seen, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "could not sign an audit checkpoint"),
        }
    }
}

/// A copy of `e` for each waiter of a failed batch (`sqlx::Error` is not `Clone`: database errors are
/// carried over as their message).
fn duplicate(e: &AuditError) -> AuditError {
    match e {
        AuditError::Database(sqlx::Error::PoolClosed) => AuditError::Database(sqlx::Error::PoolClosed),
        AuditError::Database(sqlx::Error::PoolTimedOut) => AuditError::Database(sqlx::Error::PoolTimedOut),
        AuditError::Database(sqlx::Error::WorkerCrashed) => AuditError::Database(sqlx::Error::WorkerCrashed),
        AuditError::Database(e) => {
            AuditError::Database(sqlx::Error::Io(std::io::Error::other(e.to_string())))
        }
        AuditError::WriterStopped => AuditError::WriterStopped,
        AuditError::Overloaded(n) => AuditError::Overloaded(*n),
        AuditError::Corrupt(s) => AuditError::Corrupt(s.clone()),
        AuditError::Signing(s) => AuditError::Signing(s.clone()),
    }
}
