//! Reading and validating the catalogue file.
//!
//! Two passes, both collecting every problem rather than stopping at the first:
//! 1. building: TOML syntax, unknown keys and wrong value types (serde, per purpose), unknown category
//!    names, unknown legal-basis kinds and masking rules — what cannot be represented in the typed model;
//! 2. [`PurposeCatalogue::validate`]: the rules on the typed model (codes, field and claim names against the
//!    contract, departments against the registry, legal-basis requirements, masking floors).
//!
//! [`PurposeCatalogue::load_validated`] runs both and reports the union, sorted by entry path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::schema::{self, ClaimScope, FieldCategory, IMPLICIT_FIELDS};
use super::{
    Basis, DepartmentStatus, KnownDepartments, MaskRule, PolicyError, Purpose, PurposeCatalogue, Violation,
    CITIZEN_ID_FIELD, MASK_FLOORS,
};

/// Entry path of problems about the file as a whole (syntax, encoding).
pub const FILE_ENTRY: &str = "(file)";
/// Purpose codes: as department codes, but starting with a letter.
const MAX_CODE_LEN: usize = 64;
/// Longest consent validity the catalogue may allow: five years.
const MAX_CONSENT_VALIDITY_DAYS: u32 = 5 * 365;
/// Longest retention hint: ten years.
const MAX_RETENTION_DAYS: u32 = 10 * 365;

/// One `[purposes.<code>]` table as written. Values whose problems need a precise path (categories,
/// legal basis, masking rules, required numbers) are read loosely here and checked in [`build_purpose`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    #[serde(default)]
    name_zh: String,
    #[serde(default)]
    name_en: String,
    #[serde(default)]
    legal_basis: String,
    statute: Option<String>,
    provisions: Option<String>,
    #[serde(default)]
    departments: Vec<String>,
    #[serde(default)]
    grants: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    claim_types: Vec<String>,
    #[serde(default)]
    full_citizen_id: bool,
    #[serde(default)]
    masking: BTreeMap<String, toml::Value>,
    retention_days: Option<u32>,
    max_consent_validity_days: Option<u32>,
}

impl PurposeCatalogue {
    /// Parses a catalogue, reporting every problem of form (syntax, unknown keys, unknown categories…).
    /// The rules that need the department registry are checked by [`PurposeCatalogue::validate`].
    pub fn from_toml(text: &str) -> Result<PurposeCatalogue, PolicyError> {
        let (catalogue, problems) = build(text);
        if problems.is_empty() {
            Ok(catalogue)
        } else {
            Err(PolicyError::Invalid(sorted(problems)))
        }
    }

    /// Reads and parses a catalogue file (see [`PurposeCatalogue::from_toml`]).
    pub fn load(path: &Path) -> Result<PurposeCatalogue, PolicyError> {
        PurposeCatalogue::from_toml(&read(path)?)
    }

    /// Parses and validates, reporting the problems of both passes together.
    pub fn from_toml_validated<D: KnownDepartments + ?Sized>(
        text: &str,
        departments: &D,
    ) -> Result<PurposeCatalogue, PolicyError> {
        let (catalogue, mut problems) = build(text);
        // A file that is not TOML has no entries to check further.
        let unreadable = problems.iter().any(|p| p.path == FILE_ENTRY);
        // Purposes left out of the build for problems of form are already reported: the catalogue
        // looking empty because of them is not a further problem.
        let entries_reported =
            problems.iter().any(|p| p.path == "purposes" || p.path.starts_with("purposes."));
        if !unreadable {
            if let Err(more) = catalogue.validate(departments) {
                problems.extend(more.into_iter().filter(|p| !(entries_reported && p.path == "purposes")));
            }
        }
        if problems.is_empty() {
            Ok(catalogue)
        } else {
            Err(PolicyError::Invalid(sorted(problems)))
        }
    }

