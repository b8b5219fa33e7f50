//! One decision per claim type: evidence in, verdict and attesting departments out. Pure functions over
//! the facts already fetched, so every rule of the module doc is unit-tested without a source.

use std::collections::{BTreeMap, BTreeSet};

use fedx_adapters::ident::citizen_id::parse_citizen_id;
use fedx_adapters::ident::name::normalize_name;
use fedx_adapters::source::{ContributionStatus, EmployerContributions};
use fedx_adapters::{Department, Fact, FactCategory, Facts};
use fedx_proto::v1 as pb;
use time::{Date, OffsetDateTime};

use super::claim::{compact, Period, RegionCode};
use crate::view::contributions::insurance_type;
use crate::view::employment::canonical_usci;
use crate::view::fetch::{Answer, FetchFailure, Fetched, Registration};
use crate::view::months::Month;
use crate::view::{business_status, listed_abnormal};

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Confirmed,
    Refuted,
    Undetermined(pb::UndeterminedReason),
}

/// A verdict with the departments whose records were read for it and the newest as-of time of those
/// records (empty for UNDETERMINED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub attested: BTreeMap<Department, OffsetDateTime>,
}

impl Decision {
    pub fn undetermined(reason: pb::UndeterminedReason) -> Decision {
        Decision { verdict: Verdict::Undetermined(reason), attested: BTreeMap::new() }
    }

    fn decided(holds: bool, attested: BTreeMap<Department, OffsetDateTime>) -> Decision {
        Decision { verdict: if holds { Verdict::Confirmed } else { Verdict::Refuted }, attested }
    }

    pub fn to_proto(&self, claim_type: &str) -> pb::ClaimResult {
        let (verdict, reason) = match self.verdict {
            Verdict::Confirmed => (pb::Verdict::Confirmed, pb::UndeterminedReason::Unspecified),
            Verdict::Refuted => (pb::Verdict::Refuted, pb::UndeterminedReason::Unspecified),
            Verdict::Undetermined(reason) => (pb::Verdict::Undetermined, reason),
        };
        let attested_by = match self.verdict {
            Verdict::Undetermined(_) => Vec::new(),
            _ => self.attested.iter().map(|(dept, as_of)| crate::view::provenance(*dept, *as_of)).collect(),
        };
        pb::ClaimResult {
            claim_type: claim_type.to_owned(),
            verdict: verdict as i32,
            undetermined_reason: reason as i32,
            attested_by,
        }
    }
}

/// What one department said about one fact category of the subject.
enum Said<'a> {
    /// It did not answer: the claim cannot rest on it.
    Failed,
    /// The subject has no record there.
    NoRecord,
    /// One `Facts` per linked record.
    Records(&'a [Facts]),
}

fn said(fetched: &Fetched, dept: Department, category: FactCategory) -> Said<'_> {
    match fetched.answer(dept, category) {
        None | Some(Answer::Failed(_)) => Said::Failed,
        Some(Answer::Facts(facts)) if facts.is_empty() => Said::NoRecord,
        Some(Answer::Facts(facts)) => Said::Records(facts),
    }
}

