//! Putting a view together from what the sources answered: sections, omissions, partiality, and the
//! audit's list of disclosed fields. Pure: no I/O, no clock, so every rule here is unit-tested directly.

use std::collections::BTreeSet;

use fedx_adapters::{Department, Fact, FactCategory};
use fedx_proto::v1 as pb;

use super::disclose::Discloser;
use super::employment::canonical_usci;
use super::fetch::{sources_for, Answer, EmployerNames, Fetched};
use super::plan::{omission, plan, LegalCover, Plan};
use super::sections::{self, Section};
use crate::identity::Resolution;
use crate::policy::{FieldCategory, Purpose};

/// Everything a view is assembled from.
#[derive(Debug, Clone, Copy)]
pub struct AssembleInput<'a> {
    /// The subject, RESOLVED (for any other status nothing is linked and every section is NOT_FOUND).
    pub resolution: &'a Resolution,
    pub purpose: &'a Purpose,
    pub cover: &'a LegalCover,
    /// Categories asked for; empty = every category the purpose grants.
    pub requested: &'a BTreeSet<FieldCategory>,
    /// The sources' answers for the planned categories (see [`super::fetch::fetch`]).
    pub fetched: &'a Fetched,
    /// Employers' registered names (see [`super::fetch::fetch_employer_names`]); empty if not needed.
    pub employer_names: &'a EmployerNames,
}

/// A view and what the audit record needs to know about it.
#[derive(Clone, PartialEq)]
pub struct ViewOutcome {
    /// The response to send (after the audit record is durable).
    pub response: pb::GetWorkerViewResponse,
    /// Every field that carries a value in `response`, as `{category}.{field}`, sorted, without repeats.
    /// Provenance accompanies every value and is not listed.
    pub disclosed_fields: Vec<String>,
    /// Departments asked for facts while building the view, in department order.
    pub consulted_departments: Vec<Department>,
    /// True when the view needed at least one source and none answered: the caller should answer
    /// UNAVAILABLE / SOURCES_UNAVAILABLE (naming `response.unavailable_departments`) rather than an
    /// empty view.
    pub no_source_answered: bool,
}

/// Redacted: the response is personal data. Shows what the audit record would.
impl std::fmt::Debug for ViewOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewOutcome")
            .field("worker_ref", &self.response.worker_ref)
            .field("disclosed_fields", &self.disclosed_fields)
            .field("consulted_departments", &self.consulted_departments)
            .field("partial", &self.response.partial)
            .field("unavailable_departments", &self.response.unavailable_departments)
            .field("no_source_answered", &self.no_source_answered)
            .finish_non_exhaustive()
    }
}

/// Whether the section shows employer names (so industry-commerce must be asked for them).
fn names_employers(plan: &Plan, purpose: &Purpose, category: FieldCategory) -> bool {
    plan.categories.contains(&category) && purpose.grants_field(&category.field_name("employer_name"))
}

/// The employers whose registered names the view will show: those in employment and arrears facts, when
/// those sections are planned and their `employer_name` is granted. Canonical USCIs.
pub fn employers_to_name(plan: &Plan, purpose: &Purpose, fetched: &Fetched) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if names_employers(plan, purpose, FieldCategory::Employment) {
        for dept in [Department::Tax, Department::SocialInsurance] {
            for facts in fetched.facts(dept, FactCategory::Employment) {
                out.extend(facts.items.iter().filter_map(|item| match item {
                    Fact::Employment(e) => Some(canonical_usci(&e.employer_usci)),
                    _ => None,
                }));
            }
        }
    }
    if names_employers(plan, purpose, FieldCategory::Arrears) {
        for facts in fetched.facts(Department::SocialInsurance, FactCategory::Contributions) {
            out.extend(facts.items.iter().filter_map(|item| match item {
                Fact::Contribution(c) if c.status == fedx_adapters::source::ContributionStatus::Arrears => {
                    Some(canonical_usci(&c.employer_usci))
                }
                _ => None,
            }));
        }
    }
    out.remove("");
    out
}

/// Collects omissions and partiality while sections are added.
struct Outcome {
    response: pb::GetWorkerViewResponse,
    unavailable: BTreeSet<Department>,
    needed: usize,
    failed: usize,
}

