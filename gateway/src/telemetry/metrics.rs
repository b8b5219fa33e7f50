//! Metrics: the Prometheus recorder behind the `metrics` facade, and the admin HTTP endpoint that
//! renders it.
//!
//! Any code in the process records with `metrics::counter!`/`gauge!`/`histogram!`; the recorder is
//! installed once per process ([`install`]) — several gateways in one process (the end-to-end tests)
//! share it, and each one's `/metrics` renders the same registry. Histograms named `*_seconds` are
//! rendered as Prometheus histograms with the buckets in [`LATENCY_BUCKETS`].
//!
//! Certificate expiry is not a facade gauge: the set of certificates changes (revocations, renewals,
//! new departments) and the facade cannot remove a series, so a revoked certificate would keep
//! reporting its last value and alert for ever. Each gateway instead keeps a snapshot of its own
//! registry ([`CertificateExpiry`]), refreshed every `telemetry.certificate_refresh_interval`, and
//! renders `fedx_certificate_days_to_expiry{department,serial}` from it on every scrape: its server
//! certificate (department `gateway`) and every issued certificate that is not revoked, not superseded
//! by a renewal, and not expired for more than [`EXPIRED_GRACE_DAYS`] days.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::TelemetryConfig;
use crate::store::Store;

/// Every metric the gateway records, by name.
pub mod names {
    /// Counter `{method, department, code}`: calls answered, by gRPC code name.
    pub const REQUESTS: &str = "fedx_requests_total";
    /// Histogram `{method}`: time to the response head.
    pub const REQUEST_DURATION: &str = "fedx_request_duration_seconds";
    /// Histogram `{department, operation}`: one call to a department's source database.
    pub const SOURCE_DURATION: &str = "fedx_source_duration_seconds";
    /// Counter `{department, operation, kind}`: source calls that failed (`SourceError::kind`, or
    /// `deadline` when the caller's deadline cut the call short).
    pub const SOURCE_ERRORS: &str = "fedx_source_errors_total";
    /// Histogram: an exchange record's append, from hand-over to durable commit, as the request waits.
    pub const AUDIT_APPEND_DURATION: &str = "fedx_audit_append_duration_seconds";
    /// Histogram: one group-commit transaction.
    pub const AUDIT_COMMIT_DURATION: &str = "fedx_audit_commit_duration_seconds";
    /// Counter: exchange records committed.
    pub const AUDIT_RECORDS: &str = "fedx_audit_records_total";
    /// Counter: group commits (transactions).
    pub const AUDIT_COMMITS: &str = "fedx_audit_commits_total";
    /// Counter: records refused because their commit failed (the calls failed closed).
    pub const AUDIT_FAILED_RECORDS: &str = "fedx_audit_failed_records_total";
    /// Gauge `{department, serial}`, rendered from the certificate registry (see the module doc).
    pub const CERTIFICATE_DAYS_TO_EXPIRY: &str = "fedx_certificate_days_to_expiry";
    /// Counter, recorded by the rate limiter (`crate::limits`).
    pub const RATE_LIMITED: &str = "fedx_rate_limited_total";
    /// Counter, recorded by the harvest guard (`crate::limits`).
    pub const HARVEST_GUARD_HITS: &str = "fedx_harvest_guard_hits_total";
}

/// Upper bounds of the latency histograms, in seconds: sub-millisecond source look-ups to the
/// multi-second source timeout.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Certificates expired longer ago than this are no longer reported.
pub const EXPIRED_GRACE_DAYS: f64 = 30.0;

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder (once; later calls return the
/// same handle). `None` when another recorder was installed first (an embedder's): the gateway then
/// records into that one and serves no metrics of its own.
pub fn install() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("the bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("a metrics recorder was already installed: /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(names::REQUESTS, "Calls answered, by method, caller department and gRPC code.");
    describe_histogram!(names::REQUEST_DURATION, Unit::Seconds, "Time from request to response head.");
    describe_histogram!(names::SOURCE_DURATION, Unit::Seconds, "One call to a department source database.");
    describe_counter!(names::SOURCE_ERRORS, "Department source calls that failed, by kind.");
    describe_histogram!(
        names::AUDIT_APPEND_DURATION,
        Unit::Seconds,
        "Exchange-record append as the request waits for it: queue and durable commit."
    );
    describe_histogram!(names::AUDIT_COMMIT_DURATION, Unit::Seconds, "One exchange-log group commit.");
    describe_counter!(names::AUDIT_RECORDS, "Exchange records committed.");
    describe_counter!(names::AUDIT_COMMITS, "Exchange-log group commits.");
    describe_counter!(names::AUDIT_FAILED_RECORDS, "Exchange records refused by a failed commit.");
    describe_counter!(names::RATE_LIMITED, "Calls refused by a rate limit.");
    describe_counter!(names::HARVEST_GUARD_HITS, "Calls stopped by the harvest guard.");
}

/// One certificate's expiry as the gauge reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    pub department: String,
    pub serial: String,
    pub not_after: i64,
}

/// A gateway's certificates, refreshed in the background and rendered on every scrape.
#[derive(Debug, Default)]
pub struct CertificateExpiry {
    current: ArcSwap<Vec<Expiry>>,
}

