//! VerificationService (joint verification, 协查) end to end over mTLS, on both backends, against the
//! contract (verify.proto) and the evidence rules of the gateway's `verify` module.
//!
//! The generator's data is random, so exact verdicts rest on crafted evidence: after seeding, one
//! resolvable worker gets source rows for months long before the generated window (2002–2004; the
//! generator writes 2024-11 onwards), crafted employers, enterprises and schools get rows of their own,
//! and every claim is about those. Each test starts its own gateway with a test catalogue holding the
//! shipped purposes plus a statutory purpose that grants every category and allows every claim type, and
//! with the identity cache off, so that crafted rows are seen by the very next request.

use std::collections::BTreeSet;

use fedx_adapters::ident::citizen_id::CitizenId;
use fedx_adapters::ident::usci_check_char;
use fedx_adapters::{
    education, industry_commerce, public_security, social_insurance, tax, Department, NoiseConfig,
    SeedOptions, TruthRecord,
};
use fedx_gateway::audit::record::LegalBasis;
use fedx_gateway::authn::Role;
use fedx_gateway::config::Config;
use fedx_gateway::policy::{FieldCategory, PurposeCatalogue, BUILT_IN_CATALOGUE};
use fedx_tests::status::{metadata, reason, record_of, violations, with_request_id};
use fedx_tests::wire::fields_present;
use fedx_tests::{backend_suite, pb, resolvable, subject_of, Backend, Fault, TestGateway};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

type VerifyClient = pb::verification_service_client::VerificationServiceClient<Channel>;
type ConsentClient = pb::consent_service_client::ConsentServiceClient<Channel>;
type GatewayClient = pb::gateway_service_client::GatewayServiceClient<Channel>;

const JOINT_VERIFY: &str = "/fedx.v1.VerificationService/JointVerify";

/// The test purpose: statutory, every category granted, every claim type allowed, every consumer
/// department registered.
const PURPOSE: &str = "joint_verification_e2e";
const STATUTE: &str = "fedx end-to-end test statute: joint verification over synthetic data";

/// The `Claim` oneof field names, in contract order.
const CLAIM_TYPES: [&str; 8] = [
    "identity_matches",
    "residence_permit_valid",
    "employed_by",
    "contributions_at_least",
    "no_arrears",
    "child_enrolled",
    "enterprise_active",
    "enterprise_not_abnormal",
];

const PS: &str = "public_security";
const TAX: &str = "tax";
const SI: &str = "social_insurance";
const EDU: &str = "education";
const IC: &str = "industry_commerce";

fn population() -> SeedOptions {
    SeedOptions::new(300, 41)
}

// ---- gateway and catalogue -----------------------------------------------------------------------

/// The shipped catalogue plus [`PURPOSE`], written next to the test's data directory and configured.
/// Grants are read from the compiled contract, so they name real fields.
fn write_test_catalogue(config: &mut Config) -> anyhow::Result<()> {
    let mut catalogue: toml::Table = toml::from_str(BUILT_IN_CATALOGUE)?;
    let mut grants = toml::Table::new();
    for category in FieldCategory::ALL {
        let prefix = format!("{}.", category.code());
        let fields: Vec<toml::Value> = category
            .fields()
            .iter()
            .filter_map(|f| f.strip_prefix(prefix.as_str()))
            .map(toml::Value::from)
            .collect();
        anyhow::ensure!(!fields.is_empty(), "no fields for {category}");
        grants.insert(category.code().into(), toml::Value::Array(fields));
    }
    let strings = |items: &[&str]| toml::Value::Array(items.iter().map(|s| toml::Value::from(*s)).collect());
    let mut entry = toml::Table::new();
    entry.insert("name_zh".into(), "联合核查端到端测试".into());
    entry.insert("name_en".into(), "Joint verification end-to-end test".into());
    entry.insert("legal_basis".into(), "statutory".into());
    entry.insert("statute".into(), STATUTE.into());
    entry.insert("departments".into(), strings(&[EDU, IC, PS, SI, TAX]));
    entry.insert("claim_types".into(), strings(&CLAIM_TYPES));
    entry.insert("grants".into(), toml::Value::Table(grants));
    entry.insert("retention_days".into(), toml::Value::Integer(0));
    catalogue
        .get_mut("purposes")
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| anyhow::anyhow!("no [purposes] in the shipped catalogue"))?
        .insert(PURPOSE.into(), toml::Value::Table(entry));
    let path = config.data_dir.with_file_name("purposes-verify.toml");
    std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))?;
    std::fs::write(&path, toml::to_string(&catalogue)?)?;
    config.policy.purposes_file = Some(path);
    Ok(())
}

async fn start(backend: Backend, options: SeedOptions) -> anyhow::Result<(TestGateway, Vec<TruthRecord>)> {
    let mut catalogue = Ok(());
    let started = TestGateway::start_with_sources_configured(backend, options, |config| {
        // Crafted rows change what a subject resolves to: no cached resolution may hide them.
        config.identity.cache_capacity = 0;
        catalogue = write_test_catalogue(config);
    })
    .await;
    catalogue?;
    started
}

fn shipped() -> PurposeCatalogue {
    PurposeCatalogue::from_toml(BUILT_IN_CATALOGUE).expect("the shipped catalogue parses")
}

async fn client(gw: &TestGateway, dept: &str) -> anyhow::Result<VerifyClient> {
    let id = gw.issue(dept, Role::Consumer).await?;
    Ok(VerifyClient::new(gw.channel(Some(&id))?))
}

/// Everything a status says, for checking that it echoes no value.
fn status_text(status: &Status) -> String {
    let details: Vec<String> = status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| format!("{} {}", v.field, v.description)).collect())
        .unwrap_or_default();
    format!("{} {} {}", status.message(), details.join(" "), String::from_utf8_lossy(status.details()))
}

// ---- identifiers ---------------------------------------------------------------------------------

/// A valid USCI the generator never issues (its organisation codes are digits): `kind` "91" for an
/// enterprise, "92" for an individual business.
fn usci(kind: &str, n: u32) -> String {
    let body = format!("{kind}440106QAWPY{n:04}");
    let bytes: [u8; 17] = body.as_bytes().try_into().expect("17 characters");
    let check = usci_check_char(&bytes).expect("USCI alphabet");
    format!("{body}{}", char::from(check))
}

/// The same USCI with a wrong check character.
fn bad_check(usci: &str) -> String {
    let (body, check) = usci.split_at(17);
    let wrong = if check == "0" { '1' } else { '0' };
    format!("{body}{wrong}")
}

/// A valid citizen ID nobody in a seeded population has (workers are born 1966–2005, legal
/// representatives 1960–1992).
fn unknown_citizen_id() -> String {
    let born = time::Date::from_calendar_date(1950, time::Month::January, 1).expect("date");
    CitizenId::from_parts("110105", born, 123).expect("valid parts").into_string()
}

fn record_key<'a>(person: &'a TruthRecord, dept: &str) -> &'a str {
    let key = &person.records[dept][0];
    key.split_once('/').map_or(key.as_str(), |(_, k)| k)
}

/// The area code of the province (`44xxxx` → `440000`) or prefecture (`4401xx` → `440100`) of a code.
fn province_of(code: &str) -> String {
    format!("{}0000", &code[..2])
}

fn prefecture_of(code: &str) -> String {
    format!("{}00", &code[..4])
}

// ---- claims --------------------------------------------------------------------------------------

fn claim(c: pb::claim::Claim) -> pb::Claim {
    pb::Claim { claim: Some(c) }
}

fn months(from: &str, to: &str) -> Option<pb::MonthRange> {
    Some(pb::MonthRange { start_month: from.into(), end_month: to.into() })
}

fn identity_matches(name: &str, citizen_id: &str) -> pb::Claim {
    claim(pb::claim::Claim::IdentityMatches(pb::IdentityMatches {
        name: name.into(),
        citizen_id: citizen_id.into(),
    }))
}

fn permit_valid(region_code: &str, on_date: &str) -> pb::Claim {
    claim(pb::claim::Claim::ResidencePermitValid(pb::ResidencePermitValid {
        region_code: region_code.into(),
        on_date: on_date.into(),
    }))
}

fn employed_by(usci: &str, from: &str, to: &str) -> pb::Claim {
    claim(pb::claim::Claim::EmployedBy(pb::EmployedBy {
        employer_usci: usci.into(),
        period: months(from, to),
    }))
}

