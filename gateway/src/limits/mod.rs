//! Rate limits, the harvest guard and per-department concurrency limits.
//!
//! Five departments share one gateway; none may starve the others, and none may use it to harvest the
//! population. Three independent mechanisms, each answering a different question:
//!
//! - **Rate limits** ([`rate`], GCRA via `governor`): how many calls a department makes over time. One
//!   quota per department (a default, with overrides per department code) and optional quotas per
//!   (department, method), each a sustained rate with a burst. Every fedx call an authenticated caller
//!   makes counts — health checks and reflection never do — and each BatchVerify item counts like a
//!   JointVerify call (verify.proto). A refusal is RESOURCE_EXHAUSTED, ErrorInfo `RATE_LIMITED`, with
//!   `google.rpc.RetryInfo` carrying the exact GCRA wait until the call would conform and a `QuotaFailure`
//!   naming the quota (`department:tax` or `department:tax/method:/fedx.v1.…`), plus `x-ratelimit-limit`,
//!   `x-ratelimit-remaining` and `x-ratelimit-reset` metadata (also on admitted calls: the tightest
//!   applicable quota, as enforced by the replica that answered).
//! - **Concurrency** ([`rate`]): how many calls of one department are in flight at once on a replica
//!   (a streaming call counts until its response stream ends). Full means refused at once —
//!   RESOURCE_EXHAUSTED, `RATE_LIMITED`, QuotaFailure `department:<code>/concurrency`, a short RetryInfo
//!   — never queued, so a slow department cannot build a queue in front of the others.
//! - **The harvest guard** ([`harvest`]): how many *distinct workers* a department looks at per purpose
//!   per clock hour and per calendar day (China Standard Time, the contract's calendar). A rate limit
//!   cannot tell a caseworker re-reading one file from a script sweeping the population; a budget of
//!   distinct subjects can. Checked where a subject has been resolved (ResolveIdentity, GetWorkerView,
//!   JointVerify and BatchVerify items with a resolved worker); a worker already seen in the current
//!   windows always passes, a new one only while both windows are under budget. A refusal is
//!   RESOURCE_EXHAUSTED, ErrorInfo `BUDGET_EXHAUSTED`, RetryInfo until the window that is full rolls
//!   over, QuotaFailure `department:<d>/purpose:<p>`; it is in the exchange log with the worker_ref
//!   (the audit layer records it like any refusal), counted in `fedx_harvest_guard_hits_total` and
//!   logged as a warning naming the department and purpose only. Subjects are remembered as 64-bit
//!   keyed hashes (a per-process random key), at most the budget per window.
//!
//! Refusals by rate and concurrency are counted in `fedx_rate_limited_total{department,scope}` (scope
//! `department`, `method` or `concurrency`).
//!
//! # Where
//!
//! [`LimitLayer`] sits inside the authorisation layer (so the caller's department is known) and inside
//! the audit layer (so every refusal is an exchange record with its reason). The harvest guard is called
//! by the handlers, because only they know the subject. BatchVerify items are checked one by one in
//! `rpc::verify`; a refused item gets a `BatchItemError` with code 8 and its own record, and the stream
//! goes on.
//!
//! # Several replicas: an exact split, not a shared store
//!
//! The configured quotas and budgets are totals for the whole deployment. `replicas` says how many
//! gateway replicas share them, and each replica enforces its share: `per_second / replicas`, and
//! `burst / replicas` and each harvest budget `/ replicas` rounded up (at least 1). With calls spread
//! over the replicas by the load balancer, a department gets at most the configured total (plus the
//! rounding: under `replicas` extra calls in a burst). Why not a shared store (Redis or the gateway's
//! database)? It would put a network round trip and another component that can fail on the path of
//! every call — a gateway that fails closed would then refuse everything when the store is down — for
//! precision the quotas do not need. The price of the split:
//!
//! - `replicas` must match the deployment: a fixed replica count (a StatefulSet or Deployment with fixed
//!   `replicas`, no autoscaler changing it). With more replicas than configured the total is exceeded;
//!   with fewer, departments get less than their quota. An elastically scaled deployment needs the
//!   shared-store design instead.
//! - A department whose calls all land on one replica (one long-lived HTTP/2 connection, for instance)
//!   gets only that replica's share. Clients should spread calls over several connections, or the load
//!   balancer balance per request.
//! - The harvest guard's windows are per replica, so a worker looked at through two replicas counts on
//!   each: the total of distinct workers never exceeds the budget, but a department can be refused a
//!   little earlier than the budget says.
//! - `max_concurrent` is not split: it protects one replica's capacity, so it is per replica.
//!
//! # Reload
//!
//! The limits come from `[limits]` in the configuration, or — when `limits.file` is set — from that file
//! (a `[limits]` table with the same keys), read at start-up and again on `AdminService.ReloadPolicy`
//! and SIGHUP together with the purpose catalogue. An invalid file is refused (ReloadPolicy:
//! FAILED_PRECONDITION, POLICY_INVALID, the problems as BadRequest violations) and the limits in force
//! stay. A reload builds new limiters: rate-limit buckets start full again and in-flight calls are no
//! longer counted against the new concurrency limits (for the length of those calls a department can
//! have up to twice its limit in flight). The harvest guard keeps its windows across reloads — a reload
//! must not reset the protection — and only its budgets change.

