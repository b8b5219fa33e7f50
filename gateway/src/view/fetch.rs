//! Asking the sources for the facts a view needs, concurrently, each question bounded by the per-source
//! timeout.
//!
//! One question is one `(linked record, fact category)` pair. Questions to different departments are
//! independent: a department that errors or misses the deadline is reported as failed and the others
//! are used as answered (the view is then marked partial, not failed).
//!
//! Answers are kept per `(department, fact category)` and are all-or-nothing: if any record of the pair
//! failed, the pair is reported failed and what its other records answered is dropped. A half-answered
//! pair would understate (months of employment missing, a child left out) while looking complete; the
//! caller would rather be told the department did not answer.
//!
//! Nothing here logs personal data: logs carry department codes, fact categories, failure kinds and the
//! worker reference.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fedx_adapters::{Department, Fact, FactCategory, Facts, LookupKey, RecordKey, Source, SourceError};
use futures::future::join_all;
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::identity::Resolution;
use crate::policy::FieldCategory;
use crate::sources::SourceSet;

/// At most this many employer-name look-ups run at once, so that a worker with many employers does not
/// flood industry-commerce.
const MAX_CONCURRENT_NAME_LOOKUPS: usize = 16;

/// The sources a view category is built from, as the contract names them (common.proto
/// `FieldCategory`): the department and the fact category asked of it.
pub fn sources_for(category: FieldCategory) -> &'static [(Department, FactCategory)] {
    use Department as D;
    use FactCategory as F;
    match category {
        FieldCategory::Identity => &[(D::PublicSecurity, F::Identity)],
        FieldCategory::ResidencePermit => &[(D::PublicSecurity, F::ResidencePermit)],
        FieldCategory::Employment => &[(D::Tax, F::Employment), (D::SocialInsurance, F::Employment)],
        FieldCategory::Contributions | FieldCategory::Arrears => &[(D::SocialInsurance, F::Contributions)],
        FieldCategory::Enrolment => &[(D::Education, F::Enrolment)],
        FieldCategory::Enterprise => &[(D::IndustryCommerce, F::Enterprise)],
        FieldCategory::IndividualBusiness => &[(D::IndustryCommerce, F::IndividualBusiness)],
    }
}

/// Why a department gave no (complete) answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailure {
    /// Did not answer within the per-source timeout.
    Timeout,
    /// Answered with an error; the `SourceError::kind` code (`unavailable`, `backend`, …).
    Error(&'static str),
    /// Already failed while the identity was being resolved (the kind reported then), so its linked
    /// records may be incomplete and it was not asked again.
    UnavailableAtResolution(&'static str),
    /// The gateway has no source configured for the department.
    NotConfigured,
}

impl FetchFailure {
    /// Short stable code for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchFailure::Timeout => "timeout",
            FetchFailure::Error(kind) => kind,
            FetchFailure::UnavailableAtResolution(_) => "unavailable_at_resolution",
            FetchFailure::NotConfigured => "not_configured",
        }
    }

    pub(crate) fn from_error(e: &SourceError) -> FetchFailure {
        match e {
            SourceError::Timeout { .. } => FetchFailure::Timeout,
            other => FetchFailure::Error(other.kind()),
        }
    }
}

impl fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// What one department said about one fact category.
#[derive(Clone)]
pub enum Answer {
    /// Every linked record answered: one `Facts` per record the source holds (a record linked at
    /// resolution but gone since is left out). No `Facts`, or only empty ones, means the department
    /// holds nothing of the kind for the person.
    Facts(Vec<Facts>),
    Failed(FetchFailure),
}

impl Answer {
    /// The facts, if the department answered.
    pub fn facts(&self) -> Option<&[Facts]> {
        match self {
            Answer::Facts(facts) => Some(facts),
            Answer::Failed(_) => None,
        }
    }
}

/// Redacted: facts are personal data. Shows only how much came back.
impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Facts(facts) => {
                let items: usize = facts.iter().map(|x| x.items.len()).sum();
                write!(f, "Facts({} record(s), {items} item(s))", facts.len())
            }
            Answer::Failed(failure) => write!(f, "Failed({failure})"),
        }
    }
}

/// The answers gathered for one view.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Per department and fact category asked (or that would have been asked, for failures).
    pub answers: BTreeMap<(Department, FactCategory), Answer>,
    /// Departments that had already failed during identity resolution.
    pub unavailable_at_resolution: BTreeSet<Department>,
    /// Departments actually asked.
    pub consulted: BTreeSet<Department>,
}

impl Fetched {
    pub fn answer(&self, dept: Department, category: FactCategory) -> Option<&Answer> {
        self.answers.get(&(dept, category))
    }

