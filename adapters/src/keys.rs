//! The bridge between raw department values and the normalised look-up columns, built on
//! `crate::ident` (which owns every normalisation rule). Kept in one place so import, seeding and the
//! request path agree on what `id_norm`, `name_norm`, `birth_norm`, `sex_norm` and `phone_norm` mean.

use time::Date;

use crate::ident::citizen_id::{parse_citizen_id, ParsedCitizenId};
use crate::ident::{date, name, phone, usci};
use crate::source::IdQuality;

/// `YYYY-MM-DD`.
pub(crate) fn iso_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A normalised ID: canonical 18 characters (or the cleaned form of a suspect one), its quality, and the
/// birth date and sex it encodes when those digits are readable.
pub(crate) struct NormId {
    pub id: String,
    pub quality: IdQuality,
    pub birth: Option<Date>,
    pub male: Option<bool>,
}

/// Normalises an ID number as recorded; `None` when it is not an ID number at all.
pub(crate) fn normalise_id(raw: &str) -> Option<NormId> {
    match parse_citizen_id(raw).ok()? {
        ParsedCitizenId::Valid(c) => {
            let legacy = raw.chars().filter(|c| c.is_alphanumeric()).count() == 15;
            Some(NormId {
                quality: if legacy { IdQuality::Upgraded } else { IdQuality::Valid },
                birth: Some(c.birth_date()),
                male: Some(c.sex() == crate::ident::citizen_id::Sex::Male),
                id: c.into_string(),
            })
        }
        ParsedCitizenId::Suspect(s) => {
            let b = s.cleaned.as_bytes();
            let (birth, male) = if b.len() == 18 {
                let birth = date::parse_date(&s.cleaned[6..14]).ok();
                let male = b.get(16).filter(|c| c.is_ascii_digit()).map(|c| c % 2 == 1);
                (birth, male)
            } else {
                (None, None)
            };
            Some(NormId { id: s.cleaned, quality: IdQuality::Suspect, birth, male })
        }
    }
}

/// Validation for ID columns; the reason never includes the value.
pub(crate) fn check_citizen_id(raw: &str, strict: bool) -> Result<(), &'static str> {
    match parse_citizen_id(raw) {
        Err(_) => Err("not a citizen ID number"),
        Ok(ParsedCitizenId::Suspect(_)) if strict => Err("bad check character or birth date"),
        Ok(ParsedCitizenId::Valid(_)) if strict && !is_18(raw) => {
            Err("legacy 15-digit number where 18 are required")
        }
        Ok(_) => Ok(()),
    }
}

fn is_18(raw: &str) -> bool {
    raw.chars().filter(|c| c.is_alphanumeric()).count() == 18
}

pub(crate) fn canonical_date(raw: &str) -> Option<String> {
    date::parse_date(raw).ok().map(iso_date)
}

pub(crate) fn canonical_month(raw: &str) -> Option<String> {
    let (y, m) = date::parse_month(raw).ok()?;
    Some(format!("{y:04}-{m:02}"))
}

pub(crate) fn canonical_usci(raw: &str) -> Result<String, &'static str> {
    usci::parse_usci(raw).map(|u| u.as_str().to_owned()).map_err(|_| "not a valid unified social credit code")
}

pub(crate) fn normalise_phone(raw: &str) -> Option<String> {
    phone::parse_phone(raw).ok().map(|p| p.as_str().to_owned())
}

pub(crate) fn normalise_name(raw: &str) -> Option<String> {
    let n = name::normalize_name(raw);
    (!n.is_empty()).then_some(n)
}

fn sex_code(raw: &str) -> Option<&'static str> {
    match raw.trim() {
        "男" | "M" | "m" | "1" => Some("M"),
        "女" | "F" | "f" | "2" => Some("F"),
        _ => None,
    }
}

/// The derived person-key columns, in [`crate::table::PERSON_KEY_SUFFIXES`] order: `id_norm`,
/// `id_quality`, `name_norm`, `birth_norm`, `sex_norm`, `phone_norm`. Birth date and sex come from the
/// ID when it encodes them, else from the record's own columns.
pub(crate) fn person_keys(
    id: Option<&str>,
    name: Option<&str>,
    phone: Option<&str>,
    birth: Option<&str>,
    sex: Option<&str>,
) -> [Option<String>; 6] {
    let nid = id.and_then(normalise_id);
    let birth_norm =
        nid.as_ref().and_then(|n| n.birth).map(iso_date).or_else(|| birth.and_then(canonical_date));
    let sex_norm = nid
        .as_ref()
        .and_then(|n| n.male)
        .map(|m| if m { "M" } else { "F" })
        .or_else(|| sex.and_then(sex_code))
        .map(str::to_owned);
    let quality = nid.as_ref().map(|n| n.quality.code().to_owned());
    [
        nid.map(|n| n.id),
        quality,
        name.and_then(normalise_name),
        birth_norm,
        sex_norm,
        phone.and_then(normalise_phone),
    ]
}