fn newest(facts: &[Facts]) -> OffsetDateTime {
    facts.iter().map(|f| f.as_of).max().unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn items(facts: &[Facts]) -> impl Iterator<Item = &Fact> {
    facts.iter().flat_map(|f| f.items.iter())
}

/// The verdict for a single-department claim: unavailable, not found, or `decide` over its records.
fn from_one(
    fetched: &Fetched,
    dept: Department,
    category: FactCategory,
    decide: impl FnOnce(&[Facts]) -> Option<bool>,
) -> Decision {
    match said(fetched, dept, category) {
        Said::Failed => Decision::undetermined(pb::UndeterminedReason::SourceUnavailable),
        Said::NoRecord => Decision::undetermined(pb::UndeterminedReason::NotFound),
        Said::Records(facts) => match decide(facts) {
            Some(holds) => Decision::decided(holds, BTreeMap::from([(dept, newest(facts))])),
            None => Decision::undetermined(pb::UndeterminedReason::NotFound),
        },
    }
}

pub fn identity_matches(fetched: &Fetched, name_norm: &str, citizen_id: &str) -> Decision {
    from_one(fetched, Department::PublicSecurity, FactCategory::Identity, |facts| {
        Some(items(facts).any(|item| match item {
            Fact::Identity(i) => {
                let id = parse_citizen_id(&i.citizen_id).ok().and_then(|p| p.into_valid());
                id.is_some_and(|id| id.as_str() == citizen_id) && normalize_name(&i.name) == name_norm
            }
            _ => false,
        }))
    })
}

pub fn residence_permit_valid(fetched: &Fetched, region: &RegionCode, on: Date) -> Decision {
    from_one(fetched, Department::PublicSecurity, FactCategory::ResidencePermit, |facts| {
        Some(items(facts).any(|item| match item {
            Fact::ResidencePermit(p) => {
                region.contains(&p.city_region) && p.valid_from <= on && on <= p.valid_until
            }
            _ => false,
        }))
    })
}

/// Employers per month, as one department's employment facts say.
fn employers_by_month(facts: &[Facts], period: Period) -> BTreeMap<Month, BTreeSet<String>> {
    let mut out: BTreeMap<Month, BTreeSet<String>> = BTreeMap::new();
    for item in items(facts) {
        let Fact::Employment(e) = item else { continue };
        let Some(month) = Month::parse(e.month.trim()).filter(|m| period.contains(*m)) else { continue };
        out.entry(month).or_default().insert(canonical_usci(&e.employer_usci));
    }
    out
}

pub fn employed_by(fetched: &Fetched, usci: &str, period: Period) -> Decision {
    let tax = said(fetched, Department::Tax, FactCategory::Employment);
    let si = said(fetched, Department::SocialInsurance, FactCategory::Employment);
    if matches!((&tax, &si), (Said::NoRecord, Said::NoRecord)) {
        return Decision::undetermined(pb::UndeterminedReason::NotFound);
    }
    let view = |s: &Said<'_>| match s {
        Said::Records(facts) => Some((employers_by_month(facts, period), newest(facts))),
        Said::NoRecord => Some((BTreeMap::new(), OffsetDateTime::UNIX_EPOCH)),
        Said::Failed => None,
    };
    let (tax_months, si_months) = (view(&tax), view(&si));
    let attests = |m: &Option<(BTreeMap<Month, BTreeSet<String>>, OffsetDateTime)>, month: Month| {
        m.as_ref().is_some_and(|(months, _)| months.get(&month).is_some_and(|e| e.contains(usci)))
    };
    // Answered, and shows another employer (and not this one) in the month.
    let contradicts = |m: &Option<(BTreeMap<Month, BTreeSet<String>>, OffsetDateTime)>, month: Month| {
        m.as_ref()
            .is_some_and(|(months, _)| months.get(&month).is_some_and(|e| !e.contains(usci) && !e.is_empty()))
    };
    let (mut missing, mut conflict) = (false, false);
    let mut attesting = BTreeSet::new();
    for month in period.from.through(period.to) {
        let (t, s) = (attests(&tax_months, month), attests(&si_months, month));
        if t {
            attesting.insert(Department::Tax);
        }
        if s {
            attesting.insert(Department::SocialInsurance);
        }
        if !t && !s {
            missing = true;
        } else if (t && !s && contradicts(&si_months, month)) || (s && !t && contradicts(&tax_months, month))
        {
            conflict = true;
        }
    }
    let read =
        |dept: Department, m: &Option<(BTreeMap<Month, BTreeSet<String>>, OffsetDateTime)>, s: &Said<'_>| {
            matches!(s, Said::Records(_))
                .then(|| (dept, m.as_ref().map_or(OffsetDateTime::UNIX_EPOCH, |(_, t)| *t)))
        };
    let all_read: BTreeMap<Department, OffsetDateTime> =
        [read(Department::Tax, &tax_months, &tax), read(Department::SocialInsurance, &si_months, &si)]
            .into_iter()
            .flatten()
            .collect();
    if missing {
        if tax_months.is_none() || si_months.is_none() {
            return Decision::undetermined(pb::UndeterminedReason::SourceUnavailable);
        }
        return Decision::decided(false, all_read);
    }
    if conflict {
        return Decision::undetermined(pb::UndeterminedReason::EvidenceConflicting);
    }
    let attested = all_read.into_iter().filter(|(dept, _)| attesting.contains(dept)).collect();
    Decision::decided(true, attested)
}

