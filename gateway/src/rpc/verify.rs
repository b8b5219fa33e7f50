//! `fedx.v1.VerificationService`: verdicts on claims ([`crate::verify`]), signed receipts, and batches.
//!
//! JointVerify checks, in order: the request's form (every bad field at once); the purpose (unknown →
//! INVALID_ARGUMENT, department not registered → PERMISSION_DENIED); then, only if some claim about the
//! worker is allowed by the purpose, the subject is resolved and the legal basis checked (a consent
//! purpose needs a consent id, CONSENT_REQUIRED; the consent must be ACTIVE for this worker, department and
//! purpose, CONSENT_*). Claims the purpose or the consent does not cover come back UNDETERMINED
//! (NOT_PERMITTED); an unknown or ambiguous subject is not an error either: the worker claims come back
//! UNDETERMINED with the reason.
//!
//! BatchVerify runs each item through the same function, after counting it against the rate limits as a
//! JointVerify call ([`crate::limits`]: a refused item is answered with code 8, RATE_LIMITED, and recorded,
//! and the stream goes on). Items are read from the stream only while fewer
//! than [`MAX_ITEMS_IN_FLIGHT`] are being verified, and a verified item waits for room in a queue of
//! [`OUTPUT_QUEUE`] answers: a client that stops reading answers stops the gateway reading its items
//! (HTTP/2 flow control then stops the client), so a stream of any length holds at most
//! `MAX_ITEMS_IN_FLIGHT + OUTPUT_QUEUE` items in the gateway. Each item is an exchange of its own: its
//! record (request id `<stream request id>.<item number>`) is durable before its answer is queued; if the
//! log cannot be written the stream ends with UNAVAILABLE (AUDIT_UNAVAILABLE) and that item is not
//! answered. The stream itself is recorded once, when it starts, by the audit layer.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use fedx_proto::v1 as pb;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tonic_types::StatusExt;

use super::audit_layer::{exchange, note, now_micros, AuditNote, ExchangeFacts, ExchangeIds};
use super::authz::caller_of;
use super::error::ApiError;
use super::identity::parse_subject;
use super::purpose::{check_consent_id, check_purpose_code, legal_cover, permitted_purpose};
use crate::authn::Caller;
use crate::identity::{Query, Status as ResolutionStatus};
use crate::server::GatewayState;
use crate::verify::{allowed_by_purpose, parse_claims, receipt, verify, About, Claim, VerifyRequest};
use crate::view::cst_date;

/// Items of one BatchVerify stream being verified at once.
pub const MAX_ITEMS_IN_FLIGHT: usize = 16;
/// Verified items waiting for the client to read them.
pub const OUTPUT_QUEUE: usize = 16;
/// Items one stream may carry (duplicate item ids are detected across all of them).
pub const MAX_BATCH_ITEMS: u64 = 100_000;
/// Longest item id (verify.proto).
const MAX_ITEM_ID_LEN: usize = 64;
/// The method recorded for each BatchVerify item.
const BATCH_METHOD: &str = "/fedx.v1.VerificationService/BatchVerify";
/// The method each BatchVerify item counts as against the rate limits.
const JOINT_VERIFY_METHOD: &str = "/fedx.v1.VerificationService/JointVerify";

#[derive(Clone)]
pub struct VerificationSvc {
    state: GatewayState,
}

impl VerificationSvc {
    pub fn new(state: GatewayState) -> VerificationSvc {
        VerificationSvc { state }
    }
}

/// A request that passed validation.
#[derive(Debug)]
pub struct VerifyQuery {
    pub purpose: String,
    pub subject: Option<Query>,
    pub claims: Vec<Claim>,
    /// Empty when not given.
    pub consent_id: String,
}

