//! Unified social credit codes (统一社会信用代码, GB 32100-2015).
//!
//! The USCI is how industry-commerce, tax and social insurance agree on which employer a worker's
//! contributions and tax withholdings came from. Unlike a citizen ID it identifies an organisation, not a
//! person, so it is not masked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::clean_code;

/// The 31 code characters: digits and capitals without I, O, Z, S, V, which are too easily confused with
/// 1, 0, 2, 5 and U when read aloud or handwritten.
const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// GB 32100 weights, 3^(i-1) mod 31.
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// A USCI that passed the character set and check character tests; always 18 upper-case characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Usci(String);

/// Why a string is not a valid USCI. Messages never include the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsciError {
    #[error("unified social credit code is empty")]
    Empty,
    #[error("unified social credit code has {len} characters after cleaning, expected 18")]
    BadLength { len: usize },
    /// `position` counts characters of the cleaned string (0-based).
    #[error("unified social credit code has an invalid character at position {position} (after cleaning)")]
    BadCharacter { position: usize },
    #[error("unified social credit code has a wrong check character")]
    BadCheckCharacter,
}

fn code_value(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).and_then(|p| u32::try_from(p).ok())
}

/// GB 32100 check character for the first 17 characters; `None` if any of them is outside the code
/// alphabet (lower-case letters included — clean first).
pub fn usci_check_char(first17: &[u8; 17]) -> Option<u8> {
    let mut sum = 0u32;
    for (&c, w) in first17.iter().zip(WEIGHTS) {
        sum += code_value(c)? * w;
    }
    ALPHABET.get(((31 - sum % 31) % 31) as usize).copied()
}

/// Parses a USCI: trims, removes inner whitespace and dashes, folds full-width characters and upper-cases.
///
/// Look-alike letters (O for 0, I for 1) are reported as bad characters rather than repaired: repairing
/// them could turn one enterprise's code into another's.
pub fn parse_usci(raw: &str) -> Result<Usci, UsciError> {
    let cleaned = clean_code(raw);
    let len = cleaned.chars().count();
    if len == 0 {
        return Err(UsciError::Empty);
    }
    if len != 18 {
        return Err(UsciError::BadLength { len });
    }
    if let Some(position) = cleaned.chars().position(|c| !c.is_ascii() || code_value(c as u8).is_none()) {
        return Err(UsciError::BadCharacter { position });
    }
    let bytes = cleaned.as_bytes();
    let first17: Option<&[u8; 17]> = bytes.get(..17).and_then(|s| s.try_into().ok());
    let expected = first17.and_then(usci_check_char);
    if expected.is_none() || expected != bytes.get(17).copied() {
        return Err(UsciError::BadCheckCharacter);
    }
    Ok(Usci(cleaned))
}

impl Usci {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Registration authority (登记管理部门) code, position 1: e.g. `9` for market regulation (工商),
    /// `5` for civil affairs.
    pub fn registration_authority(&self) -> char {
        self.0.chars().next().unwrap_or('0')
    }

    /// Organisation category (机构类别) code, position 2: with authority `9`, `1` is an enterprise and
    /// `2` an individual business (个体工商户) — the distinction the workforce checks need.
    pub fn entity_category(&self) -> char {
        self.0.chars().nth(1).unwrap_or('0')
    }

    /// GB/T 2260 region code of the registering authority, positions 3-8.
    pub fn region_code(&self) -> &str {
        self.0.get(2..8).unwrap_or("")
    }

    /// The organisation code (组织机构代码) body, positions 9-17, which older records use as the key.
    pub fn organisation_code(&self) -> &str {
        self.0.get(8..17).unwrap_or("")
    }
}