pub fn contributions_at_least(
    fetched: &Fetched,
    insurance: pb::InsuranceType,
    min_months: u32,
    window: Period,
    region: Option<&RegionCode>,
) -> Decision {
    from_one(fetched, Department::SocialInsurance, FactCategory::Contributions, |facts| {
        let paid: BTreeSet<Month> = items(facts)
            .filter_map(|item| match item {
                Fact::Contribution(c)
                    if c.status == ContributionStatus::Paid
                        && insurance_type(&c.insurance_type) == Some(insurance)
                        && region.is_none_or(|r| {
                            c.insured_region.as_deref().is_some_and(|code| r.contains(code))
                        }) =>
                {
                    Month::parse(c.month.trim()).filter(|m| window.contains(*m))
                }
                _ => None,
            })
            .collect();
        Some(paid.len() >= min_months as usize)
    })
}

/// `no_arrears` about the subject's own contributions at the employer.
pub fn no_arrears_of_worker(fetched: &Fetched, usci: &str, period: Option<Period>) -> Decision {
    from_one(fetched, Department::SocialInsurance, FactCategory::Contributions, |facts| {
        let mut at_employer = items(facts)
            .filter_map(|item| match item {
                Fact::Contribution(c) if canonical_usci(&c.employer_usci) == usci => Some(c),
                _ => None,
            })
            .filter(|c| period.is_none_or(|p| Month::parse(c.month.trim()).is_some_and(|m| p.contains(m))))
            .peekable();
        at_employer.peek()?;
        Some(at_employer.all(|c| c.status != ContributionStatus::Arrears))
    })
}

/// `no_arrears` about the employer as a whole.
pub fn no_arrears_of_employer(answer: &Result<EmployerContributions, FetchFailure>) -> Decision {
    match answer {
        Err(_) => Decision::undetermined(pb::UndeterminedReason::SourceUnavailable),
        Ok(c) if !c.declared => Decision::undetermined(pb::UndeterminedReason::NotFound),
        Ok(c) => Decision::decided(!c.in_arrears, BTreeMap::from([(Department::SocialInsurance, c.as_of)])),
    }
}

pub fn child_enrolled(fetched: &Fetched, school_code: Option<&str>, school_name: Option<&str>) -> Decision {
    from_one(fetched, Department::Education, FactCategory::Enrolment, |facts| {
        Some(items(facts).any(|item| match item {
            Fact::Enrolment(e) if e.status.trim() == "enrolled" => match (school_code, school_name) {
                (Some(code), _) => e.school_code.trim() == code,
                (None, Some(name)) => compact(&e.school_name) == name,
                (None, None) => true,
            },
            _ => false,
        }))
    })
}

fn from_registration(
    answer: &Result<Option<Registration>, FetchFailure>,
    holds: impl FnOnce(&Registration) -> bool,
) -> Decision {
    match answer {
        Err(_) => Decision::undetermined(pb::UndeterminedReason::SourceUnavailable),
        Ok(None) => Decision::undetermined(pb::UndeterminedReason::NotFound),
        Ok(Some(r)) => Decision::decided(holds(r), BTreeMap::from([(Department::IndustryCommerce, r.as_of)])),
    }
}

pub fn enterprise_active(answer: &Result<Option<Registration>, FetchFailure>) -> Decision {
    from_registration(answer, |r| business_status(&r.status) == Some(pb::BusinessStatus::Active))
}

/// Listed on or before `today` and not removed by then.
pub fn enterprise_not_abnormal(answer: &Result<Option<Registration>, FetchFailure>, today: Date) -> Decision {
    from_registration(answer, |r| !listed_abnormal(&r.abnormal, today))
}

#[cfg(test)]
mod tests {
    use fedx_adapters::source::{
        AbnormalEntry, ContributionFact, EmploymentFact, EnrolmentFact, IdentityFact, ResidencePermitFact,
    };
    use fedx_adapters::RecordKey;
    use time::macros::{date, datetime};

    use super::*;

    const A: &str = "91530100MA6K000001";
    const B: &str = "91530100MA6K000002";
    const AS_OF: OffsetDateTime = datetime!(2026-11-01 0:00 UTC);

    fn m(s: &str) -> Month {
        Month::parse(s).expect("month")
    }

    fn period(from: &str, to: &str) -> Period {
        Period { from: m(from), to: m(to) }
    }

    fn facts(dept: Department, category: FactCategory, items: Vec<Fact>) -> Facts {
        Facts { dept, record_key: RecordKey("t/1".into()), category, as_of: AS_OF, items }
    }

