//! Circuit breakers on the department sources.
//!
//! Without one, a department that is down or hanging costs every request that needs it the full source
//! timeout, and the gateway keeps a query running against it for each of them. With one, after
//! `failure_threshold` consecutive failures the gateway stops asking: for `open_for` every call fails at
//! once with `SourceError::Unavailable { reason: "circuit open" }`, which the view, verification and
//! identity paths already treat as a department that did not answer (partial views, SOURCE_UNAVAILABLE
//! verdicts, the department listed as unavailable). Then one probe call is let through (the others still
//! fail fast): if it succeeds the circuit closes, if not it stays open for another `open_for`.
//!
//! What counts:
//! * a failure: `Unavailable`, `Timeout`, `Backend`, and no answer within the source timeout;
//! * a success: an answer, or `NoSuchRecord` (the database answered);
//! * neither: `UnsupportedKey` / `UnsupportedCategory` (answered without asking the database, so they
//!   say nothing about its health and must not reset the failure count).
//!
//! Each source has two breakers, one for look-ups (`lookup`, `name_frequency`: identity resolution) and
//! one for facts (`fetch_facts`, `employer_contributions`: views and verification). They fail apart in
//! practice — a locked or bloated fact table makes fact queries hang while the indexed look-ups stay fast
//! — and a single breaker would never open then: every request's successful look-ups would reset the
//! failure count its fact queries build up.
//!
//! Every call runs in a task of its own, bounded by the source timeout, and the breaker learns its
//! outcome even when the caller stops waiting earlier (a caller's deadline shorter than the source
//! timeout): otherwise a source that hangs would never trip a breaker whose callers all give up first,
//! and a half-open probe whose caller went away would leave the circuit half-open for good.
//!
//! Transitions are logged with the department and operation only, and exported as
//! `fedx_source_circuit_state{department,operation}` (0 closed, 1 open, 2 half-open) and
//! `fedx_source_circuit_transitions_total{department,operation,from,to}`; calls refused while open as
//! `fedx_source_circuit_rejected_total{department,operation}`.
//!
//! Hand-written rather than a crate: the state machine is small, and the crates looked at (failsafe)
//! let every call through while half-open and read the system clock, which `tokio::time::pause` cannot
//! drive in tests.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedx_adapters::{
    Candidate, Department, EmployerContributions, FactCategory, Facts, LookupKey, RecordKey, Source,
    SourceError,
};
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::ResilienceConfig;
use crate::sources::SourceWrapper;

/// The state of one circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// Calls fail at once.
    Open,
    /// One probe call is out (or about to be); the others fail at once.
    HalfOpen,
}

impl CircuitState {
    /// The `fedx_source_circuit_state` gauge value.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::Open => 1.0,
            CircuitState::HalfOpen => 2.0,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// What a call's outcome says about the source's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
    /// Says nothing (answered without asking the database, or the call never finished).
    Neutral,
}

