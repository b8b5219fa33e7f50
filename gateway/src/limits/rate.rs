//! Per-department and per-(department, method) rate limits (GCRA) and per-department concurrency.
//!
//! Each configured quota is one keyed `governor` limiter keyed by department code: the default
//! department quota keys every department without an override, an override keys its one department,
//! a method's default keys every department on that method. A call is checked against its method's quota
//! (if any) first and then its department's, so a call refused by the narrower quota does not use up
//! the wider one. The rates and bursts are this replica's share (see the module doc of
//! [`crate::limits`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::LimitsConfig;
use crate::rpc::error::ApiError;

/// How long a caller refused for concurrency is told to wait: calls finish in milliseconds.
pub const CONCURRENCY_RETRY: Duration = Duration::from_millis(100);

/// The least retry delay a rate refusal gives (see where it is used).
const MIN_RETRY: Duration = Duration::from_millis(1);

type Keyed<C> = RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>;

/// Which limit refused a call (the `scope` label of `fedx_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Department,
    Method,
    Concurrency,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Department => "department",
            Scope::Method => "method",
            Scope::Concurrency => "concurrency",
        }
    }
}

/// The state of the tightest quota that applied to a call, for the `x-ratelimit-*` metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    /// The quota's burst on this replica.
    pub limit: u32,
    /// Calls that could be made at once now.
    pub remaining: u32,
    /// Admitted: until the bucket is full again; refused: until the next call would be admitted.
    pub reset: Duration,
}

impl RateStatus {
    /// As gRPC metadata: `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` (whole
    /// seconds, rounded up).
    pub fn headers(&self) -> [(&'static str, u64); 3] {
        [
            ("x-ratelimit-limit", u64::from(self.limit)),
            ("x-ratelimit-remaining", u64::from(self.remaining)),
            ("x-ratelimit-reset", super::ceil_secs(self.reset)),
        ]
    }
}

/// A call let through: the quota state and the concurrency permit, held while the call is in flight.
#[derive(Debug)]
pub struct CallAdmission {
    pub rate: Option<RateStatus>,
    /// None only for a department missing from the registry the limits were built with (which cannot
    /// authenticate).
    pub permit: Option<OwnedSemaphorePermit>,
}

/// A call refused, with the status to send.
#[derive(Debug)]
pub struct RateRefusal {
    pub scope: Scope,
    /// Boxed: refusals are the rare path, and the `Result`s carrying them stay small.
    pub error: Box<ApiError>,
    /// The quota state for the `x-ratelimit-*` metadata (none for a concurrency refusal: the call was
    /// not counted against any quota).
    pub rate: Option<RateStatus>,
}

impl RateRefusal {
    /// The status, with the `x-ratelimit-*` metadata.
    pub fn into_status(self) -> tonic::Status {
        let mut status = self.error.status();
        if let Some(rate) = self.rate {
            for (key, value) in rate.headers() {
                if let Ok(value) = value.to_string().parse() {
                    status.metadata_mut().insert(key, value);
                }
            }
        }
        status
    }
}

struct Rule<C: Clock> {
    limiter: Keyed<C>,
    /// This replica's share.
    burst: u32,
    per_second: f64,
    /// The configured totals, for the refusal's description.
    total: (f64, u32),
    replicas: u32,
}

impl<C: Clock + Clone> Rule<C> {
    fn new(per_second: f64, burst: u32, config: &LimitsConfig, clock: &C) -> Rule<C> {
        let (quota, share) = replica_quota(per_second, burst, config.replicas);
        Rule {
            limiter: RateLimiter::new(quota, DashMapStateStore::default(), clock.clone()),
            burst: share,
            per_second: per_second / f64::from(config.replicas.max(1)),
            total: (per_second, burst),
            replicas: config.replicas.max(1),
        }
    }

    fn description(&self) -> String {
        let (rate, burst) = self.total;
        if self.replicas == 1 {
            format!("{} calls per second, bursts of {}", fmt_rate(rate), burst)
        } else {
            format!(
                "{} calls per second, bursts of {} across {} replicas ({} per second, bursts of {} on each)",
                fmt_rate(rate),
                burst,
                self.replicas,
                fmt_rate(self.per_second),
                self.burst
            )
        }
    }
}

fn fmt_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate}")
    }
}

