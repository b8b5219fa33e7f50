//! A consent record and its lifecycle, as plain data.
//!
//! A consent is immutable once granted: a change is a new consent that supersedes the old one. The only
//! things that ever happen to a stored consent are revocation and being superseded, and each can happen
//! at most once and excludes the other. Its status is not stored but computed when it is read, because
//! expiry is a matter of the clock, not of an event anyone records.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::authn::{Caller, Role};
use crate::policy::FieldCategory;

/// Prefix of every consent id (ids are `cs_` + 32 lower-case hex digits of randomness).
pub const CONSENT_ID_PREFIX: &str = "cs_";

/// A new, unguessable consent id. Random rather than sequential, so that an id reveals neither how many
/// consents exist nor which came before it, and knowing one id does not help to guess another.
pub fn new_consent_id() -> String {
    format!("{CONSENT_ID_PREFIX}{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Whether `id` could be a consent id: at most 64 ASCII letters, digits, `_` or `-` (the contract promises
/// ids of at most 64 ASCII characters and calls them opaque, so only the shape is checked).
pub fn is_well_formed_consent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The department system that registered a consent or its revocation, from its client certificate.
///
/// Not [`Caller`]: a record keeps who acted, not how long their certificate was going to last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub dept: String,
    pub role: Role,
    /// Certificate serial number, lower-case hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint: String,
}

impl From<&Caller> for Actor {
    fn from(caller: &Caller) -> Actor {
        Actor {
            dept: caller.dept.clone(),
            role: caller.role,
            serial: caller.serial.clone(),
            fingerprint: caller.fingerprint.clone(),
        }
    }
}

/// Why a consent was revoked. A closed list rather than free text, so that no personal data can end up
/// in the record (consent.proto `RevocationReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// The worker withdrew consent (PIPL art. 15).
    WithdrawnByWorker,
    /// The consent was registered in error (wrong person, purpose or department).
    RegisteredInError,
    /// The signed form was found invalid.
    EvidenceInvalid,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 3] = [
        RevocationReason::WithdrawnByWorker,
        RevocationReason::RegisteredInError,
        RevocationReason::EvidenceInvalid,
    ];

    /// The code stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::WithdrawnByWorker => "withdrawn_by_worker",
            RevocationReason::RegisteredInError => "registered_in_error",
            RevocationReason::EvidenceInvalid => "evidence_invalid",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RevocationReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown consent revocation reason '{s}'"))
    }
}

/// A revocation: when, by whom, why. All three or none, hence one optional value rather than three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub at: OffsetDateTime,
    pub by: Actor,
    pub reason: RevocationReason,
}

/// Lifecycle status, computed at read time (consent.proto `ConsentStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsentStatus {
    /// Neither revoked nor superseded, and `now < valid_until`. Includes consents whose validity has not
    /// started yet: they are in force as records, but not yet usable as a legal basis.
    Active,
    Revoked,
    /// `valid_until` has passed.
    Expired,
    /// Replaced by a newer consent.
    Superseded,
}

impl ConsentStatus {
    pub const ALL: [ConsentStatus; 4] =
        [ConsentStatus::Active, ConsentStatus::Revoked, ConsentStatus::Expired, ConsentStatus::Superseded];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Active => "active",
            ConsentStatus::Revoked => "revoked",
            ConsentStatus::Expired => "expired",
            ConsentStatus::Superseded => "superseded",
        }
    }
}

impl fmt::Display for ConsentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One consent record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// Server-assigned, opaque (see [`new_consent_id`]).
    pub consent_id: String,
    /// The worker who consented, by pseudonymous reference only.
    pub worker_ref: String,
    /// Department that may rely on the consent.
    pub grantee_dept: String,
    /// Purpose code; a purpose whose legal basis is consent.
    pub purpose: String,
    /// Categories the worker agreed to disclose; never empty.
    pub categories: BTreeSet<FieldCategory>,
    /// Start of validity (inclusive).
    pub valid_from: OffsetDateTime,
    /// End of validity (exclusive).
    pub valid_until: OffsetDateTime,
    /// When the consent was registered.
    pub created_at: OffsetDateTime,
    /// The department system that registered it.
    pub captured_by: Actor,
    /// SHA-256 of the signed consent form the capturing department keeps, 64 lower-case hex digits.
    pub evidence_sha256: String,
    /// The capturing department's idempotency key, if it gave one.
    pub request_id: Option<String>,
    /// The consent this one replaced.
    pub supersedes_consent_id: Option<String>,
    /// The consent that replaced this one.
    pub superseded_by: Option<String>,
    pub revocation: Option<Revocation>,
}

impl Consent {
    /// Status at `now`. Revocation and supersession are recorded events and win over the clock; the two
    /// never both happen to one consent (each is refused once the other has).
    pub fn status(&self, now: OffsetDateTime) -> ConsentStatus {
        if self.revocation.is_some() {
            ConsentStatus::Revoked
        } else if self.superseded_by.is_some() {
            ConsentStatus::Superseded
        } else if now >= self.valid_until {
            ConsentStatus::Expired
        } else {
            ConsentStatus::Active
        }
    }

