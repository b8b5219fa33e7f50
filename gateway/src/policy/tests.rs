use std::collections::BTreeSet;
use std::sync::Arc;

use fedx_proto::v1 as pb;
use proptest::prelude::*;

use super::schema::{self, descriptor_messages, CLAIM_TYPES};
use super::*;
use crate::config::{Config, DepartmentRegistry};

const SHIPPED: &str = include_str!("../../../deploy/purposes.toml");
const COMMON_PROTO: &str = include_str!("../../../proto/fedx/v1/common.proto");

fn registry() -> DepartmentRegistry {
    Config::default().department_registry().expect("default registry is valid")
}

fn shipped() -> PurposeCatalogue {
    PurposeCatalogue::from_toml_validated(SHIPPED, &registry()).expect("shipped catalogue is valid")
}

/// A small valid catalogue to break in the tests: one statutory and one consent purpose. Lines appended
/// to it land in `[purposes.school.grants]`.
const BASE: &str = r#"
[purposes.wage]
name_zh = "欠薪查处"
name_en = "Wage arrears"
legal_basis = "statutory"
statute = "PIPL art. 13(3)"
departments = ["social_insurance"]
claim_types = ["employed_by"]
full_citizen_id = true
retention_days = 365

[purposes.wage.grants]
identity = ["citizen_id", "name"]
employment = ["months"]

[purposes.school]
name_zh = "随迁子女入学"
name_en = "School enrolment"
legal_basis = "consent"
provisions = "PIPL art. 13(1)"
departments = ["education"]
claim_types = ["contributions_at_least"]
retention_days = 365
max_consent_validity_days = 180

[purposes.school.grants]
contributions = ["months_paid"]
"#;

