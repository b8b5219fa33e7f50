//! The one `Source` implementation, parameterised by a department's [`DeptSpec`]: the SQL for
//! candidate look-ups is generated from the spec's person-key columns (the same for every
//! department), and each department supplies its own fact queries.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use time::{Date, OffsetDateTime};

use crate::db::{self, Access, SourceLocation};
use crate::dept::Department;
use crate::ident::citizen_id::Sex;
use crate::reader::{ReadError, ReadRow, Reader, SqliteReader};
use crate::source::{
    Candidate, EmployerContributions, Fact, FactCategory, Facts, IdQuality, LookupKey, RecordKey, Source,
    SourceError, MAX_CANDIDATES,
};
use crate::table::{PersonIndex, TableSpec};

/// A table whose rows are candidates for a person (via its person-key columns) or an enterprise (via
/// its USCI column).
#[derive(Debug)]
pub(crate) struct CandidateTable {
    /// The table; its [`crate::table::PersonKeys`] give the record key and the person-key columns.
    pub table: &'static TableSpec,
    pub region_col: Option<&'static str>,
    /// USCI column, for tables that answer [`LookupKey::Usci`].
    pub usci: Option<&'static str>,
}

/// Fetches one category of facts for a record: `Ok(None)` when the record does not exist (or the
/// table/category pair does not apply).
pub(crate) type FactsFn = for<'a> fn(
    &'a Reader,
    &'a str,
    &'a str,
    FactCategory,
) -> BoxFuture<'a, Result<Option<Vec<Fact>>, ReadError>>;

/// What an employer declared over a period, as found by a department's [`EmployerFn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EmployerDeclared {
    /// Any contribution declared, paid or in arrears.
    pub declared: bool,
    /// Any of them in arrears.
    pub in_arrears: bool,
}

/// Answers [`Source::employer_contributions`] for a department that holds employer contributions:
/// `(reader, usci, months, force_index)`, months already canonical `YYYY-MM`; `force_index` as for the
/// candidate look-ups (name the index, on SQLite).
pub(crate) type EmployerFn = for<'a> fn(
    &'a Reader,
    &'a str,
    Option<(&'a str, &'a str)>,
    bool,
) -> BoxFuture<'a, Result<EmployerDeclared, ReadError>>;

/// Everything department-specific about a source.
pub(crate) struct DeptSpec {
    pub dept: Department,
    pub tables: &'static [&'static TableSpec],
    pub candidates: &'static [CandidateTable],
    pub categories: &'static [FactCategory],
    pub facts: FactsFn,
    /// Employer-level contribution status; `None` for departments that do not hold it.
    pub employer_contributions: Option<EmployerFn>,
}

/// The spec of a department.
pub(crate) fn spec(dept: Department) -> &'static DeptSpec {
    match dept {
        Department::PublicSecurity => &crate::public_security::SPEC,
        Department::Tax => &crate::tax::SPEC,
        Department::SocialInsurance => &crate::social_insurance::SPEC,
        Department::Education => &crate::education::SPEC,
        Department::IndustryCommerce => &crate::industry_commerce::SPEC,
    }
}

/// The tables of a department, in load order.
pub fn tables(dept: Department) -> &'static [&'static TableSpec] {
    spec(dept).tables
}

/// Pre-built SQL for one candidate table. A key the table cannot hold (no phone column, say) has no
/// query: asking an index of NULLs is wasted work, and on SQLite it also skews the plan.
struct LookupSql {
    table: &'static str,
    by_id: Option<String>,
    by_name_birth: Option<String>,
    by_phone: Option<String>,
    by_usci: Option<String>,
    name_count: String,
}

impl LookupSql {
    /// `force_index`: name the index in the query (SQLite's `INDEXED BY`). SQLite's planner, told by
    /// `ANALYZE` that an equality is unselective (a mostly-NULL column), prefers walking the primary key
    /// in `ORDER BY` order over the whole table; naming the index rules that plan out. PostgreSQL keeps
    /// NULL fractions in its statistics and reads the composite index in order on its own.
    fn new(c: &CandidateTable, force_index: bool) -> Self {
        let t = c.table;
        let person = t.person.as_ref().expect("candidate tables declare person keys");
        let p = person.prefix;
        let k = person.record_key;
        let region = c.region_col.map_or_else(|| "CAST(NULL AS TEXT)".to_owned(), str::to_owned);
        let select = format!(
            "SELECT {k}, {p}id_norm, {p}id_quality, {p}name_norm, {p}birth_norm, {p}sex_norm, \
             {p}phone_norm, {region} FROM {name}",
            name = t.name
        );
        let tail = format!("ORDER BY {k} LIMIT {MAX_CANDIDATES}");
        let query = |which: PersonIndex, held: bool, filter: String| {
            let (index, _) = t.person_index(which)?;
            let hint = if force_index { format!(" INDEXED BY {index}") } else { String::new() };
            held.then(|| format!("{select}{hint} WHERE {filter} {tail}"))
        };
        LookupSql {
            table: t.name,
            by_id: query(PersonIndex::Id, person.id.is_some(), format!("{p}id_norm = $1")),
            // Birth dates also come from the ID number, so a table with an ID column can answer this.
            by_name_birth: query(
                PersonIndex::NameBirth,
                person.name.is_some(),
                format!("{p}name_norm = $1 AND {p}birth_norm = $2"),
            ),
            by_phone: query(PersonIndex::Phone, person.phone.is_some(), format!("{p}phone_norm = $1")),
            by_usci: c.usci.map(|u| format!("{select} WHERE {u} = $1 {tail}")),
            name_count: format!("SELECT COUNT(*) FROM {} WHERE {p}name_norm = $1", t.name),
        }
    }
}

