//! Telephone numbers: mainland mobile numbers and landlines with area code.
//!
//! Education records guardians by phone more reliably than by ID number, so a normalised phone is a
//! useful secondary key for linking a child's enrolment to a worker.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{fold_width_char, is_dash, is_invisible};

/// A normalised phone number: digits only, no country code; 11 digits starting `1[3-9]` for mobiles, the
/// area code with its leading `0` followed by the local number for landlines.
///
/// `Debug` is masked because a phone number is personal data.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhoneKind {
    Mobile,
    Landline,
}

/// Why a string is not a usable phone number. Messages never include the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    /// `len` counts digits after removing separators and the country code.
    #[error("phone number has {len} digits, which fits neither a mobile nor a landline number")]
    BadLength { len: usize },
    /// `position` counts characters after removing separators (0-based).
    #[error("phone number has an invalid character at position {position} (after cleaning)")]
    BadCharacter { position: usize },
    /// Neither `1[3-9]` (mobile) nor `0` + area code (landline), or a foreign country code. A local
    /// landline number without its area code lands here: it cannot be linked without knowing the city.
    #[error("phone number has an unrecognised prefix (not a mainland mobile or a landline with area code)")]
    BadPrefix,
}

impl Phone {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn kind(&self) -> PhoneKind {
        if self.0.starts_with('1') {
            PhoneKind::Mobile
        } else {
            PhoneKind::Landline
        }
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", super::mask::mask_phone(self))
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> Self {
        p.0
    }
}

impl AsRef<str> for Phone {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Phone {
    type Err = PhoneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_phone(s)
    }
}

impl TryFrom<String> for Phone {
    type Error = PhoneError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        parse_phone(&s)
    }
}

fn is_separator(c: char) -> bool {
    is_invisible(c) || is_dash(c) || matches!(c, '(' | ')')
}

/// Parses a mainland phone number.
///
/// Accepts spaces, dashes, brackets around the area code and full-width digits; strips a `+86`, `0086` or
/// (for 13-digit mobiles) bare `86` country code. With an explicit country code the trunk `0` of a
/// landline is often dropped (`+86 10 12345678`), so it is restored. Extensions are not supported.
pub fn parse_phone(raw: &str) -> Result<Phone, PhoneError> {
    let cleaned: String = raw.chars().map(fold_width_char).filter(|&c| !is_separator(c)).collect();
    if cleaned.is_empty() {
        return Err(PhoneError::Empty);
    }
    let (mut digits, mut international) = match cleaned.strip_prefix('+') {
        Some(rest) => {
            if !rest.starts_with("86") {
                if let Some(position) = rest.chars().position(|c| !c.is_ascii_digit()) {
                    return Err(PhoneError::BadCharacter { position: position + 1 });
                }
                return Err(PhoneError::BadPrefix);
            }
            (rest.get(2..).unwrap_or(""), true)
        }
        None => (cleaned.as_str(), false),
    };
    if let Some(position) = digits.chars().position(|c| !c.is_ascii_digit()) {
        let offset = cleaned.chars().count() - digits.chars().count();
        return Err(PhoneError::BadCharacter { position: position + offset });
    }
    if !international {
        if let Some(rest) = digits.strip_prefix("0086") {
            digits = rest;
            international = true;
        } else if digits.len() == 13 && digits.starts_with("861") {
            digits = digits.get(2..).unwrap_or("");
        }
    }
    let len = digits.len();
    let bytes = digits.as_bytes();
    match bytes.first() {
        None => Err(PhoneError::BadLength { len: 0 }),
        Some(b'1') if len == 11 && matches!(bytes.get(1), Some(b'3'..=b'9')) => Ok(Phone(digits.to_owned())),
        // After a country code, `10…` is Beijing's area code without its trunk 0.
        Some(b'1') if international && len != 11 => landline(format!("0{digits}")),
        Some(b'1') if len != 11 => Err(PhoneError::BadLength { len }),
        Some(b'1') => Err(PhoneError::BadPrefix),
        Some(b'0') => landline(digits.to_owned()),
        Some(_) if international => landline(format!("0{digits}")),
        Some(_) => Err(PhoneError::BadPrefix),
    }
}

