//! Evaluation against a generator's ground truth: resolve every person from the identifiers a
//! requesting department would have, and compare the linked source records with the truth.
//!
//! Modes (what the requester is assumed to know):
//! - `id-name`: the person's true canonical citizen ID and registered name — what a service hall has
//!   after reading the ID card;
//! - `name-birth`: name and birth date only — a phone enquiry or a paper form without the ID number;
//!   namesakes make many of these AMBIGUOUS, which is the correct answer.
//!
//! Link metrics count source records: a true positive is a LINKED record that the truth lists for
//! the person; a false positive is a LINKED record the truth does not list for them (a wrong-person
//! link); a false negative is a truth record not LINKED (including every record of a person whose
//! query was AMBIGUOUS or NOT_FOUND). POSSIBLE records count as not linked.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use fedx_adapters::TruthRecord;
use futures::stream::{self, StreamExt};

use super::query::{Query, SubjectInput};
use super::resolver::{Resolver, Status};

/// What the requester is assumed to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalMode {
    IdName,
    NameBirth,
}

impl EvalMode {
    pub fn code(self) -> &'static str {
        match self {
            EvalMode::IdName => "id-name",
            EvalMode::NameBirth => "name-birth",
        }
    }

    /// The subject a requester in this mode would send for `truth`.
    pub fn subject(self, truth: &TruthRecord) -> SubjectInput {
        match self {
            EvalMode::IdName => SubjectInput {
                citizen_id: truth.citizen_id.clone(),
                name: truth.name.clone(),
                ..SubjectInput::default()
            },
            EvalMode::NameBirth => SubjectInput {
                name: truth.name.clone(),
                birth_date: truth.birth_date.clone(),
                ..SubjectInput::default()
            },
        }
    }
}

impl std::str::FromStr for EvalMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "id-name" => Ok(EvalMode::IdName),
            "name-birth" => Ok(EvalMode::NameBirth),
            other => Err(format!("unknown mode '{other}' (id-name, name-birth)")),
        }
    }
}

/// Counts and figures of one evaluation run.
#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    pub queries: u64,
    pub resolved: u64,
    pub ambiguous: u64,
    pub not_found: u64,
    /// Queries refused as invalid or failed because no source answered.
    pub errors: u64,
    /// Queries RESOLVED to another person's citizen ID.
    pub wrong_person_resolutions: u64,
    pub true_links: u64,
    /// LINKED records belonging to someone else.
    pub wrong_person_links: u64,
    pub missed_links: u64,
    /// Truth records left POSSIBLE (for review).
    pub possible_links: u64,
    /// Per department: (true links, wrong links, missed).
    pub per_dept: BTreeMap<String, (u64, u64, u64)>,
    pub elapsed: Duration,
}

impl EvalReport {
    pub fn precision(&self) -> f64 {
        ratio(self.true_links, self.true_links + self.wrong_person_links)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.true_links, self.true_links + self.missed_links)
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    fn add(&mut self, truth: &TruthRecord, outcome: Outcome) {
        self.queries += 1;
        let truth_keys: HashSet<(&str, &str)> = truth
            .records
            .iter()
            .flat_map(|(d, keys)| keys.iter().map(move |k| (d.as_str(), k.as_str())))
            .collect();
        let Outcome::Answered { status, citizen_id, linked, possible } = outcome else {
            self.errors += 1;
            self.count_missed(truth, &HashSet::new());
            return;
        };
        match status {
            Status::Resolved => self.resolved += 1,
            Status::Ambiguous => self.ambiguous += 1,
            Status::NotFound => self.not_found += 1,
        }
        if status == Status::Resolved && citizen_id.as_deref() != Some(truth.citizen_id.as_str()) {
            self.wrong_person_resolutions += 1;
        }
        let mut hit: HashSet<(String, String)> = HashSet::new();
        for (dept, key) in linked {
            let entry = self.per_dept.entry(dept.clone()).or_default();
            if truth_keys.contains(&(dept.as_str(), key.as_str())) {
                self.true_links += 1;
                entry.0 += 1;
                hit.insert((dept, key));
            } else {
                self.wrong_person_links += 1;
                entry.1 += 1;
            }
        }
        self.possible_links +=
            possible.iter().filter(|(d, k)| truth_keys.contains(&(d.as_str(), k.as_str()))).count() as u64;
        self.count_missed(truth, &hit);
    }

    fn count_missed(&mut self, truth: &TruthRecord, hit: &HashSet<(String, String)>) {
        for (dept, keys) in &truth.records {
            for key in keys {
                if !hit.contains(&(dept.clone(), key.clone())) {
                    self.missed_links += 1;
                    self.per_dept.entry(dept.clone()).or_default().2 += 1;
                }
            }
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

enum Outcome {
    Answered {
        status: Status,
        citizen_id: Option<String>,
        linked: Vec<(String, String)>,
        possible: Vec<(String, String)>,
    },
    Failed,
}

/// Reads a JSON Lines ground-truth file as written by the generator.
pub fn read_truth(path: &Path) -> anyhow::Result<Vec<TruthRecord>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open ground truth {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// Resolves every truth record (without the resolution cache) with `concurrency` queries in flight.
pub async fn evaluate(
    resolver: &Resolver,
    truths: &[TruthRecord],
    mode: EvalMode,
    concurrency: usize,
) -> EvalReport {
    let started = Instant::now();
    let outcomes = stream::iter(truths.iter())
        .map(|truth| async move {
            let Ok(query) = Query::parse(&mode.subject(truth), "subject") else {
                return (truth, Outcome::Failed);
            };
            match resolver.resolve_uncached(&query).await {
                Ok(r) => {
                    let keys = |f: fn(&super::resolver::SourceOutcome) -> &Vec<fedx_adapters::RecordKey>| {
                        r.sources
                            .iter()
                            .flat_map(|s| f(s).iter().map(move |k| (s.dept.code().to_owned(), k.0.clone())))
                            .collect::<Vec<_>>()
                    };
                    let outcome = Outcome::Answered {
                        status: r.status,
                        citizen_id: r.citizen_id.as_ref().map(|c| c.as_str().to_owned()),
                        linked: keys(|s| &s.linked),
                        possible: keys(|s| &s.possible),
                    };
                    (truth, outcome)
                }
                Err(_) => (truth, Outcome::Failed),
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut report = EvalReport::default();
    let mut outcomes = std::pin::pin!(outcomes);
    while let Some((truth, outcome)) = outcomes.next().await {
        report.add(truth, outcome);
    }
    report.elapsed = started.elapsed();
    report
}