    fn fetched(answers: Vec<((Department, FactCategory), Answer)>) -> Fetched {
        Fetched { answers: answers.into_iter().collect(), ..Fetched::default() }
    }

    fn employment(dept: Department, rows: &[(&str, &str)]) -> ((Department, FactCategory), Answer) {
        let items = rows
            .iter()
            .map(|(usci, month)| {
                Fact::Employment(EmploymentFact {
                    employer_usci: (*usci).into(),
                    employer_name: None,
                    month: (*month).into(),
                    income_fen: None,
                    tax_fen: None,
                })
            })
            .collect();
        ((dept, FactCategory::Employment), Answer::Facts(vec![facts(dept, FactCategory::Employment, items)]))
    }

    fn none(dept: Department, category: FactCategory) -> ((Department, FactCategory), Answer) {
        ((dept, category), Answer::Facts(Vec::new()))
    }

    fn down(dept: Department, category: FactCategory) -> ((Department, FactCategory), Answer) {
        ((dept, category), Answer::Failed(FetchFailure::Timeout))
    }

    fn depts(d: &Decision) -> Vec<Department> {
        d.attested.keys().copied().collect()
    }

    const TAX: Department = Department::Tax;
    const SI: Department = Department::SocialInsurance;
    const EMP: FactCategory = FactCategory::Employment;

    #[test]
    fn employment_is_confirmed_by_either_department_month_by_month() {
        let f = fetched(vec![
            employment(TAX, &[(A, "2024-01"), (A, "2024-02")]),
            employment(SI, &[(A, "2024-02"), (A, "2024-03")]),
        ]);
        let d = employed_by(&f, A, period("2024-01", "2024-03"));
        assert_eq!(d.verdict, Verdict::Confirmed);
        assert_eq!(depts(&d), [TAX, SI]);
        let only_tax = employed_by(&f, A, period("2024-01", "2024-01"));
        assert_eq!((only_tax.verdict, depts(&only_tax)), (Verdict::Confirmed, vec![TAX]));
        let gap = employed_by(&f, A, period("2024-01", "2024-04"));
        assert_eq!(gap.verdict, Verdict::Refuted);
        assert_eq!(depts(&gap), [TAX, SI]);
        assert_eq!(employed_by(&f, B, period("2024-01", "2024-01")).verdict, Verdict::Refuted);
    }

    #[test]
    fn another_employer_in_the_other_department_is_a_conflict_not_a_refutation() {
        let f = fetched(vec![employment(TAX, &[(A, "2024-01")]), employment(SI, &[(B, "2024-01")])]);
        let d = employed_by(&f, A, period("2024-01", "2024-01"));
        assert_eq!(d.verdict, Verdict::Undetermined(pb::UndeterminedReason::EvidenceConflicting));
        assert!(d.to_proto("employed_by").attested_by.is_empty());
        // Both employers in the other department: no conflict.
        let both = fetched(vec![
            employment(TAX, &[(A, "2024-01")]),
            employment(SI, &[(A, "2024-01"), (B, "2024-01")]),
        ]);
        assert_eq!(employed_by(&both, A, period("2024-01", "2024-01")).verdict, Verdict::Confirmed);
        // A missing month outranks a conflict elsewhere.
        let gap = fetched(vec![employment(TAX, &[(A, "2024-01")]), employment(SI, &[(B, "2024-01")])]);
        assert_eq!(employed_by(&gap, A, period("2024-01", "2024-02")).verdict, Verdict::Refuted);
    }

    #[test]
    fn a_silent_department_leaves_gaps_undetermined_and_no_records_is_not_found() {
        let f = fetched(vec![down(TAX, EMP), employment(SI, &[(A, "2024-01")])]);
        assert_eq!(employed_by(&f, A, period("2024-01", "2024-01")).verdict, Verdict::Confirmed);
        assert_eq!(
            employed_by(&f, A, period("2024-01", "2024-02")).verdict,
            Verdict::Undetermined(pb::UndeterminedReason::SourceUnavailable)
        );
        let nothing = fetched(vec![none(TAX, EMP), none(SI, EMP)]);
        assert_eq!(
            employed_by(&nothing, A, period("2024-01", "2024-01")).verdict,
            Verdict::Undetermined(pb::UndeterminedReason::NotFound)
        );
        let tax_only = fetched(vec![employment(TAX, &[(A, "2024-01")]), none(SI, EMP)]);
        assert_eq!(employed_by(&tax_only, A, period("2024-01", "2024-02")).verdict, Verdict::Refuted);
    }

