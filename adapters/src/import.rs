//! Import of a department's CSV export into its source database:
//! `fedx sources import --dept D --table T --csv FILE [--skip-bad REJECTS]`.
//!
//! Every row is validated against the table's spec (the same one that drives the schema and
//! SOURCES.md) before anything is written. Bad rows are reported with their line number and the reason,
//! naming the column but never echoing the value (it may be an ID number or a name). A row whose unique
//! key is already in the database is a bad row too, found inside the write transaction. The write is
//! one transaction: either the whole file (or, with `--skip-bad`, all its good rows) is in, or nothing
//! changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

use crate::db::{self, Access, DbError, SourceLocation};
use crate::dept::Department;
use crate::sql_source::tables;
use crate::table::{TableSpec, Value};

/// What to do with rows that fail validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportMode {
    /// Any bad row aborts the import; the database is left unchanged.
    AllOrNothing,
    /// Bad rows are written to `rejects` (CSV: `line`, `reason`, then the row's original cells) and the
    /// good rows are imported.
    SkipBad { rejects: PathBuf },
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// Why, e.g. `column citizen_id: bad check character or birth date`. Never contains the value.
    pub reason: String,
}

/// The outcome of a successful import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub dept: Department,
    pub table: &'static str,
    /// Data rows read (excluding the header).
    pub rows_read: u64,
    pub rows_imported: u64,
    pub rows_rejected: u64,
    pub rejects_path: Option<PathBuf>,
}

/// At most this many bad rows are carried in [`ImportError::BadRows`]; the total is always given.
pub const MAX_REPORTED_BAD_ROWS: usize = 1_000;

/// Why an import failed. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("department {dept} has no table {table:?} (tables: {known})")]
    UnknownTable { dept: Department, table: String, known: String },
    #[error("header: {0}")]
    Header(String),
    #[error("{total} bad row(s); first: {}", first_reason(.rows))]
    BadRows {
        /// The first [`MAX_REPORTED_BAD_ROWS`] bad rows, in file order.
        rows: Vec<BadRow>,
        total: u64,
    },
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Db(#[from] DbError),
}

fn first_reason(rows: &[BadRow]) -> String {
    rows.first().map(|r| format!("line {}: {}", r.line, r.reason)).unwrap_or_default()
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Db(DbError::Sql(e))
    }
}

/// Maps file columns to spec columns; checks required columns are present and nothing unknown is.
fn header_map(spec: &TableSpec, header: &csv::StringRecord) -> Result<Vec<Option<usize>>, ImportError> {
    let mut pos: HashMap<&str, usize> = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        // Excel writes a byte-order mark in front of the first header.
        let h = h.trim().trim_start_matches('\u{feff}');
        if spec.column_index(h).is_none() {
            return Err(ImportError::Header(format!(
                "unknown column {h:?} for table {} (see SOURCES.md)",
                spec.name
            )));
        }
        if pos.insert(spec.columns[spec.column_index(h).unwrap_or(0)].name, i).is_some() {
            return Err(ImportError::Header(format!("column {h:?} appears twice")));
        }
    }
    spec.columns
        .iter()
        .map(|c| match pos.get(c.name) {
            Some(&i) => Ok(Some(i)),
            None if c.required => Err(ImportError::Header(format!("required column {:?} missing", c.name))),
            None => Ok(None),
        })
        .collect()
}

/// A unique index of the table: its declared column list and the positions of those columns.
struct UniqueKey {
    columns: &'static str,
    positions: Vec<usize>,
}

impl UniqueKey {
    fn names(&self) -> Vec<&'static str> {
        self.columns.split(',').map(str::trim).collect()
    }
}

/// The table's unique indexes, for catching duplicate keys inside the file and against the database.
fn unique_keys(spec: &TableSpec) -> Vec<UniqueKey> {
    spec.indexes
        .iter()
        .filter(|i| i.unique)
        .filter_map(|i| {
            let positions =
                i.columns.split(',').map(|c| spec.column_index(c.trim())).collect::<Option<Vec<usize>>>()?;
            Some(UniqueKey { columns: i.columns, positions })
        })
        .collect()
}

