//! The contract's vocabulary the catalogue speaks in: field categories, the fields of each category's view
//! message, and the claim types of joint verification.
//!
//! Field and claim names are read from the compiled fedx.v1 descriptors
//! (`fedx_proto::v1::FILE_DESCRIPTOR_SET`) rather than typed out here, so the catalogue cannot name a field
//! the contract does not have, and a field renamed in the contract fails catalogue validation instead of
//! silently granting nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;

use fedx_adapters::FactCategory;
use fedx_proto::v1 as pb;
use prost::Message;

/// A category of worker data, as the contract's `FieldCategory` (common.proto) names it.
///
/// Not [`FactCategory`]: the sources have no arrears category (arrears are contribution facts in arrears,
/// split off for disclosure), while the policy grants arrears separately from paid contributions. Each
/// category maps onto the source category its facts come from ([`FieldCategory::source_category`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldCategory {
    Identity,
    ResidencePermit,
    Employment,
    Contributions,
    Arrears,
    Enrolment,
    Enterprise,
    IndividualBusiness,
}

impl FieldCategory {
    pub const ALL: [FieldCategory; 8] = [
        FieldCategory::Identity,
        FieldCategory::ResidencePermit,
        FieldCategory::Employment,
        FieldCategory::Contributions,
        FieldCategory::Arrears,
        FieldCategory::Enrolment,
        FieldCategory::Enterprise,
        FieldCategory::IndividualBusiness,
    ];

    /// The code used in the catalogue and in audit field names: the proto value name in lower case without
    /// the `FIELD_CATEGORY_` prefix.
    pub fn code(self) -> &'static str {
        match self {
            FieldCategory::Identity => "identity",
            FieldCategory::ResidencePermit => "residence_permit",
            FieldCategory::Employment => "employment",
            FieldCategory::Contributions => "contributions",
            FieldCategory::Arrears => "arrears",
            FieldCategory::Enrolment => "enrolment",
            FieldCategory::Enterprise => "enterprise",
            FieldCategory::IndividualBusiness => "individual_business",
        }
    }

    pub fn from_code(code: &str) -> Option<FieldCategory> {
        FieldCategory::ALL.into_iter().find(|c| c.code() == code)
    }

    pub fn to_proto(self) -> pb::FieldCategory {
        match self {
            FieldCategory::Identity => pb::FieldCategory::Identity,
            FieldCategory::ResidencePermit => pb::FieldCategory::ResidencePermit,
            FieldCategory::Employment => pb::FieldCategory::Employment,
            FieldCategory::Contributions => pb::FieldCategory::Contributions,
            FieldCategory::Arrears => pb::FieldCategory::Arrears,
            FieldCategory::Enrolment => pb::FieldCategory::Enrolment,
            FieldCategory::Enterprise => pb::FieldCategory::Enterprise,
            FieldCategory::IndividualBusiness => pb::FieldCategory::IndividualBusiness,
        }
    }

    /// `None` for `FIELD_CATEGORY_UNSPECIFIED`.
    pub fn from_proto(category: pb::FieldCategory) -> Option<FieldCategory> {
        FieldCategory::ALL.into_iter().find(|c| c.to_proto() == category)
    }

    /// The source category the facts of this category are fetched as.
    pub fn source_category(self) -> FactCategory {
        match self {
            FieldCategory::Identity => FactCategory::Identity,
            FieldCategory::ResidencePermit => FactCategory::ResidencePermit,
            FieldCategory::Employment => FactCategory::Employment,
            FieldCategory::Contributions | FieldCategory::Arrears => FactCategory::Contributions,
            FieldCategory::Enrolment => FactCategory::Enrolment,
            FieldCategory::Enterprise => FactCategory::Enterprise,
            FieldCategory::IndividualBusiness => FactCategory::IndividualBusiness,
        }
    }

    /// The view.proto message one entry of this category is disclosed as.
    pub fn view_message(self) -> &'static str {
        match self {
            FieldCategory::Identity => "IdentitySummary",
            FieldCategory::ResidencePermit => "ResidencePermit",
            FieldCategory::Employment => "Employment",
            FieldCategory::Contributions => "ContributionSummary",
            FieldCategory::Arrears => "ContributionArrears",
            FieldCategory::Enrolment => "ChildEnrolment",
            FieldCategory::Enterprise | FieldCategory::IndividualBusiness => "Business",
        }
    }

    /// The field of `GetWorkerViewResponse` holding the category's section.
    pub fn view_section(self) -> &'static str {
        match self {
            FieldCategory::Identity => "identity",
            FieldCategory::ResidencePermit => "residence_permits",
            FieldCategory::Employment => "employment",
            FieldCategory::Contributions => "contributions",
            FieldCategory::Arrears => "arrears",
            FieldCategory::Enrolment => "enrolments",
            FieldCategory::Enterprise => "enterprises",
            FieldCategory::IndividualBusiness => "individual_businesses",
        }
    }

    /// The grantable fields of the category, as `{category}.{field}`, from the view message.
    pub fn fields(self) -> &'static BTreeSet<String> {
        static EMPTY: BTreeSet<String> = BTreeSet::new();
        SCHEMA.fields.get(&self).unwrap_or(&EMPTY)
    }

    /// The full name `{category}.{field}` of a field of this category.
    pub fn field_name(self, field: &str) -> String {
        format!("{}.{field}", self.code())
    }
}

