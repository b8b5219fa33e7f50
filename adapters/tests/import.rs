//! CSV import: validation with line numbers, all-or-nothing, skip-bad with a rejects file, no personal
//! data in the reasons; on SQLite and PostgreSQL.

mod common;

use std::path::Path;
use std::time::Duration;

use fedx_adapters::import::BadRow;
use fedx_adapters::{
    import_csv, open_source, Department, ImportError, ImportMode, LookupKey, SourceLocation,
    SourceLocationSet,
};

const HEADER: &str =
    "person_no,citizen_id,name,sex,birth_date,ethnicity,hukou_region,hukou_address,phone,updated_on";
const GOOD_1: &str =
    "R1,11010519491231002X,张伟,女,1949-12-31,汉,110105,北京市朝阳区某街1号,13800138000,2020-01-01";
const GOOD_2: &str = "R2,532301198503021239,李娜,女,1985/3/2,彝,532301,,,";
// Wrong check character (the valid one ends in 0021-…); the value must not appear in the reason.
const BAD_ID: &str = "R3,110105194912310021,王芳,女,1949-12-31,汉,110105,,,";
const BAD_DATE: &str = "R4,11010519491231002X,赵敏,女,1949-13-31,汉,110105,,,";
const MISSING_NAME: &str = "R5,11010519491231002X,,女,1949-12-31,汉,110105,,,";

fn write(path: &Path, lines: &[&str]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

async fn count(loc: &SourceLocation) -> usize {
    let src = open_source(Department::PublicSecurity, loc, Duration::from_secs(5)).await.unwrap();
    let mut n = 0;
    for id in ["11010519491231002X", "532301198503021239"] {
        n += src.lookup(&LookupKey::CitizenId(id.into())).await.unwrap().len();
    }
    n
}

async fn check_import(set: SourceLocationSet) {
    let dir = tempfile::tempdir().unwrap();
    let loc = set.for_dept(Department::PublicSecurity);
    let good = dir.path().join("good.csv");
    write(&good, &[HEADER, GOOD_1, GOOD_2]);
    let r = import_csv(Department::PublicSecurity, "person", &good, &loc, ImportMode::AllOrNothing)
        .await
        .expect("good import");
    assert_eq!((r.rows_read, r.rows_imported, r.rows_rejected), (2, 2, 0));
    assert_eq!(count(&loc).await, 2);

    // A file with bad rows changes nothing and names each bad line and column.
    let bad = dir.path().join("bad.csv");
    write(
        &bad,
        &[HEADER, BAD_ID, "R6,11010519491231002X,周杰,男,1949-12-31,汉,110105,,,", BAD_DATE, MISSING_NAME],
    );
    let err = import_csv(Department::PublicSecurity, "person", &bad, &loc, ImportMode::AllOrNothing)
        .await
        .expect_err("bad rows must fail");
    let ImportError::BadRows { rows, total } = &err else { panic!("unexpected error {err}") };
    assert_eq!(*total, 3);
    let lines: Vec<u64> = rows.iter().map(|r: &BadRow| r.line).collect();
    assert_eq!(lines, vec![2, 4, 5]);
    assert!(rows[0].reason.contains("column citizen_id"), "{}", rows[0].reason);
    assert!(rows[1].reason.contains("column birth_date"), "{}", rows[1].reason);
    assert!(rows[2].reason.contains("column name"), "{}", rows[2].reason);
    let text = format!("{err} {rows:?}");
    for pii in ["110105194912310021", "王芳", "赵敏"] {
        assert!(!text.contains(pii), "error leaks personal data: {text}");
    }
    assert_eq!(count(&loc).await, 2, "database unchanged");

    // Keys already in the database are bad rows with their line numbers; nothing is written.
    let again = dir.path().join("again.csv");
    write(&again, &[HEADER, "R8,11010519491231002X,周杰,男,1949-12-31,汉,110105,,,", GOOD_2]);
    let err = import_csv(Department::PublicSecurity, "person", &again, &loc, ImportMode::AllOrNothing)
        .await
        .expect_err("duplicate keys");
    let ImportError::BadRows { rows, total } = &err else { panic!("unexpected error {err}") };
    assert_eq!(*total, 1);
    assert_eq!(rows[0].line, 3);
    assert!(rows[0].reason.contains("(person_no) already in the database"), "{}", rows[0].reason);
    assert_eq!(count(&loc).await, 2, "database unchanged");

    // Duplicates inside one file are caught during validation, with the first line named.
    let dup = dir.path().join("dup.csv");
    write(
        &dup,
        &[
            HEADER,
            "R7,11010519491231002X,周杰,男,1949-12-31,汉,110105,,,",
            "R7,11010519491231002X,周杰,男,1949-12-31,汉,110105,,,",
        ],
    );
    let err = import_csv(Department::PublicSecurity, "person", &dup, &loc, ImportMode::AllOrNothing)
        .await
        .expect_err("duplicate in file");
    let ImportError::BadRows { rows, .. } = err else { panic!() };
    assert_eq!(rows[0].line, 3);
    assert!(rows[0].reason.contains("already on line 2"), "{}", rows[0].reason);

    // Skip-bad: good rows in, bad rows to the rejects file with line and reason.
    let rejects = dir.path().join("rejects.csv");
    let r = import_csv(
        Department::PublicSecurity,
        "person",
        &bad,
        &loc,
        ImportMode::SkipBad { rejects: rejects.clone() },
    )
    .await
    .expect("skip-bad import");
    assert_eq!((r.rows_read, r.rows_imported, r.rows_rejected), (4, 1, 3));
    let mut rd = csv::Reader::from_path(&rejects).unwrap();
    assert_eq!(&rd.headers().unwrap()[0], "line");
    let got: Vec<(String, String)> = rd
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_owned(), r[1].to_owned())
        })
        .collect();
    assert_eq!(got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(), ["2", "4", "5"]);
    assert_eq!(count(&loc).await, 3);

    // Skip-bad also sets aside rows whose key the database holds, in line order with the others.
    let mixed = dir.path().join("mixed.csv");
    write(&mixed, &[HEADER, GOOD_1, BAD_DATE, "R9,11010519491231002X,周杰,男,1949-12-31,汉,110105,,,"]);
    let r = import_csv(
        Department::PublicSecurity,
        "person",
        &mixed,
        &loc,
        ImportMode::SkipBad { rejects: rejects.clone() },
    )
    .await
    .expect("skip-bad import with clashes");
    assert_eq!((r.rows_read, r.rows_imported, r.rows_rejected), (3, 1, 2));
    let mut rd = csv::Reader::from_path(&rejects).unwrap();
    let got: Vec<(String, String)> =
        rd.records().map(|r| r.unwrap()).map(|r| (r[0].to_owned(), r[1].to_owned())).collect();
    assert_eq!(got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(), ["2", "3"]);
    assert!(got[0].1.contains("already in the database"), "{}", got[0].1);
    assert_eq!(count(&loc).await, 4);

    // Header problems.
    let unknown = dir.path().join("unknown.csv");
    write(&unknown, &["person_no,citizen_id,name,sex,birth_date,hukou_region,shoe_size"]);
    assert!(matches!(
        import_csv(Department::PublicSecurity, "person", &unknown, &loc, ImportMode::AllOrNothing).await,
        Err(ImportError::Header(_))
    ));
    let missing = dir.path().join("missing.csv");
    write(&missing, &["person_no,name"]);
    assert!(matches!(
        import_csv(Department::PublicSecurity, "person", &missing, &loc, ImportMode::AllOrNothing).await,
        Err(ImportError::Header(_))
    ));
    assert!(matches!(
        import_csv(Department::Tax, "person", &good, &loc, ImportMode::AllOrNothing).await,
        Err(ImportError::UnknownTable { .. })
    ));
}

