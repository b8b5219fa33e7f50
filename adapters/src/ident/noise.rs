//! Realistic corruption of identifiers for the synthetic data generator.
//!
//! Every function mimics one way real records go wrong, so that the generated departments disagree with
//! each other the way real ones do and the resolver is tested against the errors it will meet. Functions
//! that *preserve* identity (width, spaces, case, legacy 15-digit form, script) must round-trip through
//! the parsers; those that *change* it (digit typos, homophones) must be caught by them — the property
//! tests in the sibling modules hold both to that.

use rand::Rng;

use super::citizen_id::CitizenId;
use super::hanzi;
use super::name::surname;

/// Swaps two adjacent, different ASCII digits at a random place — the commonest copying error. Returns
/// the input unchanged when there is no such pair (the check `X` is never moved).
pub fn transpose_adjacent_digits(id: &str, rng: &mut impl Rng) -> String {
    let mut chars: Vec<char> = id.chars().collect();
    let candidates: Vec<usize> = chars
        .windows(2)
        .enumerate()
        .filter(|(_, w)| matches!(w, [a, b] if a.is_ascii_digit() && b.is_ascii_digit() && a != b))
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return id.to_owned();
    }
    if let Some(&i) = candidates.get(rng.gen_range(0..candidates.len())) {
        chars.swap(i, i + 1);
    }
    chars.into_iter().collect()
}

/// Replaces one random ASCII digit with a different digit. Unchanged if there are no digits.
pub fn substitute_one_digit(id: &str, rng: &mut impl Rng) -> String {
    let mut chars: Vec<char> = id.chars().collect();
    let digits: Vec<usize> =
        chars.iter().enumerate().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
    if digits.is_empty() {
        return id.to_owned();
    }
    let pick = digits.get(rng.gen_range(0..digits.len())).copied();
    if let Some(c) = pick.and_then(|i| chars.get_mut(i)) {
        let old = c.to_digit(10).unwrap_or(0);
        let new = (old + rng.gen_range(1..10)) % 10;
        *c = char::from_digit(new, 10).unwrap_or('0');
    }
    chars.into_iter().collect()
}

/// The pre-1999 15-digit form of a number (century and check character dropped), as still found in old
/// social-insurance records. `None` for people born outside 1900-1999, who never had one.
pub fn to_legacy_15(id: &CitizenId) -> Option<String> {
    if !(1900..=1999).contains(&id.birth_date().year()) {
        return None;
    }
    let s = id.as_str();
    Some(format!("{}{}", s.get(..6)?, s.get(8..17)?))
}

/// Every ASCII character to its full-width form and spaces to ideographic spaces, as a Chinese IME left
/// in full-width mode types them.
pub fn to_full_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(u32::from(c) + 0xFEE0).unwrap_or(c),
            ' ' => '\u{3000}',
            _ => c,
        })
        .collect()
}

/// Inserts one space (ASCII or ideographic) at a random position, including the ends — column padding
/// and grouping spaces that survive CSV exports.
pub fn insert_stray_space(s: &str, rng: &mut impl Rng) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let at = rng.gen_range(0..=chars.len());
    let space = if rng.gen_bool(0.5) { ' ' } else { '\u{3000}' };
    chars.insert(at, space);
    chars.into_iter().collect()
}

/// The check character typed as a lower-case `x`.
pub fn lowercase_x(s: &str) -> String {
    s.replace('X', "x")
}

/// Writes a (simplified) name in traditional characters, as systems fed from Hong Kong, Macao or Taiwan
/// documents do. Characters whose traditional form is also their simplified one are kept.
pub fn to_traditional(name: &str) -> String {
    name.chars().map(hanzi::traditionalize).collect()
}