fn key_of(row: &[Value], cols: &[usize]) -> String {
    cols.iter()
        .map(|&c| match &row[c] {
            Value::Text(t) => t.clone().unwrap_or_default(),
            Value::Int(i) => i.map(|i| i.to_string()).unwrap_or_default(),
        })
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// Imports `csv` into `table` of `dept`'s database at `location`. Column names are those documented in
/// SOURCES.md (any order; optional columns may be absent).
pub async fn import_csv(
    dept: Department,
    table: &str,
    csv: &Path,
    location: &SourceLocation,
    mode: ImportMode,
) -> Result<ImportReport, ImportError> {
    let specs = tables(dept);
    let spec = *specs.iter().find(|t| t.name == table).ok_or_else(|| ImportError::UnknownTable {
        dept,
        table: table.to_owned(),
        known: specs.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
    })?;

    // 1. Read and validate everything before touching the database.
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(csv).map_err(csv_io)?;
    let header = reader.headers().map_err(csv_io)?.clone();
    let map = header_map(spec, &header)?;
    let keys = unique_keys(spec);
    let mut seen: Vec<HashMap<String, u64>> = vec![HashMap::new(); keys.len()];
    // Good rows with their line (and, for the rejects file, their original cells).
    let mut good: Vec<(u64, Vec<Value>, Option<csv::StringRecord>)> = Vec::new();
    let mut bad: Vec<(BadRow, Option<csv::StringRecord>)> = Vec::new();
    let mut total_bad = 0u64;
    let mut rows_read = 0u64;
    let keep_records = matches!(mode, ImportMode::SkipBad { .. });
    let mut record = csv::StringRecord::new();
    loop {
        let line_before = reader.position().line();
        let more = match reader.read_record(&mut record) {
            Ok(more) => more,
            Err(e) => {
                rows_read += 1;
                total_bad += 1;
                let line = e.position().map_or(line_before, |p| p.line());
                let reason = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
                    _ => "malformed CSV".to_owned(),
                };
                bad.push((BadRow { line, reason }, None));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(csv_io(e));
                }
                continue;
            }
        };
        if !more {
            break;
        }
        rows_read += 1;
        let line = record.position().map_or(line_before, |p| p.line());
        let result = if record.len() != header.len() {
            Err(format!("expected {} fields, found {}", header.len(), record.len()))
        } else {
            let raw: Vec<Option<String>> = map
                .iter()
                .map(|m| m.and_then(|i| record.get(i)).filter(|v| !v.trim().is_empty()).map(str::to_owned))
                .collect();
            spec.prepare(raw).map_err(|e| e.to_string()).and_then(|row| {
                for (k, key) in keys.iter().enumerate() {
                    if let Some(first) = seen[k].insert(key_of(&row, &key.positions), line) {
                        return Err(format!("duplicate key ({}) already on line {first}", key.columns));
                    }
                }
                Ok(row)
            })
        };
        match result {
            Ok(row) => good.push((line, row, keep_records.then(|| record.clone()))),
            Err(reason) => {
                total_bad += 1;
                if keep_records || bad.len() < MAX_REPORTED_BAD_ROWS {
                    bad.push((BadRow { line, reason }, keep_records.then(|| record.clone())));
                }
            }
        }
    }

    if matches!(mode, ImportMode::AllOrNothing) && total_bad > 0 {
        return Err(bad_rows(bad, total_bad));
    }

    // 2. One transaction: the file's rows and the new snapshot time, or nothing.
    let db = db::open_for_write(location, Access::Write, Duration::from_secs(30)).await?;
    let mut conn = db.pool.acquire().await?;
    db::create_tables(&mut conn, specs).await?;
    db::create_indexes(&mut conn, specs).await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;

    // Rows whose key the database already holds are bad rows like any other.
    let mut rows = Vec::with_capacity(good.len());
    for (line, row, record) in good {
        match clash_with_database(&mut tx, spec, &keys, &row).await? {
            None => rows.push(row),
            Some(columns) => {
                total_bad += 1;
                if keep_records || bad.len() < MAX_REPORTED_BAD_ROWS {
                    let reason = format!("duplicate key ({columns}) already in the database");
                    bad.push((BadRow { line, reason }, record));
                }
            }
        }
    }
    bad.sort_by_key(|b| b.0.line);
    let rejects_path = match &mode {
        ImportMode::AllOrNothing if total_bad > 0 => {
            tx.rollback().await?;
            return Err(bad_rows(bad, total_bad));
        }
        ImportMode::AllOrNothing => None,
        ImportMode::SkipBad { rejects } => {
            // Before the commit: if the rejects cannot be written, nothing is imported either.
            write_rejects(rejects, &header, &bad)?;
            Some(rejects.clone())
        }
    };
    let imported = db::insert_rows(&mut tx, spec, rows).await?;
    db::write_meta(&mut tx, dept, OffsetDateTime::now_utc()).await?;
    tx.commit().await?;
    drop(conn);
    db.pool.close().await;

    Ok(ImportReport {
        dept,
        table: spec.name,
        rows_read,
        rows_imported: imported,
        rows_rejected: total_bad,
        rejects_path,
    })
}

fn bad_rows(bad: Vec<(BadRow, Option<csv::StringRecord>)>, total: u64) -> ImportError {
    ImportError::BadRows { rows: bad.into_iter().map(|b| b.0).take(MAX_REPORTED_BAD_ROWS).collect(), total }
}

/// The first unique key of `row` that the table already holds, if any.
async fn clash_with_database(
    conn: &mut sqlx::AnyConnection,
    spec: &TableSpec,
    keys: &[UniqueKey],
    row: &[Value],
) -> Result<Option<&'static str>, sqlx::Error> {
    for key in keys {
        let values: Vec<&Value> = key.positions.iter().map(|&p| &row[p]).collect();
        if db::key_exists(conn, spec, &key.names(), &values).await? {
            return Ok(Some(key.columns));
        }
    }
    Ok(None)
}

fn csv_io(e: csv::Error) -> ImportError {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => ImportError::Io(io),
        other => ImportError::Header(match other {
            csv::ErrorKind::Utf8 { .. } => "header is not valid UTF-8".to_owned(),
            _ => "header is not valid CSV".to_owned(),
        }),
    }
}

fn write_rejects(
    path: &Path,
    header: &csv::StringRecord,
    bad: &[(BadRow, Option<csv::StringRecord>)],
) -> Result<(), ImportError> {
    let mut w = csv::WriterBuilder::new().flexible(true).from_path(path).map_err(csv_io)?;
    let mut head = vec!["line".to_owned(), "reason".to_owned()];
    head.extend(header.iter().map(str::to_owned));
    w.write_record(&head).map_err(csv_io)?;
    for (b, rec) in bad {
        let mut out = vec![b.line.to_string(), b.reason.clone()];
        if let Some(rec) = rec {
            out.extend(rec.iter().map(str::to_owned));
        }
        w.write_record(&out).map_err(csv_io)?;
    }
    w.flush()?;
    Ok(())
}
