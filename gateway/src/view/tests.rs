//! Views end to end on in-memory sources: what is shown, how it is masked, what is left out and why, and
//! what happens when sources fail. The pure parts (month runs, reconciliation, contribution summaries)
//! are tested next to their code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedx_adapters::ident::{CitizenId, Sex};
use fedx_adapters::source::{
    AbnormalEntry, ContributionFact, ContributionStatus, EmploymentFact, EnrolmentFact, EnterpriseFact,
    IdentityFact, IndividualBusinessFact, ResidencePermitFact,
};
use fedx_adapters::NoiseConfig;
use fedx_adapters::{
    Candidate, Department, Fact, FactCategory, Facts, LookupKey, RecordKey, Source, SourceError,
};
use fedx_proto::v1 as pb;
use futures::future::BoxFuture;
use prost::Message;
use time::macros::{date, datetime};
use time::OffsetDateTime;

use super::*;
use crate::identity::{Resolution, SourceOutcome, Status, WorkerRef};
use crate::policy::schema::descriptor_messages;
use crate::policy::PurposeCatalogue;

// ---------------------------------------------------------------------------------------------------
// The world: one worker, as five departments record them.

const AS_OF: OffsetDateTime = datetime!(2026-10-15 09:00 +8);
const CITIZEN_ID: &str = "11010519491231002X";
const WORKER_REF: &str = "wr_0000000000000000000000000000000000000000000000000000000000000001";
/// An employer industry-commerce knows.
const EMPLOYER_A: &str = "91350100M000100Y43";
const EMPLOYER_A_NAME: &str = "福州市建工集团有限公司";
/// An employer industry-commerce does not know.
const EMPLOYER_B: &str = "91440703MA4UJ2K53W";
const OWN_ENTERPRISE: &str = "91510104MA6C1B2X3R";
const OWN_SHOP: &str = "92510104MA6C1B2X4T";

/// Amounts the sources hold and no view may show (fen).
const INCOME_FEN: i64 = 7_654_321;
const TAX_FEN: i64 = 123_457;
const BASE_FEN: i64 = 6_543_210;
const AMOUNT_FEN: i64 = 1_832_099;
/// Other source data no view discloses.
const GUARDIAN_PHONE: &str = "13987654321";
const HUKOU_ADDRESS: &str = "北京市西城区某某胡同十七号";
const ETHNICITY: &str = "彝族";
const ABNORMAL_REASON: &str = "通过登记的住所或者经营场所无法联系";

fn key(s: &str) -> RecordKey {
    RecordKey(s.to_owned())
}

fn months(from: &str, to: &str) -> Vec<String> {
    let (from, to) = (months::Month::parse(from).unwrap(), months::Month::parse(to).unwrap());
    let mut out = Vec::new();
    let mut m = from;
    while m <= to {
        out.push(m.to_string());
        m = m.next();
    }
    out
}

fn employment(usci: &str, month: &str, income: bool) -> Fact {
    Fact::Employment(EmploymentFact {
        employer_usci: usci.to_owned(),
        employer_name: None,
        month: month.to_owned(),
        income_fen: income.then_some(INCOME_FEN),
        tax_fen: income.then_some(TAX_FEN),
    })
}

fn contribution(month: &str, kind: &str, status: ContributionStatus) -> Fact {
    Fact::Contribution(ContributionFact {
        employer_usci: EMPLOYER_A.to_owned(),
        month: month.to_owned(),
        insurance_type: kind.to_owned(),
        base_fen: BASE_FEN,
        amount_fen: AMOUNT_FEN,
        status,
        insured_region: Some("510104".to_owned()),
    })
}

fn listed() -> Vec<AbnormalEntry> {
    vec![AbnormalEntry { listed_on: date!(2025 - 01 - 01), reason: ABNORMAL_REASON.into(), removed_on: None }]
}

