//! The exchange-recording layer: every call (allowed or refused) becomes one exchange record, made
//! durable before the response leaves the gateway.
//!
//! It sits outside the authorisation layer so refusals are recorded too. Handlers add what only they
//! know — purpose, legal basis, worker reference, sources, disclosed field names — through an
//! [`AuditNote`] the layer puts into the request's extensions. When the handler's response is ready the
//! layer appends the record and waits for the commit; only then does the response go out. If the
//! append fails the response is dropped — its body has not been polled, so no data has left — and the
//! caller gets UNAVAILABLE (AUDIT_UNAVAILABLE): the log fails closed.
//!
//! The outcome is read from the response head: a handler error is a trailers-only response carrying
//! `grpc-status` (and the ErrorInfo reason in `grpc-status-details-bin`) in the headers; a response
//! without `grpc-status` in its headers is a success. A server-streaming call is recorded when its
//! stream starts; an error later in the stream is not in its record.
//!
//! Health checks and reflection are not exchanges and are not recorded.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use http::HeaderValue;
use time::OffsetDateTime;
use tonic::body::Body;
use tonic_types::StatusExt;
use tower::Service;

use crate::audit::record::{Exchange, LegalBasis};
use crate::audit::AuditLog;
use crate::authn::PeerInfo;

/// Header carrying the request id, accepted from the caller when well-formed and always returned.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What a handler adds to its call's exchange record. Field names and codes only — never values.
#[derive(Debug, Default, Clone)]
pub struct AuditNote {
    pub purpose: String,
    pub legal_basis: Option<LegalBasis>,
    pub worker_ref: String,
    pub sources_consulted: Vec<String>,
    pub disclosed_fields: Vec<String>,
    pub claims_verified: Vec<String>,
    /// Recorded as the outcome reason when the call succeeds (failures record their ErrorInfo reason):
    /// what a successful administrative change did, e.g. the policy versions of a reload. Codes and
    /// versions only.
    pub success_detail: String,
}

/// Shared between the layer (which reads it once the response is ready) and the handler.
#[derive(Debug, Default, Clone)]
pub struct AuditNoteHandle(Arc<Mutex<AuditNote>>);

impl AuditNoteHandle {
    pub fn update(&self, f: impl FnOnce(&mut AuditNote)) {
        // A poisoned lock only means a handler panicked mid-update; the note is still the best record.
        let mut note = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut note);
    }

    fn take(&self) -> AuditNote {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The identifiers of the exchange a call belongs to, put into the request's extensions by the layer for
/// handlers that quote them (a receipt's id is its exchange's request id) or record further exchanges
/// of their own (BatchVerify records each item).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeIds {
    pub request_id: String,
    /// Empty when the caller sent no valid `traceparent` and the gateway exports no traces (when it
    /// does, the telemetry layer hands its own span's `traceparent` in: see [`crate::telemetry::rpc`]).
    pub trace_id: String,
}

impl ExchangeIds {
    /// The ids of `request`'s exchange (empty outside the layer, e.g. in handler unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> ExchangeIds {
        request.extensions().get::<ExchangeIds>().cloned().unwrap_or_default()
    }
}

/// What the record of one exchange is made of, besides what the handler noted.
pub struct ExchangeFacts<'a> {
    pub received_at: OffsetDateTime,
    pub ids: &'a ExchangeIds,
    pub caller: Option<&'a crate::authn::Caller>,
    pub method: &'a str,
    /// gRPC code and ErrorInfo reason (empty on success).
    pub outcome: (i32, String),
    pub started: Instant,
}

/// One exchange record: the layer's for every call, BatchVerify's for each item.
pub fn exchange(facts: ExchangeFacts<'_>, note: AuditNote) -> Exchange {
    let (outcome_code, mut outcome_reason) = facts.outcome;
    if outcome_code == 0 {
        outcome_reason = note.success_detail;
    }
    let caller = facts.caller;
    Exchange {
        time: facts.received_at,
        request_id: facts.ids.request_id.clone(),
        trace_id: facts.ids.trace_id.clone(),
        caller_dept: caller.map(|c| c.dept.clone()).unwrap_or_default(),
        caller_role: caller.map(|c| c.role.to_string()).unwrap_or_default(),
        cert_serial: caller.map(|c| c.serial.clone()).unwrap_or_default(),
        cert_fingerprint: caller.map(|c| c.fingerprint.clone()).unwrap_or_default(),
        method: facts.method.to_owned(),
        purpose: note.purpose,
        legal_basis: note.legal_basis,
        worker_ref: note.worker_ref,
        sources_consulted: note.sources_consulted,
        disclosed_fields: note.disclosed_fields,
        claims_verified: note.claims_verified,
        outcome_code,
        outcome_reason,
        latency_us: u64::try_from(facts.started.elapsed().as_micros()).unwrap_or(u64::MAX),
    }
}

