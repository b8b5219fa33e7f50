//! `fedx.v1.AuditService` (auditors: query, verify, checkpoints, proofs) and
//! `fedx.v1.AccessHistoryService` (a front desk answering a worker's right-to-know request).
//!
//! Both read the exchange log through [`AuditStore`]; calls to both are themselves recorded by the
//! audit layer. Subjects given by identifiers are resolved to a worker reference first and must
//! resolve to exactly one person; the identifiers go no further than the resolver.

use std::collections::HashMap;
use std::sync::Arc;

use fedx_proto::v1 as pb;
use time::OffsetDateTime;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::audit_layer::note;
use super::authz::caller_of;
use super::error::ApiError;
use super::identity::resolve_subject;
use super::purpose::permitted_purpose;
use crate::audit::checkpoint::Checkpoint;
use crate::audit::merkle::{self, NodeId};
use crate::audit::record::{ExchangeRecord, LegalBasis};
use crate::audit::store::{AuditStore, ExchangeFilter};
use crate::audit::verify::{self, ChainFailure, VerifyReport};
use crate::audit::{AuditError, Hash};
use crate::authn::Role;
use crate::server::GatewayState;
use crate::signing::KeyRing;

/// Most records one QueryExchanges stream carries (the proto's documented server limit).
pub const MAX_RECORDS_PER_STREAM: usize = 10_000;
/// Records fetched from the store per query while streaming.
const STREAM_PAGE: usize = 500;
/// The purpose AccessHistoryService requires.
pub const ACCESS_HISTORY_PURPOSE: &str = "access_history";

impl From<AuditError> for ApiError {
    fn from(error: AuditError) -> Self {
        tracing::error!(error = %error, "exchange log read failed");
        ApiError::StoreUnavailable
    }
}

pub struct AuditSvc {
    state: GatewayState,
}

impl AuditSvc {
    pub fn new(state: GatewayState) -> AuditSvc {
        AuditSvc { state }
    }

    fn store(&self) -> &AuditStore {
        self.state.audit.store()
    }

    fn keys(&self) -> &Arc<KeyRing> {
        self.state.audit.keys()
    }