/// A department source on a SQL database.
pub(crate) struct SqlSource {
    spec: &'static DeptSpec,
    reader: Reader,
    timeout: Duration,
    lookups: Vec<LookupSql>,
    /// Name indexes in queries (SQLite's `INDEXED BY`): see [`LookupSql::new`].
    force_index: bool,
    /// The source's snapshot time, as last read, and when (see [`SqlSource::as_of`]).
    as_of: std::sync::Mutex<Option<(Instant, Option<OffsetDateTime>)>>,
}

/// How long a read snapshot time is reused. It changes only when a department loads new data; reading it
/// with every fact query was a third of a view's source statements.
const AS_OF_REUSE: Duration = Duration::from_secs(1);

/// Opens a department's source for the request path. Connections are made lazily, so this succeeds even
/// when the database is down; every call then reports [`SourceError::Unavailable`] within `timeout`.
/// Errors here are configuration errors (e.g. an invalid schema name). SQLite files are read in place
/// (see [`crate::reader`]), PostgreSQL through a pool.
pub async fn open_source(
    dept: Department,
    location: &SourceLocation,
    timeout: Duration,
) -> Result<Arc<dyn Source>, SourceError> {
    // Acquiring a connection gets most of the budget; the rest is for the query itself. A pool that
    // cannot connect in time reports PoolTimedOut, which we map to Unavailable.
    let acquire = timeout.mul_f32(0.8).max(Duration::from_millis(1));
    let reader = match location {
        SourceLocation::Sqlite { path } => Reader::Sqlite(SqliteReader::new(dept.code(), path, timeout)),
        SourceLocation::Postgres { .. } => Reader::Pool(
            db::connect_lazy(location, Access::Read, acquire, 8)
                .map_err(|e| SourceError::Unavailable { dept, reason: e.to_string() })?
                .pool,
        ),
    };
    let spec = spec(dept);
    let force_index = matches!(location, SourceLocation::Sqlite { .. });
    Ok(Arc::new(SqlSource {
        spec,
        reader,
        timeout,
        lookups: spec.candidates.iter().map(|c| LookupSql::new(c, force_index)).collect(),
        force_index,
        as_of: std::sync::Mutex::new(None),
    }))
}

/// Maps a driver error to a source error without leaking query parameters (sqlx errors never include
/// bound values; database messages may quote them for constraint violations, which reads never hit).
fn map_err(dept: Department, e: ReadError) -> SourceError {
    use sqlx::Error as E;
    let e = match e {
        ReadError::Pool(e) => e,
        ReadError::SqliteUnavailable(reason) => return SourceError::Unavailable { dept, reason },
        ReadError::SqliteTimeout(after) => return SourceError::Timeout { dept, after },
        ReadError::Sqlite(code) => {
            return SourceError::Backend { dept, reason: format!("database error {code}") }
        }
    };
    match e {
        E::PoolTimedOut => {
            SourceError::Unavailable { dept, reason: "no database connection within the timeout".into() }
        }
        E::PoolClosed | E::Io(_) | E::Tls(_) | E::Configuration(_) => {
            SourceError::Unavailable { dept, reason: e.to_string() }
        }
        E::Database(d) => {
            let msg = d.message().to_owned();
            // SQLite cannot open the file (missing, or its directory is gone).
            let unavailable = matches!(d.code().as_deref(), Some("14") | Some("SQLITE_CANTOPEN"))
                || msg.contains("unable to open database")
                // PostgreSQL: the schema or database is gone, the server is shutting down.
                || matches!(d.code().as_deref(), Some("3D000") | Some("57P01") | Some("57P03"));
            if unavailable {
                SourceError::Unavailable { dept, reason: msg }
            } else {
                SourceError::Backend {
                    dept,
                    reason: format!("database error {}", d.code().unwrap_or_default()),
                }
            }
        }
        other => SourceError::Backend { dept, reason: other.to_string() },
    }
}

