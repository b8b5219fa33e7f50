//! The fact fields worker views need beyond the basic record: the insuring region of contributions, the
//! school's region of an enrolment, and the abnormal-operation entries of individual businesses. Checked
//! against a seeded database on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use fedx_adapters::source::AbnormalEntry;
use fedx_adapters::{open_source, Department, Fact, FactCategory, NoiseConfig, RecordKey, SourceLocationSet};
use sqlx::Connection;

const WORKERS: u64 = 300;

fn is_region_code(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit())
}

async fn check(set: SourceLocationSet) {
    let dir = tempfile::tempdir().unwrap();
    let truth = common::seed_world(&set, dir.path(), WORKERS, NoiseConfig::none()).await;
    let timeout = Duration::from_secs(5);
    let si = open_source(Department::SocialInsurance, &set.for_dept(Department::SocialInsurance), timeout)
        .await
        .unwrap();
    let edu =
        open_source(Department::Education, &set.for_dept(Department::Education), timeout).await.unwrap();
    let ic = open_source(Department::IndustryCommerce, &set.for_dept(Department::IndustryCommerce), timeout)
        .await
        .unwrap();

    let (mut contributions, mut enrolments, mut businesses) = (0, 0, 0);
    for t in &truth {
        for k in t.records.get("social_insurance").into_iter().flatten() {
            let f = si.fetch_facts(&RecordKey(k.clone()), FactCategory::Contributions).await.unwrap();
            for item in &f.items {
                let Fact::Contribution(c) = item else { panic!("not a contribution") };
                let region = c.insured_region.as_deref().expect("insured region");
                assert!(is_region_code(region), "{k}: region {region:?}");
                contributions += 1;
            }
        }
        for k in t.records.get("education").into_iter().flatten() {
            let f = edu.fetch_facts(&RecordKey(k.clone()), FactCategory::Enrolment).await.unwrap();
            let Fact::Enrolment(e) = &f.items[0] else { panic!("not an enrolment") };
            assert!(is_region_code(e.school_region.as_deref().expect("school region")));
            enrolments += 1;
        }
        for k in t.records.get("industry_commerce").into_iter().flatten() {
            let key = RecordKey(k.clone());
            if key.parts().map(|(table, _)| table) != Some("individual_business") {
                continue;
            }
            let f = ic.fetch_facts(&key, FactCategory::IndividualBusiness).await.unwrap();
            let Fact::IndividualBusiness(b) = &f.items[0] else { panic!("not an individual business") };
            // The generator lists no individual business; see below for one that is listed.
            assert_eq!(b.abnormal, Vec::<AbnormalEntry>::new());
            businesses += 1;
        }
    }
    assert!(contributions > 0 && enrolments > 0 && businesses > 0);
}

#[tokio::test]
async fn sqlite_view_fact_fields_are_filled() {
    let dir = tempfile::tempdir().unwrap();
    check(SourceLocationSet::SqliteDir(dir.path().to_owned())).await;
}

#[tokio::test]
async fn postgres_view_fact_fields_are_filled() {
    common::with_pg(check).await;
}

/// An individual business put on the abnormal-operation list comes back with its entry.
#[tokio::test]
async fn sqlite_individual_business_carries_its_abnormal_entries() {
    let dir = tempfile::tempdir().unwrap();
    let set = SourceLocationSet::SqliteDir(dir.path().to_owned());
    let truth = common::seed_world(&set, dir.path(), WORKERS, NoiseConfig::none()).await;
    let key = truth
        .iter()
        .flat_map(|t| t.records.get("industry_commerce").into_iter().flatten())
        .map(|k| RecordKey(k.clone()))
        .find(|k| k.parts().map(|(table, _)| table) == Some("individual_business"))
        .expect("some worker runs an individual business");
    let usci = key.parts().unwrap().1.to_owned();

    let db = dir.path().join("industry_commerce.db");
    let mut conn = sqlx::SqliteConnection::connect(db.to_str().unwrap()).await.unwrap();
    sqlx::query("INSERT INTO abnormal_list (usci, listed_on, reason) VALUES ($1, '2025-03-01', '未按规定报送年度报告')")
        .bind(&usci)
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);

    let loc = set.for_dept(Department::IndustryCommerce);
    let ic = open_source(Department::IndustryCommerce, &loc, Duration::from_secs(5)).await.unwrap();
    let f = ic.fetch_facts(&key, FactCategory::IndividualBusiness).await.unwrap();
    let Fact::IndividualBusiness(b) = &f.items[0] else { panic!("not an individual business") };
    assert_eq!(b.abnormal.len(), 1);
    assert_eq!(b.abnormal[0].listed_on.to_string(), "2025-03-01");
    assert_eq!(b.abnormal[0].removed_on, None);
}
