//! Department-source calls as spans and metrics.
//!
//! Every source the gateway opens is wrapped once ([`instrumented`], applied in
//! [`crate::server::open_resolver_with`]), so each call — identity look-ups, name frequencies, fact
//! fetches for views and verification, registrations, employer contribution status — is one `source`
//! span (a child of whatever span the caller is in: the `rpc` span, through `identity.resolve`,
//! `view.fetch` or `verify.evidence`) and one sample of
//! `fedx_source_duration_seconds{department,operation}`; failures count in
//! `fedx_source_errors_total{department,operation,kind}`. Wrapping the sources rather than
//! instrumenting each call site covers every call, including ones added later.
//!
//! The span and the metrics name the department, the operation (`lookup`, `name_frequency`, `facts`,
//! `employer_contributions`) and its kind — the look-up key's *kind* (`citizen_id`, `name_birth`,
//! `phone`, `usci`) or the fact category — and the outcome. Never the key, the record key, the name, the
//! USCI or the answer. A call dropped before it finished (the caller's deadline passed) counts as
//! `deadline`. Answers that are not failures — the record has gone, the source does not serve that key
//! or category — are outcomes, not errors.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use fedx_adapters::source::EmployerContributions;
use fedx_adapters::{Candidate, Department, FactCategory, Facts, LookupKey, RecordKey, Source, SourceError};
use futures::future::BoxFuture;
use tracing::field::Empty;
use tracing::Instrument;

use super::metrics::names;
use crate::sources::SourceWrapper;

/// Wraps `source` so that its calls are observed.
pub fn instrumented(source: Arc<dyn Source>) -> Arc<dyn Source> {
    Arc::new(InstrumentedSource { inner: source })
}

/// [`instrumented`] as a [`SourceWrapper`].
pub fn wrapper() -> SourceWrapper {
    Arc::new(instrumented)
}

struct InstrumentedSource {
    inner: Arc<dyn Source>,
}

impl Source for InstrumentedSource {
    fn department(&self) -> Department {
        self.inner.department()
    }

    fn categories(&self) -> &'static [FactCategory] {
        self.inner.categories()
    }

    fn lookup<'a>(&'a self, key: &'a LookupKey) -> BoxFuture<'a, Result<Vec<Candidate>, SourceError>> {
        Box::pin(observe(self.department(), "lookup", key.kind(), self.inner.lookup(key)))
    }

    fn name_frequency<'a>(&'a self, name_norm: &'a str) -> BoxFuture<'a, Result<u64, SourceError>> {
        Box::pin(observe(self.department(), "name_frequency", "name", self.inner.name_frequency(name_norm)))
    }

    fn fetch_facts<'a>(
        &'a self,
        record_key: &'a RecordKey,
        category: FactCategory,
    ) -> BoxFuture<'a, Result<Facts, SourceError>> {
        Box::pin(observe(
            self.department(),
            "facts",
            category.code(),
            self.inner.fetch_facts(record_key, category),
        ))
    }

    fn employer_contributions<'a>(
        &'a self,
        usci: &'a str,
        months: Option<(&'a str, &'a str)>,
    ) -> BoxFuture<'a, Result<EmployerContributions, SourceError>> {
        let kind = if months.is_some() { "period" } else { "all" };
        Box::pin(observe(
            self.department(),
            "employer_contributions",
            kind,
            self.inner.employer_contributions(usci, months),
        ))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), SourceError>> {
        self.inner.health()
    }
}

/// Whether an error is a failure of the source (as opposed to an answer about the question).
fn is_failure(error: &SourceError) -> bool {
    !matches!(
        error,
        SourceError::NoSuchRecord { .. }
            | SourceError::UnsupportedCategory { .. }
            | SourceError::UnsupportedKey { .. }
    )
}

async fn observe<T>(
    dept: Department,
    operation: &'static str,
    kind: &'static str,
    call: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    let department = dept.code();
    // DEBUG: the most numerous spans cost nothing unless traces are exported or debug logs are on.
    let span = tracing::debug_span!(
        "source",
        otel.name = %format_args!("source {department} {operation}"),
        otel.kind = "client",
        otel.status_code = Empty,
        fedx.department = department,
        fedx.operation = operation,
        fedx.kind = kind,
        fedx.outcome = Empty,
    );
    let mut pending =
        Pending { department, operation, started: Instant::now(), span: span.clone(), done: false };
    let result = call.instrument(span.clone()).await;
    pending.done = true;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    span.record("fedx.outcome", outcome);
    metrics::histogram!(names::SOURCE_DURATION, "department" => department, "operation" => operation)
        .record(pending.started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        if is_failure(e) {
            span.record("otel.status_code", "ERROR");
            metrics::counter!(names::SOURCE_ERRORS, "department" => department, "operation" => operation, "kind" => e.kind())
                .increment(1);
        }
    }
    result
}

/// Counts a call dropped before it finished: its caller's deadline passed.
struct Pending {
    department: &'static str,
    operation: &'static str,
    started: Instant,
    span: tracing::Span,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.span.record("fedx.outcome", "deadline");
        self.span.record("otel.status_code", "ERROR");
        let (department, operation) = (self.department, self.operation);
        metrics::histogram!(names::SOURCE_DURATION, "department" => department, "operation" => operation)
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!(names::SOURCE_ERRORS, "department" => department, "operation" => operation, "kind" => "deadline")
            .increment(1);
    }
}
