//! Calendar dates and months as the departments write them.
//!
//! Each source exports dates its own way (ISO with dashes from the databases, slashes from Excel,
//! `YYYYMMDD` from mainframe-era systems, `2019年3月5日` from hand-filled forms). Months matter as much as
//! days: tax withholding and social-insurance contributions are per month (`所属期`).

use time::Date;

use super::{ascii_number, calendar_date, fold_width_char, is_invisible};

/// Why a string is not a date. Messages never include the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("date is empty")]
    Empty,
    #[error("date is in none of the accepted formats")]
    BadFormat,
    /// Well-formed but not a calendar date or month (2023-02-30, month 13).
    #[error("date is well-formed but does not exist in the calendar")]
    OutOfRange,
}

/// Width folding and whitespace removal, so `２０２３年 ３月 ５日` reads like `2023年3月5日`.
fn clean(raw: &str) -> String {
    raw.chars().map(fold_width_char).filter(|&c| !is_invisible(c)).collect()
}

/// A 4-digit year, month 1-2 digits, day 1-2 digits; `None` if the shape is wrong.
fn year(s: &str) -> Option<i32> {
    (s.len() == 4).then(|| ascii_number(s.as_bytes())).flatten().and_then(|y| i32::try_from(y).ok())
}

fn small(s: &str) -> Option<u32> {
    (1..=2).contains(&s.len()).then(|| ascii_number(s.as_bytes())).flatten()
}

/// Splits `s` on one separator that must be used consistently: `-`, `/` or `.`.
fn split_separated(s: &str) -> Option<Vec<&str>> {
    let sep = s.chars().find(|c| matches!(c, '-' | '/' | '.'))?;
    let parts: Vec<&str> = s.split(sep).collect();
    Some(parts)
}

/// (year, month, day) before range checks, or `None` if the shape matches no accepted format.
fn date_fields(s: &str) -> Option<(i32, u32, u32)> {
    if let Some((y, rest)) = s.split_once('年') {
        let (m, rest) = rest.split_once('月')?;
        let d = rest.strip_suffix('日').or_else(|| rest.strip_suffix('号'))?;
        return Some((year(y)?, small(m)?, small(d)?));
    }
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        let field = |r: std::ops::Range<usize>| s.get(r).map(str::as_bytes).and_then(ascii_number);
        return Some((i32::try_from(field(0..4)?).ok()?, field(4..6)?, field(6..8)?));
    }
    match split_separated(s)?.as_slice() {
        [y, m, d] => Some((year(y)?, small(m)?, small(d)?)),
        _ => None,
    }
}

/// (year, month) before range checks.
fn month_fields(s: &str) -> Option<(i32, u32)> {
    if let Some((y, rest)) = s.split_once('年') {
        let m = rest.strip_suffix('月')?;
        return Some((year(y)?, small(m)?));
    }
    if s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()) {
        let field = |r: std::ops::Range<usize>| s.get(r).map(str::as_bytes).and_then(ascii_number);
        return Some((i32::try_from(field(0..4)?).ok()?, field(4..6)?));
    }
    match split_separated(s)?.as_slice() {
        [y, m] => Some((year(y)?, small(m)?)),
        _ => None,
    }
}

/// Parses a date in any of the sources' formats: `YYYY-MM-DD`, `YYYYMMDD`, `YYYY/MM/DD`, `YYYY.MM.DD`,
/// `YYYY年M月D日` (also with `号`), with full-width digits and spaces allowed anywhere. Month and day may
/// have one digit in the separated forms (`2023-3-5`), as spreadsheets write them.
pub fn parse_date(raw: &str) -> Result<Date, DateError> {
    let s = clean(raw);
    if s.is_empty() {
        return Err(DateError::Empty);
    }
    let (y, m, d) = date_fields(&s).ok_or(DateError::BadFormat)?;
    calendar_date(y, m, d).ok_or(DateError::OutOfRange)
}

