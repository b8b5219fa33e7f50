//! `fedx.v1.ConsentService`: registering, revoking and looking up consents (consumer role only).
//!
//! Requests are validated against the purpose catalogue in force — the purpose must rest on consent, the
//! categories must be within what it can grant, the validity within its maximum — with every bad field
//! reported at once and no value echoed. The subject is resolved to a worker reference before anything is
//! stored; the consent record and the audit record carry only that reference.
//!
//! Who may do what, and why:
//! - GrantConsent: any consumer department may register a consent it captured at its desk, for itself or
//!   for another grantee; the grantee must be registered for the purpose (it is the one that will rely on
//!   it). Superseding names a consent of the same worker, whichever department captured it: like a
//!   revocation it ends the old consent, and the worker may ask for that at any desk.
//! - RevokeConsent: any consumer department, by consent id — the worker may withdraw at any department's
//!   desk (consent.proto), and the id is only learnt from the capturing department or from ListConsents,
//!   which needs the worker's identifiers.
//! - GetConsent: only the grantee and the capturing department; to anyone else the consent does not exist.
//! - ListConsents: any consumer department that can identify the worker, so a front desk can show the
//!   worker everything they consented to.

use std::collections::BTreeSet;

use base64::Engine;
use fedx_proto::v1 as pb;
use time::{Duration, OffsetDateTime};
use tonic::{Request, Response, Status};

use super::audit::to_timestamp;
use super::audit_layer::note;
use super::authz::caller_of;
use super::convert::role_to_proto;
use super::error::ApiError;
use super::identity::{parse_subject, resolve_subject};
use super::purpose::check_purpose_code;
use crate::audit::record::LegalBasis;
use crate::authn::{is_dept_code, Caller};
use crate::consent::{
    is_well_formed_consent_id, Actor, CheckError, Consent, ConsentError, ConsentStatus, ListCursor,
    NewConsent, RevocationReason,
};
use crate::policy::{FieldCategory, PurposeCatalogue};
use crate::server::GatewayState;

/// How far in the past `valid_from` may lie: enough for a clock difference between the front desk and the
/// gateway, not enough to backdate a consent over requests already made.
pub const MAX_BACKDATING: Duration = Duration::minutes(5);
/// ListConsents page size when the request leaves it 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest ListConsents page.
pub const MAX_PAGE_SIZE: usize = 200;
/// Longest idempotency key, in characters.
const MAX_REQUEST_ID_CHARS: usize = 64;
/// Instants outside these years are typing mistakes, not validity periods.
const EARLIEST_YEAR: i32 = 2000;
const LATEST_YEAR: i32 = 2200;

pub struct ConsentSvc {
    state: GatewayState,
}

impl ConsentSvc {
    pub fn new(state: GatewayState) -> ConsentSvc {
        ConsentSvc { state }
    }
}

