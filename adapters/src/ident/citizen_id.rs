//! Resident identity card numbers (公民身份号码, GB 11643-1999).
//!
//! The citizen ID number is the join key between public security, tax, social insurance and education,
//! so the resolver needs three things from this module: one canonical spelling for every valid number,
//! a way to keep numbers that *look* like IDs but fail validation (they are usually typos of a real
//! number and still carry evidence), and a cheap classification of how two numbers differ.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::Date;

use super::{ascii_number, calendar_date, clean_code};

/// GB 11643 weights, 2^(17-i) mod 11 for positions 1..=17.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character indexed by the weighted sum mod 11.
const CHECK_CHARS: [u8; 11] = *b"10X98765432";
/// Birth years accepted in an 18-digit number: nobody born before 1900 is still alive to be registered,
/// and a year past 2100 can only be a typo. No "not in the future" test is made because the answer would
/// depend on the clock and make parsing impure.
const MIN_YEAR: i32 = 1900;
const MAX_YEAR: i32 = 2100;

/// A citizen ID number that passed every check: 18 characters, 17 ASCII digits plus a digit or upper-case
/// `X`, a real birth date in 1900..=2100 and a correct check character.
///
/// The only ways to get one are [`parse_citizen_id`], [`upgrade_15_to_18`], [`CitizenId::from_parts`] and
/// the strict conversions (`FromStr`, `TryFrom<String>`, serde), so holding one is proof of validity.
/// `Debug` is masked so a stray `{:?}` in a log line cannot leak the number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CitizenId(String);

/// Sex as encoded by the parity of the sequence number (odd = male, even = female).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sex {
    Male,
    Female,
}

/// The outcome of parsing something that has the shape of a citizen ID number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedCitizenId {
    Valid(CitizenId),
    Suspect(SuspectCitizenId),
}

/// A string with the shape of a citizen ID number that failed validation.
///
/// Kept rather than rejected because a mistyped ID is still strong evidence of identity once the
/// resolver has scored it (see [`id_distance`]); kept *separate* from [`CitizenId`] because it must never
/// be mistaken for, or silently corrected into, a valid number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SuspectCitizenId {
    /// The input after cleaning (width folding, separators removed, upper-case `X`): 18 or 15 characters.
    pub cleaned: String,
    pub reason: SuspectReason,
}

/// Why a well-shaped number is only suspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SuspectReason {
    /// 18 characters with a real birth date but the wrong check character: typically one mistyped or two
    /// transposed digits.
    BadCheckCharacter,
    /// A 15-digit legacy number whose YYMMDD is not a real date, so it cannot be upgraded.
    ImpossibleDate,
    /// 18 characters where both the birth date and the check character are wrong — what a typo inside the
    /// date field produces.
    ImpossibleDateAndBadCheckCharacter,
}

impl fmt::Display for SuspectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadCheckCharacter => "wrong check character",
            Self::ImpossibleDate => "impossible birth date",
            Self::ImpossibleDateAndBadCheckCharacter => "impossible birth date and wrong check character",
        })
    }
}

/// Why a string is not a citizen ID number at all. Messages never include the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CitizenIdError {
    #[error("citizen ID number is empty")]
    Empty,
    #[error("citizen ID number has {len} characters after cleaning, expected 15 or 18")]
    BadLength { len: usize },
    /// `position` counts characters of the cleaned string (0-based).
    #[error("citizen ID number has an invalid character at position {position} (after cleaning)")]
    BadCharacter { position: usize },
    /// The check character is right, so the digits are as the issuer wrote them, yet the birth date is
    /// impossible: a fabricated or test number rather than a typo of a real one.
    #[error("citizen ID number has a correct check character but an impossible birth date")]
    BadDate,
    /// Only from the strict conversions (`FromStr`, `TryFrom<String>`, serde), which must not produce a
    /// [`SuspectCitizenId`]; [`parse_citizen_id`] returns `Ok(Suspect(..))` instead.
    #[error("citizen ID number is suspect: {reason}")]
    Suspect { reason: SuspectReason },
}