fn contributions(kind: pb::InsuranceType, min: i32, window: i32, end: &str, region: &str) -> pb::Claim {
    claim(pb::claim::Claim::ContributionsAtLeast(pb::ContributionsAtLeast {
        insurance_type: kind as i32,
        min_months: min,
        window_months: window,
        end_month: end.into(),
        region_code: region.into(),
    }))
}

fn no_arrears(usci: &str, period: Option<(&str, &str)>) -> pb::Claim {
    claim(pb::claim::Claim::NoArrears(pb::NoArrears {
        employer_usci: usci.into(),
        period: period.and_then(|(from, to)| months(from, to)),
    }))
}

fn child_enrolled(school_code: &str, school_name: &str) -> pb::Claim {
    claim(pb::claim::Claim::ChildEnrolled(pb::ChildEnrolled {
        school_code: school_code.into(),
        school_name: school_name.into(),
    }))
}

fn enterprise_active(usci: &str) -> pb::Claim {
    claim(pb::claim::Claim::EnterpriseActive(pb::EnterpriseActive { usci: usci.into() }))
}

fn not_abnormal(usci: &str) -> pb::Claim {
    claim(pb::claim::Claim::EnterpriseNotAbnormal(pb::EnterpriseNotAbnormal { usci: usci.into() }))
}

/// The claim type name of a claim: its oneof field name.
fn claim_type(c: &pb::Claim) -> &'static str {
    fedx_gateway::verify::claim::wire_type_name(c).unwrap_or_default()
}

fn request(
    purpose: &str,
    subject: Option<pb::SubjectQuery>,
    claims: Vec<pb::Claim>,
) -> pb::JointVerifyRequest {
    pb::JointVerifyRequest {
        purpose: purpose.into(),
        subject,
        claims,
        consent_id: String::new(),
        signed_receipt: false,
    }
}

// ---- verdicts ------------------------------------------------------------------------------------

/// What a claim is expected to come back as; CONFIRMED and REFUTED name the attesting departments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Confirmed(&'static [&'static str]),
    Refuted(&'static [&'static str]),
    Undetermined(pb::UndeterminedReason),
}

use pb::UndeterminedReason as Why;

/// One claim with a label that says what it checks, and the expected answer.
struct Case {
    what: String,
    claim: pb::Claim,
    expect: Expect,
}

fn case(what: impl Into<String>, claim: pb::Claim, expect: Expect) -> Case {
    Case { what: what.into(), claim, expect }
}

/// The answer a result gives, in the shape of [`Expect`] (departments sorted).
fn answer(result: &pb::ClaimResult) -> (pb::Verdict, pb::UndeterminedReason, Vec<String>) {
    let mut departments: Vec<String> = result.attested_by.iter().map(|p| p.department.clone()).collect();
    departments.sort();
    (result.verdict(), result.undetermined_reason(), departments)
}

/// Checks the invariants every result keeps whatever its verdict: it names the claim's type, a decided
/// verdict has no reason and at least one attesting department with an as-of time, and an UNDETERMINED
/// one has a reason and no attestation.
fn check_shape(claims: &[pb::Claim], response: &pb::JointVerifyResponse) {
    assert_eq!(response.results.len(), claims.len(), "one result per claim: {response:?}");
    for (i, (c, r)) in claims.iter().zip(&response.results).enumerate() {
        assert_eq!(r.claim_type, claim_type(c), "results[{i}] is in request order");
        match r.verdict() {
            pb::Verdict::Confirmed | pb::Verdict::Refuted => {
                assert_eq!(r.undetermined_reason(), Why::Unspecified, "results[{i}]: {r:?}");
                assert!(!r.attested_by.is_empty(), "results[{i}]: a verdict names its sources: {r:?}");
                for p in &r.attested_by {
                    assert!(p.as_of.is_some() && !p.department.is_empty(), "results[{i}]: {p:?}");
                }
            }
            pb::Verdict::Undetermined => {
                assert_ne!(r.undetermined_reason(), Why::Unspecified, "results[{i}]: {r:?}");
                assert!(r.attested_by.is_empty(), "results[{i}]: UNDETERMINED attests nothing: {r:?}");
            }
            pb::Verdict::Unspecified => panic!("results[{i}]: no verdict: {r:?}"),
        }
    }
}

