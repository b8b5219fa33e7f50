//! `fedx.v1.WorkerViewService`: the main exchange. Checks run in the order the contract promises, each
//! refusal recorded in the exchange log like any answer:
//!
//! 1. the request is well formed (every bad field reported at once);
//! 2. the purpose is in the catalogue (INVALID_ARGUMENT otherwise), the caller's department is registered
//!    for it and it grants worker data (PERMISSION_DENIED naming the purpose);
//! 3. a consent purpose names a consent (CONSENT_REQUIRED);
//! 4. the subject resolves to exactly one worker (NOT_FOUND / FAILED_PRECONDITION naming the fields that
//!    would settle it);
//! 5. the consent is ACTIVE, visible to the caller, for this worker, department and purpose — read from
//!    the database on every call, so a revocation on any replica applies to the next request — and covers
//!    the categories asked for explicitly (CONSENT_INSUFFICIENT naming the missing ones);
//! 6. the view is built from the sources concurrently ([`crate::view`]); a source that does not answer
//!    within the source timeout — or within what is left of the caller's deadline, if that is shorter
//!    ([`crate::resilience::deadline`]) — or whose circuit is open leaves a marked gap (`partial`), and
//!    only when no needed source answered is the call UNAVAILABLE.
//!
//! The exchange record names the legal basis, the sources consulted and every field disclosed (names,
//! never values) before the response leaves (the audit layer holds the response until it is durable).

use std::collections::BTreeSet;

use fedx_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::audit_layer::note;
use super::authz::caller_of;
use super::error::ApiError;
use super::identity::{parse_subject, resolve_one_within};
use super::purpose::{check_consent_id, check_purpose_code, legal_cover, permitted_purpose};
use crate::identity::Query;
use crate::policy::FieldCategory;
use crate::resilience::deadline::{self, Deadline};
use crate::server::GatewayState;
use crate::view::{build_view, LegalCover, ViewRequest};

pub struct WorkerViewSvc {
    state: GatewayState,
}

impl WorkerViewSvc {
    pub fn new(state: GatewayState) -> WorkerViewSvc {
        WorkerViewSvc { state }
    }
}

/// A request that passed validation.
#[derive(Debug)]
pub struct ViewQuery {
    pub purpose: String,
    pub subject: Query,
    /// Empty: every category the purpose grants.
    pub categories: BTreeSet<FieldCategory>,
    /// Empty when not given.
    pub consent_id: String,
}

/// Checks the request's form: every problem at once, as BadRequest field violations that never echo
/// the values.
pub fn validate(request: &pb::GetWorkerViewRequest) -> Result<ViewQuery, ApiError> {
    let mut violations = Vec::new();
    let purpose = request.purpose.trim();
    check_purpose_code(purpose, &mut violations);
    let subject = parse_subject(request.subject.as_ref(), &mut violations);
    let mut categories = BTreeSet::new();
    for (i, value) in request.field_categories.iter().enumerate() {
        match pb::FieldCategory::try_from(*value).ok().and_then(FieldCategory::from_proto) {
            Some(category) => {
                categories.insert(category);
            }
            None => {
                violations.push((format!("field_categories[{i}]"), format!("not a field category: {value}")))
            }
        }
    }
    let consent_id = check_consent_id(&request.consent_id, &mut violations);
    match subject {
        Some(subject) if violations.is_empty() => {
            Ok(ViewQuery { purpose: purpose.to_owned(), subject, categories, consent_id })
        }
        _ => Err(ApiError::InvalidArgument(violations)),
    }
}