impl SqlSource {
    /// Runs a database future under the source's timeout.
    async fn bounded<T>(&self, fut: impl Future<Output = Result<T, ReadError>>) -> Result<T, SourceError> {
        let dept = self.spec.dept;
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| map_err(dept, e)),
            Err(_) => Err(SourceError::Timeout { dept, after: self.timeout }),
        }
    }

    fn to_candidate(&self, table: &str, r: &ReadRow) -> Candidate {
        Candidate {
            dept: self.spec.dept,
            record_key: RecordKey::new(table, &row_str(r, 0).unwrap_or_default()),
            id: row_str(r, 1),
            id_quality: row_str(r, 2).and_then(|q| IdQuality::from_code(&q)),
            name_norm: row_str(r, 3),
            birth_date: row_date(r, 4),
            sex: row_sex(r, 5),
            phone: row_str(r, 6),
            region: row_str(r, 7),
        }
    }

    async fn lookup_all(&self, key: &LookupKey) -> Result<Vec<Candidate>, ReadError> {
        let mut out = Vec::new();
        let birth = match key {
            LookupKey::NameBirth { birth_date, .. } => birth_date.to_string(),
            _ => String::new(),
        };
        for l in &self.lookups {
            let (sql, args): (&str, [&str; 2]) =
                match (key, &l.by_id, &l.by_name_birth, &l.by_phone, &l.by_usci) {
                    (LookupKey::CitizenId(id), Some(sql), ..) => (sql, [id, ""]),
                    (LookupKey::NameBirth { name_norm, .. }, _, Some(sql), ..) => (sql, [name_norm, &birth]),
                    (LookupKey::Phone(p), _, _, Some(sql), _) => (sql, [p, ""]),
                    (LookupKey::Usci(u), .., Some(sql)) => (sql, [u, ""]),
                    _ => continue,
                };
            let n = if matches!(key, LookupKey::NameBirth { .. }) { 2 } else { 1 };
            let rows = self.reader.rows(sql, &args[..n]).await?;
            out.extend(rows.iter().map(|r| self.to_candidate(l.table, r)));
        }
        Ok(out)
    }

    async fn name_count(&self, name_norm: &str) -> Result<u64, ReadError> {
        let mut n = 0u64;
        for l in &self.lookups {
            let row = self.reader.first(&l.name_count, &[name_norm]).await?;
            n += row.and_then(|r| r.int(0)).unwrap_or(0).max(0) as u64;
        }
        Ok(n)
    }

    async fn facts(&self, record_key: &RecordKey, category: FactCategory) -> Result<Facts, SourceError> {
        let dept = self.spec.dept;
        if !self.spec.categories.contains(&category) {
            return Err(SourceError::UnsupportedCategory { dept, category });
        }
        let no_such = || SourceError::NoSuchRecord { dept, key: record_key.clone() };
        let (table, key) = record_key.parts().ok_or_else(no_such)?;
        let reader = &self.reader;
        let (items, as_of) = self
            .bounded(async {
                let items = (self.spec.facts)(reader, table, key, category).await?;
                let as_of = self.as_of().await?;
                Ok((items, as_of))
            })
            .await?;
        Ok(Facts {
            dept,
            record_key: record_key.clone(),
            category,
            as_of: as_of.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            items: items.ok_or_else(no_such)?,
        })
    }

    /// The snapshot time of the source's data, read at most once per [`AS_OF_REUSE`].
    async fn as_of(&self) -> Result<Option<OffsetDateTime>, ReadError> {
        let cached = *self.as_of.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, as_of)) = cached.filter(|(read_at, _)| read_at.elapsed() < AS_OF_REUSE) {
            return Ok(as_of);
        }
        let as_of = db::read_as_of(&self.reader).await?;
        *self.as_of.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), as_of));
        Ok(as_of)
    }

    async fn employer(
        &self,
        usci: &str,
        months: Option<(&str, &str)>,
    ) -> Result<EmployerContributions, SourceError> {
        let dept = self.spec.dept;
        let Some(query) = self.spec.employer_contributions else {
            return Err(SourceError::UnsupportedCategory { dept, category: FactCategory::Contributions });
        };
        // Months are compared as text, which orders correctly only in the canonical `YYYY-MM` form: a
        // bound like `2024-1` would silently leave most of the year out (and hide its arrears).
        let month = |m: &str| {
            crate::keys::canonical_month(m).ok_or_else(|| SourceError::Backend {
                dept,
                reason: "employer contribution period bound is not a month (YYYY-MM)".into(),
            })
        };
        let months = match months {
            Some((from, to)) => Some((month(from)?, month(to)?)),
            None => None,
        };
        let months = months.as_ref().map(|(from, to)| (from.as_str(), to.as_str()));
        let found = self.bounded(query(&self.reader, usci, months, self.force_index)).await?;
        Ok(EmployerContributions {
            declared: found.declared,
            in_arrears: found.in_arrears,
            as_of: OffsetDateTime::now_utc(),
        })
    }
}

