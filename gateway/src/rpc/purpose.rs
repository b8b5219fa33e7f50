//! The purpose check every consumer request goes through: the purpose named must be in the catalogue in
//! force and the caller's department registered for it. Which RPC a purpose may be used with (views need
//! worker-level grants, access history its own purpose) is the calling service's further check.

use time::OffsetDateTime;

use crate::authn::Caller;
use crate::consent::CheckError;
use crate::policy::{Purpose, PurposeCatalogue};
use crate::server::GatewayState;
use crate::view::LegalCover;

use super::error::ApiError;

/// Longest consent id accepted (consent.proto: at most 64 ASCII characters).
const MAX_CONSENT_ID_LEN: usize = 64;

/// The purpose `code` from `catalogue`, if the caller's department may use it.
///
/// Unknown codes are INVALID_ARGUMENT (PURPOSE_UNKNOWN, a BadRequest violation on `purpose`); a known
/// purpose the department is not registered for is PERMISSION_DENIED (PURPOSE_NOT_PERMITTED naming it).
pub fn permitted_purpose<'c>(
    catalogue: &'c PurposeCatalogue,
    code: &str,
    caller: &Caller,
) -> Result<&'c Purpose, ApiError> {
    let purpose = catalogue.purpose(code).ok_or_else(|| ApiError::PurposeUnknown(code.to_owned()))?;
    if !purpose.allows_department(&caller.dept) {
        return Err(ApiError::PurposeNotPermitted {
            purpose: code.to_owned(),
            why: "the caller's department is not registered for it",
        });
    }
    Ok(purpose)
}

/// Checks the form of a required purpose code (lower-case letters, digits and `_`, at most 64), adding a
/// violation on `purpose` if it is wrong; true when it is well formed. Whether the catalogue knows it is
/// [`permitted_purpose`]'s question.
pub fn check_purpose_code(purpose: &str, violations: &mut Vec<(String, String)>) -> bool {
    let problem = if purpose.is_empty() {
        "a purpose code is required"
    } else if purpose.len() > 64
        || !purpose.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        "purpose codes are lower-case letters, digits and '_'"
    } else {
        return true;
    };
    violations.push(("purpose".to_owned(), problem.to_owned()));
    false
}

/// Checks the form of an optional consent id (at most 64 printable ASCII characters), adding a violation
/// on `consent_id` if it is wrong; returns it trimmed.
pub fn check_consent_id(raw: &str, violations: &mut Vec<(String, String)>) -> String {
    let consent_id = raw.trim();
    if consent_id.len() > MAX_CONSENT_ID_LEN || !consent_id.bytes().all(|b| b.is_ascii_graphic()) {
        violations.push((
            "consent_id".to_owned(),
            format!("a consent id is at most {MAX_CONSENT_ID_LEN} printable ASCII characters"),
        ));
    }
    consent_id.to_owned()
}

/// The legal basis of a request about `worker_ref`: the purpose's statute, or the consent named, checked
/// ACTIVE for this worker, the caller's department and the purpose. The consent is read from the database
/// on every call, so a revocation on any replica applies to the next request. The caller has already
/// refused a consent purpose without a consent id (CONSENT_REQUIRED).
pub async fn legal_cover(
    state: &GatewayState,
    purpose: &Purpose,
    consent_id: &str,
    worker_ref: &str,
    caller: &Caller,
) -> Result<LegalCover, ApiError> {
    if let Some(statutory) = LegalCover::statutory(purpose) {
        return Ok(statutory);
    }
    let consent = state
        .consents
        .check_basis(consent_id, worker_ref, &caller.dept, &purpose.code, OffsetDateTime::now_utc())
        .await
        .map_err(|e| match e {
            CheckError::Refused(refusal) => {
                ApiError::ConsentRefused { consent_id: consent_id.to_owned(), refusal }
            }
            CheckError::Store(e) => ApiError::from(e),
        })?;
    Ok(LegalCover::Consent { consent_id: consent.consent_id, categories: consent.categories })
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::authn::Role;

    fn caller(dept: &str) -> Caller {
        Caller {
            dept: dept.to_owned(),
            role: Role::Consumer,
            serial: "01".into(),
            fingerprint: "00".repeat(32),
            not_after: 0,
        }
    }

    #[test]
    fn unknown_is_invalid_argument_and_unregistered_is_permission_denied() {
        let catalogue = PurposeCatalogue::from_toml(crate::policy::BUILT_IN_CATALOGUE).expect("ships valid");
        let social = caller("social_insurance");
        assert!(permitted_purpose(&catalogue, "wage_arrears_investigation", &social).is_ok());

        let status: tonic::Status =
            permitted_purpose(&catalogue, "no_such_purpose", &social).unwrap_err().into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(!status.message().contains("social_insurance"));

        let status: tonic::Status =
            permitted_purpose(&catalogue, "wage_arrears_investigation", &caller("tax")).unwrap_err().into();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(status.message().contains("wage_arrears_investigation"), "{}", status.message());
    }
}