#[tonic::async_trait]
impl pb::consent_service_server::ConsentService for ConsentSvc {
    async fn grant_consent(
        &self,
        request: Request<pb::GrantConsentRequest>,
    ) -> Result<Response<pb::GrantConsentResponse>, Status> {
        let caller = caller_of(&request)?;
        let now = OffsetDateTime::now_utc();
        let catalogue = self.state.policy.current();
        let r = request.get_ref();
        // Only a catalogue code goes into the record: the field is free text until validated.
        if catalogue.purpose(&r.purpose).is_some() {
            note(&request, |n| n.purpose = r.purpose.clone());
        }
        let grant = validate_grant(r, &caller, &catalogue, now)?;
        let purpose = catalogue
            .purpose(&grant.purpose)
            .ok_or_else(|| ApiError::PurposeUnknown(grant.purpose.clone()))?;
        if !purpose.allows_department(&grant.grantee_dept) {
            return Err(ApiError::PurposeNotPermitted {
                purpose: grant.purpose.clone(),
                why: "the grantee department is not registered for it",
            }
            .into());
        }
        let subject =
            r.subject.as_ref().ok_or_else(|| invalid("subject", "the worker must be identified"))?;
        let worker = resolve_subject(&self.state, subject, "subject").await?;
        note(&request, |n| n.worker_ref = worker.value.clone());
        let granted = self
            .state
            .consents
            .grant(
                NewConsent {
                    worker_ref: worker.value.clone(),
                    grantee_dept: grant.grantee_dept,
                    purpose: grant.purpose,
                    categories: grant.categories,
                    valid_from: grant.valid_from,
                    valid_until: grant.valid_until,
                    captured_by: Actor::from(caller.as_ref()),
                    evidence_sha256: grant.evidence_sha256,
                    request_id: grant.request_id,
                    supersedes_consent_id: grant.supersedes_consent_id,
                },
                now,
            )
            .await
            .map_err(consent_error)?;
        let consent = granted.consent;
        note(&request, |n| n.legal_basis = Some(LegalBasis::Consent(consent.consent_id.clone())));
        tracing::info!(
            dept = %caller.dept,
            consent_id = %consent.consent_id,
            worker_ref = %consent.worker_ref,
            grantee = %consent.grantee_dept,
            purpose = %consent.purpose,
            supersedes = consent.supersedes_consent_id.as_deref().unwrap_or("-"),
            replayed = granted.replayed,
            "consent granted"
        );
        Ok(Response::new(pb::GrantConsentResponse { consent: Some(consent_to_proto(&consent, now)) }))
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<pb::RevokeConsentResponse>, Status> {
        let caller = caller_of(&request)?;
        let now = OffsetDateTime::now_utc();
        let r = request.get_ref();
        let mut violations = Vec::new();
        let consent_id = consent_id_field(&r.consent_id, "consent_id", &mut violations);
        let reason = revocation_reason(r.reason, &mut violations);
        let (Some(consent_id), Some(reason), true) = (consent_id, reason, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations).into());
        };
        // Read first so that the record names the worker and purpose even when the revocation is refused.
        let existing = self.state.consents.get(consent_id).await.map_err(ApiError::from)?;
        let existing = existing.ok_or_else(|| not_found(consent_id))?;
        note_consent(&request, &existing);
        let consent = self
            .state
            .consents
            .revoke(consent_id, &Actor::from(caller.as_ref()), reason, now)
            .await
            .map_err(consent_error)?;
        tracing::info!(
            dept = %caller.dept,
            consent_id = %consent.consent_id,
            worker_ref = %consent.worker_ref,
            reason = %reason,
            "consent revoked"
        );
        Ok(Response::new(pb::RevokeConsentResponse { consent: Some(consent_to_proto(&consent, now)) }))
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        let caller = caller_of(&request)?;
        let now = OffsetDateTime::now_utc();
        let mut violations = Vec::new();
        let Some(consent_id) = consent_id_field(&request.get_ref().consent_id, "consent_id", &mut violations)
        else {
            return Err(ApiError::InvalidArgument(violations).into());
        };
        let consent = self.state.consents.get(consent_id).await.map_err(ApiError::from)?;
        // Invisible and absent answer alike, so ids of other departments' consents are not confirmed.
        let consent = consent.filter(|c| c.visible_to(&caller.dept)).ok_or_else(|| not_found(consent_id))?;
        note_consent(&request, &consent);
        Ok(Response::new(pb::GetConsentResponse { consent: Some(consent_to_proto(&consent, now)) }))
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        caller_of(&request)?;
        let now = OffsetDateTime::now_utc();
        let r = request.get_ref();
        let mut violations = Vec::new();
        validate_subject(r.subject.as_ref(), &mut violations);
        let statuses = statuses(&r.statuses, &mut violations);
        let size = page_size(r.page_size, &mut violations);
        let after = decode_page_token(&r.page_token, &mut violations);
        let (Some(subject), true) = (r.subject.as_ref(), violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations).into());
        };
        let worker = resolve_subject(&self.state, subject, "subject").await?;
        note(&request, |n| n.worker_ref = worker.value.clone());
        let mut page = self
            .state
            .consents
            .list(&worker.value, &statuses, after.as_ref(), size + 1, now)
            .await
            .map_err(ApiError::from)?;
        let more = page.len() > size;
        page.truncate(size);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => encode_page_token(&last.cursor()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListConsentsResponse {
            worker_ref: worker.value,
            consents: page.iter().map(|c| consent_to_proto(c, now)).collect(),
            next_page_token,
        }))
    }
}

