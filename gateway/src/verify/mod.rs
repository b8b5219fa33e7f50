//! Joint verification (协查): verdicts on claims about a worker or an enterprise, from the departments'
//! records, disclosing nothing but the verdict (verify.proto `VerificationService`).
//!
//! The caller (the gRPC handler) has authenticated the department, validated the request ([`claim`]),
//! checked the purpose and the legal basis. From there, for each claim:
//!
//! ```text
//!  permit   the purpose allows the claim type; a claim about the worker also needs its category
//!           granted by the purpose and covered by the legal basis — otherwise NOT_PERMITTED  (permit.rs)
//!  fetch    the subject's facts for the permitted worker claims' categories, concurrently, each
//!           question bounded by the source timeout (view::fetch); enterprise facts by USCI from
//!           industry-commerce; employer-level contribution status from social insurance     (evidence.rs)
//!  decide   one pure function per claim type: facts in, verdict + attesting departments out   (decide.rs)
//! ```
//!
//! The subject is resolved only when at least one permitted claim is about the worker: a request whose
//! worker claims are all refused processes nothing about the person.
//!
//! # Evidence rules
//!
//! Common to every claim about the worker: subject NOT_FOUND → UNDETERMINED (NOT_FOUND); AMBIGUOUS →
//! UNDETERMINED (SUBJECT_AMBIGUOUS, with the disambiguating fields in the response); a department the
//! claim needs that did not answer (error or timeout) → UNDETERMINED (SOURCE_UNAVAILABLE) unless the rule
//! says otherwise; the subject with no record at all in the department(s) the claim reads →
//! UNDETERMINED (NOT_FOUND). "Area code" matching: a 6-digit GB/T 2260 code ending in `0000` (province)
//! or `00` (prefecture) matches every code that starts with its first 2 or 4 digits; any other code
//! matches itself only. Months are `YYYY-MM`; "today" and "the current month" are in China Standard
//! Time (UTC+8).
//!
//! | claim | reads | CONFIRMED | REFUTED |
//! |---|---|---|---|
//! | `identity_matches` | public security identity records of the subject | one record has the claimed citizen ID (15-digit IDs upgraded) and the claimed name (both normalised as identity resolution does) | records exist and none has both |
//! | `residence_permit_valid` | public security residence permits of the subject | a permit whose city matches the region (area codes accepted) is valid on the date (`valid_from <= date <= valid_until`) | the subject has public-security records and no such permit |
//! | `employed_by` | tax withholding and social-insurance contributions of the subject | every month of the period is attested by tax or social insurance for that employer, and no month is in conflict | some month is attested by neither, and both departments answered (if one did not, SOURCE_UNAVAILABLE) |
//! | `contributions_at_least` | social-insurance contributions of the subject | months with a *paid* contribution of the type (in the region, area codes accepted, if given) within the window ≥ `min_months` | fewer |
//! | `no_arrears` with a subject | the subject's contributions at that employer (in the period, if given) | none in arrears | one or more months in arrears; no contribution at that employer at all → NOT_FOUND |
//! | `no_arrears` without a subject | social insurance's contributions declared by the employer (in the period) | none in arrears | some in arrears; the employer declared nothing → NOT_FOUND |
//! | `child_enrolled` | education enrolments linked to the subject (as guardian) | an enrolment with status `enrolled` at the school (code equal; else name equal after trimming and removing inner whitespace; neither given: any school) | the subject has education records and none matches |
//! | `enterprise_active` | industry-commerce registration (enterprise or individual business) | status 存续 / 在业 / 开业 | any other status (吊销 revoked, 注销 deregistered, 迁出 …); no registration → NOT_FOUND |
//! | `enterprise_not_abnormal` | industry-commerce abnormal-operation list | no entry without a removal date | an entry still listed; no registration → NOT_FOUND |
//!
//! Conflicting evidence (`employed_by`): a month attested for the employer by one department while the
//! other department answered and attests *another* employer for that month, and not this one, is in
//! conflict — tax says the worker was paid by A, social insurance says B insured them. When every month
//! is attested but some are in conflict, the verdict is UNDETERMINED (EVIDENCE_CONFLICTING): neither
//! source is preferred. A month attested by neither is REFUTED whatever else is in conflict.
//!
//! `enterprise_active` and `enterprise_not_abnormal` are about the enterprise the claim names, never the
//! worker, even when the request has a subject: they need only the claim type allowed by the purpose.
//! `no_arrears` is about the worker when the request has a subject (then the purpose and legal basis
//! must cover `arrears`), otherwise about the employer as a whole.
//!
//! `attested_by` lists, for CONFIRMED and REFUTED, each department whose records were read for the
//! verdict, with the newest as-of time of those records; it is empty for UNDETERMINED.
//!
//! No tonic here, and no personal data in logs or errors: logs carry department codes, claim type
//! names, verdicts and the worker reference only.

pub mod claim;
mod decide;
mod evidence;
pub mod receipt;

use std::collections::BTreeSet;
use std::time::Duration;

use fedx_adapters::Department;
use fedx_proto::v1 as pb;
use time::Date;

pub use claim::{parse_claims, About, Claim, Period, RegionCode, MAX_CLAIMS};
pub use decide::{Decision, Verdict};

use crate::identity::{Resolution, Status};
use crate::policy::Purpose;
use crate::sources::SourceSet;
use crate::view::LegalCover;
use evidence::{gather, Evidence, Questions};