/// Facts per department: `(record, category) → items`.
fn world_facts() -> BTreeMap<Department, BTreeMap<(RecordKey, FactCategory), Vec<Fact>>> {
    let mut w: BTreeMap<Department, BTreeMap<(RecordKey, FactCategory), Vec<Fact>>> = BTreeMap::new();
    let ps = w.entry(Department::PublicSecurity).or_default();
    ps.insert(
        (key("person/P1"), FactCategory::Identity),
        vec![Fact::Identity(IdentityFact {
            citizen_id: CITIZEN_ID.into(),
            name: "王小明".into(),
            sex: Some(Sex::Male),
            birth_date: Some(date!(1949 - 12 - 31)),
            ethnicity: Some(ETHNICITY.into()),
            hukou_region: Some("110102".into()),
            hukou_address: Some(HUKOU_ADDRESS.into()),
        })],
    );
    ps.insert(
        (key("person/P1"), FactCategory::ResidencePermit),
        vec![
            Fact::ResidencePermit(ResidencePermitFact {
                permit_no: "RP-1".into(),
                city_region: "510104".into(),
                valid_from: date!(2020 - 01 - 01),
                valid_until: date!(2022 - 12 - 31),
            }),
            Fact::ResidencePermit(ResidencePermitFact {
                permit_no: "RP-2".into(),
                city_region: "510104".into(),
                valid_from: date!(2024 - 03 - 01),
                valid_until: date!(2027 - 02 - 28),
            }),
        ],
    );

    // Tax: employer A 2024-01..06, employer B 2025-01..03.
    let tax_items = months("2024-01", "2024-06")
        .iter()
        .map(|m| employment(EMPLOYER_A, m, true))
        .chain(months("2025-01", "2025-03").iter().map(|m| employment(EMPLOYER_B, m, true)))
        .collect();
    w.entry(Department::Tax).or_default().insert((key("taxpayer/T1"), FactCategory::Employment), tax_items);

    // Social insurance: employer A declared 2024-03..08; pension paid 03..06 and owed 07..08, medical
    // paid throughout.
    let si = w.entry(Department::SocialInsurance).or_default();
    si.insert(
        (key("insured_person/S1"), FactCategory::Employment),
        months("2024-03", "2024-08").iter().map(|m| employment(EMPLOYER_A, m, false)).collect(),
    );
    let mut contributions = Vec::new();
    for m in months("2024-03", "2024-08") {
        let pension =
            if m.as_str() <= "2024-06" { ContributionStatus::Paid } else { ContributionStatus::Arrears };
        contributions.push(contribution(&m, "pension", pension));
        contributions.push(contribution(&m, "medical", ContributionStatus::Paid));
    }
    si.insert((key("insured_person/S1"), FactCategory::Contributions), contributions);

    w.entry(Department::Education).or_default().insert(
        (key("student/E1"), FactCategory::Enrolment),
        vec![Fact::Enrolment(EnrolmentFact {
            student_no: "G5101042015".into(),
            child_name: "王小红".into(),
            child_id: Some("510104201501010022".into()),
            school_code: "2151000001".into(),
            school_name: "成都市锦江区实验小学".into(),
            school_region: Some("510104".into()),
            grade: "小学三年级".into(),
            status: "enrolled".into(),
            guardian_name: Some("王小明".into()),
            guardian_id: None,
            guardian_phone: Some(GUARDIAN_PHONE.into()),
        })],
    );

    let ic = w.entry(Department::IndustryCommerce).or_default();
    let enterprise = |usci: &str, name: &str, status: &str, abnormal| {
        vec![Fact::Enterprise(EnterpriseFact {
            usci: usci.into(),
            name: name.into(),
            status: status.into(),
            legal_rep: "王小明".into(),
            region: "510104".into(),
            established: Some(date!(2019 - 05 - 20)),
            abnormal,
        })]
    };
    ic.insert(
        (RecordKey::new("enterprise", OWN_ENTERPRISE), FactCategory::Enterprise),
        enterprise(OWN_ENTERPRISE, "成都小明建筑劳务有限公司", "存续", listed()),
    );
    ic.insert(
        (RecordKey::new("enterprise", EMPLOYER_A), FactCategory::Enterprise),
        enterprise(EMPLOYER_A, EMPLOYER_A_NAME, "存续", Vec::new()),
    );
    ic.insert(
        (RecordKey::new("individual_business", OWN_SHOP), FactCategory::IndividualBusiness),
        vec![Fact::IndividualBusiness(IndividualBusinessFact {
            usci: OWN_SHOP.into(),
            name: "锦江区王记五金店".into(),
            status: "注销".into(),
            operator_name: "王小明".into(),
            region: "510104".into(),
            established: Some(date!(2016 - 03 - 01)),
            abnormal: listed(),
        })],
    );
    w
}

/// How a fake source behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Answer,
    /// Every call fails as a database that cannot be reached.
    Fail,
    /// Every call hangs far past any timeout used here.
    Hang,
}

/// An in-memory department source.
struct FakeSource {
    dept: Department,
    facts: BTreeMap<(RecordKey, FactCategory), Vec<Fact>>,
    behaviour: Behaviour,
    calls: AtomicUsize,
}

impl FakeSource {
    async fn check(&self) -> Result<(), SourceError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match self.behaviour {
            Behaviour::Answer => Ok(()),
            Behaviour::Fail => {
                Err(SourceError::Unavailable { dept: self.dept, reason: "test source is down".into() })
            }
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Err(SourceError::Timeout { dept: self.dept, after: Duration::from_secs(30) })
            }
        }
    }
}

impl Source for FakeSource {
    fn department(&self) -> Department {
        self.dept
    }

    fn categories(&self) -> &'static [FactCategory] {
        &FactCategory::ALL
    }

    /// USCI look-ups only (for employer names): the records keyed by the code.
    fn lookup<'a>(&'a self, key: &'a LookupKey) -> BoxFuture<'a, Result<Vec<Candidate>, SourceError>> {
        Box::pin(async move {
            self.check().await?;
            let LookupKey::Usci(usci) = key else { return Ok(Vec::new()) };
            let keys: BTreeSet<&RecordKey> =
                self.facts.keys().map(|(k, _)| k).filter(|k| k.parts().map(|p| p.1) == Some(usci)).collect();
            Ok(keys
                .into_iter()
                .map(|k| Candidate {
                    dept: self.dept,
                    record_key: k.clone(),
                    id: None,
                    id_quality: None,
                    name_norm: None,
                    birth_date: None,
                    sex: None,
                    phone: None,
                    region: None,
                })
                .collect())
        })
    }

    fn name_frequency<'a>(&'a self, _name_norm: &'a str) -> BoxFuture<'a, Result<u64, SourceError>> {
        Box::pin(async move { Ok(0) })
    }

    fn fetch_facts<'a>(
        &'a self,
        record_key: &'a RecordKey,
        category: FactCategory,
    ) -> BoxFuture<'a, Result<Facts, SourceError>> {
        Box::pin(async move {
            self.check().await?;
            let items = self
                .facts
                .get(&(record_key.clone(), category))
                .cloned()
                .ok_or_else(|| SourceError::NoSuchRecord { dept: self.dept, key: record_key.clone() })?;
            Ok(Facts { dept: self.dept, record_key: record_key.clone(), category, as_of: AS_OF, items })
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move { Ok(()) })
    }
}

