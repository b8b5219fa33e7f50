//! Caller deadlines: a call's `grpc-timeout` bounds the work done for it, and the call is recorded
//! whatever happens.
//!
//! tonic enforces `grpc-timeout` itself, but outside every layer of ours: when its timer fires it drops
//! the call — the exchange-recording layer with it, so the call would leave no record — and answers
//! CANCELLED. [`DeadlineLayer`] sits inside the audit layer and ends the call first: at the caller's
//! deadline less a small reserve ([`reserve`]: a tenth of the timeout, at most 50 ms) it answers
//! DEADLINE_EXCEEDED, which the audit layer records like any answer. (The record is queued for the writer
//! the moment the layer answers, so it is written even if tonic's own timer then fires during the
//! commit.)
//!
//! Propagation: the layer puts the [`Deadline`] into the request's extensions. Handlers ask for their
//! source calls' time with [`budget`] — the smaller of the configured source timeout and what is left
//! until the deadline, less a reserve to assemble and record the answer — and bound the sources of the
//! request with [`bounded`], so a view's second round (employer names) gets only what the first left
//! (the first gets [`first_round_budget`]: three quarters). A view whose slow department misses the
//! budget therefore comes back *partial*, in time, rather than as DEADLINE_EXCEEDED. A call without `grpc-timeout` runs as before: each source call bounded by the
//! source timeout.
//!
//! The same layer ends calls still running when a graceful shutdown's drain time is over
//! ([`super::shutdown`]): UNAVAILABLE (SHUTTING_DOWN), recorded.
//!
//! Streams: a deadline bounds the call until its response starts; a stream's messages are bounded by the
//! caller cancelling it. BatchVerify items are verified with the configured source timeout.

use std::sync::Arc;
use std::time::Duration;

use fedx_adapters::{
    Candidate, Department, EmployerContributions, FactCategory, Facts, LookupKey, RecordKey, Source,
    SourceError,
};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::body::Body;
use tower::Service;

use super::shutdown::{reached, Phase};
use crate::rpc::error::ApiError;
use crate::sources::SourceSet;

/// The gRPC deadline header (PROTOCOL-HTTP2.md).
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";
/// Upper bound of [`reserve`].
const MAX_RESERVE: Duration = Duration::from_millis(50);

/// Time kept back from `time`: a tenth of it, at most 50 ms. The layer answers this much before the
/// caller's deadline (so the answer and its record are not lost to tonic's own timer), and [`budget`]
/// leaves this much of what remains for assembling the answer after the sources.
pub fn reserve(time: Duration) -> Duration {
    (time / 10).min(MAX_RESERVE)
}

/// When the gateway must have its answer ready: the caller's deadline less the [`reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline `timeout` from now (as the caller's `grpc-timeout` says), less the [`reserve`].
    pub fn after(timeout: Duration) -> Deadline {
        Deadline { at: Instant::now() + timeout.saturating_sub(reserve(timeout)) }
    }

    pub fn at(at: Instant) -> Deadline {
        Deadline { at }
    }

    /// The deadline of `request`'s call, if its caller gave one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Deadline> {
        request.extensions().get::<Deadline>().copied()
    }

    pub fn instant(&self) -> Instant {
        self.at
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// The time the source calls of a request may take: `configured` (the source timeout) or, if the caller
/// set a deadline, what is left of it less a [`reserve`] for the rest of the call — whichever is shorter.
pub fn budget(deadline: Option<Deadline>, configured: Duration) -> Duration {
    match deadline {
        None => configured,
        Some(deadline) => {
            let remaining = deadline.remaining();
            configured.min(remaining.saturating_sub(reserve(remaining)))
        }
    }
}

/// The [`budget`] of the first of two rounds of source calls (a view's facts, then its employers'
/// names): three quarters of it when the caller's deadline is what limits it, so that the second round,
/// bounded by [`bounded`], still has time; the whole budget otherwise.
pub fn first_round_budget(deadline: Option<Deadline>, configured: Duration) -> Duration {
    let whole = budget(deadline, configured);
    if whole < configured {
        whole * 3 / 4
    } else {
        whole
    }
}

/// `sources`, each call bounded by `deadline` less the [`reserve`] (the same sources when there is no
/// deadline). A call that misses it fails with `SourceError::Timeout`, like one that misses the source
/// timeout; the circuit breakers underneath do not count it (the caller gave up, not the source).
pub fn bounded(sources: &SourceSet, deadline: Option<Deadline>) -> SourceSet {
    let Some(deadline) = deadline else {
        return sources.clone();
    };
    let remaining = deadline.remaining();
    let until = Instant::now() + remaining.saturating_sub(reserve(remaining));
    let wrapper: crate::sources::SourceWrapper = Arc::new(move |inner: Arc<dyn Source>| -> Arc<dyn Source> {
        Arc::new(BoundedSource { inner, until })
    });
    sources.clone().wrapped(&wrapper)
}

/// A source whose calls end at a fixed instant.
struct BoundedSource {
    inner: Arc<dyn Source>,
    until: Instant,
}

impl BoundedSource {
    fn within<'a, T: Send + 'a>(
        &'a self,
        call: BoxFuture<'a, Result<T, SourceError>>,
    ) -> BoxFuture<'a, Result<T, SourceError>> {
        let dept = self.inner.department();
        let until = self.until;
        Box::pin(async move {
            tokio::time::timeout_at(until, call)
                .await
                .unwrap_or(Err(SourceError::Timeout { dept, after: Duration::ZERO }))
        })
    }
}