/// Checks the request's form: every problem at once, as BadRequest field violations that never echo
/// the values.
pub fn validate(request: &pb::JointVerifyRequest, now: OffsetDateTime) -> Result<VerifyQuery, ApiError> {
    let mut violations = Vec::new();
    let purpose = request.purpose.trim();
    check_purpose_code(purpose, &mut violations);
    let has_subject = request.subject.as_ref().is_some_and(|s| *s != pb::SubjectQuery::default());
    let subject = if has_subject { parse_subject(request.subject.as_ref(), &mut violations) } else { None };
    let claims = parse_claims(&request.claims, now, &mut violations);
    if let Some(claims) = &claims {
        if !has_subject {
            if let Some(i) = claims.iter().position(Claim::needs_subject) {
                violations.push(("subject".to_owned(), format!("required: claims[{i}] is about a worker")));
            }
        }
    }
    let consent_id = check_consent_id(&request.consent_id, &mut violations);
    match claims {
        Some(claims) if violations.is_empty() => {
            Ok(VerifyQuery { purpose: purpose.to_owned(), subject, claims, consent_id })
        }
        _ => Err(ApiError::InvalidArgument(violations)),
    }
}

/// One JointVerify, for the unary call and for each BatchVerify item. What the exchange record should
/// say is written into `note` as soon as it is known, so refusals are recorded with it too.
pub async fn joint_verify(
    state: &GatewayState,
    caller: &Caller,
    ids: &ExchangeIds,
    request: &pb::JointVerifyRequest,
    note: &mut AuditNote,
) -> Result<pb::JointVerifyResponse, ApiError> {
    joint_verify_within(state, caller, ids, request, note, None).await
}

/// [`joint_verify`] with the sources bounded by the caller's deadline, if any
/// ([`crate::resilience::deadline`]): a claim whose source does not answer in time is UNDETERMINED
/// (SOURCE_UNAVAILABLE). BatchVerify items have no deadline of their own.
pub async fn joint_verify_within(
    state: &GatewayState,
    caller: &Caller,
    ids: &ExchangeIds,
    request: &pb::JointVerifyRequest,
    note: &mut AuditNote,
    deadline: Option<crate::resilience::Deadline>,
) -> Result<pb::JointVerifyResponse, ApiError> {
    note.purpose = request.purpose.trim().to_owned();
    let now = OffsetDateTime::now_utc();
    let query = validate(request, now)?;
    note.claims_verified = query.claims.iter().map(|c| c.type_name().to_owned()).collect();

    // One catalogue snapshot decides the whole request, even if a reload lands meanwhile.
    let catalogue = state.policy.current();
    let purpose = permitted_purpose(&catalogue, &query.purpose, caller)?;
    if purpose.claim_types.is_empty() {
        return Err(ApiError::PurposeNotPermitted {
            purpose: purpose.code.clone(),
            why: "it allows no claim types, so it cannot be used for verification",
        });
    }
    let has_subject = query.subject.is_some();
    let about_worker = query.claims.iter().any(|c| {
        matches!(c.about(has_subject), About::Worker(_)) && allowed_by_purpose(c, purpose, has_subject)
    });

    let mut resolution = None;
    // Without a resolved worker (no claim about one, or the subject did not resolve) no consent can be
    // checked; a statute holds whoever the subject is.
    let mut cover = crate::view::LegalCover::statutory(purpose);
    if let (true, Some(subject)) = (about_worker, &query.subject) {
        if purpose.is_consent() && query.consent_id.is_empty() {
            return Err(ApiError::ConsentRequired { purpose: purpose.code.clone() });
        }
        let budget = crate::resilience::budget(deadline, state.identity.model().config.deadline);
        let resolved =
            state.identity.resolve_within(subject, budget).await.map_err(super::identity::unavailable)?;
        if let (ResolutionStatus::Resolved, Some(worker_ref)) = (resolved.status, &resolved.worker_ref) {
            note.worker_ref = worker_ref.value.clone();
            state.limits.admit_subject(&caller.dept, &purpose.code, &worker_ref.value)?;
            cover = Some(legal_cover(state, purpose, &query.consent_id, &worker_ref.value, caller).await?);
        }
        resolution = Some(resolved);
    }
    note.legal_basis = cover.as_ref().map(|c| c.to_record());

    let outcome = verify(&VerifyRequest {
        claims: &query.claims,
        purpose,
        cover: cover.as_ref(),
        has_subject,
        resolution: resolution.as_deref(),
        sources: &crate::resilience::deadline::bounded(state.identity.sources(), deadline),
        timeout: crate::resilience::budget(deadline, state.config.sources.timeout),
        today: cst_date(now),
    })
    .await;
    note.sources_consulted = outcome.consulted.iter().map(|d| d.code().to_owned()).collect();

    let ambiguous = resolution.as_ref().is_some_and(|r| r.status == ResolutionStatus::Ambiguous);
    let mut response = pb::JointVerifyResponse {
        worker_ref: note.worker_ref.clone(),
        legal_basis: cover.as_ref().map(|c| c.to_proto()),
        results: outcome.results,
        disambiguating_fields: if ambiguous {
            resolution.iter().flat_map(|r| r.disambiguating_fields.iter().map(|f| (*f).to_owned())).collect()
        } else {
            Vec::new()
        },
        receipt: None,
    };
    if request.signed_receipt {
        let summary = pb::ReceiptSummary {
            receipt_id: ids.request_id.clone(),
            signed_at: None,
            department: caller.dept.clone(),
            purpose: purpose.code.clone(),
            legal_basis: response.legal_basis.clone(),
            worker_ref: response.worker_ref.clone(),
            claims: request.claims.clone(),
            results: response.results.clone(),
        };
        let signed = receipt::sign_receipt(state.audit.keys(), summary, now).map_err(|e| {
            tracing::error!(error = %e, "verification receipt not signed");
            ApiError::ReceiptNotSigned
        })?;
        response.receipt = Some(signed);
    }
    tracing::info!(
        dept = %caller.dept,
        purpose = %purpose.code,
        worker_ref = %response.worker_ref,
        claims = response.results.len(),
        "joint verification"
    );
    Ok(response)
}

