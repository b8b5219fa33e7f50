//! The purpose catalogue: which department may ask for what, why, and on what legal basis.
//!
//! Purpose limitation and minimum necessity (PIPL arts. 6, 34) are decided here and nowhere else. Every
//! consumer request names a purpose; the catalogue says which departments are registered for it, whether it
//! rests on a statutory duty (PIPL art. 13(3)) or on the worker's consent (art. 13(1)), which fields of which
//! categories it may disclose, which joint-verification claims it may ask, and how disclosed values are
//! masked.
//!
//! The catalogue is configuration (`deploy/purposes.toml`, documented key by key there). It is loaded whole
//! and validated whole: [`PurposeCatalogue::load_validated`] reports every problem with the path of the
//! offending entry, and [`PolicyHandle::reload`] puts a new catalogue in force only if it is valid, leaving
//! the previous one in force otherwise. Its version is the lower-case hex SHA-256 of the file's bytes.
//!
//! The field names the catalogue speaks of are the contract's: `{category}.{field}` with `{field}` a field
//! of the category's view.proto message, and claim types are the `Claim` oneof field names of verify.proto,
//! both read from the compiled descriptors (see [`schema`]).

mod handle;
mod load;
mod mask;
pub mod schema;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use fedx_proto::v1 as pb;

pub use handle::{CatalogueSource, PolicyHandle, ReloadOutcome, BUILT_IN_CATALOGUE};
pub use load::FILE_ENTRY;
pub use mask::{keep as mask_keep, mask_name, MaskRule};
pub use schema::{ClaimScope, FieldCategory};

use crate::authn::Role;
use crate::config::DepartmentRegistry;

/// One problem found in a catalogue: the entry it is about (a TOML key path such as
/// `purposes.child_school_enrolment.grants.identity`, `(file)` for the file as a whole) and what is wrong.
/// Never contains personal data: the catalogue holds none.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub path: String,
    pub problem: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> Violation {
        Violation { path: path.into(), problem: problem.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl From<Violation> for (String, String) {
    fn from(v: Violation) -> (String, String) {
        (v.path, v.problem)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read purpose catalogue {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Every problem found, in path order. Maps to FAILED_PRECONDITION / POLICY_INVALID with one BadRequest
    /// field violation per entry.
    #[error("invalid purpose catalogue ({} problem(s)): {}", .0.len(), summary(.0))]
    Invalid(Vec<Violation>),
}

impl PolicyError {
    /// The problems, if the catalogue was read but is invalid.
    pub fn violations(&self) -> &[Violation] {
        match self {
            PolicyError::Read { .. } => &[],
            PolicyError::Invalid(violations) => violations,
        }
    }
}

fn summary(violations: &[Violation]) -> String {
    let mut text = violations.iter().take(3).map(Violation::to_string).collect::<Vec<_>>().join("; ");
    if violations.len() > 3 {
        text.push_str("; …");
    }
    text
}

/// The purpose catalogue in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeCatalogue {
    /// Lower-case hex SHA-256 of the catalogue file's bytes.
    pub version: String,
    /// Purposes by code.
    pub purposes: BTreeMap<String, Purpose>,
}

/// What a purpose's processing rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// The worker's consent (PIPL art. 13(1)): requests must name an ACTIVE consent for the same worker,
    /// department and purpose. `provisions` cites the rules of the public service the purpose serves.
    Consent { provisions: String },
    /// A statutory duty (PIPL art. 13(3)): no consent, still logged. `statute` is the citation returned
    /// as `LegalBasis.statute` and recorded in the audit log.
    Statutory { statute: String },
}

/// One entry of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    /// Lower-case letters, digits and `_`, starting with a letter.
    pub code: String,
    pub name_zh: String,
    pub name_en: String,
    pub legal_basis: Basis,
    /// Department codes registered to use the purpose (consumer role).
    pub departments: BTreeSet<String>,
    /// Per category, the fields disclosed, as `{category}.{field}`. A category absent here is not granted;
    /// a granted category has at least one field.
    pub grants: BTreeMap<FieldCategory, BTreeSet<String>>,
    /// Claim types (verify.proto `Claim` oneof field names) the purpose may ask.
    pub claim_types: BTreeSet<String>,
    /// Whether `identity.citizen_id` is shown in full rather than masked.
    pub full_citizen_id: bool,
    /// Masking per field (`{category}.{field}`), on top of the built-in floors (see [`Purpose::mask_rule`]).
    pub masking: BTreeMap<String, MaskRule>,
    /// How long the requesting department should keep what it received, in days (a hint for its records
    /// schedule: PIPL art. 19, the shortest time the purpose needs).
    pub retention_days: u32,
    /// Longest validity a consent for this purpose may have, in days; consent purposes only.
    pub max_consent_validity_days: Option<u32>,
}

/// Fields masked whatever the catalogue says (the catalogue may only make them stricter):
/// children's IDs and names (PIPL art. 28: minors' data is sensitive; view.proto: always masked).
/// `identity.citizen_id` is masked as [`MaskRule::CitizenId`] unless the purpose has `full_citizen_id`.
pub const MASK_FLOORS: &[(&str, MaskRule)] =
    &[("enrolment.child_citizen_id", MaskRule::CitizenId), ("enrolment.child_name", MaskRule::Surname)];

/// The field whose masking `full_citizen_id` lifts.
pub const CITIZEN_ID_FIELD: &str = "identity.citizen_id";

impl PurposeCatalogue {
    pub fn purpose(&self, code: &str) -> Option<&Purpose> {
        self.purposes.get(code)
    }

    /// Purposes the department is registered for, by code (e.g. for WhoAmI).
    pub fn purposes_for_department<'a>(&'a self, dept: &'a str) -> impl Iterator<Item = &'a Purpose> + 'a {
        self.purposes.values().filter(move |p| p.allows_department(dept))
    }

    /// The catalogue as GetPurposeCatalogue lists it, ordered by code.
    pub fn to_proto(&self) -> Vec<pb::Purpose> {
        self.purposes.values().map(Purpose::to_proto).collect()
    }
}