    /// Reads, parses and validates a catalogue file: what start-up and ReloadPolicy use.
    pub fn load_validated<D: KnownDepartments + ?Sized>(
        path: &Path,
        departments: &D,
    ) -> Result<PurposeCatalogue, PolicyError> {
        PurposeCatalogue::from_toml_validated(&read(path)?, departments)
    }

    /// Checks every rule of the catalogue and reports all problems, in path order.
    pub fn validate<D: KnownDepartments + ?Sized>(&self, departments: &D) -> Result<(), Vec<Violation>> {
        let mut problems = Vec::new();
        if self.purposes.is_empty() {
            problems.push(Violation::new("purposes", "the catalogue defines no purposes"));
        }
        if self.version.len() != 64 || !self.version.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            problems.push(Violation::new("version", "must be the lower-case hex SHA-256 of the file"));
        }
        for (code, purpose) in &self.purposes {
            validate_purpose(code, purpose, departments, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(sorted(problems))
        }
    }
}

fn read(path: &Path) -> Result<String, PolicyError> {
    let bytes = std::fs::read(path).map_err(|source| PolicyError::Read { path: path.to_owned(), source })?;
    String::from_utf8(bytes).map_err(|e| {
        PolicyError::Invalid(vec![Violation::new(
            FILE_ENTRY,
            format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
        )])
    })
}

fn sorted(mut problems: Vec<Violation>) -> Vec<Violation> {
    problems.sort();
    problems.dedup();
    problems
}

/// First pass: everything needed to build the typed catalogue. Purposes whose legal basis cannot be read
/// are left out of the result (their other problems of form are still reported).
fn build(text: &str) -> (PurposeCatalogue, Vec<Violation>) {
    let version = hex::encode(Sha256::digest(text.as_bytes()));
    let mut problems = Vec::new();
    let mut purposes = BTreeMap::new();
    let table = match text.parse::<toml::Table>() {
        Ok(table) => table,
        Err(e) => {
            problems.push(Violation::new(FILE_ENTRY, describe_toml_error(text, &e)));
            return (PurposeCatalogue { version, purposes }, problems);
        }
    };
    for key in table.keys().filter(|k| k.as_str() != "purposes") {
        problems.push(Violation::new(
            key_path(&[key]),
            "unknown top-level key: the catalogue holds only [purposes.<code>] tables",
        ));
    }
    match table.get("purposes") {
        None => {
            problems.push(Violation::new("purposes", "no [purposes.<code>] table: the catalogue is empty"))
        }
        Some(toml::Value::Table(entries)) => {
            for (code, value) in entries {
                if let Some(purpose) = build_purpose(code, value, &mut problems) {
                    purposes.insert(code.clone(), purpose);
                }
            }
        }
        Some(_) => problems.push(Violation::new("purposes", "must be a table of [purposes.<code>] tables")),
    }
    (PurposeCatalogue { version, purposes }, problems)
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    match e.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    }
}