/// The wire form of a consent, its status computed at `now`.
pub fn consent_to_proto(c: &Consent, now: OffsetDateTime) -> pb::Consent {
    let revocation = c.revocation.as_ref();
    pb::Consent {
        consent_id: c.consent_id.clone(),
        worker_ref: c.worker_ref.clone(),
        grantee_department: c.grantee_dept.clone(),
        purpose: c.purpose.clone(),
        field_categories: c.categories.iter().map(|cat| cat.to_proto() as i32).collect(),
        valid_from: Some(to_timestamp(c.valid_from)),
        valid_until: Some(to_timestamp(c.valid_until)),
        status: status_to_proto(c.status(now)) as i32,
        captured_by: Some(actor_to_proto(&c.captured_by)),
        evidence_sha256: c.evidence_sha256.clone(),
        created_at: Some(to_timestamp(c.created_at)),
        revoked_at: revocation.map(|rev| to_timestamp(rev.at)),
        revoked_by: revocation.map(|rev| actor_to_proto(&rev.by)),
        revocation_reason: revocation
            .map_or(pb::RevocationReason::Unspecified, |rev| reason_to_proto(rev.reason))
            as i32,
        supersedes_consent_id: c.supersedes_consent_id.clone().unwrap_or_default(),
    }
}

/// The status for a refused request-time consent check (views, verification): PERMISSION_DENIED with the
/// CONSENT_* reason, or UNAVAILABLE when the store did not answer.
pub fn check_error(consent_id: &str, error: CheckError) -> ApiError {
    match error {
        CheckError::Refused(refusal) => {
            ApiError::ConsentRefused { consent_id: consent_id.to_owned(), refusal }
        }
        CheckError::Store(e) => e.into(),
    }
}

/// The status for a grant or revocation the store did not carry out.
pub fn consent_error(error: ConsentError) -> ApiError {
    match error {
        ConsentError::NotFound(id) => not_found(&id),
        ConsentError::Conflict { consent_id, refusal } => ApiError::ConsentConflict { consent_id, refusal },
        ConsentError::Store(e) => e.into(),
    }
}

pub fn status_to_proto(status: ConsentStatus) -> pb::ConsentStatus {
    match status {
        ConsentStatus::Active => pb::ConsentStatus::Active,
        ConsentStatus::Revoked => pb::ConsentStatus::Revoked,
        ConsentStatus::Expired => pb::ConsentStatus::Expired,
        ConsentStatus::Superseded => pb::ConsentStatus::Superseded,
    }
}

fn reason_to_proto(reason: RevocationReason) -> pb::RevocationReason {
    match reason {
        RevocationReason::WithdrawnByWorker => pb::RevocationReason::WithdrawnByWorker,
        RevocationReason::RegisteredInError => pb::RevocationReason::RegisteredInError,
        RevocationReason::EvidenceInvalid => pb::RevocationReason::EvidenceInvalid,
    }
}

fn actor_to_proto(a: &Actor) -> pb::Caller {
    pb::Caller {
        department: a.dept.clone(),
        role: role_to_proto(a.role) as i32,
        certificate_serial: a.serial.clone(),
        certificate_fingerprint: a.fingerprint.clone(),
    }
}