mod harvest;
mod layer;
mod rate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use harvest::{Budget, HarvestGuard, HarvestRefusal, SystemWallClock, WallClock, Window};
pub use layer::{is_limited, LimitLayer};
pub use rate::{CallAdmission, RateLimits, RateRefusal, RateStatus, Scope};

use crate::policy::{Violation, FILE_ENTRY};
use crate::rpc::error::ApiError;

/// Largest sustained rate a quota may name (calls per second): far above what one replica serves.
const MAX_PER_SECOND: f64 = 1_000_000.0;
/// Largest replica count (a guard against a typo, not a design limit).
const MAX_REPLICAS: u32 = 10_000;

/// `[limits]` configuration: quotas are totals for the deployment (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A file holding a `[limits]` table with every other key of this section, re-read on
    /// AdminService.ReloadPolicy and SIGHUP. When set, this section holds nothing else.
    pub file: Option<PathBuf>,
    /// Gateway replicas sharing the quotas; each enforces `1 / replicas` of every rate, burst and harvest
    /// budget (rounded up). Must match the deployment's fixed replica count.
    pub replicas: u32,
    /// Sustained calls per second per department (total over the replicas).
    pub per_second: f64,
    /// Calls a department may make at once after being idle (total over the replicas).
    pub burst: u32,
    /// Calls of one department in flight at once on one replica (not split).
    pub max_concurrent: u32,
    /// Overrides per department code; a key left out keeps the default above.
    pub departments: BTreeMap<String, DepartmentLimits>,
    /// Quotas per method (gRPC path, e.g. `/fedx.v1.WorkerViewService/GetWorkerView`), applying to each
    /// department separately, on top of the department quota.
    pub methods: BTreeMap<String, MethodLimits>,
    /// Distinct workers per department and purpose.
    pub harvest: HarvestConfig,
}

/// A department's overrides of the default quota and concurrency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentLimits {
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
    pub max_concurrent: Option<u32>,
}

/// A method's quota: a default for every department (optional) and overrides per department.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodLimits {
    /// With `burst`, the quota of every department not listed under `departments`; without, only the
    /// listed departments are limited on this method.
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
    #[serde(default)]
    pub departments: BTreeMap<String, Rate>,
}

/// A sustained rate with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// `[limits.harvest]`: budgets of distinct workers per (department, purpose).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarvestConfig {
    /// Distinct workers one department may look at under one purpose per clock hour.
    pub subjects_per_hour: u32,
    /// … and per calendar day (China Standard Time).
    pub subjects_per_day: u32,
    /// Overrides per purpose code.
    pub purposes: BTreeMap<String, HarvestOverride>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarvestOverride {
    pub subjects_per_hour: Option<u32>,
    pub subjects_per_day: Option<u32>,
}

/// Defaults sized for production and never in the way of legitimate use: a department's sustained rate
/// is a fair share of what one replica serves, and the burst lets a batch of 20,000 verification items
/// through at full speed (BatchVerify items count one by one). The concurrency cap keeps one department
/// from occupying a replica; the harvest budgets are far above a caseworker's day and far below the
/// population.
impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            file: None,
            replicas: 1,
            per_second: 1_000.0,
            burst: 20_000,
            max_concurrent: 64,
            departments: BTreeMap::new(),
            methods: BTreeMap::new(),
            harvest: HarvestConfig::default(),
        }
    }
}

