//! Traces (OpenTelemetry), metrics (Prometheus scrape endpoint on the admin port) and structured logs,
//! none of them carrying personal data.
//!
//! Operators need to see how the exchange behaves — which department calls what, how long the
//! departments' databases take, what fails — without the observability stack becoming a second,
//! unaudited copy of the personal data the gateway exists to guard. So every attribute, label and log
//! field is drawn from a closed, non-personal vocabulary: method paths from the method table, department
//! codes from the certificate, purpose codes from the catalogue, gRPC codes and ErrorInfo reasons,
//! source operation kinds (`lookup`/`facts`/…, look-up key *kinds* such as `citizen_id`, never their
//! values), certificate serials and the pseudonymous worker reference. `tests/tests/telemetry.rs` runs
//! views, resolutions and joint verifications with logs, spans and metrics captured and searches them
//! for the subject's name, ID number and phone.
//!
//! * **Logs** — `tracing` with a `fmt` layer on stderr, text or JSON (`[telemetry] log_format`,
//!   overridden by `FEDX_LOG_FORMAT`), filtered by `[telemetry] log_filter` or `FEDX_LOG`.
//! * **Traces** — one `rpc` span per call ([`rpc::TelemetryLayer`], outermost layer), children for each
//!   department-source call ([`source::instrumented`]), identity resolution, fact gathering and the
//!   exchange-log append. W3C `traceparent`/`tracestate` from the caller become the span's parent; the
//!   gateway's own `traceparent` goes back in the response headers and into the exchange record. Spans
//!   reach OpenTelemetry through `tracing-opentelemetry` only when an OTLP endpoint is configured
//!   (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, gRPC); without one no
//!   OpenTelemetry layer or exporter exists at all, so tracing costs what plain `tracing` costs.
//! * **Metrics** — the `metrics` facade with a Prometheus recorder installed once per process
//!   ([`metrics`]), rendered at `GET /metrics` on `[telemetry] admin_listen` (plain HTTP, meant for a
//!   private network; `GET /healthz` answers `ok`). Certificate expiry is rendered from the registry at
//!   scrape time (see [`metrics::CertificateExpiry`]).

pub mod metrics;
pub mod rpc;
pub mod source;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// `[telemetry]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` (default) or `json` (one JSON object per line, with the current span's fields).
    /// `FEDX_LOG_FORMAT` overrides it.
    pub log_format: LogFormat,
    /// Log filter in `tracing` `EnvFilter` syntax, e.g. `info` or `info,fedx_gateway::view=debug`.
    /// `FEDX_LOG` overrides it.
    pub log_filter: String,
    /// Plain-HTTP admin listener serving `/metrics` (Prometheus) and `/healthz`. Empty (`""`) disables
    /// it. `FEDX_ADMIN_LISTEN` overrides it.
    #[serde(with = "optional_addr")]
    pub admin_listen: Option<SocketAddr>,
    /// How often the certificate-expiry gauges are re-read from the certificate registry.
    #[serde(with = "crate::config::duration_secs")]
    pub certificate_refresh_interval: Duration,
    /// `service.name` of exported traces; `OTEL_SERVICE_NAME` overrides it.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            certificate_refresh_interval: Duration::from_secs(60),
            service_name: "fedx-gateway".to_owned(),
        }
    }
}

impl TelemetryConfig {
    /// Start-up checks (called from [`crate::config::Config::validate`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.certificate_refresh_interval.is_zero() {
            return Err("telemetry.certificate_refresh_interval must be positive".into());
        }
        if let Err(e) = EnvFilter::builder().parse(&self.log_filter) {
            return Err(format!("telemetry.log_filter '{}' is not a valid filter: {e}", self.log_filter));
        }
        if self.service_name.trim().is_empty() {
            return Err("telemetry.service_name must not be empty".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `admin_listen = "127.0.0.1:9464"`, or `""` for none (TOML has no null).
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_optional_addr(&text).map_err(serde::de::Error::custom)
    }
}