impl Source for BoundedSource {
    fn department(&self) -> Department {
        self.inner.department()
    }

    fn categories(&self) -> &'static [FactCategory] {
        self.inner.categories()
    }

    fn lookup<'a>(&'a self, key: &'a LookupKey) -> BoxFuture<'a, Result<Vec<Candidate>, SourceError>> {
        self.within(self.inner.lookup(key))
    }

    fn name_frequency<'a>(&'a self, name_norm: &'a str) -> BoxFuture<'a, Result<u64, SourceError>> {
        self.within(self.inner.name_frequency(name_norm))
    }

    fn fetch_facts<'a>(
        &'a self,
        record_key: &'a RecordKey,
        category: FactCategory,
    ) -> BoxFuture<'a, Result<Facts, SourceError>> {
        self.within(self.inner.fetch_facts(record_key, category))
    }

    fn employer_contributions<'a>(
        &'a self,
        usci: &'a str,
        months: Option<(&'a str, &'a str)>,
    ) -> BoxFuture<'a, Result<EmployerContributions, SourceError>> {
        self.within(self.inner.employer_contributions(usci, months))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), SourceError>> {
        self.within(self.inner.health())
    }
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Ends a call at its caller's deadline (DEADLINE_EXCEEDED) or when a shutdown cuts the drain short
/// (UNAVAILABLE, SHUTTING_DOWN), whichever comes first; goes inside the audit layer so that both are
/// recorded. See the module doc.
#[derive(Clone)]
pub struct DeadlineLayer {
    drain: watch::Receiver<Phase>,
}

impl DeadlineLayer {
    pub fn new(drain: watch::Receiver<Phase>) -> DeadlineLayer {
        DeadlineLayer { drain }
    }
}

crate::middleware_layer!(DeadlineLayer);

impl crate::rpc::middleware::Middleware for DeadlineLayer {
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
        let deadline = request
            .headers()
            .get(GRPC_TIMEOUT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(Deadline::after);
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(deadline);
        }
        let mut inner = next;
        let drain = self.drain.clone();
        let call = inner.call(request);
        Box::pin(async move {
            let expiry = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.instant()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                response = call => response,
                () = expiry => Ok(ApiError::DeadlineExceeded.into_status().into_http()),
                () = reached(drain, Phase::Cut) => Ok(ApiError::ShuttingDown.into_status().into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::Layer;

    use super::*;
    use crate::resilience::Drain;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_writes_them() {
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S", "１S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_leave_room_for_the_answer() {
        let configured = Duration::from_secs(2);
        assert_eq!(budget(None, configured), configured);
        let long = Deadline::at(Instant::now() + Duration::from_secs(60));
        assert_eq!(budget(Some(long), configured), configured);
        let short = Deadline::after(Duration::from_millis(200));
        assert_eq!(short.remaining(), Duration::from_millis(180));
        assert_eq!(budget(Some(short), configured), Duration::from_millis(162));
        assert_eq!(first_round_budget(Some(short), configured), Duration::from_micros(121_500));
        assert_eq!(first_round_budget(Some(long), configured), configured);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(budget(Some(short), configured), Duration::ZERO, "passed: nothing left");
    }

    fn slow_service(
        delay: Duration,
    ) -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>,
    > + Clone {
        tower::service_fn(move |request: http::Request<Body>| -> BoxFuture<'static, _> {
            let seen = request.extensions().get::<Deadline>().is_some();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                let mut response = http::Response::new(Body::empty());
                response
                    .headers_mut()
                    .insert("x-saw-deadline", if seen { "yes" } else { "no" }.parse().unwrap());
                Ok(response)
            })
        })
    }

    fn request(timeout: Option<&str>) -> http::Request<Body> {
        let mut request = http::Request::new(Body::empty());
        if let Some(timeout) = timeout {
            request.headers_mut().insert(GRPC_TIMEOUT_HEADER, timeout.parse().unwrap());
        }
        request
    }

    fn code_of(response: &http::Response<Body>) -> Option<tonic::Code> {
        tonic::Status::from_header_map(response.headers()).map(|s| s.code())
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_is_answered_deadline_exceeded_before_the_deadline() {
        let drain = Drain::new();
        let mut service = DeadlineLayer::new(drain.subscribe()).layer(slow_service(Duration::from_secs(5)));
        let started = Instant::now();
        let response = service.call(request(Some("200m"))).await.unwrap();
        assert_eq!(code_of(&response), Some(tonic::Code::DeadlineExceeded));
        assert_eq!(started.elapsed(), Duration::from_millis(180));

        let mut fast = DeadlineLayer::new(drain.subscribe()).layer(slow_service(Duration::from_millis(10)));
        let response = fast.call(request(Some("1S"))).await.unwrap();
        assert_eq!(code_of(&response), None, "answered in time");
        assert_eq!(response.headers()["x-saw-deadline"], "yes", "the handler sees the deadline");
        let response = fast.call(request(None)).await.unwrap();
        assert_eq!(response.headers()["x-saw-deadline"], "no");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_drain_answers_running_calls_shutting_down() {
        let drain = Drain::new();
        let mut service = DeadlineLayer::new(drain.subscribe()).layer(slow_service(Duration::from_secs(60)));
        let call = tokio::spawn(service.call(request(None)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        drain.advance(Phase::Draining);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!call.is_finished(), "draining lets calls finish");
        drain.advance(Phase::Cut);
        let response = call.await.unwrap().unwrap();
        assert_eq!(code_of(&response), Some(tonic::Code::Unavailable));
    }
}