struct World {
    sources: SourceSet,
    fakes: BTreeMap<Department, Arc<FakeSource>>,
    resolution: Resolution,
}

impl World {
    fn calls(&self, dept: Department) -> usize {
        self.fakes[&dept].calls.load(Ordering::Relaxed)
    }
}

/// The world with every source answering except those named.
fn world(behaviours: &[(Department, Behaviour)]) -> World {
    let mut facts = world_facts();
    let fakes: BTreeMap<Department, Arc<FakeSource>> = Department::ALL
        .into_iter()
        .map(|dept| {
            let behaviour =
                behaviours.iter().find(|(d, _)| *d == dept).map_or(Behaviour::Answer, |(_, b)| *b);
            let fake = FakeSource {
                dept,
                facts: facts.remove(&dept).unwrap_or_default(),
                behaviour,
                calls: AtomicUsize::new(0),
            };
            (dept, Arc::new(fake))
        })
        .collect();
    let sources = SourceSet::new(fakes.values().map(|f| f.clone() as Arc<dyn Source>).collect());
    let linked = |dept: Department| -> Vec<RecordKey> {
        match dept {
            Department::PublicSecurity => vec![key("person/P1")],
            Department::Tax => vec![key("taxpayer/T1")],
            Department::SocialInsurance => vec![key("insured_person/S1")],
            Department::Education => vec![key("student/E1")],
            Department::IndustryCommerce => vec![
                RecordKey::new("enterprise", OWN_ENTERPRISE),
                RecordKey::new("individual_business", OWN_SHOP),
            ],
        }
    };
    let resolution = Resolution {
        status: Status::Resolved,
        worker_ref: Some(WorkerRef { value: WORKER_REF.into(), key_id: "k1".into() }),
        citizen_id: Some(CITIZEN_ID.parse::<CitizenId>().expect("valid test ID")),
        confidence: 0.999,
        sources: Department::ALL
            .into_iter()
            .map(|dept| SourceOutcome {
                dept,
                unavailable: None,
                best: None,
                linked: linked(dept),
                possible: Vec::new(),
            })
            .collect(),
        disambiguating_fields: Vec::new(),
    };
    World { sources, fakes, resolution }
}

// ---------------------------------------------------------------------------------------------------
// Purposes, from catalogue text as an administrator would write it.

const STATUTORY: &str = "legal_basis = \"statutory\"\nstatute = \"PIPL art. 13(3)\"";
const CONSENT: &str =
    "legal_basis = \"consent\"\nprovisions = \"PIPL art. 13(1)\"\nmax_consent_validity_days = 90";

/// A purpose `p` with the given basis lines, extra main-table lines, grants table body and trailing
/// tables (e.g. masking). Parsed without validation, so tests can also try what validation would refuse.
fn purpose(basis: &str, extra: &str, grants: &str, tail: &str) -> Purpose {
    let text = format!(
        "[purposes.p]\nname_zh = \"测试\"\nname_en = \"Test\"\n{basis}\ndepartments = [\"social_insurance\"]\n\
         retention_days = 30\n{extra}\n\n[purposes.p.grants]\n{grants}\n\n{tail}\n"
    );
    let mut catalogue = PurposeCatalogue::from_toml(&text).expect("test catalogue parses");
    catalogue.purposes.remove("p").expect("purpose p")
}

/// The grants line of a category with the given fields.
fn grant(category: FieldCategory, fields: &[&str]) -> String {
    let list: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
    format!("{} = [{}]\n", category.code(), list.join(", "))
}

/// Every field of every category.
fn grant_everything() -> String {
    FieldCategory::ALL
        .into_iter()
        .map(|c| {
            let prefix = format!("{}.", c.code());
            let fields: Vec<&str> = c.fields().iter().map(|f| f.strip_prefix(&prefix).unwrap_or(f)).collect();
            grant(c, &fields)
        })
        .collect()
}

fn everything() -> Purpose {
    purpose(STATUTORY, "", &grant_everything(), "")
}

fn statutory(p: &Purpose) -> LegalCover {
    LegalCover::statutory(p).expect("statutory purpose")
}

const TIMEOUT: Duration = Duration::from_millis(200);