fn build_purpose(code: &str, value: &toml::Value, problems: &mut Vec<Violation>) -> Option<Purpose> {
    let path = key_path(&["purposes", code]);
    let at = |key: &str| format!("{path}.{key}");
    let Some(table) = value.as_table() else {
        problems.push(Violation::new(&path, "must be a table: [purposes.<code>]"));
        return None;
    };
    // Each key on its own first, so that an unknown key or a value of the wrong type is reported at its
    // own path and the rest of the purpose is still checked (a key dropped here may draw a second remark
    // at the same path, e.g. "required").
    let mut readable = toml::Table::new();
    for (key, value) in table {
        let single: toml::Table = [(key.clone(), value.clone())].into_iter().collect();
        match toml::Value::Table(single).try_into::<RawPurpose>() {
            Ok(_) => {
                readable.insert(key.clone(), value.clone());
            }
            Err(e) => problems.push(Violation::new(at(&key_segment(key)), e.message().trim().to_owned())),
        }
    }
    let raw: RawPurpose = match toml::Value::Table(readable).try_into() {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(Violation::new(&path, e.message().trim().to_owned()));
            return None;
        }
    };

    let legal_basis = match raw.legal_basis.as_str() {
        "statutory" => {
            if raw.provisions.is_some() {
                problems.push(Violation::new(
                    at("provisions"),
                    "a statutory purpose cites its legal basis in `statute`, not `provisions`",
                ));
            }
            Some(Basis::Statutory { statute: raw.statute.unwrap_or_default() })
        }
        "consent" => {
            if raw.statute.is_some() {
                problems.push(Violation::new(
                    at("statute"),
                    "a consent purpose rests on consent, not on a statute: cite the service's rules in \
                     `provisions`",
                ));
            }
            Some(Basis::Consent { provisions: raw.provisions.unwrap_or_default() })
        }
        other => {
            problems.push(Violation::new(
                at("legal_basis"),
                if other.is_empty() {
                    "required: \"statutory\" (PIPL art. 13(3)) or \"consent\" (PIPL art. 13(1))".to_owned()
                } else {
                    format!("unknown legal basis '{other}': use \"statutory\" or \"consent\"")
                },
            ));
            None
        }
    };

    let retention_days = raw.retention_days.unwrap_or_else(|| {
        problems
            .push(Violation::new(at("retention_days"), "required: how long the requester keeps what it got"));
        0
    });

    let departments = unique(&raw.departments, &at("departments"), problems);
    let claim_types = unique(&raw.claim_types, &at("claim_types"), problems);

    let mut grants = BTreeMap::new();
    for (name, fields) in &raw.grants {
        let gpath = format!("{path}.grants.{}", key_segment(name));
        match FieldCategory::from_code(name) {
            Some(category) => {
                let fields = unique(fields, &gpath, problems);
                grants.insert(category, fields.iter().map(|f| category.field_name(f)).collect());
            }
            None => problems.push(Violation::new(
                gpath,
                format!("unknown field category '{name}'; the categories are {}", category_list()),
            )),
        }
    }

    let mut masking = BTreeMap::new();
    for (field, rule) in &raw.masking {
        let mpath = format!("{path}.masking.{}", key_segment(field));
        match parse_mask_rule(rule) {
            Ok(rule) => {
                masking.insert(field.clone(), rule);
            }
            Err(problem) => problems.push(Violation::new(mpath, problem)),
        }
    }

    Some(Purpose {
        code: code.to_owned(),
        name_zh: raw.name_zh,
        name_en: raw.name_en,
        legal_basis: legal_basis?,
        departments,
        grants,
        claim_types,
        full_citizen_id: raw.full_citizen_id,
        masking,
        retention_days,
        max_consent_validity_days: raw.max_consent_validity_days,
    })
}

/// The list as a set, reporting repeated entries (usually a copy-paste slip worth a look).
fn unique(items: &[String], path: &str, problems: &mut Vec<Violation>) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for item in items {
        if !set.insert(item.clone()) {
            problems.push(Violation::new(path, format!("'{item}' is listed twice")));
        }
    }
    set
}

const MASK_RULE_HELP: &str =
    "use \"clear\", \"citizen_id\", \"phone\", \"surname\" or { keep_first = N, keep_last = M }";

fn parse_mask_rule(value: &toml::Value) -> Result<MaskRule, String> {
    match value {
        toml::Value::String(name) => match name.as_str() {
            "clear" => Ok(MaskRule::Clear),
            "citizen_id" => Ok(MaskRule::CitizenId),
            "phone" => Ok(MaskRule::Phone),
            "surname" => Ok(MaskRule::Surname),
            other => Err(format!("unknown masking rule '{other}'; {MASK_RULE_HELP}")),
        },
        toml::Value::Table(table) => {
            let mut first = 0u8;
            let mut last = 0u8;
            for (key, value) in table {
                let slot = match key.as_str() {
                    "keep_first" => &mut first,
                    "keep_last" => &mut last,
                    other => {
                        return Err(format!("unknown key '{other}' in a masking rule; {MASK_RULE_HELP}"))
                    }
                };
                *slot = value
                    .as_integer()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| format!("{key} must be a whole number from 0 to 255"))?;
            }
            Ok(MaskRule::Keep { first, last })
        }
        _ => Err(format!("a masking rule is a string or a table; {MASK_RULE_HELP}")),
    }
}

