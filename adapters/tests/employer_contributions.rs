//! Employer-level contribution status (`Source::employer_contributions`): whether an employer declared
//! contributions in a period and whether any is in arrears, without a worker; on SQLite and PostgreSQL.
//! Only social insurance answers; a database seeded before the employer index existed gets it from
//! `migrate_schema`; a missing database is unavailable within the timeout.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedx_adapters::ident::usci_check_char;
use fedx_adapters::{
    import_csv, migrate_schema, open_source, Department, EmployerContributions, FactCategory, ImportMode,
    Source, SourceError, SourceLocation, SourceLocationSet,
};
use sqlx::Connection;
use time::OffsetDateTime;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A valid USCI (canonical, upper case) for an employer number.
fn usci(n: u32) -> String {
    let first17 = format!("91350100M{n:08}");
    let bytes: [u8; 17] = first17.as_bytes().try_into().unwrap();
    let check = usci_check_char(&bytes).unwrap();
    format!("{first17}{}", check as char)
}

/// Employers seeded by [`seed`].
struct Employers {
    /// Paid contributions only, 2024-01..2024-06.
    paid: String,
    /// Paid 2024-01..2024-06, one insurance type of one worker in arrears in 2024-03.
    arrears: String,
    /// Paid 2024-01..2024-06, in arrears in 2023-11 only.
    old_arrears: String,
    /// Never declared anything.
    unknown: String,
}

fn contribution_rows(out: &mut Vec<String>, employer: &str, workers: &[&str], months: &[&str], status: &str) {
    for si_no in workers {
        for month in months {
            for ty in ["pension", "medical"] {
                out.push(format!("{si_no},{employer},{month},{ty},500000,80000,{status}"));
            }
        }
    }
}

/// Imports contributions of three employers (through the CSV import, as a department export would be).
async fn seed(loc: &SourceLocation, dir: &Path) -> Employers {
    let e = Employers { paid: usci(1), arrears: usci(2), old_arrears: usci(3), unknown: usci(4) };
    let h1 = ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05", "2024-06"];
    let mut rows = vec!["si_no,employer_usci,month,insurance_type,base_fen,amount_fen,status".to_owned()];
    // Lower case in the export: the import stores the canonical form the look-up is given.
    contribution_rows(&mut rows, &e.paid.to_lowercase(), &["S1", "S2"], &h1, "paid");
    contribution_rows(&mut rows, &e.arrears, &["S3", "S4"], &h1, "paid");
    rows.retain(|r| r != &format!("S4,{},2024-03,medical,500000,80000,paid", e.arrears));
    rows.push(format!("S4,{},2024-03,medical,500000,80000,arrears", e.arrears));
    contribution_rows(&mut rows, &e.old_arrears, &["S5"], &h1, "paid");
    contribution_rows(&mut rows, &e.old_arrears, &["S5"], &["2023-11"], "arrears");
    let csv = dir.join("contribution.csv");
    std::fs::write(&csv, rows.join("\n") + "\n").unwrap();
    let report = import_csv(Department::SocialInsurance, "contribution", &csv, loc, ImportMode::AllOrNothing)
        .await
        .expect("import contributions");
    assert_eq!(report.rows_imported, rows.len() as u64 - 1);
    e
}

async fn status(src: &Arc<dyn Source>, usci: &str, months: Option<(&str, &str)>) -> (bool, bool) {
    let before = OffsetDateTime::now_utc();
    let EmployerContributions { declared, in_arrears, as_of } =
        src.employer_contributions(usci, months).await.expect("employer contributions");
    assert!(before <= as_of && as_of <= OffsetDateTime::now_utc(), "as_of is the time of reading");
    (declared, in_arrears)
}

const DECLARED_PAID: (bool, bool) = (true, false);
const IN_ARREARS: (bool, bool) = (true, true);
const NOTHING: (bool, bool) = (false, false);