async fn view(w: &World, p: &Purpose, cover: &LegalCover, requested: &[FieldCategory]) -> ViewOutcome {
    let requested: BTreeSet<FieldCategory> = requested.iter().copied().collect();
    build_view(&ViewRequest {
        resolution: &w.resolution,
        purpose: p,
        cover,
        requested: &requested,
        sources: &w.sources,
        timeout: TIMEOUT,
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Walking the response on the wire, so that no field can slip through unnoticed.

/// Top-level field numbers present in an encoded message (proto3 leaves default values off the wire).
fn wire_tags(mut b: &[u8]) -> BTreeSet<u32> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut tags = BTreeSet::new();
    while !b.is_empty() {
        let k = varint(&mut b);
        tags.insert(u32::try_from(k >> 3).unwrap());
        let skip = match k & 7 {
            0 => {
                varint(&mut b);
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut b)).unwrap(),
            5 => 4,
            other => panic!("unexpected wire type {other}"),
        };
        b = &b[skip..];
    }
    tags
}

/// Names of the fields of a fedx.v1 message present on the wire.
fn present(message: &str, encoded: &[u8]) -> BTreeSet<String> {
    let messages = descriptor_messages();
    let descriptor = messages.get(message).unwrap_or_else(|| panic!("no message {message}"));
    wire_tags(encoded)
        .into_iter()
        .map(|tag| {
            let field = descriptor.field.iter().find(|f| f.number() == i32::try_from(tag).unwrap());
            field.unwrap_or_else(|| panic!("{message} has no field {tag}")).name().to_owned()
        })
        .collect()
}

/// Response fields that are not sections. Every field of the response message must be one of these or
/// a category's section (checked against the descriptor), so a section added to the contract fails here
/// until the walker knows it.
const META_FIELDS: &[&str] = &["worker_ref", "legal_basis", "omitted", "partial", "unavailable_departments"];

fn is_known_response_field(name: &str) -> bool {
    META_FIELDS.contains(&name) || FieldCategory::ALL.iter().any(|c| c.view_section() == name)
}

/// Every view field (`{category}.{field}`) carrying a value in the response, read off the wire.
fn fields_on_the_wire(r: &pb::GetWorkerViewResponse) -> BTreeSet<String> {
    let messages = descriptor_messages();
    for f in &messages["GetWorkerViewResponse"].field {
        assert!(
            is_known_response_field(f.name()),
            "the test walker does not know GetWorkerViewResponse.{}",
            f.name()
        );
    }
    let mut out = BTreeSet::new();
    let mut section = |category: FieldCategory, entries: Vec<Vec<u8>>| {
        for encoded in entries {
            for name in present(category.view_message(), &encoded) {
                if name != "provenance" {
                    out.insert(category.field_name(&name));
                }
            }
        }
    };
    section(FieldCategory::Identity, r.identity.iter().map(Message::encode_to_vec).collect());
    section(FieldCategory::ResidencePermit, r.residence_permits.iter().map(Message::encode_to_vec).collect());
    section(FieldCategory::Employment, r.employment.iter().map(Message::encode_to_vec).collect());
    section(FieldCategory::Contributions, r.contributions.iter().map(Message::encode_to_vec).collect());
    section(FieldCategory::Arrears, r.arrears.iter().map(Message::encode_to_vec).collect());
    section(FieldCategory::Enrolment, r.enrolments.iter().map(Message::encode_to_vec).collect());
    section(FieldCategory::Enterprise, r.enterprises.iter().map(Message::encode_to_vec).collect());
    section(
        FieldCategory::IndividualBusiness,
        r.individual_businesses.iter().map(Message::encode_to_vec).collect(),
    );
    // And nothing at the top level outside the known fields.
    for name in present("GetWorkerViewResponse", &r.encode_to_vec()) {
        assert!(is_known_response_field(&name), "{name}");
    }
    out
}

fn omitted(r: &pb::GetWorkerViewResponse) -> Vec<(pb::FieldCategory, pb::OmissionReason, &str)> {
    r.omitted
        .iter()
        .map(|o| {
            (
                pb::FieldCategory::try_from(o.category).unwrap(),
                pb::OmissionReason::try_from(o.reason).unwrap(),
                o.department.as_str(),
            )
        })
        .collect()
}

fn depts(provenance: &[pb::Provenance]) -> Vec<&str> {
    provenance.iter().map(|p| p.department.as_str()).collect()
}

fn range(start: &str, end: &str) -> Option<pb::MonthRange> {
    Some(pb::MonthRange { start_month: start.into(), end_month: end.into() })
}

// ---------------------------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn a_full_view_reconciles_masks_and_attributes_every_value() {
    let w = world(&[]);
    let p = everything();
    let out = view(&w, &p, &statutory(&p), &[]).await;
    let r = &out.response;
    assert_eq!(r.worker_ref, WORKER_REF);
    assert_eq!(
        r.legal_basis.as_ref().unwrap().basis,
        Some(pb::legal_basis::Basis::Statute("PIPL art. 13(3)".into()))
    );
    assert!(r.omitted.is_empty(), "{:?}", omitted(r));
    assert!(!r.partial && r.unavailable_departments.is_empty());
    assert!(!out.no_source_answered);

    let id = r.identity.as_ref().unwrap();
    assert_eq!(id.citizen_id.as_ref().unwrap().value, "1101**********002X");
    assert_eq!(id.name.as_ref().unwrap().value, "王小明");
    assert_eq!(id.sex.as_ref().unwrap().value, pb::Sex::Male as i32);
    assert_eq!(id.birth_date.as_ref().unwrap().value, "1949-12-31");
    assert_eq!(id.hukou_region_code.as_ref().unwrap().value, "110102");
    let prov = id.name.as_ref().unwrap().provenance.as_ref().unwrap();
    assert_eq!(prov.department, "public_security");
    assert_eq!(prov.as_of.as_ref().unwrap().seconds, AS_OF.unix_timestamp());

    let permits: Vec<_> = r.residence_permits.iter().map(|p| (p.valid_from.as_str(), p.status)).collect();
    assert_eq!(
        permits,
        vec![
            ("2024-03-01", pb::ResidencePermitStatus::Valid as i32),
            ("2020-01-01", pb::ResidencePermitStatus::Expired as i32)
        ]
    );
    assert_eq!(r.residence_permits[0].valid_until, "2027-02-28");
    assert_eq!(r.residence_permits[0].region_code, "510104");

    // Most recent employer first; A reconciled across tax and social insurance.
    assert_eq!(
        r.employment.iter().map(|e| e.employer_usci.as_str()).collect::<Vec<_>>(),
        [EMPLOYER_B, EMPLOYER_A]
    );
    let (b, a) = (&r.employment[0], &r.employment[1]);
    let periods: Vec<_> = a.periods.iter().map(|p| (p.months.clone(), p.departments.clone())).collect();
    assert_eq!(
        periods,
        vec![
            (range("2024-01", "2024-02"), vec!["tax".to_owned()]),
            (range("2024-03", "2024-06"), vec!["tax".to_owned(), "social_insurance".to_owned()]),
            (range("2024-07", "2024-08"), vec!["social_insurance".to_owned()]),
        ]
    );
    assert_eq!(a.months, 8);
    assert_eq!(a.employer_name, EMPLOYER_A_NAME);
    assert_eq!(depts(&a.provenance), ["tax", "social_insurance", "industry_commerce"]);
    assert_eq!(b.months, 3);
    assert_eq!(b.employer_name, "", "industry-commerce does not know B and no source recorded a name");
    assert_eq!(depts(&b.provenance), ["tax"]);

    let c: Vec<_> = r
        .contributions
        .iter()
        .map(|c| (c.insurance_type, c.region_code.as_str(), c.months_paid, c.months_in_arrears))
        .collect();
    assert_eq!(
        c,
        vec![
            (pb::InsuranceType::Pension as i32, "510104", 4, 2),
            (pb::InsuranceType::Medical as i32, "510104", 6, 0)
        ]
    );
    assert_eq!(r.contributions[0].paid_periods, vec![range("2024-03", "2024-06").unwrap()]);
    assert_eq!(r.contributions[0].provenance.as_ref().unwrap().department, "social_insurance");

    assert_eq!(r.arrears.len(), 1);
    let arrears = &r.arrears[0];
    assert_eq!(
        (arrears.employer_usci.as_str(), arrears.employer_name.as_str()),
        (EMPLOYER_A, EMPLOYER_A_NAME)
    );
    assert_eq!(arrears.insurance_type, pb::InsuranceType::Pension as i32);
    assert_eq!(arrears.months, range("2024-07", "2024-08"));

    let child = &r.enrolments[0];
    assert_eq!(child.child_citizen_id, "5101**********0022");
    assert_eq!(child.child_name, "王**");
    assert_eq!(
        (child.school_code.as_str(), child.school_name.as_str(), child.school_region_code.as_str()),
        ("2151000001", "成都市锦江区实验小学", "510104")
    );
    assert_eq!((child.grade.as_str(), child.status), ("小学三年级", pb::EnrolmentStatus::Enrolled as i32));

    assert_eq!(r.enterprises.len(), 1);
    let e = &r.enterprises[0];
    assert_eq!(
        (e.usci.as_str(), e.status, e.abnormal),
        (OWN_ENTERPRISE, pb::BusinessStatus::Active as i32, true)
    );
    assert_eq!((e.region_code.as_str(), e.established_date.as_str()), ("510104", "2019-05-20"));
    assert_eq!(r.individual_businesses.len(), 1);
    let s = &r.individual_businesses[0];
    assert_eq!((s.usci.as_str(), s.status), (OWN_SHOP, pb::BusinessStatus::Deregistered as i32));

    // Every field has a value in this world, so every field is disclosed and on the wire.
    let all: Vec<String> = FieldCategory::ALL.into_iter().flat_map(|c| c.fields().iter().cloned()).collect();
    let all: Vec<String> = all.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
    assert_eq!(out.disclosed_fields, all);
    assert_eq!(fields_on_the_wire(r).into_iter().collect::<Vec<_>>(), all);
    assert_eq!(out.consulted_departments, Department::ALL.to_vec());
}