#[tonic::async_trait]
impl pb::verification_service_server::VerificationService for VerificationSvc {
    async fn joint_verify(
        &self,
        request: Request<pb::JointVerifyRequest>,
    ) -> Result<Response<pb::JointVerifyResponse>, Status> {
        let caller = caller_of(&request)?;
        let ids = ExchangeIds::of(&request);
        let mut audit = AuditNote::default();
        let deadline = crate::resilience::Deadline::of(&request);
        let result =
            joint_verify_within(&self.state, &caller, &ids, request.get_ref(), &mut audit, deadline).await;
        note(&request, |n| *n = audit);
        Ok(Response::new(result?))
    }

    async fn batch_verify(
        &self,
        request: Request<Streaming<pb::BatchVerifyRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::BatchVerifyResponse>>, Status> {
        let caller = caller_of(&request)?;
        let ids = ExchangeIds::of(&request);
        let (answers, receiver) = mpsc::channel(OUTPUT_QUEUE);
        let batch = run_batch(self.state.clone(), caller, ids, request.into_inner(), answers);
        // In the call's span, so that the items' source calls and appends are in the call's trace.
        tokio::spawn(tracing::Instrument::in_current_span(batch));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn verify_receipt(
        &self,
        request: Request<pb::VerifyReceiptRequest>,
    ) -> Result<Response<pb::VerifyReceiptResponse>, Status> {
        let Some(signed) = request.get_ref().receipt.as_ref() else {
            return Err(
                ApiError::InvalidArgument(vec![("receipt".into(), "a receipt is required".into())]).into()
            );
        };
        let answer = receipt::verify_receipt(self.state.audit.keys(), signed);
        // A valid receipt is about a worker: checking it is recorded against them, so the worker's access
        // history shows who relied on a verdict about them.
        if let Some(summary) = answer.summary.as_ref().filter(|_| answer.valid) {
            let worker_ref = summary.worker_ref.clone();
            note(&request, |n| n.worker_ref = worker_ref);
        }
        Ok(Response::new(answer))
    }
}

/// Reads, verifies and answers the items of one stream (see the module doc for the bounds).
async fn run_batch(
    state: GatewayState,
    caller: Arc<Caller>,
    stream_ids: ExchangeIds,
    mut items: Streaming<pb::BatchVerifyRequest>,
    answers: mpsc::Sender<Result<pb::BatchVerifyResponse, Status>>,
) {
    let hasher = std::collections::hash_map::RandomState::new();
    // Hashes, not the ids: 8 bytes per item whatever the ids' length.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut received: u64 = 0;
    let mut inbound_open = true;
    loop {
        tokio::select! {
            next = items.message(), if inbound_open && in_flight.len() < MAX_ITEMS_IN_FLIGHT => match next {
                Ok(Some(item)) => {
                    received += 1;
                    let started = Instant::now();
                    let problem = item_id_problem(&item.item_id, received, &mut seen, &hasher);
                    if let Some(problem) = problem {
                        let refusal = || ApiError::InvalidArgument(vec![("item_id".into(), problem.into())]);
                        let ids = item_ids(&stream_ids, received);
                        // Recorded like an item; if even that fails the stream still ends with the refusal.
                        let _ = record_item(&state, &caller, &ids, started, AuditNote::default(), &Err(refusal())).await;
                        let _ = answers.send(Err(refusal().into())).await;
                        return;
                    }
                    in_flight.push(verify_item(state.clone(), caller.clone(), item_ids(&stream_ids, received), item, started));
                }
                Ok(None) => inbound_open = false,
                Err(status) => {
                    tracing::debug!(code = ?status.code(), "batch stream from the client ended with an error");
                    inbound_open = false;
                }
            },
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                let stop = answer.is_err();
                if answers.send(answer).await.is_err() || stop {
                    return; // the client went away, or the log failed (the error was sent)
                }
            }
            else => return,
        }
        if !inbound_open && in_flight.is_empty() {
            return;
        }
    }
}

fn item_ids(stream: &ExchangeIds, n: u64) -> ExchangeIds {
    ExchangeIds { request_id: format!("{}.{n}", stream.request_id), trace_id: stream.trace_id.clone() }
}

/// Why an item id is refused (stream-level INVALID_ARGUMENT), if it is.
fn item_id_problem(
    item_id: &str,
    number: u64,
    seen: &mut HashSet<u64>,
    hasher: &impl BuildHasher,
) -> Option<&'static str> {
    if number > MAX_BATCH_ITEMS {
        return Some("too many items in one stream (at most 100,000): start another stream");
    }
    if item_id.is_empty()
        || item_id.chars().count() > MAX_ITEM_ID_LEN
        || item_id.chars().any(char::is_control)
    {
        return Some("1 to 64 characters, no control characters");
    }
    if !seen.insert(hasher.hash_one(item_id)) {
        return Some("duplicate item_id in this stream");
    }
    None
}

