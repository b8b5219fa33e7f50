//! Employment reconciled from tax withholding and social-insurance contributions.
//!
//! Two departments see a worker's employment independently: tax sees each month an employer withheld
//! income tax, social insurance each month an employer declared contributions. Neither is complete (a
//! small wage may be below the tax threshold and still be declared; wages paid without contributions are
//! exactly what labour inspection looks for), so the view shows, per employer, runs of consecutive months
//! and which departments attest every month of each run. A run attested by one department only is a
//! discrepancy the caller can see.
//!
//! Income and tax amounts are read by nobody here: only the employer and the month of each fact are used.

use std::collections::{BTreeMap, BTreeSet};

use fedx_adapters::{Department, Fact, Facts};
use time::OffsetDateTime;

use super::months::{runs_by, Month, Run};

/// A run of consecutive months attested by the same departments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub months: Run,
    /// In `Department::ALL` order (tax before social insurance).
    pub departments: Vec<Department>,
}

/// Employment by one employer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmployerRecord {
    /// Upper case, as the sources record it.
    pub employer_usci: String,
    /// The employer's name as a source recorded it, if any did.
    pub recorded_name: Option<String>,
    /// Chronological, not overlapping.
    pub periods: Vec<Period>,
    /// Distinct months across `periods`.
    pub months: usize,
    /// The departments whose facts attest this employment, with the latest `as_of` of those facts.
    pub sources: BTreeMap<Department, OffsetDateTime>,
}

impl EmployerRecord {
    /// First and last month worked.
    pub fn span(&self) -> Option<(Month, Month)> {
        Some((self.periods.first()?.months.start, self.periods.last()?.months.end))
    }
}

/// Canonical form of a USCI as sources record it (they store it canonical already; this guards against
/// stray case and whitespace so one employer is not split in two).
pub fn canonical_usci(raw: &str) -> String {
    raw.trim().to_ascii_uppercase()
}

/// Reconciles the employment facts of every department (tax and social insurance, each `Facts` the
/// answer for one linked record) into one record per employer, most recent employment first: by last
/// month worked, then first month, both descending, then by USCI.
///
/// Facts with an empty USCI or a malformed month are left out; a month reported twice by the same
/// department (two records of one person, or two declarations) counts once.
pub fn reconcile<'a>(facts: impl IntoIterator<Item = &'a Facts>) -> Vec<EmployerRecord> {
    #[derive(Default)]
    struct Acc {
        recorded_name: Option<String>,
        months: BTreeMap<Month, BTreeSet<Department>>,
        sources: BTreeMap<Department, OffsetDateTime>,
    }

    let mut employers: BTreeMap<String, Acc> = BTreeMap::new();
    for answer in facts {
        for item in &answer.items {
            let Fact::Employment(e) = item else { continue };
            let usci = canonical_usci(&e.employer_usci);
            let Some(month) = Month::parse(e.month.trim()) else { continue };
            if usci.is_empty() {
                continue;
            }
            let acc = employers.entry(usci).or_default();
            acc.months.entry(month).or_default().insert(answer.dept);
            let as_of = acc.sources.entry(answer.dept).or_insert(answer.as_of);
            *as_of = (*as_of).max(answer.as_of);
            if acc.recorded_name.is_none() {
                acc.recorded_name =
                    e.employer_name.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned);
            }
        }
    }

    let mut out: Vec<EmployerRecord> = employers
        .into_iter()
        .map(|(employer_usci, acc)| {
            let months = acc.months.len();
            let periods = runs_by(acc.months)
                .into_iter()
                .map(|(months, departments)| Period {
                    months,
                    departments: departments.into_iter().collect(),
                })
                .collect();
            EmployerRecord {
                employer_usci,
                recorded_name: acc.recorded_name,
                periods,
                months,
                sources: acc.sources,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let (a_first, a_last) = a.span().unzip();
        let (b_first, b_last) = b.span().unzip();
        b_last.cmp(&a_last).then(b_first.cmp(&a_first)).then_with(|| a.employer_usci.cmp(&b.employer_usci))
    });
    out
}

#[cfg(test)]
mod tests {
    use fedx_adapters::source::EmploymentFact;
    use fedx_adapters::{FactCategory, RecordKey};
    use time::macros::datetime;

    use super::*;