fn problems(text: &str) -> Vec<Violation> {
    match PurposeCatalogue::from_toml_validated(text, &registry()) {
        Ok(_) => Vec::new(),
        Err(PolicyError::Invalid(violations)) => violations,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Asserts the text is refused with a problem at `path` whose text contains `needle`.
#[track_caller]
fn assert_refused(text: &str, path: &str, needle: &str) {
    let found = problems(text);
    assert!(
        found.iter().any(|v| v.path == path && v.problem.contains(needle)),
        "expected a problem at {path} containing {needle:?}, got {found:#?}"
    );
}

fn replaced(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

fn appended(lines: &str) -> String {
    format!("{BASE}{lines}\n")
}

/// A minimal valid statutory purpose with the given code and extra lines in its main table.
fn statutory(code: &str, extra: &str) -> String {
    format!(
        "[purposes.{code}]\nname_zh = \"测试\"\nname_en = \"Test\"\nlegal_basis = \"statutory\"\n\
         statute = \"PIPL art. 13(3)\"\ndepartments = [\"social_insurance\"]\nretention_days = 30\n{extra}\n"
    )
}

// ---- the shipped catalogue ----------------------------------------------------------------------------

#[test]
fn shipped_catalogue_parses_and_validates() {
    let catalogue = shipped();
    assert_eq!(catalogue.version, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(SHIPPED.as_bytes())));
    let codes: Vec<&str> = catalogue.purposes.keys().map(String::as_str).collect();
    assert_eq!(
        codes,
        [
            "access_history",
            "child_school_enrolment",
            "employer_compliance",
            "points_based_services",
            "residence_permit_application",
            "social_insurance_enrolment",
            "wage_arrears_investigation",
        ]
    );
    // Also against the documented example configuration's registry.
    let example =
        Config::from_toml(include_str!("../../../deploy/fedx.example.toml")).expect("example parses");
    let example_registry = example.department_registry().expect("example registry");
    catalogue.validate(&example_registry).expect("valid against the example registry");
}

/// common.proto documents the purposes the catalogue ships with, and whether each rests on consent.
#[test]
fn shipped_purposes_are_those_the_contract_documents() {
    let catalogue = shipped();
    let start = COMMON_PROTO.find("The catalogue ships with:").expect("common.proto lists the purposes");
    let mut documented = BTreeSet::new();
    for line in COMMON_PROTO[start..].lines().skip(1).take_while(|l| l.trim() != "//") {
        let Some(code) = line.split('"').nth(1).filter(|_| line.contains("- \"")) else { continue };
        documented.insert(code.to_owned());
        let purpose = catalogue.purpose(code).unwrap_or_else(|| panic!("{code} documented but not shipped"));
        if line.contains("Consent") {
            assert!(purpose.is_consent(), "{code} documented as consent");
        }
        if line.contains("Statutory") {
            assert!(!purpose.is_consent(), "{code} documented as statutory");
        }
    }
    let shipped: BTreeSet<String> = catalogue.purposes.keys().cloned().collect();
    assert_eq!(documented, shipped);
}

#[test]
fn shipped_grants_are_minimal_where_the_domain_says_so() {
    let catalogue = shipped();
    let get = |code: &str| catalogue.purpose(code).expect(code);

    let wage = get("wage_arrears_investigation");
    assert!(wage.allows_department("social_insurance") && !wage.allows_department("tax"));
    assert_eq!(wage.statute().map(|s| s.contains("13(3)")), Some(true));
    assert!(wage.full_citizen_id);
    assert!(wage.granted_fields(FieldCategory::Identity).contains("identity.citizen_id"));
    assert!(wage.allows_claim("employed_by") && wage.allows_claim("enterprise_active"));
    assert!(!wage.grants_category(FieldCategory::Enrolment));

    // Employer compliance: enterprise-level only.
    let compliance = get("employer_compliance");
    assert!(!compliance.grants_worker_data());
    let departments: Vec<&str> = compliance.departments.iter().map(String::as_str).collect();
    assert_eq!(departments, ["industry_commerce", "social_insurance", "tax"]);
    for claim in &compliance.claim_types {
        let scope = schema::claim_spec(claim).map(|(_, scope)| scope);
        assert!(matches!(scope, Some(ClaimScope::WorkerOrEnterprise | ClaimScope::Enterprise)), "{claim}");
    }

    // Access history: every consumer department, nothing from the sources.
    let history = get("access_history");
    assert!(!history.grants_worker_data() && history.claim_types.is_empty());
    for (dept, _) in registry().departments() {
        let consumer = registry().department(dept) == DepartmentStatus::Consumer;
        assert_eq!(history.allows_department(dept), consumer, "{dept}");
    }

    // Consent purposes: no identity, bounded consents, no full citizen ID.
    for purpose in catalogue.purposes.values().filter(|p| p.is_consent()) {
        assert!(!purpose.grants_category(FieldCategory::Identity), "{}", purpose.code);
        assert!(!purpose.full_citizen_id);
        assert!(purpose.max_consent_validity_days.is_some_and(|d| d <= 365), "{}", purpose.code);
    }
    // Nobody gets arrears details, children's data or the worker's businesses.
    for purpose in catalogue.purposes.values() {
        for category in [FieldCategory::Arrears, FieldCategory::Enrolment, FieldCategory::Enterprise] {
            assert!(!purpose.grants_category(category), "{} grants {category}", purpose.code);
        }
    }
}

#[test]
fn to_proto_lists_purposes_by_code_with_their_basis() {
    let catalogue = shipped();
    let listed = catalogue.to_proto();
    let codes: Vec<&str> = listed.iter().map(|p| p.code.as_str()).collect();
    let mut sorted_codes = codes.clone();
    sorted_codes.sort_unstable();
    assert_eq!(codes, sorted_codes);

    let wage = listed.iter().find(|p| p.code == "wage_arrears_investigation").expect("wage");
    assert_eq!(wage.description, "欠薪查处");
    assert_eq!(wage.legal_basis_kind, pb::LegalBasisKind::StatutoryDuty as i32);
    assert!(wage.statute.contains("保障农民工工资支付条例"));
    assert_eq!(
        wage.field_categories,
        [pb::FieldCategory::Identity as i32, pb::FieldCategory::Employment as i32]
    );
    assert!(wage.full_citizen_id);
    assert_eq!(wage.max_consent_validity_days, 0);

    let permit = listed.iter().find(|p| p.code == "residence_permit_application").expect("permit");
    assert_eq!(permit.legal_basis_kind, pb::LegalBasisKind::Consent as i32);
    assert_eq!(permit.statute, "");
    assert_eq!(permit.departments, ["public_security"]);
    assert_eq!(permit.claim_types, ["contributions_at_least", "employed_by"]);
    assert_eq!(permit.max_consent_validity_days, 90);
}

#[test]
fn purposes_for_department() {
    let catalogue = shipped();
    let education: Vec<&str> =
        catalogue.purposes_for_department("education").map(|p| p.code.as_str()).collect();
    assert_eq!(education, ["access_history", "child_school_enrolment", "points_based_services"]);
    assert_eq!(catalogue.purposes_for_department("gateway_ops").count(), 0);
}

// ---- the contract vocabulary --------------------------------------------------------------------------

#[test]
fn categories_match_the_contract_enum() {
    let from_descriptor: Vec<String> = prost::Message::decode(pb::FILE_DESCRIPTOR_SET)
        .map(|set: prost_types::FileDescriptorSet| set.file)
        .expect("descriptor set decodes")
        .iter()
        .filter(|f| f.package() == "fedx.v1")
        .flat_map(|f| f.enum_type.iter())
        .filter(|e| e.name() == "FieldCategory")
        .flat_map(|e| e.value.iter())
        .filter(|v| v.number() != 0)
        .map(|v| v.name().trim_start_matches("FIELD_CATEGORY_").to_lowercase())
        .collect();
    let ours: Vec<String> = FieldCategory::ALL.iter().map(|c| c.code().to_owned()).collect();
    assert_eq!(ours, from_descriptor);
    for category in FieldCategory::ALL {
        assert_eq!(FieldCategory::from_proto(category.to_proto()), Some(category));
        assert_eq!(FieldCategory::from_code(category.code()), Some(category));
        assert!(!category.fields().is_empty(), "{category} has fields");
    }
    assert_eq!(FieldCategory::from_proto(pb::FieldCategory::Unspecified), None);
    assert_eq!(FieldCategory::Arrears.source_category(), fedx_adapters::FactCategory::Contributions);
}

/// Each category's view message is the type of its section of GetWorkerViewResponse.
#[test]
fn category_messages_are_the_view_sections() {
    let messages = descriptor_messages();
    let response = messages.get("GetWorkerViewResponse").expect("view response");
    for category in FieldCategory::ALL {
        let section = category.view_section();
        let field = response.field.iter().find(|f| f.name() == section).expect(section);
        assert_eq!(field.type_name(), format!(".fedx.v1.{}", category.view_message()), "{section}");
    }
    let identity: Vec<&str> = FieldCategory::Identity.fields().iter().map(String::as_str).collect();
    assert_eq!(
        identity,
        [
            "identity.birth_date",
            "identity.citizen_id",
            "identity.hukou_region_code",
            "identity.name",
            "identity.sex"
        ]
    );
    assert!(!FieldCategory::Employment.fields().contains("employment.provenance"));
}

#[test]
fn claim_table_covers_exactly_the_contract_claims() {
    let ours: BTreeSet<String> = CLAIM_TYPES.iter().map(|(name, _, _)| (*name).to_owned()).collect();
    assert_eq!(&ours, schema::contract_claim_types());
    assert_eq!(ours.len(), 8);
}

// ---- validation: one crafted bad entry per rule ---------------------------------------------------------

#[test]
fn base_catalogue_is_valid() {
    assert_eq!(problems(BASE), []);
}

#[test]
fn unknown_category_is_refused() {
    assert_refused(
        &appended(r#"salary = ["monthly"]"#),
        "purposes.school.grants.salary",
        "unknown field category",
    );
}

#[test]
fn unknown_field_is_refused() {
    let text = appended(r#"residence_permit = ["region_code", "address"]"#);
    assert_refused(&text, "purposes.school.grants.residence_permit", "unknown field 'address'");
    // A full name where a short one is expected is unknown too, and named as written.
    let text = appended(r#"residence_permit = ["residence_permit.status"]"#);
    assert_refused(
        &text,
        "purposes.school.grants.residence_permit",
        "unknown field 'residence_permit.status'",
    );
}

#[test]
fn provenance_and_empty_grants_are_refused() {
    assert_refused(
        &appended(r#"employment = ["provenance"]"#),
        "purposes.school.grants.employment",
        "accompanies",
    );
    assert_refused(&appended("employment = []"), "purposes.school.grants.employment", "grants no field");
    assert_refused(
        &appended(r#"employment = ["months", "months"]"#),
        "purposes.school.grants.employment",
        "twice",
    );
}

#[test]
fn unknown_claim_type_is_refused() {
    let text = replaced(
        r#"claim_types = ["contributions_at_least"]"#,
        r#"claim_types = ["contributions_at_least", "owns_house"]"#,
    );
    assert_refused(&text, "purposes.school.claim_types", "unknown claim type 'owns_house'");
}

#[test]
fn worker_claim_without_its_category_is_refused() {
    let text = replaced(r#"claim_types = ["contributions_at_least"]"#, r#"claim_types = ["employed_by"]"#);
    assert_refused(
        &text,
        "purposes.school.claim_types",
        "employed_by' is about the worker's employment data",
    );
    // Enterprise-level claims need no worker category.
    let text =
        replaced(r#"claim_types = ["employed_by"]"#, r#"claim_types = ["employed_by", "enterprise_active"]"#);
    assert_eq!(problems(&text), []);
}

#[test]
fn unknown_and_non_consumer_departments_are_refused() {
    let text = replaced(r#"departments = ["education"]"#, r#"departments = ["education", "housing"]"#);
    assert_refused(&text, "purposes.school.departments", "unknown department 'housing'");
    let text = replaced(r#"departments = ["education"]"#, r#"departments = ["discipline_inspection"]"#);
    assert_refused(&text, "purposes.school.departments", "consumer role");
    let text = replaced(r#"departments = ["education"]"#, "departments = []");
    assert_refused(&text, "purposes.school.departments", "nobody could use it");
    // A plain set of codes works as the registry too.
    let codes: BTreeSet<String> = ["social_insurance".to_owned()].into();
    let catalogue = PurposeCatalogue::from_toml(BASE).expect("parses");
    let found = catalogue.validate(&codes).expect_err("education is not in the set");
    assert_eq!(
        found,
        [Violation::new(
            "purposes.school.departments",
            "unknown department 'education' (not in the department registry)"
        )]
    );
    let codes: &[&str] = &["social_insurance", "education"];
    assert_eq!(catalogue.validate(codes), Ok(()));
}

#[test]
fn consent_purpose_needs_a_maximum_validity() {
    let text = replaced("max_consent_validity_days = 180\n", "");
    assert_refused(&text, "purposes.school.max_consent_validity_days", "longest validity");
    let text = replaced("max_consent_validity_days = 180", "max_consent_validity_days = 0");
    assert_refused(&text, "purposes.school.max_consent_validity_days", "at least 1 day");
    let text = replaced("max_consent_validity_days = 180", "max_consent_validity_days = 4000");
    assert_refused(&text, "purposes.school.max_consent_validity_days", "too long");
}

#[test]
fn statutory_purpose_needs_a_statute_and_takes_no_consent_validity() {
    let text = replaced("statute = \"PIPL art. 13(3)\"\n", "");
    assert_refused(&text, "purposes.wage.statute", "must cite the statutory duty");
    let text = replaced("statute = \"PIPL art. 13(3)\"", "statute = \"  \"");
    assert_refused(&text, "purposes.wage.statute", "must cite the statutory duty");
    let text =
        replaced("full_citizen_id = true\n", "full_citizen_id = true\nmax_consent_validity_days = 30\n");
    assert_refused(&text, "purposes.wage.max_consent_validity_days", "only consent purposes");
    let text = replaced("full_citizen_id = true\n", "full_citizen_id = true\nprovisions = \"x\"\n");
    assert_refused(&text, "purposes.wage.provisions", "`statute`, not `provisions`");
}

#[test]
fn consent_purpose_takes_no_statute_and_needs_provisions_and_grants() {
    let text =
        replaced("provisions = \"PIPL art. 13(1)\"", "provisions = \"PIPL art. 13(1)\"\nstatute = \"x\"");
    assert_refused(&text, "purposes.school.statute", "rests on consent");
    let text = replaced("provisions = \"PIPL art. 13(1)\"\n", "");
    assert_refused(&text, "purposes.school.provisions", "must cite the provisions");
    let text = replaced("[purposes.school.grants]\ncontributions = [\"months_paid\"]\n", "");
    let text = text.replace(r#"claim_types = ["contributions_at_least"]"#, "");
    assert_refused(&text, "purposes.school.grants", "at least one category");
}

#[test]
fn unknown_legal_basis_is_refused() {
    let text = replaced("legal_basis = \"statutory\"", "legal_basis = \"contract\"");
    assert_refused(&text, "purposes.wage.legal_basis", "unknown legal basis 'contract'");
    let text = replaced("legal_basis = \"statutory\"\n", "");
    assert_refused(&text, "purposes.wage.legal_basis", "required");
}

#[test]
fn full_citizen_id_needs_the_citizen_id_granted() {
    let text = replaced(
        "max_consent_validity_days = 180",
        "max_consent_validity_days = 180\nfull_citizen_id = true",
    );
    assert_refused(&text, "purposes.school.full_citizen_id", "identity.citizen_id is granted");
    let text = replaced(r#"identity = ["citizen_id", "name"]"#, r#"identity = ["name"]"#);
    assert_refused(&text, "purposes.wage.full_citizen_id", "identity.citizen_id is granted");
}

#[test]
fn bad_codes_are_refused() {
    for (code, path) in [
        ("School-Enrolment", "purposes.School-Enrolment"),
        ("1st_purpose", "purposes.1st_purpose"),
        ("\"with space\"", "purposes.\"with space\""),
        ("\"学校\"", "purposes.\"学校\""),
        ("\"a.b\"", "purposes.\"a.b\""),
    ] {
        assert_refused(&statutory(code, ""), path, "lower-case letters, digits and '_'");
    }
    let long = "a".repeat(65);
    assert_refused(&statutory(&long, ""), &format!("purposes.{long}"), "1–64 characters");
    assert_eq!(problems(&statutory(&"a".repeat(64), "")), []);
    assert_eq!(problems(&statutory("p2_x", "")), []);
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_per_purpose() {
    let text = replaced(
        "retention_days = 365\n\n[purposes.wage.grants]",
        "retention_days = 365\ngrnats = 1\n\n[purposes.wage.grants]",
    );
    assert_refused(&text, "purposes.wage.grnats", "unknown field `grnats`, expected one of `name_zh`");
    // The rest of the purpose is still checked.
    let text = text.replace(r#"["social_insurance"]"#, r#"["housing"]"#);
    assert_refused(&text, "purposes.wage.grnats", "unknown field");
    assert_refused(&text, "purposes.wage.departments", "unknown department 'housing'");
    let text = replaced(r#"departments = ["education"]"#, r#"departments = "education""#);
    assert_refused(&text, "purposes.school.departments", "invalid type");
    assert_refused(&appended("employment = \"months\""), "purposes.school.grants", "invalid type");
    assert_refused("[purposes]\np = 3\n", "purposes.p", "must be a table");
    let text = replaced("retention_days = 365\n\n[purposes.wage.grants]", "\n[purposes.wage.grants]");
    assert_refused(&text, "purposes.wage.retention_days", "required");
    let text = replaced(
        "retention_days = 365\n\n[purposes.wage.grants]",
        "retention_days = 4000\n[purposes.wage.grants]",
    );
    assert_refused(&text, "purposes.wage.retention_days", "too long");
    assert_refused(&format!("version = 3\n{BASE}"), "version", "unknown top-level key");
    assert_eq!(
        problems(""),
        [Violation::new("purposes", "no [purposes.<code>] table: the catalogue is empty")]
    );
    // A purpose left out for a problem of form does not make the catalogue "empty" as well.
    let only = statutory("p", "").replace("legal_basis = \"statutory\"", "legal_basis = \"x\"");
    let found = problems(&only);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "purposes.p.legal_basis");
    assert_refused("purposes = 3", "purposes", "must be a table");
}

#[test]
fn syntax_errors_name_the_line() {
    let text = format!("{BASE}\n[purposes.school\n");
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "(file)");
    assert!(found[0].problem.contains("line 29"), "{}", found[0].problem);
}

#[test]
fn masking_rules_are_checked() {
    let mask = |rule: &str| format!("{BASE}\n[purposes.wage.masking]\n{rule}\n");
    assert_eq!(problems(&mask(r#""identity.name" = "surname""#)), []);
    assert_eq!(problems(&mask(r#""identity.name" = { keep_first = 1 }"#)), []);
    assert_refused(
        &mask(r#""identity.name" = "initials""#),
        r#"purposes.wage.masking."identity.name""#,
        "unknown masking rule",
    );
    assert_refused(
        &mask(r#""identity.name" = { keep = 1 }"#),
        r#"purposes.wage.masking."identity.name""#,
        "unknown key 'keep'",
    );
    assert_refused(
        &mask(r#""identity.name" = { keep_first = 300 }"#),
        r#"purposes.wage.masking."identity.name""#,
        "0 to 255",
    );
    assert_refused(
        &mask(r#""identity.name" = 3"#),
        r#"purposes.wage.masking."identity.name""#,
        "string or a table",
    );
    assert_refused(
        &mask(r#""identity.sex" = "clear""#),
        r#"purposes.wage.masking."identity.sex""#,
        "does not grant",
    );
    assert_refused(
        &mask(r#""identity.shoe_size" = "clear""#),
        r#"purposes.wage.masking."identity.shoe_size""#,
        "unknown field",
    );
    assert_refused(
        &mask(r#""identity.citizen_id" = "citizen_id""#),
        r#"purposes.wage.masking."identity.citizen_id""#,
        "conflicts with full_citizen_id",
    );

    // Without full_citizen_id the citizen ID may be masked more, never less.
    let partial = |rule: &str| {
        let text = replaced("full_citizen_id = true\n", "");
        format!("{text}\n[purposes.wage.masking]\n{rule}\n")
    };
    assert_eq!(problems(&partial(r#""identity.citizen_id" = { keep_first = 2, keep_last = 4 }"#)), []);
    assert_refused(
        &partial(r#""identity.citizen_id" = "clear""#),
        r#"purposes.wage.masking."identity.citizen_id""#,
        "full_citizen_id = true",
    );
    assert_refused(
        &partial(r#""identity.citizen_id" = { keep_first = 6, keep_last = 4 }"#),
        r#"purposes.wage.masking."identity.citizen_id""#,
        "more of the citizen ID",
    );

    // Children's data: the floors can only be raised.
    let child = |rule: &str| {
        statutory("kids", "[purposes.kids.grants]\nenrolment = [\"child_citizen_id\", \"child_name\"]")
            + &format!("[purposes.kids.masking]\n{rule}\n")
    };
    assert_eq!(problems(&child(r#""enrolment.child_name" = { keep_first = 0 }"#)), []);
    assert_refused(
        &child(r#""enrolment.child_citizen_id" = "clear""#),
        r#"purposes.kids.masking."enrolment.child_citizen_id""#,
        "mandatory 'citizen_id'",
    );
    assert_refused(
        &child(r#""enrolment.child_citizen_id" = { keep_first = 6 }"#),
        r#"purposes.kids.masking."enrolment.child_citizen_id""#,
        "weaker",
    );
    assert_refused(
        &child(r#""enrolment.child_name" = "clear""#),
        r#"purposes.kids.masking."enrolment.child_name""#,
        "mandatory 'surname'",
    );
    assert_refused(
        &child(r#""enrolment.child_name" = { keep_first = 2 }"#),
        r#"purposes.kids.masking."enrolment.child_name""#,
        "weaker",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = BASE
        .replacen(r#"departments = ["social_insurance"]"#, r#"departments = ["housing"]"#, 1)
        .replacen("statute = \"PIPL art. 13(3)\"\n", "", 1)
        .replacen("max_consent_validity_days = 180\n", "", 1)
        + "salary = [\"monthly\"]\nresidence_permit = [\"address\"]\n";
    let paths: BTreeSet<String> = problems(&text).into_iter().map(|v| v.path).collect();
    let expected: BTreeSet<String> = [
        "purposes.wage.departments",
        "purposes.wage.statute",
        "purposes.school.max_consent_validity_days",
        "purposes.school.grants.salary",
        "purposes.school.grants.residence_permit",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(paths, expected);
    // In path order, and the error summarises them.
    let Err(err) = PurposeCatalogue::from_toml_validated(&text, &registry()) else { panic!("invalid") };
    let listed: Vec<&str> = err.violations().iter().map(|v| v.path.as_str()).collect();
    let mut sorted_paths = listed.clone();
    sorted_paths.sort_unstable();
    assert_eq!(listed, sorted_paths);
    assert!(err.to_string().contains("5 problem(s)"), "{err}");
}

#[test]
fn validate_catches_what_code_builds_wrongly() {
    let mut catalogue = PurposeCatalogue::from_toml(BASE).expect("parses");
    let Some(school) = catalogue.purposes.get_mut("school") else { panic!("school") };
    school.code = "other".into();
    school.grants.insert(FieldCategory::Enterprise, BTreeSet::from(["usci".to_owned()]));
    let found = catalogue.validate(&registry()).expect_err("invalid");
    assert!(found.iter().any(|v| v.path == "purposes.school" && v.problem.contains("differs from its key")));
    // A field name without its category prefix is not a field of the category.
    assert!(found
        .iter()
        .any(|v| v.path == "purposes.school.grants.enterprise" && v.problem.contains("'usci'")));
}

// ---- reload ---------------------------------------------------------------------------------------------

#[test]
fn reload_keeps_the_old_catalogue_on_a_bad_file_and_swaps_on_a_good_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("purposes.toml");
    std::fs::write(&path, BASE).expect("write");
    let handle = PolicyHandle::open(CatalogueSource::File(path.clone()), &registry()).expect("loads");
    let v1 = handle.version();
    let before = handle.current();

    // Invalid: an unknown department. Nothing changes.
    std::fs::write(&path, BASE.replace(r#"["education"]"#, r#"["housing"]"#)).expect("write");
    let err = handle.reload(&registry()).expect_err("refused");
    assert_eq!(err.violations()[0].path, "purposes.school.departments");
    assert_eq!(handle.version(), v1);
    assert!(Arc::ptr_eq(&before, &handle.current()));

    // Unreadable: nothing changes either.
    let moved = dir.path().join("moved.toml");
    std::fs::rename(&path, &moved).expect("rename");
    let err = handle.reload(&registry()).expect_err("missing");
    assert!(matches!(err, PolicyError::Read { .. }), "{err}");
    assert_eq!(handle.version(), v1);

    // Not UTF-8.
    std::fs::write(&path, b"\xff\xfe").expect("write");
    let err = handle.reload(&registry()).expect_err("binary");
    assert_eq!(err.violations()[0].path, "(file)");

    // Valid: validate-only reports without swapping, reload swaps.
    std::fs::write(&path, SHIPPED).expect("write");
    let checked = handle.check(&registry()).expect("valid");
    assert_eq!(handle.version(), v1);
    assert_eq!(checked.previous_version, v1);
    let outcome = handle.reload(&registry()).expect("valid");
    assert_eq!(
        outcome,
        ReloadOutcome { previous_version: v1.clone(), version: checked.version, purpose_count: 7 }
    );
    assert_eq!(handle.version(), outcome.version);
    assert!(handle.current().purpose("wage_arrears_investigation").is_some());
    // The snapshot taken before still answers with the old catalogue.
    assert!(before.purpose("wage").is_some() && before.version == v1);
    assert!(format!("{handle:?}").contains(&outcome.version));
}

// ---- masking --------------------------------------------------------------------------------------------

#[test]
fn citizen_ids_keep_first_four_and_last_four() {
    assert_eq!(MaskRule::CitizenId.apply("11010519491231002X"), "1101**********002X");
    assert_eq!(MaskRule::CitizenId.apply("532301199001011234"), "5323**********1234");
    // Legacy 15 digits: same rule, fewer asterisks.
    assert_eq!(MaskRule::CitizenId.apply("110105491231002"), "1101*******1002");
    // Too short to keep anything without showing all: everything is hidden.
    assert_eq!(MaskRule::CitizenId.apply("12345678"), "********");
    assert_eq!(MaskRule::CitizenId.apply("123456789"), "1234*6789");
    assert_eq!(MaskRule::CitizenId.apply(""), "");
}

#[test]
fn phones_keep_first_three_and_last_four() {
    assert_eq!(MaskRule::Phone.apply("13812345678"), "138****5678");
    assert_eq!(MaskRule::Phone.apply("+8613812345678"), "+86*******5678");
    assert_eq!(MaskRule::Phone.apply("1234567"), "*******");
}

#[test]
fn names_keep_the_surname() {
    for (name, masked) in [
        ("王伟", "王*"),
        ("王小明", "王**"),
        ("欧阳娜娜", "欧阳**"),
        ("欧阳修", "欧阳*"),
        ("诸葛亮", "诸葛*"),
        ("歐陽娜娜", "歐陽**"),
        // Two characters that could be a compound surname are a surname plus a given name.
        ("欧阳", "欧*"),
        ("王", "*"),
        (" 李娜 ", "李*"),
        // Minority names: first letter and the separators stay, whatever dot the source used.
        ("阿依古丽·买买提", "阿***·***"),
        ("阿依古丽•买买提", "阿***•***"),
        ("阿依古丽・买买提", "阿***・***"),
        ("迪丽热巴·迪力木拉提", "迪***·*****"),
        ("阿·", "*·"),
        ("Ma Li", "M* **"),
    ] {
        assert_eq!(MaskRule::Surname.apply(name), masked, "{name}");
    }
}

#[test]
fn keep_rules_and_strictness() {
    assert_eq!(MaskRule::Keep { first: 1, last: 0 }.apply("张三丰"), "张**");
    assert_eq!(MaskRule::Keep { first: 0, last: 0 }.apply("张三丰"), "***");
    assert_eq!(MaskRule::Clear.apply("张三丰"), "张三丰");
    assert!(MaskRule::Keep { first: 2, last: 4 }.no_weaker_than(MaskRule::CitizenId));
    assert!(!MaskRule::Keep { first: 6, last: 4 }.no_weaker_than(MaskRule::CitizenId));
    assert!(MaskRule::Phone.no_weaker_than(MaskRule::CitizenId));
    assert!(!MaskRule::CitizenId.no_weaker_than(MaskRule::Phone));
    assert!(MaskRule::Surname.no_weaker_than(MaskRule::Surname));
    assert!(MaskRule::Keep { first: 1, last: 0 }.no_weaker_than(MaskRule::Surname));
    assert!(!MaskRule::Keep { first: 1, last: 1 }.no_weaker_than(MaskRule::Surname));
    assert!(!MaskRule::Clear.no_weaker_than(MaskRule::Surname));
    assert!(MaskRule::Clear.no_weaker_than(MaskRule::Clear));
    assert_eq!(MaskRule::Keep { first: 1, last: 2 }.to_string(), "{ keep_first = 1, keep_last = 2 }");
}

#[test]
fn purposes_mask_per_their_rules() {
    let catalogue = shipped();
    let wage = catalogue.purpose("wage_arrears_investigation").expect("wage");
    assert_eq!(wage.mask("identity.citizen_id", "11010519491231002X"), "11010519491231002X");
    assert_eq!(wage.mask("identity.name", "阿依古丽·买买提"), "阿依古丽·买买提");
    assert_eq!(wage.mask("employment.employer_name", "某某建筑公司"), "某某建筑公司");
    // Not granted: hidden whatever it is.
    assert_eq!(wage.mask("identity.birth_date", "1949-12-31"), "**********");
    assert_eq!(wage.mask("contributions.months_paid", "12"), "**");

    let text = statutory(
        "kids",
        "[purposes.kids.grants]\nidentity = [\"citizen_id\", \"name\"]\n\
         enrolment = [\"child_citizen_id\", \"child_name\", \"school_name\"]\n\
         [purposes.kids.masking]\n\"identity.name\" = \"surname\"",
    );
    let catalogue = PurposeCatalogue::from_toml_validated(&text, &registry()).expect("valid");
    let kids = catalogue.purpose("kids").expect("kids");
    assert_eq!(kids.mask("identity.citizen_id", "11010519491231002X"), "1101**********002X");
    assert_eq!(kids.mask("identity.name", "欧阳娜娜"), "欧阳**");
    assert_eq!(kids.mask("enrolment.child_citizen_id", "532301201501011234"), "5323**********1234");
    assert_eq!(kids.mask("enrolment.child_name", "王小明"), "王**");
    assert_eq!(kids.mask("enrolment.school_name", "楚雄市第一小学"), "楚雄市第一小学");
}

fn purpose_with(full_citizen_id: bool) -> Purpose {
    let extra = format!(
        "full_citizen_id = {full_citizen_id}\n[purposes.p.grants]\n\
         identity = [\"citizen_id\"]\nenrolment = [\"child_citizen_id\"]"
    );
    let catalogue =
        PurposeCatalogue::from_toml_validated(&statutory("p", &extra), &registry()).expect("valid");
    catalogue.purposes.into_values().next().expect("one purpose")
}

proptest! {
    /// Whatever an ID-like value looks like (any length, half- or full-width digits, X or x), a purpose
    /// without full_citizen_id never shows it whole, and shows at most 8 of its characters.
    #[test]
    fn masked_ids_never_show_the_whole_number(id in "[0-9０-９Xx]{1,24}") {
        let purpose = purpose_with(false);
        for field in ["identity.citizen_id", "enrolment.child_citizen_id"] {
            let masked = purpose.mask(field, &id);
            prop_assert_ne!(&masked, &id);
            prop_assert_eq!(masked.chars().count(), id.chars().count());
            prop_assert!(masked.chars().filter(|c| *c != '*').count() <= 8);
        }
        // full_citizen_id lifts the mask of the worker's own number only, never a child's.
        let full = purpose_with(true);
        prop_assert_eq!(full.mask("identity.citizen_id", &id), id.clone());
        prop_assert_ne!(full.mask("enrolment.child_citizen_id", &id), id);
    }

    /// Every rule but Clear changes any non-empty value that is not already asterisks.
    #[test]
    fn masking_rules_never_return_the_input(
        value in "[0-9A-Za-z一-龥]{1,30}",
        first in 0u8..12,
        last in 0u8..12,
    ) {
        let rules = [MaskRule::CitizenId, MaskRule::Phone, MaskRule::Surname, MaskRule::Keep { first, last }];
        for rule in rules {
            prop_assert_ne!(rule.apply(&value), value.clone(), "{}", rule);
        }
    }

    /// Names, including minority names with separators, never come back whole.
    #[test]
    fn masked_names_never_show_the_whole_name(name in "[一-龥]{1,4}([·•・][一-龥]{1,6})?") {
        prop_assert_ne!(mask_name(&name), name);
    }
}