/// Puts the worker, purpose and consent concerned into the call's exchange record.
fn note_consent<T>(request: &Request<T>, c: &Consent) {
    note(request, |n| {
        n.worker_ref = c.worker_ref.clone();
        n.purpose = c.purpose.clone();
        n.legal_basis = Some(LegalBasis::Consent(c.consent_id.clone()));
    });
}

fn not_found(consent_id: &str) -> ApiError {
    ApiError::NotFound(format!("no consent {consent_id}"))
}

fn invalid(field: &str, description: &str) -> ApiError {
    ApiError::InvalidArgument(vec![(field.to_owned(), description.to_owned())])
}

/// A GrantConsentRequest that passed validation (the subject is resolved separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidGrant {
    pub grantee_dept: String,
    pub purpose: String,
    pub categories: BTreeSet<FieldCategory>,
    pub valid_from: OffsetDateTime,
    pub valid_until: OffsetDateTime,
    /// Lower case.
    pub evidence_sha256: String,
    pub request_id: Option<String>,
    pub supersedes_consent_id: Option<String>,
}

/// Validates a grant against the catalogue at `now`, reporting every bad field at once. A request whose
/// only fault is a purpose missing from the catalogue gets the PURPOSE_UNKNOWN reason.
pub fn validate_grant(
    r: &pb::GrantConsentRequest,
    caller: &Caller,
    catalogue: &PurposeCatalogue,
    now: OffsetDateTime,
) -> Result<ValidGrant, ApiError> {
    let mut violations = Vec::new();
    validate_subject(r.subject.as_ref(), &mut violations);

    let grantee_dept = if r.grantee_department.is_empty() {
        caller.dept.clone()
    } else {
        if !is_dept_code(&r.grantee_department) {
            violations
                .push(v("grantee_department", "department codes are lower-case letters, digits and '_'"));
        }
        r.grantee_department.clone()
    };

    let mut purpose_unknown = false;
    let purpose = if !check_purpose_code(&r.purpose, &mut violations) {
        None
    } else {
        match catalogue.purpose(&r.purpose) {
            None => {
                purpose_unknown = true;
                violations.push(v("purpose", "not a purpose of the catalogue in force"));
                None
            }
            Some(p) if !p.is_consent() => {
                violations.push(v("purpose", "the purpose rests on a statutory duty, not on consent"));
                None
            }
            Some(p) => Some(p),
        }
    };

    let mut categories = BTreeSet::new();
    if r.field_categories.is_empty() {
        violations.push(v("field_categories", "at least one category is required"));
    }
    for (i, raw) in r.field_categories.iter().enumerate() {
        let field = format!("field_categories[{i}]");
        match pb::FieldCategory::try_from(*raw).ok().and_then(FieldCategory::from_proto) {
            None => violations.push((field, "not a field category".to_owned())),
            Some(category) => match purpose {
                Some(p) if !p.grants_category(category) => {
                    violations.push((field, format!("the purpose cannot grant category {category}")))
                }
                _ => {
                    categories.insert(category);
                }
            },
        }
    }

    let valid_from = match &r.valid_from {
        None => Some(now),
        Some(ts) => match timestamp_field(ts) {
            None => {
                violations.push(v("valid_from", "not a valid time"));
                None
            }
            Some(t) if t < now - MAX_BACKDATING => {
                violations.push(v("valid_from", "may not be more than 5 minutes in the past"));
                None
            }
            Some(t) => Some(t),
        },
    };
    let valid_until = match &r.valid_until {
        None => {
            violations.push(v("valid_until", "the end of validity is required"));
            None
        }
        Some(ts) => {
            let until = timestamp_field(ts);
            if until.is_none() {
                violations.push(v("valid_until", "not a valid time"));
            }
            until
        }
    };
    if let (Some(from), Some(until)) = (valid_from, valid_until) {
        if until <= from {
            violations.push(v("valid_until", "must be after valid_from"));
        } else if let Some(p) = purpose {
            match p.max_consent_validity_days {
                Some(days) if until - from <= Duration::days(i64::from(days)) => {}
                Some(days) => violations.push((
                    "valid_until".to_owned(),
                    format!("at most {days} days after valid_from for this purpose"),
                )),
                None => {
                    violations.push(v("purpose", "the catalogue sets no consent validity for the purpose"))
                }
            }
        }
    }

    let evidence = r.evidence_sha256.as_str();
    if evidence.is_empty() {
        violations.push(v("evidence_sha256", "the SHA-256 of the signed consent form is required"));
    } else if evidence.len() != 64 || !evidence.bytes().all(|b| b.is_ascii_hexdigit()) {
        violations.push(v("evidence_sha256", "must be 64 hex digits"));
    }

    let supersedes = consent_id_optional(&r.supersedes_consent_id, "supersedes_consent_id", &mut violations);

    let request_id = if r.request_id.is_empty() {
        None
    } else {
        let chars = r.request_id.chars().count();
        if chars > MAX_REQUEST_ID_CHARS || r.request_id.chars().any(char::is_control) {
            violations.push(v("request_id", "must be 1 to 64 characters, without control characters"));
        }
        Some(r.request_id.clone())
    };

    match (purpose, valid_from, valid_until) {
        (Some(p), Some(valid_from), Some(valid_until)) if violations.is_empty() => Ok(ValidGrant {
            grantee_dept,
            purpose: p.code.clone(),
            categories,
            valid_from,
            valid_until,
            evidence_sha256: evidence.to_ascii_lowercase(),
            request_id,
            supersedes_consent_id: supersedes,
        }),
        _ if purpose_unknown && violations.len() == 1 => Err(ApiError::PurposeUnknown(r.purpose.clone())),
        _ => Err(ApiError::InvalidArgument(violations)),
    }
}