/// Sends all cases in one request and checks every answer, naming the case that went wrong.
async fn assert_cases(
    client: &mut VerifyClient,
    purpose: &str,
    subject: Option<pb::SubjectQuery>,
    cases: &[Case],
) -> anyhow::Result<pb::JointVerifyResponse> {
    assert!(cases.len() <= 32, "split the cases: at most 32 claims per request");
    let claims: Vec<pb::Claim> = cases.iter().map(|c| c.claim.clone()).collect();
    let response = client.joint_verify(request(purpose, subject, claims.clone())).await?.into_inner();
    check_shape(&claims, &response);
    let mut wrong = Vec::new();
    for (c, r) in cases.iter().zip(&response.results) {
        let got = answer(r);
        let expected = match &c.expect {
            Expect::Confirmed(d) => (pb::Verdict::Confirmed, Why::Unspecified, sorted(d)),
            Expect::Refuted(d) => (pb::Verdict::Refuted, Why::Unspecified, sorted(d)),
            Expect::Undetermined(why) => (pb::Verdict::Undetermined, *why, Vec::new()),
        };
        if got != expected {
            wrong.push(format!("  {}: expected {expected:?}, got {got:?}", c.what));
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
    Ok(response)
}

fn sorted(departments: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = departments.iter().map(|d| (*d).to_owned()).collect();
    out.sort();
    out
}

// ---- crafted evidence ----------------------------------------------------------------------------

/// A seeded worker whose own records the tests extend, and the crafted employers, enterprises and
/// schools. Months are 2002–2004, far before the generated window.
struct World {
    worker: TruthRecord,
    /// The worker's social-insurance region (contributions inherit it).
    insured_region: String,
    /// Withheld by tax 2003-01..03 only.
    tax_only: String,
    /// Contributions 2003-04..06 only, all paid.
    si_only: String,
    /// Tax and contributions 2003-07..09.
    both: String,
    /// Tax says this one employed the worker 2003-10..12 …
    tax_says: String,
    /// … social insurance says this one insured them in the same months.
    si_says: String,
    /// Tax 2002-01..02, contributions 2002-03..04.
    mixed: String,
    /// Pension contributions 2004-01..08 paid, 2004-09..10 in arrears.
    contributor: String,
    /// Enterprises: 存续 / 注销 / 存续 and still listed abnormal / 存续 and removed from the list.
    active: String,
    deregistered: String,
    listed: String,
    delisted: String,
    /// An individual business whose licence was revoked (吊销).
    revoked_shop: String,
    /// Valid, registered nowhere.
    unknown: String,
    /// Schools: the worker's child is enrolled at the first, another child graduated from the second,
    /// someone else's child is enrolled at the third.
    school_enrolled: (&'static str, &'static str),
    school_graduated: (&'static str, &'static str),
    school_other: (&'static str, &'static str),
    /// Every crafted value a verdict must never disclose, with what it is.
    secrets: Vec<(String, &'static str)>,
}

const PERMIT_NO: &str = "JZ440106E2E000001";
const PERMIT_CITY: &str = "440106";
const PERMIT_ADDRESS: &str = "广州市天河区核查测试街道88号";
const INCOME_FEN: &str = "734561";
const TAX_FEN: &str = "18237";
const BASE_FEN: &str = "612347";
const AMOUNT_FEN: &str = "146963";

const TAX_ONLY_MONTHS: [&str; 3] = ["2003-01", "2003-02", "2003-03"];
const SI_ONLY_MONTHS: [&str; 3] = ["2003-04", "2003-05", "2003-06"];
const BOTH_MONTHS: [&str; 3] = ["2003-07", "2003-08", "2003-09"];
const CONFLICT_MONTHS: [&str; 3] = ["2003-10", "2003-11", "2003-12"];
const MIXED_TAX_MONTHS: [&str; 2] = ["2002-01", "2002-02"];
const MIXED_SI_MONTHS: [&str; 2] = ["2002-03", "2002-04"];
const PAID_MONTHS: [&str; 8] =
    ["2004-01", "2004-02", "2004-03", "2004-04", "2004-05", "2004-06", "2004-07", "2004-08"];
const ARREARS_MONTHS: [&str; 2] = ["2004-09", "2004-10"];

/// A resolvable worker with exactly one record in each of public security, tax and social insurance,
/// so that crafted facts keyed by those records are the worker's without doubt.
fn pick_worker(truth: &[TruthRecord]) -> &TruthRecord {
    let has_namesake = |t: &TruthRecord| truth.iter().any(|o| o.namesake_of.as_ref() == Some(&t.person));
    resolvable(truth)
        .into_iter()
        .filter(|t| !has_namesake(t))
        .find(|t| [PS, TAX, SI].iter().all(|d| t.records.get(*d).is_some_and(|keys| keys.len() == 1)))
        .expect("a resolvable worker with one record in each of public security, tax and social insurance")
}

async fn withhold(gw: &TestGateway, taxpayer: &str, employer: &str, month: &str) -> anyhow::Result<()> {
    gw.source_insert(
        &tax::WITHHOLDING,
        &[
            ("taxpayer_no", taxpayer),
            ("employer_usci", employer),
            ("month", month),
            ("income_fen", INCOME_FEN),
            ("tax_fen", TAX_FEN),
            ("declared_on", "2005-01-15"),
        ],
    )
    .await
}

async fn contribute(
    gw: &TestGateway,
    si_no: &str,
    employer: &str,
    month: &str,
    status: &str,
) -> anyhow::Result<()> {
    gw.source_insert(
        &social_insurance::CONTRIBUTION,
        &[
            ("si_no", si_no),
            ("employer_usci", employer),
            ("month", month),
            ("insurance_type", "pension"),
            ("base_fen", BASE_FEN),
            ("amount_fen", AMOUNT_FEN),
            ("status", status),
        ],
    )
    .await
}

async fn register(gw: &TestGateway, usci: &str, name: &str, status: &str) -> anyhow::Result<()> {
    gw.source_insert(
        &industry_commerce::ENTERPRISE,
        &[
            ("usci", usci),
            ("name", name),
            ("status", status),
            ("legal_rep_name", "核查测试法人"),
            ("region", "440106"),
            ("industry", "建筑业"),
            ("established_on", "2001-06-01"),
        ],
    )
    .await
}

async fn list_abnormal(gw: &TestGateway, usci: &str, removed_on: Option<&str>) -> anyhow::Result<()> {
    let mut cells = vec![
        ("usci", usci),
        ("listed_on", "2003-05-01"),
        ("reason", "通过登记的住所或者经营场所无法联系"),
        ("authority", "广州市天河区市场监督管理局"),
    ];
    if let Some(on) = removed_on {
        cells.push(("removed_on", on));
    }
    gw.source_insert(&industry_commerce::ABNORMAL_LIST, &cells).await
}

#[allow(clippy::too_many_arguments)]
async fn enrol(
    gw: &TestGateway,
    student_no: &str,
    child_name: &str,
    school: (&str, &str),
    status: &str,
    guardian_name: &str,
    guardian_id: Option<&str>,
) -> anyhow::Result<()> {
    let mut cells = vec![
        ("student_no", student_no),
        ("child_name", child_name),
        ("child_sex", "女"),
        ("child_birth_date", "2015-03-02"),
        ("school_code", school.0),
        ("school_name", school.1),
        ("school_region", "440106"),
        ("grade", "三年级"),
        ("status", status),
        ("enrolled_on", "2021-09-01"),
        ("guardian_name", guardian_name),
        ("guardian_relation", "其他"),
    ];
    if let Some(id) = guardian_id {
        cells.push(("guardian_id", id));
    }
    gw.source_insert(&education::STUDENT, &cells).await
}

/// Writes the crafted evidence into the seeded sources.
async fn craft(gw: &TestGateway, truth: &[TruthRecord]) -> anyhow::Result<World> {
    let worker = pick_worker(truth).clone();
    let ps = record_key(&worker, PS).to_owned();
    let tp = record_key(&worker, TAX).to_owned();
    let si = record_key(&worker, SI).to_owned();
    let (ps, tp, si) = (ps.as_str(), tp.as_str(), si.as_str());
    let insured_region = gw
        .source_query(
            Department::SocialInsurance,
            "SELECT insured_region FROM insured_person WHERE si_no = $1",
            &[si],
        )
        .await?
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .ok_or_else(|| anyhow::anyhow!("the worker's insured-person record has no region"))?;
    let mut world = World {
        worker,
        insured_region,
        tax_only: usci("91", 1),
        si_only: usci("91", 2),
        both: usci("91", 3),
        tax_says: usci("91", 4),
        si_says: usci("91", 5),
        mixed: usci("91", 6),
        contributor: usci("91", 7),
        active: usci("91", 11),
        deregistered: usci("91", 12),
        listed: usci("91", 13),
        delisted: usci("91", 14),
        revoked_shop: usci("92", 15),
        unknown: usci("91", 99),
        school_enrolled: ("9944010601", "核查测试第一小学"),
        school_graduated: ("9944010602", "核查测试第二中学"),
        school_other: ("9944010603", "核查测试第三小学"),
        secrets: Vec::new(),
    };

    // Public security: a permit for 440106 valid 2003-03-01 .. 2004-02-29.
    gw.source_insert(
        &public_security::RESIDENCE_PERMIT,
        &[
            ("permit_no", PERMIT_NO),
            ("person_no", ps),
            ("city_region", PERMIT_CITY),
            ("address", PERMIT_ADDRESS),
            ("valid_from", "2003-03-01"),
            ("valid_until", "2004-02-29"),
        ],
    )
    .await?;

    // Tax and social insurance.
    for m in TAX_ONLY_MONTHS {
        withhold(gw, tp, &world.tax_only, m).await?;
    }
    for m in SI_ONLY_MONTHS {
        contribute(gw, si, &world.si_only, m, "paid").await?;
    }
    for m in BOTH_MONTHS {
        withhold(gw, tp, &world.both, m).await?;
        contribute(gw, si, &world.both, m, "paid").await?;
    }
    for m in CONFLICT_MONTHS {
        withhold(gw, tp, &world.tax_says, m).await?;
        contribute(gw, si, &world.si_says, m, "paid").await?;
    }
    for m in MIXED_TAX_MONTHS {
        withhold(gw, tp, &world.mixed, m).await?;
    }
    for m in MIXED_SI_MONTHS {
        contribute(gw, si, &world.mixed, m, "paid").await?;
    }
    for m in PAID_MONTHS {
        contribute(gw, si, &world.contributor, m, "paid").await?;
    }
    for m in ARREARS_MONTHS {
        contribute(gw, si, &world.contributor, m, "arrears").await?;
    }

    // Industry and commerce: every employer is a registered, active enterprise.
    let employers = [
        (world.tax_only.clone(), "核查测试甲建筑劳务有限公司"),
        (world.si_only.clone(), "核查测试乙装饰工程有限公司"),
        (world.both.clone(), "核查测试丙物流有限公司"),
        (world.tax_says.clone(), "核查测试丁电子厂有限公司"),
        (world.si_says.clone(), "核查测试戊餐饮管理有限公司"),
        (world.mixed.clone(), "核查测试己家政服务有限公司"),
        (world.contributor.clone(), "核查测试庚制衣有限公司"),
    ];
    for (code, name) in &employers {
        register(gw, code, name, "存续").await?;
        world.secrets.push(((*name).to_owned(), "employer name"));
    }
    let enterprises = [
        (world.active.clone(), "核查测试辛科技有限公司", "存续"),
        (world.deregistered.clone(), "核查测试壬贸易有限公司", "注销"),
        (world.listed.clone(), "核查测试癸运输有限公司", "存续"),
        (world.delisted.clone(), "核查测试子清洁有限公司", "存续"),
    ];
    for (code, name, status) in &enterprises {
        register(gw, code, name, status).await?;
        world.secrets.push(((*name).to_owned(), "enterprise name"));
    }
    list_abnormal(gw, &world.listed, None).await?;
    list_abnormal(gw, &world.delisted, Some("2003-09-01")).await?;
    gw.source_insert(
        &industry_commerce::INDIVIDUAL_BUSINESS,
        &[
            ("usci", &world.revoked_shop),
            ("name", "天河区核查测试记五金店"),
            ("status", "吊销"),
            ("operator_name", "核查测试经营者"),
            ("region", "440106"),
            ("established_on", "2002-04-01"),
        ],
    )
    .await?;
    world.secrets.push(("天河区核查测试记五金店".into(), "business name"));

    // Education: the worker is the guardian of two children, one enrolled, one graduated; someone else's
    // child is enrolled at a third school, so that school is known to education.
    let (name, id) = (world.worker.name.clone(), world.worker.citizen_id.clone());
    enrol(gw, "E2E000000001", "核查测试童甲", world.school_enrolled, "enrolled", &name, Some(&id)).await?;
    enrol(gw, "E2E000000002", "核查测试童乙", world.school_graduated, "graduated", &name, Some(&id)).await?;
    enrol(gw, "E2E000000003", "核查测试童丙", world.school_other, "enrolled", "核查测试监护人", None).await?;

    let worker = &world.worker;
    let mut secrets: Vec<(String, &'static str)> = vec![
        (worker.name.clone(), "worker name"),
        (worker.citizen_id.clone(), "citizen ID"),
        (worker.citizen_id[..17].to_owned(), "citizen ID without its check character"),
        (worker.phone.clone(), "phone"),
        (worker.birth_date.clone(), "birth date"),
        (PERMIT_NO.into(), "permit number"),
        (PERMIT_ADDRESS.into(), "permit address"),
        (INCOME_FEN.into(), "income amount"),
        (TAX_FEN.into(), "tax amount"),
        (BASE_FEN.into(), "contribution base"),
        (AMOUNT_FEN.into(), "contribution amount"),
        ("核查测试童甲".into(), "child name"),
        ("核查测试童乙".into(), "child name"),
        (world.school_enrolled.1.into(), "school name"),
        (world.school_graduated.1.into(), "school name"),
        (world.school_other.1.into(), "school name"),
        ("2003-03-01".into(), "permit validity"),
        ("2004-02-29".into(), "permit validity"),
    ];
    for m in TAX_ONLY_MONTHS
        .iter()
        .chain(&SI_ONLY_MONTHS)
        .chain(&BOTH_MONTHS)
        .chain(&CONFLICT_MONTHS)
        .chain(&MIXED_TAX_MONTHS)
        .chain(&MIXED_SI_MONTHS)
        .chain(&PAID_MONTHS)
        .chain(&ARREARS_MONTHS)
    {
        secrets.push(((*m).to_owned(), "month of a crafted fact"));
    }
    world.secrets.append(&mut secrets);
    Ok(world)
}

impl World {
    fn subject(&self) -> pb::SubjectQuery {
        subject_of(&self.worker)
    }

    /// One claim of every type, each decided (CONFIRMED or REFUTED), with what each must come back as.
    fn every_claim_type(&self) -> Vec<Case> {
        let w = &self.worker;
        vec![
            case(
                "identity: name and ID agree",
                identity_matches(&w.name, &w.citizen_id),
                Expect::Confirmed(&[PS]),
            ),
            case(
                "permit: valid in the province",
                permit_valid("440000", "2003-06-15"),
                Expect::Confirmed(&[PS]),
            ),
            case(
                "employed_by: tax and social insurance",
                employed_by(&self.both, "2003-07", "2003-09"),
                Expect::Confirmed(&[SI, TAX]),
            ),
            case(
                "contributions: arrears do not count",
                contributions(pb::InsuranceType::Pension, 9, 12, "2004-12", ""),
                Expect::Refuted(&[SI]),
            ),
            case(
                "no_arrears: months in arrears",
                no_arrears(&self.contributor, None),
                Expect::Refuted(&[SI]),
            ),
            case(
                "child_enrolled: at the school",
                child_enrolled(self.school_enrolled.0, ""),
                Expect::Confirmed(&[EDU]),
            ),
            case(
                "enterprise_active: deregistered",
                enterprise_active(&self.deregistered),
                Expect::Refuted(&[IC]),
            ),
            case("enterprise_not_abnormal: still listed", not_abnormal(&self.listed), Expect::Refuted(&[IC])),
        ]
    }
}

// ---- 1. every claim type: CONFIRMED, REFUTED, UNDETERMINED ----------------------------------------

/// identity_matches and residence_permit_valid read public security: name and ID together, the permit's
/// validity dates inclusive, area codes matching the districts within them; an unknown subject is
/// NOT_FOUND.
async fn identity_and_residence_permit_claims_read_public_security(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let w = &world.worker;
    let mut client = client(&gw, SI).await?;
    let cases = [
        case(
            "identity: right name and ID",
            identity_matches(&w.name, &w.citizen_id),
            Expect::Confirmed(&[PS]),
        ),
        case(
            "identity: right ID, another name",
            identity_matches("欧阳核查测试", &w.citizen_id),
            Expect::Refuted(&[PS]),
        ),
        case(
            "permit: the permit's own district",
            permit_valid(PERMIT_CITY, "2003-06-15"),
            Expect::Confirmed(&[PS]),
        ),
        case(
            "permit: province area code covers the district",
            permit_valid(&province_of(PERMIT_CITY), "2003-06-15"),
            Expect::Confirmed(&[PS]),
        ),
        case(
            "permit: prefecture area code covers the district",
            permit_valid(&prefecture_of(PERMIT_CITY), "2003-06-15"),
            Expect::Confirmed(&[PS]),
        ),
        case(
            "permit: first day of validity",
            permit_valid(PERMIT_CITY, "2003-03-01"),
            Expect::Confirmed(&[PS]),
        ),
        case(
            "permit: last day of validity",
            permit_valid(PERMIT_CITY, "2004-02-29"),
            Expect::Confirmed(&[PS]),
        ),
        case(
            "permit: the day before validity",
            permit_valid(PERMIT_CITY, "2003-02-28"),
            Expect::Refuted(&[PS]),
        ),
        case(
            "permit: the day after validity",
            permit_valid(PERMIT_CITY, "2004-03-01"),
            Expect::Refuted(&[PS]),
        ),
        case(
            "permit: another district of the same city matches itself only",
            permit_valid("440105", "2003-06-15"),
            Expect::Refuted(&[PS]),
        ),
        case("permit: another province", permit_valid("110000", "2003-06-15"), Expect::Refuted(&[PS])),
    ];
    let response = assert_cases(&mut client, PURPOSE, Some(world.subject()), &cases).await?;
    assert!(
        response.worker_ref.starts_with("wr_") && response.worker_ref.len() == 67,
        "a resolved subject has a worker_ref: {:?}",
        response.worker_ref
    );
    assert!(response.disambiguating_fields.is_empty());
    assert_eq!(
        response.legal_basis.and_then(|b| b.basis),
        Some(pb::legal_basis::Basis::Statute(STATUTE.into()))
    );

    // Nobody holds this person: every worker claim is NOT_FOUND, and there is no worker_ref.
    let nobody = unknown_citizen_id();
    let subject =
        pb::SubjectQuery {
            citizen_id: nobody.clone(), name: "核查查无此人".into(), ..Default::default()
        };
    let cases = [
        case(
            "identity: unknown subject",
            identity_matches("核查查无此人", &nobody),
            Expect::Undetermined(Why::NotFound),
        ),
        case(
            "permit: unknown subject",
            permit_valid(PERMIT_CITY, "2003-06-15"),
            Expect::Undetermined(Why::NotFound),
        ),
    ];
    let response = assert_cases(&mut client, PURPOSE, Some(subject), &cases).await?;
    assert!(response.worker_ref.is_empty(), "an unresolved subject has no worker_ref: {response:?}");
    gw.stop().await
}

/// employed_by: every month attested for the employer by tax or social insurance, attested by the
/// departments that hold the months; a month attested by neither refutes it; the other department
/// attesting another employer for the same months is a conflict; a silent department leaves a missing
/// month undetermined.
async fn employed_by_reconciles_tax_and_social_insurance_month_by_month(
    backend: Backend,
) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let mut client = client(&gw, SI).await?;
    let cases = [
        case(
            "every month by tax only",
            employed_by(&world.tax_only, "2003-01", "2003-03"),
            Expect::Confirmed(&[TAX]),
        ),
        case(
            "every month by social insurance only",
            employed_by(&world.si_only, "2003-04", "2003-06"),
            Expect::Confirmed(&[SI]),
        ),
        case(
            "every month by both",
            employed_by(&world.both, "2003-07", "2003-09"),
            Expect::Confirmed(&[SI, TAX]),
        ),
        case(
            "some months by tax, the others by social insurance",
            employed_by(&world.mixed, "2002-01", "2002-04"),
            Expect::Confirmed(&[SI, TAX]),
        ),
        case(
            "one month of the period is a gap",
            employed_by(&world.tax_only, "2003-01", "2003-04"),
            Expect::Refuted(&[SI, TAX]),
        ),
        case(
            "no month at all for the employer",
            employed_by(&world.contributor, "2003-01", "2003-02"),
            Expect::Refuted(&[SI, TAX]),
        ),
        case(
            "tax says this employer, social insurance another",
            employed_by(&world.tax_says, "2003-10", "2003-12"),
            Expect::Undetermined(Why::EvidenceConflicting),
        ),
        case(
            "social insurance says this employer, tax another",
            employed_by(&world.si_says, "2003-10", "2003-12"),
            Expect::Undetermined(Why::EvidenceConflicting),
        ),
        case(
            "a gap outranks a conflict",
            employed_by(&world.tax_says, "2003-09", "2003-12"),
            Expect::Refuted(&[SI, TAX]),
        ),
    ];
    assert_cases(&mut client, PURPOSE, Some(world.subject()), &cases).await?;

    // Tax down: the month social insurance lacks cannot be refuted. The subject still resolves (the
    // identity claim is decided), so the verdict is about the missing source, not the person.
    gw.faults.set(Department::Tax, Fault::Down);
    let w = &world.worker;
    let cases = [
        case(
            "tax down, social insurance lacks a month",
            employed_by(&world.si_only, "2003-04", "2003-07"),
            Expect::Undetermined(Why::SourceUnavailable),
        ),
        case(
            "tax down, identity still decided",
            identity_matches(&w.name, &w.citizen_id),
            Expect::Confirmed(&[PS]),
        ),
    ];
    let response = assert_cases(&mut client, PURPOSE, Some(world.subject()), &cases).await?;
    assert!(!response.worker_ref.is_empty());

    gw.faults.clear();
    let cases = [case(
        "tax back: the month is attested by neither",
        employed_by(&world.si_only, "2003-04", "2003-07"),
        Expect::Refuted(&[SI, TAX]),
    )];
    assert_cases(&mut client, PURPOSE, Some(world.subject()), &cases).await?;
    gw.stop().await
}

/// contributions_at_least counts paid months of the type in the window (and in the area, if given),
/// never months in arrears; no_arrears about the worker reads the worker's contributions at the employer.
async fn contributions_and_worker_arrears_count_paid_months_only(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let mut client = client(&gw, SI).await?;
    let pension = pb::InsuranceType::Pension;
    let region = world.insured_region.clone();
    let elsewhere = if region.starts_with("11") { "440000" } else { "110000" };
    let cases = [
        case(
            "8 paid months in the window, 8 asked",
            contributions(pension, 8, 12, "2004-12", ""),
            Expect::Confirmed(&[SI]),
        ),
        case(
            "8 paid + 2 in arrears, 9 asked",
            contributions(pension, 9, 12, "2004-12", ""),
            Expect::Refuted(&[SI]),
        ),
        case("window ending mid-year", contributions(pension, 6, 6, "2004-06", ""), Expect::Confirmed(&[SI])),
        case(
            "a window of arrears months only",
            contributions(pension, 1, 2, "2004-10", ""),
            Expect::Refuted(&[SI]),
        ),
        case(
            "a window before the first contribution",
            contributions(pension, 1, 12, "2001-12", ""),
            Expect::Refuted(&[SI]),
        ),
        case(
            "another insurance type",
            contributions(pb::InsuranceType::Medical, 1, 12, "2004-12", ""),
            Expect::Refuted(&[SI]),
        ),
        case(
            "in the worker's insuring district",
            contributions(pension, 8, 12, "2004-12", &region),
            Expect::Confirmed(&[SI]),
        ),
        case(
            "in the province of the insuring district (area code)",
            contributions(pension, 8, 12, "2004-12", &province_of(&region)),
            Expect::Confirmed(&[SI]),
        ),
        case(
            "in the prefecture of the insuring district (area code)",
            contributions(pension, 8, 12, "2004-12", &prefecture_of(&region)),
            Expect::Confirmed(&[SI]),
        ),
        case(
            "in another province",
            contributions(pension, 1, 12, "2004-12", elsewhere),
            Expect::Refuted(&[SI]),
        ),
        case(
            "no_arrears: months in arrears on record",
            no_arrears(&world.contributor, None),
            Expect::Refuted(&[SI]),
        ),
        case(
            "no_arrears: only the paid months",
            no_arrears(&world.contributor, Some(("2004-01", "2004-08"))),
            Expect::Confirmed(&[SI]),
        ),
        case(
            "no_arrears: a month in arrears",
            no_arrears(&world.contributor, Some(("2004-09", "2004-09"))),
            Expect::Refuted(&[SI]),
        ),
        case(
            "no_arrears: an employer that paid every month",
            no_arrears(&world.si_only, None),
            Expect::Confirmed(&[SI]),
        ),
        case(
            "no_arrears: an employer with no contribution for the worker",
            no_arrears(&world.tax_only, None),
            Expect::Undetermined(Why::NotFound),
        ),
    ];
    assert_cases(&mut client, PURPOSE, Some(world.subject()), &cases).await?;
    gw.stop().await
}

/// no_arrears without a subject, under employer_compliance, is about the employer as a whole: any
/// contribution it declared in arrears refutes it, an employer that declared nothing is NOT_FOUND, and
/// no worker is identified in the answer or in the exchange record.
async fn employer_level_no_arrears_identifies_no_worker(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let mut client = client(&gw, SI).await?;
    let code = "employer_compliance";
    let cases = [
        case(
            "an employer with a month in arrears",
            no_arrears(&world.contributor, None),
            Expect::Refuted(&[SI]),
        ),
        case(
            "the same employer over its paid months",
            no_arrears(&world.contributor, Some(("2004-01", "2004-08"))),
            Expect::Confirmed(&[SI]),
        ),
        case("an employer that paid every month", no_arrears(&world.si_only, None), Expect::Confirmed(&[SI])),
        case(
            "an employer that declared nothing",
            no_arrears(&world.unknown, None),
            Expect::Undetermined(Why::NotFound),
        ),
        case("enterprise_active alongside", enterprise_active(&world.contributor), Expect::Confirmed(&[IC])),
    ];
    let claims: Vec<pb::Claim> = cases.iter().map(|c| c.claim.clone()).collect();
    let response = assert_cases(&mut client, code, None, &cases).await?;
    assert!(response.worker_ref.is_empty(), "an employer-level answer names no worker: {response:?}");
    let statute = shipped().purpose(code).and_then(|p| p.statute().map(str::to_owned)).expect("statutory");
    assert_eq!(
        response.legal_basis.and_then(|b| b.basis),
        Some(pb::legal_basis::Basis::Statute(statute.clone()))
    );

    let request_id = "jv-employer-compliance";
    client.joint_verify(with_request_id(request(code, None, claims.clone()), request_id)).await?;
    let record = record_of(&gw, request_id).await?;
    assert_eq!(record.exchange.outcome_code, 0);
    assert_eq!(record.exchange.purpose, code);
    assert!(record.exchange.worker_ref.is_empty(), "{:?}", record.exchange);
    assert_eq!(record.exchange.claims_verified, claims.iter().map(claim_type).collect::<Vec<_>>());
    assert!(record.exchange.disclosed_fields.is_empty());
    assert_eq!(record.exchange.legal_basis, Some(LegalBasis::Statute(statute)));
    gw.stop().await
}

/// child_enrolled needs an enrolment with status `enrolled` linked to the worker as guardian, at the
/// school named (code, else name after removing whitespace); a subject without education records is
/// NOT_FOUND.
async fn child_enrolled_needs_a_current_enrolment_at_that_school(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let mut client = client(&gw, SI).await?;
    let spaced = format!(" {} {} ", &world.school_enrolled.1[..6], &world.school_enrolled.1[6..]);
    let cases = [
        case(
            "enrolled at the school (code)",
            child_enrolled(world.school_enrolled.0, ""),
            Expect::Confirmed(&[EDU]),
        ),
        case(
            "enrolled at the school (name with stray spaces)",
            child_enrolled("", &spaced),
            Expect::Confirmed(&[EDU]),
        ),
        case(
            "another child's school (code)",
            child_enrolled(world.school_other.0, ""),
            Expect::Refuted(&[EDU]),
        ),
        case(
            "another child's school (name)",
            child_enrolled("", world.school_other.1),
            Expect::Refuted(&[EDU]),
        ),
        case(
            "the child graduated from the school",
            child_enrolled(world.school_graduated.0, ""),
            Expect::Refuted(&[EDU]),
        ),
        case(
            "the child graduated from the school (name)",
            child_enrolled("", world.school_graduated.1),
            Expect::Refuted(&[EDU]),
        ),
    ];
    assert_cases(&mut client, PURPOSE, Some(world.subject()), &cases).await?;

    let childless = resolvable(&truth)
        .into_iter()
        .find(|t| !t.records.contains_key(EDU) && t.person != world.worker.person)
        .expect("a resolvable worker without education records");
    let cases = [case(
        "a subject education holds nothing about",
        child_enrolled(world.school_enrolled.0, ""),
        Expect::Undetermined(Why::NotFound),
    )];
    assert_cases(&mut client, PURPOSE, Some(subject_of(childless)), &cases).await?;
    gw.stop().await
}

/// enterprise_active reads the registration status (enterprise or individual business),
/// enterprise_not_abnormal the abnormal-operation list; both are about the enterprise, with or without
/// a worker in the request.
async fn enterprise_claims_read_registration_and_abnormal_list(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let mut client = client(&gw, IC).await?;
    let cases = [
        case("active: 存续", enterprise_active(&world.active), Expect::Confirmed(&[IC])),
        case("active: 注销", enterprise_active(&world.deregistered), Expect::Refuted(&[IC])),
        case(
            "active: individual business 吊销",
            enterprise_active(&world.revoked_shop),
            Expect::Refuted(&[IC]),
        ),
        case(
            "active: 存续 though listed abnormal",
            enterprise_active(&world.listed),
            Expect::Confirmed(&[IC]),
        ),
        case("active: unknown USCI", enterprise_active(&world.unknown), Expect::Undetermined(Why::NotFound)),
        case("not abnormal: never listed", not_abnormal(&world.active), Expect::Confirmed(&[IC])),
        case("not abnormal: listed, not removed", not_abnormal(&world.listed), Expect::Refuted(&[IC])),
        case("not abnormal: listed, then removed", not_abnormal(&world.delisted), Expect::Confirmed(&[IC])),
        case("not abnormal: unknown USCI", not_abnormal(&world.unknown), Expect::Undetermined(Why::NotFound)),
    ];
    let alone = assert_cases(&mut client, PURPOSE, None, &cases).await?;
    assert!(alone.worker_ref.is_empty());
    let with_worker = assert_cases(&mut client, PURPOSE, Some(world.subject()), &cases).await?;
    let verdicts = |r: &pb::JointVerifyResponse| r.results.iter().map(answer).collect::<Vec<_>>();
    assert_eq!(verdicts(&alone), verdicts(&with_worker), "a subject does not change enterprise verdicts");
    gw.stop().await
}

// ---- 2. subject ambiguity ------------------------------------------------------------------------

/// Name and birth date shared by two people: every worker claim is SUBJECT_AMBIGUOUS, the response names
/// the fields that would settle it and no worker; enterprise claims are still decided.
async fn namesakes_leave_worker_claims_subject_ambiguous(backend: Backend) -> anyhow::Result<()> {
    let options = SeedOptions {
        noise: NoiseConfig { namesake: 0.1, ..Default::default() },
        ..SeedOptions::new(300, 23)
    };
    let (gw, truth) = start(backend, options).await?;
    let world = craft(&gw, &truth).await?;
    let b = truth.iter().find(|t| t.namesake_of.is_some()).expect("namesakes seeded");
    let a = truth.iter().find(|t| Some(&t.person) == b.namesake_of.as_ref()).expect("the earlier namesake");
    let mut client = client(&gw, SI).await?;
    let subject =
        pb::SubjectQuery { name: b.name.clone(), birth_date: b.birth_date.clone(), ..Default::default() };
    let ambiguous = Expect::Undetermined(Why::SubjectAmbiguous);
    let cases = [
        case("identity of a namesake", identity_matches(&b.name, &b.citizen_id), ambiguous.clone()),
        case("permit of a namesake", permit_valid("440000", "2025-06-15"), ambiguous.clone()),
        case(
            "contributions of a namesake",
            contributions(pb::InsuranceType::Pension, 1, 24, "", ""),
            ambiguous.clone(),
        ),
        case("enrolment of a namesake's child", child_enrolled("", ""), ambiguous.clone()),
        case("an enterprise is still decided", enterprise_active(&world.active), Expect::Confirmed(&[IC])),
    ];
    let response = assert_cases(&mut client, PURPOSE, Some(subject), &cases).await?;
    assert!(response.worker_ref.is_empty(), "an ambiguous subject has no worker_ref: {response:?}");
    assert!(!response.disambiguating_fields.is_empty(), "the fields that would settle it: {response:?}");
    let subject_fields: BTreeSet<&str> =
        ["citizen_id", "name", "birth_date", "sex", "phone", "region_code"].into_iter().collect();
    for field in &response.disambiguating_fields {
        assert!(subject_fields.contains(field.as_str()), "not a SubjectQuery field: {field}");
    }
    let bytes = response.encode_to_vec();
    for person in [a, b] {
        for value in [&person.citizen_id, &person.phone] {
            assert!(!contains(&bytes, value), "a namesake's identifier in the response");
        }
    }
    gw.stop().await
}

// ---- 3. purpose rules ----------------------------------------------------------------------------

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Registers a consent of the worker for `dept` and `purpose` over `categories`, valid for a day.
async fn grant(
    gw: &TestGateway,
    dept: &str,
    purpose: &str,
    subject: pb::SubjectQuery,
    categories: &[pb::FieldCategory],
) -> anyhow::Result<String> {
    let id = gw.issue(dept, Role::Consumer).await?;
    let mut consents = ConsentClient::new(gw.channel(Some(&id))?);
    let response = consents
        .grant_consent(pb::GrantConsentRequest {
            subject: Some(subject),
            grantee_department: String::new(),
            purpose: purpose.into(),
            field_categories: categories.iter().map(|c| *c as i32).collect(),
            valid_from: None,
            valid_until: Some(prost_types::Timestamp { seconds: unix_now() + 86_400, nanos: 0 }),
            evidence_sha256: "cd".repeat(32),
            supersedes_consent_id: String::new(),
            request_id: String::new(),
        })
        .await?;
    Ok(response.into_inner().consent.expect("consent").consent_id)
}

/// A claim type the purpose does not allow, or whose category neither purpose nor consent grants, is
/// NOT_PERMITTED while the rest of the request is decided; a consent purpose needs a consent; unknown
/// purposes, purposes of other departments and non-consumer roles are refused.
async fn purpose_rules_refuse_claims_and_requests(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let w = &world.worker;
    let mut social = client(&gw, SI).await?;

    // wage_arrears_investigation allows identity_matches and the enterprise claims, not contributions
    // or arrears.
    let cases = [
        case("allowed: identity", identity_matches(&w.name, &w.citizen_id), Expect::Confirmed(&[PS])),
        case(
            "not allowed: contributions_at_least",
            contributions(pb::InsuranceType::Pension, 8, 12, "2004-12", ""),
            Expect::Undetermined(Why::NotPermitted),
        ),
        case("allowed: enterprise_active", enterprise_active(&world.active), Expect::Confirmed(&[IC])),
        case(
            "not allowed: no_arrears",
            no_arrears(&world.contributor, None),
            Expect::Undetermined(Why::NotPermitted),
        ),
        case(
            "allowed: employed_by",
            employed_by(&world.both, "2003-07", "2003-09"),
            Expect::Confirmed(&[SI, TAX]),
        ),
    ];
    let response =
        assert_cases(&mut social, "wage_arrears_investigation", Some(world.subject()), &cases).await?;
    assert!(!response.worker_ref.is_empty());

    // employer_compliance allows no_arrears but grants no worker category: asked about a worker it is
    // NOT_PERMITTED, and with no permitted worker claim nothing about the person is processed.
    let cases = [
        case(
            "no_arrears about a worker without the arrears category",
            no_arrears(&world.contributor, None),
            Expect::Undetermined(Why::NotPermitted),
        ),
        case("enterprise claim with a subject", not_abnormal(&world.listed), Expect::Refuted(&[IC])),
    ];
    let response = assert_cases(&mut social, "employer_compliance", Some(world.subject()), &cases).await?;
    assert!(response.worker_ref.is_empty(), "no permitted worker claim, no subject resolved: {response:?}");

    // A consent purpose: no consent_id with a worker claim is refused.
    let mut police = client(&gw, PS).await?;
    let code = "residence_permit_application";
    let claims = vec![employed_by(&world.both, "2003-07", "2003-09")];
    let status = police.joint_verify(request(code, Some(world.subject()), claims.clone())).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "CONSENT_REQUIRED"),
        "{status:?}"
    );

    // With a consent covering employment only: employed_by is decided, contributions is not permitted
    // by the consent, and the consent is the legal basis.
    let consent_id = grant(&gw, PS, code, world.subject(), &[pb::FieldCategory::Employment]).await?;
    let mut with_consent = request(
        code,
        Some(world.subject()),
        vec![
            employed_by(&world.both, "2003-07", "2003-09"),
            contributions(pb::InsuranceType::Pension, 8, 12, "2004-12", ""),
        ],
    );
    with_consent.consent_id = consent_id.clone();
    let response = police.joint_verify(with_consent.clone()).await?.into_inner();
    check_shape(&with_consent.claims, &response);
    assert_eq!(answer(&response.results[0]), (pb::Verdict::Confirmed, Why::Unspecified, sorted(&[SI, TAX])));
    assert_eq!(answer(&response.results[1]), (pb::Verdict::Undetermined, Why::NotPermitted, Vec::new()));
    assert_eq!(
        response.legal_basis.and_then(|b| b.basis),
        Some(pb::legal_basis::Basis::ConsentId(consent_id))
    );

    // Unknown purpose.
    let status = social
        .joint_verify(request("no_such_purpose", Some(world.subject()), claims.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "PURPOSE_UNKNOWN");
    assert!(violations(&status).iter().any(|f| f == "purpose"), "{status:?}");

    // A purpose the department is not registered for.
    let status = social.joint_verify(request(code, Some(world.subject()), claims.clone())).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "PURPOSE_NOT_PERMITTED"));
    assert_eq!(metadata(&status, "purpose"), code);

    // Only consumers verify.
    let auditor = gw.issue("discipline_inspection", Role::Auditor).await?;
    let status = VerifyClient::new(gw.channel(Some(&auditor))?)
        .joint_verify(request(PURPOSE, Some(world.subject()), claims.clone()))
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "ROLE_NOT_PERMITTED"));

    // "access_history" is registered for every department but may not be used with this RPC: the
    // ErrorReason for that is PURPOSE_NOT_PERMITTED (common.proto), as GetWorkerView answers it.
    let status =
        social.joint_verify(request("access_history", Some(world.subject()), claims)).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "PURPOSE_NOT_PERMITTED"),
        "access_history: {status:?}"
    );
    assert_eq!(metadata(&status, "purpose"), "access_history");
    gw.stop().await
}