/// Parses a month (tax and contribution periods): `YYYY-MM`, `YYYYMM`, `YYYY/MM`, `YYYY.MM`, `YYYY年M月`.
/// Returns `(year, month)` with month in 1..=12.
pub fn parse_month(raw: &str) -> Result<(i32, u8), DateError> {
    let s = clean(raw);
    if s.is_empty() {
        return Err(DateError::Empty);
    }
    let (y, m) = month_fields(&s).ok_or(DateError::BadFormat)?;
    match u8::try_from(m) {
        Ok(m) if (1..=12).contains(&m) => Ok((y, m)),
        _ => Err(DateError::OutOfRange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::noise;
    use proptest::prelude::*;
    use time::macros::date;

    #[test]
    fn date_formats() {
        let d = date!(2023 - 03 - 05);
        for raw in [
            "2023-03-05",
            "20230305",
            "2023/03/05",
            "2023.03.05",
            "2023年3月5日",
            "2023年03月05日",
            "2023年3月5号",
            " 2023 年 3 月 5 日 ",
            "２０２３年３月５日",
            "２０２３－０３－０５",
            "2023-3-5",
            "2023/3/5",
        ] {
            assert_eq!(parse_date(raw), Ok(d), "{raw}");
        }
    }

    #[test]
    fn date_errors() {
        assert_eq!(parse_date(""), Err(DateError::Empty));
        assert_eq!(parse_date("2023-02-29"), Err(DateError::OutOfRange));
        assert_eq!(parse_date("20231301"), Err(DateError::OutOfRange));
        assert_eq!(parse_date("2023-00-10"), Err(DateError::OutOfRange));
        assert_eq!(parse_date("2023-03/05"), Err(DateError::BadFormat));
        assert_eq!(parse_date("23-03-05"), Err(DateError::BadFormat));
        assert_eq!(parse_date("2023-003-05"), Err(DateError::BadFormat));
        assert_eq!(parse_date("2023年3月"), Err(DateError::BadFormat));
        assert_eq!(parse_date("2023年3月5"), Err(DateError::BadFormat));
        assert_eq!(parse_date("2023-+3-05"), Err(DateError::BadFormat));
        assert_eq!(parse_date("2024-02-29"), Ok(date!(2024 - 02 - 29)));
    }

    #[test]
    fn months() {
        for raw in ["2023-07", "202307", "2023/07", "2023.7", "2023年7月", "２０２３年７月"] {
            assert_eq!(parse_month(raw), Ok((2023, 7)), "{raw}");
        }
        assert_eq!(parse_month("2023-13"), Err(DateError::OutOfRange));
        assert_eq!(parse_month("202300"), Err(DateError::OutOfRange));
        assert_eq!(parse_month("2023-07-01"), Err(DateError::BadFormat));
        assert_eq!(parse_month(" "), Err(DateError::Empty));
    }

    fn arb_date() -> impl Strategy<Value = Date> {
        let first = date!(1900 - 01 - 01).to_julian_day();
        let last = date!(2100 - 12 - 31).to_julian_day();
        (first..=last).prop_filter_map("date", |jd| Date::from_julian_day(jd).ok())
    }

    proptest! {
        #[test]
        fn prop_every_format_round_trips(d in arb_date(), full_width: bool) {
            let (y, m, day) = (d.year(), u8::from(d.month()), d.day());
            for s in [
                format!("{y:04}-{m:02}-{day:02}"),
                format!("{y:04}{m:02}{day:02}"),
                format!("{y:04}/{m:02}/{day:02}"),
                format!("{y:04}.{m:02}.{day:02}"),
                format!("{y:04}年{m}月{day}日"),
                format!("{y:04}-{m}-{day}"),
            ] {
                let s = if full_width { noise::to_full_width(&s) } else { s };
                prop_assert_eq!(parse_date(&s), Ok(d));
            }
            for s in [format!("{y:04}-{m:02}"), format!("{y:04}{m:02}"), format!("{y:04}年{m}月")] {
                let s = if full_width { noise::to_full_width(&s) } else { s };
                prop_assert_eq!(parse_month(&s), Ok((y, m)));
            }
        }

        #[test]
        fn prop_parse_never_panics(raw in any::<String>()) {
            let _ = parse_date(&raw);
            let _ = parse_month(&raw);
        }

        #[test]
        fn prop_parse_shaped_input(raw in "[0-9]{4}[-/.年][0-9]{1,2}[-/.月][0-9]{1,2}[日号]?") {
            let _ = parse_date(&raw);
        }
    }
}
