//! The generator: valid check characters, noise rates as configured, determinism, namesakes.

use std::collections::HashMap;

use fedx_adapters::generate::{NoiseConfig, Rows, World};
use fedx_adapters::ident::citizen_id::{parse_citizen_id, ParsedCitizenId};
use fedx_adapters::ident::parse_usci;
use fedx_adapters::{tables, Department, TruthRecord};

struct Sample {
    workers: Vec<(TruthRecord, Rows)>,
    enterprises: Rows,
}

fn generate(n: u64, seed: u64, noise: NoiseConfig) -> Sample {
    let mut world = World::new(seed, noise, n);
    let mut enterprises = Rows::default();
    world.enterprise_rows(&mut enterprises);
    let workers = (0..n)
        .map(|i| {
            let mut rows = Rows::default();
            let t = world.worker(i, &mut rows);
            (t, rows)
        })
        .collect();
    Sample { workers, enterprises }
}

/// Rows of one table of one department, with the column index lookup.
fn rows_of<'a>(
    rows: &'a Rows,
    dept: Department,
    table: &str,
) -> impl Iterator<Item = &'a Vec<Option<String>>> {
    let idx = tables(dept).iter().position(|t| t.name == table).unwrap();
    rows.per_dept[dept.index()].iter().filter(move |(t, _)| *t == idx).map(|(_, r)| r)
}

fn col(dept: Department, table: &str, column: &str) -> usize {
    let spec = tables(dept).iter().find(|t| t.name == table).unwrap();
    spec.column_index(column).unwrap()
}

/// |observed − expected| within 4.5 binomial standard deviations (plus a small floor).
fn assert_rate(what: &str, hits: usize, n: usize, p: f64) {
    assert!(n > 100, "{what}: sample too small ({n})");
    let observed = hits as f64 / n as f64;
    let sd = (p * (1.0 - p) / n as f64).sqrt();
    assert!(
        (observed - p).abs() <= 4.5 * sd + 0.002,
        "{what}: observed {observed:.4} over {n}, configured {p}"
    );
}

#[test]
fn check_characters_are_valid_everywhere() {
    let s = generate(3_000, 11, NoiseConfig::none());
    let id_col = col(Department::PublicSecurity, "person", "citizen_id");
    for (t, rows) in &s.workers {
        assert!(matches!(parse_citizen_id(&t.citizen_id), Ok(ParsedCitizenId::Valid(_))));
        for r in rows_of(rows, Department::PublicSecurity, "person") {
            let id = r[id_col].as_deref().unwrap();
            assert!(matches!(parse_citizen_id(id), Ok(ParsedCitizenId::Valid(_))));
            assert_eq!(id, t.citizen_id);
        }
        for r in rows_of(rows, Department::Education, "student") {
            if let Some(child) = r[col(Department::Education, "student", "child_id")].as_deref() {
                assert!(matches!(parse_citizen_id(child), Ok(ParsedCitizenId::Valid(_))));
            }
        }
        for r in rows_of(rows, Department::IndustryCommerce, "individual_business") {
            parse_usci(r[0].as_deref().unwrap()).expect("valid USCI");
        }
    }
    let mut n = 0;
    for r in rows_of(&s.enterprises, Department::IndustryCommerce, "enterprise") {
        parse_usci(r[0].as_deref().unwrap()).expect("valid USCI");
        n += 1;
    }
    assert!(n >= 100);
    // Every generated row passes its own table's import validation.
    for (_, rows) in &s.workers {
        for d in Department::ALL {
            for (t, raw) in &rows.per_dept[d.index()] {
                tables(d)[*t].prepare(raw.clone()).expect("row validates");
            }
        }
    }
}

