//! Display masking (GB/T 35273 展示限制).
//!
//! A requester whose purpose does not need the full identifier sees a masked one; masked forms are also
//! what the `Debug` impls of [`CitizenId`], [`Phone`] and suspect numbers print, so that identifiers
//! cannot reach logs in the clear by accident.

use super::citizen_id::CitizenId;
use super::name::{normalize_name, surname};
use super::phone::Phone;

/// At least this many characters stay hidden: the six of a legacy number's YYMMDD, so that a masked
/// number never gives away a birth date.
const MIN_HIDDEN: usize = 6;

/// Keeps the first `keep_head` and last `keep_tail` characters and stars the rest. Masks everything when
/// that would hide fewer than [`MIN_HIDDEN`] characters, because revealing 8 of 10 is not masking.
fn mask_middle(s: &str, keep_head: usize, keep_tail: usize) -> String {
    let n = s.chars().count();
    let hidden = n.saturating_sub(keep_head + keep_tail);
    if hidden < MIN_HIDDEN {
        return "*".repeat(n);
    }
    s.chars().enumerate().map(|(i, c)| if i < keep_head || i >= n - keep_tail { c } else { '*' }).collect()
}

/// `5323**********1234`: region prefix and last four kept, birth date and sequence hidden.
pub fn mask_citizen_id(id: &CitizenId) -> String {
    mask_middle(id.as_str(), 4, 4)
}

/// Masks any identifier-like string (a suspect or 15-digit ID number, a taxpayer number) the same way
/// as [`mask_citizen_id`]: first four and last four kept when at least six characters stay hidden, all
/// stars otherwise.
pub fn mask_identifier(s: &str) -> String {
    mask_middle(s, 4, 4)
}

/// `138****1234`; landlines keep the first three and last four as well (`075*****5678`).
pub fn mask_phone(p: &Phone) -> String {
    let s = p.as_str();
    let n = s.chars().count();
    // Even the shortest valid number (10 digits) hides three.
    s.chars().enumerate().map(|(i, c)| if i < 3 || i + 4 >= n { c } else { '*' }).collect()
}

/// `张*`, `欧阳**`: the surname stays, every other character of the normalised name becomes `*`. A name
/// that is only a surname is starred entirely.
pub fn mask_name(n: &str) -> String {
    let name = normalize_name(n);
    let total = name.chars().count();
    let keep = surname(&name);
    let kept = keep.chars().count();
    if kept >= total {
        return "*".repeat(total);
    }
    let mut out = String::with_capacity(name.len());
    out.push_str(keep);
    out.push_str(&"*".repeat(total - kept));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::strategies::arb_citizen_id;
    use crate::ident::{parse_citizen_id, parse_phone};
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert!(parse_citizen_id("53230119900307251X").is_ok_and(|p| p.is_valid()));
        let id = CitizenId::from_parts("532301", time::macros::date!(1990 - 03 - 07), 251);
        let id = id.unwrap_or_else(|| panic!("valid parts"));
        assert_eq!(mask_citizen_id(&id), "5323**********251X");
        let p = parse_phone("13812341234").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mask_phone(&p), "138****1234");
        let p = parse_phone("0755-12345678").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mask_phone(&p), "075*****5678");
        let p = parse_phone("010-1234567").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mask_phone(&p), "010***4567");
        assert_eq!(mask_name("张伟"), "张*");
        assert_eq!(mask_name("張 偉"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧阳**");
        assert_eq!(mask_name("李小龙"), "李**");
        assert_eq!(mask_name("张"), "*");
        assert_eq!(mask_name(""), "");
        assert_eq!(mask_identifier("110105491231002"), "1101*******1002");
        assert_eq!(mask_identifier("1234567890"), "**********");
    }

    proptest! {
        #[test]
        fn prop_citizen_id_mask_hides_the_middle(id in arb_citizen_id()) {
            let s = id.as_str();
            let masked = mask_citizen_id(&id);
            prop_assert_eq!(masked.len(), 18);
            prop_assert_eq!(&masked[..4], &s[..4]);
            prop_assert_eq!(&masked[14..], &s[14..]);
            prop_assert!(masked[4..14].bytes().all(|b| b == b'*'));
            prop_assert!(!masked.contains(&s[6..14]), "birth date visible");
            let debug = format!("{:?}", id);
            prop_assert!(!debug.contains(&s[6..14]));
        }

        #[test]
        fn prop_phone_mask_hides_the_middle(m in "1[3-9][0-9]{9}") {
            let p = parse_phone(&m).unwrap_or_else(|e| panic!("{e}"));
            let masked = mask_phone(&p);
            prop_assert_eq!(masked.clone(), format!("{}****{}", &m[..3], &m[7..]));
            let debug = format!("{:?}", p);
            prop_assert!(!debug.contains(&m[3..7]) || m[3..7] == m[7..]);
        }

        #[test]
        fn prop_mask_identifier_hides_at_least_six(s in any::<String>()) {
            let masked = mask_identifier(&s);
            let chars: Vec<char> = s.chars().collect();
            let n = chars.len();
            prop_assert_eq!(masked.chars().count(), n);
            if n >= 8 + MIN_HIDDEN {
                let expected: String = chars[..4].iter().copied()
                    .chain(std::iter::repeat_n('*', n - 8))
                    .chain(chars[n - 4..].iter().copied())
                    .collect();
                prop_assert_eq!(masked, expected);
            } else {
                prop_assert!(masked.chars().all(|c| c == '*'));
            }
        }

        #[test]
        fn prop_mask_name_keeps_only_the_surname(raw in any::<String>()) {
            let masked = mask_name(&raw);
            let name = normalize_name(&raw);
            prop_assert_eq!(masked.chars().count(), name.chars().count());
            let visible = masked.chars().filter(|&c| c != '*').count();
            prop_assert!(visible <= 2);
        }
    }
}