fn v(field: &str, description: &str) -> (String, String) {
    (field.to_owned(), description.to_owned())
}

/// Checks the subject's identifiers without resolving them (resolution happens once the whole request is
/// valid), adding violations on `subject` or `subject.<field>`.
fn validate_subject(subject: Option<&pb::SubjectQuery>, violations: &mut Vec<(String, String)>) {
    parse_subject(subject, violations);
}

/// A required consent id; the value is never echoed.
fn consent_id_field<'a>(id: &'a str, field: &str, violations: &mut Vec<(String, String)>) -> Option<&'a str> {
    if id.is_empty() {
        violations.push(v(field, "a consent id is required"));
        None
    } else {
        consent_id_optional(id, field, violations).map(|_| id)
    }
}

fn consent_id_optional(id: &str, field: &str, violations: &mut Vec<(String, String)>) -> Option<String> {
    if id.is_empty() {
        return None;
    }
    if !is_well_formed_consent_id(id) {
        violations.push(v(field, "not a consent id (at most 64 ASCII letters, digits, '_' or '-')"));
        return None;
    }
    Some(id.to_owned())
}

fn revocation_reason(raw: i32, violations: &mut Vec<(String, String)>) -> Option<RevocationReason> {
    match pb::RevocationReason::try_from(raw) {
        Ok(pb::RevocationReason::WithdrawnByWorker) => Some(RevocationReason::WithdrawnByWorker),
        Ok(pb::RevocationReason::RegisteredInError) => Some(RevocationReason::RegisteredInError),
        Ok(pb::RevocationReason::EvidenceInvalid) => Some(RevocationReason::EvidenceInvalid),
        Ok(pb::RevocationReason::Unspecified) | Err(_) => {
            violations.push(v("reason", "a revocation reason is required"));
            None
        }
    }
}

