//! The per-call span and request metrics: the outermost layer of the gRPC server.
//!
//! For every exchange (health checks and reflection are not observed, as they are not recorded) it
//!
//! * opens the `rpc` span with the method, the caller's department and role from the certificate, and
//!   the request id (generated here when the caller sent none, so that the span and every log line in
//!   it carry the id the exchange record and the `x-request-id` response header will have);
//! * makes the caller's W3C `traceparent`/`tracestate` the span's parent, and when spans are exported
//!   hands the gateway's own `traceparent` on — to the inner layers, so the exchange record names the
//!   trace, and back to the caller in the response headers. Without an OpenTelemetry layer the caller's
//!   valid `traceparent` is returned unchanged. The department sources are databases, so there is no
//!   outgoing gRPC hop to propagate to: source calls are child spans in the same trace;
//! * once the response head is ready records the purpose (only a code the catalogue knows — the field
//!   is caller input), the gRPC code and the ErrorInfo reason, and counts the call in
//!   `fedx_requests_total{method,department,code}` and `fedx_request_duration_seconds{method}`.
//!
//! Label and attribute values are closed sets: a path the method table does not know is `unknown`, so a
//! caller cannot put text of its choosing into a metric or span. A streaming call is measured to its
//! response head, like its exchange record.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::body::Body;
use tonic_types::StatusExt;
use tower::Service;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics::names;
use crate::authn::PeerInfo;
use crate::policy::PolicyHandle;
use crate::rpc::audit_layer::{is_valid_request_id, REQUEST_ID_HEADER};
use crate::rpc::methods;

const TRACEPARENT: &str = "traceparent";

/// The purpose the handler noted for the exchange record, put into the response's extensions by the
/// audit layer so that this layer can put it on the span (after checking it against the catalogue).
#[derive(Debug, Clone, Default)]
pub struct NotedPurpose(pub String);

#[derive(Clone)]
pub struct TelemetryLayer {
    policy: Arc<PolicyHandle>,
}

impl TelemetryLayer {
    pub fn new(policy: Arc<PolicyHandle>) -> TelemetryLayer {
        TelemetryLayer { policy }
    }
}

crate::middleware_layer!(TelemetryLayer);

impl crate::rpc::middleware::Middleware for TelemetryLayer {
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
        let path = request.uri().path();
        if !is_observed(path) {
            return Box::pin(inner.call(request));
        }
        let started = Instant::now();
        let method = method_label(path);
        let service = method.split_once('/').map_or("unknown", |(service, _)| service);
        let (department, role) = match request.extensions().get::<PeerInfo>() {
            Some(peer) => (peer.caller.dept.clone(), peer.caller.role.as_str()),
            None => ("unauthenticated".to_owned(), "none"),
        };
        let request_id = ensure_request_id(request.headers_mut());

        let span = tracing::info_span!(
            "rpc",
            otel.name = method,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
            fedx.department = %department,
            fedx.role = role,
            fedx.request_id = %request_id,
            fedx.purpose = Empty,
            fedx.outcome = Empty,
        );
        let propagator = TraceContextPropagator::new();
        let parent = propagator.extract(&HeaderExtractor(request.headers()));
        let _ = span.set_parent(parent);
        let mut trace_headers = HeaderMap::new();
        let context = span.context();
        if context.span().span_context().is_valid() {
            // The gateway's span is the caller's new parent, and the exchange record's trace.
            propagator.inject_context(&context, &mut HeaderInjector(&mut trace_headers));
            for (name, value) in &trace_headers {
                request.headers_mut().insert(name.clone(), value.clone());
            }
        } else if let Some(value) = request.headers().get(TRACEPARENT) {
            // Not tracing: hand the caller's own context back, if it is well formed.
            if value.to_str().is_ok_and(|v| propagator_accepts(&propagator, v)) {
                trace_headers.insert(TRACEPARENT, value.clone());
            }
        }

