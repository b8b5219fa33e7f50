//! Worker views: one person's data assembled from the departments, limited to what the purpose needs
//! (view.proto `WorkerViewService.GetWorkerView`).
//!
//! The caller (the gRPC handler) has already authenticated the department, checked the purpose, resolved
//! the subject and checked the legal basis. From there:
//!
//! ```text
//!  plan     requested categories ∩ granted by the purpose ∩ covered by the legal basis;
//!           the rest is omitted as NOT_PERMITTED_FOR_PURPOSE / NO_CONSENT          (plan.rs)
//!  fetch    every linked record of every department serving a planned category,
//!           concurrently, each question bounded by the per-source timeout            (fetch.rs)
//!  names    employers' registered names from industry-commerce, if a section shows
//!           them (a second round, also bounded by the timeout)                        (fetch.rs)
//!  assemble sections from facts — employment reconciled between tax and social
//!           insurance (employment.rs), contributions and arrears as month runs
//!           (contributions.rs) — every value through the purpose's grants and masking
//!           (disclose.rs), SOURCE_UNAVAILABLE / NOT_FOUND per department, `partial`   (assemble.rs)
//! ```
//!
//! A department that fails leaves its part out, marked, and never fails the view: the handler turns the
//! outcome into an error only when no needed source answered ([`ViewOutcome::no_source_answered`]).
//! Income and tax amounts are never read into a view: the contract has no field for them.
//!
//! No tonic here, and no personal data in logs or errors: logs carry department codes, fact categories,
//! failure kinds and the worker reference only; the types holding personal data redact their `Debug`.

mod assemble;
pub mod contributions;
mod disclose;
pub mod employment;
pub mod fetch;
pub mod months;
mod plan;
mod sections;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::time::Duration;

pub use assemble::{assemble, employers_to_name, AssembleInput, ViewOutcome};
pub use disclose::provenance;
pub use fetch::{fetch, fetch_employer_names, sources_for, Answer, EmployerNames, FetchFailure, Fetched};
pub use plan::{plan, LegalCover, Plan};
pub(crate) use sections::{business_status, cst_date, listed_abnormal};

use crate::identity::Resolution;
use crate::policy::{FieldCategory, Purpose};
use crate::sources::SourceSet;

/// A request for a view, after authentication, purpose, identity and legal-basis checks.
#[derive(Debug, Clone, Copy)]
pub struct ViewRequest<'a> {
    /// The subject; must be RESOLVED (otherwise nothing is linked and every section is NOT_FOUND).
    pub resolution: &'a Resolution,
    /// The purpose named in the request, from the catalogue in force.
    pub purpose: &'a Purpose,
    /// The legal basis checked for the request and what it covers.
    pub cover: &'a LegalCover,
    /// `GetWorkerViewRequest.field_categories`; empty = every category the purpose grants.
    pub requested: &'a BTreeSet<FieldCategory>,
    /// The department sources.
    pub sources: &'a SourceSet,
    /// Per-source timeout for each question. Building a view that shows employer names takes at most
    /// about twice this (facts, then names); otherwise about once.
    pub timeout: Duration,
}

/// Builds the view: plans it, asks the sources, and assembles the response. Never fails: sources that
/// do not answer are reported in the response (`partial`, `omitted`, `unavailable_departments`), and
/// [`ViewOutcome::no_source_answered`] tells the caller when there is nothing to show at all.
pub async fn build_view(req: &ViewRequest<'_>) -> ViewOutcome {
    let plan = plan(req.purpose, req.cover, req.requested);
    let fetched = fetch(req.resolution, req.sources, &plan.categories, req.timeout).await;
    let employers = employers_to_name(&plan, req.purpose, &fetched);
    let employer_names = fetch_employer_names(req.sources, &employers, req.timeout).await;
    assemble(&AssembleInput {
        resolution: req.resolution,
        purpose: req.purpose,
        cover: req.cover,
        requested: req.requested,
        fetched: &fetched,
        employer_names: &employer_names,
    })
}
