//! The one mapping from gateway failures to gRPC statuses with standard `google.rpc` details.
//!
//! Messages name departments, roles, methods and certificate serials — never personal data.

use std::collections::HashMap;

use fedx_proto::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `google.rpc.ErrorInfo.domain` of every fedx error, as documented with `fedx.v1.ErrorReason`.
pub const ERROR_DOMAIN: &str = "fedx.v1";

/// Errors raised at the RPC edge before or around the domain call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no client certificate identity on this connection")]
    NoIdentity,
    #[error("client certificate {serial} has been revoked")]
    CertificateRevoked { serial: String },
    #[error("client certificate {serial} has expired")]
    CertificateExpired { serial: String },
    #[error("{method} requires role {required}; the caller's certificate ({dept}) has role {actual}")]
    RoleNotAllowed { method: String, required: String, dept: String, actual: String },
    #[error("unknown method {0}")]
    UnknownMethod(String),
    #[error("{method}: {note}")]
    NotImplemented { method: String, note: &'static str },
    #[error("invalid request")]
    InvalidArgument(Vec<(String, String)>),
    #[error("{0}")]
    NotFound(String),
    #[error("the gateway store is unavailable")]
    StoreUnavailable,
    /// None of the sources a request needs answered (department codes, never personal data).
    #[error("no department source answered: {}", .0.join(", "))]
    SourcesUnavailable(Vec<String>),
    /// The exchange record could not be made durable, so nothing is answered.
    #[error("the exchange log is unavailable; the request was not answered")]
    AuditUnavailable,
    /// The gateway is handling `limit` calls already (UNAVAILABLE, OVERLOADED, RetryInfo): refused at
    /// once rather than queued ([`crate::resilience::shed`]).
    #[error("the gateway is at its limit of {limit} calls in flight; retry shortly")]
    Overloaded { limit: usize },
    /// The caller's deadline (`grpc-timeout`) passed before the answer was ready (DEADLINE_EXCEEDED).
    #[error("the caller's deadline passed before the answer was ready")]
    DeadlineExceeded,
    /// The gateway shut down before the call finished (UNAVAILABLE, SHUTTING_DOWN, RetryInfo).
    #[error("the gateway is shutting down; the call did not finish in time")]
    ShuttingDown,
    #[error("purpose {purpose} is not permitted here: {why}")]
    PurposeNotPermitted { purpose: String, why: &'static str },
    #[error("no person matches the subject")]
    SubjectNotFound,
    /// The purpose catalogue read by a reload is invalid; the one in force stays in force.
    #[error("{0}")]
    PolicyInvalid(crate::policy::PolicyError),
    /// The purpose code is not in the catalogue.
    #[error("unknown purpose {0}")]
    PurposeUnknown(String),
    /// The subject matches several people; the field names would tell them apart.
    #[error("the subject matches more than one person; add one of: {}", .0.join(", "))]
    SubjectAmbiguous(Vec<String>),
    /// A consent named as the legal basis of a request cannot serve as one (PERMISSION_DENIED,
    /// CONSENT_NOT_FOUND / _REVOKED / _EXPIRED / _SUPERSEDED / _MISMATCH).
    #[error("consent {consent_id}: {refusal}")]
    ConsentRefused { consent_id: String, refusal: crate::consent::ConsentRefusal },
    /// A consent purpose was named without a consent (PERMISSION_DENIED, CONSENT_REQUIRED).
    #[error("purpose {purpose} rests on the worker's consent: consent_id is required")]
    ConsentRequired { purpose: String },
    /// The consent does not cover every category asked for explicitly (PERMISSION_DENIED,
    /// CONSENT_INSUFFICIENT); `missing` are category codes.
    #[error("consent {consent_id} does not cover: {}", .missing.join(", "))]
    ConsentInsufficient { consent_id: String, missing: Vec<String> },
    /// A consent to supersede or revoke is not in a state that allows it (FAILED_PRECONDITION, same
    /// reasons): the caller has to look at the consent again rather than retry.
    #[error("consent {consent_id}: {refusal}")]
    ConsentConflict { consent_id: String, refusal: crate::consent::ConsentRefusal },
    /// A verification receipt was asked for and could not be signed (INTERNAL): the gateway's signing key
    /// is unusable. The verdicts are not sent unsigned.
    #[error("the verification receipt could not be signed")]
    ReceiptNotSigned,
    /// A rate or concurrency limit refused the call (RESOURCE_EXHAUSTED, RATE_LIMITED): `subject` is the
    /// quota (`department:tax`, `department:tax/method:…`, `department:tax/concurrency`), `retry_after`
    /// the exact wait until a call would conform.
    #[error("{subject}: over the limit of {description}; retry after {:.3} s", .retry_after.as_secs_f64())]
    RateLimited { subject: String, description: String, retry_after: std::time::Duration },
    /// The harvest guard refused a new subject (RESOURCE_EXHAUSTED, BUDGET_EXHAUSTED): `subject` is
    /// `department:<d>/purpose:<p>`, `retry_after` the time until the full window rolls over.
    #[error("{subject}: {description}; retry after {:.0} s", .retry_after.as_secs_f64().ceil())]
    BudgetExhausted { subject: String, description: String, retry_after: std::time::Duration },
    /// The limits file read by a reload is invalid; the limits in force stay in force.
    #[error("{0}")]
    LimitsInvalid(crate::limits::LimitsError),
}

impl ApiError {
    fn reason(&self) -> ErrorReason {
        match self {
            ApiError::NoIdentity => ErrorReason::ClientIdentityMissing,
            ApiError::CertificateRevoked { .. } => ErrorReason::CertificateRevoked,
            ApiError::CertificateExpired { .. } => ErrorReason::CertificateExpired,
            ApiError::RoleNotAllowed { .. } => ErrorReason::RoleNotPermitted,
            ApiError::UnknownMethod(_) => ErrorReason::MethodUnknown,
            ApiError::NotImplemented { .. } => ErrorReason::MethodNotImplemented,
            ApiError::InvalidArgument(_) => ErrorReason::InvalidRequest,
            ApiError::NotFound(_) => ErrorReason::ResourceNotFound,
            ApiError::StoreUnavailable => ErrorReason::StoreUnavailable,
            ApiError::SourcesUnavailable(_) => ErrorReason::SourcesUnavailable,
            ApiError::AuditUnavailable => ErrorReason::AuditUnavailable,
            ApiError::Overloaded { .. } => ErrorReason::Overloaded,
            ApiError::DeadlineExceeded => ErrorReason::DeadlineExceeded,
            ApiError::ShuttingDown => ErrorReason::ShuttingDown,
            ApiError::PurposeNotPermitted { .. } => ErrorReason::PurposeNotPermitted,
            ApiError::SubjectNotFound => ErrorReason::SubjectNotFound,
            ApiError::SubjectAmbiguous(_) => ErrorReason::SubjectAmbiguous,
            ApiError::ConsentRefused { refusal, .. } | ApiError::ConsentConflict { refusal, .. } => {
                consent_reason(refusal)
            }
            ApiError::PolicyInvalid(_) => ErrorReason::PolicyInvalid,
            ApiError::PurposeUnknown(_) => ErrorReason::PurposeUnknown,
            ApiError::ConsentRequired { .. } => ErrorReason::ConsentRequired,
            ApiError::ConsentInsufficient { .. } => ErrorReason::ConsentInsufficient,
            ApiError::ReceiptNotSigned => ErrorReason::Unspecified,
            ApiError::RateLimited { .. } => ErrorReason::RateLimited,
            ApiError::BudgetExhausted { .. } => ErrorReason::BudgetExhausted,
            ApiError::LimitsInvalid(_) => ErrorReason::PolicyInvalid,
        }
    }

    fn code(&self) -> Code {
        match self {
            ApiError::NoIdentity
            | ApiError::CertificateRevoked { .. }
            | ApiError::CertificateExpired { .. } => Code::Unauthenticated,
            ApiError::RoleNotAllowed { .. } => Code::PermissionDenied,
            ApiError::UnknownMethod(_) | ApiError::NotImplemented { .. } => Code::Unimplemented,
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::StoreUnavailable | ApiError::SourcesUnavailable(_) | ApiError::AuditUnavailable => {
                Code::Unavailable
            }
            ApiError::Overloaded { .. } | ApiError::ShuttingDown => Code::Unavailable,
            ApiError::DeadlineExceeded => Code::DeadlineExceeded,
            ApiError::PurposeNotPermitted { .. } => Code::PermissionDenied,
            ApiError::SubjectNotFound => Code::NotFound,
            ApiError::ConsentRefused { .. }
            | ApiError::ConsentRequired { .. }
            | ApiError::ConsentInsufficient { .. } => Code::PermissionDenied,
            ApiError::ConsentConflict { .. } => Code::FailedPrecondition,
            ApiError::SubjectAmbiguous(_) | ApiError::PolicyInvalid(_) => Code::FailedPrecondition,
            ApiError::PurposeUnknown(_) => Code::InvalidArgument,
            ApiError::ReceiptNotSigned => Code::Internal,
            ApiError::RateLimited { .. } | ApiError::BudgetExhausted { .. } => Code::ResourceExhausted,
            ApiError::LimitsInvalid(_) => Code::FailedPrecondition,
        }
    }

    fn metadata(&self) -> HashMap<String, String> {
        match self {
            ApiError::RoleNotAllowed { method, required, actual, .. } => HashMap::from([
                ("method".to_owned(), method.clone()),
                ("required_roles".to_owned(), required.clone()),
                ("caller_role".to_owned(), actual.clone()),
            ]),
            ApiError::CertificateRevoked { serial } | ApiError::CertificateExpired { serial } => {
                HashMap::from([("serial".to_owned(), serial.clone())])
            }
            ApiError::SourcesUnavailable(departments) => {
                HashMap::from([("departments".to_owned(), departments.join(","))])
            }
            ApiError::SubjectAmbiguous(fields) => {
                HashMap::from([("disambiguating_fields".to_owned(), fields.join(","))])
            }
            ApiError::PurposeNotPermitted { purpose, .. } | ApiError::ConsentRequired { purpose } => {
                HashMap::from([("purpose".to_owned(), purpose.clone())])
            }
            ApiError::ConsentInsufficient { consent_id, missing } => HashMap::from([
                ("consent_id".to_owned(), consent_id.clone()),
                ("missing_categories".to_owned(), missing.join(",")),
            ]),
            ApiError::ConsentRefused { consent_id, refusal }
            | ApiError::ConsentConflict { consent_id, refusal } => {
                let mut metadata = HashMap::from([("consent_id".to_owned(), consent_id.clone())]);
                if let crate::consent::ConsentRefusal::Superseded { by } = refusal {
                    metadata.insert("superseded_by".to_owned(), by.clone());
                }
                metadata
            }
            _ => HashMap::new(),
        }
    }
}

/// The ErrorInfo reason of a consent refusal.
fn consent_reason(refusal: &crate::consent::ConsentRefusal) -> ErrorReason {
    use crate::consent::ConsentRefusal;
    match refusal {
        ConsentRefusal::NotFound => ErrorReason::ConsentNotFound,
        ConsentRefusal::Revoked => ErrorReason::ConsentRevoked,
        ConsentRefusal::Expired => ErrorReason::ConsentExpired,
        ConsentRefusal::Superseded { .. } => ErrorReason::ConsentSuperseded,
        ConsentRefusal::Mismatch => ErrorReason::ConsentMismatch,
    }
}

impl ApiError {
    pub fn into_status(self) -> Status {
        self.into()
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        error.status()
    }
}

impl ApiError {
    /// The status this error is sent as (ErrorInfo always; BadRequest and RetryInfo where they apply).
    pub fn status(&self) -> Status {
        let error = self;
        let mut details =
            ErrorDetails::with_error_info(error.reason().as_str_name(), ERROR_DOMAIN, error.metadata());
        if let ApiError::StoreUnavailable
        | ApiError::SourcesUnavailable(_)
        | ApiError::AuditUnavailable
        | ApiError::Overloaded { .. }
        | ApiError::ShuttingDown = error
        {
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
        }
        match error {
            ApiError::InvalidArgument(violations) => {
                for (field, description) in violations {
                    details.add_bad_request_violation(field.clone(), description.clone());
                }
            }
            ApiError::PolicyInvalid(policy) => {
                for violation in policy.violations() {
                    details.add_bad_request_violation(violation.path.clone(), violation.problem.clone());
                }
            }
            ApiError::PurposeUnknown(_) => {
                details.add_bad_request_violation("purpose", "not a purpose of the catalogue in force");
            }
            ApiError::RateLimited { subject, description, retry_after }
            | ApiError::BudgetExhausted { subject, description, retry_after } => {
                details.add_quota_failure_violation(subject.clone(), description.clone());
                details.set_retry_info(Some(*retry_after));
            }
            ApiError::LimitsInvalid(limits) => {
                for violation in limits.violations() {
                    details.add_bad_request_violation(violation.path.clone(), violation.problem.clone());
                }
            }
            _ => {}
        }
        let message = match error {
            ApiError::InvalidArgument(violations) => {
                let fields: Vec<_> = violations.iter().map(|(f, d)| format!("{f}: {d}")).collect();
                format!("invalid request: {}", fields.join("; "))
            }
            other => other.to_string(),
        };
        Status::with_error_details(error.code(), message, details)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        tracing::error!(error = %error, "store failure");
        ApiError::StoreUnavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_denial_is_permission_denied_with_error_info() {
        let status: Status = ApiError::RoleNotAllowed {
            method: "/fedx.v1.AdminService/ListCertificates".into(),
            required: "admin".into(),
            dept: "tax".into(),
            actual: "consumer".into(),
        }
        .into();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(status.message().contains("requires role admin"), "{}", status.message());
        let info = status.get_details_error_info().expect("ErrorInfo attached");
        assert_eq!(info.reason, "ROLE_NOT_PERMITTED");
        assert_eq!(info.domain, "fedx.v1");
        assert_eq!(info.metadata.get("required_roles").map(String::as_str), Some("admin"));
    }

    #[test]
    fn invalid_argument_carries_field_violations() {
        let status: Status = ApiError::InvalidArgument(vec![("serial".into(), "must be hex".into())]).into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().expect("BadRequest attached");
        assert_eq!(bad.field_violations[0].field, "serial");
    }
}
