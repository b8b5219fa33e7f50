//! The request-time check: may this department rely on this consent, for this worker and purpose, now?
//!
//! Views and joint verification call [`ConsentStore::check_basis`] on every request that rests on
//! consent. It reads the consent from the database every time — one primary-key read, no cache — so that
//! a revocation registered on any gateway replica takes effect for the very next request on every other
//! replica (PIPL art. 15: withdrawal at any time; consent.proto: "takes effect for new requests at once").

use time::OffsetDateTime;

use super::model::{is_well_formed_consent_id, Consent, ConsentStatus};
use super::store::ConsentStore;
use crate::store::StoreError;

/// Why a consent cannot serve as the legal basis of a request (ErrorReason CONSENT_NOT_FOUND, _REVOKED,
/// _EXPIRED, _SUPERSEDED, _MISMATCH). The same reasons describe why a consent cannot be superseded or
/// revoked. Messages name no personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    /// No such consent, or not visible to the department presenting it.
    #[error("no such consent is visible to the department")]
    NotFound,
    #[error("the consent was revoked")]
    Revoked,
    /// After `valid_until`, or before `valid_from`.
    #[error("the consent is outside its validity period")]
    Expired,
    /// Replaced by the consent `by`.
    #[error("the consent was superseded by consent {by}")]
    Superseded { by: String },
    /// For another worker, another grantee department or another purpose.
    #[error("the consent is for another person, grantee department or purpose")]
    Mismatch,
}

/// Why [`ConsentStore::check_basis`] gave no consent: a refusal, or no answer from the store (which must
/// not be mistaken for a refusal: the caller should retry, not be told the consent is gone).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Refused(#[from] ConsentRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decides whether `consent` is a basis for `caller_dept` asking about `worker_ref` for `purpose` at
/// `now`.
///
/// Order matters for what a refusal reveals: a consent the department cannot see is NOT_FOUND (so ids of
/// other departments' consents are not confirmed to exist); one it can see but that is for another
/// worker, grantee or purpose is MISMATCH whatever its state (it could never be a basis); only then is
/// the lifecycle consulted.
pub fn check(
    consent: &Consent,
    worker_ref: &str,
    caller_dept: &str,
    purpose: &str,
    now: OffsetDateTime,
) -> Result<(), ConsentRefusal> {
    if !consent.visible_to(caller_dept) {
        return Err(ConsentRefusal::NotFound);
    }
    if consent.worker_ref != worker_ref || consent.grantee_dept != caller_dept || consent.purpose != purpose {
        return Err(ConsentRefusal::Mismatch);
    }
    lifecycle(consent, now)
}

/// The lifecycle part of [`check`]: usable only if ACTIVE and already within its validity period.
pub fn lifecycle(consent: &Consent, now: OffsetDateTime) -> Result<(), ConsentRefusal> {
    match consent.status(now) {
        ConsentStatus::Revoked => Err(ConsentRefusal::Revoked),
        ConsentStatus::Superseded => {
            Err(ConsentRefusal::Superseded { by: consent.superseded_by.clone().unwrap_or_default() })
        }
        ConsentStatus::Expired => Err(ConsentRefusal::Expired),
        ConsentStatus::Active if !consent.within_validity(now) => Err(ConsentRefusal::Expired),
        ConsentStatus::Active => Ok(()),
    }
}

impl ConsentStore {
    /// The consent `consent_id` if `caller_dept` may rely on it for `worker_ref` and `purpose` at `now`
    /// (see [`check`]). Reads the database on every call (see the module docs).
    pub async fn check_basis(
        &self,
        consent_id: &str,
        worker_ref: &str,
        caller_dept: &str,
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<Consent, CheckError> {
        if !is_well_formed_consent_id(consent_id) {
            return Err(ConsentRefusal::NotFound.into());
        }
        let consent = self.get(consent_id).await?.ok_or(ConsentRefusal::NotFound)?;
        check(&consent, worker_ref, caller_dept, purpose, now)?;
        Ok(consent)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use time::macros::datetime;

    use super::*;
    use crate::authn::Role;
    use crate::consent::model::{Actor, Revocation, RevocationReason};
    use crate::policy::FieldCategory;

    const WORKER: &str = "wr_1111111111111111111111111111111111111111111111111111111111111111";

    fn consent() -> Consent {
        Consent {
            consent_id: "cs_00000000000000000000000000000001".into(),
            worker_ref: WORKER.into(),
            grantee_dept: "education".into(),
            purpose: "child_school_enrolment".into(),
            categories: BTreeSet::from([FieldCategory::Employment]),
            valid_from: datetime!(2026-01-01 00:00 UTC),
            valid_until: datetime!(2026-02-01 00:00 UTC),
            created_at: datetime!(2026-01-01 00:00 UTC),
            captured_by: Actor {
                dept: "social_insurance".into(),
                role: Role::Consumer,
                serial: "01".into(),
                fingerprint: "00".repeat(32),
            },
            evidence_sha256: "00".repeat(32),
            request_id: None,
            supersedes_consent_id: None,
            superseded_by: None,
            revocation: None,
        }
    }

    #[test]
    fn refusals_in_order() {
        let now = datetime!(2026-01-15 00:00 UTC);
        let c = consent();
        let check = |c: &Consent, w: &str, d: &str, p: &str, t| check(c, w, d, p, t);
        assert_eq!(check(&c, WORKER, "education", "child_school_enrolment", now), Ok(()));
        // The capturing department sees it but is not the grantee.
        assert_eq!(
            check(&c, WORKER, "social_insurance", "child_school_enrolment", now),
            Err(ConsentRefusal::Mismatch)
        );
        // A department that neither captured nor received it is not told it exists.
        assert_eq!(check(&c, WORKER, "tax", "child_school_enrolment", now), Err(ConsentRefusal::NotFound));
        let other = WORKER.replace('1', "2");
        assert_eq!(
            check(&c, &other, "education", "child_school_enrolment", now),
            Err(ConsentRefusal::Mismatch)
        );
        assert_eq!(
            check(&c, WORKER, "education", "points_based_services", now),
            Err(ConsentRefusal::Mismatch)
        );
        assert_eq!(
            check(&c, WORKER, "education", "child_school_enrolment", datetime!(2025-12-31 23:59 UTC)),
            Err(ConsentRefusal::Expired)
        );
        assert_eq!(
            check(&c, WORKER, "education", "child_school_enrolment", datetime!(2026-02-01 00:00 UTC)),
            Err(ConsentRefusal::Expired)
        );
        let mut superseded = c.clone();
        superseded.superseded_by = Some("cs_2".into());
        assert_eq!(
            check(&superseded, WORKER, "education", "child_school_enrolment", now),
            Err(ConsentRefusal::Superseded { by: "cs_2".into() })
        );
        let mut revoked = c.clone();
        revoked.revocation = Some(Revocation {
            at: now,
            by: c.captured_by.clone(),
            reason: RevocationReason::WithdrawnByWorker,
        });
        assert_eq!(
            check(&revoked, WORKER, "education", "child_school_enrolment", now),
            Err(ConsentRefusal::Revoked)
        );
        // Mismatch wins over the lifecycle.
        assert_eq!(
            check(&revoked, &other, "education", "child_school_enrolment", now),
            Err(ConsentRefusal::Mismatch)
        );
    }
}