/// For every single field of the contract: a purpose granting just that field gets just that field,
/// every other field of every section stays at its default, and the audit list names exactly it.
#[tokio::test]
async fn exactly_the_granted_fields_and_nothing_else() {
    let w = world(&[]);
    let mut checked = 0;
    for category in FieldCategory::ALL {
        let prefix = format!("{}.", category.code());
        for field in category.fields() {
            let short = field.strip_prefix(&prefix).unwrap();
            let p = purpose(STATUTORY, "", &grant(category, &[short]), "");
            let out = view(&w, &p, &statutory(&p), &[]).await;
            let on_wire = fields_on_the_wire(&out.response);
            assert_eq!(on_wire, BTreeSet::from([field.clone()]), "granting only {field}");
            assert_eq!(out.disclosed_fields, vec![field.clone()], "granting only {field}");
            assert!(out.response.omitted.is_empty(), "{field}: {:?}", omitted(&out.response));
            checked += 1;
        }
    }
    assert!(checked >= 40, "every field of every category: {checked}");

    // Two categories, some fields each.
    let grants = grant(FieldCategory::Employment, &["months"])
        + &grant(FieldCategory::Contributions, &["months_paid"]);
    let p = purpose(STATUTORY, "", &grants, "");
    let out = view(&w, &p, &statutory(&p), &[]).await;
    assert_eq!(
        fields_on_the_wire(&out.response),
        BTreeSet::from(["employment.months".to_owned(), "contributions.months_paid".to_owned()])
    );
    assert_eq!(out.disclosed_fields, ["contributions.months_paid", "employment.months"]);
    // Without employer names granted, industry-commerce is not asked.
    assert_eq!(out.consulted_departments, [Department::Tax, Department::SocialInsurance]);
}

#[tokio::test]
async fn the_citizen_id_is_masked_unless_the_purpose_needs_it_in_full() {
    let w = world(&[]);
    let identity = grant(FieldCategory::Identity, &["citizen_id", "name"]);
    let citizen_id =
        |out: &ViewOutcome| out.response.identity.as_ref().unwrap().citizen_id.clone().unwrap().value;

    let masked = purpose(STATUTORY, "", &identity, "");
    assert_eq!(citizen_id(&view(&w, &masked, &statutory(&masked), &[]).await), "1101**********002X");

    let full = purpose(STATUTORY, "full_citizen_id = true", &identity, "");
    assert_eq!(citizen_id(&view(&w, &full, &statutory(&full), &[]).await), CITIZEN_ID);

    // A catalogue rule trying to show the number in full without `full_citizen_id` (validation refuses
    // it; the view does not rely on that) is overridden by the floor; a stricter rule applies.
    let sneaky =
        purpose(STATUTORY, "", &identity, "[purposes.p.masking]\n\"identity.citizen_id\" = \"clear\"");
    assert_eq!(citizen_id(&view(&w, &sneaky, &statutory(&sneaky), &[]).await), "1101**********002X");
    let stricter = purpose(
        STATUTORY,
        "",
        &identity,
        "[purposes.p.masking]\n\"identity.citizen_id\" = { keep_first = 0, keep_last = 2 }\n\"identity.name\" = \"surname\"",
    );
    let out = view(&w, &stricter, &statutory(&stricter), &[]).await;
    assert_eq!(citizen_id(&out), "****************2X");
    assert_eq!(out.response.identity.unwrap().name.unwrap().value, "王**");
}