#[tokio::test]
async fn sqlite_import_validates_and_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    check_import(SourceLocationSet::SqliteDir(dir.path().to_owned())).await;
}

#[tokio::test]
async fn postgres_import_validates_and_is_all_or_nothing() {
    common::with_pg(check_import).await;
}

/// Other departments' exports keep noisy identifiers: a legacy 15-digit number and full-width digits
/// are accepted and normalised for look-up.
#[tokio::test]
async fn sqlite_import_keeps_raw_values_and_normalises_keys() {
    let dir = tempfile::tempdir().unwrap();
    let set = SourceLocationSet::SqliteDir(dir.path().to_owned());
    let loc = set.for_dept(Department::SocialInsurance);
    let csv = dir.path().join("si.csv");
    write(
        &csv,
        &[
            "si_no,id_number,name,sex,insured_region,phone",
            "S1,110105491231002,张 伟,男,440703,+86 138-0013-8000",
            "S2,５３２３０１１９８５０３０２１２３９,李娜,女,440703,",
            "S3,not-an-id,王芳,女,440703,",
        ],
    );
    let err = import_csv(Department::SocialInsurance, "insured_person", &csv, &loc, ImportMode::AllOrNothing)
        .await
        .expect_err("row 4 is not an ID");
    let ImportError::BadRows { rows, .. } = err else { panic!() };
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].line, 4);
    let rejects = dir.path().join("rej.csv");
    import_csv(Department::SocialInsurance, "insured_person", &csv, &loc, ImportMode::SkipBad { rejects })
        .await
        .unwrap();
    let src = open_source(Department::SocialInsurance, &loc, Duration::from_secs(5)).await.unwrap();
    let c = src.lookup(&LookupKey::CitizenId("11010519491231002X".into())).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].name_norm.as_deref(), Some("张伟"));
    assert_eq!(c[0].phone.as_deref(), Some("13800138000"));
    let c = src.lookup(&LookupKey::Phone("13800138000".into())).await.unwrap();
    assert_eq!(c.len(), 1);
    let c = src.lookup(&LookupKey::CitizenId("532301198503021239".into())).await.unwrap();
    assert_eq!(c.len(), 1, "full-width digits normalised");
}
