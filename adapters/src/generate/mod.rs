//! Synthetic data generator: `fedx sources seed --workers N --seed S`.
//!
//! Writes all five departments' databases for N workers plus their employers, and the ground truth
//! (JSON Lines, see SOURCES.md) for evaluating identity resolution. The pipeline:
//!
//! ```text
//!  generator thread (World, sequential, deterministic) ──batches──▶ 5 writer tasks, one per department
//!        │                                                          (multi-row INSERTs, one transaction
//!        └──▶ truth file (JSON Lines)                                per batch, indexes built at the end)
//! ```
//!
//! The generator runs on a blocking thread and hands each department its rows in batches over bounded
//! channels, so the five databases load in parallel and memory stays flat at any N.

pub mod names;
pub mod noise;
pub mod regions;
pub mod truth;
pub mod world;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sqlx::Executor;
use time::macros::datetime;
use time::OffsetDateTime;
use tokio::sync::mpsc;

pub use noise::NoiseConfig;
pub use truth::TruthRecord;
pub use world::{Raw, Rows, World};

use crate::db::{self, Access, DbError, SourceLocation, SourceLocationSet};
use crate::dept::Department;
use crate::sql_source::tables;
use crate::table::{RowError, Value};

/// The snapshot time written into seeded databases: the day after the generated window ends. Fixed so
/// a seed is reproducible byte for byte.
pub const SEED_AS_OF: OffsetDateTime = datetime!(2026-11-01 00:00 +08:00);

/// Options for [`seed`].
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Number of workers.
    pub workers: u64,
    /// RNG seed; the same seed and worker count give the same data.
    pub seed: u64,
    pub noise: NoiseConfig,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl SeedOptions {
    pub fn new(workers: u64, seed: u64) -> Self {
        SeedOptions { workers, seed, noise: NoiseConfig::default(), progress: false }
    }
}

/// What one department's load produced.
#[derive(Debug, Clone)]
pub struct DeptSeedReport {
    pub dept: Department,
    /// (table, rows) in load order.
    pub rows: Vec<(&'static str, u64)>,
    pub size_bytes: u64,
    /// Time spent building indexes after the load.
    pub index_time: Duration,
}

/// The result of a seed run.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub workers: u64,
    pub enterprises: u64,
    pub depts: Vec<DeptSeedReport>,
    pub elapsed: Duration,
    pub truth_path: PathBuf,
}

impl SeedReport {
    pub fn total_rows(&self) -> u64 {
        self.depts.iter().flat_map(|d| d.rows.iter().map(|r| r.1)).sum()
    }