/// How two identifier strings differ, for scoring a mistyped ID against a known one.
///
/// Single substitutions and adjacent transpositions are the two errors people make when copying a number,
/// and GB 11643's check character detects both, so these are the cases worth singling out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdDistance {
    Same,
    OneSubstitution,
    AdjacentTransposition,
    Other,
}

impl CitizenId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn birth_date(&self) -> Date {
        // Validity was established at construction; the fallback is unreachable and exists only so that
        // no code path can panic.
        birth_date_18(self.0.as_bytes()).unwrap_or(Date::MIN)
    }

    pub fn sex(&self) -> Sex {
        match self.0.as_bytes().get(16) {
            Some(d) if d.wrapping_sub(b'0') % 2 == 1 => Sex::Male,
            _ => Sex::Female,
        }
    }

    /// The GB/T 2260 address code of the place of first registration (not necessarily the current hukou).
    pub fn region_code(&self) -> &str {
        self.0.get(..6).unwrap_or("")
    }

    /// The 3-digit sequence number (positions 15-17), which encodes sex by parity.
    pub fn sequence(&self) -> u16 {
        self.0.as_bytes().get(14..17).and_then(ascii_number).and_then(|n| u16::try_from(n).ok()).unwrap_or(0)
    }

    /// Builds a valid number from its parts, computing the check character.
    ///
    /// For the synthetic data generator, which must never emit an ID that fails validation by accident.
    /// `None` when `region_code` is not 6 ASCII digits, the year is outside 1900..=2100 or
    /// `sequence > 999`.
    pub fn from_parts(region_code: &str, birth_date: Date, sequence: u16) -> Option<Self> {
        if region_code.len() != 6 || !region_code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !(MIN_YEAR..=MAX_YEAR).contains(&birth_date.year()) || sequence > 999 {
            return None;
        }
        let first17 = format!(
            "{region_code}{:04}{:02}{:02}{sequence:03}",
            birth_date.year(),
            u8::from(birth_date.month()),
            birth_date.day()
        );
        let bytes: [u8; 17] = first17.as_bytes().try_into().ok()?;
        let mut s = first17;
        s.push(char::from(check_char(&bytes)));
        Some(Self(s))
    }
}

impl fmt::Debug for CitizenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CitizenId({})", super::mask::mask_identifier(&self.0))
    }
}

impl fmt::Debug for SuspectCitizenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuspectCitizenId")
            .field("cleaned", &super::mask::mask_identifier(&self.cleaned))
            .field("reason", &self.reason)
            .finish()
    }
}

impl From<CitizenId> for String {
    fn from(id: CitizenId) -> Self {
        id.0
    }
}

impl AsRef<str> for CitizenId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for CitizenId {
    type Err = CitizenIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_citizen_id(s)? {
            ParsedCitizenId::Valid(id) => Ok(id),
            ParsedCitizenId::Suspect(s) => Err(CitizenIdError::Suspect { reason: s.reason }),
        }
    }
}

impl TryFrom<String> for CitizenId {
    type Error = CitizenIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl ParsedCitizenId {
    pub fn valid(&self) -> Option<&CitizenId> {
        match self {
            Self::Valid(id) => Some(id),
            Self::Suspect(_) => None,
        }
    }

    pub fn into_valid(self) -> Option<CitizenId> {
        match self {
            Self::Valid(id) => Some(id),
            Self::Suspect(_) => None,
        }
    }

    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid(_))
    }

    /// The cleaned string in either case, for indexing suspects next to valid numbers.
    pub fn cleaned(&self) -> &str {
        match self {
            Self::Valid(id) => id.as_str(),
            Self::Suspect(s) => &s.cleaned,
        }
    }
}

/// GB 11643 check character for 17 ASCII digits.
///
/// Bytes other than ASCII digits give a meaningless (but deterministic, panic-free) result; validate first.
pub fn check_char(first17: &[u8; 17]) -> u8 {
    let sum: u32 = first17.iter().zip(WEIGHTS).map(|(&b, w)| u32::from(b.wrapping_sub(b'0')) * w).sum();
    CHECK_CHARS.get((sum % 11) as usize).copied().unwrap_or(b'0')
}

