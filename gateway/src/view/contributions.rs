//! Contribution summaries and arrears from social-insurance contribution facts.
//!
//! The source gives one fact per month, employer and insurance type, paid or in arrears. The view
//! counts months, never money: contributions become, per insurance type and insuring region, the months
//! paid (as runs) and the number of months in arrears; arrears become runs of unpaid months per employer
//! and insurance type. Bases and amounts are not read.

use std::collections::{BTreeMap, BTreeSet};

use fedx_adapters::source::ContributionStatus;
use fedx_adapters::{Fact, Facts};
use fedx_proto::v1 as pb;
use time::OffsetDateTime;

use super::employment::canonical_usci;
use super::months::{runs, Month, Run};

/// The contract's insurance type for a source code (`pension`, `medical`…); `None` for a code the
/// contract has no value for.
pub fn insurance_type(code: &str) -> Option<pb::InsuranceType> {
    match code.trim() {
        "pension" => Some(pb::InsuranceType::Pension),
        "medical" => Some(pb::InsuranceType::Medical),
        "unemployment" => Some(pb::InsuranceType::Unemployment),
        "work_injury" => Some(pb::InsuranceType::WorkInjury),
        "maternity" => Some(pb::InsuranceType::Maternity),
        _ => None,
    }
}

/// Contributions of one insurance type in one insuring region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub insurance_type: pb::InsuranceType,
    /// `None` when the source does not say where the person is insured.
    pub region: Option<String>,
    /// Runs of months with contributions paid, chronological.
    pub paid: Vec<Run>,
    /// Distinct months paid.
    pub months_paid: usize,
    /// Distinct months declared and not paid (by any employer).
    pub months_in_arrears: usize,
    /// Latest `as_of` of the facts summarised.
    pub as_of: OffsetDateTime,
}

/// A run of months one employer declared and did not pay, for one insurance type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrearsRun {
    pub employer_usci: String,
    pub insurance_type: pb::InsuranceType,
    pub months: Run,
    pub as_of: OffsetDateTime,
}

/// The contribution facts that can be reported: a known insurance type and a well-formed month. Others
/// are left out (they cannot be put in the contract's terms).
fn items<'a>(
    facts: impl IntoIterator<Item = &'a Facts>,
) -> impl Iterator<Item = (&'a fedx_adapters::source::ContributionFact, pb::InsuranceType, Month, OffsetDateTime)>
{
    facts.into_iter().flat_map(|answer| {
        answer.items.iter().filter_map(move |item| {
            let Fact::Contribution(c) = item else { return None };
            Some((c, insurance_type(&c.insurance_type)?, Month::parse(c.month.trim())?, answer.as_of))
        })
    })
}

/// One summary per insurance type and region, in insurance-type order (the contract's enum order), then
/// region code (unknown region last).
pub fn summarize<'a>(facts: impl IntoIterator<Item = &'a Facts>) -> Vec<Summary> {
    #[derive(Default)]
    struct Acc {
        paid: BTreeSet<Month>,
        arrears: BTreeSet<Month>,
        as_of: Option<OffsetDateTime>,
    }
    let mut groups: BTreeMap<(i32, (bool, String)), Acc> = BTreeMap::new();
    for (c, kind, month, as_of) in items(facts) {
        let region = c.insured_region.as_deref().map(str::trim).filter(|r| !r.is_empty());
        // (false, code) sorts known regions before the unknown one.
        let key = (kind as i32, region.map_or((true, String::new()), |r| (false, r.to_owned())));
        let acc = groups.entry(key).or_default();
        match c.status {
            ContributionStatus::Paid => acc.paid.insert(month),
            ContributionStatus::Arrears => acc.arrears.insert(month),
        };
        acc.as_of = Some(acc.as_of.map_or(as_of, |t| t.max(as_of)));
    }
    groups
        .into_iter()
        .filter_map(|((kind, (unknown, region)), acc)| {
            Some(Summary {
                insurance_type: pb::InsuranceType::try_from(kind).ok()?,
                region: (!unknown).then_some(region),
                months_paid: acc.paid.len(),
                months_in_arrears: acc.arrears.len(),
                paid: runs(acc.paid),
                as_of: acc.as_of?,
            })
        })
        .collect()
}