/// Verifies one item and records it; the answer is ready to send once its record is durable.
async fn verify_item(
    state: GatewayState,
    caller: Arc<Caller>,
    ids: ExchangeIds,
    item: pb::BatchVerifyRequest,
    started: Instant,
) -> Result<pb::BatchVerifyResponse, Status> {
    let mut audit = AuditNote::default();
    let result = match &item.request {
        // Each item counts against the rate limits like a JointVerify call (verify.proto).
        Some(request) => match state.limits.check_rate(&caller.dept, JOINT_VERIFY_METHOD) {
            Ok(_) => joint_verify(&state, &caller, &ids, request, &mut audit).await,
            Err(refusal) => {
                audit.purpose = request.purpose.trim().to_owned();
                Err(refusal)
            }
        },
        None => Err(ApiError::InvalidArgument(vec![("request".into(), "required".into())])),
    };
    record_item(&state, &caller, &ids, started, audit, &result).await?;
    let outcome = match result {
        Ok(response) => pb::batch_verify_response::Outcome::Result(response),
        Err(error) => pb::batch_verify_response::Outcome::Error(item_error(error)),
    };
    Ok(pb::BatchVerifyResponse { item_id: item.item_id, outcome: Some(outcome) })
}

async fn record_item(
    state: &GatewayState,
    caller: &Caller,
    ids: &ExchangeIds,
    started: Instant,
    audit: AuditNote,
    result: &Result<pb::JointVerifyResponse, ApiError>,
) -> Result<(), Status> {
    let outcome = match result {
        Ok(_) => (0, String::new()),
        Err(error) => {
            let status = error.status();
            let reason = status.get_details_error_info().map(|i| i.reason).unwrap_or_default();
            (status.code() as i32, reason)
        }
    };
    let facts = ExchangeFacts {
        received_at: now_micros(),
        ids,
        caller: Some(caller),
        method: BATCH_METHOD,
        outcome,
        started,
    };
    state.audit.append(exchange(facts, audit)).await.map(|_| ()).map_err(|e| {
        tracing::error!(request_id = %ids.request_id, error = %e, "batch item not recorded; stream ended");
        ApiError::AuditUnavailable.into()
    })
}

