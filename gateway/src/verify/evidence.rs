//! Gathering the evidence a request's claims need, all of it concurrently and each question bounded by
//! the per-source timeout: the subject's facts (through the view's fetch, so the all-or-nothing rule per
//! department and category is the same), enterprise registrations by USCI, and employer-level
//! contribution status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fedx_adapters::source::EmployerContributions;
use fedx_adapters::{Department, SourceError};
use futures::future::join_all;

use super::claim::Period;
use crate::identity::Resolution;
use crate::policy::FieldCategory;
use crate::sources::SourceSet;
use crate::view::fetch::{fetch, registration, FetchFailure, Fetched, Registration};

/// What to ask.
#[derive(Debug, Default)]
pub struct Questions {
    /// Categories of the subject's facts.
    pub categories: BTreeSet<FieldCategory>,
    /// Enterprises whose registration is needed (canonical USCIs).
    pub registrations: BTreeSet<String>,
    /// Employers whose contribution status is needed, with the period asked about.
    pub employers: BTreeSet<(String, Option<Period>)>,
}

/// The answers.
#[derive(Debug, Default)]
pub struct Evidence {
    pub fetched: Fetched,
    pub registrations: BTreeMap<String, Result<Option<Registration>, FetchFailure>>,
    pub employers: BTreeMap<(String, Option<Period>), Result<EmployerContributions, FetchFailure>>,
    /// Every department asked anything.
    pub consulted: BTreeSet<Department>,
}

#[tracing::instrument(name = "verify.evidence", skip_all)]
pub async fn gather(
    resolution: Option<&Resolution>,
    questions: &Questions,
    sources: &SourceSet,
    timeout: Duration,
) -> Evidence {
    let subject = async {
        match resolution {
            Some(resolution) if !questions.categories.is_empty() => {
                fetch(resolution, sources, &questions.categories, timeout).await
            }
            _ => Fetched::default(),
        }
    };
    let registrations = join_all(questions.registrations.iter().map(|usci| async move {
        let answer = match sources.get(Department::IndustryCommerce) {
            None => Err(FetchFailure::NotConfigured),
            Some(source) => bounded(timeout, registration(source.as_ref(), usci)).await,
        };
        (usci.clone(), answer)
    }));
    let employers = join_all(questions.employers.iter().map(|(usci, period)| async move {
        let answer = match sources.get(Department::SocialInsurance) {
            None => Err(FetchFailure::NotConfigured),
            Some(source) => {
                let from = period.map(|p| (p.from.to_string(), p.to.to_string()));
                let months = from.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
                bounded(timeout, source.employer_contributions(usci, months)).await
            }
        };
        ((usci.clone(), *period), answer)
    }));
    let (fetched, registrations, employers) = tokio::join!(subject, registrations, employers);
    let mut consulted = fetched.consulted.clone();
    if !registrations.is_empty() {
        consulted.insert(Department::IndustryCommerce);
    }
    if !employers.is_empty() {
        consulted.insert(Department::SocialInsurance);
    }
    for (usci_answer, dept) in registrations
        .iter()
        .filter_map(|(_, a)| a.as_ref().err())
        .map(|f| (f, Department::IndustryCommerce))
        .chain(
            employers.iter().filter_map(|(_, a)| a.as_ref().err()).map(|f| (f, Department::SocialInsurance)),
        )
    {
        tracing::warn!(
            department = dept.code(),
            failure = usci_answer.kind(),
            "verification: source did not answer"
        );
    }
    Evidence {
        fetched,
        registrations: registrations.into_iter().collect(),
        employers: employers.into_iter().collect(),
        consulted,
    }
}

async fn bounded<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, FetchFailure> {
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(FetchFailure::Timeout),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(FetchFailure::from_error(&e)),
    }
}