/// The birth date of an 18-character number if it is a real date within the accepted years.
fn birth_date_18(bytes: &[u8]) -> Option<Date> {
    let year = i32::try_from(ascii_number(bytes.get(6..10)?)?).ok()?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return None;
    }
    calendar_date(year, ascii_number(bytes.get(10..12)?)?, ascii_number(bytes.get(12..14)?)?)
}

/// Upgrades 15 ASCII digits (already cleaned) to an 18-digit ID; `None` if the YYMMDD is impossible.
fn upgrade_cleaned_15(cleaned: &str) -> Option<CitizenId> {
    let b = cleaned.as_bytes();
    if b.len() != 15 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut first17 = [0u8; 17];
    first17.get_mut(..6)?.copy_from_slice(b.get(..6)?);
    first17.get_mut(6..8)?.copy_from_slice(b"19");
    first17.get_mut(8..17)?.copy_from_slice(b.get(6..15)?);
    birth_date_18(&first17)?;
    let mut s: String = first17.iter().map(|&c| char::from(c)).collect();
    s.push(char::from(check_char(&first17)));
    Some(CitizenId(s))
}

/// Upgrades a legacy 15-digit number (pre-1999 cards, still the key of old social-insurance records):
/// "19" goes before the 2-digit year and the check character is appended. The input is cleaned like
/// [`parse_citizen_id`]'s; `None` unless it is then 15 digits with a real date.
pub fn upgrade_15_to_18(raw15: &str) -> Option<CitizenId> {
    upgrade_cleaned_15(&clean_code(raw15))
}

/// Parses a citizen ID number as it appears in the sources.
///
/// Cleaning: surrounding and inner whitespace and dashes are removed, full-width digits and letters are
/// folded, `x` is upper-cased. A valid 15-digit number is upgraded to 18 digits so that both generations
/// of a person's number index to the same key.
///
/// Results:
/// - `Ok(Valid)`: passes every check;
/// - `Ok(Suspect)`: right shape, but the check character fails or the birth date is impossible — the
///   pattern typing errors produce; never corrected;
/// - `Err`: not a citizen ID number (empty, wrong length, a character that cannot occur, or an impossible
///   date under a *correct* check character, i.e. a number nobody issued).
pub fn parse_citizen_id(raw: &str) -> Result<ParsedCitizenId, CitizenIdError> {
    let cleaned = clean_code(raw);
    let len = cleaned.chars().count();
    if len == 0 {
        return Err(CitizenIdError::Empty);
    }
    if len != 15 && len != 18 {
        return Err(CitizenIdError::BadLength { len });
    }
    for (position, c) in cleaned.chars().enumerate() {
        let allowed = c.is_ascii_digit() || (len == 18 && position == 17 && c == 'X');
        if !allowed {
            return Err(CitizenIdError::BadCharacter { position });
        }
    }
    if len == 15 {
        return Ok(match upgrade_cleaned_15(&cleaned) {
            Some(id) => ParsedCitizenId::Valid(id),
            None => {
                ParsedCitizenId::Suspect(SuspectCitizenId { cleaned, reason: SuspectReason::ImpossibleDate })
            }
        });
    }
    let bytes = cleaned.as_bytes();
    let first17: Option<&[u8; 17]> = bytes.get(..17).and_then(|s| s.try_into().ok());
    let check_ok = match (first17, bytes.get(17)) {
        (Some(first17), Some(&last)) => check_char(first17) == last,
        _ => false,
    };
    let date_ok = birth_date_18(bytes).is_some();
    let reason = match (date_ok, check_ok) {
        (true, true) => return Ok(ParsedCitizenId::Valid(CitizenId(cleaned))),
        (false, true) => return Err(CitizenIdError::BadDate),
        (true, false) => SuspectReason::BadCheckCharacter,
        (false, false) => SuspectReason::ImpossibleDateAndBadCheckCharacter,
    };
    Ok(ParsedCitizenId::Suspect(SuspectCitizenId { cleaned, reason }))
}