/// A failed item's answer: the essentials of the status it would have had as a JointVerify call.
fn item_error(error: ApiError) -> pb::BatchItemError {
    let invalid_fields = match &error {
        ApiError::InvalidArgument(violations) => violations.iter().map(|(field, _)| field.clone()).collect(),
        ApiError::PurposeUnknown(_) => vec!["purpose".to_owned()],
        _ => Vec::new(),
    };
    let status = error.status();
    pb::BatchItemError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        reason: status.get_details_error_info().map(|i| i.reason).unwrap_or_default(),
        invalid_fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::JointVerifyRequest {
        pb::JointVerifyRequest {
            purpose: "social_insurance_enrolment".into(),
            subject: Some(pb::SubjectQuery { citizen_id: "11010519491231002X".into(), ..Default::default() }),
            claims: vec![pb::Claim {
                claim: Some(pb::claim::Claim::ContributionsAtLeast(pb::ContributionsAtLeast {
                    insurance_type: pb::InsuranceType::Pension as i32,
                    min_months: 6,
                    window_months: 12,
                    end_month: String::new(),
                    region_code: String::new(),
                })),
            }],
            consent_id: String::new(),
            signed_receipt: false,
        }
    }

    fn violations(request: &pb::JointVerifyRequest) -> Vec<String> {
        match validate(request, OffsetDateTime::now_utc()) {
            Err(ApiError::InvalidArgument(v)) => v.into_iter().map(|(field, _)| field).collect(),
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn a_worker_claim_needs_a_subject_and_enterprise_claims_do_not() {
        assert!(validate(&request(), OffsetDateTime::now_utc()).is_ok());
        let mut no_subject = request();
        no_subject.subject = None;
        assert_eq!(violations(&no_subject), ["subject"]);
        let usci = {
            let body = b"91110000MA0000001";
            let check = fedx_adapters::ident::usci::usci_check_char(body).expect("valid body");
            format!("{}{}", std::str::from_utf8(body).expect("ascii"), check as char)
        };
        no_subject.claims = vec![pb::Claim {
            claim: Some(pb::claim::Claim::EnterpriseActive(pb::EnterpriseActive { usci })),
        }];
        let query =
            validate(&no_subject, OffsetDateTime::now_utc()).expect("enterprise claims need no subject");
        assert!(query.subject.is_none());
    }

    #[test]
    fn bad_fields_are_named_without_their_values() {
        let mut bad = request();
        bad.purpose = "Access History".into();
        bad.subject = Some(pb::SubjectQuery { citizen_id: "12345".into(), ..Default::default() });
        bad.consent_id = "bad id".into();
        bad.claims.push(pb::Claim { claim: None });
        let status: Status = validate(&bad, OffsetDateTime::now_utc()).unwrap_err().into();
        assert!(!status.message().contains("12345"), "{}", status.message());
        assert_eq!(violations(&bad), ["purpose", "subject.citizen_id", "claims[1]", "consent_id"]);
    }

    #[test]
    fn item_ids_must_be_present_short_and_unique() {
        let hasher = std::collections::hash_map::RandomState::new();
        let mut seen = HashSet::new();
        assert_eq!(item_id_problem("a-1", 1, &mut seen, &hasher), None);
        assert!(item_id_problem("a-1", 2, &mut seen, &hasher).is_some_and(|p| p.contains("duplicate")));
        assert!(item_id_problem("", 3, &mut seen, &hasher).is_some());
        assert!(item_id_problem(&"x".repeat(65), 4, &mut seen, &hasher).is_some());
        assert!(item_id_problem("ok", MAX_BATCH_ITEMS + 1, &mut seen, &hasher).is_some());
    }

    #[test]
    fn item_errors_carry_code_reason_and_fields() {
        let error = item_error(ApiError::InvalidArgument(vec![("claims[0].usci".into(), "bad".into())]));
        assert_eq!(error.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(error.reason, "INVALID_REQUEST");
        assert_eq!(error.invalid_fields, ["claims[0].usci"]);
        let denied = item_error(ApiError::ConsentRequired { purpose: "p".into() });
        assert_eq!(
            (denied.code, denied.reason.as_str()),
            (tonic::Code::PermissionDenied as i32, "CONSENT_REQUIRED")
        );
    }
}