#[tokio::test]
async fn children_are_always_masked() {
    let w = world(&[]);
    let enrolment = grant(FieldCategory::Enrolment, &["child_citizen_id", "child_name", "school_name"]);
    for tail in [
        "",
        "[purposes.p.masking]\n\"enrolment.child_citizen_id\" = \"clear\"\n\"enrolment.child_name\" = \"clear\"",
    ] {
        let p = purpose(STATUTORY, "full_citizen_id = true", &enrolment, tail);
        let out = view(&w, &p, &statutory(&p), &[]).await;
        let child = &out.response.enrolments[0];
        assert_eq!(child.child_citizen_id, "5101**********0022", "masking: {tail:?}");
        assert_eq!(child.child_name, "王**", "masking: {tail:?}");
        assert_eq!(child.school_name, "成都市锦江区实验小学");
        // Nothing of the guardian as education recorded them.
        let text = format!("{:?}", out.response);
        assert!(!text.contains(GUARDIAN_PHONE));
    }
}

/// A masking rule on a structured field cannot be applied partially: the field is withheld.
#[tokio::test]
async fn a_masking_rule_on_a_structured_field_withholds_it() {
    let w = world(&[]);
    let grants = grant(FieldCategory::Employment, &["employer_usci", "months"]);
    let p = purpose(
        STATUTORY,
        "",
        &grants,
        "[purposes.p.masking]\n\"employment.months\" = { keep_first = 1, keep_last = 0 }\n\
         \"employment.employer_usci\" = { keep_first = 2, keep_last = 0 }",
    );
    let out = view(&w, &p, &statutory(&p), &[]).await;
    assert!(out.response.employment.iter().all(|e| e.months == 0));
    assert_eq!(out.response.employment[0].employer_usci, "91****************");
    assert_eq!(out.disclosed_fields, ["employment.employer_usci"]);
}

#[tokio::test]
async fn omissions_say_why() {
    let mut w = world(&[]);
    // Tax holds nothing for this worker.
    w.resolution.sources.iter_mut().find(|s| s.dept == Department::Tax).unwrap().linked.clear();
    let grants = grant(FieldCategory::Identity, &["name"])
        + &grant(FieldCategory::Employment, &["months"])
        + &grant(FieldCategory::Contributions, &["months_paid"]);
    let p = purpose(CONSENT, "", &grants, "");
    let cover = LegalCover::Consent {
        consent_id: "cst_1".into(),
        categories: BTreeSet::from([FieldCategory::Employment, FieldCategory::Enrolment]),
    };
    let requested = [
        FieldCategory::Identity,
        FieldCategory::Employment,
        FieldCategory::Contributions,
        FieldCategory::Enrolment,
    ];
    let out = view(&w, &p, &cover, &requested).await;
    let r = &out.response;
    use pb::FieldCategory as F;
    use pb::OmissionReason as O;
    assert_eq!(
        omitted(r),
        vec![
            (F::Identity, O::NoConsent, ""),
            (F::Employment, O::NotFound, "tax"),
            (F::Contributions, O::NoConsent, ""),
            (F::Enrolment, O::NotPermittedForPurpose, ""),
        ]
    );
    assert!(!r.partial, "a department with nothing is not a failure");
    assert_eq!(
        r.legal_basis.as_ref().unwrap().basis,
        Some(pb::legal_basis::Basis::ConsentId("cst_1".into()))
    );
    assert!(r.identity.is_none() && r.contributions.is_empty() && r.enrolments.is_empty());
    assert_eq!(r.employment.len(), 1);
    assert_eq!(r.employment[0].months, 6);
    assert_eq!(out.consulted_departments, [Department::SocialInsurance]);
    assert_eq!(w.calls(Department::Tax), 0);
    assert_eq!(w.calls(Department::PublicSecurity), 0, "categories not covered are not fetched");

    // Nothing requested: every granted category, here cut down by the consent.
    let out = view(&w, &p, &cover, &[]).await;
    assert_eq!(
        omitted(&out.response),
        vec![
            (F::Identity, O::NoConsent, ""),
            (F::Employment, O::NotFound, "tax"),
            (F::Contributions, O::NoConsent, "")
        ]
    );

    // A statutory cover presented for a consent purpose covers nothing (fail closed).
    let wrong = LegalCover::Statutory { statute: "PIPL art. 13(3)".into() };
    let out = view(&w, &p, &wrong, &[]).await;
    assert!(omitted(&out.response).iter().all(|(_, reason, _)| *reason == O::NoConsent));
    assert!(out.disclosed_fields.is_empty());

    // A source that answers but has no such record: NOT_FOUND with the department.
    let w = world(&[]);
    let p = purpose(STATUTORY, "", &grant(FieldCategory::Arrears, &["months"]), "");
    let mut resolution = w.resolution.clone();
    resolution.sources.iter_mut().find(|s| s.dept == Department::SocialInsurance).unwrap().linked =
        vec![key("insured_person/GONE")];
    let requested = BTreeSet::new();
    let out = build_view(&ViewRequest {
        resolution: &resolution,
        purpose: &p,
        cover: &statutory(&p),
        requested: &requested,
        sources: &w.sources,
        timeout: TIMEOUT,
    })
    .await;
    assert_eq!(omitted(&out.response), vec![(F::Arrears, O::NotFound, "social_insurance")]);
}