    pub fn rows_per_second(&self) -> f64 {
        self.total_rows() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn total_size_bytes(&self) -> u64 {
        self.depts.iter().map(|d| d.size_bytes).sum()
    }
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("invalid seed options: {0}")]
    Options(&'static str),
    #[error("{dept} database: {source}")]
    Db {
        dept: Department,
        #[source]
        source: DbError,
    },
    #[error("writing the ground truth: {0}")]
    Truth(#[from] std::io::Error),
    /// A generated row failed its own table's validation: a generator bug.
    #[error("generated {table} row failed validation: {error}")]
    InvalidRow { table: &'static str, error: RowError },
    #[error("a seeding task failed: {0}")]
    Task(String),
}

/// Workers per batch sent to the writers. Large enough to amortise transactions, small enough that a
/// batch of contributions (the biggest table) stays a few MB.
const WORKERS_PER_BATCH: u64 = 2_000;

type Batch = Vec<(usize, Raw)>;

/// Generates and writes all five departments' data for `opts.workers` workers, replacing whatever was
/// at `location`, and writes the ground truth to `truth_path`.
pub async fn seed(
    opts: &SeedOptions,
    location: &SourceLocationSet,
    truth_path: &Path,
) -> Result<SeedReport, SeedError> {
    opts.noise.validate().map_err(SeedError::Options)?;
    if opts.workers == 0 {
        return Err(SeedError::Options("at least one worker is required"));
    }
    let started = Instant::now();
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for dept in Department::ALL {
        let loc = location.for_dept(dept);
        let (tx, rx) = mpsc::channel::<Batch>(2);
        senders.push(tx);
        let db = prepare_dept(dept, &loc).await?;
        writers.push(tokio::spawn(write_dept(dept, loc, db, rx)));
    }

    let gen_opts = opts.clone();
    let truth = truth_path.to_owned();
    let generator = tokio::task::spawn_blocking(move || generate(&gen_opts, &truth, senders));

    let enterprises = generator.await.map_err(|e| SeedError::Task(e.to_string()))??;
    let mut depts = Vec::new();
    for w in writers {
        depts.push(w.await.map_err(|e| SeedError::Task(e.to_string()))??);
    }
    Ok(SeedReport {
        workers: opts.workers,
        enterprises,
        depts,
        elapsed: started.elapsed(),
        truth_path: truth_path.to_owned(),
    })
}

async fn prepare_dept(dept: Department, loc: &SourceLocation) -> Result<db::Db, SeedError> {
    let wrap = |source: DbError| SeedError::Db { dept, source };
    db::wipe(loc).await.map_err(wrap)?;
    let db = db::open_for_write(loc, Access::BulkLoad, Duration::from_secs(60)).await.map_err(wrap)?;
    let mut conn = db.pool.acquire().await.map_err(|e| wrap(e.into()))?;
    db::create_tables(&mut conn, tables(dept)).await.map_err(|e| wrap(e.into()))?;
    Ok(db)
}

/// The generator thread: enterprises first, then workers in batches.
fn generate(
    opts: &SeedOptions,
    truth_path: &Path,
    senders: Vec<mpsc::Sender<Batch>>,
) -> Result<u64, SeedError> {
    let mut world = World::new(opts.seed, opts.noise.clone(), opts.workers);
    let mut truth = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(truth_path)?);
    let bar = if opts.progress {
        let b = ProgressBar::new(opts.workers);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} seeding [{elapsed_precise}] {wide_bar} {pos}/{len} workers ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let send = |rows: Rows| -> Result<(), SeedError> {
        for (dept, batch) in rows.per_dept.into_iter().enumerate() {
            if !batch.is_empty() {
                senders[dept]
                    .blocking_send(batch)
                    .map_err(|_| SeedError::Task(format!("{} writer stopped", Department::ALL[dept])))?;
            }
        }
        Ok(())
    };
    let mut rows = Rows::default();
    world.enterprise_rows(&mut rows);
    let enterprises =
        rows.per_dept[Department::IndustryCommerce.index()].iter().filter(|(t, _)| *t == 0).count() as u64;
    send(rows)?;
    let mut i = 0;
    while i < opts.workers {
        let end = (i + WORKERS_PER_BATCH).min(opts.workers);
        let mut rows = Rows::default();
        for w in i..end {
            let t = world.worker(w, &mut rows);
            serde_json::to_writer(&mut truth, &t).map_err(std::io::Error::from)?;
            truth.write_all(b"\n")?;
        }
        send(rows)?;
        bar.inc(end - i);
        i = end;
    }
    truth.flush()?;
    bar.finish_and_clear();
    Ok(enterprises)
}

/// A department's writer: validates and inserts each batch in one transaction, then builds indexes.
async fn write_dept(
    dept: Department,
    loc: SourceLocation,
    db: db::Db,
    mut rx: mpsc::Receiver<Batch>,
) -> Result<DeptSeedReport, SeedError> {
    let wrap = |e: sqlx::Error| SeedError::Db { dept, source: e.into() };
    let specs = tables(dept);
    let mut counts = vec![0u64; specs.len()];
    let mut conn = db.pool.acquire().await.map_err(wrap)?;
    while let Some(batch) = rx.recv().await {
        let mut by_table: Vec<Vec<Vec<Value>>> = vec![Vec::new(); specs.len()];
        for (t, raw) in batch {
            let spec = specs[t];
            let row = spec.prepare(raw).map_err(|error| SeedError::InvalidRow { table: spec.name, error })?;
            by_table[t].push(row);
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(wrap)?;
        for (t, rows) in by_table.into_iter().enumerate() {
            if !rows.is_empty() {
                counts[t] += db::insert_rows(&mut tx, specs[t], rows).await.map_err(wrap)?;
            }
        }
        tx.commit().await.map_err(wrap)?;
    }
    let index_started = Instant::now();
    db::create_indexes(&mut conn, specs).await.map_err(wrap)?;
    let index_time = index_started.elapsed();
    db::write_meta(&mut conn, dept, SEED_AS_OF).await.map_err(wrap)?;
    if db.backend == db::Backend::Sqlite {
        // Gather planner statistics, fold the WAL back into the main file so the reported size is
        // the real one, and restore normal durability for anyone reusing this connection.
        conn.execute("ANALYZE").await.map_err(wrap)?;
        db::drop_sample_statistics(&mut conn).await.map_err(wrap)?;
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await.map_err(wrap)?;
        conn.execute("PRAGMA synchronous = NORMAL").await.map_err(wrap)?;
    } else {
        conn.execute("ANALYZE").await.map_err(wrap)?;
    }
    drop(conn);
    let size_bytes = db::size_bytes(&loc, &db).await.map_err(|source| SeedError::Db { dept, source })?;
    db.pool.close().await;
    Ok(DeptSeedReport {
        dept,
        rows: specs.iter().map(|s| s.name).zip(counts).collect(),
        size_bytes,
        index_time,
    })
}