    /// The checkpoint a proof is asked against: `tree_size` 0 = the latest.
    async fn checkpoint_for(&self, tree_size: u64, field: &str) -> Result<Checkpoint, ApiError> {
        if tree_size == 0 {
            return self
                .store()
                .checkpoint(None)
                .await?
                .ok_or_else(|| ApiError::NotFound("no checkpoint has been signed yet".into()));
        }
        self.store().checkpoint_at_size(tree_size).await?.ok_or_else(|| {
            invalid(field, format!("{tree_size} is not the tree size of a checkpoint (see ListCheckpoints)"))
        })
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditSvc {
    async fn query_exchanges(
        &self,
        request: Request<pb::QueryExchangesRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::ExchangeRecord>>, Status> {
        let r = request.get_ref();
        let mut violations = Vec::new();
        let start = optional_time(r.start_time.as_ref(), "start_time", &mut violations);
        let end = optional_time(r.end_time.as_ref(), "end_time", &mut violations);
        check_range(start, end, &mut violations);
        let department = optional_code(&r.department, "department", &mut violations);
        let purpose = optional_code(&r.purpose, "purpose", &mut violations);
        let method = (!r.method.is_empty()).then(|| r.method.clone());
        if let Some(m) = &method {
            if !m.starts_with('/') || m.len() > 200 || m.chars().any(char::is_control) {
                violations.push(("method".into(), "a full gRPC method name, e.g. /fedx.v1.X/Y".into()));
            }
        }
        let limit = match r.page_size {
            n if n < 0 => {
                violations.push(("page_size".into(), "must not be negative".into()));
                0
            }
            0 => MAX_RECORDS_PER_STREAM,
            n => (n as usize).min(MAX_RECORDS_PER_STREAM),
        };
        let has_subject = r.subject.as_ref().is_some_and(|s| *s != pb::SubjectQuery::default());
        if has_subject && !r.worker_ref.is_empty() {
            violations.push(("worker_ref".into(), "give subject or worker_ref, not both".into()));
        }
        if !r.worker_ref.is_empty() && !is_worker_ref(&r.worker_ref) {
            violations
                .push(("worker_ref".into(), "expected wr_ followed by 64 lower-case hex digits".into()));
        }
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations).into());
        }
        let worker_ref = match (&r.subject, has_subject) {
            (Some(subject), true) => Some(resolve_subject(&self.state, subject, "subject").await?.value),
            _ => (!r.worker_ref.is_empty()).then(|| r.worker_ref.clone()),
        };
        if let Some(w) = &worker_ref {
            note(&request, |n| n.worker_ref = w.clone());
        }
        let filter = ExchangeFilter {
            start,
            end,
            department,
            purpose,
            method,
            outcome_code: r.outcome_code,
            worker_ref,
        };
        let store = self.store().clone();
        let mut after = r.after_seq;
        // A small buffer: a slow reader holds the task back instead of the gateway buffering the log.
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut sent = 0usize;
            while sent < limit {
                let page = match store.query(&filter, after, STREAM_PAGE.min(limit - sent)).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(ApiError::from(e).into_status())).await;
                        return;
                    }
                };
                let done = page.len() < STREAM_PAGE.min(limit - sent);
                for record in page {
                    after = record.seq;
                    sent += 1;
                    if tx.send(Ok(record_to_proto(&record))).await.is_err() {
                        return; // the client went away
                    }
                }
                if done {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let r = request.into_inner();
        if r.to_seq != 0 && r.from_seq > r.to_seq {
            return Err(invalid("from_seq", "must not be greater than to_seq".into()).into());
        }
        let to = (r.to_seq != 0).then_some(r.to_seq);
        let report = verify::verify_range(self.store(), self.keys(), r.from_seq.max(1), to)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(report_to_proto(&report)))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let seq = request.into_inner().seq;
        let checkpoint = self.store().checkpoint((seq != 0).then_some(seq)).await.map_err(ApiError::from)?;
        let checkpoint = checkpoint.ok_or_else(|| match seq {
            0 => ApiError::NotFound("no checkpoint has been signed yet".into()),
            n => ApiError::NotFound(format!("no checkpoint {n}")),
        })?;
        Ok(Response::new(checkpoint_to_proto(&checkpoint)))
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        let r = request.into_inner();
        let mut violations = Vec::new();
        let size = page_size(r.page_size, 100, 1000, &mut violations);
        let before = page_token(&r.page_token, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations).into());
        }
        let mut page = self.store().list_checkpoints(before, size + 1).await.map_err(ApiError::from)?;
        let more = page.len() > size;
        page.truncate(size);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => last.seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListCheckpointsResponse {
            checkpoints: page.iter().map(checkpoint_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        let r = request.into_inner();
        if r.seq == 0 {
            return Err(invalid("seq", "records are numbered from 1".into()).into());
        }
        let checkpoint = self.checkpoint_for(r.tree_size, "tree_size").await?;
        let size = checkpoint.tree_size;
        if r.seq > size {
            return Err(invalid("seq", format!("beyond the tree size {size}")).into());
        }
        let index = r.seq - 1;
        let leaf = NodeId { level: 0, index };
        let mut ids = merkle::inclusion_proof_nodes(index, size);
        ids.push(leaf);
        let nodes = self.store().nodes(&ids).await.map_err(ApiError::from)?;
        let pruned = || ApiError::NotFound(format!("record {} has been pruned from the log", r.seq));
        let path = merkle::inclusion_proof(index, size, &nodes).ok_or_else(pruned)?;
        let leaf_hash = nodes.get(&leaf).copied().ok_or_else(pruned)?;
        Ok(Response::new(pb::InclusionProof {
            leaf_index: index,
            tree_size: size,
            leaf_hash: leaf_hash.to_vec(),
            audit_path: path.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let r = request.into_inner();
        if r.first_tree_size == 0 {
            return Err(invalid("first_tree_size", "must be at least 1".into()).into());
        }
        let first = self.checkpoint_for(r.first_tree_size, "first_tree_size").await?.tree_size;
        let second = self.checkpoint_for(r.second_tree_size, "second_tree_size").await?.tree_size;
        if first > second {
            return Err(
                invalid("first_tree_size", format!("greater than the second tree size {second}")).into()
            );
        }
        let nodes: HashMap<NodeId, Hash> = self
            .store()
            .nodes(&merkle::consistency_proof_nodes(first, second))
            .await
            .map_err(ApiError::from)?;
        let proof = merkle::consistency_proof(first, second, &nodes)
            .ok_or_else(|| ApiError::NotFound("part of the proof lies in pruned records".into()))?;
        Ok(Response::new(pb::ConsistencyProof {
            first_tree_size: first,
            second_tree_size: second,
            proof: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }
}

pub struct AccessHistorySvc {
    state: GatewayState,
}

impl AccessHistorySvc {
    pub fn new(state: GatewayState) -> AccessHistorySvc {
        AccessHistorySvc { state }
    }
}

#[tonic::async_trait]
impl pb::access_history_service_server::AccessHistoryService for AccessHistorySvc {
    async fn get_access_history(
        &self,
        request: Request<pb::GetAccessHistoryRequest>,
    ) -> Result<Response<pb::GetAccessHistoryResponse>, Status> {
        let r = request.get_ref();
        note(&request, |n| n.purpose = r.purpose.clone());
        if r.purpose != ACCESS_HISTORY_PURPOSE {
            return Err(ApiError::PurposeNotPermitted {
                purpose: r.purpose.clone(),
                why: "AccessHistoryService answers only purpose access_history",
            }
            .into());
        }
        let caller = caller_of(&request)?;
        permitted_purpose(&self.state.policy.current(), &r.purpose, &caller)?;
        let mut violations = Vec::new();
        let start = optional_time(r.start_time.as_ref(), "start_time", &mut violations);
        let end = optional_time(r.end_time.as_ref(), "end_time", &mut violations);
        check_range(start, end, &mut violations);
        let size = page_size(r.page_size, 50, 500, &mut violations);
        let before = page_token(&r.page_token, &mut violations);
        let subject = match &r.subject {
            Some(s) if *s != pb::SubjectQuery::default() => Some(s),
            _ => {
                violations.push(("subject".into(), "the worker asking must be identified".into()));
                None
            }
        };
        let (Some(subject), true) = (subject, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations).into());
        };
        let worker = resolve_subject(&self.state, subject, "subject").await?;
        note(&request, |n| {
            n.worker_ref = worker.value.clone();
            n.disclosed_fields = vec!["access_history.entries".into()];
        });
        let mut page = self
            .state
            .audit
            .store()
            .access_history(&worker.value, start, end, before, size + 1)
            .await
            .map_err(ApiError::from)?;
        let more = page.len() > size;
        page.truncate(size);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => last.seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::GetAccessHistoryResponse {
            entries: page
                .iter()
                .map(|rec| pb::AccessEntry {
                    department: rec.exchange.caller_dept.clone(),
                    purpose: rec.exchange.purpose.clone(),
                    time: Some(to_timestamp(rec.exchange.time)),
                    method: rec.exchange.method.clone(),
                    outcome_code: rec.exchange.outcome_code,
                })
                .collect(),
            next_page_token,
        }))
    }
}

fn invalid(field: &str, description: String) -> ApiError {
    ApiError::InvalidArgument(vec![(field.to_owned(), description)])
}

/// Earliest and latest instants accepted in filters: anything outside is a typo, not a query.
const EARLIEST_YEAR: i32 = 2000;
const LATEST_YEAR: i32 = 2200;

fn optional_time(
    ts: Option<&prost_types::Timestamp>,
    field: &str,
    violations: &mut Vec<(String, String)>,
) -> Option<OffsetDateTime> {
    let ts = ts?;
    let parsed = (0..1_000_000_000)
        .contains(&ts.nanos)
        .then(|| {
            OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos),
            )
            .ok()
        })
        .flatten()
        .filter(|t| (EARLIEST_YEAR..=LATEST_YEAR).contains(&t.year()));
    if parsed.is_none() {
        violations
            .push((field.to_owned(), format!("must be a time between {EARLIEST_YEAR} and {LATEST_YEAR}")));
    }
    parsed
}