fn statuses(raw: &[i32], violations: &mut Vec<(String, String)>) -> BTreeSet<ConsentStatus> {
    let mut set = BTreeSet::new();
    for (i, value) in raw.iter().enumerate() {
        match pb::ConsentStatus::try_from(*value) {
            Ok(pb::ConsentStatus::Active) => set.insert(ConsentStatus::Active),
            Ok(pb::ConsentStatus::Revoked) => set.insert(ConsentStatus::Revoked),
            Ok(pb::ConsentStatus::Expired) => set.insert(ConsentStatus::Expired),
            Ok(pb::ConsentStatus::Superseded) => set.insert(ConsentStatus::Superseded),
            Ok(pb::ConsentStatus::Unspecified) | Err(_) => {
                violations.push((format!("statuses[{i}]"), "not a consent status".to_owned()));
                false
            }
        };
    }
    set
}

fn page_size(requested: i32, violations: &mut Vec<(String, String)>) -> usize {
    match usize::try_from(requested) {
        Err(_) => {
            violations.push(v("page_size", "must not be negative"));
            DEFAULT_PAGE_SIZE
        }
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(n) => n.min(MAX_PAGE_SIZE),
    }
}

/// An instant within the range the gateway accepts (years 2000 to 2200: anything else is a mistake).
fn timestamp_field(ts: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    let t = OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos),
    )
    .ok()?;
    (EARLIEST_YEAR..=LATEST_YEAR).contains(&t.year()).then_some(t)
}

