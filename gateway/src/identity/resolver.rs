//! Resolution: who a query is about, across the five sources.
//!
//! ```text
//!  query ─▶ round 1: look-ups by the query's own keys (ID, name + birth date, phone) in every source,
//!           concurrently, with the name's frequency from public security
//!        ─▶ score every candidate against the query; group by valid ID = one hypothesis per person
//!        ─▶ classify: one person above the link threshold → RESOLVED; two people above the possible
//!           threshold, or one only "possible" → AMBIGUOUS; nobody → NOT_FOUND
//!        ─▶ round 2 (RESOLVED only): look-ups by what the person's own records add (their ID, their
//!           registered name + birth date, their phones), so records the query could not reach —
//!           a taxpayer file under a mistyped number, a school record listing the guardian by phone —
//!           are found; every record is scored against the enriched profile and classified.
//! ```
//!
//! Precision first: an answer names one person only when one hypothesis clears the link threshold
//! and no other clears even the possible threshold; a name + birth date answer additionally needs the
//! household registry (the one complete list of people) to have answered. A source that errors or
//! misses the deadline is reported unavailable, never silently absent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedx_adapters::ident::CitizenId;
use fedx_adapters::{Candidate, Department, IdQuality, LookupKey, RecordKey, Source, SourceError};
use futures::future::join_all;
use sha2::{Digest, Sha256};

use super::cache::TtlCache;
use super::compare::{compare, Agreement, Comparison, Field, FieldOutcome, Profile};
use super::model::{MatchClass, Model};
use super::query::{Query, QueryId};
use super::reference::{KeyRing, WorkerRef};
use crate::sources::SourceSet;

/// Outcome of a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Resolved,
    Ambiguous,
    NotFound,
}

/// How the best record of one source relates to the subject.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordMatch {
    pub record_key: RecordKey,
    pub class: MatchClass,
    pub score: f64,
    pub fields: Vec<FieldOutcome>,
}

impl RecordMatch {
    pub fn agreeing(&self) -> Vec<&'static str> {
        self.names(|a| a != Agreement::Disagree)
    }

    pub fn disagreeing(&self) -> Vec<&'static str> {
        self.names(|a| a == Agreement::Disagree)
    }

    fn names(&self, keep: impl Fn(Agreement) -> bool) -> Vec<&'static str> {
        self.fields.iter().filter(|f| keep(f.agreement)).map(|f| f.field.name()).collect()
    }
}

/// What one source contributed.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOutcome {
    pub dept: Department,
    /// `Some(kind)` when the source failed or missed the deadline (`SourceError::kind`).
    pub unavailable: Option<&'static str>,
    /// The best record for the subject (`None` when none reached the possible threshold, and always for
    /// answers that are not RESOLVED: nothing about other people's records is disclosed).
    pub best: Option<RecordMatch>,
    /// Records linked to the subject (for fetching facts later).
    pub linked: Vec<RecordKey>,
    /// Records possibly the subject's: for review, never used to disclose data.
    pub possible: Vec<RecordKey>,
}

/// The answer.
#[derive(Clone, PartialEq)]
pub struct Resolution {
    pub status: Status,
    /// Set when RESOLVED.
    pub worker_ref: Option<WorkerRef>,
    /// Set when RESOLVED; personal data, kept in memory for fetching facts, never logged.
    pub citizen_id: Option<CitizenId>,
    /// Posterior probability that `worker_ref` is the person meant (0 unless RESOLVED).
    pub confidence: f64,
    /// Every source, in department-code order.
    pub sources: Vec<SourceOutcome>,
    /// For AMBIGUOUS: query fields that would settle it. Derived from the query alone, so the answer
    /// says nothing about the candidates.
    pub disambiguating_fields: Vec<&'static str>,
}