impl fmt::Display for FieldCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// View-message fields that are never granted on their own: provenance (department and as-of time, no
/// personal data) accompanies every disclosed value, whichever fields are granted.
pub const IMPLICIT_FIELDS: &[&str] = &["provenance"];

/// Whether a claim type can be asked about an employer as a whole, with no worker in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimScope {
    /// Always about a worker: the purpose must grant the claim's category.
    Worker,
    /// About a worker when the request has a subject (then the category must be granted, checked per
    /// request), otherwise about an enterprise alone, which discloses nothing about any worker.
    WorkerOrEnterprise,
    /// Always about the enterprise the claim names, with or without a subject in the request: the answer
    /// is the enterprise's public registration state, nothing about the worker.
    Enterprise,
}

/// What each claim type needs: the category named in verify.proto's `Claim` comments. The set of names is
/// checked against the descriptor's `Claim` oneof by a unit test, and a claim type the contract has but this
/// table lacks is refused by catalogue validation (fail closed).
pub const CLAIM_TYPES: &[(&str, FieldCategory, ClaimScope)] = &[
    ("identity_matches", FieldCategory::Identity, ClaimScope::Worker),
    ("residence_permit_valid", FieldCategory::ResidencePermit, ClaimScope::Worker),
    ("employed_by", FieldCategory::Employment, ClaimScope::Worker),
    ("contributions_at_least", FieldCategory::Contributions, ClaimScope::Worker),
    ("no_arrears", FieldCategory::Arrears, ClaimScope::WorkerOrEnterprise),
    ("child_enrolled", FieldCategory::Enrolment, ClaimScope::Worker),
    ("enterprise_active", FieldCategory::Enterprise, ClaimScope::Enterprise),
    ("enterprise_not_abnormal", FieldCategory::Enterprise, ClaimScope::Enterprise),
];

/// The category and scope of a claim type, if this release supports it.
pub fn claim_spec(claim_type: &str) -> Option<(FieldCategory, ClaimScope)> {
    CLAIM_TYPES
        .iter()
        .find(|(name, _, _)| *name == claim_type)
        .map(|(_, category, scope)| (*category, *scope))
}

/// The claim type names of the contract: the field names of the `fedx.v1.Claim` oneof.
pub fn contract_claim_types() -> &'static BTreeSet<String> {
    &SCHEMA.claim_types
}

/// What the descriptors say. If the embedded descriptor set cannot be decoded (it is compiled in, so this
/// would be a build defect) both sets are empty and every catalogue fails validation: fail closed.
struct Schema {
    fields: BTreeMap<FieldCategory, BTreeSet<String>>,
    claim_types: BTreeSet<String>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    let messages = descriptor_messages();
    let fields = FieldCategory::ALL
        .into_iter()
        .map(|category| {
            let names = messages
                .get(category.view_message())
                .map(|message| {
                    message
                        .field
                        .iter()
                        .map(|f| f.name())
                        .filter(|name| !IMPLICIT_FIELDS.contains(name))
                        .map(|name| category.field_name(name))
                        .collect()
                })
                .unwrap_or_default();
            (category, names)
        })
        .collect();
    let claim_types = messages.get("Claim").map(oneof_fields).unwrap_or_default();
    Schema { fields, claim_types }
});

/// The messages of the `fedx.v1` package by simple name.
pub(crate) fn descriptor_messages() -> BTreeMap<String, prost_types::DescriptorProto> {
    let Ok(set) = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET) else {
        return BTreeMap::new();
    };
    set.file
        .into_iter()
        .filter(|file| file.package() == "fedx.v1")
        .flat_map(|file| file.message_type)
        .map(|message| (message.name().to_owned(), message))
        .collect()
}

/// Names of the fields of the message's (single) oneof `claim`.
fn oneof_fields(message: &prost_types::DescriptorProto) -> BTreeSet<String> {
    let Some(index) = message.oneof_decl.iter().position(|o| o.name() == "claim") else {
        return BTreeSet::new();
    };
    message
        .field
        .iter()
        .filter(|f| f.oneof_index.and_then(|i| usize::try_from(i).ok()) == Some(index))
        .map(|f| f.name().to_owned())
        .collect()
}
