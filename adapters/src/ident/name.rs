//! Personal names: normalisation, fuzzy similarity and surname extraction.
//!
//! Names are weak identifiers (王伟 is shared by hundreds of thousands of people) but they are the only
//! cross-check the resolver has against a mistyped ID number, and the only key for guardians whose ID the
//! education system never recorded. Normalisation removes the differences that do not distinguish people
//! (width, spacing, dot style, script); similarity scores the ones that might (typos).

use super::hanzi::{self, COMPOUND_SURNAMES};
use super::{fold_width_char, is_invisible};

/// The canonical middle dot separating the parts of transliterated minority names (阿依古丽·买买提).
pub const MIDDLE_DOT: char = '\u{00B7}';

/// Characters that stand in for the middle dot in the sources, depending on the input method or font:
/// the Latin middle dot, katakana middle dot (Japanese IMEs), bullets, hyphenation point, dot operators
/// and the Greek ano teleia (which NFKC maps to U+00B7).
fn is_middle_dot(c: char) -> bool {
    matches!(
        c,
        '\u{00B7}'
            | '\u{0387}'
            | '\u{2022}'
            | '\u{2024}'
            | '\u{2027}'
            | '\u{2219}'
            | '\u{22C5}'
            | '\u{30FB}'
            | '\u{FF65}'
    )
}

/// CJK unified ideographs (basic block, extension A, extensions B onwards, compatibility ideographs).
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(
        c,
        '\u{4E00}'..='\u{9FFF}'
            | '\u{3400}'..='\u{4DBF}'
            | '\u{20000}'..='\u{3134F}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{3007}'
    )
}

enum Token {
    Char(char),
    /// A run of dots; `strong` if it contains a true middle-dot character rather than only ASCII periods.
    Dots {
        strong: bool,
        periods: usize,
    },
}

/// Normalises a personal name for comparison and indexing.
///
/// - full-width ASCII is folded to half-width (CJK untouched), all whitespace and invisible characters
///   removed — the sources split names with spaces to align columns;
/// - every middle-dot look-alike becomes one U+00B7; an ASCII `.` becomes U+00B7 only between two CJK
///   characters (elsewhere, as in Latin initials, it is kept); leading and trailing dots are dropped;
/// - traditional characters common in names are simplified (table in `hanzi`);
/// - letters are upper-cased, since Latin names are typed in either case.
///
/// Idempotent: normalising a normalised name changes nothing.
pub fn normalize_name(raw: &str) -> String {
    let mut tokens: Vec<Token> = Vec::new();
    for c in raw.chars().map(fold_width_char) {
        if is_invisible(c) {
            continue;
        }
        let (strong, period) = (is_middle_dot(c), c == '.');
        if strong || period {
            if let Some(Token::Dots { strong: s, periods: p }) = tokens.last_mut() {
                *s |= strong;
                *p += usize::from(period);
            } else {
                tokens.push(Token::Dots { strong, periods: usize::from(period) });
            }
            continue;
        }
        let c = hanzi::simplify(c);
        tokens.extend(c.to_uppercase().map(Token::Char));
    }

    let mut out = String::with_capacity(raw.len());
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Char(c) => out.push(*c),
            Token::Dots { strong, periods } => {
                let prev = i.checked_sub(1).and_then(|j| tokens.get(j));
                let next = tokens.get(i + 1);
                let (Some(Token::Char(prev)), Some(Token::Char(next))) = (prev, next) else {
                    // Leading or trailing: a separator with nothing to separate.
                    continue;
                };
                if *strong || (is_cjk(*prev) && is_cjk(*next)) {
                    out.push(MIDDLE_DOT);
                } else {
                    out.extend(std::iter::repeat_n('.', *periods));
                }
            }
        }
    }
    out
}

/// Similarity of two names in `0.0..=1.0` after normalisation: Jaro-Winkler over characters.
///
/// Jaro-Winkler rather than edit distance because Chinese names are 2–4 characters long, where one edit
/// is already 25–50 % of the string; Jaro-Winkler's prefix bonus rewards agreement on the surname, which
/// is what distinguishes 张伟/张玮 (plausibly one person) from 张伟/李伟 (the boost applies at every
/// score, unlike Winkler's original, which only boosts scores above 0.7). The arguments are put in a fixed
/// order first so the score is exactly symmetric. Both empty counts as equal (1.0).
///
/// This is a raw string score; the resolver must still weight agreement by how common the name is.
pub fn name_similarity(a: &str, b: &str) -> f64 {
    let a: Vec<char> = normalize_name(a).chars().collect();
    let b: Vec<char> = normalize_name(b).chars().collect();
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    jaro_winkler(&a, &b).clamp(0.0, 1.0)
}

fn jaro(a: &[char], b: &[char]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut b_used = vec![false; b.len()];
    let mut a_matched: Vec<char> = Vec::with_capacity(a.len());
    for (i, ca) in a.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = i.saturating_add(window).saturating_add(1).min(b.len());
        let slot = b.iter().zip(b_used.iter_mut()).take(hi).skip(lo).find(|(cb, used)| !**used && *cb == ca);
        if let Some((_, used)) = slot {
            *used = true;
            a_matched.push(*ca);
        }
    }
    let m = a_matched.len();
    if m == 0 {
        return 0.0;
    }
    let b_matched = b.iter().zip(&b_used).filter(|(_, u)| **u).map(|(c, _)| c);
    let half_transpositions = a_matched.iter().zip(b_matched).filter(|(x, y)| x != y).count();
    let m = m as f64;
    let t = (half_transpositions / 2) as f64;
    (m / a.len() as f64 + m / b.len() as f64 + (m - t) / m) / 3.0
}