impl std::fmt::Debug for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolution")
            .field("status", &self.status)
            .field("worker_ref", &self.worker_ref.as_ref().map(|r| r.value.as_str()))
            .field("confidence", &self.confidence)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Resolution {
    pub fn unavailable(&self) -> impl Iterator<Item = Department> + '_ {
        self.sources.iter().filter(|s| s.unavailable.is_some()).map(|s| s.dept)
    }

    /// Linked record keys per department.
    pub fn linked(&self) -> impl Iterator<Item = (Department, &RecordKey)> + '_ {
        self.sources.iter().flat_map(|s| s.linked.iter().map(move |k| (s.dept, k)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No source answered: nothing can be said, not even NOT_FOUND.
    #[error("no source answered ({})", departments.iter().map(|d| d.code()).collect::<Vec<_>>().join(", "))]
    SourcesUnavailable { departments: Vec<Department> },
}

/// How long a name's frequency is reused: frequencies move slowly, and a common name is asked often.
const NAME_FREQUENCY_TTL: Duration = Duration::from_secs(600);
/// At most this many phones are followed in round 2.
const MAX_PHONES: usize = 4;

/// The resolver: model, sources, key ring and caches. Cheap to share (`Arc`).
pub struct Resolver {
    model: Model,
    sources: SourceSet,
    keys: Arc<KeyRing>,
    cache: TtlCache<Arc<Resolution>>,
    name_frequencies: TtlCache<Option<u64>>,
}

/// Candidates gathered so far, per source.
struct Gathered {
    per_source: Vec<(Department, Vec<Candidate>, Option<&'static str>)>,
    looked_up: Vec<LookupKey>,
}

impl Gathered {
    fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.per_source.iter().flat_map(|(_, c, _)| c.iter())
    }

    fn merge(&mut self, more: Vec<(Department, Vec<Candidate>, Option<&'static str>)>) {
        for (i, (dept, cands, err)) in more.into_iter().enumerate() {
            let slot = &mut self.per_source[i];
            debug_assert_eq!(slot.0, dept);
            for c in cands {
                if !slot.1.iter().any(|x| x.record_key == c.record_key) {
                    slot.1.push(c);
                }
            }
            if slot.2.is_none() {
                slot.2 = err;
            }
        }
    }
}

impl Resolver {
    pub fn new(model: Model, sources: SourceSet, keys: Arc<KeyRing>) -> Resolver {
        let cfg = &model.config;
        let cache = TtlCache::new(cfg.cache_capacity, cfg.cache_ttl);
        let name_frequencies = TtlCache::new(cfg.cache_capacity.min(100_000), NAME_FREQUENCY_TTL);
        Resolver { model, sources, keys, cache, name_frequencies }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn sources(&self) -> &SourceSet {
        &self.sources
    }

    /// Resolves `query`, answering from the cache when the same normalised query was resolved within
    /// the TTL with every source available.
    pub async fn resolve(&self, query: &Query) -> Result<Arc<Resolution>, ResolveError> {
        self.resolve_within(query, self.model.config.deadline).await
    }

    /// [`Resolver::resolve`], done within `budget` when that is shorter than `identity.deadline` (what is
    /// left of a caller's deadline: [`crate::resilience::deadline`]). Sources that do not answer in time
    /// are reported unavailable, and such a resolution is not cached.
    #[tracing::instrument(name = "identity.resolve", skip_all)]
    pub async fn resolve_within(
        &self,
        query: &Query,
        budget: Duration,
    ) -> Result<Arc<Resolution>, ResolveError> {
        let key = query.digest();
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let deadline = Instant::now() + budget.min(self.model.config.deadline);
        let resolution = Arc::new(self.resolve_by(query, deadline).await?);
        if resolution.unavailable().next().is_none() {
            self.cache.insert(key, resolution.clone());
        }
        Ok(resolution)
    }

    /// Resolves without reading or filling the resolution cache (evaluation, benchmarks).
    pub async fn resolve_uncached(&self, query: &Query) -> Result<Resolution, ResolveError> {
        self.resolve_by(query, Instant::now() + self.model.config.deadline).await
    }

    async fn resolve_by(&self, query: &Query, deadline: Instant) -> Result<Resolution, ResolveError> {
        // Round 1: the query's own keys, and the name's frequency.
        let mut keys = Vec::new();
        if let Some(id) = &query.id {
            keys.push(LookupKey::CitizenId(id.as_str().to_owned()));
        }
        if let (Some(name), Some(birth)) = (&query.name, query.lookup_birth()) {
            keys.push(LookupKey::NameBirth { name_norm: name.clone(), birth_date: birth });
        }
        if let Some(phone) = &query.phone {
            keys.push(LookupKey::Phone(phone.clone()));
        }
        let names: Vec<String> = query.name.iter().cloned().collect();
        let (round1, frequencies) =
            tokio::join!(self.gather(&keys, deadline), self.frequencies(&names, deadline));
        let mut gathered = Gathered { per_source: round1, looked_up: keys };
        if gathered.per_source.iter().all(|(_, _, err)| err.is_some()) {
            return Err(ResolveError::SourcesUnavailable {
                departments: gathered.per_source.iter().map(|(d, _, _)| *d).collect(),
            });
        }

        let profile = self.query_profile(query, &frequencies);
        let hypothesis = self.choose(query, &profile, &gathered);
        let (anchor, anchor_score) = match hypothesis {
            Choice::One(id, score) => (id, score),
            Choice::Ambiguous => return Ok(self.unresolved(Status::Ambiguous, query, &gathered)),
            Choice::None => return Ok(self.unresolved(Status::NotFound, query, &gathered)),
        };

        // Round 2: what the person's own records add.
        let anchor_records: Vec<&Candidate> = gathered
            .candidates()
            .filter(|c| c.id.as_deref() == Some(anchor.as_str()) && is_valid_quality(c.id_quality))
            .collect();
        let registered_name = anchor_records
            .iter()
            .find(|c| c.dept == Department::PublicSecurity)
            .and_then(|c| c.name_norm.clone());
        let mut phones: Vec<String> = query.phone.iter().cloned().collect();
        for c in &anchor_records {
            if let Some(p) = &c.phone {
                if !phones.contains(p) && phones.len() < MAX_PHONES {
                    phones.push(p.clone());
                }
            }
        }
        let mut names = names;
        if let Some(n) = registered_name {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let birth = anchor.birth_date();
        let mut keys2 = vec![LookupKey::CitizenId(anchor.as_str().to_owned())];
        keys2.extend(names.iter().map(|n| LookupKey::NameBirth { name_norm: n.clone(), birth_date: birth }));
        keys2.extend(phones.iter().map(|p| LookupKey::Phone(p.clone())));
        keys2.retain(|k| !gathered.looked_up.contains(k));
        let new_names: Vec<String> =
            names.iter().filter(|n| !frequencies.contains_key(*n)).cloned().collect();
        let (round2, more_freq) =
            tokio::join!(self.gather(&keys2, deadline), self.frequencies(&new_names, deadline));
        gathered.merge(round2);
        gathered.looked_up.extend(keys2);
        let mut frequencies = frequencies;
        frequencies.extend(more_freq);

        let profile = self.subject_profile(query, &anchor, &names, &phones, &frequencies);
        let sources = gathered
            .per_source
            .iter()
            .map(|(dept, cands, err)| self.source_outcome(*dept, cands, *err, &profile))
            .collect();
        let worker_ref = self.keys.mint(&anchor);
        tracing::debug!(worker_ref = %worker_ref, score = anchor_score, "identity resolved");
        Ok(Resolution {
            status: Status::Resolved,
            worker_ref: Some(worker_ref),
            citizen_id: Some(anchor),
            confidence: self.model.confidence(anchor_score),
            sources,
            disambiguating_fields: Vec::new(),
        })
    }

    /// Asks every source for every key, concurrently, each call bounded by the source's own timeout and
    /// the overall deadline. Per source: the de-duplicated candidates, or the kind of its first error.
    async fn gather(
        &self,
        keys: &[LookupKey],
        deadline: Instant,
    ) -> Vec<(Department, Vec<Candidate>, Option<&'static str>)> {
        let per_source = self.sources.iter().map(|source| async move {
            let dept = source.department();
            if keys.is_empty() {
                return (dept, Vec::new(), None);
            }
            let calls = keys.iter().map(|key| bounded(source.as_ref(), deadline, source.lookup(key)));
            let mut out: Vec<Candidate> = Vec::new();
            let mut error = None;
            for result in join_all(calls).await {
                match result {
                    Ok(cands) => {
                        for c in cands {
                            if !out.iter().any(|x| x.record_key == c.record_key) {
                                out.push(c);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(dept = dept.code(), error = %e, "source look-up failed");
                        error.get_or_insert(e.kind());
                    }
                }
            }
            (dept, out, error)
        });
        join_all(per_source).await
    }

    /// How many people carry each name, from the household registry (one record per person); cached by
    /// a digest of the name. `None` when the registry cannot say (the model then uses its fallback `u`).
    async fn frequencies(&self, names: &[String], deadline: Instant) -> HashMap<String, Option<u64>> {
        let Some(registry) = self.sources.get(Department::PublicSecurity) else {
            return names.iter().map(|n| (n.clone(), None)).collect();
        };
        let calls = names.iter().map(|name| async move {
            let key = name_digest(name);
            if let Some(hit) = self.name_frequencies.get(&key) {
                return (name.clone(), hit);
            }
            let f = bounded(registry.as_ref(), deadline, registry.name_frequency(name)).await.ok();
            if f.is_some() {
                self.name_frequencies.insert(key, f);
            }
            (name.clone(), f)
        });
        join_all(calls).await.into_iter().collect()
    }

    fn name_weights(
        &self,
        names: &[String],
        frequencies: &HashMap<String, Option<u64>>,
    ) -> Vec<(String, f64)> {
        names
            .iter()
            .map(|n| (n.clone(), self.model.name_exact(frequencies.get(n).copied().flatten())))
            .collect()
    }

    /// The query as a profile: stated birth date and sex, else what a valid ID spells.
    fn query_profile(&self, query: &Query, frequencies: &HashMap<String, Option<u64>>) -> Profile {
        let valid = query.valid_id();
        Profile {
            id: query.id.as_ref().map(|i| i.as_str().to_owned()),
            names: self.name_weights(&query.name.iter().cloned().collect::<Vec<_>>(), frequencies),
            birth: query.birth(),
            birth_implied_by_id: match (query.birth_stated, valid) {
                (None, _) => true,
                (Some(b), Some(id)) => b == id.birth_date(),
                (Some(_), None) => false,
            },
            sex: query.sex(),
            sex_implied_by_id: match (query.sex_stated, valid) {
                (None, _) => true,
                (Some(s), Some(id)) => s == id.sex(),
                (Some(_), None) => false,
            },
            phones: query.phone.iter().cloned().collect(),
            region: query.region.clone(),
        }
    }

    /// The subject once singled out: its ID, the query's and the registered names, its phones; stated
    /// values that contradict the ID stay, so the contradiction keeps counting against.
    fn subject_profile(
        &self,
        query: &Query,
        anchor: &CitizenId,
        names: &[String],
        phones: &[String],
        frequencies: &HashMap<String, Option<u64>>,
    ) -> Profile {
        Profile {
            id: Some(anchor.as_str().to_owned()),
            names: self.name_weights(names, frequencies),
            birth: Some(query.birth_stated.unwrap_or(anchor.birth_date())),
            birth_implied_by_id: query.birth_stated.is_none_or(|b| b == anchor.birth_date()),
            sex: Some(query.sex_stated.unwrap_or(anchor.sex())),
            sex_implied_by_id: query.sex_stated.is_none_or(|s| s == anchor.sex()),
            phones: phones.to_vec(),
            region: query.region.clone(),
        }
    }

    /// Groups round-1 candidates into people (one hypothesis per valid ID) and decides.
    fn choose(&self, query: &Query, profile: &Profile, gathered: &Gathered) -> Choice {
        let cfg = &self.model.config;
        let mut hypotheses: BTreeMap<String, f64> = BTreeMap::new();
        let mut floating = f64::NEG_INFINITY;
        for c in gathered.candidates() {
            let score = compare(&self.model, profile, c).score;
            match (&c.id, is_valid_quality(c.id_quality)) {
                (Some(id), true) => {
                    let h = hypotheses.entry(id.clone()).or_insert(f64::NEG_INFINITY);
                    *h = h.max(score);
                }
                _ => floating = floating.max(score),
            }
        }
        // Records without a valid number of their own belong to the number the requester gave.
        if let Some(QueryId::Valid(id)) = &query.id {
            let h = hypotheses.entry(id.as_str().to_owned()).or_insert(f64::NEG_INFINITY);
            *h = h.max(floating);
            floating = f64::NEG_INFINITY;
        }
        let mut eligible: Vec<(&String, f64)> =
            hypotheses.iter().filter(|(_, s)| **s >= cfg.possible_threshold).map(|(k, s)| (k, *s)).collect();
        eligible.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        // A runner-up far behind (2^margin times less likely) does not make the answer ambiguous.
        if let [(_, best), (_, second), ..] = eligible.as_slice() {
            if best - second >= cfg.ambiguity_margin {
                eligible.truncate(1);
            }
        }
        match eligible.as_slice() {
            [] if floating >= cfg.possible_threshold => Choice::Ambiguous,
            [] => Choice::None,
            [(id, score)] if *score >= cfg.link_threshold => {
                // Without a valid ID, uniqueness of name + birth date (or phone) rests on the household
                // registry having answered: it is the one complete list of people.
                let registry_answered = gathered
                    .per_source
                    .iter()
                    .any(|(d, _, err)| *d == Department::PublicSecurity && err.is_none());
                if query.valid_id().is_none() && !registry_answered {
                    return Choice::Ambiguous;
                }
                match id.parse::<CitizenId>() {
                    Ok(id) => Choice::One(id, *score),
                    Err(_) => Choice::Ambiguous,
                }
            }
            _ => Choice::Ambiguous,
        }
    }

    /// An AMBIGUOUS or NOT_FOUND answer: availability only, nothing about any candidate.
    fn unresolved(&self, status: Status, query: &Query, gathered: &Gathered) -> Resolution {
        let sources = gathered
            .per_source
            .iter()
            .map(|(dept, _, err)| SourceOutcome {
                dept: *dept,
                unavailable: *err,
                best: None,
                linked: Vec::new(),
                possible: Vec::new(),
            })
            .collect();
        let disambiguating_fields =
            if status == Status::Ambiguous { settling_fields(query) } else { Vec::new() };
        Resolution {
            status,
            worker_ref: None,
            citizen_id: None,
            confidence: 0.0,
            sources,
            disambiguating_fields,
        }
    }

    fn source_outcome(
        &self,
        dept: Department,
        cands: &[Candidate],
        unavailable: Option<&'static str>,
        profile: &Profile,
    ) -> SourceOutcome {
        let mut scored: Vec<(Comparison, &Candidate)> =
            cands.iter().map(|c| (compare(&self.model, profile, c), c)).collect();
        // Highest score first; record key breaks ties so the answer is deterministic.
        scored.sort_by(|a, b| {
            b.0.score.total_cmp(&a.0.score).then_with(|| a.1.record_key.cmp(&b.1.record_key))
        });
        let mut linked = Vec::new();
        let mut possible = Vec::new();
        for (cmp, c) in &scored {
            match self.model.classify(cmp.score) {
                MatchClass::Linked => linked.push(c.record_key.clone()),
                MatchClass::Possible => possible.push(c.record_key.clone()),
                MatchClass::NotLinked => {}
            }
        }
        let best = scored.first().filter(|(cmp, _)| cmp.score >= self.model.config.possible_threshold).map(
            |(cmp, c)| RecordMatch {
                record_key: c.record_key.clone(),
                class: self.model.classify(cmp.score),
                score: cmp.score,
                fields: cmp.fields.clone(),
            },
        );
        SourceOutcome { dept, unavailable, best, linked, possible }
    }
}

enum Choice {
    One(CitizenId, f64),
    Ambiguous,
    None,
}

fn is_valid_quality(q: Option<IdQuality>) -> bool {
    matches!(q, Some(IdQuality::Valid | IdQuality::Upgraded))
}

/// The query fields that would tell namesakes apart, from what the query lacks — never from what the
/// candidates hold, so an AMBIGUOUS answer is the same whichever of them is the person meant.
fn settling_fields(query: &Query) -> Vec<&'static str> {
    let mut out = Vec::new();
    if query.valid_id().is_none() {
        out.push(Field::CitizenId.name());
    }
    if query.birth_stated.is_none() && query.valid_id().is_none() {
        out.push(Field::BirthDate.name());
    }
    if query.phone.is_none() {
        out.push(Field::Phone.name());
    }
    out
}

fn name_digest(name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"name-frequency\x1f");
    h.update(name.as_bytes());
    h.finalize().into()
}

/// One source call under the overall deadline (the source applies its own timeout inside).
async fn bounded<T>(
    source: &dyn Source,
    deadline: Instant,
    fut: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    let dept = source.department();
    match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(SourceError::Timeout { dept, after: Duration::ZERO }),
    }
}