fn is_purpose_code(code: &str) -> bool {
    code.len() <= MAX_CODE_LEN
        && code.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn category_list() -> String {
    FieldCategory::ALL.iter().map(|c| c.code()).collect::<Vec<_>>().join(", ")
}

fn validate_purpose<D: KnownDepartments + ?Sized>(
    code: &str,
    purpose: &Purpose,
    departments: &D,
    problems: &mut Vec<Violation>,
) {
    let path = key_path(&["purposes", code]);
    let at = |key: &str| format!("{path}.{key}");
    let mut problem = |entry: String, text: String| problems.push(Violation { path: entry, problem: text });

    if !is_purpose_code(code) {
        problem(
            path.clone(),
            "a purpose code is 1–64 characters of lower-case letters, digits and '_', starting with a letter"
                .into(),
        );
    }
    if purpose.code != code {
        problem(path.clone(), format!("the entry's code '{}' differs from its key", purpose.code));
    }
    for (key, value) in [("name_zh", &purpose.name_zh), ("name_en", &purpose.name_en)] {
        if value.trim().is_empty() {
            problem(at(key), "required: the purpose's name as shown to administrators and auditors".into());
        }
    }

    match &purpose.legal_basis {
        Basis::Statutory { statute } => {
            if statute.trim().is_empty() {
                problem(
                    at("statute"),
                    "a statutory purpose must cite the statutory duty it rests on (returned as \
                     LegalBasis.statute and recorded with every exchange)"
                        .into(),
                );
            }
            if purpose.max_consent_validity_days.is_some() {
                problem(
                    at("max_consent_validity_days"),
                    "only consent purposes take a consent validity: a statutory purpose needs no consent"
                        .into(),
                );
            }
        }
        Basis::Consent { provisions } => {
            if provisions.trim().is_empty() {
                problem(
                    at("provisions"),
                    "a consent purpose must cite the provisions of the service it serves".into(),
                );
            }
            match purpose.max_consent_validity_days {
                None => problem(
                    at("max_consent_validity_days"),
                    "a consent purpose needs the longest validity a consent for it may have".into(),
                ),
                Some(0) => problem(at("max_consent_validity_days"), "must be at least 1 day".into()),
                Some(days) if days > MAX_CONSENT_VALIDITY_DAYS => problem(
                    at("max_consent_validity_days"),
                    format!("{days} days is too long: at most {MAX_CONSENT_VALIDITY_DAYS}"),
                ),
                Some(_) => {}
            }
            if purpose.grants.is_empty() {
                problem(
                    at("grants"),
                    "a consent purpose must grant at least one category: a consent names the categories \
                     it covers"
                        .into(),
                );
            }
        }
    }

    if purpose.departments.is_empty() {
        problem(
            at("departments"),
            "no department is registered for the purpose, so nobody could use it".into(),
        );
    }
    for dept in &purpose.departments {
        match departments.department(dept) {
            DepartmentStatus::Consumer => {}
            DepartmentStatus::Unknown => problem(
                at("departments"),
                format!("unknown department '{dept}' (not in the department registry)"),
            ),
            DepartmentStatus::NotConsumer => problem(
                at("departments"),
                format!("department '{dept}' may not hold the consumer role, so it cannot make requests"),
            ),
        }
    }

    for (category, fields) in &purpose.grants {
        let gpath = format!("{path}.grants.{category}");
        if fields.is_empty() {
            problem(gpath.clone(), "grants no field: leave the category out instead of listing none".into());
        }
        let prefix = format!("{category}.");
        for field in fields {
            if category.fields().contains(field) {
                continue;
            }
            let short = field.strip_prefix(&prefix).unwrap_or(field);
            let text = if IMPLICIT_FIELDS.contains(&short) {
                format!("'{short}' is not granted on its own: it accompanies every disclosed value")
            } else {
                format!(
                    "unknown field '{short}' of {category}; the {} message has: {}",
                    category.view_message(),
                    short_names(*category)
                )
            };
            problem(gpath.clone(), text);
        }
    }

    for claim in &purpose.claim_types {
        if !schema::contract_claim_types().contains(claim) {
            let known = schema::contract_claim_types().iter().cloned().collect::<Vec<_>>().join(", ");
            problem(at("claim_types"), format!("unknown claim type '{claim}'; the claim types are: {known}"));
            continue;
        }
        match schema::claim_spec(claim) {
            None => {
                problem(at("claim_types"), format!("claim type '{claim}' is not supported by this release"))
            }
            Some((category, ClaimScope::Worker)) if !purpose.grants_category(category) => problem(
                at("claim_types"),
                format!(
                    "claim type '{claim}' is about the worker's {category} data, which the purpose does not \
                     grant"
                ),
            ),
            Some(_) => {}
        }
    }

    if purpose.full_citizen_id && !purpose.grants_field(CITIZEN_ID_FIELD) {
        problem(
            at("full_citizen_id"),
            format!("the full citizen ID can only be shown where {CITIZEN_ID_FIELD} is granted"),
        );
    }

    for (field, rule) in &purpose.masking {
        let mpath = format!("{path}.masking.{}", key_segment(field));
        let known = FieldCategory::ALL.iter().any(|c| c.fields().contains(field));
        if !known {
            problem(
                mpath,
                format!("unknown field '{field}': masking keys are `{{category}}.{{field}}` names"),
            );
            continue;
        }
        if !purpose.grants_field(field) {
            problem(mpath.clone(), format!("masks '{field}', which the purpose does not grant"));
        }
        if field == CITIZEN_ID_FIELD {
            if purpose.full_citizen_id {
                problem(mpath.clone(), "conflicts with full_citizen_id = true".into());
            } else if !rule.no_weaker_than(MaskRule::CitizenId) {
                problem(
                    mpath.clone(),
                    format!(
                        "'{rule}' would show more of the citizen ID than citizen_id masking; the full number \
                         is shown only with full_citizen_id = true"
                    ),
                );
            }
        }
        if let Some((_, floor)) = MASK_FLOORS.iter().find(|(name, _)| name == field) {
            if !rule.no_weaker_than(*floor) {
                problem(
                    mpath,
                    format!(
                        "'{rule}' is weaker than the mandatory '{floor}' masking of this field (minors' data \
                         is sensitive, PIPL art. 28)"
                    ),
                );
            }
        }
    }

    if purpose.retention_days > MAX_RETENTION_DAYS {
        problem(
            at("retention_days"),
            format!("{} days is too long: at most {MAX_RETENTION_DAYS}", purpose.retention_days),
        );
    }
}

fn short_names(category: FieldCategory) -> String {
    let prefix = format!("{category}.");
    category.fields().iter().map(|f| f.strip_prefix(&prefix).unwrap_or(f)).collect::<Vec<_>>().join(", ")
}

/// A dotted TOML key path, quoting segments that are not bare keys.
pub(crate) fn key_path(segments: &[&str]) -> String {
    segments.iter().map(|s| key_segment(s)).collect::<Vec<_>>().join(".")
}

fn key_segment(segment: &str) -> String {
    let bare =
        !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        segment.to_owned()
    } else {
        format!("{segment:?}")
    }
}