#[tokio::test]
async fn a_failing_or_slow_source_makes_the_view_partial_not_failed() {
    let w = world(&[(Department::Tax, Behaviour::Fail), (Department::Education, Behaviour::Hang)]);
    let p = everything();
    let started = Instant::now();
    let out = view(&w, &p, &statutory(&p), &[]).await;
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout");
    let r = &out.response;
    use pb::FieldCategory as F;
    use pb::OmissionReason as O;
    assert_eq!(
        omitted(r),
        vec![(F::Employment, O::SourceUnavailable, "tax"), (F::Enrolment, O::SourceUnavailable, "education")]
    );
    assert!(r.partial);
    assert_eq!(r.unavailable_departments, ["tax", "education"]);
    assert!(!out.no_source_answered);
    // The others are all there; employment from social insurance alone.
    assert!(r.identity.is_some() && !r.contributions.is_empty() && !r.enterprises.is_empty());
    assert!(r.enrolments.is_empty());
    assert_eq!(r.employment.len(), 1);
    assert_eq!(r.employment[0].periods.len(), 1);
    assert_eq!(r.employment[0].periods[0].departments, ["social_insurance"]);
    assert!(!out.disclosed_fields.iter().any(|f| f.starts_with("enrolment.")));
}

#[tokio::test]
async fn a_department_unavailable_at_resolution_is_not_asked_again() {
    let mut w = world(&[]);
    w.resolution.sources.iter_mut().find(|s| s.dept == Department::SocialInsurance).unwrap().unavailable =
        Some("timeout");
    let grants = grant(FieldCategory::Employment, &["months"]) + &grant(FieldCategory::Arrears, &["months"]);
    let p = purpose(STATUTORY, "", &grants, "");
    let out = view(&w, &p, &statutory(&p), &[]).await;
    assert_eq!(w.calls(Department::SocialInsurance), 0);
    use pb::FieldCategory as F;
    use pb::OmissionReason as O;
    assert_eq!(
        omitted(&out.response),
        vec![
            (F::Employment, O::SourceUnavailable, "social_insurance"),
            (F::Arrears, O::SourceUnavailable, "social_insurance")
        ]
    );
    assert_eq!(out.response.unavailable_departments, ["social_insurance"]);
    assert_eq!(out.response.employment.len(), 2, "tax still answers");
}

#[tokio::test]
async fn employer_names_fall_back_when_industry_commerce_fails() {
    let w = world(&[(Department::IndustryCommerce, Behaviour::Fail)]);
    let p =
        purpose(STATUTORY, "", &grant(FieldCategory::Employment, &["employer_usci", "employer_name"]), "");
    let out = view(&w, &p, &statutory(&p), &[]).await;
    let r = &out.response;
    assert!(r.employment.iter().all(|e| e.employer_name.is_empty()));
    assert!(r.employment.iter().all(|e| !depts(&e.provenance).contains(&"industry_commerce")));
    assert_eq!(
        omitted(r),
        vec![(pb::FieldCategory::Employment, pb::OmissionReason::SourceUnavailable, "industry_commerce")]
    );
    assert!(r.partial);
    assert_eq!(out.disclosed_fields, ["employment.employer_usci"]);
    assert!(out.consulted_departments.contains(&Department::IndustryCommerce));
}

#[tokio::test]
async fn no_source_answered_when_every_needed_source_failed() {
    let w = world(&[(Department::PublicSecurity, Behaviour::Fail)]);
    let p = purpose(STATUTORY, "", &grant(FieldCategory::Identity, &["name"]), "");
    let out = view(&w, &p, &statutory(&p), &[]).await;
    assert!(out.no_source_answered);
    assert!(out.response.identity.is_none());
    assert_eq!(out.response.unavailable_departments, ["public_security"]);
    assert!(out.disclosed_fields.is_empty());

    // One of two sources answering is enough.
    let w = world(&[(Department::PublicSecurity, Behaviour::Fail)]);
    let grants =
        grant(FieldCategory::Identity, &["name"]) + &grant(FieldCategory::Contributions, &["months_paid"]);
    let p = purpose(STATUTORY, "", &grants, "");
    assert!(!view(&w, &p, &statutory(&p), &[]).await.no_source_answered);
}

/// Income, tax and contribution amounts are in the sources' facts and must appear nowhere in a view,
/// nor do the other source fields the contract does not carry.
#[tokio::test]
async fn no_income_amount_or_other_undisclosed_data_anywhere() {
    let w = world(&[]);
    let p = purpose(STATUTORY, "full_citizen_id = true", &grant_everything(), "");
    let out = view(&w, &p, &statutory(&p), &[]).await;
    let text = format!("{:?}", out.response);
    for amount in [INCOME_FEN, TAX_FEN, BASE_FEN, AMOUNT_FEN] {
        let fen = amount.to_string();
        let yuan = format!("{}.{:02}", amount / 100, amount % 100);
        assert!(!text.contains(&fen) && !text.contains(&yuan), "amount {fen} disclosed");
    }
    for hidden in [GUARDIAN_PHONE, HUKOU_ADDRESS, ETHNICITY, ABNORMAL_REASON, "RP-1", "G5101042015"] {
        assert!(!text.contains(hidden), "{hidden} disclosed");
    }
    // The outcome's own Debug is for logs: no personal data in it.
    let debug = format!("{out:?}");
    assert!(!debug.contains("王") && !debug.contains(CITIZEN_ID) && debug.contains(WORKER_REF));
}