/// An admin address as written in the file or `FEDX_ADMIN_LISTEN`: empty means none.
pub fn parse_optional_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| format!("'{text}' is not a socket address: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP trace exporter: {0}")]
    Exporter(String),
    #[error("cannot read {var} ({path}): {source}")]
    ReadTlsFile { var: &'static str, path: String, source: std::io::Error },
}

/// Keeps the trace pipeline alive; dropping it (or [`TelemetryGuard::shutdown`]) flushes the spans
/// still queued for export. Drop it while the tokio runtime is still running.
#[must_use = "dropping the guard shuts the trace exporter down"]
pub struct TelemetryGuard {
    tracer_provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported (an OTLP endpoint was configured).
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Flushes and stops the exporter (what dropping does, but callable where errors can be reported).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: trace exporter did not shut down cleanly: {e}");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global `tracing` subscriber: the log layer, and — when `export` is set and an OTLP
/// endpoint is configured in the environment — the OpenTelemetry layer with a batching OTLP/gRPC
/// exporter. Call it once per process, inside the tokio runtime (the gRPC exporter's channel needs
/// one). `export` is for the long-running commands (`serve`, `demo`); one-shot administration commands
/// only log. A subscriber already installed (tests) is left in place.
pub fn init(config: &TelemetryConfig, export: bool) -> Result<TelemetryGuard, TelemetryError> {
    let env = |var: &str| std::env::var(var).ok();
    let tracer_provider = if export { tracer_provider(config, &env)? } else { None };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let subscriber = subscriber(config, &env, tracer_provider.as_ref(), std::io::stderr, ansi);
    // Also forwards `log` records (rustls) into the subscriber. Another subscriber may already be
    // installed (an embedding test): keep it.
    let _ = tracing_subscriber::util::SubscriberInitExt::try_init(subscriber);
    Ok(TelemetryGuard { tracer_provider })
}

/// The OTLP endpoint configured in the environment, if any (the exporter reads the same variables).
/// `OTEL_SDK_DISABLED=true` turns export off whatever the endpoint.
pub fn otlp_endpoint(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .into_iter()
        .filter_map(env)
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty())
}

