//! Calendar months and runs of consecutive months, the unit in which employment and contributions are
//! reported.
//!
//! Sources report months as `YYYY-MM` strings; comparing and stepping strings is error-prone (and
//! `2024-12` → `2025-01` is not a string increment), so months are turned into a count of months since
//! year 0 once, and back into `YYYY-MM` only when the response is written.

use std::fmt;

use fedx_proto::v1 as pb;

/// A calendar month (China Standard Time, as the sources record them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month(u32);

impl Month {
    /// Parses `YYYY-MM` (years 1000–9999, months 01–12). Anything else is `None`: a malformed month in
    /// a source is left out rather than guessed at.
    pub fn parse(s: &str) -> Option<Month> {
        let b = s.as_bytes();
        if b.len() != 7 || b[4] != b'-' || !b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit) {
            return None;
        }
        let year: u32 = s[..4].parse().ok()?;
        let month: u32 = s[5..].parse().ok()?;
        if year < 1000 || !(1..=12).contains(&month) {
            return None;
        }
        Some(Month(year * 12 + month - 1))
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        Month(self.0.saturating_add(1))
    }

    /// The month `n` months before this one (`None` before year 0).
    pub fn minus(self, n: u32) -> Option<Month> {
        self.0.checked_sub(n).map(Month)
    }

    /// The month a calendar date falls in.
    pub fn of_date(date: time::Date) -> Month {
        let year = u32::try_from(date.year()).unwrap_or(0);
        Month(year * 12 + u32::from(u8::from(date.month())) - 1)
    }

    /// Months from `self` to `to`, inclusive (0 when `to` is earlier).
    pub fn months_until(self, to: Month) -> u32 {
        if to < self {
            0
        } else {
            to.0 - self.0 + 1
        }
    }

    /// Every month from `self` to `to`, inclusive.
    pub fn through(self, to: Month) -> impl Iterator<Item = Month> {
        (self.0..=to.0).map(Month)
    }

    pub fn year(self) -> u32 {
        self.0 / 12
    }

    /// 1–12.
    pub fn month(self) -> u32 {
        self.0 % 12 + 1
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

/// An inclusive run of consecutive months.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Run {
    pub start: Month,
    pub end: Month,
}

impl Run {
    /// The contract's `MonthRange`. `end_month` is always written out: the contract lets an empty end
    /// mean "ongoing", but the gateway cannot know a source's data horizon, so it never claims that.
    pub fn to_proto(self) -> pb::MonthRange {
        pb::MonthRange { start_month: self.start.to_string(), end_month: self.end.to_string() }
    }
}

/// Splits months, each with a label, into maximal runs of consecutive months with equal labels, in
/// chronological order. The input must be in ascending month order without repeats (a `BTreeMap` or
/// `BTreeSet` iteration order), which is what every caller has.
pub fn runs_by<L: PartialEq + Clone>(months: impl IntoIterator<Item = (Month, L)>) -> Vec<(Run, L)> {
    let mut out: Vec<(Run, L)> = Vec::new();
    for (month, label) in months {
        match out.last_mut() {
            Some((run, last)) if run.end.next() == month && *last == label => run.end = month,
            _ => out.push((Run { start: month, end: month }, label)),
        }
    }
    out
}

/// Maximal runs of consecutive months, in chronological order (input ascending, no repeats).
pub fn runs(months: impl IntoIterator<Item = Month>) -> Vec<Run> {
    runs_by(months.into_iter().map(|m| (m, ()))).into_iter().map(|(run, ())| run).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Month {
        Month::parse(s).unwrap()
    }

    #[test]
    fn parses_and_prints_months() {
        assert_eq!(m("2024-01").to_string(), "2024-01");
        assert_eq!(m("2024-12").next(), m("2025-01"));
        for bad in ["2024-13", "2024-00", "2024-1", "24-01", "2024/01", "", "２０２４-01", "0999-01"] {
            assert_eq!(Month::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn runs_split_at_gaps_and_label_changes() {
        let months = [m("2024-11"), m("2024-12"), m("2025-01"), m("2025-03")];
        assert_eq!(
            runs(months),
            vec![
                Run { start: m("2024-11"), end: m("2025-01") },
                Run { start: m("2025-03"), end: m("2025-03") }
            ]
        );
        let labelled = [(m("2024-01"), 1), (m("2024-02"), 1), (m("2024-03"), 2), (m("2024-04"), 2)];
        assert_eq!(
            runs_by(labelled),
            vec![
                (Run { start: m("2024-01"), end: m("2024-02") }, 1),
                (Run { start: m("2024-03"), end: m("2024-04") }, 2)
            ]
        );
        assert!(runs([]).is_empty());
    }
}