/// Adds to the exchange record of the call `request` belongs to (a no-op outside the layer, e.g. in
/// handler unit tests).
pub fn note<T>(request: &tonic::Request<T>, f: impl FnOnce(&mut AuditNote)) {
    if let Some(handle) = request.extensions().get::<AuditNoteHandle>() {
        handle.update(f);
    }
}

/// Whether a method's calls are exchanges to record.
fn is_recorded(path: &str) -> bool {
    !(path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection."))
}

#[derive(Clone)]
pub struct AuditLayer {
    log: AuditLog,
}

impl AuditLayer {
    pub fn new(log: AuditLog) -> AuditLayer {
        AuditLayer { log }
    }
}

crate::middleware_layer!(AuditLayer);

impl crate::rpc::middleware::Middleware for AuditLayer {
    fn call<S>(
        &self,
        mut request: http::Request<Body>,
        next: S,
    ) -> BoxFuture<'static, Result<http::Response<Body>, S::Error>>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let mut inner = next;
        let path = request.uri().path().to_owned();
        if !is_recorded(&path) {
            return Box::pin(inner.call(request));
        }
        let started = Instant::now();
        let received_at = now_micros();
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_valid_request_id(v))
            .map_or_else(generate_request_id, str::to_owned);
        let trace_id = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(trace_id_of)
            .unwrap_or_default();
        let ids = ExchangeIds { request_id: request_id.clone(), trace_id };
        let caller = request.extensions().get::<PeerInfo>().map(|p| p.caller.clone());
        let note = AuditNoteHandle::default();
        request.extensions_mut().insert(note.clone());
        request.extensions_mut().insert(ids.clone());
        let log = self.log.clone();

        Box::pin(async move {
            let mut response = inner.call(request).await?;
            let facts = ExchangeFacts {
                received_at,
                ids: &ids,
                caller: caller.as_deref(),
                method: &path,
                outcome: outcome_of(response.headers()),
                started,
            };
            let exchange = exchange(facts, note.take());
            let purpose = crate::telemetry::rpc::NotedPurpose(exchange.purpose.clone());
            if let Err(error) = log.append(exchange).await {
                tracing::error!(method = %path, request_id = %request_id, error = %error,
                    "exchange record not written; response withheld");
                drop(response);
                response = super::error::ApiError::AuditUnavailable.into_status().into_http();
            }
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            // For the telemetry layer's span (it checks the code against the catalogue).
            response.extensions_mut().insert(purpose);
            Ok(response)
        })
    }
}

/// The gRPC code and ErrorInfo reason of a response, from its head (see the module doc).
fn outcome_of(headers: &http::HeaderMap) -> (i32, String) {
    match tonic::Status::from_header_map(headers) {
        None => (0, String::new()),
        Some(status) => {
            let reason = status.get_details_error_info().map(|info| info.reason).unwrap_or_default();
            (status.code() as i32, reason)
        }
    }
}

/// The receipt time, truncated to whole microseconds (the record's resolution).
pub(crate) fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).unwrap_or(now)
}

/// 1 to 64 characters of `[A-Za-z0-9._-]`, as the proto documents.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn generate_request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); none for a malformed or
/// all-zero one.
fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(is_valid_request_id("abc-123_x.y"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("has space"));
        assert!(!is_valid_request_id(&"a".repeat(65)));
        assert_eq!(generate_request_id().len(), 32);
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(tp).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of("garbage"), None);
    }

    #[test]
    fn outcome_is_read_from_trailers_only_errors() {
        assert_eq!(outcome_of(&http::HeaderMap::new()), (0, String::new()));
        let status = super::super::error::ApiError::NotFound("x".into()).into_status();
        let response = status.into_http::<Body>();
        let (code, reason) = outcome_of(response.headers());
        assert_eq!(code, tonic::Code::NotFound as i32);
        assert_eq!(reason, "RESOURCE_NOT_FOUND");
    }
}
