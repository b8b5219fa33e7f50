//! The one `Source` implementation, parameterised by a department's [`DeptSpec`]: the SQL for
//! candidate look-ups is generated from the spec's person-key columns (the same for every
//! department), and each department supplies its own fact queries.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use time::{Date, OffsetDateTime};

use crate::db::{self, Access, SourceLocation};
use crate::dept::Department;
use crate::ident::citizen_id::Sex;
use crate::source::{
    Candidate, Fact, FactCategory, Facts, IdQuality, LookupKey, RecordKey, Source, SourceError,
    MAX_CANDIDATES,
};
use crate::table::TableSpec;

/// A table whose rows are candidates for a person (via its person-key columns) or an enterprise (via
/// its USCI column).
#[derive(Debug)]
pub(crate) struct CandidateTable {
    pub table: &'static str,
    pub key_col: &'static str,
    /// Prefix of the person-key columns (see [`crate::table::PersonKeys`]).
    pub prefix: &'static str,
    pub region_col: Option<&'static str>,
    /// USCI column, for tables that answer [`LookupKey::Usci`].
    pub usci: Option<&'static str>,
}

/// Fetches one category of facts for a record: `Ok(None)` when the record does not exist (or the
/// table/category pair does not apply).
pub(crate) type FactsFn = for<'a> fn(
    &'a AnyPool,
    &'a str,
    &'a str,
    FactCategory,
) -> BoxFuture<'a, Result<Option<Vec<Fact>>, sqlx::Error>>;

/// Everything department-specific about a source.
pub(crate) struct DeptSpec {
    pub dept: Department,
    pub tables: &'static [&'static TableSpec],
    pub candidates: &'static [CandidateTable],
    pub categories: &'static [FactCategory],
    pub facts: FactsFn,
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

/// Pre-built SQL for one candidate table.
struct LookupSql {
    table: &'static str,
    by_id: String,
    by_name_birth: String,
    by_phone: String,
    by_usci: Option<String>,
    name_count: String,
}

impl LookupSql {
    fn new(c: &CandidateTable) -> Self {
        let p = c.prefix;
        let region = c.region_col.map_or_else(|| "CAST(NULL AS TEXT)".to_owned(), str::to_owned);
        let select = format!(
            "SELECT {k}, {p}id_norm, {p}id_quality, {p}name_norm, {p}birth_norm, {p}sex_norm, \
             {p}phone_norm, {region} FROM {t}",
            k = c.key_col,
            t = c.table
        );
        let tail = format!("ORDER BY {} LIMIT {MAX_CANDIDATES}", c.key_col);
        LookupSql {
            table: c.table,
            by_id: format!("{select} WHERE {p}id_norm = $1 {tail}"),
            by_name_birth: format!("{select} WHERE {p}name_norm = $1 AND {p}birth_norm = $2 {tail}"),
            by_phone: format!("{select} WHERE {p}phone_norm = $1 {tail}"),
            by_usci: c.usci.map(|u| format!("{select} WHERE {u} = $1 {tail}")),
            name_count: format!("SELECT COUNT(*) FROM {} WHERE {p}name_norm = $1", c.table),
        }
    }
}

/// A department source on a SQL database.
pub(crate) struct SqlSource {
    spec: &'static DeptSpec,
    pool: AnyPool,
    timeout: Duration,
    lookups: Vec<LookupSql>,
}

/// Opens a department's source for the request path. The pool connects lazily, so this succeeds even
/// when the database is down; every call then reports [`SourceError::Unavailable`] within `timeout`.
/// Errors here are configuration errors (e.g. an invalid schema name).
pub async fn open_source(
    dept: Department,
    location: &SourceLocation,
    timeout: Duration,
) -> Result<Arc<dyn Source>, SourceError> {
    // Acquiring a connection gets most of the budget; the rest is for the query itself. A pool that
    // cannot connect in time reports PoolTimedOut, which we map to Unavailable.
    let acquire = timeout.mul_f32(0.8).max(Duration::from_millis(1));
    let db = db::connect_lazy(location, Access::Read, acquire, 8)
        .map_err(|e| SourceError::Unavailable { dept, reason: e.to_string() })?;
    let spec = spec(dept);
    Ok(Arc::new(SqlSource {
        spec,
        pool: db.pool,
        timeout,
        lookups: spec.candidates.iter().map(LookupSql::new).collect(),
    }))
}

/// Maps a driver error to a source error without leaking query parameters (sqlx errors never include
/// bound values; database messages may quote them for constraint violations, which reads never hit).
fn map_err(dept: Department, e: sqlx::Error) -> SourceError {
    use sqlx::Error as E;
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
    async fn bounded<T>(&self, fut: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, SourceError> {
        let dept = self.spec.dept;
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| map_err(dept, e)),
            Err(_) => Err(SourceError::Timeout { dept, after: self.timeout }),
        }
    }

    fn to_candidate(&self, table: &str, r: &AnyRow) -> Candidate {
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

    async fn lookup_all(&self, key: &LookupKey) -> Result<Vec<Candidate>, sqlx::Error> {
        let mut out = Vec::new();
        for l in &self.lookups {
            let q = match key {
                LookupKey::CitizenId(id) => sqlx::query(&l.by_id).bind(id.as_str()),
                LookupKey::NameBirth { name_norm, birth_date } => {
                    sqlx::query(&l.by_name_birth).bind(name_norm.as_str()).bind(birth_date.to_string())
                }
                LookupKey::Phone(p) => sqlx::query(&l.by_phone).bind(p.as_str()),
                LookupKey::Usci(u) => match &l.by_usci {
                    Some(sql) => sqlx::query(sql).bind(u.as_str()),
                    None => continue,
                },
            };
            let rows = q.fetch_all(&self.pool).await?;
            out.extend(rows.iter().map(|r| self.to_candidate(l.table, r)));
        }
        Ok(out)
    }

    async fn name_count(&self, name_norm: &str) -> Result<u64, sqlx::Error> {
        let mut n = 0u64;
        for l in &self.lookups {
            let row = sqlx::query(&l.name_count).bind(name_norm).fetch_one(&self.pool).await?;
            n += row.try_get::<i64, _>(0)?.max(0) as u64;
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
        let pool = &self.pool;
        let (items, as_of) = self
            .bounded(async {
                let items = (self.spec.facts)(pool, table, key, category).await?;
                let as_of = db::read_as_of(pool).await?;
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

    fn health(&self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            self.bounded(async {
                sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
                Ok(())
            })
            .await
        })
    }
}

/// `true` if the query (with one bound key) returns a row.
pub(crate) async fn exists(pool: &AnyPool, sql: &str, key: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(sql).bind(key).fetch_optional(pool).await?.is_some())
}

pub(crate) fn row_str(r: &AnyRow, i: usize) -> Option<String> {
    r.try_get::<Option<String>, _>(i).ok().flatten()
}

pub(crate) fn row_int(r: &AnyRow, i: usize) -> Option<i64> {
    r.try_get::<Option<i64>, _>(i).ok().flatten()
}

pub(crate) fn row_date(r: &AnyRow, i: usize) -> Option<Date> {
    let s = row_str(r, i)?;
    Date::parse(&s, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

pub(crate) fn row_sex(r: &AnyRow, i: usize) -> Option<Sex> {
    match row_str(r, i)?.as_str() {
        "M" => Some(Sex::Male),
        "F" => Some(Sex::Female),
        _ => None,
    }
}