impl Health {
    pub fn of<T>(result: &Result<T, SourceError>) -> Health {
        match result {
            Ok(_) | Err(SourceError::NoSuchRecord { .. }) => Health::Healthy,
            Err(SourceError::UnsupportedKey { .. } | SourceError::UnsupportedCategory { .. }) => {
                Health::Neutral
            }
            Err(
                SourceError::Unavailable { .. } | SourceError::Timeout { .. } | SourceError::Backend { .. },
            ) => Health::Unhealthy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Let through while closed.
    Normal,
    /// The one call let through while half-open.
    Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl State {
    fn circuit(self) -> CircuitState {
        match self {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

/// One circuit: a department's look-ups or its fact queries.
#[derive(Debug)]
pub struct Breaker {
    dept: Department,
    operation: &'static str,
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

/// Permission for one call; report its outcome with [`Ticket::finish`]. Dropped unfinished, it counts
/// as [`Health::Neutral`] (a probe slot is given back).
#[derive(Debug)]
pub struct Ticket {
    breaker: Arc<Breaker>,
    admission: Admission,
    finished: bool,
}

impl Breaker {
    pub fn new(
        dept: Department,
        operation: &'static str,
        threshold: u32,
        open_for: Duration,
    ) -> Arc<Breaker> {
        let breaker = Breaker {
            dept,
            operation,
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        };
        breaker.gauge(CircuitState::Closed);
        Arc::new(breaker)
    }

    pub fn state(&self) -> CircuitState {
        self.lock().circuit()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is always consistent between statements; a poisoned lock only means a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go to the source now; `None`: fail it at once.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Option<Ticket> {
        let (admission, transition) = {
            let mut state = self.lock();
            let before = *state;
            let admission = match *state {
                State::Closed { .. } => Some(Admission::Normal),
                State::Open { until } if now < until => None,
                State::Open { .. } | State::HalfOpen { probing: false } => {
                    *state = State::HalfOpen { probing: true };
                    Some(Admission::Probe)
                }
                State::HalfOpen { probing: true } => None,
            };
            (admission, (before.circuit(), state.circuit()))
        };
        self.report(transition);
        match admission {
            Some(admission) => Some(Ticket { breaker: self.clone(), admission, finished: false }),
            None => {
                metrics::counter!("fedx_source_circuit_rejected_total",
                    "department" => self.dept.code(), "operation" => self.operation)
                .increment(1);
                None
            }
        }
    }

    fn complete(&self, admission: Admission, health: Health, now: Instant) {
        let transition = {
            let mut state = self.lock();
            let before = *state;
            *state = match (admission, health, before) {
                (Admission::Probe, Health::Healthy, _) => State::Closed { failures: 0 },
                (Admission::Probe, Health::Unhealthy, _) => State::Open { until: now + self.open_for },
                (Admission::Probe, Health::Neutral, _) => State::HalfOpen { probing: false },
                (Admission::Normal, Health::Healthy, State::Closed { .. }) => State::Closed { failures: 0 },
                (Admission::Normal, Health::Unhealthy, State::Closed { failures }) => {
                    let failures = failures + 1;
                    if failures >= self.threshold {
                        State::Open { until: now + self.open_for }
                    } else {
                        State::Closed { failures }
                    }
                }
                // Neutral outcomes, and calls let through before the circuit opened that end after it
                // did: the probe decides from here.
                (Admission::Normal, _, state) => state,
            };
            (before.circuit(), state.circuit())
        };
        self.report(transition);
    }

    fn report(&self, (from, to): (CircuitState, CircuitState)) {
        if from == to {
            return;
        }
        self.gauge(to);
        metrics::counter!("fedx_source_circuit_transitions_total",
            "department" => self.dept.code(), "operation" => self.operation,
            "from" => from.code(), "to" => to.code())
        .increment(1);
        match to {
            CircuitState::Open => tracing::warn!(
                department = self.dept.code(),
                operation = self.operation,
                from = from.code(),
                open_for_ms = self.open_for.as_millis() as u64,
                "source circuit opened: failing fast"
            ),
            CircuitState::HalfOpen => tracing::info!(
                department = self.dept.code(),
                operation = self.operation,
                "source circuit half-open: probing"
            ),
            CircuitState::Closed => tracing::info!(
                department = self.dept.code(),
                operation = self.operation,
                "source circuit closed: source answering again"
            ),
        }
    }

    fn gauge(&self, state: CircuitState) {
        metrics::gauge!("fedx_source_circuit_state",
            "department" => self.dept.code(), "operation" => self.operation)
        .set(state.gauge());
    }
}

impl Ticket {
    pub fn finish(mut self, health: Health, now: Instant) {
        self.finished = true;
        self.breaker.complete(self.admission, health, now);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            self.breaker.complete(self.admission, Health::Neutral, Instant::now());
        }
    }
}

/// A department source behind its two circuit breakers.
pub struct BreakerSource {
    inner: Arc<dyn Source>,
    lookups: Arc<Breaker>,
    facts: Arc<Breaker>,
    timeout: Duration,
}

impl BreakerSource {
    /// Wraps `inner`; `timeout` is the source timeout, after which a call counts as failed.
    pub fn new(inner: Arc<dyn Source>, config: &ResilienceConfig, timeout: Duration) -> BreakerSource {
        let dept = inner.department();
        BreakerSource {
            lookups: Breaker::new(dept, "lookup", config.failure_threshold, config.open_for),
            facts: Breaker::new(dept, "facts", config.failure_threshold, config.open_for),
            inner,
            timeout,
        }
    }

    /// The breaker of look-ups and the breaker of fact queries.
    pub fn breakers(&self) -> (&Arc<Breaker>, &Arc<Breaker>) {
        (&self.lookups, &self.facts)
    }

    /// Runs `call` on the inner source if `breaker` admits it, in a task of its own bounded by the source
    /// timeout, and reports the outcome to the breaker whether or not the caller is still waiting.
    fn guarded<T, F, Fut>(
        &self,
        breaker: &Arc<Breaker>,
        call: F,
    ) -> BoxFuture<'static, Result<T, SourceError>>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn Source>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SourceError>> + Send + 'static,
    {
        let dept = self.inner.department();
        let Some(ticket) = breaker.admit(Instant::now()) else {
            return Box::pin(
                async move { Err(SourceError::Unavailable { dept, reason: "circuit open".into() }) },
            );
        };
        let (inner, timeout) = (self.inner.clone(), self.timeout);
        let task = tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, call(inner)).await {
                Ok(result) => result,
                Err(_) => Err(SourceError::Timeout { dept, after: timeout }),
            };
            ticket.finish(Health::of(&result), Instant::now());
            result
        });
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(SourceError::Backend { dept, reason: format!("source call failed: {e}") })
            })
        })
    }
}