impl Purpose {
    pub fn allows_department(&self, dept: &str) -> bool {
        self.departments.contains(dept)
    }

    pub fn is_consent(&self) -> bool {
        matches!(self.legal_basis, Basis::Consent { .. })
    }

    /// The statute cited, for statutory purposes.
    pub fn statute(&self) -> Option<&str> {
        match &self.legal_basis {
            Basis::Statutory { statute } => Some(statute),
            Basis::Consent { .. } => None,
        }
    }

    /// Whether the purpose discloses anything of the category (views) or lets worker claims about it be
    /// answered (verification).
    pub fn grants_category(&self, category: FieldCategory) -> bool {
        self.grants.contains_key(&category)
    }

    /// Categories granted, in contract order.
    pub fn field_categories(&self) -> impl Iterator<Item = FieldCategory> + '_ {
        self.grants.keys().copied()
    }

    /// Whether any worker-level category is granted: a purpose that grants none (employer compliance,
    /// access history) cannot be used for worker views.
    pub fn grants_worker_data(&self) -> bool {
        !self.grants.is_empty()
    }

    /// The fields granted in a category, as `{category}.{field}`; empty when the category is not granted.
    pub fn granted_fields(&self, category: FieldCategory) -> &BTreeSet<String> {
        static EMPTY: BTreeSet<String> = BTreeSet::new();
        self.grants.get(&category).unwrap_or(&EMPTY)
    }

    /// Whether the field (`{category}.{field}`) is granted.
    pub fn grants_field(&self, field: &str) -> bool {
        self.grants.values().any(|fields| fields.contains(field))
    }

    pub fn allows_claim(&self, claim_type: &str) -> bool {
        self.claim_types.contains(claim_type)
    }

    /// How the field is shown: the catalogue's rule if it has one, else the built-in floor (masked citizen
    /// ID unless `full_citizen_id`, children's IDs and names always masked), else clear. Fields the purpose
    /// does not grant are hidden entirely (`Keep { 0, 0 }`): a caller that asks to mask a field it should
    /// not disclose gets nothing out of it.
    pub fn mask_rule(&self, field: &str) -> MaskRule {
        if !self.grants_field(field) {
            return MaskRule::Keep { first: 0, last: 0 };
        }
        if let Some(rule) = self.masking.get(field) {
            return *rule;
        }
        if field == CITIZEN_ID_FIELD {
            return if self.full_citizen_id { MaskRule::Clear } else { MaskRule::CitizenId };
        }
        MASK_FLOORS.iter().find(|(name, _)| *name == field).map_or(MaskRule::Clear, |(_, rule)| *rule)
    }

    /// The value of the field as the requester may see it.
    pub fn mask(&self, field: &str, value: &str) -> String {
        self.mask_rule(field).apply(value)
    }

    pub fn to_proto(&self) -> pb::Purpose {
        let (kind, statute) = match &self.legal_basis {
            Basis::Consent { .. } => (pb::LegalBasisKind::Consent, String::new()),
            Basis::Statutory { statute } => (pb::LegalBasisKind::StatutoryDuty, statute.clone()),
        };
        pb::Purpose {
            code: self.code.clone(),
            description: self.name_zh.clone(),
            legal_basis_kind: kind as i32,
            statute,
            departments: self.departments.iter().cloned().collect(),
            field_categories: self.field_categories().map(|c| c.to_proto() as i32).collect(),
            claim_types: self.claim_types.iter().cloned().collect(),
            full_citizen_id: self.full_citizen_id,
            max_consent_validity_days: self
                .max_consent_validity_days
                .map_or(0, |days| i32::try_from(days).unwrap_or(i32::MAX)),
        }
    }
}

/// What the catalogue's department codes are checked against.
pub trait KnownDepartments {
    fn department(&self, code: &str) -> DepartmentStatus;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepartmentStatus {
    /// Registered, and its certificates may carry the consumer role (so it can make requests).
    Consumer,
    /// Registered, but only as provider, auditor or administrator.
    NotConsumer,
    Unknown,
}

impl KnownDepartments for DepartmentRegistry {
    fn department(&self, code: &str) -> DepartmentStatus {
        match self.departments().find(|(dept, _)| *dept == code) {
            None => DepartmentStatus::Unknown,
            Some((_, roles)) if roles.contains(&Role::Consumer) => DepartmentStatus::Consumer,
            Some(_) => DepartmentStatus::NotConsumer,
        }
    }
}

/// A plain set of codes: every code in it counts as a consumer department.
impl KnownDepartments for BTreeSet<String> {
    fn department(&self, code: &str) -> DepartmentStatus {
        if self.contains(code) {
            DepartmentStatus::Consumer
        } else {
            DepartmentStatus::Unknown
        }
    }
}

impl KnownDepartments for [&str] {
    fn department(&self, code: &str) -> DepartmentStatus {
        if self.contains(&code) {
            DepartmentStatus::Consumer
        } else {
            DepartmentStatus::Unknown
        }
    }
}