impl Default for HarvestConfig {
    fn default() -> Self {
        HarvestConfig { subjects_per_hour: 5_000, subjects_per_day: 20_000, purposes: BTreeMap::new() }
    }
}

/// The file named by `limits.file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    #[serde(default)]
    limits: LimitsConfig,
}

impl LimitsConfig {
    /// Every problem of form, with the TOML path of the entry. `known_department` says whether a code is
    /// in the department registry.
    pub fn violations(&self, known_department: &dyn Fn(&str) -> bool) -> Vec<Violation> {
        let mut out = Vec::new();
        let rate = |path: &str, per_second: Option<f64>, burst: Option<u32>, out: &mut Vec<Violation>| {
            if let Some(r) = per_second {
                if !(r.is_finite() && r > 0.0 && r <= MAX_PER_SECOND) {
                    out.push(Violation::new(
                        format!("{path}.per_second"),
                        format!("must be a number above 0 and at most {MAX_PER_SECOND}"),
                    ));
                }
            }
            if burst == Some(0) {
                out.push(Violation::new(format!("{path}.burst"), "must be at least 1"));
            }
        };
        if self.file.is_some() && *self != (LimitsConfig { file: self.file.clone(), ..Default::default() }) {
            out.push(Violation::new(
                "limits.file",
                "with limits.file set, every other limits key belongs in that file",
            ));
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            out.push(Violation::new("limits.replicas", format!("must be between 1 and {MAX_REPLICAS}")));
        }
        rate("limits", Some(self.per_second), Some(self.burst), &mut out);
        if self.max_concurrent == 0 {
            out.push(Violation::new("limits.max_concurrent", "must be at least 1"));
        }
        for (code, dept) in &self.departments {
            let path = format!("limits.departments.{code}");
            if !known_department(code) {
                out.push(Violation::new(&path, "not a department of the registry"));
            }
            rate(&path, dept.per_second, dept.burst, &mut out);
            if dept.max_concurrent == Some(0) {
                out.push(Violation::new(format!("{path}.max_concurrent"), "must be at least 1"));
            }
        }
        for (method, limits) in &self.methods {
            let path = format!("limits.methods.\"{method}\"");
            if !crate::rpc::methods::lookup(method).is_some_and(|m| is_limited(m.path)) {
                out.push(Violation::new(
                    &path,
                    "not a fedx method (a gRPC path such as /fedx.v1.WorkerViewService/GetWorkerView)",
                ));
            }
            if limits.per_second.is_some() != limits.burst.is_some() {
                out.push(Violation::new(&path, "per_second and burst go together"));
            }
            if limits.per_second.is_none() && limits.departments.is_empty() {
                out.push(Violation::new(&path, "limits nothing: give per_second and burst, or departments"));
            }
            rate(&path, limits.per_second, limits.burst, &mut out);
            for (code, r) in &limits.departments {
                let path = format!("{path}.departments.{code}");
                if !known_department(code) {
                    out.push(Violation::new(&path, "not a department of the registry"));
                }
                rate(&path, Some(r.per_second), Some(r.burst), &mut out);
            }
        }
        let harvest = &self.harvest;
        let budget = |path: &str, budget: Budget, out: &mut Vec<Violation>| {
            if budget.per_hour == 0 || budget.per_day == 0 {
                out.push(Violation::new(path, "subjects_per_hour and subjects_per_day must be at least 1"));
            } else if budget.per_hour > budget.per_day {
                out.push(Violation::new(path, "subjects_per_hour must not exceed subjects_per_day"));
            }
        };
        budget("limits.harvest", harvest.default_budget(), &mut out);
        for code in harvest.purposes.keys() {
            let path = format!("limits.harvest.purposes.{code}");
            if code.is_empty()
                || code.len() > 64
                || !code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                out.push(Violation::new(&path, "purpose codes are lower-case letters, digits and '_'"));
            }
            budget(&path, harvest.budget(code), &mut out);
        }
        out
    }

    /// This replica's share of a total: `total / replicas` rounded up, at least 1.
    pub fn share(&self, total: u32) -> u32 {
        total.div_ceil(self.replicas.max(1)).max(1)
    }
}

impl HarvestConfig {
    fn default_budget(&self) -> Budget {
        Budget { per_hour: self.subjects_per_hour, per_day: self.subjects_per_day }
    }