/// A request whose claims were validated and whose purpose and legal basis were checked.
#[derive(Debug, Clone, Copy)]
pub struct VerifyRequest<'a> {
    pub claims: &'a [Claim],
    /// From the catalogue in force.
    pub purpose: &'a Purpose,
    /// The legal basis checked for the subject; `None` when none was needed (no permitted claim about the
    /// worker) or none could be checked (the subject did not resolve).
    pub cover: Option<&'a LegalCover>,
    /// Whether the request named a subject (decides what `no_arrears` is about).
    pub has_subject: bool,
    /// The subject's resolution, when it was resolved; `None` when there is no subject or no permitted
    /// claim needed it.
    pub resolution: Option<&'a Resolution>,
    pub sources: &'a SourceSet,
    /// Per-source timeout for each question.
    pub timeout: Duration,
    /// "Today" in China Standard Time, for the abnormal-operation list.
    pub today: Date,
}

/// The verdicts, one per claim in request order, and who was asked.
#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    pub results: Vec<pb::ClaimResult>,
    pub consulted: BTreeSet<Department>,
}

/// Whether the purpose allows the claim and, for a claim about the worker, grants its category —
/// before any legal basis is checked. Requests resolve their subject only when some claim passes this.
pub fn allowed_by_purpose(claim: &Claim, purpose: &Purpose, has_subject: bool) -> bool {
    purpose.allows_claim(claim.type_name())
        && match claim.about(has_subject) {
            About::Enterprise => true,
            About::Worker(category) => purpose.grants_category(category),
        }
}

/// Whether the claim may be answered: allowed by the purpose and, about the worker, covered by the legal
/// basis (a consent covers only the categories it names).
pub fn permitted(claim: &Claim, purpose: &Purpose, cover: Option<&LegalCover>, has_subject: bool) -> bool {
    allowed_by_purpose(claim, purpose, has_subject)
        && match claim.about(has_subject) {
            About::Enterprise => true,
            About::Worker(category) => cover.is_some_and(|c| c.covers(purpose, category)),
        }
}

/// Decides every claim. Never fails: a claim that cannot be decided is UNDETERMINED with the reason.
pub async fn verify(req: &VerifyRequest<'_>) -> VerifyOutcome {
    enum Plan {
        Refused(pb::UndeterminedReason),
        Decide,
    }
    let subject_refusal = match req.resolution {
        Some(r) if r.status == Status::Resolved && r.worker_ref.is_some() => None,
        Some(r) if r.status == Status::Ambiguous => Some(pb::UndeterminedReason::SubjectAmbiguous),
        _ => Some(pb::UndeterminedReason::NotFound),
    };
    let mut questions = Questions::default();
    let plans: Vec<Plan> = req
        .claims
        .iter()
        .map(|claim| {
            if !allowed_by_purpose(claim, req.purpose, req.has_subject) {
                return Plan::Refused(pb::UndeterminedReason::NotPermitted);
            }
            match claim.about(req.has_subject) {
                About::Worker(category) => {
                    // Who the subject is comes first: a consent can only be checked for a known worker.
                    if let Some(reason) = subject_refusal {
                        return Plan::Refused(reason);
                    }
                    if !permitted(claim, req.purpose, req.cover, req.has_subject) {
                        return Plan::Refused(pb::UndeterminedReason::NotPermitted);
                    }
                    questions.categories.insert(category);
                }
                About::Enterprise => match claim {
                    Claim::EnterpriseActive { usci } | Claim::EnterpriseNotAbnormal { usci } => {
                        questions.registrations.insert(usci.clone());
                    }
                    Claim::NoArrears { usci, period } => {
                        questions.employers.insert((usci.clone(), *period));
                    }
                    _ => {}
                },
            }
            Plan::Decide
        })
        .collect();
    let evidence = gather(req.resolution, &questions, req.sources, req.timeout).await;
    let results = req
        .claims
        .iter()
        .zip(plans)
        .map(|(claim, plan)| {
            let decision = match plan {
                Plan::Refused(reason) => Decision::undetermined(reason),
                Plan::Decide => decide_one(claim, req.has_subject, &evidence, req.today),
            };
            decision.to_proto(claim.type_name())
        })
        .collect();
    VerifyOutcome { results, consulted: evidence.consulted }
}

fn decide_one(claim: &Claim, has_subject: bool, evidence: &Evidence, today: Date) -> Decision {
    let f = &evidence.fetched;
    let missing = || Decision::undetermined(pb::UndeterminedReason::SourceUnavailable);
    match claim {
        Claim::IdentityMatches { name_norm, citizen_id } => {
            decide::identity_matches(f, name_norm, citizen_id.as_str())
        }
        Claim::ResidencePermitValid { region, on } => decide::residence_permit_valid(f, region, *on),
        Claim::EmployedBy { usci, period } => decide::employed_by(f, usci, *period),
        Claim::ContributionsAtLeast { insurance, min_months, window, region } => {
            decide::contributions_at_least(f, *insurance, *min_months, *window, region.as_ref())
        }
        Claim::NoArrears { usci, period } if has_subject => decide::no_arrears_of_worker(f, usci, *period),
        Claim::NoArrears { usci, period } => evidence
            .employers
            .get(&(usci.clone(), *period))
            .map_or_else(missing, decide::no_arrears_of_employer),
        Claim::ChildEnrolled { school_code, school_name } => {
            decide::child_enrolled(f, school_code.as_deref(), school_name.as_deref())
        }
        Claim::EnterpriseActive { usci } => {
            evidence.registrations.get(usci).map_or_else(missing, decide::enterprise_active)
        }
        Claim::EnterpriseNotAbnormal { usci } => evidence
            .registrations
            .get(usci)
            .map_or_else(missing, |answer| decide::enterprise_not_abnormal(answer, today)),
    }
}
