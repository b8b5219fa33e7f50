//! `fedx.v1.IdentityService`: decode and validate, resolve, and answer with the worker reference and
//! the evidence summary — field names and scores, never record values or record keys.
//!
//! The purpose is required, must be in the catalogue in force, the caller's department registered for it,
//! and it must grant some worker data: resolution discloses only the reference and evidence summary, but
//! a purpose with no worker data (employer compliance, access history) has no reason to ask who a worker
//! is.

use std::sync::Arc;

use fedx_adapters::ident::Sex;
use fedx_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::audit_layer::note;
use super::authz::caller_of;
use super::error::ApiError;
use super::purpose::{check_purpose_code, permitted_purpose};
use crate::identity::reference::WorkerRef;
use crate::identity::resolver::{ResolveError, SourceOutcome};
use crate::identity::{MatchClass, Query, Resolution, SubjectInput};
use crate::server::GatewayState;

pub struct IdentitySvc {
    state: GatewayState,
}

impl IdentitySvc {
    pub fn new(state: GatewayState) -> IdentitySvc {
        IdentitySvc { state }
    }
}

#[tonic::async_trait]
impl pb::identity_service_server::IdentityService for IdentitySvc {
    async fn resolve_identity(
        &self,
        request: Request<pb::ResolveIdentityRequest>,
    ) -> Result<Response<pb::ResolveIdentityResponse>, Status> {
        let caller = caller_of(&request)?;
        note(&request, |n| n.purpose = request.get_ref().purpose.trim().to_owned());
        let (purpose, query) = validate(request.get_ref())?;
        let catalogue = self.state.policy.current();
        let permitted = permitted_purpose(&catalogue, &purpose, &caller)?;
        if !permitted.grants_worker_data() {
            // Minimum necessity: a purpose that discloses nothing about workers has no need to know
            // who a worker is (employer checks ask about the enterprise, access history resolves its own
            // subject).
            return Err(ApiError::PurposeNotPermitted {
                purpose,
                why: "it grants no worker data, so it gives no reason to resolve a worker",
            }
            .into());
        }
        let budget = crate::resilience::budget(
            crate::resilience::Deadline::of(&request),
            self.state.identity.model().config.deadline,
        );
        let resolution = self.state.identity.resolve_within(&query, budget).await.map_err(unavailable)?;
        // The harvest guard, once the worker is known: a refusal's record names them and discloses nothing.
        let admitted = match &resolution.worker_ref {
            Some(w) => self.state.limits.admit_subject(&caller.dept, &purpose, &w.value),
            None => Ok(()),
        };
        note(&request, |n| {
            n.sources_consulted = resolution.sources.iter().map(|s| s.dept.code().to_owned()).collect();
            if let Some(w) = &resolution.worker_ref {
                n.worker_ref = w.value.clone();
                if admitted.is_ok() {
                    n.disclosed_fields = vec!["identity.worker_ref".into(), "identity.links".into()];
                }
            }
        });
        admitted?;
        tracing::info!(
            dept = %caller.dept,
            purpose = %purpose,
            status = ?resolution.status,
            worker_ref = resolution.worker_ref.as_ref().map(|r| r.value.as_str()).unwrap_or("-"),
            "identity resolution"
        );
        Ok(Response::new(to_proto(&resolution)))
    }
}

pub(crate) fn unavailable(e: ResolveError) -> ApiError {
    match e {
        ResolveError::SourcesUnavailable { departments } => {
            ApiError::SourcesUnavailable(departments.iter().map(|d| d.code().to_owned()).collect())
        }
    }
}

/// Resolves a subject given by identifiers to exactly one worker reference, for services that take a
/// subject but answer about the log (audit queries, access history). Not found and ambiguous are errors
/// here; the ambiguity error names only the query fields that would settle it.
pub async fn resolve_subject(
    state: &GatewayState,
    subject: &pb::SubjectQuery,
    field: &str,
) -> Result<WorkerRef, ApiError> {
    let input = subject_input(subject).map_err(|(f, d)| ApiError::InvalidArgument(vec![(f, d)]))?;
    let query = Query::parse(&input, field).map_err(ApiError::InvalidArgument)?;
    let resolution = resolve_one(state, &query).await?;
    resolution.worker_ref.clone().ok_or(ApiError::SubjectNotFound)
}