    /// The configured (total) budget of a purpose.
    pub fn budget(&self, purpose: &str) -> Budget {
        let default = self.default_budget();
        match self.purposes.get(purpose) {
            None => default,
            Some(o) => Budget {
                per_hour: o.subjects_per_hour.unwrap_or(default.per_hour),
                per_day: o.subjects_per_day.unwrap_or(default.per_day),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("cannot read limits file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Every problem found. Maps to FAILED_PRECONDITION / POLICY_INVALID with one BadRequest violation
    /// per entry.
    #[error("invalid limits ({} problem(s)): {}", .0.len(), summary(.0))]
    Invalid(Vec<Violation>),
}

impl LimitsError {
    pub fn violations(&self) -> &[Violation] {
        match self {
            LimitsError::Read { .. } => &[],
            LimitsError::Invalid(violations) => violations,
        }
    }
}

fn summary(violations: &[Violation]) -> String {
    let mut text = violations.iter().take(3).map(Violation::to_string).collect::<Vec<_>>().join("; ");
    if violations.len() > 3 {
        text.push_str("; …");
    }
    text
}

/// Limits read and validated by a reload, not yet in force.
#[derive(Debug)]
pub struct PreparedLimits {
    config: LimitsConfig,
    version: String,
}

impl PreparedLimits {
    /// The lower-case hex SHA-256 of the file read.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// What a reload of the limits file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsReload {
    pub previous_version: String,
    pub version: String,
}

/// The limits in force: rate limiters and semaphores (swapped whole on reload) and the harvest guard
/// (whose windows outlive reloads).
pub struct Limits<C: Clock = DefaultClock> {
    file: Option<PathBuf>,
    departments: Vec<String>,
    clock: C,
    current: ArcSwap<Active<C>>,
    harvest: HarvestGuard,
}

struct Active<C: Clock> {
    version: String,
    rate: RateLimits<C>,
}

impl Limits<DefaultClock> {
    /// The limits of `config` (reading `limits.file` if set) for the departments of the registry.
    pub fn open(
        config: &LimitsConfig,
        registry: &crate::config::DepartmentRegistry,
    ) -> Result<Limits, LimitsError> {
        let departments: Vec<String> = registry.departments().map(|(d, _)| d.to_owned()).collect();
        Limits::with_clocks(config, departments, DefaultClock::default(), Arc::new(SystemWallClock))
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// [`Limits::open`] with the clocks given: `clock` for the rate limiters, `wall` for the harvest
    /// windows (tests drive both).
    pub fn with_clocks(
        config: &LimitsConfig,
        departments: Vec<String>,
        clock: C,
        wall: Arc<dyn WallClock>,
    ) -> Result<Limits<C>, LimitsError> {
        let file = config.file.clone();
        let prepared = match &file {
            Some(path) => {
                let inline = config.violations(&|d| departments.iter().any(|k| k == d));
                if !inline.is_empty() {
                    return Err(LimitsError::Invalid(inline));
                }
                read_file(path, &departments)?
            }
            None => prepare(config.clone(), "config".to_owned(), &departments)?,
        };
        let rate = RateLimits::new(&prepared.config, &departments, clock.clone());
        let harvest = HarvestGuard::new(budgets(&prepared.config), wall);
        Ok(Limits {
            file,
            departments,
            clock,
            current: ArcSwap::from_pointee(Active { version: prepared.version, rate }),
            harvest,
        })
    }

    /// Version of the limits in force: `config` when they come from the main configuration, else the
    /// lower-case hex SHA-256 of the limits file.
    pub fn version(&self) -> String {
        self.current.load().version.clone()
    }

    /// Whether the limits come from a file (and so change on reload).
    pub fn reloadable(&self) -> bool {
        self.file.is_some()
    }

    /// Reads and validates the limits file without putting it in force; `None` when the limits come from
    /// the main configuration.
    pub fn prepare_reload(&self) -> Result<Option<PreparedLimits>, LimitsError> {
        self.file.as_deref().map(|path| read_file(path, &self.departments)).transpose()
    }

    /// Puts prepared limits in force (new limiters; the harvest guard keeps its windows).
    pub fn apply(&self, prepared: PreparedLimits) -> LimitsReload {
        let rate = RateLimits::new(&prepared.config, &self.departments, self.clock.clone());
        self.harvest.set_budgets(budgets(&prepared.config));
        let version = prepared.version;
        let previous = self.current.swap(Arc::new(Active { version: version.clone(), rate })).version.clone();
        LimitsReload { previous_version: previous, version }
    }

    /// Admits a call (not a health check or reflection: see [`is_limited`]) of `dept` to `method`, or
    /// refuses it. The admission holds the department's concurrency permit: keep it for as long as the
    /// call is in flight.
    pub fn admit_call(&self, dept: &str, method: &str) -> Result<CallAdmission, RateRefusal> {
        let result = self.current.load().rate.admit_call(dept, method);
        if let Err(refusal) = &result {
            count_refusal(dept, refusal.scope);
        }
        result
    }

    /// Counts one call of `dept` to `method` against the rate limits without a concurrency permit: each
    /// BatchVerify item, as a JointVerify call.
    pub fn check_rate(&self, dept: &str, method: &str) -> Result<Option<RateStatus>, ApiError> {
        self.current.load().rate.check(dept, method).map_err(|refusal| {
            count_refusal(dept, refusal.scope);
            *refusal.error
        })
    }

    /// The harvest guard: admits `worker_ref` for `dept` under `purpose`, or refuses (counted and logged;
    /// the caller's exchange record carries the refusal).
    pub fn admit_subject(&self, dept: &str, purpose: &str, worker_ref: &str) -> Result<(), ApiError> {
        self.harvest.admit(dept, purpose, worker_ref).map_err(|refusal| {
            metrics::counter!("fedx_harvest_guard_hits_total", "department" => dept.to_owned(),
                "purpose" => purpose.to_owned())
            .increment(1);
            tracing::warn!(
                dept = %dept,
                purpose = %purpose,
                window = refusal.window.as_str(),
                budget = refusal.budget,
                "harvest guard: distinct-subject budget exhausted; call refused"
            );
            ApiError::BudgetExhausted {
                subject: format!("department:{dept}/purpose:{purpose}"),
                description: format!(
                    "at most {} distinct workers per {} for this department and purpose on this replica",
                    refusal.budget,
                    refusal.window.as_str()
                ),
                retry_after: refusal.retry_after,
            }
        })
    }

    /// The harvest guard itself (tests).
    pub fn harvest(&self) -> &HarvestGuard {
        &self.harvest
    }
}

fn count_refusal(dept: &str, scope: Scope) {
    metrics::counter!("fedx_rate_limited_total", "department" => dept.to_owned(), "scope" => scope.as_str())
        .increment(1);
}

/// Each replica's harvest budgets.
fn budgets(config: &LimitsConfig) -> harvest::Budgets {
    let share = |b: Budget| Budget { per_hour: config.share(b.per_hour), per_day: config.share(b.per_day) };
    harvest::Budgets {
        default: share(config.harvest.default_budget()),
        purposes: config
            .harvest
            .purposes
            .keys()
            .map(|p| (p.clone(), share(config.harvest.budget(p))))
            .collect(),
    }
}

fn prepare(
    config: LimitsConfig,
    version: String,
    departments: &[String],
) -> Result<PreparedLimits, LimitsError> {
    let violations = config.violations(&|d| departments.iter().any(|k| k == d));
    if violations.is_empty() {
        Ok(PreparedLimits { config, version })
    } else {
        Err(LimitsError::Invalid(violations))
    }
}

/// Reads, parses and validates the limits file.
fn read_file(path: &Path, departments: &[String]) -> Result<PreparedLimits, LimitsError> {
    let bytes = std::fs::read(path).map_err(|source| LimitsError::Read { path: path.to_owned(), source })?;
    let version = hex::encode(Sha256::digest(&bytes));
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| LimitsError::Invalid(vec![Violation::new(FILE_ENTRY, "not UTF-8 text")]))?;
    let file: LimitsFile = toml::from_str(text)
        .map_err(|e| LimitsError::Invalid(vec![Violation::new(FILE_ENTRY, e.message().to_owned())]))?;
    if file.limits.file.is_some() {
        return Err(LimitsError::Invalid(vec![Violation::new(
            "limits.file",
            "the limits file cannot name another limits file",
        )]));
    }
    prepare(file.limits, version, departments)
}

/// Whole seconds, rounded up (for `x-ratelimit-reset`).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests;
