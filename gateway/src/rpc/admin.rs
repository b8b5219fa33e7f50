//! `fedx.v1.AdminService`: certificate and policy administration over gRPC (role `admin`).

use fedx_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::audit_layer::note;
use super::authz::caller_of;
use super::convert::{role_to_proto, timestamp};
use super::error::ApiError;
use crate::server::GatewayState;
use crate::store::certificates::{CertRecord, CertStatus, RevocationReason, RevokeError};
use crate::store::now_unix;

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

pub struct AdminSvc {
    state: GatewayState,
}

impl AdminSvc {
    pub fn new(state: GatewayState) -> AdminSvc {
        AdminSvc { state }
    }
}

type ProtoReason = pb::CertificateRevocationReason;

fn reason_from_proto(value: i32) -> Result<RevocationReason, ApiError> {
    let reason = ProtoReason::try_from(value).map_err(|_| {
        ApiError::InvalidArgument(vec![("reason".into(), format!("unknown revocation reason {value}"))])
    })?;
    Ok(match reason {
        ProtoReason::Unspecified => RevocationReason::Unspecified,
        ProtoReason::KeyCompromise => RevocationReason::KeyCompromise,
        ProtoReason::CaCompromise => RevocationReason::CaCompromise,
        ProtoReason::AffiliationChanged => RevocationReason::AffiliationChanged,
        ProtoReason::Superseded => RevocationReason::Superseded,
        ProtoReason::CessationOfOperation => RevocationReason::CessationOfOperation,
        ProtoReason::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
        ProtoReason::AaCompromise => RevocationReason::AaCompromise,
    })
}

fn reason_to_proto(reason: RevocationReason) -> ProtoReason {
    match reason {
        RevocationReason::Unspecified => ProtoReason::Unspecified,
        RevocationReason::KeyCompromise => ProtoReason::KeyCompromise,
        RevocationReason::CaCompromise => ProtoReason::CaCompromise,
        RevocationReason::AffiliationChanged => ProtoReason::AffiliationChanged,
        RevocationReason::Superseded => ProtoReason::Superseded,
        RevocationReason::CessationOfOperation => ProtoReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => ProtoReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => ProtoReason::AaCompromise,
    }
}

fn status_to_proto(status: CertStatus) -> pb::CertificateStatus {
    match status {
        CertStatus::Revoked => pb::CertificateStatus::Revoked,
        CertStatus::Expired => pb::CertificateStatus::Expired,
        CertStatus::Valid | CertStatus::NotYetValid => pb::CertificateStatus::Issued,
    }
}

fn certificate_to_proto(record: &CertRecord, now: i64) -> pb::Certificate {
    pb::Certificate {
        serial: record.serial.clone(),
        department: record.dept.clone(),
        role: record.role.parse().map(|r| role_to_proto(r) as i32).unwrap_or_default(),
        not_before: Some(timestamp(record.not_before)),
        not_after: Some(timestamp(record.not_after)),
        status: status_to_proto(record.status(now)) as i32,
        revocation_reason: record.revocation_reason.map(|r| reason_to_proto(r) as i32).unwrap_or_default(),
        revoked_at: record.revoked_at.map(timestamp),
        fingerprint: record.fingerprint.clone(),
    }
}

/// Serials are hex; anything else cannot name a certificate and is a client error, not a lookup miss.
fn validate_serial(serial: &str) -> Result<String, ApiError> {
    let serial = serial.trim().to_ascii_lowercase();
    if serial.is_empty() || serial.len() > 40 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::InvalidArgument(vec![(
            "serial".into(),
            "must be 1 to 40 hexadecimal digits, as listed by ListCertificates".into(),
        )]));
    }
    Ok(serial)
}

/// A validated ListCertificates request. The registry holds one row per issued certificate (hundreds,
/// not millions), so filtering happens in memory and the page token is the offset into the ordered list.
struct ListQuery {
    department: Option<String>,
    statuses: Vec<pb::CertificateStatus>,
    page_size: usize,
    offset: usize,
}

impl TryFrom<pb::ListCertificatesRequest> for ListQuery {
    type Error = ApiError;

