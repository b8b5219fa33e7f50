//! The exchange log: every exchange, allowed or refused, recorded durably before its response leaves,
//! in an append-only hash chain with an RFC 6962 Merkle tree over it and signed checkpoints.
//!
//! - [`record`]: what one exchange record holds and its canonical encoding (the input of its hash).
//! - [`merkle`]: RFC 6962 tree hashing, the append frontier, inclusion and consistency proofs.
//! - [`checkpoint`]: signed statements of the log's state (tree size, root, chain head).
//! - [`store`]: the tables, on SQLite and PostgreSQL; appends serialised on the head row.
//! - [`writer`]: [`AuditLog`], the group-commit writer the request path awaits.
//! - [`verify`]: recomputation of the chain and checkpoints over a range.

pub mod checkpoint;
pub mod merkle;
pub mod record;
pub mod store;
pub mod verify;
pub mod writer;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use writer::AuditLog;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The all-zero hash: `prev_hash` of record 1.
pub const ZERO_HASH: Hash = [0u8; 32];

/// `[audit]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Most records committed in one transaction (group commit).
    pub max_batch: usize,
    /// Requests waiting for the writer before new appends are refused (UNAVAILABLE) rather than queued.
    pub max_pending: usize,
    /// A checkpoint is signed when this long has passed since the last one and the log has grown.
    #[serde(with = "crate::config::duration_secs")]
    pub checkpoint_interval: Duration,
    /// …or when this many records have been appended since the last one.
    pub checkpoint_every_records: u64,
    /// Records older than this many days may be pruned (`fedx audit prune`); PIPL art. 56 asks for at
    /// least three years.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_batch: 2048,
            max_pending: 65_536,
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_every_records: 100_000,
            retention_days: 3 * 365,
        }
    }
}

/// Why the log could not do what was asked. The request path turns any of these into UNAVAILABLE
/// (ErrorInfo AUDIT_UNAVAILABLE) and sends no data.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the audit writer has stopped")]
    WriterStopped,
    #[error("the audit writer is overloaded ({0} appends waiting)")]
    Overloaded(usize),
    #[error("audit log is inconsistent: {0}")]
    Corrupt(String),
    #[error("signing: {0}")]
    Signing(String),
}