impl Source for SqlSource {
    fn department(&self) -> Department {
        self.spec.dept
    }

    fn categories(&self) -> &'static [FactCategory] {
        self.spec.categories
    }

    fn lookup<'a>(&'a self, key: &'a LookupKey) -> BoxFuture<'a, Result<Vec<Candidate>, SourceError>> {
        Box::pin(async move {
            if matches!(key, LookupKey::Usci(_)) && self.lookups.iter().all(|l| l.by_usci.is_none()) {
                return Err(SourceError::UnsupportedKey { dept: self.spec.dept, kind: key.kind() });
            }
            self.bounded(self.lookup_all(key)).await
        })
    }

    fn name_frequency<'a>(&'a self, name_norm: &'a str) -> BoxFuture<'a, Result<u64, SourceError>> {
        Box::pin(self.bounded(self.name_count(name_norm)))
    }

    fn fetch_facts<'a>(
        &'a self,
        record_key: &'a RecordKey,
        category: FactCategory,
    ) -> BoxFuture<'a, Result<Facts, SourceError>> {
        Box::pin(self.facts(record_key, category))
    }

    fn employer_contributions<'a>(
        &'a self,
        usci: &'a str,
        months: Option<(&'a str, &'a str)>,
    ) -> BoxFuture<'a, Result<EmployerContributions, SourceError>> {
        Box::pin(self.employer(usci, months))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            self.bounded(async {
                self.reader.first("SELECT 1", &[]).await?;
                Ok(())
            })
            .await
        })
    }
}

pub(crate) fn row_str(r: &ReadRow, i: usize) -> Option<String> {
    r.text(i)
}

pub(crate) fn row_int(r: &ReadRow, i: usize) -> Option<i64> {
    r.int(i)
}

pub(crate) fn row_date(r: &ReadRow, i: usize) -> Option<Date> {
    let s = row_str(r, i)?;
    Date::parse(&s, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

pub(crate) fn row_sex(r: &ReadRow, i: usize) -> Option<Sex> {
    match row_str(r, i)?.as_str() {
        "M" => Some(Sex::Male),
        "F" => Some(Sex::Female),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor, Row};

    use super::*;

    /// Every prepared look-up is one index range read, in key order — even when the planner's statistics
    /// claim the looked-up column is useless (a mostly-NULL column after `ANALYZE`), which is what once
    /// made SQLite walk a whole table in key order to avoid sorting.
    #[tokio::test]
    async fn lookups_read_an_index_in_key_order_whatever_the_statistics() {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect("sqlite::memory:").await.unwrap();
        for dept in Department::ALL {
            let spec = spec(dept);
            db::create_tables(&mut conn, spec.tables).await.unwrap();
            db::create_indexes(&mut conn, spec.tables).await.unwrap();
        }
        conn.execute("ANALYZE").await.unwrap();
        // Worst-case statistics: a million rows, every person-key index unselective, the key unique.
        for dept in Department::ALL {
            for t in spec(dept).tables {
                for sql in t.index_sql() {
                    let name = sql.split(" ON ").next().and_then(|h| h.split(' ').next_back()).unwrap();
                    let stat = if name.ends_with("_pk") { "1000000 1" } else { "1000000 1000000 1000000 1" };
                    sqlx::query("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ($1, $2, $3)")
                        .bind(t.name)
                        .bind(name)
                        .bind(stat)
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
            }
        }
        conn.execute("ANALYZE sqlite_schema").await.unwrap();

        let mut checked = 0;
        for dept in Department::ALL {
            for c in spec(dept).candidates {
                let l = LookupSql::new(c, true);
                for sql in [&l.by_id, &l.by_name_birth, &l.by_phone].into_iter().flatten() {
                    let explain = format!("EXPLAIN QUERY PLAN {sql}");
                    let mut q = sqlx::query(&explain);
                    for _ in 0..sql.matches('$').count() {
                        q = q.bind("x");
                    }
                    let plan: Vec<String> = q
                        .fetch_all(&mut conn)
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| r.try_get::<String, _>(3).unwrap())
                        .collect();
                    let plan = plan.join(" | ");
                    assert!(plan.starts_with("SEARCH") && plan.contains("INDEX"), "{sql}: {plan}");
                    assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts: {plan}");
                    checked += 1;
                }
            }
        }
        // 6 candidate tables; enterprises have no representative phone.
        assert_eq!(checked, 17);
    }
}