/// The trace pipeline for the configured OTLP endpoint, or `None` — and nothing constructed — when no
/// endpoint is configured. Must run inside a tokio runtime when an endpoint is configured.
pub fn tracer_provider(
    config: &TelemetryConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, TelemetryError> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};

    let Some(endpoint) = otlp_endpoint(env) else {
        return Ok(None);
    };
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint);
    if let Some(tls) = collector_tls(env)? {
        builder = builder.with_tls_config(tls);
    }
    let exporter = builder.build().map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    // The configured name unless the environment names the service (it takes precedence).
    let named = env("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name(config.service_name.clone());
    }
    Ok(Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// TLS towards the collector from the standard variables: `OTEL_EXPORTER_OTLP_CERTIFICATE` (CA, PEM)
/// and, for mutual TLS, `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` + `OTEL_EXPORTER_OTLP_CLIENT_KEY`.
fn collector_tls(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<tonic::transport::ClientTlsConfig>, TelemetryError> {
    let read = |var: &'static str| -> Result<Option<Vec<u8>>, TelemetryError> {
        match env(var).filter(|p| !p.trim().is_empty()) {
            None => Ok(None),
            Some(path) => std::fs::read(path.trim())
                .map(Some)
                .map_err(|source| TelemetryError::ReadTlsFile { var, path, source }),
        }
    };
    let ca = read("OTEL_EXPORTER_OTLP_CERTIFICATE")?;
    let cert = read("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")?;
    let key = read("OTEL_EXPORTER_OTLP_CLIENT_KEY")?;
    if ca.is_none() && cert.is_none() {
        return Ok(None);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new();
    if let Some(ca) = ca {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
    }
    if let (Some(cert), Some(key)) = (cert, key) {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Ok(Some(tls))
}

/// The log format in force: `FEDX_LOG_FORMAT` (`json` or `text`) over the configuration.
pub fn log_format(config: &TelemetryConfig, env: &dyn Fn(&str) -> Option<String>) -> LogFormat {
    match env("FEDX_LOG_FORMAT").map(|f| f.trim().to_ascii_lowercase()) {
        Some(f) if f == "json" => LogFormat::Json,
        Some(f) if f == "text" => LogFormat::Text,
        _ => config.log_format,
    }
}

/// The log filter in force: `FEDX_LOG` over the configuration (an unparsable filter falls back to
/// `info`, as before).
pub fn log_filter(config: &TelemetryConfig, env: &dyn Fn(&str) -> Option<String>) -> EnvFilter {
    let text = env("FEDX_LOG").unwrap_or_else(|| config.log_filter.clone());
    EnvFilter::builder().parse(&text).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Which spans and events reach OpenTelemetry, whatever the log filter says (a quiet log must not empty
/// the traces): the gateway's own down to DEBUG — the per-source-call spans are DEBUG, so that without
/// trace export and with logs at INFO they are never even created — and the adapters' at INFO.
pub fn trace_filter() -> Targets {
    Targets::new()
        .with_target("fedx_gateway", LevelFilter::DEBUG)
        .with_target("fedx_adapters", LevelFilter::INFO)
}

/// The subscriber [`init`] installs, writing logs to `writer` (text with colours if `ansi`): built
/// separately so tests can inspect it without installing it.
pub fn subscriber<W>(
    config: &TelemetryConfig,
    env: &dyn Fn(&str) -> Option<String>,
    tracer_provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
    writer: W,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = log_filter(config, env);
    let logs = match log_format(config, env) {
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().json().with_writer(writer).with_filter(filter).boxed()
        }
        LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(writer).with_filter(filter).boxed()
        }
    };
    let traces = tracer_provider.map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("fedx-gateway"))
            .with_filter(trace_filter())
    });
    tracing_subscriber::registry().with(logs).with(traces)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |var: &str| vars.get(var).cloned()
    }

    #[test]
    fn without_an_endpoint_no_exporter_is_built() {
        let config = TelemetryConfig::default();
        assert_eq!(otlp_endpoint(&env_of(&[])), None);
        assert_eq!(otlp_endpoint(&env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), None);
        // No runtime here: building a gRPC exporter would panic, so this also proves none is built.
        assert!(tracer_provider(&config, &env_of(&[])).expect("no error").is_none());
        let disabled = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(tracer_provider(&config, &disabled).expect("no error").is_none());
    }

    #[tokio::test]
    async fn an_endpoint_builds_an_exporter_that_shuts_down_without_a_collector() {
        let config = TelemetryConfig::default();
        // Port 9 (discard) on loopback: nothing listens, so the export fails fast and quietly.
        let env = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")]);
        assert_eq!(otlp_endpoint(&env).as_deref(), Some("http://127.0.0.1:9"));
        let traces_only = env_of(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9")]);
        assert!(otlp_endpoint(&traces_only).is_some());
        let provider = tracer_provider(&config, &env).expect("exporter builds").expect("configured");
        let subscriber = subscriber(&config, &env, Some(&provider), std::io::sink, false);
        tracing::subscriber::with_default(subscriber, || tracing::info_span!("rpc").in_scope(|| {}));
        let guard = TelemetryGuard { tracer_provider: Some(provider) };
        assert!(guard.exporting());
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || guard.shutdown()).await.expect("shutdown");
        assert!(started.elapsed() < Duration::from_secs(30), "shutdown took {:?}", started.elapsed());
    }

    /// A stand-in OTLP collector receives the spans, with the service name and the span's fields.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_reach_an_otlp_collector() {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
            TraceService, TraceServiceServer,
        };
        use opentelemetry_proto::tonic::collector::trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        };

        struct Collector(tokio::sync::mpsc::UnboundedSender<ExportTraceServiceRequest>);
        #[tonic::async_trait]
        impl TraceService for Collector {
            async fn export(
                &self,
                request: tonic::Request<ExportTraceServiceRequest>,
            ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
                let _ = self.0.send(request.into_inner());
                Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
            }
        }
        let (sent, mut received) = tokio::sync::mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(sent)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let config = TelemetryConfig::default();
        let env = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{addr}"))]);
        let provider = tracer_provider(&config, &env).unwrap().expect("an endpoint is configured");
        let subscriber = subscriber(&config, &env, Some(&provider), std::io::sink, false);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("rpc", otel.name = "fedx.v1.GatewayService/WhoAmI", fedx.department = "tax")
                .in_scope(|| tracing::info!("inside"));
        });
        // Shutting down flushes the batch (a blocking call: off the runtime's workers).
        tokio::task::spawn_blocking(move || provider.shutdown()).await.unwrap().unwrap();

        let request = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("an export within 10 s")
            .expect("one request");
        let resource = request.resource_spans[0].resource.as_ref().expect("a resource");
        let service = resource.attributes.iter().find(|kv| kv.key == "service.name").expect("service.name");
        assert_eq!(format!("{:?}", service.value), format!("{:?}", Some(string_value("fedx-gateway"))));
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "fedx.v1.GatewayService/WhoAmI");
        assert!(span.attributes.iter().any(|kv| kv.key == "fedx.department"));
        assert_eq!(span.events[0].name, "inside");
    }

    fn string_value(s: &str) -> opentelemetry_proto::tonic::common::v1::AnyValue {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(Value::StringValue(s.to_owned())) }
    }

    #[test]
    fn log_settings_come_from_the_environment_over_the_file() {
        let config = TelemetryConfig { log_format: LogFormat::Json, ..TelemetryConfig::default() };
        assert_eq!(log_format(&config, &env_of(&[])), LogFormat::Json);
        assert_eq!(log_format(&config, &env_of(&[("FEDX_LOG_FORMAT", "text")])), LogFormat::Text);
        let text = TelemetryConfig::default();
        assert_eq!(log_format(&text, &env_of(&[("FEDX_LOG_FORMAT", "json")])), LogFormat::Json);
        assert_eq!(log_format(&text, &env_of(&[("FEDX_LOG_FORMAT", "yaml")])), LogFormat::Text);
        assert_eq!(log_filter(&text, &env_of(&[("FEDX_LOG", "warn")])).to_string(), "warn");
        assert_eq!(log_filter(&text, &env_of(&[])).to_string(), "info");
    }

    #[test]
    fn json_logs_carry_the_span_fields() {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let out = buffer.clone();
        let config = TelemetryConfig { log_format: LogFormat::Json, ..TelemetryConfig::default() };
        let subscriber = subscriber(&config, &env_of(&[]), None, move || out.clone(), false);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", fedx.department = "tax");
            let _entered = span.enter();
            tracing::info!(fields = 3, "worker view");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["fields"]["message"], "worker view");
        assert_eq!(line["span"]["fedx.department"], "tax");
    }

    #[test]
    fn the_admin_address_can_be_switched_off() {
        assert_eq!(parse_optional_addr("").unwrap(), None);
        assert_eq!(parse_optional_addr("127.0.0.1:0").unwrap(), Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert!(parse_optional_addr("localhost").is_err());
        let config: TelemetryConfig = toml::from_str("admin_listen = \"\"").unwrap();
        assert_eq!(config.admin_listen, None);
        let round_trip: TelemetryConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(round_trip.admin_listen, None);
        let json: TelemetryConfig = toml::from_str("log_format = \"json\"").unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        assert!(toml::from_str::<TelemetryConfig>("log_format = \"xml\"").is_err());
    }
}