    fn contribution(month: &str, usci: &str, kind: &str, status: ContributionStatus, region: &str) -> Fact {
        Fact::Contribution(ContributionFact {
            employer_usci: usci.into(),
            month: month.into(),
            insurance_type: kind.into(),
            base_fen: 500_000,
            amount_fen: 80_000,
            status,
            insured_region: Some(region.into()),
        })
    }

    fn contributions(rows: Vec<Fact>) -> Fetched {
        fetched(vec![(
            (SI, FactCategory::Contributions),
            Answer::Facts(vec![facts(SI, FactCategory::Contributions, rows)]),
        )])
    }

    #[test]
    fn contribution_months_count_paid_months_of_the_type_in_the_window_and_region() {
        use ContributionStatus::{Arrears, Paid};
        let f = contributions(vec![
            contribution("2024-01", A, "pension", Paid, "530102"),
            contribution("2024-02", A, "pension", Paid, "530102"),
            contribution("2024-02", B, "pension", Paid, "530102"),
            contribution("2024-03", A, "pension", Arrears, "530102"),
            contribution("2024-04", A, "medical", Paid, "530102"),
            contribution("2023-12", A, "pension", Paid, "530102"),
        ]);
        let pension = pb::InsuranceType::Pension;
        let window = period("2024-01", "2024-06");
        assert_eq!(contributions_at_least(&f, pension, 2, window, None).verdict, Verdict::Confirmed);
        assert_eq!(contributions_at_least(&f, pension, 3, window, None).verdict, Verdict::Refuted);
        let kunming = RegionCode::parse("530100").expect("code");
        let guangzhou = RegionCode::parse("440100").expect("code");
        assert_eq!(
            contributions_at_least(&f, pension, 2, window, Some(&kunming)).verdict,
            Verdict::Confirmed
        );
        assert_eq!(
            contributions_at_least(&f, pension, 1, window, Some(&guangzhou)).verdict,
            Verdict::Refuted
        );
        let d = contributions_at_least(&f, pension, 1, window, None);
        assert_eq!(d.attested, BTreeMap::from([(SI, AS_OF)]));
        assert_eq!(
            contributions_at_least(
                &fetched(vec![down(SI, FactCategory::Contributions)]),
                pension,
                1,
                window,
                None
            )
            .verdict,
            Verdict::Undetermined(pb::UndeterminedReason::SourceUnavailable)
        );
    }

    #[test]
    fn arrears_of_a_worker_at_an_employer() {
        use ContributionStatus::{Arrears, Paid};
        let f = contributions(vec![
            contribution("2024-01", A, "pension", Paid, "530102"),
            contribution("2024-02", A, "pension", Arrears, "530102"),
            contribution("2024-02", B, "pension", Paid, "530102"),
        ]);
        assert_eq!(no_arrears_of_worker(&f, A, None).verdict, Verdict::Refuted);
        assert_eq!(
            no_arrears_of_worker(&f, A, Some(period("2024-01", "2024-01"))).verdict,
            Verdict::Confirmed
        );
        assert_eq!(no_arrears_of_worker(&f, B, None).verdict, Verdict::Confirmed);
        let c = "91530100MA6K000003";
        assert_eq!(
            no_arrears_of_worker(&f, c, None).verdict,
            Verdict::Undetermined(pb::UndeterminedReason::NotFound)
        );
        let employer =
            |declared, in_arrears| Ok(EmployerContributions { declared, in_arrears, as_of: AS_OF });
        assert_eq!(no_arrears_of_employer(&employer(true, false)).verdict, Verdict::Confirmed);
        assert_eq!(no_arrears_of_employer(&employer(true, true)).verdict, Verdict::Refuted);
        assert_eq!(
            no_arrears_of_employer(&employer(false, false)).verdict,
            Verdict::Undetermined(pb::UndeterminedReason::NotFound)
        );
    }