// ---- 4. bad input --------------------------------------------------------------------------------

/// Malformed requests are INVALID_ARGUMENT with a BadRequest naming each bad field by its path in the
/// request, never echoing the value.
async fn malformed_requests_name_the_bad_field_without_echoing_it(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let mut client = client(&gw, SI).await?;
    let subject = Some(world.subject());
    let bad_usci = bad_check(&world.active);
    // Not a citizen ID at all (16 digits). (A number of the right shape with a wrong check character is
    // accepted by identity resolution as a suspect ID, as everywhere else in the gateway.)
    let bad_id = world.worker.citizen_id[..16].to_owned();
    let pension = pb::InsuranceType::Pension;
    let cases: Vec<(&str, pb::JointVerifyRequest, Vec<&str>)> = vec![
        ("no claims", request(PURPOSE, subject.clone(), Vec::new()), vec!["claims"]),
        (
            "33 claims",
            request(PURPOSE, subject.clone(), vec![enterprise_active(&world.active); 33]),
            vec!["claims"],
        ),
        (
            "a claim with nothing set",
            request(PURPOSE, subject.clone(), vec![pb::Claim { claim: None }]),
            vec!["claims[0]"],
        ),
        (
            "employed_by with a bad employer USCI",
            request(PURPOSE, subject.clone(), vec![employed_by(&bad_usci, "2003-01", "2003-03")]),
            vec!["claims[0].employer_usci"],
        ),
        (
            "enterprise_active with a bad USCI, second claim",
            request(
                PURPOSE,
                subject.clone(),
                vec![enterprise_active(&world.active), enterprise_active(&bad_usci)],
            ),
            vec!["claims[1].usci"],
        ),
        (
            "a worker claim without a subject",
            request(PURPOSE, None, vec![contributions(pension, 8, 12, "2004-12", "")]),
            vec!["subject"],
        ),
        (
            "min_months above window_months",
            request(PURPOSE, subject.clone(), vec![contributions(pension, 13, 12, "2004-12", "")]),
            vec!["claims[0].min_months"],
        ),
        (
            "a bad citizen ID in the subject",
            request(
                PURPOSE,
                Some(pb::SubjectQuery { citizen_id: bad_id.clone(), ..Default::default() }),
                vec![identity_matches(&world.worker.name, &world.worker.citizen_id)],
            ),
            vec!["subject.citizen_id"],
        ),
    ];
    for (what, req, expected) in cases {
        let status = match client.joint_verify(req).await {
            Ok(response) => panic!("{what}: expected INVALID_ARGUMENT, got {response:?}"),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(violations(&status), expected, "{what}: {status:?}");
        let text = status_text(&status);
        for value in [bad_usci.as_str(), bad_id.as_str(), &world.worker.citizen_id, &world.worker.name] {
            assert!(!text.contains(value), "{what}: a value echoed in {status:?}");
        }
    }
    gw.stop().await
}

// ---- 5.–7. disclosure, exchange record, receipt --------------------------------------------------

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A request with every claim type, each CONFIRMED or REFUTED: the response carries the verdicts and
/// where they came from, and nothing of the records behind them.
async fn verdicts_disclose_no_record_values(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let mut client = client(&gw, SI).await?;
    let cases = world.every_claim_type();
    let mut types: Vec<&str> = cases.iter().map(|c| claim_type(&c.claim)).collect();
    types.sort();
    let mut all = CLAIM_TYPES.to_vec();
    all.sort();
    assert_eq!(types, all, "the request has every claim type");
    let response = assert_cases(&mut client, PURPOSE, Some(world.subject()), &cases).await?;

    let top = fields_present(&response, "JointVerifyResponse");
    let allowed: BTreeSet<String> = ["worker_ref", "legal_basis", "results"].map(String::from).into();
    assert!(top.is_subset(&allowed), "response fields beyond the verdicts: {top:?}");
    let result_fields: BTreeSet<String> =
        ["claim_type", "verdict", "undetermined_reason", "attested_by"].map(String::from).into();
    let provenance_fields: BTreeSet<String> = ["department", "as_of"].map(String::from).into();
    for r in &response.results {
        let present = fields_present(r, "ClaimResult");
        assert!(present.is_subset(&result_fields), "{}: {present:?}", r.claim_type);
        for p in &r.attested_by {
            let present = fields_present(p, "Provenance");
            assert!(present.is_subset(&provenance_fields), "{}: {present:?}", r.claim_type);
        }
    }

    let request_bytes =
        request(PURPOSE, Some(world.subject()), cases.iter().map(|c| c.claim.clone()).collect())
            .encode_to_vec();
    let bytes = response.encode_to_vec();
    let mut checked = 0;
    for (value, what) in &world.secrets {
        // Months named in the request are the caller's own; the subject's name and ID must not come back
        // even though the caller sent them.
        if what.starts_with("month") && contains(&request_bytes, value) {
            continue;
        }
        assert!(!contains(&bytes, value), "the response discloses a {what}");
        checked += 1;
    }
    assert!(checked > 20, "checked only {checked} values");
    for usci in [&world.both, &world.contributor, &world.deregistered, &world.listed] {
        assert!(!contains(&bytes, usci), "the response echoes a USCI");
    }
    assert!(!contains(&bytes, world.school_enrolled.0), "the response echoes a school code");
    gw.stop().await
}

/// The JointVerify exchange record names the claim types in request order, the legal basis and the
/// worker_ref, discloses no field, and holds no claim value.
async fn the_exchange_record_names_claim_types_never_values(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let mut client = client(&gw, SI).await?;
    let cases = world.every_claim_type();
    let claims: Vec<pb::Claim> = cases.iter().map(|c| c.claim.clone()).collect();
    let request_id = "jv-record-e2e";
    let response = client
        .joint_verify(with_request_id(request(PURPOSE, Some(world.subject()), claims.clone()), request_id))
        .await?
        .into_inner();
    check_shape(&claims, &response);
    let record = record_of(&gw, request_id).await?;
    let exchange = &record.exchange;
    assert_eq!(exchange.method, JOINT_VERIFY);
    assert_eq!(exchange.outcome_code, 0);
    assert_eq!(exchange.caller_dept, SI);
    assert_eq!(exchange.purpose, PURPOSE);
    assert_eq!(exchange.claims_verified, claims.iter().map(claim_type).collect::<Vec<_>>());
    assert!(
        exchange.disclosed_fields.is_empty(),
        "a verdict discloses no field: {:?}",
        exchange.disclosed_fields
    );
    assert_eq!(exchange.legal_basis, Some(LegalBasis::Statute(STATUTE.into())));
    assert!(exchange.worker_ref.starts_with("wr_"));
    assert_eq!(exchange.worker_ref, response.worker_ref);
    let consulted: BTreeSet<&str> = exchange.sources_consulted.iter().map(String::as_str).collect();
    assert!(
        [PS, TAX, SI, EDU, IC].iter().all(|d| consulted.contains(d)),
        "every department was asked: {consulted:?}"
    );

    // No claim value anywhere in the record (hex fields blanked: they are not free text).
    let mut text = exchange.clone();
    text.time = time::OffsetDateTime::UNIX_EPOCH;
    text.latency_us = 0;
    text.cert_serial.clear();
    text.cert_fingerprint.clear();
    text.worker_ref.clear();
    text.trace_id.clear();
    let text = format!("{text:?}");
    let values = [
        world.worker.name.as_str(),
        world.worker.citizen_id.as_str(),
        world.both.as_str(),
        world.contributor.as_str(),
        world.deregistered.as_str(),
        world.listed.as_str(),
        world.school_enrolled.0,
        "2003-07",
        "2003-09",
        "2004-12",
        "2003-06-15",
        "440000",
    ];
    for value in values {
        assert!(!text.contains(value), "a claim value in the exchange record: {text}");
    }
    gw.stop().await
}

/// Checks the receipt's signature offline with ed25519-dalek against the key GetSigningKeys publishes.
fn signature_verifies(keys: &pb::GetSigningKeysResponse, receipt: &pb::SignedReceipt) -> bool {
    let Some(key) = keys.keys.iter().find(|k| k.key_id == receipt.key_id) else {
        panic!("key {} not published: {keys:?}", receipt.key_id);
    };
    let raw: [u8; 32] = key.public_key.as_slice().try_into().expect("raw 32-byte Ed25519 key");
    let key = ed25519_dalek::VerifyingKey::from_bytes(&raw).expect("valid Ed25519 public key");
    let Ok(signature) = ed25519_dalek::Signature::from_slice(&receipt.signature) else { return false };
    key.verify_strict(&receipt.payload, &signature).is_ok()
}

/// A signed receipt verifies offline and with VerifyReceipt (from another department), which returns
/// the same verdicts, the request id as receipt id and the claims as submitted; one flipped payload byte
/// is BAD_SIGNATURE, an unknown key UNKNOWN_KEY.
async fn signed_receipts_verify_and_reveal_tampering(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start(backend, population()).await?;
    let world = craft(&gw, &truth).await?;
    let mut client = client(&gw, SI).await?;
    let cases = world.every_claim_type();
    let claims: Vec<pb::Claim> = cases.iter().map(|c| c.claim.clone()).collect();
    let mut signed = request(PURPOSE, Some(world.subject()), claims.clone());
    signed.signed_receipt = true;
    let request_id = "jv-receipt-e2e";
    let response = client.joint_verify(with_request_id(signed, request_id)).await?.into_inner();
    check_shape(&claims, &response);
    let receipt = response.receipt.clone().expect("signed_receipt = true returns a receipt");
    assert_eq!(receipt.signature.len(), 64, "an Ed25519 signature");
    assert!(!receipt.key_id.is_empty() && receipt.signed_at.is_some());

    let id = gw.issue(EDU, Role::Consumer).await?;
    let keys =
        GatewayClient::new(gw.channel(Some(&id))?).get_signing_keys(pb::GetSigningKeysRequest {}).await?;
    assert!(signature_verifies(&keys.into_inner(), &receipt), "the signature verifies offline");

    // Another department, not the one that asked, checks it.
    let mut other = VerifyClient::new(gw.channel(Some(&id))?);
    let check = |receipt: pb::SignedReceipt| pb::VerifyReceiptRequest { receipt: Some(receipt) };
    let verified = other.verify_receipt(check(receipt.clone())).await?.into_inner();
    assert!(verified.valid, "{verified:?}");
    assert_eq!(verified.reason(), pb::ReceiptInvalidReason::Unspecified);
    let summary = verified.summary.expect("a valid receipt is decoded");
    assert_eq!(summary.receipt_id, request_id, "the receipt id is the exchange's request id");
    assert_eq!(summary.results, response.results, "the same verdicts");
    assert_eq!(summary.claims, claims, "the claims as submitted");
    assert_eq!(summary.worker_ref, response.worker_ref);
    assert_eq!(summary.department, SI);
    assert_eq!(summary.purpose, PURPOSE);
    assert_eq!(summary.legal_basis, response.legal_basis);
    assert_eq!(summary.signed_at, receipt.signed_at);
    let record = record_of(&gw, request_id).await?;
    assert_eq!(record.exchange.request_id, summary.receipt_id);

    // One flipped byte: inside the purpose code, so the payload stays well-formed.
    let mut tampered = receipt.clone();
    let at = tampered
        .payload
        .windows(PURPOSE.len())
        .position(|w| w == PURPOSE.as_bytes())
        .map_or(tampered.payload.len() - 1, |p| p + PURPOSE.len() - 1);
    tampered.payload[at] ^= 0x01;
    let verdict = other.verify_receipt(check(tampered)).await?.into_inner();
    assert!(!verdict.valid, "{verdict:?}");
    assert_eq!(verdict.reason(), pb::ReceiptInvalidReason::BadSignature, "{verdict:?}");
    assert!(verdict.summary.is_none(), "an invalid receipt is not decoded");

    let mut unknown = receipt.clone();
    unknown.key_id = "ed25519:0000000000000000".into();
    let verdict = other.verify_receipt(check(unknown)).await?.into_inner();
    assert_eq!((verdict.valid, verdict.reason()), (false, pb::ReceiptInvalidReason::UnknownKey));

    let status = other.verify_receipt(pb::VerifyReceiptRequest { receipt: None }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violations(&status), ["receipt"]);

    // Without signed_receipt there is none.
    let plain = client.joint_verify(request(PURPOSE, Some(world.subject()), claims)).await?.into_inner();
    assert!(plain.receipt.is_none());
    gw.stop().await
}

backend_suite!(
    identity_and_residence_permit_claims_read_public_security,
    employed_by_reconciles_tax_and_social_insurance_month_by_month,
    contributions_and_worker_arrears_count_paid_months_only,
    employer_level_no_arrears_identifies_no_worker,
    child_enrolled_needs_a_current_enrolment_at_that_school,
    enterprise_claims_read_registration_and_abnormal_list,
    namesakes_leave_worker_claims_subject_ambiguous,
    purpose_rules_refuse_claims_and_requests,
    malformed_requests_name_the_bad_field_without_echoing_it,
    verdicts_disclose_no_record_values,
    the_exchange_record_names_claim_types_never_values,
    signed_receipts_verify_and_reveal_tampering,
);