/// Page tokens: base64url of `v1:<created µs>:<consent id>`, the last consent of the previous page. Opaque
/// to clients; decoded strictly, so anything this service did not issue is INVALID_ARGUMENT.
pub fn encode_page_token(cursor: &ListCursor) -> String {
    let text = format!("v1:{}:{}", crate::audit::record::time_to_us(cursor.created_at), cursor.consent_id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode_page_token(token: &str, violations: &mut Vec<(String, String)>) -> Option<ListCursor> {
    if token.is_empty() {
        return None;
    }
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let mut parts = text.splitn(3, ':');
            let (version, us, id) = (parts.next()?, parts.next()?, parts.next()?);
            let us: i64 = us.parse().ok()?;
            let created_at = crate::audit::record::time_from_us(us)?;
            (version == "v1" && is_well_formed_consent_id(id))
                .then(|| ListCursor { created_at, consent_id: id.to_owned() })
        });
    if cursor.is_none() {
        violations.push(v("page_token", "not a token this service issued"));
    }
    cursor
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::authn::Role;
    use crate::policy::BUILT_IN_CATALOGUE;

    fn caller() -> Caller {
        Caller {
            dept: "education".into(),
            role: Role::Consumer,
            serial: "01".into(),
            fingerprint: "00".repeat(32),
            not_after: i64::MAX,
        }
    }

    fn catalogue() -> PurposeCatalogue {
        PurposeCatalogue::from_toml(BUILT_IN_CATALOGUE).expect("the shipped catalogue is valid")
    }

    const NOW: OffsetDateTime = datetime!(2026-03-01 08:00 UTC);

    fn ts(t: OffsetDateTime) -> prost_types::Timestamp {
        to_timestamp(t)
    }

    fn good() -> pb::GrantConsentRequest {
        pb::GrantConsentRequest {
            subject: Some(pb::SubjectQuery { citizen_id: "11010519491231002X".into(), ..Default::default() }),
            grantee_department: String::new(),
            purpose: "child_school_enrolment".into(),
            field_categories: vec![pb::FieldCategory::Contributions as i32],
            valid_from: None,
            valid_until: Some(ts(NOW + Duration::days(30))),
            evidence_sha256: "AB".repeat(32),
            supersedes_consent_id: String::new(),
            request_id: "7c0d2a3e-1b1f-4c55-9f0e-0f8a4b7b8d11".into(),
        }
    }

    fn fields(e: ApiError) -> Vec<String> {
        match e {
            ApiError::InvalidArgument(v) => v.into_iter().map(|(f, _)| f).collect(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_good_grant_is_normalised() {
        let grant = validate_grant(&good(), &caller(), &catalogue(), NOW).unwrap();
        assert_eq!(grant.grantee_dept, "education");
        assert_eq!(grant.valid_from, NOW);
        assert_eq!(grant.evidence_sha256, "ab".repeat(32));
        assert_eq!(grant.categories, BTreeSet::from([FieldCategory::Contributions]));
    }

    #[test]
    fn every_bad_field_is_reported_without_values() {
        let request = pb::GrantConsentRequest {
            subject: Some(pb::SubjectQuery {
                citizen_id: "110105194912310021X".into(),
                ..Default::default()
            }),
            grantee_department: "Tax Office".into(),
            purpose: "wage_arrears_investigation".into(),
            field_categories: vec![0, 99],
            valid_from: Some(ts(NOW - Duration::hours(1))),
            valid_until: None,
            evidence_sha256: "xyz".into(),
            supersedes_consent_id: "not an id!".into(),
            request_id: "a".repeat(65),
        };
        let status: Status = validate_grant(&request, &caller(), &catalogue(), NOW).unwrap_err().into();
        assert!(!status.message().contains("110105"), "{}", status.message());
        let error = validate_grant(&request, &caller(), &catalogue(), NOW).unwrap_err();
        assert_eq!(
            fields(error),
            [
                "subject.citizen_id",
                "grantee_department",
                "purpose",
                "field_categories[0]",
                "field_categories[1]",
                "valid_from",
                "valid_until",
                "evidence_sha256",
                "supersedes_consent_id",
                "request_id",
            ]
        );
    }

    #[test]
    fn catalogue_limits_apply() {
        let mut r = good();
        r.field_categories =
            vec![pb::FieldCategory::Contributions as i32, pb::FieldCategory::Enterprise as i32];
        r.valid_until = Some(ts(NOW + Duration::days(181)));
        assert_eq!(
            fields(validate_grant(&r, &caller(), &catalogue(), NOW).unwrap_err()),
            ["field_categories[1]", "valid_until"]
        );
        let mut r = good();
        r.valid_from = Some(ts(NOW + Duration::days(10)));
        r.valid_until = Some(ts(NOW + Duration::days(5)));
        assert_eq!(fields(validate_grant(&r, &caller(), &catalogue(), NOW).unwrap_err()), ["valid_until"]);
        // A little clock skew is tolerated.
        let mut r = good();
        r.valid_from = Some(ts(NOW - Duration::minutes(4)));
        assert!(validate_grant(&r, &caller(), &catalogue(), NOW).is_ok());
        let mut r = good();
        r.purpose = "no_such_purpose".into();
        assert!(matches!(validate_grant(&r, &caller(), &catalogue(), NOW), Err(ApiError::PurposeUnknown(_))));
        r.evidence_sha256 = String::new();
        assert_eq!(
            fields(validate_grant(&r, &caller(), &catalogue(), NOW).unwrap_err()),
            ["purpose", "evidence_sha256"]
        );
    }

    #[test]
    fn page_tokens_round_trip_and_reject_forgeries() {
        let cursor = ListCursor { created_at: NOW, consent_id: "cs_0123456789abcdef0123456789abcdef".into() };
        let token = encode_page_token(&cursor);
        let mut v = Vec::new();
        assert_eq!(decode_page_token(&token, &mut v), Some(cursor));
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let forged = [
            "x".to_owned(),
            "12".to_owned(),
            engine.encode("v2:1:cs_1"),
            engine.encode("v1:abc:cs_1"),
            engine.encode("v1:1:"),
            engine.encode("v1:1:cs 1"),
        ];
        for bad in &forged {
            let mut v = Vec::new();
            assert_eq!(decode_page_token(bad, &mut v), None, "{bad}");
            assert_eq!(v.len(), 1);
        }
        assert!(v.is_empty());
    }
}