impl Source for BreakerSource {
    fn department(&self) -> Department {
        self.inner.department()
    }

    fn categories(&self) -> &'static [FactCategory] {
        self.inner.categories()
    }

    fn lookup<'a>(&'a self, key: &'a LookupKey) -> BoxFuture<'a, Result<Vec<Candidate>, SourceError>> {
        let key = key.clone();
        self.guarded(&self.lookups, move |inner| async move { inner.lookup(&key).await })
    }

    fn name_frequency<'a>(&'a self, name_norm: &'a str) -> BoxFuture<'a, Result<u64, SourceError>> {
        let name = name_norm.to_owned();
        self.guarded(&self.lookups, move |inner| async move { inner.name_frequency(&name).await })
    }

    fn fetch_facts<'a>(
        &'a self,
        record_key: &'a RecordKey,
        category: FactCategory,
    ) -> BoxFuture<'a, Result<Facts, SourceError>> {
        let key = record_key.clone();
        self.guarded(&self.facts, move |inner| async move { inner.fetch_facts(&key, category).await })
    }

    fn employer_contributions<'a>(
        &'a self,
        usci: &'a str,
        months: Option<(&'a str, &'a str)>,
    ) -> BoxFuture<'a, Result<EmployerContributions, SourceError>> {
        let usci = usci.to_owned();
        let months = months.map(|(from, to)| (from.to_owned(), to.to_owned()));
        self.guarded(&self.facts, move |inner| async move {
            inner.employer_contributions(&usci, months.as_ref().map(|(f, t)| (f.as_str(), t.as_str()))).await
        })
    }

    /// Not guarded: the liveness probe is how an operator sees the source itself.
    fn health(&self) -> BoxFuture<'_, Result<(), SourceError>> {
        self.inner.health()
    }
}