/// Classifies how two identifier strings differ, character by character.
///
/// Meant for canonical strings (compare a suspect's `cleaned` with a valid number's `as_str`); strings of
/// different lengths are `Other`, so upgrade 15-digit numbers first.
pub fn id_distance(a: &str, b: &str) -> IdDistance {
    if a == b {
        return IdDistance::Same;
    }
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() != b.len() {
        return IdDistance::Other;
    }
    let diffs: Vec<usize> =
        a.iter().zip(&b).enumerate().filter(|(_, (x, y))| x != y).map(|(i, _)| i).take(3).collect();
    match diffs.as_slice() {
        [_] => IdDistance::OneSubstitution,
        [i, j] if *j == i + 1 && a.get(*i) == b.get(*j) && a.get(*j) == b.get(*i) => {
            IdDistance::AdjacentTransposition
        }
        _ => IdDistance::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::noise;
    use crate::ident::strategies::arb_citizen_id;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use time::macros::date;

    const EXAMPLE: &str = "11010519491231002X";

    fn valid(raw: &str) -> CitizenId {
        match parse_citizen_id(raw) {
            Ok(ParsedCitizenId::Valid(id)) => id,
            other => panic!("expected valid, got {other:?}"),
        }
    }

    #[test]
    fn standard_example_is_valid() {
        let id = valid(EXAMPLE);
        assert_eq!(id.as_str(), EXAMPLE);
        assert_eq!(id.birth_date(), date!(1949 - 12 - 31));
        assert_eq!(id.sex(), Sex::Female);
        assert_eq!(id.region_code(), "110105");
        assert_eq!(id.sequence(), 2);
        let first17: [u8; 17] = *b"11010519491231002";
        assert_eq!(check_char(&first17), b'X');
    }

    #[test]
    fn other_known_numbers() {
        // Check characters computed independently from the GB 11643 weights.
        assert_eq!(valid("110105194912310038").sex(), Sex::Male);
        assert_eq!(valid("440524198001010013").birth_date(), date!(1980 - 01 - 01));
        assert_eq!(valid("53230119900307251X").region_code(), "532301");
        assert_eq!(valid("51010420100228146x").as_str(), "51010420100228146X");
    }

    #[test]
    fn variants_normalise_to_the_same_id() {
        let canonical = valid(EXAMPLE);
        for raw in [
            "11010519491231002x",
            " 110105 19491231 002X ",
            "110105-19491231-002x",
            "１１０１０５１９４９１２３１００２Ｘ",
            "１１０１０５１９４９１２３１００２ｘ",
            "\u{3000}110105\u{3000}19491231002X\u{FEFF}",
        ] {
            assert_eq!(valid(raw), canonical, "variant failed");
        }
    }

    #[test]
    fn fifteen_digit_upgrades() {
        let id = valid("110105491231002");
        assert_eq!(id.as_str(), EXAMPLE);
        assert_eq!(upgrade_15_to_18("110105491231002"), Some(id));
        assert_eq!(upgrade_15_to_18("11010549123100"), None);
        assert_eq!(upgrade_15_to_18("110105491331002"), None);
    }

    #[test]
    fn wrong_check_char_is_suspect_not_valid() {
        match parse_citizen_id("110105194912310021") {
            Ok(ParsedCitizenId::Suspect(s)) => {
                assert_eq!(s.cleaned, "110105194912310021");
                assert_eq!(s.reason, SuspectReason::BadCheckCharacter);
            }
            other => panic!("expected suspect, got {other:?}"),
        }
        assert!(CitizenId::from_str("110105194912310021").is_err());
    }

    #[test]
    fn impossible_dates() {
        // 15-digit with month 13: cannot be upgraded, kept as suspect.
        match parse_citizen_id("110105491331002") {
            Ok(ParsedCitizenId::Suspect(s)) => {
                assert_eq!(s.reason, SuspectReason::ImpossibleDate);
                assert_eq!(s.cleaned.len(), 15);
            }
            other => panic!("expected suspect, got {other:?}"),
        }
        // 18-digit, February 30th, correct check character: nobody issued this.
        let mut first17 = *b"11010519490230002";
        let c = check_char(&first17);
        let good: String = first17.iter().chain([c].iter()).map(|&b| char::from(b)).collect();
        assert_eq!(parse_citizen_id(&good), Err(CitizenIdError::BadDate));
        // Same with a wrong check character: looks like a typo.
        first17[16] = b'3';
        let bad: String = first17.iter().chain([c].iter()).map(|&b| char::from(b)).collect();
        match parse_citizen_id(&bad) {
            Ok(ParsedCitizenId::Suspect(s)) => {
                assert_eq!(s.reason, SuspectReason::ImpossibleDateAndBadCheckCharacter)
            }
            other => panic!("expected suspect, got {other:?}"),
        }
        // Year out of range.
        let mut y1899 = *b"11010518991231002";
        let c = check_char(&y1899);
        y1899[0] = b'1';
        let s: String = y1899.iter().chain([c].iter()).map(|&b| char::from(b)).collect();
        assert_eq!(parse_citizen_id(&s), Err(CitizenIdError::BadDate));
    }

    #[test]
    fn errors() {
        assert_eq!(parse_citizen_id(""), Err(CitizenIdError::Empty));
        assert_eq!(parse_citizen_id(" \t- "), Err(CitizenIdError::Empty));
        assert_eq!(parse_citizen_id("1234"), Err(CitizenIdError::BadLength { len: 4 }));
        assert_eq!(
            parse_citizen_id("1101051949123100X2"),
            Err(CitizenIdError::BadCharacter { position: 16 })
        );
        assert_eq!(parse_citizen_id("11010549123100X"), Err(CitizenIdError::BadCharacter { position: 14 }));
        assert_eq!(
            parse_citizen_id("11010519491231002Y"),
            Err(CitizenIdError::BadCharacter { position: 17 })
        );
    }

    #[test]
    fn errors_and_debug_do_not_echo_the_number() {
        let raws = ["1101051949123100X2", "110105194912310021", "12345678901", "11010519490230002X"];
        for raw in raws {
            let rendered = match parse_citizen_id(raw) {
                Ok(p) => format!("{p:?}"),
                Err(e) => format!("{e} {e:?}"),
            };
            assert!(!rendered.contains("0519491"), "leaked digits: {rendered}");
            assert!(!rendered.contains("5678"), "leaked digits: {rendered}");
        }
        assert!(!format!("{:?}", valid(EXAMPLE)).contains("19491231"));
    }

    #[test]
    fn from_parts_and_serde() {
        let id = CitizenId::from_parts("110105", date!(1949 - 12 - 31), 2);
        assert_eq!(id.as_ref().map(CitizenId::as_str), Some(EXAMPLE));
        assert_eq!(CitizenId::from_parts("11010", date!(1949 - 12 - 31), 2), None);
        assert_eq!(CitizenId::from_parts("110105", date!(1899 - 12 - 31), 2), None);
        assert_eq!(CitizenId::from_parts("110105", date!(1949 - 12 - 31), 1000), None);
        let json = serde_json::to_string(&valid(EXAMPLE)).unwrap_or_default();
        assert_eq!(json, format!("\"{EXAMPLE}\""));
        let back: Result<CitizenId, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(valid(EXAMPLE)));
        let bad: Result<CitizenId, _> = serde_json::from_str("\"110105194912310021\"");
        assert!(bad.is_err());
    }

    #[test]
    fn distance_examples() {
        assert_eq!(id_distance(EXAMPLE, EXAMPLE), IdDistance::Same);
        assert_eq!(id_distance(EXAMPLE, "11010519491231003X"), IdDistance::OneSubstitution);
        assert_eq!(id_distance(EXAMPLE, "11010519492131002X"), IdDistance::AdjacentTransposition);
        assert_eq!(id_distance(EXAMPLE, "11010519492131003X"), IdDistance::Other);
        assert_eq!(id_distance(EXAMPLE, "110105491231002"), IdDistance::Other);
        assert_eq!(id_distance("12", "21"), IdDistance::AdjacentTransposition);
        assert_eq!(id_distance("123", "321"), IdDistance::Other);
    }

    fn parses_to(raw: &str, id: &CitizenId) -> bool {
        matches!(parse_citizen_id(raw), Ok(ParsedCitizenId::Valid(ref p)) if p == id)
    }

    proptest! {
        #[test]
        fn prop_generated_ids_are_valid(id in arb_citizen_id()) {
            prop_assert!(parses_to(id.as_str(), &id));
            prop_assert_eq!(id.as_str().len(), 18);
            let first17: [u8; 17] = id.as_str().as_bytes()[..17].try_into().unwrap();
            prop_assert_eq!(check_char(&first17), id.as_str().as_bytes()[17]);
        }

        #[test]
        fn prop_identity_preserving_noise_parses_back(id in arb_citizen_id(), seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            prop_assert!(parses_to(&noise::to_full_width(id.as_str()), &id));
            prop_assert!(parses_to(&noise::lowercase_x(id.as_str()), &id));
            let spaced = noise::insert_stray_space(id.as_str(), &mut rng);
            prop_assert!(parses_to(&spaced, &id));
            let all = noise::to_full_width(&noise::insert_stray_space(
                &noise::lowercase_x(id.as_str()), &mut rng));
            prop_assert!(parses_to(&all, &id));
            match noise::to_legacy_15(&id) {
                Some(legacy) => {
                    prop_assert!((1900..=1999).contains(&id.birth_date().year()));
                    prop_assert_eq!(legacy.len(), 15);
                    prop_assert!(parses_to(&legacy, &id));
                    prop_assert_eq!(upgrade_15_to_18(&legacy), Some(id.clone()));
                }
                None => prop_assert!(id.birth_date().year() >= 2000),
            }
        }

        #[test]
        fn prop_substitution_is_caught(id in arb_citizen_id(), seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let typo = noise::substitute_one_digit(id.as_str(), &mut rng);
            prop_assert_eq!(id_distance(&typo, id.as_str()), IdDistance::OneSubstitution);
            prop_assert_eq!(id_distance(id.as_str(), &typo), IdDistance::OneSubstitution);
            match parse_citizen_id(&typo) {
                Ok(ParsedCitizenId::Suspect(s)) => prop_assert_eq!(s.cleaned, typo),
                Ok(ParsedCitizenId::Valid(other)) => prop_assert_ne!(other, id),
                Err(e) => prop_assert!(false, "typo rejected outright: {e}"),
            }
        }

        #[test]
        fn prop_transposition_is_caught(id in arb_citizen_id(), seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let typo = noise::transpose_adjacent_digits(id.as_str(), &mut rng);
            prop_assume!(typo != id.as_str());
            prop_assert_eq!(id_distance(&typo, id.as_str()), IdDistance::AdjacentTransposition);
            match parse_citizen_id(&typo) {
                Ok(ParsedCitizenId::Suspect(s)) => prop_assert_eq!(s.cleaned, typo),
                Ok(ParsedCitizenId::Valid(other)) => prop_assert_ne!(other, id),
                Err(e) => prop_assert!(false, "typo rejected outright: {e}"),
            }
        }

        #[test]
        fn prop_two_substitutions_are_other(id in arb_citizen_id(), seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let once = noise::substitute_one_digit(id.as_str(), &mut rng);
            let twice = noise::substitute_one_digit(&once, &mut rng);
            let d = id_distance(id.as_str(), &twice);
            let diffs = id.as_str().bytes().zip(twice.bytes()).filter(|(a, b)| a != b).count();
            match diffs {
                0 => prop_assert_eq!(d, IdDistance::Same),
                1 => prop_assert_eq!(d, IdDistance::OneSubstitution),
                _ => prop_assert!(matches!(d, IdDistance::Other | IdDistance::AdjacentTransposition)),
            }
        }

        #[test]
        fn prop_parse_never_panics(raw in any::<String>()) {
            let _ = parse_citizen_id(&raw);
            let _ = upgrade_15_to_18(&raw);
        }

        #[test]
        fn prop_parse_shaped_input(raw in "[0-9]{17}[0-9Xx]|[0-9]{15}") {
            match parse_citizen_id(&raw) {
                Ok(ParsedCitizenId::Valid(id)) => {
                    prop_assert_eq!(id.as_str().len(), 18);
                    prop_assert!(parses_to(id.as_str(), &id));
                }
                Ok(ParsedCitizenId::Suspect(s)) => {
                    prop_assert_eq!(s.cleaned, raw.to_ascii_uppercase());
                }
                Err(e) => prop_assert_eq!(e, CitizenIdError::BadDate),
            }
        }
    }
}