    fn try_from(request: pb::ListCertificatesRequest) -> Result<Self, ApiError> {
        let mut violations = Vec::new();
        let statuses = request
            .statuses
            .iter()
            .filter_map(|&s| match pb::CertificateStatus::try_from(s) {
                Ok(status) if status != pb::CertificateStatus::Unspecified => Some(status),
                _ => {
                    violations.push(("statuses".to_owned(), format!("unknown certificate status {s}")));
                    None
                }
            })
            .collect();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 || n as usize > MAX_PAGE_SIZE => {
                violations.push(("page_size".to_owned(), format!("must be between 0 and {MAX_PAGE_SIZE}")));
                DEFAULT_PAGE_SIZE
            }
            n => n as usize,
        };
        let offset = match request.page_token.as_str() {
            "" => 0,
            token => token.parse().unwrap_or_else(|_| {
                violations
                    .push(("page_token".to_owned(), "not a token returned by ListCertificates".to_owned()));
                0
            }),
        };
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        let department = Some(request.department).filter(|d| !d.is_empty());
        Ok(ListQuery { department, statuses, page_size, offset })
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminSvc {
    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        caller_of(&request)?;
        let query = ListQuery::try_from(request.into_inner())?;
        let now = now_unix();
        let mut matching: Vec<pb::Certificate> = self
            .state
            .store
            .certificates()
            .await
            .map_err(ApiError::from)?
            .iter()
            .filter(|r| query.department.as_ref().is_none_or(|d| &r.dept == d))
            .map(|r| certificate_to_proto(r, now))
            .filter(|c| query.statuses.is_empty() || query.statuses.iter().any(|s| *s as i32 == c.status))
            .collect();
        // Newest first, as documented; serial breaks ties so pages are stable.
        matching.sort_by(|a, b| {
            let key = |c: &pb::Certificate| c.not_before.as_ref().map_or(0, |t| t.seconds);
            key(b).cmp(&key(a)).then_with(|| a.serial.cmp(&b.serial))
        });
        let end = (query.offset + query.page_size).min(matching.len());
        let next_page_token = if end < matching.len() { end.to_string() } else { String::new() };
        let certificates = matching.drain(query.offset.min(end)..end).collect();
        Ok(Response::new(pb::ListCertificatesResponse { certificates, next_page_token }))
    }

    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let caller = caller_of(&request)?;
        let body = request.into_inner();
        let serial = validate_serial(&body.serial)?;
        let reason = reason_from_proto(body.reason)?;
        // Idempotent, as the contract says: revoking a revoked certificate returns it with its first reason.
        let record = match self.state.store.revoke_certificate(&serial, reason, now_unix()).await {
            Ok(record) => record,
            Err(RevokeError::AlreadyRevoked { .. }) => {
                let existing = self.state.store.certificate(&serial).await.map_err(ApiError::from)?;
                existing.ok_or_else(|| ApiError::NotFound(format!("no certificate with serial {serial}")))?
            }
            Err(e @ RevokeError::UnknownSerial(_)) => return Err(ApiError::NotFound(e.to_string()).into()),
            Err(RevokeError::Store(e)) => return Err(ApiError::from(e).into()),
        };
        // This replica stops serving the certificate now; the others see it at their next poll.
        self.state.revocation.insert(&record.serial);
        tracing::info!(serial = %record.serial, dept = %record.dept, by = %caller.dept, %reason, "certificate revoked");
        Ok(Response::new(pb::RevokeCertificateResponse {
            certificate: Some(certificate_to_proto(&record, now_unix())),
        }))
    }

    async fn get_purpose_catalogue(
        &self,
        request: Request<pb::GetPurposeCatalogueRequest>,
    ) -> Result<Response<pb::GetPurposeCatalogueResponse>, Status> {
        caller_of(&request)?;
        let catalogue = self.state.policy.current();
        Ok(Response::new(pb::GetPurposeCatalogueResponse {
            policy_version: catalogue.version.clone(),
            purposes: catalogue.to_proto(),
        }))
    }

    /// Re-reads the purpose catalogue from its configured source, and the limits file if one is
    /// configured (`limits.file`): both are validated before either is put in force, so an invalid one
    /// changes nothing. The department registry is part of the process configuration and changes with a
    /// restart; it is reported, not reloaded. The audit record of the call carries both versions as its
    /// outcome detail, so every change is in the log.
    async fn reload_policy(
        &self,
        request: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        let caller = caller_of(&request)?;
        let validate_only = request.get_ref().validate_only;
        let departments = self.state.departments.as_ref();
        let limits = self.state.limits.prepare_reload().map_err(ApiError::LimitsInvalid)?;
        let outcome = if validate_only {
            self.state.policy.check(departments)
        } else {
            self.state.policy.reload(departments)
        }
        .map_err(ApiError::PolicyInvalid)?;
        let verb = if validate_only { "POLICY_VALID" } else { "POLICY_RELOADED" };
        let limits_detail = match limits {
            Some(prepared) if validate_only => format!("; limits {} valid", prepared.version()),
            Some(prepared) => {
                let reload = self.state.limits.apply(prepared);
                format!("; limits {} -> {}", reload.previous_version, reload.version)
            }
            None => String::new(),
        };
        note(&request, |n| {
            n.success_detail =
                format!("{verb} {} -> {}{limits_detail}", outcome.previous_version, outcome.version)
        });
        tracing::info!(
            by = %caller.dept,
            validate_only,
            previous = %outcome.previous_version,
            version = %outcome.version,
            limits = %limits_detail,
            "purpose catalogue reload"
        );
        Ok(Response::new(pb::ReloadPolicyResponse {
            policy_version: outcome.version,
            previous_policy_version: outcome.previous_version,
            purpose_count: i32::try_from(outcome.purpose_count).unwrap_or(i32::MAX),
            department_count: i32::try_from(departments.departments().count()).unwrap_or(i32::MAX),
            loaded_at: (!validate_only).then(|| timestamp(now_unix())),
        }))
    }
}
