//! The purpose check every consumer request goes through: the purpose named must be in the catalogue in
//! force and the caller's department registered for it. Which RPC a purpose may be used with (views need
//! worker-level grants, access history its own purpose) is the calling service's further check.

use crate::authn::Caller;
use crate::policy::{Purpose, PurposeCatalogue};

use super::error::ApiError;

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