/// Arrears as runs of consecutive months per employer and insurance type, most recent first: by last
/// month, then first month, both descending, then employer and insurance type.
pub fn arrears<'a>(facts: impl IntoIterator<Item = &'a Facts>) -> Vec<ArrearsRun> {
    let mut groups: BTreeMap<(String, i32), (BTreeSet<Month>, OffsetDateTime)> = BTreeMap::new();
    for (c, kind, month, as_of) in items(facts) {
        let usci = canonical_usci(&c.employer_usci);
        if c.status != ContributionStatus::Arrears || usci.is_empty() {
            continue;
        }
        let (months, latest) = groups.entry((usci, kind as i32)).or_insert((BTreeSet::new(), as_of));
        months.insert(month);
        *latest = (*latest).max(as_of);
    }
    let mut out: Vec<ArrearsRun> = groups
        .into_iter()
        .flat_map(|((employer_usci, kind), (months, as_of))| {
            let insurance_type = pb::InsuranceType::try_from(kind).unwrap_or(pb::InsuranceType::Unspecified);
            runs(months).into_iter().map(move |months| ArrearsRun {
                employer_usci: employer_usci.clone(),
                insurance_type,
                months,
                as_of,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.months
            .end
            .cmp(&a.months.end)
            .then(b.months.start.cmp(&a.months.start))
            .then_with(|| a.employer_usci.cmp(&b.employer_usci))
            .then((a.insurance_type as i32).cmp(&(b.insurance_type as i32)))
    });
    out
}

#[cfg(test)]
mod tests {
    use fedx_adapters::source::ContributionFact;
    use fedx_adapters::{Department, FactCategory, RecordKey};
    use time::macros::datetime;

    use super::*;

    const A: &str = "91350100M000100Y43";
    const B: &str = "91440703MA4UJ2K53W";

    fn facts(region: Option<&str>, lines: &[(&str, &str, &str, ContributionStatus)]) -> Facts {
        Facts {
            dept: Department::SocialInsurance,
            record_key: RecordKey::new("insured_person", "S1"),
            category: FactCategory::Contributions,
            as_of: datetime!(2026-10-01 00:00 +8),
            items: lines
                .iter()
                .map(|(usci, month, kind, status)| {
                    Fact::Contribution(ContributionFact {
                        employer_usci: (*usci).to_owned(),
                        month: (*month).to_owned(),
                        insurance_type: (*kind).to_owned(),
                        base_fen: 600_000,
                        amount_fen: 168_000,
                        status: *status,
                        insured_region: region.map(str::to_owned),
                    })
                })
                .collect(),
        }
    }

    fn run(start: &str, end: &str) -> Run {
        Run { start: Month::parse(start).unwrap(), end: Month::parse(end).unwrap() }
    }

    use ContributionStatus::{Arrears as Owed, Paid};

    #[test]
    fn summaries_per_type_and_region_count_distinct_months() {
        let cd = facts(
            Some("510104"),
            &[
                (A, "2024-01", "pension", Paid),
                (A, "2024-02", "pension", Paid),
                // A second employer paying for the same month: still one month.
                (B, "2024-02", "pension", Paid),
                (A, "2024-03", "pension", Owed),
                (A, "2024-04", "pension", Owed),
                (A, "2024-05", "pension", Paid),
                (A, "2024-01", "medical", Paid),
                (A, "2024-01", "long_term_care", Paid),
                (A, "2024-1", "medical", Paid),
            ],
        );
        let cs = facts(Some("430102"), &[(B, "2023-07", "pension", Paid)]);
        let got = summarize([&cd, &cs]);
        assert_eq!(
            got.iter().map(|s| (s.insurance_type, s.region.as_deref())).collect::<Vec<_>>(),
            vec![
                (pb::InsuranceType::Pension, Some("430102")),
                (pb::InsuranceType::Pension, Some("510104")),
                (pb::InsuranceType::Medical, Some("510104")),
            ]
        );
        let pension = &got[1];
        assert_eq!(pension.months_paid, 3);
        assert_eq!(pension.paid, vec![run("2024-01", "2024-02"), run("2024-05", "2024-05")]);
        assert_eq!(pension.months_in_arrears, 2);
        assert_eq!(got[2].months_paid, 1);
        assert_eq!(got[2].months_in_arrears, 0);

        let unknown_region = facts(None, &[(A, "2024-01", "pension", Paid)]);
        let got = summarize([&cd, &unknown_region]);
        assert_eq!(
            got.iter().rfind(|s| s.insurance_type == pb::InsuranceType::Pension).unwrap().region,
            None
        );
    }

    #[test]
    fn arrears_are_runs_per_employer_and_type_most_recent_first() {
        let f = facts(
            Some("510104"),
            &[
                (A, "2023-01", "pension", Owed),
                (A, "2023-02", "pension", Owed),
                (A, "2023-03", "pension", Paid),
                (A, "2023-04", "pension", Owed),
                (A, "2023-01", "medical", Owed),
                (B, "2024-06", "pension", Owed),
                (B, "2024-07", "pension", Owed),
            ],
        );
        let got = arrears([&f]);
        let summary: Vec<_> =
            got.iter().map(|a| (a.employer_usci.as_str(), a.insurance_type, a.months)).collect();
        assert_eq!(
            summary,
            vec![
                (B, pb::InsuranceType::Pension, run("2024-06", "2024-07")),
                (A, pb::InsuranceType::Pension, run("2023-04", "2023-04")),
                (A, pb::InsuranceType::Pension, run("2023-01", "2023-02")),
                (A, pb::InsuranceType::Medical, run("2023-01", "2023-01")),
            ]
        );
        assert!(arrears([&facts(None, &[(A, "2023-01", "pension", Paid)])]).is_empty());
    }
}