    const A: &str = "91350100M000100Y43";
    const B: &str = "91440703MA4UJ2K53W";

    fn facts(dept: Department, as_of: OffsetDateTime, lines: &[(&str, &str)]) -> Facts {
        Facts {
            dept,
            record_key: RecordKey::new("r", "1"),
            category: FactCategory::Employment,
            as_of,
            items: lines
                .iter()
                .map(|(usci, month)| {
                    Fact::Employment(EmploymentFact {
                        employer_usci: (*usci).to_owned(),
                        employer_name: None,
                        month: (*month).to_owned(),
                        income_fen: Some(512_345),
                        tax_fen: Some(1_234),
                    })
                })
                .collect(),
        }
    }

    fn m(s: &str) -> Month {
        Month::parse(s).unwrap()
    }

    fn period(start: &str, end: &str, departments: &[Department]) -> Period {
        Period { months: Run { start: m(start), end: m(end) }, departments: departments.to_vec() }
    }

    const T: Department = Department::Tax;
    const S: Department = Department::SocialInsurance;

    #[test]
    fn runs_split_where_the_evidence_changes_or_months_are_missing() {
        let tax_at = datetime!(2026-10-01 00:00 +8);
        let si_at = datetime!(2026-10-15 00:00 +8);
        let tax = facts(T, tax_at, &[(A, "2024-01"), (A, "2024-02"), (A, "2024-03"), (A, "2024-06")]);
        let si = facts(S, si_at, &[(A, "2024-02"), (A, "2024-03"), (A, "2024-04"), (A, "2024-06")]);
        let got = reconcile([&tax, &si]);
        assert_eq!(got.len(), 1);
        let a = &got[0];
        assert_eq!(a.employer_usci, A);
        assert_eq!(
            a.periods,
            vec![
                period("2024-01", "2024-01", &[T]),
                period("2024-02", "2024-03", &[T, S]),
                period("2024-04", "2024-04", &[S]),
                period("2024-06", "2024-06", &[T, S]),
            ]
        );
        // 01, 02, 03, 04, 06: distinct months, not the sum over departments.
        assert_eq!(a.months, 5);
        assert_eq!(a.sources, BTreeMap::from([(T, tax_at), (S, si_at)]));
    }

    #[test]
    fn one_department_alone_and_duplicates_count_once() {
        let at = datetime!(2026-10-01 00:00 +8);
        let only_tax = facts(T, at, &[(A, "2023-11"), (A, "2023-12"), (A, "2024-01"), (A, "2024-01")]);
        let second_record = facts(T, at, &[(A, "2024-01")]);
        let got = reconcile([&only_tax, &second_record]);
        assert_eq!(got[0].periods, vec![period("2023-11", "2024-01", &[T])]);
        assert_eq!(got[0].months, 3);
        assert_eq!(got[0].sources.keys().copied().collect::<Vec<_>>(), vec![T]);

        let only_si = facts(S, at, &[(A, "2024-05"), (A, "2024-06")]);
        let got = reconcile([&only_si]);
        assert_eq!(got[0].periods, vec![period("2024-05", "2024-06", &[S])]);
    }

    #[test]
    fn most_recent_employer_first_and_bad_rows_left_out() {
        let at = datetime!(2026-10-01 00:00 +8);
        let tax = facts(
            T,
            at,
            &[
                (A, "2022-01"),
                (A, "2022-02"),
                (B, "2023-05"),
                ("", "2023-06"),
                (B, "2023-13"),
                (" 91440703ma4uj2k53w ", "2023-06"),
            ],
        );
        let got = reconcile([&tax]);
        assert_eq!(got.iter().map(|e| e.employer_usci.as_str()).collect::<Vec<_>>(), vec![B, A]);
        assert_eq!(got[0].periods, vec![period("2023-05", "2023-06", &[T])]);
        assert!(reconcile(std::iter::empty()).is_empty());
    }

    #[test]
    fn ties_on_the_last_month_go_to_the_later_start() {
        let at = datetime!(2026-10-01 00:00 +8);
        let tax = facts(T, at, &[(A, "2024-01"), (A, "2024-02"), (B, "2024-02")]);
        let got = reconcile([&tax]);
        assert_eq!(got.iter().map(|e| e.employer_usci.as_str()).collect::<Vec<_>>(), vec![B, A]);
    }
}