fn check_range(start: Option<OffsetDateTime>, end: Option<OffsetDateTime>, v: &mut Vec<(String, String)>) {
    if let (Some(s), Some(e)) = (start, end) {
        if s >= e {
            v.push(("end_time".into(), "must be after start_time".into()));
        }
    }
}

/// Department and purpose codes: lower-case letters, digits and '_'.
fn optional_code(value: &str, field: &str, violations: &mut Vec<(String, String)>) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.len() > 64 || !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        violations.push((field.to_owned(), "codes are lower-case letters, digits and '_'".into()));
        return None;
    }
    Some(value.to_owned())
}

fn page_size(requested: i32, default: usize, max: usize, v: &mut Vec<(String, String)>) -> usize {
    match requested {
        n if n < 0 => {
            v.push(("page_size".into(), "must not be negative".into()));
            default
        }
        0 => default,
        n => (n as usize).min(max),
    }
}

/// Page tokens are the seq of the last item of the previous page.
fn page_token(token: &str, v: &mut Vec<(String, String)>) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    match token.parse::<u64>() {
        Ok(n) if n > 0 && token.bytes().all(|b| b.is_ascii_digit()) => Some(n),
        _ => {
            v.push(("page_token".into(), "not a token this service issued".into()));
            None
        }
    }
}