/// Area code `0` + 2 or 3 digits (010, 020-029 are the short ones) plus a 7- or 8-digit local number.
fn landline(digits: String) -> Result<Phone, PhoneError> {
    let len = digits.len();
    if digits.as_bytes().get(1) == Some(&b'0') {
        return Err(PhoneError::BadPrefix);
    }
    if (10..=12).contains(&len) {
        Ok(Phone(digits))
    } else {
        Err(PhoneError::BadLength { len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::noise;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ok(raw: &str) -> String {
        parse_phone(raw).map(Phone::into_string).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn mobiles() {
        for raw in [
            "13800138000",
            "138 0013 8000",
            "138-0013-8000",
            "+86 138 0013 8000",
            "+8613800138000",
            "0086 13800138000",
            "8613800138000",
            "１３８００１３８０００",
            "＋８６　１３８－００１３－８０００",
            "(+86) 138 0013 8000",
        ] {
            assert_eq!(ok(raw), "13800138000", "{raw}");
        }
        assert_eq!(parse_phone("13800138000").map(|p| p.kind()), Ok(PhoneKind::Mobile));
    }

    #[test]
    fn landlines() {
        assert_eq!(ok("010-12345678"), "01012345678");
        assert_eq!(ok("(0755)12345678"), "075512345678");
        assert_eq!(ok("（0871）6543210"), "08716543210");
        assert_eq!(ok("+86 10 12345678"), "01012345678");
        assert_eq!(ok("0086-755-12345678"), "075512345678");
        assert_eq!(parse_phone("010-12345678").map(|p| p.kind()), Ok(PhoneKind::Landline));
    }

    #[test]
    fn errors() {
        assert_eq!(parse_phone("  "), Err(PhoneError::Empty));
        assert_eq!(parse_phone("1380013800"), Err(PhoneError::BadLength { len: 10 }));
        assert_eq!(parse_phone("12800138000"), Err(PhoneError::BadPrefix));
        assert_eq!(parse_phone("12345678"), Err(PhoneError::BadLength { len: 8 }));
        assert_eq!(parse_phone("22345678"), Err(PhoneError::BadPrefix));
        assert_eq!(parse_phone("+1 415 555 0100"), Err(PhoneError::BadPrefix));
        assert_eq!(parse_phone("138001380o0"), Err(PhoneError::BadCharacter { position: 9 }));
        assert_eq!(parse_phone("+86138x"), Err(PhoneError::BadCharacter { position: 6 }));
        assert_eq!(parse_phone("0012345678"), Err(PhoneError::BadPrefix));
        assert_eq!(parse_phone("010123"), Err(PhoneError::BadLength { len: 6 }));
        assert!(!format!("{:?}", parse_phone("13800138000")).contains("0013"));
    }

    fn arb_mobile() -> impl Strategy<Value = String> {
        "1[3-9][0-9]{9}"
    }

    proptest! {
        #[test]
        fn prop_mobile_noise_round_trip(m in arb_mobile(), prefix in 0usize..4, seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let with_prefix = match prefix {
                0 => m.clone(),
                1 => format!("+86 {m}"),
                2 => format!("0086{m}"),
                _ => format!("86{m}"),
            };
            let noisy = noise::insert_stray_space(&noise::to_full_width(&with_prefix), &mut rng);
            prop_assert_eq!(parse_phone(&noisy).map(Phone::into_string), Ok(m));
        }

        #[test]
        fn prop_landline_round_trip(area in "010|02[0-9]|0[3-9][0-9]{2}", local in "[2-8][0-9]{6,7}") {
            let expected = format!("{area}{local}");
            prop_assert_eq!(parse_phone(&format!("{area}-{local}")).map(Phone::into_string), Ok(expected.clone()));
            prop_assert_eq!(parse_phone(&format!("({area}) {local}")).map(Phone::into_string), Ok(expected.clone()));
            let intl = format!("+86 {} {local}", area.trim_start_matches('0'));
            prop_assert_eq!(parse_phone(&intl).map(Phone::into_string), Ok(expected));
        }

        #[test]
        fn prop_parse_never_panics(raw in any::<String>()) {
            if let Ok(p) = parse_phone(&raw) {
                prop_assert!(p.as_str().bytes().all(|b| b.is_ascii_digit()));
                prop_assert_eq!(parse_phone(p.as_str()), Ok(p.clone()));
            }
        }
    }
}