impl fmt::Display for Usci {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Usci> for String {
    fn from(u: Usci) -> Self {
        u.0
    }
}

impl AsRef<str> for Usci {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Usci {
    type Err = UsciError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_usci(s)
    }
}

impl TryFrom<String> for Usci {
    type Error = UsciError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        parse_usci(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::noise;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const EXAMPLE: &str = "91350100M000100Y43";

    #[test]
    fn standard_example() {
        let u = parse_usci(EXAMPLE);
        assert_eq!(u.as_ref().map(Usci::as_str), Ok(EXAMPLE));
        let u = u.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.registration_authority(), '9');
        assert_eq!(u.entity_category(), '1');
        assert_eq!(u.region_code(), "350100");
        assert_eq!(u.organisation_code(), "M000100Y4");
        assert_eq!(usci_check_char(b"91350100M000100Y4"), Some(b'3'));
    }

    #[test]
    fn variants() {
        for raw in [
            " 91350100m000100y43 ",
            "9135 0100-M000 100Y 43",
            "９１３５０１００Ｍ０００１００Ｙ４３",
            "９１３５０１００ｍ０００１００ｙ４３",
        ] {
            assert_eq!(parse_usci(raw).map(Usci::into_string), Ok(EXAMPLE.to_owned()));
        }
    }

    #[test]
    fn errors() {
        assert_eq!(parse_usci(" "), Err(UsciError::Empty));
        assert_eq!(parse_usci("91350100M000100Y4"), Err(UsciError::BadLength { len: 17 }));
        assert_eq!(parse_usci("91350100M000100Y44"), Err(UsciError::BadCheckCharacter));
        assert_eq!(parse_usci("91350100MO00100Y43"), Err(UsciError::BadCharacter { position: 9 }));
        assert_eq!(parse_usci("I1350100M000100Y43"), Err(UsciError::BadCharacter { position: 0 }));
        assert_eq!(parse_usci("91350100M000100Y4张"), Err(UsciError::BadCharacter { position: 17 }));
        assert_eq!(usci_check_char(b"91350100m000100Y4"), None);
        let msg = parse_usci("91350100M000100Y44").map_err(|e| e.to_string());
        assert!(!msg.err().unwrap_or_default().contains("350100"));
    }

    #[test]
    fn serde_round_trip() {
        let json = serde_json::to_string(&parse_usci(EXAMPLE).ok()).unwrap_or_default();
        assert_eq!(json, format!("\"{EXAMPLE}\""));
        let back: Result<Usci, _> = serde_json::from_str(&json);
        assert_eq!(back.ok().map(Usci::into_string), Some(EXAMPLE.to_owned()));
        assert!(serde_json::from_str::<Usci>("\"91350100M000100Y44\"").is_err());
    }

    fn arb_first17() -> impl Strategy<Value = [u8; 17]> {
        proptest::array::uniform17(proptest::sample::select(ALPHABET.to_vec()))
    }

    proptest! {
        #[test]
        fn prop_check_char_round_trip(first17 in arb_first17(), seed: u64) {
            let check = usci_check_char(&first17);
            prop_assert!(check.is_some());
            let mut code: String = first17.iter().map(|&b| char::from(b)).collect();
            code.push(char::from(check.unwrap_or(b'0')));
            let parsed = parse_usci(&code);
            prop_assert_eq!(parsed.as_ref().map(Usci::as_str), Ok(code.as_str()));
            // Identity-preserving noise.
            let mut rng = StdRng::seed_from_u64(seed);
            let noisy = noise::insert_stray_space(&noise::to_full_width(&code.to_lowercase()), &mut rng);
            prop_assert_eq!(parse_usci(&noisy).map(Usci::into_string), Ok(code.clone()));
            // Every other last character fails.
            for &other in ALPHABET.iter().filter(|&&c| Some(c) != check) {
                let mut wrong = code.clone();
                wrong.pop();
                wrong.push(char::from(other));
                prop_assert_eq!(parse_usci(&wrong), Err(UsciError::BadCheckCharacter));
            }
        }

        #[test]
        fn prop_parse_never_panics(raw in any::<String>()) {
            let _ = parse_usci(&raw);
        }

        #[test]
        fn prop_parse_shaped_input(raw in "[0-9A-Za-z]{18}") {
            if let Ok(u) = parse_usci(&raw) {
                prop_assert_eq!(u.as_str(), raw.to_ascii_uppercase());
            }
        }
    }
}