pub fn is_worker_ref(s: &str) -> bool {
    s.strip_prefix("wr_")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

pub fn to_timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 }
}

pub fn record_to_proto(r: &ExchangeRecord) -> pb::ExchangeRecord {
    let e = &r.exchange;
    let role =
        e.caller_role.parse::<Role>().map(super::convert::role_to_proto).unwrap_or(pb::Role::Unspecified);
    pb::ExchangeRecord {
        seq: r.seq,
        time: Some(to_timestamp(e.time)),
        request_id: e.request_id.clone(),
        trace_id: e.trace_id.clone(),
        caller: Some(pb::Caller {
            department: e.caller_dept.clone(),
            role: role as i32,
            certificate_serial: e.cert_serial.clone(),
            certificate_fingerprint: e.cert_fingerprint.clone(),
        }),
        method: e.method.clone(),
        purpose: e.purpose.clone(),
        legal_basis: e.legal_basis.as_ref().map(|b| pb::LegalBasis {
            basis: Some(match b {
                LegalBasis::Consent(id) => pb::legal_basis::Basis::ConsentId(id.clone()),
                LegalBasis::Statute(s) => pb::legal_basis::Basis::Statute(s.clone()),
            }),
        }),
        worker_ref: e.worker_ref.clone(),
        sources_consulted: e.sources_consulted.clone(),
        disclosed_fields: e.disclosed_fields.clone(),
        claims_verified: e.claims_verified.clone(),
        outcome_code: e.outcome_code,
        outcome_reason: e.outcome_reason.clone(),
        latency_us: e.latency_us,
        prev_hash: hex::encode(r.prev_hash),
        record_hash: hex::encode(r.record_hash),
    }
}

pub fn checkpoint_to_proto(c: &Checkpoint) -> pb::Checkpoint {
    pb::Checkpoint {
        seq: c.seq,
        tree_size: c.tree_size,
        root_hash: c.root_hash.to_vec(),
        head_hash: hex::encode(c.head_hash),
        signed_at: Some(to_timestamp(c.signed_at)),
        signature: c.signature.to_vec(),
        key_id: c.key_id.clone(),
    }
}

pub fn report_to_proto(r: &VerifyReport) -> pb::VerifyChainResponse {
    let failure = match r.failure {
        None => pb::ChainFailure::Unspecified,
        Some(ChainFailure::SeqGap) => pb::ChainFailure::SeqGap,
        Some(ChainFailure::PrevHashMismatch) => pb::ChainFailure::PrevHashMismatch,
        Some(ChainFailure::RecordHashMismatch) => pb::ChainFailure::RecordHashMismatch,
        Some(ChainFailure::CheckpointMismatch) => pb::ChainFailure::CheckpointMismatch,
        Some(ChainFailure::CheckpointSignature) => pb::ChainFailure::CheckpointSignature,
    };
    pb::VerifyChainResponse {
        valid: r.valid,
        records_checked: r.records_checked,
        checkpoints_checked: r.checkpoints_checked,
        first_invalid_seq: r.first_invalid_seq,
        failure: failure as i32,
        head_seq: r.head_seq,
        head_hash: hex::encode(r.head_hash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        let mut v = Vec::new();
        assert_eq!(page_token("12", &mut v), Some(12));
        assert_eq!(page_token("+12", &mut v), None);
        assert_eq!(page_token("0", &mut v), None);
        assert_eq!(v.len(), 2);
        let mut v = Vec::new();
        let t = |s| Some(prost_types::Timestamp { seconds: s, nanos: 0 });
        assert!(optional_time(t(1_700_000_000).as_ref(), "start_time", &mut v).is_some());
        assert!(optional_time(t(-99_999_999_999).as_ref(), "start_time", &mut v).is_none());
        let bad_nanos = prost_types::Timestamp { seconds: 1_700_000_000, nanos: -1 };
        assert!(optional_time(Some(&bad_nanos), "end_time", &mut v).is_none());
        assert_eq!(v.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["start_time", "end_time"]);
        assert!(is_worker_ref(&format!("wr_{}", "a".repeat(64))));
        assert!(!is_worker_ref(&format!("wr_{}", "A".repeat(64))));
        assert_eq!(page_size(-1, 50, 500, &mut v), 50);
        assert_eq!(page_size(9999, 50, 500, &mut Vec::new()), 500);
    }
}