    /// All facts the department answered for the category (empty if it failed or was not asked).
    pub fn facts(&self, dept: Department, category: FactCategory) -> &[Facts] {
        self.answer(dept, category).and_then(Answer::facts).unwrap_or(&[])
    }
}

/// Fetches, for every category in `categories`, the facts of every record the resolution linked in each
/// department that serves the category ([`sources_for`]). Every question runs concurrently and is
/// bounded by `timeout`, so the whole fetch takes at most about `timeout`.
///
/// A department that failed at resolution is not asked again (its answer is
/// [`FetchFailure::UnavailableAtResolution`]); a department with no linked record is not asked and
/// counts as having answered "nothing".
#[tracing::instrument(name = "view.fetch", skip_all)]
pub async fn fetch(
    resolution: &Resolution,
    sources: &SourceSet,
    categories: &BTreeSet<FieldCategory>,
    timeout: Duration,
) -> Fetched {
    let worker_ref = resolution.worker_ref.as_ref().map_or("", |r| r.value.as_str());
    let wanted: BTreeSet<(Department, FactCategory)> =
        categories.iter().flat_map(|c| sources_for(*c).iter().copied()).collect();

    let mut fetched =
        Fetched { unavailable_at_resolution: resolution.unavailable().collect(), ..Fetched::default() };
    let mut questions = Vec::new();
    for &(dept, category) in &wanted {
        let outcome = resolution.sources.iter().find(|s| s.dept == dept);
        if let Some(kind) = outcome.and_then(|o| o.unavailable) {
            fetched
                .answers
                .insert((dept, category), Answer::Failed(FetchFailure::UnavailableAtResolution(kind)));
            continue;
        }
        let linked = outcome.map_or(&[][..], |o| o.linked.as_slice());
        if linked.is_empty() {
            fetched.answers.insert((dept, category), Answer::Facts(Vec::new()));
            continue;
        }
        let Some(source) = sources.get(dept) else {
            fetched.answers.insert((dept, category), Answer::Failed(FetchFailure::NotConfigured));
            continue;
        };
        fetched.consulted.insert(dept);
        for key in linked {
            questions.push(ask(source.clone(), dept, key.clone(), category, timeout));
        }
    }

    let mut per_pair: BTreeMap<(Department, FactCategory), Result<Vec<Facts>, FetchFailure>> =
        BTreeMap::new();
    for (dept, category, result) in join_all(questions).await {
        let slot = per_pair.entry((dept, category)).or_insert_with(|| Ok(Vec::new()));
        match (slot, result) {
            (Ok(all), Ok(Some(facts))) => all.push(facts),
            (Ok(_), Ok(None)) | (Err(_), _) => {}
            (slot, Err(failure)) => *slot = Err(failure),
        }
    }
    for ((dept, category), result) in per_pair {
        let answer = match result {
            Ok(mut facts) => {
                facts.sort_by(|a, b| a.record_key.cmp(&b.record_key));
                Answer::Facts(facts)
            }
            Err(failure) => {
                tracing::warn!(
                    department = dept.code(),
                    category = category.code(),
                    failure = failure.kind(),
                    worker_ref,
                    "view: source did not answer; the view will be partial"
                );
                Answer::Failed(failure)
            }
        };
        fetched.answers.insert((dept, category), answer);
    }
    fetched
}

/// One question. `Ok(None)`: the source no longer holds the record (it was linked moments ago, so it
/// was deleted or merged since) — nothing to report, not a failure.
async fn ask(
    source: Arc<dyn Source>,
    dept: Department,
    key: RecordKey,
    category: FactCategory,
    timeout: Duration,
) -> (Department, FactCategory, Result<Option<Facts>, FetchFailure>) {
    let result = match tokio::time::timeout(timeout, source.fetch_facts(&key, category)).await {
        Err(_) => Err(FetchFailure::Timeout),
        Ok(Ok(facts)) => Ok(Some(stamped(facts))),
        Ok(Err(SourceError::NoSuchRecord { .. })) => Ok(None),
        Ok(Err(e)) => Err(FetchFailure::from_error(&e)),
    };
    (dept, category, result)
}

/// The contract's provenance is "when the source's record was last updated, or the time of the source's
/// answer if the source does not report one"; sources that do not know report the Unix epoch.
fn stamped(mut facts: Facts) -> Facts {
    if facts.as_of == OffsetDateTime::UNIX_EPOCH {
        facts.as_of = OffsetDateTime::now_utc();
    }
    facts
}

/// An employer's registered name as industry-commerce has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredName {
    pub name: String,
    pub as_of: OffsetDateTime,
}