/// Resolves a parsed subject to exactly one worker, for services that disclose about that worker (views,
/// verification, consents). NOT_FOUND and AMBIGUOUS are errors; the ambiguity error names only the query
/// fields that would settle it.
pub async fn resolve_one(state: &GatewayState, query: &Query) -> Result<Arc<Resolution>, ApiError> {
    resolve_one_within(state, query, state.identity.model().config.deadline).await
}

/// [`resolve_one`] within `budget` (what is left of the caller's deadline: [`crate::resilience::budget`]).
pub async fn resolve_one_within(
    state: &GatewayState,
    query: &Query,
    budget: std::time::Duration,
) -> Result<Arc<Resolution>, ApiError> {
    let resolution = state.identity.resolve_within(query, budget).await.map_err(unavailable)?;
    match resolution.status {
        crate::identity::Status::Resolved if resolution.worker_ref.is_some() => Ok(resolution),
        crate::identity::Status::Resolved | crate::identity::Status::NotFound => {
            Err(ApiError::SubjectNotFound)
        }
        crate::identity::Status::Ambiguous => Err(ApiError::SubjectAmbiguous(
            resolution.disambiguating_fields.iter().map(|f| (*f).to_owned()).collect(),
        )),
    }
}

/// Validates the request: every problem at once, as BadRequest field violations.
pub fn validate(request: &pb::ResolveIdentityRequest) -> Result<(String, Query), ApiError> {
    let mut violations = Vec::new();
    let purpose = request.purpose.trim();
    if check_purpose_code(purpose, &mut violations) && purpose == "access_history" {
        violations.push(("purpose".to_owned(), "access_history is only for AccessHistoryService".to_owned()));
    }
    let query = parse_subject(request.subject.as_ref(), &mut violations);
    match query {
        Some(q) if violations.is_empty() => Ok((purpose.to_owned(), q)),
        _ => Err(ApiError::InvalidArgument(violations)),
    }
}

/// Parses a request's `subject`, adding every problem to `violations` (on `subject` or
/// `subject.<field>`, never echoing a value), for services that validate a subject together with their
/// other fields before resolving it. An empty subject is a violation.
pub(crate) fn parse_subject(
    subject: Option<&pb::SubjectQuery>,
    violations: &mut Vec<(String, String)>,
) -> Option<Query> {
    let Some(subject) = subject.filter(|s| **s != pb::SubjectQuery::default()) else {
        violations.push(("subject".to_owned(), "a subject is required".to_owned()));
        return None;
    };
    match subject_input(subject) {
        Err(v) => {
            violations.push(v);
            None
        }
        Ok(input) => match Query::parse(&input, "subject") {
            Ok(q) => Some(q),
            Err(v) => {
                violations.extend(v);
                None
            }
        },
    }
}

/// The subject as resolver input; shared with services that validate a subject together with their
/// other fields (every violation at once) before resolving it.
pub(crate) fn subject_input(s: &pb::SubjectQuery) -> Result<SubjectInput, (String, String)> {
    let sex = match pb::Sex::try_from(s.sex) {
        Ok(pb::Sex::Unspecified) => None,
        Ok(pb::Sex::Male) => Some(Sex::Male),
        Ok(pb::Sex::Female) => Some(Sex::Female),
        Err(_) => return Err(("subject.sex".to_owned(), "unknown sex value".to_owned())),
    };
    Ok(SubjectInput {
        citizen_id: s.citizen_id.clone(),
        name: s.name.clone(),
        birth_date: s.birth_date.clone(),
        sex,
        phone: s.phone.clone(),
        region_code: s.region_code.clone(),
    })
}