async fn check(set: SourceLocationSet) {
    let dir = tempfile::tempdir().unwrap();
    let loc = set.for_dept(Department::SocialInsurance);
    let e = seed(&loc, dir.path()).await;
    let si = open_source(Department::SocialInsurance, &loc, TIMEOUT).await.unwrap();

    // Only paid rows: declared, not in arrears, over any period that holds them.
    assert_eq!(status(&si, &e.paid, None).await, DECLARED_PAID);
    assert_eq!(status(&si, &e.paid, Some(("2024-01", "2024-06"))).await, DECLARED_PAID);
    assert_eq!(status(&si, &e.paid, Some(("2024-06", "2024-12"))).await, DECLARED_PAID);

    // One arrears row: in arrears over every period that contains its month, and only those.
    assert_eq!(status(&si, &e.arrears, None).await, IN_ARREARS);
    assert_eq!(status(&si, &e.arrears, Some(("2024-01", "2024-12"))).await, IN_ARREARS);
    assert_eq!(status(&si, &e.arrears, Some(("2024-03", "2024-03"))).await, IN_ARREARS);
    assert_eq!(status(&si, &e.arrears, Some(("2024-01", "2024-02"))).await, DECLARED_PAID);
    assert_eq!(status(&si, &e.arrears, Some(("2024-04", "2024-06"))).await, DECLARED_PAID);

    // Arrears outside the period do not count; inside it they do.
    assert_eq!(status(&si, &e.old_arrears, Some(("2024-01", "2024-12"))).await, DECLARED_PAID);
    assert_eq!(status(&si, &e.old_arrears, Some(("2023-01", "2023-12"))).await, IN_ARREARS);
    assert_eq!(status(&si, &e.old_arrears, None).await, IN_ARREARS);

    // Nothing declared: an unknown employer, a period without rows, an empty period.
    assert_eq!(status(&si, &e.unknown, None).await, NOTHING);
    assert_eq!(status(&si, &e.unknown, Some(("2024-01", "2024-12"))).await, NOTHING);
    assert_eq!(status(&si, &e.paid, Some(("2025-01", "2025-12"))).await, NOTHING);
    assert_eq!(status(&si, &e.arrears, Some(("2022-01", "2023-12"))).await, NOTHING);
    assert_eq!(status(&si, &e.arrears, Some(("2024-06", "2024-01"))).await, NOTHING);

    // Month bounds are canonicalised before the text comparison: `2024-3` is March, not "after 2024-12".
    assert_eq!(status(&si, &e.arrears, Some(("2024-3", "2024-3"))).await, IN_ARREARS);
    assert_eq!(status(&si, &e.arrears, Some(("2024年3月", "2024/03"))).await, IN_ARREARS);
    // A bound that is not a month is refused, not compared (that could hide arrears).
    for bad in [("2024-13", "2024-12"), ("2024-01", "soon"), ("", "2024-12")] {
        let err = si.employer_contributions(&e.arrears, Some(bad)).await.expect_err("bad month");
        assert!(matches!(err, SourceError::Backend { dept: Department::SocialInsurance, .. }), "{err}");
    }

    // No other department answers (without touching its database).
    for dept in Department::ALL.into_iter().filter(|d| *d != Department::SocialInsurance) {
        let src = open_source(dept, &set.for_dept(dept), TIMEOUT).await.unwrap();
        let err = src.employer_contributions(&e.arrears, None).await.expect_err("only social insurance");
        assert!(
            matches!(err, SourceError::UnsupportedCategory { dept: d, category: FactCategory::Contributions } if d == dept),
            "{dept}: {err}"
        );
    }
}

#[tokio::test]
async fn sqlite_employer_contribution_status() {
    let dir = tempfile::tempdir().unwrap();
    check(SourceLocationSet::SqliteDir(dir.path().to_owned())).await;
}

#[tokio::test]
async fn postgres_employer_contribution_status() {
    common::with_pg(check).await;
}

/// Data seeded before the employer index existed: `migrate_schema` (run by `fedx sources migrate` and
/// by the demo gateway on start) creates it. Until then SQLite refuses the query, which names the index,
/// rather than scanning the table.
async fn check_migrate(set: SourceLocationSet) {
    let dir = tempfile::tempdir().unwrap();
    let loc = set.for_dept(Department::SocialInsurance);
    let e = seed(&loc, dir.path()).await;
    let index_exists = match &loc {
        SourceLocation::Sqlite { path } => {
            let mut conn =
                <sqlx::SqliteConnection as Connection>::connect(path.to_str().unwrap()).await.unwrap();
            sqlx::query("DROP INDEX contribution_employer").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            let src = open_source(Department::SocialInsurance, &loc, TIMEOUT).await.unwrap();
            let err = src.employer_contributions(&e.arrears, None).await.expect_err("index missing");
            assert!(matches!(err, SourceError::Backend { .. }), "{err}");
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'contribution_employer'".to_owned()
        }
        SourceLocation::Postgres { url, schema } => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(&format!("DROP INDEX {schema}.contribution_employer"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            format!(
                "SELECT 1 FROM pg_indexes WHERE schemaname = '{schema}' AND indexname = 'contribution_employer'"
            )
        }
    };

    migrate_schema(Department::SocialInsurance, &loc).await.unwrap();
    let url = match &loc {
        SourceLocation::Sqlite { path } => format!("sqlite://{}", path.display()),
        SourceLocation::Postgres { url, .. } => url.clone(),
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    assert!(sqlx::query(&index_exists).fetch_optional(&mut conn).await.unwrap().is_some(), "index restored");
    conn.close().await.unwrap();
    let src = open_source(Department::SocialInsurance, &loc, TIMEOUT).await.unwrap();
    assert_eq!(status(&src, &e.arrears, None).await, IN_ARREARS);
    assert_eq!(status(&src, &e.paid, None).await, DECLARED_PAID);
}

#[tokio::test]
async fn sqlite_migrate_schema_adds_the_employer_index() {
    let dir = tempfile::tempdir().unwrap();
    check_migrate(SourceLocationSet::SqliteDir(dir.path().to_owned())).await;
}

#[tokio::test]
async fn postgres_migrate_schema_adds_the_employer_index() {
    common::with_pg(check_migrate).await;
}

/// A missing database answers `unavailable` within the source's timeout, like every other call.
#[tokio::test]
async fn sqlite_missing_database_is_unavailable_within_timeout() {
    let timeout = Duration::from_millis(800);
    let loc = SourceLocation::Sqlite { path: "/nonexistent-fedx-dir/sub/social_insurance.db".into() };
    let src = open_source(Department::SocialInsurance, &loc, timeout).await.unwrap();
    let started = Instant::now();
    let err = src.employer_contributions(&usci(1), Some(("2024-01", "2024-12"))).await.expect_err("no db");
    assert_eq!(err.kind(), "unavailable", "{err}");
    assert!(started.elapsed() <= timeout + Duration::from_millis(700), "took {:?}", started.elapsed());
}