/// Employers' registered names, for the employment and arrears sections (the contract wants the name
/// "from industry_commerce when available, else as recorded by the source").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmployerNames {
    /// By canonical USCI. An employer industry-commerce does not know is absent.
    pub names: BTreeMap<String, RegisteredName>,
    /// Set when industry-commerce failed for at least one employer (names found for others are kept:
    /// each is an independent, correct value).
    pub failure: Option<FetchFailure>,
    /// Whether industry-commerce was asked at all.
    pub consulted: bool,
}

/// Looks up the registered names of `uscis` (canonical codes) in industry-commerce: a USCI look-up, then
/// the record's enterprise or individual-business facts. Employers are enterprise data, not the worker's,
/// but the look-up still only ever returns the name. The whole pass is bounded by `timeout`; names found
/// before the deadline are kept.
pub async fn fetch_employer_names(
    sources: &SourceSet,
    uscis: &BTreeSet<String>,
    timeout: Duration,
) -> EmployerNames {
    let mut out = EmployerNames::default();
    if uscis.is_empty() {
        return out;
    }
    let Some(source) = sources.get(Department::IndustryCommerce) else {
        out.failure = Some(FetchFailure::NotConfigured);
        return out;
    };
    out.consulted = true;
    let deadline = Instant::now() + timeout;
    let mut lookups = futures::stream::iter(uscis.iter().cloned())
        .map(|usci| {
            let source = source.clone();
            async move {
                let result = tokio::time::timeout_at(deadline, registered_name(source.as_ref(), &usci)).await;
                (usci, result)
            }
        })
        .buffer_unordered(MAX_CONCURRENT_NAME_LOOKUPS);
    loop {
        match tokio::time::timeout_at(deadline, lookups.next()).await {
            Ok(None) => break,
            Ok(Some((usci, Ok(Ok(Some(name)))))) => {
                out.names.insert(usci, name);
            }
            Ok(Some((_, Ok(Ok(None))))) => {}
            Ok(Some((_, Ok(Err(e))))) => {
                out.failure.get_or_insert(FetchFailure::from_error(&e));
            }
            Ok(Some((_, Err(_)))) | Err(_) => {
                out.failure.get_or_insert(FetchFailure::Timeout);
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    if let Some(failure) = out.failure {
        tracing::warn!(
            department = Department::IndustryCommerce.code(),
            failure = failure.kind(),
            "view: employer names incomplete"
        );
    }
    out
}

async fn registered_name(source: &dyn Source, usci: &str) -> Result<Option<RegisteredName>, SourceError> {
    let registration = registration(source, usci).await?;
    Ok(registration.and_then(|r| {
        let name = r.name.trim();
        (!name.is_empty()).then(|| RegisteredName { name: name.to_owned(), as_of: r.as_of })
    }))
}

/// An enterprise's or individual business's registration as industry-commerce holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    /// The registry's status text (存续, 吊销, 注销…).
    pub status: String,
    pub abnormal: Vec<fedx_adapters::source::AbnormalEntry>,
    pub as_of: OffsetDateTime,
}

/// Enterprise data, but the name is shown only where a purpose grants it: `Debug` shows the status.
impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration").field("status", &self.status).finish_non_exhaustive()
    }
}

/// Looks up the registration of `usci` (canonical) in industry-commerce: a USCI look-up, then the
/// record's enterprise or individual-business facts. `None` when the registry does not know the code.
pub async fn registration(source: &dyn Source, usci: &str) -> Result<Option<Registration>, SourceError> {
    let candidates = match source.lookup(&LookupKey::Usci(usci.to_owned())).await {
        Ok(c) => c,
        Err(SourceError::UnsupportedKey { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    for candidate in candidates {
        for category in [FactCategory::Enterprise, FactCategory::IndividualBusiness] {
            let facts = match source.fetch_facts(&candidate.record_key, category).await {
                Ok(facts) => stamped(facts),
                Err(SourceError::NoSuchRecord { .. } | SourceError::UnsupportedCategory { .. }) => continue,
                Err(e) => return Err(e),
            };
            let found = facts.items.into_iter().find_map(|item| match item {
                Fact::Enterprise(e) if e.usci == usci => Some((e.name, e.status, e.abnormal)),
                Fact::IndividualBusiness(b) if b.usci == usci => Some((b.name, b.status, b.abnormal)),
                _ => None,
            });
            if let Some((name, status, abnormal)) = found {
                return Ok(Some(Registration { name, status, abnormal, as_of: facts.as_of }));
            }
        }
    }
    Ok(None)
}