/// The wrapper putting every source behind its breakers (`None` when `[resilience] circuit_breaker` is
/// off). `timeout` is the per-source timeout (`[sources] timeout`).
pub fn wrapper(config: &ResilienceConfig, timeout: Duration) -> Option<SourceWrapper> {
    if !config.circuit_breaker {
        return None;
    }
    let config = config.clone();
    Some(Arc::new(move |inner: Arc<dyn Source>| -> Arc<dyn Source> {
        Arc::new(BreakerSource::new(inner, &config, timeout))
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(5);

    fn breaker(threshold: u32) -> Arc<Breaker> {
        Breaker::new(Department::Tax, "facts", threshold, OPEN_FOR)
    }

    fn fail(b: &Arc<Breaker>, now: Instant) {
        b.admit(now).expect("admitted").finish(Health::Unhealthy, now);
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let now = Instant::now();
        let b = breaker(3);
        fail(&b, now);
        fail(&b, now);
        b.admit(now).expect("closed").finish(Health::Healthy, now);
        fail(&b, now);
        fail(&b, now);
        assert_eq!(b.state(), CircuitState::Closed, "a success reset the count");
        b.admit(now).expect("closed").finish(Health::Neutral, now);
        assert_eq!(b.state(), CircuitState::Closed, "neutral outcomes neither count nor reset");
        fail(&b, now);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.admit(now).is_none(), "open: fail fast");
        assert!(b.admit(now + OPEN_FOR - Duration::from_millis(1)).is_none());
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_outcome_decides() {
        let now = Instant::now();
        let b = breaker(1);
        fail(&b, now);
        let later = now + OPEN_FOR;
        let probe = b.admit(later).expect("probe after open_for");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.admit(later).is_none(), "one probe at a time");
        probe.finish(Health::Unhealthy, later);
        assert_eq!(b.state(), CircuitState::Open, "a failed probe opens the circuit again");
        assert!(b.admit(later + OPEN_FOR / 2).is_none(), "for another open_for");

        let again = later + OPEN_FOR;
        b.admit(again).expect("probe").finish(Health::Healthy, again);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.admit(again).is_some());
    }

    #[test]
    fn an_abandoned_or_neutral_probe_gives_its_slot_back() {
        let now = Instant::now();
        let b = breaker(1);
        fail(&b, now);
        let later = now + OPEN_FOR;
        drop(b.admit(later).expect("probe"));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.admit(later).expect("the slot is free again").finish(Health::Neutral, later);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.admit(later).expect("still probing").finish(Health::Healthy, later);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn late_outcomes_of_calls_let_through_before_opening_do_not_decide() {
        let now = Instant::now();
        let b = breaker(1);
        let slow = b.admit(now).expect("closed");
        fail(&b, now);
        slow.finish(Health::Healthy, now);
        assert_eq!(b.state(), CircuitState::Open, "only the probe closes an open circuit");
    }

    #[test]
    fn errors_are_classified_by_what_they_say_about_the_database() {
        let dept = Department::Tax;
        let unhealthy = [
            SourceError::Unavailable { dept, reason: "x".into() },
            SourceError::Timeout { dept, after: Duration::ZERO },
            SourceError::Backend { dept, reason: "x".into() },
        ];
        for e in unhealthy {
            assert_eq!(Health::of::<()>(&Err(e)), Health::Unhealthy);
        }
        assert_eq!(
            Health::of::<()>(&Err(SourceError::NoSuchRecord { dept, key: RecordKey("k".into()) })),
            Health::Healthy
        );
        assert_eq!(
            Health::of::<()>(&Err(SourceError::UnsupportedKey { dept, kind: "phone" })),
            Health::Neutral
        );
        assert_eq!(Health::of(&Ok(())), Health::Healthy);
    }

    /// A source whose facts hang, counting the calls that reach it.
    struct Hanging {
        calls: AtomicU32,
    }

    impl Source for Hanging {
        fn department(&self) -> Department {
            Department::Tax
        }
        fn categories(&self) -> &'static [FactCategory] {
            &[FactCategory::Employment]
        }
        fn lookup<'a>(&'a self, _: &'a LookupKey) -> BoxFuture<'a, Result<Vec<Candidate>, SourceError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn name_frequency<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<u64, SourceError>> {
            Box::pin(async { Ok(1) })
        }
        fn fetch_facts<'a>(
            &'a self,
            _: &'a RecordKey,
            _: FactCategory,
        ) -> BoxFuture<'a, Result<Facts, SourceError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
        fn health(&self) -> BoxFuture<'_, Result<(), SourceError>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_source_trips_the_breaker_even_when_callers_give_up_first() {
        let hanging = Arc::new(Hanging { calls: AtomicU32::new(0) });
        let config =
            ResilienceConfig { failure_threshold: 2, open_for: OPEN_FOR, ..ResilienceConfig::default() };
        let timeout = Duration::from_secs(2);
        let source = BreakerSource::new(hanging.clone(), &config, timeout);
        let key = RecordKey("person/1".into());
        for _ in 0..2 {
            // The caller's own deadline (100 ms) is far shorter than the source timeout.
            let call = source.fetch_facts(&key, FactCategory::Employment);
            assert!(tokio::time::timeout(Duration::from_millis(100), call).await.is_err());
        }
        assert_eq!(
            source.breakers().1.state(),
            CircuitState::Closed,
            "the source timeout has not passed yet"
        );
        tokio::time::sleep(timeout).await;
        assert_eq!(source.breakers().1.state(), CircuitState::Open);
        assert_eq!(source.breakers().0.state(), CircuitState::Closed, "look-ups have their own breaker");

        let refused = source.fetch_facts(&key, FactCategory::Employment).await;
        assert!(
            matches!(refused, Err(SourceError::Unavailable { ref reason, .. }) if reason == "circuit open")
        );
        assert_eq!(hanging.calls.load(Ordering::SeqCst), 2, "an open circuit does not ask the source");

        tokio::time::sleep(OPEN_FOR).await;
        let probe = source.fetch_facts(&key, FactCategory::Employment);
        let second = source.fetch_facts(&key, FactCategory::Employment).await;
        assert!(second.is_err(), "only the probe goes through");
        assert!(matches!(probe.await, Err(SourceError::Timeout { .. })));
        assert_eq!(source.breakers().1.state(), CircuitState::Open);
        assert_eq!(hanging.calls.load(Ordering::SeqCst), 3);
    }
}