#[tonic::async_trait]
impl pb::worker_view_service_server::WorkerViewService for WorkerViewSvc {
    async fn get_worker_view(
        &self,
        request: Request<pb::GetWorkerViewRequest>,
    ) -> Result<Response<pb::GetWorkerViewResponse>, Status> {
        let caller = caller_of(&request)?;
        note(&request, |n| n.purpose = request.get_ref().purpose.trim().to_owned());
        let query = validate(request.get_ref())?;

        // One catalogue snapshot decides the whole request, even if a reload lands meanwhile.
        let catalogue = self.state.policy.current();
        let purpose = permitted_purpose(&catalogue, &query.purpose, &caller)?;
        if !purpose.grants_worker_data() {
            return Err(ApiError::PurposeNotPermitted {
                purpose: purpose.code.clone(),
                why: "it grants no worker data, so it cannot be used for views",
            }
            .into());
        }
        if purpose.is_consent() && query.consent_id.is_empty() {
            return Err(ApiError::ConsentRequired { purpose: purpose.code.clone() }.into());
        }

        let deadline = Deadline::of(&request);
        let resolve_budget = deadline::budget(deadline, self.state.identity.model().config.deadline);
        let resolution = resolve_one_within(&self.state, &query.subject, resolve_budget).await?;
        let worker_ref = resolution.worker_ref.as_ref().map(|w| w.value.clone()).unwrap_or_default();
        note(&request, |n| n.worker_ref = worker_ref.clone());
        self.state.limits.admit_subject(&caller.dept, &purpose.code, &worker_ref)?;

        let cover = legal_cover(&self.state, purpose, &query.consent_id, &worker_ref, &caller).await?;
        if let LegalCover::Consent { consent_id, categories } = &cover {
            let missing: Vec<String> = query
                .categories
                .iter()
                .filter(|c| purpose.grants_category(**c) && !categories.contains(c))
                .map(|c| c.code().to_owned())
                .collect();
            if !missing.is_empty() {
                return Err(ApiError::ConsentInsufficient { consent_id: consent_id.clone(), missing }.into());
            }
        }
        note(&request, |n| n.legal_basis = Some(cover.to_record()));

        let outcome = build_view(&ViewRequest {
            resolution: &resolution,
            purpose,
            cover: &cover,
            requested: &query.categories,
            // Bounded by the caller's deadline, if any: the facts round gets most of what is left, the
            // employer-name round the rest.
            sources: &deadline::bounded(self.state.identity.sources(), deadline),
            timeout: deadline::first_round_budget(deadline, self.state.config.sources.timeout),
        })
        .await;
        note(&request, |n| {
            n.sources_consulted = outcome.consulted_departments.iter().map(|d| d.code().to_owned()).collect();
            n.disclosed_fields = outcome.disclosed_fields.clone();
        });
        if outcome.no_source_answered {
            return Err(ApiError::SourcesUnavailable(outcome.response.unavailable_departments).into());
        }
        tracing::info!(
            dept = %caller.dept,
            purpose = %purpose.code,
            worker_ref = %worker_ref,
            fields = outcome.disclosed_fields.len(),
            partial = outcome.response.partial,
            "worker view"
        );
        Ok(Response::new(outcome.response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::GetWorkerViewRequest {
        pb::GetWorkerViewRequest {
            purpose: "wage_arrears_investigation".into(),
            subject: Some(pb::SubjectQuery { citizen_id: "11010519491231002X".into(), ..Default::default() }),
            field_categories: vec![pb::FieldCategory::Employment as i32],
            consent_id: String::new(),
        }
    }

    fn violations(request: &pb::GetWorkerViewRequest) -> Vec<String> {
        match validate(request) {
            Err(ApiError::InvalidArgument(v)) => v.into_iter().map(|(field, _)| field).collect(),
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_request_passes() {
        let query = validate(&request()).expect("valid");
        assert_eq!(query.purpose, "wage_arrears_investigation");
        assert_eq!(query.categories, BTreeSet::from([FieldCategory::Employment]));
    }

    #[test]
    fn every_bad_field_is_reported_at_once_without_its_value() {
        let mut bad = request();
        bad.purpose = "Wage Arrears".into();
        bad.subject = Some(pb::SubjectQuery { citizen_id: "12345".into(), ..Default::default() });
        bad.field_categories = vec![pb::FieldCategory::Unspecified as i32, 99];
        bad.consent_id = "cs_\u{7}".into();
        let status: Status = validate(&bad).unwrap_err().into();
        assert!(!status.message().contains("12345"), "{}", status.message());
        assert_eq!(
            violations(&bad),
            ["purpose", "subject.citizen_id", "field_categories[0]", "field_categories[1]", "consent_id"]
        );
        let mut missing = request();
        missing.purpose.clear();
        missing.subject = None;
        assert_eq!(violations(&missing), ["purpose", "subject"]);
    }
}
