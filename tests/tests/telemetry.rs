//! Telemetry end to end, on both backends: while a social-insurance inspector asks for a worker view,
//! resolves the worker's identity, runs a joint verification, is refused (a purpose that is not in the
//! catalogue, spelling the worker's old ID number) and gets a partial view (tax down), every log line (as
//! JSON and as text), every span (through the OpenTelemetry layer into an in-memory exporter) and the
//! Prometheus scrape are captured — and none of them holds the worker's name, citizen ID (18- or
//! 15-digit), phone, birth date, source record keys, or anything else the requests carried about the
//! subject. The same capture
//! shows that telemetry is there: the `rpc` span with department, method, purpose and outcome under the
//! caller's W3C trace, its children for the source calls and the exchange-log append, and the request,
//! source, audit and certificate metrics.
//!
//! The capturing subscriber is global to this test binary (the gateway runs on tokio worker threads),
//! installed once; the tests in it only ever look at their own trace ids, and each one checks the whole
//! capture — the other backend's calls included — for its subject's data.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fedx_adapters::{Department, SeedOptions, TruthRecord};
use fedx_gateway::authn::Role;
use fedx_tests::status::record_of;
use fedx_tests::{backend_suite, pb, subject_of, Backend, Fault, TestGateway};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

const PURPOSE: &str = "wage_arrears_investigation";
const DEPT: &str = "social_insurance";
const VIEW: &str = "fedx.v1.WorkerViewService/GetWorkerView";
const RESOLVE: &str = "fedx.v1.IdentityService/ResolveIdentity";
const VERIFY: &str = "fedx.v1.VerificationService/JointVerify";

// ---- the capture ---------------------------------------------------------------------------------

/// Log output, shared by the JSON and the text layer.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Finished spans, as an OTLP exporter would receive them.
#[derive(Clone, Debug, Default)]
struct SpanSink(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for SpanSink {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(batch);
        Ok(())
    }
}

impl SpanSink {
    fn spans(&self) -> Vec<SpanData> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn of_trace(&self, trace: TraceId) -> Vec<SpanData> {
        self.spans().into_iter().filter(|s| s.span_context.trace_id() == trace).collect()
    }
}

struct Capture {
    logs: LogBuffer,
    spans: SpanSink,
    _provider: SdkTracerProvider,
}

/// Installs the capturing subscriber once for this binary: JSON and text logs of everything the fedx
/// crates log down to TRACE (and the database driver's statements at DEBUG), and the gateway's own
/// OpenTelemetry filter feeding an in-memory exporter.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let logs = LogBuffer::default();
        let spans = SpanSink::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(spans.clone()).build();
        let filter =
            || EnvFilter::new("info,fedx_gateway=trace,fedx_adapters=trace,fedx_tests=trace,sqlx=debug");
        let json_out = logs.clone();
        let text_out = logs.clone();
        let json = tracing_subscriber::fmt::layer()
            .json()
            .with_span_list(true)
            .with_writer(move || json_out.clone())
            .with_filter(filter());
        let text = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || text_out.clone())
            .with_filter(filter());
        let traces = {
            use opentelemetry::trace::TracerProvider as _;
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("fedx-tests"))
                .with_filter(fedx_gateway::telemetry::trace_filter())
        };
        let subscriber = tracing_subscriber::registry().with(json).with(text).with(traces);
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this binary");
        Capture { logs, spans, _provider: provider }
    })
}

// ---- what must not appear ------------------------------------------------------------------------

/// Every value about the subject the requests carried or the sources hold, as it could be written.
fn personal_values(person: &TruthRecord) -> Vec<String> {
    let id = person.citizen_id.clone();
    let mut values = vec![
        person.name.clone(),
        id.clone(),
        id.to_ascii_lowercase(),
        // The 15-digit form: no century digits, no check character.
        format!("{}{}", &id[..6], &id[8..17]),
        person.phone.clone(),
        format!("+86{}", person.phone),
        person.birth_date.clone(),
    ];
    values.extend(person.records.values().flatten().cloned());
    values.retain(|v| !v.is_empty());
    values.sort();
    values.dedup();
    values
}