fn jaro_winkler(a: &[char], b: &[char]) -> f64 {
    let j = jaro(a, b);
    // 0.1 per common prefix character, at most 4 (Winkler's constants). Winkler boosts only pairs already
    // above 0.7; that threshold is dropped because in a two-character name one differing character puts
    // Jaro at 0.67, and the threshold would then throw away exactly the surname agreement that matters.
    let prefix = a.iter().zip(b).take(4).take_while(|(x, y)| x == y).count();
    j + prefix as f64 * 0.1 * (1.0 - j)
}

/// The surname of a normalised name: a known two-character compound surname when the name has at least
/// three characters, otherwise the first character. Empty for an empty name.
///
/// Names of two characters are never split as compound (欧阳 alone is surname 欧, given name 阳). Names
/// of minorities without surnames (阿依古丽·买买提) get their first character, which is what masking wants.
/// Expects [`normalize_name`] output: traditional or spaced forms are not recognised.
pub fn surname(name: &str) -> &str {
    let mut chars = name.char_indices();
    let Some((_, first)) = chars.next() else {
        return "";
    };
    if name.chars().nth(2).is_some() {
        if let Some(compound) = COMPOUND_SURNAMES.iter().find(|s| name.starts_with(**s)) {
            return name.get(..compound.len()).unwrap_or(name);
        }
    }
    name.get(..first.len_utf8()).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalisation_examples() {
        assert_eq!(normalize_name(" 張 偉 "), "张伟");
        assert_eq!(normalize_name("陳\u{3000}麗華"), "陈丽华");
        assert_eq!(normalize_name("歐陽娜娜"), "欧阳娜娜");
        assert_eq!(normalize_name("ｊｏｈｎ　ｓｍｉｔｈ"), "JOHNSMITH");
        assert_eq!(normalize_name("j.k.rowling"), "J.K.ROWLING");
        assert_eq!(normalize_name("王\u{200B}伟"), "王伟");
        for raw in [
            "阿依古丽·买买提",
            "阿依古丽・买买提",
            "阿依古丽•买买提",
            "阿依古丽‧买买提",
            "阿依古丽.买买提",
            "阿依古丽．买买提",
            "阿依古丽 · 买买提",
            "阿依古丽··买买提",
            "阿依古丽.·买买提",
            "·阿依古丽·买买提·",
        ] {
            assert_eq!(normalize_name(raw), "阿依古丽·买买提", "{raw}");
        }
        assert_eq!(normalize_name(""), "");
        assert_eq!(normalize_name("·"), "");
    }

    #[test]
    fn surname_examples() {
        assert_eq!(surname("张伟"), "张");
        assert_eq!(surname("欧阳娜娜"), "欧阳");
        assert_eq!(surname("诸葛亮"), "诸葛");
        assert_eq!(surname("司马光"), "司马");
        assert_eq!(surname("欧阳"), "欧");
        assert_eq!(surname("张"), "张");
        assert_eq!(surname(""), "");
        assert_eq!(surname("阿依古丽·买买提"), "阿");
    }

    #[test]
    fn similarity_examples() {
        assert_eq!(name_similarity("张伟", "張偉"), 1.0);
        assert_eq!(name_similarity("", ""), 1.0);
        assert_eq!(name_similarity("张伟", ""), 0.0);
        let typo = name_similarity("张伟", "张玮");
        let other_surname = name_similarity("张伟", "李伟");
        let unrelated = name_similarity("张伟", "李娜");
        assert!(typo > other_surname, "{typo} vs {other_surname}");
        assert!(other_surname > unrelated);
        assert_eq!(unrelated, 0.0);
        assert!(name_similarity("欧阳娜娜", "欧阳娜") > 0.9);
        assert!((name_similarity("MARTHA", "MARHTA") - 0.9611).abs() < 1e-3);
    }

    fn name_chars() -> impl Strategy<Value = String> {
        let pool: Vec<char> =
            "张張伟偉丽麗欧歐阳陽王李娜阿依古丽买提·・•‧. 　ａＢc\u{200B}-x".chars().collect();
        proptest::collection::vec(proptest::sample::select(pool), 0..8).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn prop_normalize_idempotent(raw in any::<String>()) {
            let once = normalize_name(&raw);
            prop_assert_eq!(normalize_name(&once), once);
        }

        #[test]
        fn prop_normalize_idempotent_on_name_like(raw in name_chars()) {
            let once = normalize_name(&raw);
            prop_assert_eq!(normalize_name(&once), once.clone());
            prop_assert!(!once.chars().any(char::is_whitespace));
            prop_assert!(!once.starts_with(MIDDLE_DOT) && !once.ends_with(MIDDLE_DOT));
            prop_assert!(!once.contains("··"));
        }

        #[test]
        fn prop_similarity_bounds_and_symmetry(a in name_chars(), b in any::<String>()) {
            let ab = name_similarity(&a, &b);
            let ba = name_similarity(&b, &a);
            prop_assert!((0.0..=1.0).contains(&ab));
            prop_assert_eq!(ab, ba);
            prop_assert_eq!(name_similarity(&a, &a), 1.0);
            prop_assert_eq!(name_similarity(&b, &b), 1.0);
        }

        #[test]
        fn prop_similarity_symmetric_name_like(a in name_chars(), b in name_chars()) {
            prop_assert_eq!(name_similarity(&a, &b), name_similarity(&b, &a));
        }

        #[test]
        fn prop_surname_is_prefix(raw in any::<String>()) {
            let n = normalize_name(&raw);
            let s = surname(&n);
            prop_assert!(n.starts_with(s));
            prop_assert!(s.chars().count() <= 2);
            prop_assert_eq!(s.is_empty(), n.is_empty());
        }
    }
}