/// The GCRA quota one replica enforces for a total of `per_second` with bursts of `burst`: one call per
/// `replicas / per_second` seconds (in whole nanoseconds), bursts of `burst / replicas` rounded up.
/// Returns the quota and the burst share.
pub fn replica_quota(per_second: f64, burst: u32, replicas: u32) -> (Quota, u32) {
    let replicas = replicas.max(1);
    let share = burst.div_ceil(replicas).max(1);
    let nanos = (1e9 * f64::from(replicas) / per_second).round().max(1.0) as u64;
    let quota = Quota::with_period(Duration::from_nanos(nanos))
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(share).expect("at least 1"));
    (quota, share)
}

struct MethodRules<C: Clock> {
    default: Option<Rule<C>>,
    departments: HashMap<String, Rule<C>>,
}

/// The rate limiters and concurrency semaphores of one version of the limits.
pub struct RateLimits<C: Clock> {
    clock: C,
    default: Rule<C>,
    departments: HashMap<String, Rule<C>>,
    methods: HashMap<String, MethodRules<C>>,
    semaphores: HashMap<String, (Arc<Semaphore>, u32)>,
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Limiters for `config` (already validated) and semaphores for `departments`.
    pub fn new(config: &LimitsConfig, departments: &[String], clock: C) -> RateLimits<C> {
        let rule = |per_second: f64, burst: u32| Rule::new(per_second, burst, config, &clock);
        let default = rule(config.per_second, config.burst);
        let overrides =
            config.departments.iter().filter(|(_, d)| d.per_second.is_some() || d.burst.is_some());
        let dept_rules = overrides
            .map(|(code, d)| {
                (
                    code.clone(),
                    rule(d.per_second.unwrap_or(config.per_second), d.burst.unwrap_or(config.burst)),
                )
            })
            .collect();
        let methods = config
            .methods
            .iter()
            .map(|(path, m)| {
                let default = match (m.per_second, m.burst) {
                    (Some(per_second), Some(burst)) => Some(rule(per_second, burst)),
                    _ => None,
                };
                let departments = m
                    .departments
                    .iter()
                    .map(|(code, r)| (code.clone(), rule(r.per_second, r.burst)))
                    .collect();
                (path.clone(), MethodRules { default, departments })
            })
            .collect();
        let semaphores = departments
            .iter()
            .map(|code| {
                let max = config
                    .departments
                    .get(code)
                    .and_then(|d| d.max_concurrent)
                    .unwrap_or(config.max_concurrent)
                    .max(1);
                (code.clone(), (Arc::new(Semaphore::new(max as usize)), max))
            })
            .collect();
        RateLimits { default, departments: dept_rules, methods, semaphores, clock }
    }

    /// Checks and counts one call of `dept` to `method` against the quotas that apply. On success the
    /// state of the tightest of them (fewest calls remaining); on refusal the GCRA wait of the one that
    /// refused.
    pub fn check(&self, dept: &str, method: &str) -> Result<Option<RateStatus>, RateRefusal> {
        let method_rule =
            self.methods.get(method).and_then(|m| m.departments.get(dept).or(m.default.as_ref()));
        let dept_rule = self.departments.get(dept).unwrap_or(&self.default);
        let mut tightest: Option<RateStatus> = None;
        let rules = [(method_rule, Scope::Method), (Some(dept_rule), Scope::Department)];
        let key = dept.to_owned();
        for (rule, scope) in rules.into_iter().filter_map(|(r, s)| r.map(|r| (r, s))) {
            match rule.limiter.check_key(&key) {
                Ok(snapshot) => {
                    let remaining = snapshot.remaining_burst_capacity();
                    let quota = snapshot.quota();
                    let status = RateStatus {
                        limit: rule.burst,
                        remaining,
                        reset: quota.replenish_interval() * rule.burst.saturating_sub(remaining),
                    };
                    if tightest.is_none_or(|t| status.remaining < t.remaining) {
                        tightest = Some(status);
                    }
                }
                Err(not_until) => {
                    // Read after the refusal, the clock may already be past the earliest allowed
                    // instant; "retry after 0 s" would invite an immediate retry loop, so at least 1 ms.
                    let wait = not_until.wait_time_from(self.clock.now()).max(MIN_RETRY);
                    let subject = match scope {
                        Scope::Method => format!("department:{dept}/method:{method}"),
                        _ => format!("department:{dept}"),
                    };
                    let error =
                        ApiError::RateLimited { subject, description: rule.description(), retry_after: wait };
                    let rate = RateStatus { limit: rule.burst, remaining: 0, reset: wait };
                    return Err(RateRefusal { scope, error: Box::new(error), rate: Some(rate) });
                }
            }
        }
        Ok(tightest)
    }

