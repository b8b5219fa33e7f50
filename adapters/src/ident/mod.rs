//! Identifier normalisation shared by the department adapters, the synthetic data generator and the
//! gateway's identity resolver.
//!
//! Every department keys a worker by some identifier, and every department's copy of it is dirty in its
//! own way: full-width digits typed with a Chinese input method, stray spaces from Excel exports,
//! lower-case `x`, 15-digit numbers from before 1999, traditional characters from Hong Kong/Taiwan-era
//! systems. Record linkage only works if all of them agree on one canonical form, so every normaliser
//! lives here and nowhere else.
//!
//! Two rules hold throughout:
//! - nothing is silently corrected: a number whose check character fails stays distinguishable from a
//!   valid one ([`citizen_id::ParsedCitizenId::Suspect`]) so the resolver can score it as weaker evidence;
//! - no error message or `Debug` output repeats the identifier, because errors and debug output end up in
//!   logs, and logs must not hold personal data (GB/T 35273, PIPL).

pub mod citizen_id;
pub mod date;
mod hanzi;
pub mod mask;
pub mod name;
pub mod noise;
pub mod phone;
pub mod usci;

pub use citizen_id::{
    check_char, id_distance, parse_citizen_id, upgrade_15_to_18, CitizenId, CitizenIdError, IdDistance,
    ParsedCitizenId, Sex, SuspectCitizenId, SuspectReason,
};
pub use date::{parse_date, parse_month, DateError};
pub use mask::{mask_citizen_id, mask_identifier, mask_name, mask_phone};
pub use name::{name_similarity, normalize_name, surname};
pub use phone::{parse_phone, Phone, PhoneError, PhoneKind};
pub use usci::{parse_usci, usci_check_char, Usci, UsciError};

/// Folds one full-width ASCII-range character (U+FF01..=U+FF5E) and the ideographic space to its
/// half-width form.
///
/// Chinese input methods produce full-width digits and letters whenever the user forgot to switch
/// modes, so every source contains some; CJK characters are left alone.
pub fn fold_width_char(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// Folds every full-width ASCII-range character in `s` to half-width; see [`fold_width_char`].
pub fn fold_width(s: &str) -> String {
    s.chars().map(fold_width_char).collect()
}

/// Characters that carry no content but survive copy-paste from web forms and Word documents
/// (zero-width spaces, joiners, byte-order marks, soft hyphens); treated like whitespace.
pub(crate) fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}')
}

/// Dashes people type to group the digits of a number; none of them is ever part of an identifier.
pub(crate) fn is_dash(c: char) -> bool {
    matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{30FC}')
}

/// The shared cleaning step for code-like identifiers (citizen ID, USCI): width folding, removal of
/// whitespace, invisible characters and dashes, and ASCII upper-casing.
///
/// Removing inner separators rather than rejecting them is safe because neither identifier contains a
/// separator, so no two distinct identifiers clean to the same string.
pub(crate) fn clean_code(raw: &str) -> String {
    raw.chars()
        .map(fold_width_char)
        .filter(|&c| !is_invisible(c) && !is_dash(c))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Parses an all-ASCII-digit slice as a number; `None` for anything else, including an empty slice.
pub(crate) fn ascii_number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(
        0u32,
        |acc, &b| {
            if b.is_ascii_digit() {
                Some(acc * 10 + u32::from(b - b'0'))
            } else {
                None
            }
        },
    )
}

/// A real Gregorian calendar date, or `None`.
pub(crate) fn calendar_date(year: i32, month: u32, day: u32) -> Option<time::Date> {
    let month = u8::try_from(month).ok()?;
    let month = time::Month::try_from(month).ok()?;
    let day = u8::try_from(day).ok()?;
    time::Date::from_calendar_date(year, month, day).ok()
}

/// Proptest strategies shared by the submodules' tests.
#[cfg(test)]
pub(crate) mod strategies {
    use super::CitizenId;
    use proptest::prelude::*;
    use time::macros::date;
    use time::Date;

    /// Any valid citizen ID, spread over the whole accepted date range.
    pub(crate) fn arb_citizen_id() -> impl Strategy<Value = CitizenId> {
        let first = date!(1900 - 01 - 01).to_julian_day();
        let last = date!(2100 - 12 - 31).to_julian_day();
        ("[1-8][0-9]{5}", first..=last, 0u16..1000).prop_filter_map("valid parts", |(region, jd, seq)| {
            let birth = Date::from_julian_day(jd).ok()?;
            CitizenId::from_parts(&region, birth, seq)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_folding_covers_digits_letters_and_space() {
        assert_eq!(fold_width("１２３ＡＢｘ\u{3000}"), "123ABx ");
        assert_eq!(fold_width("张伟"), "张伟");
    }

    #[test]
    fn clean_code_strips_separators() {
        assert_eq!(clean_code(" 1101-05 1949\u{200B}1231—002x "), "11010519491231002X");
    }

    #[test]
    fn ascii_number_rejects_non_digits() {
        assert_eq!(ascii_number(b"0042"), Some(42));
        assert_eq!(ascii_number(b""), None);
        assert_eq!(ascii_number(b"4x"), None);
    }
}