#[test]
fn noise_rates_match_the_configuration() {
    let noise = NoiseConfig {
        si_legacy_15: 0.2,
        tax_mistyped_id: 0.05,
        edu_phone_only_guardian: 0.1,
        edu_missing_guardian_id: 0.4,
        full_width: 0.05,
        ..NoiseConfig::default()
    };
    let s = generate(30_000, 5, noise.clone());
    let si_id = col(Department::SocialInsurance, "insured_person", "id_number");
    let tax_id = col(Department::Tax, "taxpayer", "id_number");
    let g_name = col(Department::Education, "student", "guardian_name");
    let g_id = col(Department::Education, "student", "guardian_id");
    let (mut legacy, mut eligible) = (0, 0);
    let (mut typo, mut taxed) = (0, 0);
    let (mut phone_only, mut students, mut missing, mut named) = (0, 0, 0, 0);
    let (mut wide, mut tax_ids) = (0, 0);
    for (t, rows) in &s.workers {
        if t.birth_date.as_str() < "1984" {
            for r in rows_of(rows, Department::SocialInsurance, "insured_person") {
                eligible += 1;
                legacy += usize::from(r[si_id].as_deref().unwrap().chars().count() == 15);
            }
        }
        let tps: Vec<_> = rows_of(rows, Department::Tax, "taxpayer").collect();
        if !tps.is_empty() {
            taxed += 1;
            let mistyped =
                tps.iter().any(|r| match parse_citizen_id(r[tax_id].as_deref().unwrap()).unwrap() {
                    ParsedCitizenId::Valid(c) => c.as_str() != t.citizen_id,
                    ParsedCitizenId::Suspect(_) => true,
                });
            typo += usize::from(mistyped);
        }
        for r in &tps {
            let raw = r[tax_id].as_deref().unwrap();
            if raw.chars().count() - raw.chars().filter(|c| *c == ' ').count() == 18 {
                tax_ids += 1;
                wide += usize::from(raw.chars().any(|c| ('０'..='９').contains(&c)));
            }
        }
        for r in rows_of(rows, Department::Education, "student") {
            students += 1;
            if r[g_name].is_none() {
                phone_only += 1;
            } else {
                named += 1;
                missing += usize::from(r[g_id].is_none());
            }
        }
    }
    assert_rate("social insurance legacy 15-digit IDs", legacy, eligible, noise.si_legacy_15);
    assert_rate("tax mistyped IDs", typo, taxed, noise.tax_mistyped_id);
    assert_rate("education phone-only guardians", phone_only, students, noise.edu_phone_only_guardian);
    assert_rate("education missing guardian IDs", missing, named, noise.edu_missing_guardian_id);
    // Full-width applies to the correctly typed taxpayer IDs (a mistyped one is also noisy otherwise).
    assert_rate("tax full-width IDs", wide, tax_ids, noise.full_width);
}

#[test]
fn no_noise_means_clean_identifiers() {
    let s = generate(1_000, 3, NoiseConfig::none());
    let tax_id = col(Department::Tax, "taxpayer", "id_number");
    for (t, rows) in &s.workers {
        assert_eq!(
            rows_of(rows, Department::Tax, "taxpayer").count(),
            usize::from(t.records.contains_key("tax"))
        );
        for r in rows_of(rows, Department::Tax, "taxpayer") {
            assert_eq!(r[tax_id].as_deref(), Some(t.citizen_id.as_str()));
        }
    }
}

#[test]
fn generation_is_deterministic() {
    let a = generate(500, 99, NoiseConfig::default());
    let b = generate(500, 99, NoiseConfig::default());
    for ((ta, ra), (tb, rb)) in a.workers.iter().zip(&b.workers) {
        assert_eq!(ta, tb);
        assert_eq!(ra.per_dept, rb.per_dept);
    }
    assert_eq!(a.enterprises.per_dept, b.enterprises.per_dept);
    let c = generate(500, 100, NoiseConfig::default());
    assert_ne!(a.workers[0].0, c.workers[0].0, "a different seed gives different people");
}

#[test]
fn namesakes_share_name_and_birth_date_but_not_id() {
    let s = generate(20_000, 8, NoiseConfig::default());
    let mut groups: HashMap<(String, String), Vec<&TruthRecord>> = HashMap::new();
    for (t, _) in &s.workers {
        groups.entry((t.name.clone(), t.birth_date.clone())).or_default().push(t);
    }
    let shared: Vec<_> = groups.values().filter(|g| g.len() > 1).collect();
    assert!(shared.len() >= 20, "only {} namesake groups", shared.len());
    for g in shared {
        let mut ids: Vec<_> = g.iter().map(|t| t.citizen_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), g.len(), "namesakes have distinct IDs");
    }
    // Employment histories span several employers with gaps, some children are enrolled, some
    // contributions are in arrears.
    let multi_employer = s.workers.iter().filter(|(t, _)| t.records.contains_key("social_insurance")).count();
    assert!(multi_employer > 1_000);
    let status = col(Department::SocialInsurance, "contribution", "status");
    let arrears = s
        .workers
        .iter()
        .flat_map(|(_, r)| rows_of(r, Department::SocialInsurance, "contribution"))
        .filter(|r| r[status].as_deref() == Some("arrears"))
        .count();
    assert!(arrears > 0, "some contributions are in arrears");
    let students = s.workers.iter().filter(|(t, _)| t.records.contains_key("education")).count();
    assert!(students > 1_000);
}