    /// Takes a concurrency permit of `dept` (refused at once when none is free), then checks the rate.
    pub fn admit_call(&self, dept: &str, method: &str) -> Result<CallAdmission, RateRefusal> {
        let permit = match self.semaphores.get(dept) {
            Some((semaphore, max)) => {
                Some(semaphore.clone().try_acquire_owned().map_err(|_| RateRefusal {
                    scope: Scope::Concurrency,
                    error: Box::new(ApiError::RateLimited {
                        subject: format!("department:{dept}/concurrency"),
                        description: format!("at most {max} calls in flight at once on each replica"),
                        retry_after: CONCURRENCY_RETRY,
                    }),
                    rate: None,
                })?)
            }
            // Every caller's department is in the registry (checked at the handshake), which is what
            // the semaphores were made for.
            None => None,
        };
        let rate = self.check(dept, method)?;
        Ok(CallAdmission { rate, permit })
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::limits::{DepartmentLimits, MethodLimits, Rate};

    const WHO: &str = "/fedx.v1.GatewayService/WhoAmI";
    const VIEW: &str = "/fedx.v1.WorkerViewService/GetWorkerView";

    fn departments() -> Vec<String> {
        vec!["tax".into(), "education".into()]
    }

    fn limits(config: &LimitsConfig) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimits::new(config, &departments(), clock.clone()), clock)
    }

    fn config(per_second: f64, burst: u32) -> LimitsConfig {
        LimitsConfig { per_second, burst, ..LimitsConfig::default() }
    }

    fn retry_after(refusal: &RateRefusal) -> Duration {
        match refusal.error.as_ref() {
            ApiError::RateLimited { retry_after, .. } => *retry_after,
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[test]
    fn a_burst_is_admitted_at_once_and_then_one_call_per_interval() {
        let (limits, clock) = limits(&config(10.0, 5));
        for i in 0..5 {
            let status = limits.check("tax", WHO).expect("within the burst").expect("a quota applies");
            assert_eq!(status.limit, 5);
            assert_eq!(status.remaining, 4 - i, "call {i}");
        }
        let refused = limits.check("tax", WHO).expect_err("the sixth call at the same instant is refused");
        assert_eq!(refused.scope, Scope::Department);
        // GCRA: the next call conforms exactly one emission interval (1/10 s) after the burst.
        assert_eq!(retry_after(&refused), Duration::from_millis(100));
        assert_eq!(
            refused.rate,
            Some(RateStatus { limit: 5, remaining: 0, reset: Duration::from_millis(100) })
        );

        clock.advance(Duration::from_millis(99));
        let refused = limits.check("tax", WHO).expect_err("1 ms early");
        assert_eq!(retry_after(&refused), Duration::from_millis(1), "the wait shrinks with the clock");
        clock.advance(Duration::from_millis(1));
        let status = limits.check("tax", WHO).expect("exactly 1/rate later").expect("status");
        assert_eq!(status.remaining, 0);
        assert!(limits.check("tax", WHO).is_err(), "and only one");

        // Another department has its own bucket.
        assert!(limits.check("education", WHO).is_ok());

        // Idle for a whole burst's worth of intervals: the full burst again, and no more.
        clock.advance(Duration::from_millis(500));
        for _ in 0..5 {
            assert!(limits.check("tax", WHO).is_ok());
        }
        assert!(limits.check("tax", WHO).is_err());
    }

    #[test]
    fn the_retry_delay_is_the_gcra_wait_for_slow_quotas_too() {
        // 1 call per 3 s with bursts of 2: after two calls the next conforms 3 s after the first.
        let (limits, clock) = limits(&config(1.0 / 3.0, 2));
        assert!(limits.check("tax", WHO).is_ok());
        clock.advance(Duration::from_secs(1));
        assert!(limits.check("tax", WHO).is_ok());
        let refused = limits.check("tax", WHO).expect_err("burst used");
        assert_eq!(retry_after(&refused), Duration::from_secs(2));
        assert_eq!(refused.rate.map(|r| r.reset), Some(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(2));
        assert!(limits.check("tax", WHO).is_ok());
    }

    #[test]
    fn reset_says_when_the_bucket_is_full_again() {
        let (limits, _) = limits(&config(10.0, 5));
        let status = limits.check("tax", WHO).unwrap().unwrap();
        assert_eq!((status.remaining, status.reset), (4, Duration::from_millis(100)));
        let status = limits.check("tax", WHO).unwrap().unwrap();
        assert_eq!((status.remaining, status.reset), (3, Duration::from_millis(200)));
        assert_eq!(
            status.headers(),
            [("x-ratelimit-limit", 5), ("x-ratelimit-remaining", 3), ("x-ratelimit-reset", 1)]
        );
    }

    #[test]
    fn overrides_and_method_quotas_apply_per_department() {
        let mut config = config(100.0, 100);
        config.departments.insert(
            "tax".into(),
            DepartmentLimits { per_second: Some(1.0), burst: Some(2), max_concurrent: None },
        );
        config.methods.insert(
            VIEW.into(),
            MethodLimits {
                per_second: Some(1.0),
                burst: Some(1),
                departments: [("education".to_owned(), Rate { per_second: 1.0, burst: 3 })].into(),
            },
        );
        let (limits, _) = limits(&config);
        // tax: its own department quota of 2.
        assert!(limits.check("tax", WHO).is_ok());
        assert!(limits.check("tax", WHO).is_ok());
        let refused = limits.check("tax", WHO).unwrap_err();
        assert_eq!(refused.scope, Scope::Department);
        assert!(
            matches!(refused.error.as_ref(), ApiError::RateLimited { subject, .. } if subject == "department:tax")
        );
        // education: 3 views (its method override), then refused by the method quota — while its other
        // calls go on under the department quota.
        for _ in 0..3 {
            assert!(limits.check("education", VIEW).is_ok());
        }
        let refused = limits.check("education", VIEW).unwrap_err();
        assert_eq!(refused.scope, Scope::Method);
        assert!(matches!(refused.error.as_ref(), ApiError::RateLimited { subject, .. }
            if subject == "department:education/method:/fedx.v1.WorkerViewService/GetWorkerView"));
        assert!(limits.check("education", WHO).is_ok());
        // The tightest quota is reported: the method's.
        let (limits, _) = self::limits(&config);
        let status = limits.check("education", VIEW).unwrap().unwrap();
        assert_eq!((status.limit, status.remaining), (3, 2));
    }

    #[test]
    fn each_replica_enforces_its_share_of_the_total() {
        // 100/s with bursts of 10 over 3 replicas: one call per 30 ms, bursts of 4 (10/3 rounded up).
        let (quota, share) = replica_quota(100.0, 10, 3);
        assert_eq!(share, 4);
        assert_eq!(quota.burst_size().get(), 4);
        assert_eq!(quota.replenish_interval(), Duration::from_millis(30));
        // One replica: the quota as configured.
        let (quota, share) = replica_quota(100.0, 10, 1);
        assert_eq!((share, quota.replenish_interval()), (10, Duration::from_millis(10)));
        // A burst smaller than the replica count still lets one call through on each.
        assert_eq!(replica_quota(1.0, 2, 5).1, 1);

        let (limits, clock) = limits(&LimitsConfig { replicas: 3, ..config(100.0, 10) });
        for _ in 0..4 {
            assert!(limits.check("tax", WHO).is_ok());
        }
        let refused = limits.check("tax", WHO).unwrap_err();
        assert_eq!(retry_after(&refused), Duration::from_millis(30));
        assert!(refused.error.to_string().contains("across 3 replicas"), "{}", refused.error);
        clock.advance(Duration::from_millis(30));
        assert!(limits.check("tax", WHO).is_ok());
    }

    #[test]
    fn concurrency_is_refused_at_once_when_full() {
        let mut config = config(1000.0, 1000);
        config.departments.insert(
            "tax".into(),
            DepartmentLimits { per_second: None, burst: None, max_concurrent: Some(2) },
        );
        let (limits, _) = limits(&config);
        let first = limits.admit_call("tax", WHO).expect("first");
        let _second = limits.admit_call("tax", WHO).expect("second");
        let refused = limits.admit_call("tax", WHO).expect_err("third while two are in flight");
        assert_eq!(refused.scope, Scope::Concurrency);
        assert_eq!(retry_after(&refused), CONCURRENCY_RETRY);
        assert!(
            matches!(refused.error.as_ref(), ApiError::RateLimited { subject, .. } if subject == "department:tax/concurrency")
        );
        assert!(limits.admit_call("education", WHO).is_ok(), "other departments are not affected");
        drop(first);
        assert!(limits.admit_call("tax", WHO).is_ok(), "a finished call frees its permit");
    }
}