        let future = {
            let _entered = span.enter();
            inner.call(request)
        };
        let policy = self.policy.clone();
        Box::pin(async move {
            let result = future.instrument(span.clone()).await;
            let Ok(mut response) = result else {
                // A transport-level failure: no response head to read.
                span.record("fedx.outcome", "TRANSPORT_ERROR");
                span.record("otel.status_code", "ERROR");
                count(method, department, "UNKNOWN", started);
                return result;
            };
            let (code, reason) = outcome_of(response.headers());
            if let Some(NotedPurpose(purpose)) = response.extensions_mut().remove::<NotedPurpose>() {
                if !purpose.is_empty() && policy.current().purpose(&purpose).is_some() {
                    span.record("fedx.purpose", purpose.as_str());
                }
            }
            span.record("rpc.grpc.status_code", code as i64);
            span.record("fedx.outcome", if code == tonic::Code::Ok { "OK" } else { reason.as_str() });
            if is_server_error(code) {
                span.record("otel.status_code", "ERROR");
            }
            count(method, department, code_name(code), started);
            for (name, value) in trace_headers {
                if let Some(name) = name {
                    response.headers_mut().insert(name, value);
                }
            }
            Ok(response)
        })
    }
}

fn count(method: &'static str, department: String, code: &'static str, started: Instant) {
    metrics::counter!(names::REQUESTS, "method" => method, "department" => department, "code" => code)
        .increment(1);
    metrics::histogram!(names::REQUEST_DURATION, "method" => method).record(started.elapsed().as_secs_f64());
}

/// Whether a method's calls are observed (the same set the exchange log records).
fn is_observed(path: &str) -> bool {
    !(path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection."))
}

/// `package.Service/Method` for a method in the method table, `unknown` for anything else.
pub fn method_label(path: &str) -> &'static str {
    match methods::lookup(path) {
        Some(spec) => spec.path.strip_prefix('/').unwrap_or(spec.path),
        None => "unknown",
    }
}

/// The caller's request id when it is well formed; otherwise a new one, written into the request so
/// that the exchange-recording layer uses the same id.
fn ensure_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()) {
        if is_valid_request_id(id) {
            return id.to_owned();
        }
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    id
}

fn propagator_accepts(propagator: &TraceContextPropagator, traceparent: &str) -> bool {
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(traceparent) else { return false };
    headers.insert(TRACEPARENT, value);
    let context = propagator.extract(&HeaderExtractor(&headers));
    context.span().span_context().is_valid()
}

/// The gRPC code and ErrorInfo reason of a response, from its head (a handler error is a trailers-only
/// response with `grpc-status` in the headers).
fn outcome_of(headers: &HeaderMap) -> (tonic::Code, String) {
    match tonic::Status::from_header_map(headers) {
        None => (tonic::Code::Ok, String::new()),
        Some(status) => {
            let reason = status.get_details_error_info().map(|info| info.reason).unwrap_or_default();
            let reason = if reason.is_empty() { code_name(status.code()).to_owned() } else { reason };
            (status.code(), reason)
        }
    }
}

/// The errors that are the gateway's (or its sources') fault, as OpenTelemetry's gRPC conventions
/// mark server spans: the others are answers to the caller's request.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(
        code,
        C::Unknown | C::DeadlineExceeded | C::Unimplemented | C::Internal | C::Unavailable | C::DataLoss
    )
}

/// The canonical name of a gRPC code, as grpcurl and the gRPC documentation spell it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_closed_sets() {
        assert_eq!(
            method_label("/fedx.v1.WorkerViewService/GetWorkerView"),
            "fedx.v1.WorkerViewService/GetWorkerView"
        );
        assert_eq!(method_label("/fedx.v1.Nope/110105194912310020"), "unknown");
        assert_eq!(code_name(tonic::Code::PermissionDenied), "PERMISSION_DENIED");
        assert!(!is_observed("/grpc.health.v1.Health/Check"));
        assert!(is_observed("/fedx.v1.GatewayService/WhoAmI"));
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-1"));
        assert_eq!(ensure_request_id(&mut headers), "abc-1");
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("has space"));
        let made = ensure_request_id(&mut headers);
        assert_eq!(made.len(), 32);
        assert_eq!(headers.get(REQUEST_ID_HEADER).unwrap(), made.as_str());
    }

    #[test]
    fn only_well_formed_traceparents_are_echoed() {
        let propagator = TraceContextPropagator::new();
        assert!(propagator_accepts(&propagator, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!propagator_accepts(&propagator, "00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
        assert!(!propagator_accepts(&propagator, "garbage"));
    }

    #[test]
    fn outcomes_carry_the_error_reason() {
        assert_eq!(outcome_of(&HeaderMap::new()), (tonic::Code::Ok, String::new()));
        let status = crate::rpc::error::ApiError::NotFound("x".into()).into_status();
        let response = status.into_http::<Body>();
        assert_eq!(outcome_of(response.headers()), (tonic::Code::NotFound, "RESOURCE_NOT_FOUND".to_owned()));
    }
}