/// The first of `values` found in `text`, with some context.
fn leak(text: &str, values: &[String]) -> Option<String> {
    values.iter().find_map(|v| {
        text.find(v.as_str()).map(|at| {
            let start = text[..at].char_indices().rev().nth(120).map_or(0, |(i, _)| i);
            let end =
                text[at..].char_indices().nth(v.chars().count() + 120).map_or(text.len(), |(i, _)| at + i);
            format!("{v:?} in …{}…", &text[start..end])
        })
    })
}

// ---- helpers -------------------------------------------------------------------------------------

fn population() -> SeedOptions {
    SeedOptions::new(300, 23)
}

/// Someone most departments know, with no namesake and a phone: every kind of personal value is in play.
fn well_known(truth: &[TruthRecord]) -> &TruthRecord {
    truth
        .iter()
        .filter(|t| {
            t.namesake_of.is_none() && !t.phone.is_empty() && t.records.contains_key("public_security")
        })
        .max_by_key(|t| {
            (
                ["tax", "social_insurance"].iter().filter(|d| t.records.contains_key(**d)).count(),
                t.records.len(),
            )
        })
        .expect("a populated seed")
}

/// A request with a fresh W3C trace context; returns the caller's trace and span ids.
fn traced<T>(message: T, request_id: &str) -> (tonic::Request<T>, TraceId, SpanId) {
    let trace: [u8; 16] = rand::random();
    let span: [u8; 8] = rand::random();
    let (trace, span) = (TraceId::from_bytes(trace), SpanId::from_bytes(span));
    let mut request = tonic::Request::new(message);
    let header = format!("00-{trace}-{span}-01");
    request.metadata_mut().insert("traceparent", header.parse().expect("ascii"));
    request.metadata_mut().insert("tracestate", "fedx=test".parse().expect("ascii"));
    request.metadata_mut().insert("x-request-id", request_id.parse().expect("ascii"));
    (request, trace, span)
}