impl CertificateExpiry {
    /// Re-reads the registry and the server certificate. On a store error the previous snapshot stays.
    pub async fn refresh(&self, store: &Store, server_cert: &std::path::Path, now: i64) {
        let mut out = Vec::new();
        match server_certificate(server_cert) {
            Ok(expiry) => out.push(expiry),
            Err(e) => tracing::warn!(error = %e, "server certificate expiry not readable"),
        }
        match store.certificates().await {
            Ok(records) => {
                let renewed: BTreeSet<&str> = records
                    .iter()
                    .filter(|r| r.revoked_at.is_none())
                    .filter_map(|r| r.renewed_from.as_deref())
                    .collect();
                let grace = (EXPIRED_GRACE_DAYS * 86_400.0) as i64;
                out.extend(
                    records
                        .iter()
                        .filter(|r| r.revoked_at.is_none() && !renewed.contains(r.serial.as_str()))
                        .filter(|r| r.not_after + grace >= now)
                        .map(|r| Expiry {
                            department: r.dept.clone(),
                            serial: r.serial.clone(),
                            not_after: r.not_after,
                        }),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate registry not readable; expiry gauges not refreshed");
                return;
            }
        }
        self.current.store(Arc::new(out));
    }

    /// The gauge in Prometheus text format (empty when nothing is known).
    pub fn render(&self, now: i64) -> String {
        let current = self.current.load();
        if current.is_empty() {
            return String::new();
        }
        let name = names::CERTIFICATE_DAYS_TO_EXPIRY;
        let mut out = format!(
            "# HELP {name} Days until the certificate's notAfter (negative once expired).\n# TYPE {name} gauge\n"
        );
        for e in current.iter() {
            let days = (e.not_after - now) as f64 / 86_400.0;
            let _ = writeln!(
                out,
                "{name}{{department=\"{}\",serial=\"{}\"}} {days:.3}",
                label_value(&e.department),
                label_value(&e.serial)
            );
        }
        out
    }
}

/// Department codes and hex serials need no escaping; anything else is escaped as the format asks.
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn server_certificate(path: &std::path::Path) -> Result<Expiry, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    let cert = pem.parse_x509().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Expiry {
        department: "gateway".to_owned(),
        serial: crate::authn::serial_hex(cert.raw_serial()),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// What the admin endpoint of one gateway serves.
pub struct AdminSources {
    pub store: Store,
    pub server_cert: PathBuf,
}

/// Binds the admin listener (if configured), installs the recorder, and serves `/metrics` and
/// `/healthz` until `shutdown` turns true; also refreshes the certificate snapshot. Returns the bound
/// address (`None` when disabled), or the address that could not be bound.
pub async fn serve_admin(
    config: &TelemetryConfig,
    sources: AdminSources,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<SocketAddr>, (SocketAddr, std::io::Error)> {
    let Some(addr) = config.admin_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|e| (addr, e))?;
    let local = listener.local_addr().map_err(|e| (addr, e))?;
    let handle = install();
    let certificates = Arc::new(CertificateExpiry::default());
    certificates.refresh(&sources.store, &sources.server_cert, crate::store::now_unix()).await;

    tokio::spawn(refresh_loop(
        certificates.clone(),
        sources,
        config.certificate_refresh_interval,
        handle.clone(),
        shutdown.clone(),
    ));
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                let certificates = certificates.clone();
                async move {
                    let mut body = handle.as_ref().map(PrometheusHandle::render).unwrap_or_default();
                    body.push_str(&certificates.render(crate::store::now_unix()));
                    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let mut stop = shutdown;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin endpoint stopped");
        }
    });
    tracing::info!(admin_addr = %local, "metrics on http://{local}/metrics");
    Ok(Some(local))
}

async fn refresh_loop(
    certificates: Arc<CertificateExpiry>,
    sources: AdminSources,
    interval: Duration,
    handle: Option<PrometheusHandle>,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = interval.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
        certificates.refresh(&sources.store, &sources.server_cert, crate::store::now_unix()).await;
        // Drains histogram samples into their buckets so memory stays bounded between scrapes.
        if let Some(handle) = &handle {
            handle.run_upkeep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_renders_days_per_certificate() {
        let expiry = CertificateExpiry::default();
        assert_eq!(expiry.render(0), "");
        expiry.current.store(Arc::new(vec![
            Expiry { department: "tax".into(), serial: "4a".into(), not_after: 86_400 * 10 },
            Expiry { department: "gateway".into(), serial: "01".into(), not_after: -86_400 },
        ]));
        let text = expiry.render(0);
        assert!(text.contains("# TYPE fedx_certificate_days_to_expiry gauge"), "{text}");
        assert!(
            text.contains("fedx_certificate_days_to_expiry{department=\"tax\",serial=\"4a\"} 10.000"),
            "{text}"
        );
        assert!(text.contains("{department=\"gateway\",serial=\"01\"} -1.000"), "{text}");
        assert_eq!(label_value("a\"b"), "a\\\"b");
    }

    #[test]
    fn facade_metrics_show_up_in_the_rendering() {
        let Some(handle) = install() else { return };
        assert!(install().is_some(), "a second install returns the same handle");
        metrics::counter!(names::RATE_LIMITED, "department" => "tax").increment(2);
        metrics::histogram!(names::SOURCE_DURATION, "department" => "tax", "operation" => "lookup")
            .record(0.003);
        let text = handle.render();
        assert!(text.contains("fedx_rate_limited_total{department=\"tax\"} 2"), "{text}");
        assert!(text.contains("# TYPE fedx_source_duration_seconds histogram"), "{text}");
        assert!(text.contains("le=\"0.005\""), "{text}");
    }
}