impl Outcome {
    /// Records, for each source of the category, SOURCE_UNAVAILABLE if it failed and NOT_FOUND if it
    /// answered without anything for the section.
    fn account(&mut self, category: FieldCategory, fetched: &Fetched, found: &BTreeSet<Department>) {
        for &(dept, fact_category) in sources_for(category) {
            self.needed += 1;
            match fetched.answer(dept, fact_category) {
                Some(Answer::Facts(_)) => {
                    if !found.contains(&dept) {
                        self.omit(category, pb::OmissionReason::NotFound, dept);
                    }
                }
                // Not asked at all would be a caller error (facts fetched for other categories): the data
                // is missing all the same, so say so rather than claim the department has nothing.
                Some(Answer::Failed(_)) | None => {
                    self.failed += 1;
                    self.unavailable(category, dept);
                }
            }
        }
    }

    fn unavailable(&mut self, category: FieldCategory, dept: Department) {
        self.unavailable.insert(dept);
        self.omit(category, pb::OmissionReason::SourceUnavailable, dept);
    }

    fn omit(&mut self, category: FieldCategory, reason: pb::OmissionReason, dept: Department) {
        self.response.omitted.push(omission(category, reason, dept.code()));
    }
}

/// Assembles the view.
///
/// For each category asked for: not granted → NOT_PERMITTED_FOR_PURPOSE; granted but not covered by the
/// legal basis → NO_CONSENT; otherwise the section is built from the answers, with SOURCE_UNAVAILABLE
/// (and `partial`) for each source that failed and NOT_FOUND for each that answered with nothing for the
/// person. Only granted fields are filled, each masked as the purpose says, each with its provenance.
/// Where a section shows employer names and industry-commerce could not be asked, the names stay as the
/// sources recorded them (usually none) and industry-commerce is reported unavailable for that section.
pub fn assemble(input: &AssembleInput<'_>) -> ViewOutcome {
    let AssembleInput { resolution, purpose, cover, requested, fetched, employer_names } = *input;
    let plan = plan(purpose, cover, requested);
    let mut d = Discloser::new(purpose);
    let mut out = Outcome {
        response: pb::GetWorkerViewResponse {
            worker_ref: resolution.worker_ref.as_ref().map(|r| r.value.clone()).unwrap_or_default(),
            legal_basis: Some(cover.to_proto()),
            omitted: plan.omitted.clone(),
            ..Default::default()
        },
        unavailable: BTreeSet::new(),
        needed: 0,
        failed: 0,
    };

    for &category in &plan.categories {
        let found = match category {
            FieldCategory::Identity => {
                let citizen_id = resolution.citizen_id.as_ref().map(|id| id.as_str());
                let (summary, found) = sections::identity(&mut d, fetched, citizen_id);
                out.response.identity = summary;
                found
            }
            FieldCategory::ResidencePermit => {
                take(sections::residence_permits(&mut d, fetched), &mut out.response.residence_permits)
            }
            FieldCategory::Employment => {
                take(sections::employment(&mut d, fetched, employer_names), &mut out.response.employment)
            }
            FieldCategory::Contributions => {
                take(sections::contributions(&mut d, fetched), &mut out.response.contributions)
            }
            FieldCategory::Arrears => {
                take(sections::arrears(&mut d, fetched, employer_names), &mut out.response.arrears)
            }
            FieldCategory::Enrolment => {
                take(sections::enrolments(&mut d, fetched), &mut out.response.enrolments)
            }
            FieldCategory::Enterprise => {
                take(sections::enterprises(&mut d, fetched), &mut out.response.enterprises)
            }
            FieldCategory::IndividualBusiness => take(
                sections::individual_businesses(&mut d, fetched),
                &mut out.response.individual_businesses,
            ),
        };
        out.account(category, fetched, &found);
        if names_employers(&plan, purpose, category) && employer_names.failure.is_some() {
            out.unavailable(category, Department::IndustryCommerce);
        }
    }

    let mut consulted = fetched.consulted.clone();
    if employer_names.consulted {
        consulted.insert(Department::IndustryCommerce);
    }
    let mut response = out.response;
    response.omitted.sort_by_key(|o| (o.category, o.reason, o.department.clone()));
    response.partial = !out.unavailable.is_empty();
    response.unavailable_departments = out.unavailable.iter().map(|d| d.code().to_owned()).collect();
    ViewOutcome {
        response,
        disclosed_fields: d.into_disclosed(),
        consulted_departments: consulted.into_iter().collect(),
        no_source_answered: out.needed > 0 && out.failed == out.needed,
    }
}

fn take<T>(section: Section<T>, into: &mut Vec<T>) -> BTreeSet<Department> {
    *into = section.entries;
    section.found
}