/// The trace id of a response's `traceparent`.
fn response_trace(metadata: &tonic::metadata::MetadataMap) -> Option<(String, String)> {
    let value = metadata.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = value.split('-').collect();
    (parts.len() == 4).then(|| (parts[1].to_owned(), parts[2].to_owned()))
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn attr_str(span: &SpanData, key: &str) -> String {
    attr(span, key).map(|v| v.as_str().into_owned()).unwrap_or_default()
}

/// Waits for the `rpc` span of `trace` (spans end as the response leaves; the client may be faster).
async fn rpc_span(sink: &SpanSink, trace: TraceId) -> anyhow::Result<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(span) = sink.of_trace(trace).into_iter().find(|s| attr(s, "rpc.system").is_some()) {
            return Ok(span);
        }
        anyhow::ensure!(Instant::now() < deadline, "no rpc span for trace {trace}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks the `rpc` span of a call made with [`traced`], and returns it.
async fn check_rpc_span(
    sink: &SpanSink,
    (trace, caller_span): (TraceId, SpanId),
    method: &str,
    request_id: &str,
) -> anyhow::Result<SpanData> {
    let span = rpc_span(sink, trace).await?;
    anyhow::ensure!(span.parent_span_id == caller_span, "the caller's span is the parent: {span:?}");
    anyhow::ensure!(span.name == method, "span name {}", span.name);
    for (key, want) in [
        ("rpc.system", "grpc"),
        ("rpc.method", method),
        ("fedx.department", DEPT),
        ("fedx.role", "consumer"),
        ("fedx.purpose", PURPOSE),
        ("fedx.outcome", "OK"),
        ("fedx.request_id", request_id),
    ] {
        anyhow::ensure!(attr_str(&span, key) == want, "{key} = {:?} on {method}", attr(&span, key));
    }
    anyhow::ensure!(
        matches!(attr(&span, "rpc.grpc.status_code"), Some(Value::I64(0))),
        "status code {:?}",
        attr(&span, "rpc.grpc.status_code")
    );
    Ok(span)
}

/// The spans of `trace` named like `prefix`, waiting a little for the last to end.
async fn children(sink: &SpanSink, trace: TraceId, prefix: &str) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<SpanData> =
            sink.of_trace(trace).into_iter().filter(|s| s.name.starts_with(prefix)).collect();
        if !found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` on the admin port, plain HTTP/1.1.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await??;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no HTTP head"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // Small bodies come with Content-Length; a chunked one is de-chunked crudely (sizes on own lines).
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// Scrapes until `wanted` all appear (the certificate snapshot is refreshed in the background).
async fn scrape_until(addr: std::net::SocketAddr, wanted: &[String]) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(addr, "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        match wanted.iter().find(|w| !body.contains(w.as_str())) {
            None => return Ok(body),
            Some(missing) if Instant::now() >= deadline => {
                anyhow::bail!("{missing} not in /metrics:\n{body}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ---- the test ------------------------------------------------------------------------------------

/// A view, an identity resolution and a joint verification, traced and measured — and no personal data
/// anywhere in the logs, spans or metrics.
async fn no_personal_data_in_logs_spans_or_metrics(backend: Backend) -> anyhow::Result<()> {
    let capture = capture();
    let (gw, truth) = TestGateway::start_with_sources_configured(backend, population(), |config| {
        config.telemetry.certificate_refresh_interval = Duration::from_millis(200);
    })
    .await?;
    let person = well_known(&truth).clone();
    let admin = gw.gateway.as_ref().and_then(|g| g.admin_addr).expect("the harness enables the admin port");
    let identity = gw.issue(DEPT, Role::Consumer).await?;
    let channel = gw.channel(Some(&identity))?;
    let tag = format!("{backend:?}").to_ascii_lowercase();

    // The view: personal data goes in (the subject) and comes out (the identity section).
    let view_id = format!("tel-view-{tag}");
    let (request, view_trace, view_caller) = traced(
        pb::GetWorkerViewRequest {
            purpose: PURPOSE.into(),
            subject: Some(subject_of(&person)),
            field_categories: Vec::new(),
            consent_id: String::new(),
        },
        &view_id,
    );
    let response = pb::worker_view_service_client::WorkerViewServiceClient::new(channel.clone())
        .get_worker_view(request)
        .await?;
    let (returned_trace, returned_span) = response_trace(response.metadata()).expect("traceparent returned");
    assert_eq!(returned_trace, view_trace.to_string(), "the caller's trace goes on");
    assert_ne!(returned_span, view_caller.to_string(), "the gateway's own span is the new parent");
    let view = response.into_inner();
    let identity_section = view.identity.as_ref().expect("the purpose grants identity");
    assert_eq!(
        identity_section.citizen_id.as_ref().map(|t| t.value.as_str()),
        Some(person.citizen_id.as_str())
    );
    let usci = view.employment.first().map(|e| e.employer_usci.clone()).filter(|u| !u.is_empty());

    // An identity resolution with the phone too.
    let resolve_id = format!("tel-resolve-{tag}");
    let mut subject = subject_of(&person);
    subject.phone = person.phone.clone();
    let (request, resolve_trace, resolve_caller) =
        traced(pb::ResolveIdentityRequest { purpose: PURPOSE.into(), subject: Some(subject) }, &resolve_id);
    let resolved = pb::identity_service_client::IdentityServiceClient::new(channel.clone())
        .resolve_identity(request)
        .await?
        .into_inner();
    assert_eq!(resolved.status, pb::ResolutionStatus::Resolved as i32);

    // A joint verification with a few claims, naming the person again.
    let mut claims = vec![pb::Claim {
        claim: Some(pb::claim::Claim::IdentityMatches(pb::IdentityMatches {
            name: person.name.clone(),
            citizen_id: person.citizen_id.clone(),
        })),
    }];
    if let Some(usci) = &usci {
        claims.push(pb::Claim {
            claim: Some(pb::claim::Claim::EmployedBy(pb::EmployedBy {
                employer_usci: usci.clone(),
                period: Some(pb::MonthRange { start_month: "2025-01".into(), end_month: "2025-03".into() }),
            })),
        });
        claims.push(pb::Claim {
            claim: Some(pb::claim::Claim::EnterpriseActive(pb::EnterpriseActive { usci: usci.clone() })),
        });
    }
    let verify_id = format!("tel-verify-{tag}");
    let (request, verify_trace, verify_caller) = traced(
        pb::JointVerifyRequest {
            purpose: PURPOSE.into(),
            subject: Some(subject_of(&person)),
            claims,
            consent_id: String::new(),
            signed_receipt: false,
        },
        &verify_id,
    );
    let verdicts = pb::verification_service_client::VerificationServiceClient::new(channel.clone())
        .joint_verify(request)
        .await?
        .into_inner();
    assert!(!verdicts.results.is_empty());

    // The failure paths, where error messages are logged: a refusal of a request whose free-text purpose
    // carries the subject's ID number, and a view while a department is down.
    let refused_id = format!("tel-refused-{tag}");
    let id = &person.citizen_id;
    let (request, refused_trace, refused_caller) = traced(
        pb::GetWorkerViewRequest {
            purpose: format!("p{}{}", &id[..6], &id[8..17]),
            subject: Some(subject_of(&person)),
            field_categories: Vec::new(),
            consent_id: String::new(),
        },
        &refused_id,
    );
    let mut views = pb::worker_view_service_client::WorkerViewServiceClient::new(channel.clone());
    let refused = views.get_worker_view(request).await.expect_err("not a catalogue purpose");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let refused_span = rpc_span(&capture.spans, refused_trace).await?;
    assert_eq!(refused_span.parent_span_id, refused_caller);
    assert!(attr(&refused_span, "fedx.purpose").is_none(), "only catalogue purposes are recorded");
    assert!(matches!(attr(&refused_span, "rpc.grpc.status_code"), Some(Value::I64(3))));
    assert!(!attr_str(&refused_span, "fedx.outcome").is_empty());

    gw.faults.set(Department::Tax, Fault::Down);
    let (request, _, _) = traced(
        pb::GetWorkerViewRequest {
            purpose: PURPOSE.into(),
            subject: Some(subject_of(&person)),
            field_categories: Vec::new(),
            consent_id: String::new(),
        },
        &format!("tel-partial-{tag}"),
    );
    let partial = views.get_worker_view(request).await?.into_inner();
    gw.faults.clear();
    assert!(partial.partial, "tax was down");

    // A counter recorded through the facade by any module (the rate limiter's, say) is scraped too.
    metrics::counter!("fedx_rate_limited_total", "department" => "telemetry_test", "scope" => "test")
        .increment(1);

    // Spans: the rpc span of each call under the caller's trace, with its facts…
    let view_span = check_rpc_span(&capture.spans, (view_trace, view_caller), VIEW, &view_id).await?;
    check_rpc_span(&capture.spans, (resolve_trace, resolve_caller), RESOLVE, &resolve_id).await?;
    check_rpc_span(&capture.spans, (verify_trace, verify_caller), VERIFY, &verify_id).await?;
    let view_span_id = view_span.span_context.span_id();
    // …the gateway's trace is the exchange record's…
    assert_eq!(record_of(&gw, &view_id).await?.exchange.trace_id, view_trace.to_string());
    // …and the children: the exchange-log append, identity resolution, fact gathering, the source calls.
    let appends = children(&capture.spans, view_trace, "audit.append").await;
    assert!(
        appends.iter().any(|s| s.parent_span_id == view_span_id && attr(s, "fedx.audit.seq").is_some()),
        "audit.append under the rpc span: {appends:?}"
    );
    let resolve = children(&capture.spans, view_trace, "identity.resolve").await;
    assert!(resolve.iter().any(|s| s.parent_span_id == view_span_id), "identity.resolve: {resolve:?}");
    let fetch = children(&capture.spans, view_trace, "view.fetch").await;
    assert!(fetch.iter().any(|s| s.parent_span_id == view_span_id), "view.fetch: {fetch:?}");
    let sources = children(&capture.spans, view_trace, "source ").await;
    let operations: std::collections::BTreeSet<(String, String)> =
        sources.iter().map(|s| (attr_str(s, "fedx.department"), attr_str(s, "fedx.operation"))).collect();
    assert!(operations.contains(&("public_security".into(), "lookup".into())), "{operations:?}");
    assert!(operations.iter().any(|(_, op)| op == "facts"), "{operations:?}");
    assert!(sources.iter().all(|s| attr_str(s, "fedx.outcome") == "ok"), "{sources:?}");
    let verify_sources = children(&capture.spans, verify_trace, "source ").await;
    assert!(!verify_sources.is_empty(), "the verification asked sources");

    // Metrics: requests, latencies, sources, the exchange log, certificates, other modules' counters.
    let wanted = [
        format!("fedx_requests_total{{method=\"{VIEW}\",department=\"{DEPT}\",code=\"OK\"}}"),
        format!("fedx_requests_total{{method=\"{VERIFY}\",department=\"{DEPT}\",code=\"OK\"}}"),
        format!("fedx_request_duration_seconds_bucket{{method=\"{VIEW}\",le=\"0.005\"}}"),
        "fedx_source_duration_seconds_bucket{department=\"public_security\",operation=\"lookup\"".to_owned(),
        "fedx_source_errors_total{department=\"tax\",operation=\"facts\",kind=\"unavailable\"}".to_owned(),
        format!("fedx_requests_total{{method=\"{VIEW}\",department=\"{DEPT}\",code=\"INVALID_ARGUMENT\"}}"),
        "fedx_audit_append_duration_seconds_count".to_owned(),
        "fedx_audit_records_total".to_owned(),
        format!("fedx_certificate_days_to_expiry{{department=\"{DEPT}\",serial=\"{}\"}}", identity.serial),
        "fedx_certificate_days_to_expiry{department=\"gateway\"".to_owned(),
        "fedx_rate_limited_total{department=\"telemetry_test\",scope=\"test\"} ".to_owned(),
    ];
    let metrics_text = scrape_until(admin, &wanted).await?;
    assert_eq!(http_get(admin, "/healthz").await?, (200, "ok\n".to_owned()));

    // Logs: the capture did see the gateway's log lines, the calls' spans in them…
    let logs = capture.logs.text();
    assert!(logs.contains("\"message\":\"worker view\""), "JSON log lines captured");
    assert!(logs.contains(&format!("fedx.request_id={view_id}")), "text log lines carry the rpc span");

    // …and nowhere, in any of the three, a value about the subject.
    let forbidden = personal_values(&person);
    assert!(forbidden.len() >= 6, "{} values to look for", forbidden.len());
    assert!(leak("a 13800138000 b", &["13800138000".to_owned()]).is_some(), "the search works");
    if let Some(found) = leak(&logs, &forbidden) {
        panic!("personal data in the logs: {found}");
    }
    for span in capture.spans.spans() {
        // Debug shows everything an exporter sends: name, attributes, events, links, status.
        let text = format!("{span:?}");
        if let Some(found) = leak(&text, &forbidden) {
            panic!("personal data in span {}: {found}", span.name);
        }
    }
    if let Some(found) = leak(&metrics_text, &forbidden) {
        panic!("personal data in the metrics: {found}");
    }

    gw.stop().await
}

backend_suite!(no_personal_data_in_logs_spans_or_metrics);