/// Replaces one character of the given name (never the surname) with a homophone, the error a pinyin
/// input method produces when the wrong candidate is picked. `None` if the given name has no character
/// with a known homophone.
pub fn homophone_typo(name: &str, rng: &mut impl Rng) -> Option<String> {
    let skip = surname(name).chars().count();
    let mut chars: Vec<char> = name.chars().collect();
    let candidates: Vec<usize> = chars
        .iter()
        .enumerate()
        .skip(skip)
        .filter(|(_, c)| hanzi::homophones(**c).is_some())
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let i = *candidates.get(rng.gen_range(0..candidates.len()))?;
    let c = chars.get_mut(i)?;
    let others: Vec<char> = hanzi::homophones(*c)?.chars().filter(|o| o != c).collect();
    *c = *others.get(rng.gen_range(0..others.len().max(1)))?;
    Some(chars.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::name::{name_similarity, normalize_name};
    use crate::ident::strategies::arb_citizen_id;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use time::macros::date;

    #[test]
    fn examples() {
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(to_full_width("12 aX"), "１２\u{3000}ａＸ");
        assert_eq!(lowercase_x("11010519491231002X"), "11010519491231002x");
        assert_eq!(to_traditional("张伟"), "張偉");
        assert_eq!(to_traditional("范丽华"), "范麗華");
        assert_eq!(transpose_adjacent_digits("1111", &mut rng), "1111");
        assert_eq!(transpose_adjacent_digits("12", &mut rng), "21");
        assert_eq!(substitute_one_digit("abc", &mut rng), "abc");
        assert_eq!(homophone_typo("张三", &mut rng), None);
        assert_eq!(homophone_typo("", &mut rng), None);
        let typo = homophone_typo("张伟", &mut rng);
        assert!(matches!(typo.as_deref(), Some("张玮" | "张炜" | "张韦" | "张纬")), "{typo:?}");
        let young = CitizenId::from_parts("110105", date!(2005 - 01 - 01), 10);
        assert_eq!(young.as_ref().and_then(to_legacy_15), None);
        let old = CitizenId::from_parts("110105", date!(1949 - 12 - 31), 2);
        assert_eq!(old.as_ref().and_then(to_legacy_15).as_deref(), Some("110105491231002"));
    }

    fn arb_simplified_name() -> impl Strategy<Value = String> {
        let pool: Vec<char> = "张王李赵陈刘黄欧阳伟丽华国军杰胜强静敏明芳娜磊龙凤兰钟范后".chars().collect();
        proptest::collection::vec(proptest::sample::select(pool), 1..5).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn prop_traditional_normalises_back(name in arb_simplified_name()) {
            prop_assert_eq!(normalize_name(&to_traditional(&name)), normalize_name(&name));
            let noisy = to_full_width(&to_traditional(&name));
            prop_assert_eq!(normalize_name(&noisy), normalize_name(&name));
        }

        #[test]
        fn prop_homophone_changes_exactly_one_given_name_char(name in arb_simplified_name(), seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            if let Some(typo) = homophone_typo(&name, &mut rng) {
                prop_assert_eq!(typo.chars().count(), name.chars().count());
                let diffs: Vec<usize> = name.chars().zip(typo.chars()).enumerate()
                    .filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect();
                prop_assert_eq!(diffs.len(), 1);
                prop_assert!(diffs[0] >= surname(&name).chars().count());
                prop_assert_ne!(normalize_name(&typo), normalize_name(&name));
                let sim = name_similarity(&typo, &name);
                prop_assert!((0.0..1.0).contains(&sim));
            }
        }

        #[test]
        fn prop_noise_never_panics(s in any::<String>(), seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let _ = transpose_adjacent_digits(&s, &mut rng);
            let _ = substitute_one_digit(&s, &mut rng);
            let _ = insert_stray_space(&s, &mut rng);
            let _ = homophone_typo(&s, &mut rng);
            let _ = to_traditional(&s);
            prop_assert_eq!(to_full_width(&s).chars().count(), s.chars().count());
        }

        #[test]
        fn prop_legacy_15_only_for_20th_century(id in arb_citizen_id()) {
            let year = id.birth_date().year();
            prop_assert_eq!(to_legacy_15(&id).is_some(), (1900..=1999).contains(&year));
        }
    }
}
