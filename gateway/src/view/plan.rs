//! Which categories a view may contain: what was asked, narrowed by what the purpose grants, narrowed by
//! what the legal basis covers. Everything asked but left out is listed with the reason.

use std::collections::BTreeSet;

use fedx_proto::v1 as pb;

use crate::policy::{FieldCategory, Purpose};

/// The legal basis the request was checked against (by the caller, before the view is built), with
/// what it covers.
#[derive(Clone, PartialEq, Eq)]
pub enum LegalCover {
    /// A statutory duty (PIPL art. 13(3)): every category the purpose grants is covered. `statute` is the
    /// catalogue's citation, returned as `LegalBasis.statute`.
    Statutory { statute: String },
    /// The worker's consent, checked ACTIVE for this worker, department and purpose: only the categories
    /// the consent names are covered.
    Consent { consent_id: String, categories: BTreeSet<FieldCategory> },
}

/// The kind and, for consent, its ID and scope (no personal data either way); the statute's text is
/// long and adds nothing to a log line.
impl std::fmt::Debug for LegalCover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LegalCover::Statutory { .. } => f.write_str("Statutory"),
            LegalCover::Consent { consent_id, categories } => f
                .debug_struct("Consent")
                .field("consent_id", consent_id)
                .field("categories", categories)
                .finish(),
        }
    }
}

impl LegalCover {
    /// The statutory cover of a statutory purpose; `None` for a consent purpose (which needs a consent).
    pub fn statutory(purpose: &Purpose) -> Option<LegalCover> {
        purpose.statute().map(|statute| LegalCover::Statutory { statute: statute.to_owned() })
    }

    /// Whether the basis covers the category for this purpose. Fails closed: a statutory cover presented
    /// for a purpose that rests on consent covers nothing.
    pub fn covers(&self, purpose: &Purpose, category: FieldCategory) -> bool {
        match self {
            LegalCover::Statutory { .. } => !purpose.is_consent(),
            LegalCover::Consent { categories, .. } => categories.contains(&category),
        }
    }

    /// The legal basis as the exchange record names it.
    pub fn to_record(&self) -> crate::audit::record::LegalBasis {
        use crate::audit::record::LegalBasis;
        match self {
            LegalCover::Statutory { statute } => LegalBasis::Statute(statute.clone()),
            LegalCover::Consent { consent_id, .. } => LegalBasis::Consent(consent_id.clone()),
        }
    }

    pub fn to_proto(&self) -> pb::LegalBasis {
        let basis = match self {
            LegalCover::Statutory { statute } => pb::legal_basis::Basis::Statute(statute.clone()),
            LegalCover::Consent { consent_id, .. } => pb::legal_basis::Basis::ConsentId(consent_id.clone()),
        };
        pb::LegalBasis { basis: Some(basis) }
    }
}

/// The categories a view will be built from, and those left out before any source is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Asked for, granted and covered.
    pub categories: BTreeSet<FieldCategory>,
    /// NOT_PERMITTED_FOR_PURPOSE and NO_CONSENT entries, in category order, department empty.
    pub omitted: Vec<pb::OmittedField>,
}

/// Plans a view. `requested` empty means every category the purpose grants (the contract's default).
pub fn plan(purpose: &Purpose, cover: &LegalCover, requested: &BTreeSet<FieldCategory>) -> Plan {
    let requested: BTreeSet<FieldCategory> =
        if requested.is_empty() { purpose.field_categories().collect() } else { requested.clone() };
    let mut out = Plan { categories: BTreeSet::new(), omitted: Vec::new() };
    for category in requested {
        let reason = if !purpose.grants_category(category) {
            pb::OmissionReason::NotPermittedForPurpose
        } else if !cover.covers(purpose, category) {
            pb::OmissionReason::NoConsent
        } else {
            out.categories.insert(category);
            continue;
        };
        out.omitted.push(omission(category, reason, ""));
    }
    out
}

pub(crate) fn omission(
    category: FieldCategory,
    reason: pb::OmissionReason,
    department: &str,
) -> pb::OmittedField {
    pb::OmittedField {
        category: category.to_proto() as i32,
        reason: reason as i32,
        department: department.to_owned(),
    }
}