fn status_to_proto(s: crate::identity::Status) -> pb::ResolutionStatus {
    match s {
        crate::identity::Status::Resolved => pb::ResolutionStatus::Resolved,
        crate::identity::Status::Ambiguous => pb::ResolutionStatus::Ambiguous,
        crate::identity::Status::NotFound => pb::ResolutionStatus::NotFound,
    }
}

fn class_to_proto(c: MatchClass) -> pb::MatchClass {
    match c {
        MatchClass::Linked => pb::MatchClass::Linked,
        MatchClass::Possible => pb::MatchClass::Possible,
        MatchClass::NotLinked => pb::MatchClass::NotLinked,
    }
}

/// The wire answer. AMBIGUOUS answers carry no links at all: which sources hold records of people with
/// that name is itself information about the candidates.
pub fn to_proto(r: &Resolution) -> pb::ResolveIdentityResponse {
    let resolved = r.status == crate::identity::Status::Resolved;
    let links = if r.status == crate::identity::Status::Ambiguous {
        Vec::new()
    } else {
        r.sources.iter().filter(|s| s.unavailable.is_none()).map(|s| link(s, resolved)).collect()
    };
    pb::ResolveIdentityResponse {
        worker_ref: r.worker_ref.as_ref().map(|w| w.value.clone()).unwrap_or_default(),
        worker_ref_key_id: r.worker_ref.as_ref().map(|w| w.key_id.clone()).unwrap_or_default(),
        status: status_to_proto(r.status) as i32,
        confidence: r.confidence,
        links,
        disambiguating_fields: r.disambiguating_fields.iter().map(|f| (*f).to_owned()).collect(),
        unavailable_departments: r.unavailable().map(|d| d.code().to_owned()).collect(),
    }
}

fn link(s: &SourceOutcome, resolved: bool) -> pb::SourceLink {
    match (&s.best, resolved) {
        (Some(best), true) => pb::SourceLink {
            department: s.dept.code().to_owned(),
            match_class: class_to_proto(best.class) as i32,
            score: best.score,
            agreeing_fields: best.agreeing().into_iter().map(str::to_owned).collect(),
            disagreeing_fields: best.disagreeing().into_iter().map(str::to_owned).collect(),
        },
        _ => pb::SourceLink {
            department: s.dept.code().to_owned(),
            match_class: pb::MatchClass::NotLinked as i32,
            score: 0.0,
            agreeing_fields: Vec::new(),
            disagreeing_fields: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(purpose: &str, subject: Option<pb::SubjectQuery>) -> pb::ResolveIdentityRequest {
        pb::ResolveIdentityRequest { purpose: purpose.into(), subject }
    }

    fn violations(e: ApiError) -> Vec<String> {
        match e {
            ApiError::InvalidArgument(v) => v.into_iter().map(|(f, _)| f).collect(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn all_violations_are_reported_together() {
        let subject = pb::SubjectQuery {
            citizen_id: "1234".into(),
            birth_date: "31/12/1990".into(),
            ..Default::default()
        };
        let v = violations(validate(&request("", Some(subject))).unwrap_err());
        assert_eq!(v, ["purpose", "subject.citizen_id", "subject.birth_date"]);
        let v = violations(validate(&request("wage_arrears_investigation", None)).unwrap_err());
        assert_eq!(v, ["subject"]);
        let v =
            violations(validate(&request("access_history", Some(pb::SubjectQuery::default()))).unwrap_err());
        assert_eq!(v, ["purpose", "subject"]);
    }

    #[test]
    fn suspect_id_is_accepted_and_sex_enum_checked() {
        let subject = pb::SubjectQuery { citizen_id: "110105194912310021".into(), ..Default::default() };
        assert!(validate(&request("wage_arrears_investigation", Some(subject))).is_ok());
        let subject =
            pb::SubjectQuery { citizen_id: "11010519491231002X".into(), sex: 9, ..Default::default() };
        let v = violations(validate(&request("wage_arrears_investigation", Some(subject))).unwrap_err());
        assert_eq!(v, ["subject.sex"]);
    }
}