    /// Whether `now` lies within `[valid_from, valid_until)`.
    pub fn within_validity(&self, now: OffsetDateTime) -> bool {
        self.valid_from <= now && now < self.valid_until
    }

    /// Whether `dept` may see this consent by its id: the grantee and the capturing department.
    pub fn visible_to(&self, dept: &str) -> bool {
        self.grantee_dept == dept || self.captured_by.dept == dept
    }

    /// Whether the consent covers disclosure of `category`.
    pub fn covers(&self, category: FieldCategory) -> bool {
        self.categories.contains(&category)
    }

    /// Position of this consent in a worker's list (newest first), for keyset paging.
    pub fn cursor(&self) -> ListCursor {
        ListCursor { created_at: self.created_at, consent_id: self.consent_id.clone() }
    }
}

/// What a department registers; the store adds the id, the creation time and the lifecycle fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsent {
    pub worker_ref: String,
    pub grantee_dept: String,
    pub purpose: String,
    pub categories: BTreeSet<FieldCategory>,
    pub valid_from: OffsetDateTime,
    pub valid_until: OffsetDateTime,
    pub captured_by: Actor,
    /// 64 hex digits; stored in lower case.
    pub evidence_sha256: String,
    /// Idempotency key: a second grant with the same key from the same department returns the first
    /// consent instead of creating another.
    pub request_id: Option<String>,
    /// An ACTIVE consent of the same worker to replace, atomically with this grant.
    pub supersedes_consent_id: Option<String>,
}

/// Keyset position in a worker's consent list: the last consent of the previous page. Lists are ordered
/// by `created_at` then `consent_id`, both descending, so the cursor is stable under concurrent grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at: OffsetDateTime,
    pub consent_id: String,
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn consent() -> Consent {
        Consent {
            consent_id: new_consent_id(),
            worker_ref: format!("wr_{}", "a".repeat(64)),
            grantee_dept: "education".into(),
            purpose: "child_school_enrolment".into(),
            categories: BTreeSet::from([FieldCategory::Contributions]),
            valid_from: datetime!(2026-01-01 00:00 UTC),
            valid_until: datetime!(2026-02-01 00:00 UTC),
            created_at: datetime!(2025-12-31 12:00 UTC),
            captured_by: Actor {
                dept: "social_insurance".into(),
                role: Role::Consumer,
                serial: "4a".into(),
                fingerprint: "00".repeat(32),
            },
            evidence_sha256: "ab".repeat(32),
            request_id: None,
            supersedes_consent_id: None,
            superseded_by: None,
            revocation: None,
        }
    }

    #[test]
    fn ids_are_opaque_and_well_formed() {
        let id = new_consent_id();
        assert_eq!(id.len(), 35);
        assert!(id.starts_with("cs_") && id[3..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(id, new_consent_id());
        assert!(is_well_formed_consent_id(&id));
        for bad in ["", "cs 1", "cs_é", &"a".repeat(65)] {
            assert!(!is_well_formed_consent_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn status_is_computed_at_read_time() {
        let mut c = consent();
        // Not yet valid: ACTIVE (usable only once valid_from is reached).
        assert_eq!(c.status(datetime!(2025-12-31 13:00 UTC)), ConsentStatus::Active);
        assert!(!c.within_validity(datetime!(2025-12-31 13:00 UTC)));
        assert_eq!(c.status(datetime!(2026-01-15 00:00 UTC)), ConsentStatus::Active);
        assert!(c.within_validity(datetime!(2026-01-01 00:00 UTC)));
        // valid_until is exclusive.
        assert_eq!(c.status(datetime!(2026-02-01 00:00 UTC)), ConsentStatus::Expired);
        c.superseded_by = Some(new_consent_id());
        assert_eq!(c.status(datetime!(2026-01-15 00:00 UTC)), ConsentStatus::Superseded);
        assert_eq!(c.status(datetime!(2026-03-01 00:00 UTC)), ConsentStatus::Superseded);
        c.superseded_by = None;
        c.revocation = Some(Revocation {
            at: datetime!(2026-01-10 00:00 UTC),
            by: c.captured_by.clone(),
            reason: RevocationReason::WithdrawnByWorker,
        });
        assert_eq!(c.status(datetime!(2026-01-15 00:00 UTC)), ConsentStatus::Revoked);
        assert_eq!(c.status(datetime!(2026-03-01 00:00 UTC)), ConsentStatus::Revoked);
    }

    #[test]
    fn visibility_and_reasons() {
        let c = consent();
        assert!(c.visible_to("education") && c.visible_to("social_insurance"));
        assert!(!c.visible_to("tax"));
        for reason in RevocationReason::ALL {
            assert_eq!(reason.as_str().parse::<RevocationReason>(), Ok(reason));
        }
        assert!("free text".parse::<RevocationReason>().is_err());
    }
}
