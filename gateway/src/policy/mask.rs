//! Display masking of personal data (GB/T 35273 display restriction).
//!
//! Masking replaces characters with `*`, one asterisk per hidden character, and never widens what is
//! shown: when a rule would keep as many characters as the value has (a short or malformed value), the
//! whole value is hidden instead. So for every rule but [`MaskRule::Clear`] the output differs from any
//! non-empty input that is not already all asterisks.

use std::fmt;

/// How one field is shown to the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskRule {
    /// Shown as is.
    Clear,
    /// Identity numbers: the first 4 and last 4 characters, e.g. `5323**********1234` (the GB/T 35273
    /// display example): the province and prefecture and the last digits stay visible for matching by eye,
    /// birth date and sequence number are hidden.
    CitizenId,
    /// Mobile numbers: the first 3 (carrier prefix) and last 4 digits, e.g. `138****5678`.
    Phone,
    /// Names: the surname stays, the given name is hidden (`王*`, `欧阳**` for a compound surname); a
    /// name written with separators (minority names such as `阿依古丽·买买提`) keeps its first character
    /// and its separators (`阿***·***`).
    Surname,
    /// The first `first` and last `last` characters stay.
    Keep { first: u8, last: u8 },
}

impl MaskRule {
    pub fn apply(self, value: &str) -> String {
        match self {
            MaskRule::Clear => value.to_owned(),
            MaskRule::CitizenId => keep(value, 4, 4),
            MaskRule::Phone => keep(value, 3, 4),
            MaskRule::Surname => mask_name(value),
            MaskRule::Keep { first, last } => keep(value, first.into(), last.into()),
        }
    }

    /// Whether this rule shows no more than `floor` does (used to refuse catalogue rules that would
    /// weaken a mandatory mask).
    pub fn no_weaker_than(self, floor: MaskRule) -> bool {
        match (self, floor) {
            (_, MaskRule::Clear) => true,
            (MaskRule::Clear, _) => false,
            (a, b) if a == b => true,
            // A surname shows at most one character of a plain name; only "keep the first" is as strict.
            (rule, MaskRule::Surname) => matches!(rule.keeps(), Some((first, 0)) if first <= 1),
            (rule, floor) => match (rule.keeps(), floor.keeps()) {
                (Some((f, l)), Some((ff, fl))) => f <= ff && l <= fl,
                _ => false,
            },
        }
    }

    /// The characters kept at the start and the end, for the positional rules. A surname keeps at most
    /// two at the start (compound surnames).
    fn keeps(self) -> Option<(u8, u8)> {
        match self {
            MaskRule::Clear => None,
            MaskRule::CitizenId => Some((4, 4)),
            MaskRule::Phone => Some((3, 4)),
            MaskRule::Surname => Some((2, 0)),
            MaskRule::Keep { first, last } => Some((first, last)),
        }
    }
}

impl fmt::Display for MaskRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskRule::Clear => f.write_str("clear"),
            MaskRule::CitizenId => f.write_str("citizen_id"),
            MaskRule::Phone => f.write_str("phone"),
            MaskRule::Surname => f.write_str("surname"),
            MaskRule::Keep { first, last } => write!(f, "{{ keep_first = {first}, keep_last = {last} }}"),
        }
    }
}

/// Keeps the first `first` and last `last` characters and stars the rest; a value no longer than what
/// would be kept is starred entirely.
pub fn keep(value: &str, first: usize, last: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    if first.saturating_add(last) >= n {
        return "*".repeat(n);
    }
    let mut out = String::with_capacity(value.len());
    out.extend(&chars[..first]);
    out.extend(std::iter::repeat_n('*', n - first - last));
    out.extend(&chars[n - last..]);
    out
}

/// Separators between the parts of a name: middle dots in their many encodings (minority names are
/// written `阿依古丽·买买提`, and systems disagree on which dot), full stops, and spaces (Latin names).
fn is_name_separator(c: char) -> bool {
    matches!(
        c,
        '·' | '•' | '‧' | '・' | '･' | '∙' | '⋅' | '.' | '．' | '-' | '－' | '‐' | '\u{0387}' | '\u{16EB}'
    ) || c.is_whitespace()
}

/// Masks a name, keeping the surname (see [`MaskRule::Surname`]). Surrounding whitespace is dropped.
pub fn mask_name(value: &str) -> String {
    let trimmed = value.trim();
    let n = trimmed.chars().count();
    if trimmed.chars().any(is_name_separator) {
        // No surname to set apart: keep the first letter and the shape, star every other letter.
        let mut first_letter = true;
        let masked: String = trimmed
            .chars()
            .map(|c| if is_name_separator(c) || std::mem::take(&mut first_letter) { c } else { '*' })
            .collect();
        if masked != trimmed {
            return masked;
        }
        // A single letter between separators would come back unchanged: star it too.
        return trimmed.chars().map(|c| if is_name_separator(c) { c } else { '*' }).collect();
    }
    // The identity module knows the compound surnames (欧阳, 司马…); it reads the normalised form, which
    // maps a name character for character here (no separators, so no spaces or dots are dropped).
    let surname =
        fedx_adapters::ident::surname(&fedx_adapters::ident::normalize_name(trimmed)).chars().count();
    keep(trimmed, surname.clamp(1, n.max(1)), 0)
}