/// One question per linked record and fact category, however many view categories share it.
#[tokio::test]
async fn each_record_is_asked_once_per_fact_category() {
    let mut w = world(&[]);
    w.resolution.sources.iter_mut().find(|s| s.dept == Department::SocialInsurance).unwrap().linked =
        vec![key("insured_person/S1"), key("insured_person/S0")];
    let categories =
        BTreeSet::from([FieldCategory::Employment, FieldCategory::Contributions, FieldCategory::Arrears]);
    let fetched = fetch(&w.resolution, &w.sources, &categories, TIMEOUT).await;
    // Two records × (employment, contributions).
    assert_eq!(w.calls(Department::SocialInsurance), 4);
    assert_eq!(w.calls(Department::Tax), 1);
    assert_eq!(
        fetched.facts(Department::SocialInsurance, FactCategory::Contributions).len(),
        1,
        "S0 is gone"
    );
    assert_eq!(fetched.consulted, BTreeSet::from([Department::Tax, Department::SocialInsurance]));
    assert!(format!("{fetched:?}").contains("Facts(1 record(s)"));
}

/// The walker used above does see a field that is set: a check that cannot fail proves nothing.
#[test]
fn the_walker_sees_every_field_that_is_set() {
    let r = pb::GetWorkerViewResponse {
        employment: vec![pb::Employment { months: 3, ..Default::default() }],
        individual_businesses: vec![pb::Business { abnormal: true, ..Default::default() }],
        identity: Some(pb::IdentitySummary {
            sex: Some(pb::SourcedSex { value: 0, provenance: None }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        fields_on_the_wire(&r),
        BTreeSet::from([
            "employment.months".to_owned(),
            "individual_business.abnormal".to_owned(),
            "identity.sex".to_owned()
        ])
    );
}

/// On seeded SQLite sources, through the real resolver: every resolved worker's view is complete (no
/// source fails), employment and contributions appear exactly for workers with tax or social-insurance
/// records, employers carry their registered names, contributions their insuring region.
#[tokio::test]
async fn views_of_seeded_workers_through_the_real_sources() {
    use crate::identity::{IdentityConfig, KeyRing, Model, Query, Resolver, SubjectInput};

    let dir = tempfile::tempdir().unwrap();
    let loc = fedx_adapters::SourceLocationSet::SqliteDir(dir.path().to_owned());
    let truth_path = dir.path().join("truth.jsonl");
    // Without noise every record links, so what each view shows can be checked against the truth
    // exactly (linking under noise is the identity module's to test).
    let opts =
        fedx_adapters::SeedOptions { noise: NoiseConfig::none(), ..fedx_adapters::SeedOptions::new(40, 11) };
    fedx_adapters::seed(&opts, &loc, &truth_path).await.unwrap();
    let truths = crate::identity::eval::read_truth(&truth_path).unwrap();
    let sources = SourceSet::open(&loc, Duration::from_secs(5)).await.unwrap();
    let config =
        IdentityConfig { population: truths.len() as u64, cache_capacity: 0, ..IdentityConfig::default() };
    let keys = Arc::new(KeyRing::single("t", &[9u8; 32]).unwrap());
    let resolver = Resolver::new(Model::new(config), sources.clone(), keys);
    let p = everything();
    let cover = statutory(&p);
    let requested = BTreeSet::new();

    let (mut employed, mut named, mut with_children) = (0, 0, 0);
    for t in &truths {
        let input = SubjectInput { citizen_id: t.citizen_id.clone(), ..SubjectInput::default() };
        let resolution = resolver.resolve(&Query::parse(&input, "subject").unwrap()).await.unwrap();
        assert_eq!(resolution.status, Status::Resolved, "{}", t.person);
        let out = build_view(&ViewRequest {
            resolution: &resolution,
            purpose: &p,
            cover: &cover,
            requested: &requested,
            sources: &sources,
            timeout: Duration::from_secs(5),
        })
        .await;
        let r = &out.response;
        assert!(!r.partial, "{}: {:?}", t.person, r.unavailable_departments);
        assert!(r.omitted.iter().all(|o| o.reason == pb::OmissionReason::NotFound as i32));
        assert_eq!(r.identity.as_ref().unwrap().name.as_ref().unwrap().value, t.name);
        let has = |dept: &str| t.records.contains_key(dept);
        assert_eq!(!r.employment.is_empty(), has("tax") || has("social_insurance"), "{}", t.person);
        assert_eq!(!r.contributions.is_empty(), has("social_insurance"), "{}", t.person);
        assert!(r.contributions.iter().all(|c| c.region_code.len() == 6));
        for e in &r.employment {
            assert!(e.months > 0 && !e.periods.is_empty());
            named += usize::from(!e.employer_name.is_empty());
        }
        employed += r.employment.len();
        with_children += usize::from(!r.enrolments.is_empty());
        assert!(r.enrolments.iter().all(|c| c.child_name.contains('*') && c.school_region_code.len() == 6));
        // Whatever is on the wire was recorded as disclosed.
        let disclosed: BTreeSet<String> = out.disclosed_fields.iter().cloned().collect();
        assert!(fields_on_the_wire(r).is_subset(&disclosed), "{}", t.person);
    }
    assert!(employed > 0 && with_children > 0);
    assert_eq!(named, employed, "every generated employer is registered with industry-commerce");
}