    #[test]
    fn identity_permits_and_enrolment() {
        let ps = |category, items| {
            (
                (Department::PublicSecurity, category),
                Answer::Facts(vec![facts(Department::PublicSecurity, category, items)]),
            )
        };
        let f = fetched(vec![
            ps(
                FactCategory::Identity,
                vec![Fact::Identity(IdentityFact {
                    citizen_id: "11010519491231002X".into(),
                    name: "张 三".into(),
                    sex: None,
                    birth_date: None,
                    ethnicity: None,
                    hukou_region: None,
                    hukou_address: None,
                })],
            ),
            ps(
                FactCategory::ResidencePermit,
                vec![Fact::ResidencePermit(ResidencePermitFact {
                    permit_no: "P1".into(),
                    city_region: "530102".into(),
                    valid_from: date!(2025 - 01 - 01),
                    valid_until: date!(2025 - 12 - 31),
                })],
            ),
            (
                (Department::Education, FactCategory::Enrolment),
                Answer::Facts(vec![facts(
                    Department::Education,
                    FactCategory::Enrolment,
                    vec![Fact::Enrolment(EnrolmentFact {
                        student_no: "S1".into(),
                        child_name: "张小".into(),
                        child_id: None,
                        school_code: "SCH01".into(),
                        school_name: "昆明市 第一中学".into(),
                        school_region: None,
                        grade: "7".into(),
                        status: "enrolled".into(),
                        guardian_name: None,
                        guardian_id: None,
                        guardian_phone: None,
                    })],
                )]),
            ),
        ]);
        let id = "11010519491231002X";
        assert_eq!(identity_matches(&f, &normalize_name("张三"), id).verdict, Verdict::Confirmed);
        assert_eq!(identity_matches(&f, &normalize_name("李四"), id).verdict, Verdict::Refuted);
        assert_eq!(
            identity_matches(&f, &normalize_name("张三"), "110105194912310021").verdict,
            Verdict::Refuted
        );
        let kunming = RegionCode::parse("530000").expect("code");
        let other = RegionCode::parse("530103").expect("code");
        assert_eq!(residence_permit_valid(&f, &kunming, date!(2025 - 12 - 31)).verdict, Verdict::Confirmed);
        assert_eq!(residence_permit_valid(&f, &kunming, date!(2026 - 01 - 01)).verdict, Verdict::Refuted);
        assert_eq!(residence_permit_valid(&f, &other, date!(2025 - 06 - 01)).verdict, Verdict::Refuted);
        assert_eq!(child_enrolled(&f, Some("SCH01"), None).verdict, Verdict::Confirmed);
        assert_eq!(child_enrolled(&f, Some("SCH02"), None).verdict, Verdict::Refuted);
        assert_eq!(child_enrolled(&f, None, Some(&compact("昆明市第一中学"))).verdict, Verdict::Confirmed);
        assert_eq!(child_enrolled(&f, None, None).verdict, Verdict::Confirmed);
        let no_record = fetched(vec![none(Department::Education, FactCategory::Enrolment)]);
        assert_eq!(
            child_enrolled(&no_record, None, None).verdict,
            Verdict::Undetermined(pb::UndeterminedReason::NotFound)
        );
    }

    #[test]
    fn enterprises_by_status_and_abnormal_list() {
        let reg = |status: &str, abnormal: Vec<AbnormalEntry>| {
            Ok(Some(Registration { name: "某公司".into(), status: status.into(), abnormal, as_of: AS_OF }))
        };
        assert_eq!(enterprise_active(&reg("存续", vec![])).verdict, Verdict::Confirmed);
        assert_eq!(enterprise_active(&reg("注销", vec![])).verdict, Verdict::Refuted);
        assert_eq!(
            enterprise_active(&Ok(None)).verdict,
            Verdict::Undetermined(pb::UndeterminedReason::NotFound)
        );
        assert_eq!(
            enterprise_active(&Err(FetchFailure::Timeout)).verdict,
            Verdict::Undetermined(pb::UndeterminedReason::SourceUnavailable)
        );
        let listed = AbnormalEntry {
            listed_on: date!(2025 - 03 - 01),
            reason: "未按时公示年报".into(),
            removed_on: None,
        };
        let removed = AbnormalEntry { removed_on: Some(date!(2025 - 09 - 01)), ..listed.clone() };
        let today = date!(2026 - 12 - 01);
        assert_eq!(enterprise_not_abnormal(&reg("存续", vec![listed]), today).verdict, Verdict::Refuted);
        assert_eq!(enterprise_not_abnormal(&reg("存续", vec![removed]), today).verdict, Verdict::Confirmed);
        let d = enterprise_not_abnormal(&reg("存续", vec![]), today);
        assert_eq!(d.to_proto("enterprise_not_abnormal").attested_by[0].department, "industry_commerce");
    }
}
