//! Claims as the gateway checks them: parsed and validated from the wire once, with identifiers in
//! canonical form and months as [`Month`]s, so the deciding code never re-parses a string.
//!
//! Validation reports every problem at once as `(field path, problem)` pairs naming the field within the
//! request (`claims[2].employer_usci`), never echoing the value: claim values are personal data.

use std::fmt;

use fedx_adapters::ident::citizen_id::{parse_citizen_id, CitizenId};
use fedx_adapters::ident::name::normalize_name;
use fedx_adapters::ident::usci::parse_usci;
use fedx_proto::v1 as pb;
use time::{Date, OffsetDateTime, UtcOffset};

use crate::policy::schema::{claim_spec, ClaimScope};
use crate::policy::FieldCategory;
use crate::view::months::Month;

/// Most claims in one request (verify.proto).
pub const MAX_CLAIMS: usize = 32;
/// Longest window or period, in months (verify.proto: window_months 1 to 600).
pub const MAX_MONTHS: u32 = 600;
/// Longest free-text field accepted (names, school codes and names), in characters.
const MAX_TEXT_CHARS: usize = 128;

/// China Standard Time: "today" and "the current month" of the sources.
pub const CST: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// A GB/T 2260 administrative division code, with area-code matching: `XX0000` (a province) matches
/// every code starting with `XX`, `XXXX00` (a prefecture) every code starting with `XXXX`; any other code
/// matches itself only.
#[derive(Clone, PartialEq, Eq)]
pub struct RegionCode(String);

impl RegionCode {
    pub fn parse(raw: &str) -> Option<RegionCode> {
        let code = raw.trim();
        (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())).then(|| RegionCode(code.to_owned()))
    }

    /// Whether `code` (as a source records it) lies within this area.
    pub fn contains(&self, code: &str) -> bool {
        let code = code.trim();
        let prefix = if self.0.ends_with("0000") {
            &self.0[..2]
        } else if self.0.ends_with("00") {
            &self.0[..4]
        } else {
            return code == self.0;
        };
        code.len() == 6 && code.starts_with(prefix)
    }
}

/// Region codes are not personal data, but they narrow a worker down; kept out of logs anyway.
impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegionCode(..)")
    }
}

/// An inclusive run of months.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    pub from: Month,
    pub to: Month,
}

impl Period {
    pub fn contains(&self, month: Month) -> bool {
        self.from <= month && month <= self.to
    }
}

/// A claim ready to be decided. Holds personal data: `Debug` shows the claim type only.
#[derive(Clone, PartialEq, Eq)]
pub enum Claim {
    IdentityMatches {
        name_norm: String,
        citizen_id: CitizenId,
    },
    ResidencePermitValid {
        region: RegionCode,
        on: Date,
    },
    EmployedBy {
        usci: String,
        period: Period,
    },
    ContributionsAtLeast {
        insurance: pb::InsuranceType,
        min_months: u32,
        window: Period,
        region: Option<RegionCode>,
    },
    NoArrears {
        usci: String,
        period: Option<Period>,
    },
    ChildEnrolled {
        school_code: Option<String>,
        school_name: Option<String>,
    },
    EnterpriseActive {
        usci: String,
    },
    EnterpriseNotAbnormal {
        usci: String,
    },
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

/// Who a claim is about, once the request is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum About {
    /// The subject: needs the category granted by the purpose and covered by the legal basis.
    Worker(FieldCategory),
    /// The enterprise the claim names: needs only the claim type allowed.
    Enterprise,
}

impl Claim {
    /// The claim type name: the `Claim` oneof field name (audit records, catalogue entries).
    pub fn type_name(&self) -> &'static str {
        match self {
            Claim::IdentityMatches { .. } => "identity_matches",
            Claim::ResidencePermitValid { .. } => "residence_permit_valid",
            Claim::EmployedBy { .. } => "employed_by",
            Claim::ContributionsAtLeast { .. } => "contributions_at_least",
            Claim::NoArrears { .. } => "no_arrears",
            Claim::ChildEnrolled { .. } => "child_enrolled",
            Claim::EnterpriseActive { .. } => "enterprise_active",
            Claim::EnterpriseNotAbnormal { .. } => "enterprise_not_abnormal",
        }
    }

    /// Who the claim is about in a request with (`has_subject`) or without a subject.
    /// `enterprise_active` and `enterprise_not_abnormal` disclose the enterprise's state whoever asks
    /// about whom, so they are about the enterprise even when a subject is given; `no_arrears` is about
    /// the subject's own contributions when there is one.
    pub fn about(&self, has_subject: bool) -> About {
        let (category, scope) =
            claim_spec(self.type_name()).unwrap_or((FieldCategory::Identity, ClaimScope::Worker));
        match scope {
            ClaimScope::Worker => About::Worker(category),
            ClaimScope::WorkerOrEnterprise if has_subject => About::Worker(category),
            ClaimScope::WorkerOrEnterprise | ClaimScope::Enterprise => About::Enterprise,
        }
    }

    /// Whether the claim can only be about a worker (so the request needs a subject).
    pub fn needs_subject(&self) -> bool {
        matches!(self.about(false), About::Worker(_))
    }
}

/// The claim type name of a claim as received (its `Claim` oneof field name); `None` when no type is set.
pub fn wire_type_name(claim: &pb::Claim) -> Option<&'static str> {
    use pb::claim::Claim as C;
    Some(match claim.claim.as_ref()? {
        C::IdentityMatches(_) => "identity_matches",
        C::ResidencePermitValid(_) => "residence_permit_valid",
        C::EmployedBy(_) => "employed_by",
        C::ContributionsAtLeast(_) => "contributions_at_least",
        C::NoArrears(_) => "no_arrears",
        C::ChildEnrolled(_) => "child_enrolled",
        C::EnterpriseActive(_) => "enterprise_active",
        C::EnterpriseNotAbnormal(_) => "enterprise_not_abnormal",
    })
}

/// Validates `claims` (the whole list): every problem is pushed onto `violations`. Returns the claims
/// when all are well formed. `today` fixes "today" and "the previous month" for the whole request.
pub fn parse_claims(
    claims: &[pb::Claim],
    today: OffsetDateTime,
    violations: &mut Vec<(String, String)>,
) -> Option<Vec<Claim>> {
    if claims.is_empty() {
        violations.push(("claims".to_owned(), "at least one claim is required".to_owned()));
        return None;
    }
    if claims.len() > MAX_CLAIMS {
        violations.push(("claims".to_owned(), format!("at most {MAX_CLAIMS} claims per request")));
        return None;
    }
    let before = violations.len();
    let parsed: Vec<Option<Claim>> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| parse_claim(c, &format!("claims[{i}]"), today, violations))
        .collect();
    if violations.len() > before {
        return None;
    }
    parsed.into_iter().collect()
}

fn parse_claim(
    claim: &pb::Claim,
    at: &str,
    today: OffsetDateTime,
    violations: &mut Vec<(String, String)>,
) -> Option<Claim> {
    use pb::claim::Claim as C;
    let mut v = Violations { at, list: violations };
    let today_cst = today.to_offset(CST).date();
    match claim.claim.as_ref() {
        None => {
            v.list.push((at.to_owned(), "exactly one claim type must be set".to_owned()));
            None
        }
        Some(C::IdentityMatches(c)) => {
            let name = v.text("name", &c.name, true);
            let id = match parse_citizen_id(&c.citizen_id).ok().and_then(|p| p.into_valid()) {
                Some(id) => Some(id),
                None => {
                    v.push("citizen_id", "a valid 18-character or legacy 15-digit citizen ID is required");
                    None
                }
            };
            Some(Claim::IdentityMatches { name_norm: normalize_name(&name??), citizen_id: id? })
        }
        Some(C::ResidencePermitValid(c)) => {
            let region = v.region("region_code", &c.region_code, true);
            let on = if c.on_date.trim().is_empty() {
                Some(today_cst)
            } else {
                let parsed = parse_day(c.on_date.trim());
                if parsed.is_none() {
                    v.push("on_date", "a date as YYYY-MM-DD is required");
                }
                parsed
            };
            Some(Claim::ResidencePermitValid { region: region??, on: on? })
        }
        Some(C::EmployedBy(c)) => {
            let usci = v.usci("employer_usci", &c.employer_usci);
            let period = v.period("period", c.period.as_ref(), true);
            Some(Claim::EmployedBy { usci: usci?, period: period?? })
        }
        Some(C::ContributionsAtLeast(c)) => {
            let insurance = match pb::InsuranceType::try_from(c.insurance_type) {
                Ok(t) if t != pb::InsuranceType::Unspecified => Some(t),
                _ => {
                    v.push("insurance_type", "an insurance type is required");
                    None
                }
            };
            let window = u32::try_from(c.window_months).ok().filter(|w| (1..=MAX_MONTHS).contains(w));
            if window.is_none() {
                v.push("window_months", &format!("the window is 1 to {MAX_MONTHS} months"));
            }
            let min = u32::try_from(c.min_months).ok().filter(|m| *m >= 1 && window.is_none_or(|w| *m <= w));
            if min.is_none() {
                v.push("min_months", "at least 1 and at most window_months");
            }
            let end = if c.end_month.trim().is_empty() {
                Month::of_date(today_cst).minus(1)
            } else {
                let parsed = Month::parse(c.end_month.trim());
                if parsed.is_none() {
                    v.push("end_month", "a month as YYYY-MM is required");
                }
                parsed
            };
            let region = v.region("region_code", &c.region_code, false);
            let window = window?;
            let end = end?;
            let from = end.minus(window - 1)?;
            Some(Claim::ContributionsAtLeast {
                insurance: insurance?,
                min_months: min?,
                window: Period { from, to: end },
                region: region?,
            })
        }
        Some(C::NoArrears(c)) => {
            let usci = v.usci("employer_usci", &c.employer_usci);
            let period = v.period("period", c.period.as_ref(), false);
            Some(Claim::NoArrears { usci: usci?, period: period? })
        }
        Some(C::ChildEnrolled(c)) => {
            let code = v.text("school_code", &c.school_code, false);
            let name = v.text("school_name", &c.school_name, false);
            Some(Claim::ChildEnrolled {
                school_code: code?.filter(|s| !s.is_empty()),
                school_name: name?.map(|s| compact(&s)).filter(|s| !s.is_empty()),
            })
        }
        Some(C::EnterpriseActive(c)) => Some(Claim::EnterpriseActive { usci: v.usci("usci", &c.usci)? }),
        Some(C::EnterpriseNotAbnormal(c)) => {
            Some(Claim::EnterpriseNotAbnormal { usci: v.usci("usci", &c.usci)? })
        }
    }
}

/// A school name as compared: trimmed, inner whitespace removed (registries write 第 一 中学 and
/// 第一中学 alike).
pub fn compact(name: &str) -> String {
    name.chars().filter(|c| !c.is_whitespace()).collect()
}

fn parse_day(s: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &format).ok()
}

/// Violations of one claim, with the claim's path prefixed.
struct Violations<'a> {
    at: &'a str,
    list: &'a mut Vec<(String, String)>,
}

impl Violations<'_> {
    fn push(&mut self, field: &str, problem: &str) {
        self.list.push((format!("{}.{field}", self.at), problem.to_owned()));
    }

    /// Free text: trimmed, at most [`MAX_TEXT_CHARS`], no control characters; `Some(None)` when empty and
    /// not required.
    fn text(&mut self, field: &str, raw: &str, required: bool) -> Option<Option<String>> {
        let text = raw.trim();
        if text.is_empty() {
            if required {
                self.push(field, "required");
                return None;
            }
            return Some(None);
        }
        if text.chars().count() > MAX_TEXT_CHARS || text.chars().any(char::is_control) {
            self.push(field, &format!("at most {MAX_TEXT_CHARS} characters, no control characters"));
            return None;
        }
        Some(Some(text.to_owned()))
    }

    fn usci(&mut self, field: &str, raw: &str) -> Option<String> {
        match parse_usci(raw) {
            Ok(usci) => Some(usci.into_string()),
            Err(_) => {
                self.push(field, "a valid 18-character unified social credit code is required");
                None
            }
        }
    }

    /// `Some(None)` when empty and not required.
    fn region(&mut self, field: &str, raw: &str, required: bool) -> Option<Option<RegionCode>> {
        if raw.trim().is_empty() && !required {
            return Some(None);
        }
        match RegionCode::parse(raw) {
            Some(code) => Some(Some(code)),
            None => {
                self.push(field, "a 6-digit GB/T 2260 code is required");
                None
            }
        }
    }

    /// `Some(None)` when absent (or both ends empty) and not required.
    fn period(
        &mut self,
        field: &str,
        range: Option<&pb::MonthRange>,
        required: bool,
    ) -> Option<Option<Period>> {
        let empty = range.is_none_or(|r| r.start_month.trim().is_empty() && r.end_month.trim().is_empty());
        if empty && !required {
            return Some(None);
        }
        let range = range.cloned().unwrap_or_default();
        let from = Month::parse(range.start_month.trim());
        let to = Month::parse(range.end_month.trim());
        if from.is_none() {
            self.push(&format!("{field}.start_month"), "a month as YYYY-MM is required");
        }
        if to.is_none() {
            self.push(&format!("{field}.end_month"), "a month as YYYY-MM is required");
        }
        let (from, to) = (from?, to?);
        if to < from || from.months_until(to) > MAX_MONTHS {
            self.push(
                field,
                &format!("end_month must not be before start_month, and at most {MAX_MONTHS} months"),
            );
            return None;
        }
        Some(Some(Period { from, to }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const USCI: &str = "12345";

    fn claim(c: pb::claim::Claim) -> pb::Claim {
        pb::Claim { claim: Some(c) }
    }

    fn fields(claims: &[pb::Claim]) -> Vec<String> {
        let mut violations = Vec::new();
        let parsed = parse_claims(claims, datetime!(2026-12-01 0:00 UTC), &mut violations);
        assert_eq!(parsed.is_some(), violations.is_empty());
        violations.into_iter().map(|(f, _)| f).collect()
    }

    fn valid_usci() -> String {
        let body = b"91110000MA0000001";
        let check = fedx_adapters::ident::usci::usci_check_char(body).expect("valid body");
        format!("{}{}", std::str::from_utf8(body).expect("ascii"), check as char)
    }

    #[test]
    fn area_codes_match_what_lies_within() {
        let province = RegionCode::parse("530000").expect("code");
        let prefecture = RegionCode::parse("530100").expect("code");
        let county = RegionCode::parse("530102").expect("code");
        assert!(province.contains("530102") && province.contains("532301"));
        assert!(!province.contains("440102"));
        assert!(prefecture.contains("530102") && !prefecture.contains("530201"));
        assert!(county.contains("530102") && !county.contains("530103"));
        assert!(RegionCode::parse("53010").is_none() && RegionCode::parse("5301ab").is_none());
    }

    #[test]
    fn every_bad_field_is_named_with_its_claim_index() {
        let bad = [
            claim(pb::claim::Claim::EmployedBy(pb::EmployedBy {
                employer_usci: USCI.into(),
                period: Some(pb::MonthRange { start_month: "2024-13".into(), end_month: "2024-01".into() }),
            })),
            pb::Claim { claim: None },
            claim(pb::claim::Claim::ContributionsAtLeast(pb::ContributionsAtLeast {
                insurance_type: 0,
                min_months: 13,
                window_months: 12,
                end_month: "2024/01".into(),
                region_code: "12".into(),
            })),
            claim(pb::claim::Claim::IdentityMatches(pb::IdentityMatches {
                name: "张\u{7}三".into(),
                citizen_id: "110105194912310021".into(),
            })),
        ];
        assert_eq!(
            fields(&bad),
            [
                "claims[0].employer_usci",
                "claims[0].period.start_month",
                "claims[1]",
                "claims[2].insurance_type",
                "claims[2].min_months",
                "claims[2].end_month",
                "claims[2].region_code",
                "claims[3].name",
                "claims[3].citizen_id",
            ]
        );
        assert_eq!(fields(&[]), ["claims"]);
        let many =
            vec![claim(pb::claim::Claim::EnterpriseActive(pb::EnterpriseActive { usci: valid_usci() })); 33];
        assert_eq!(fields(&many), ["claims"]);
    }

    #[test]
    fn defaults_fill_today_and_the_previous_month_in_china_time() {
        let claims = [
            claim(pb::claim::Claim::ResidencePermitValid(pb::ResidencePermitValid {
                region_code: "530100".into(),
                on_date: String::new(),
            })),
            claim(pb::claim::Claim::ContributionsAtLeast(pb::ContributionsAtLeast {
                insurance_type: pb::InsuranceType::Pension as i32,
                min_months: 6,
                window_months: 12,
                end_month: String::new(),
                region_code: String::new(),
            })),
            claim(pb::claim::Claim::NoArrears(pb::NoArrears { employer_usci: valid_usci(), period: None })),
        ];
        let mut violations = Vec::new();
        // 2026-11-30 20:00 UTC is already 1 December in China.
        let parsed = parse_claims(&claims, datetime!(2026-11-30 20:00 UTC), &mut violations).expect("valid");
        match &parsed[0] {
            Claim::ResidencePermitValid { on, .. } => assert_eq!(on.to_string(), "2026-12-01"),
            other => panic!("{other:?}"),
        }
        match &parsed[1] {
            Claim::ContributionsAtLeast { window, .. } => {
                assert_eq!(
                    (window.from.to_string(), window.to.to_string()),
                    ("2025-12".into(), "2026-11".into())
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&parsed[2], Claim::NoArrears { period: None, .. }));
    }

    #[test]
    fn enterprise_claims_are_about_the_enterprise_even_with_a_subject() {
        let active = Claim::EnterpriseActive { usci: valid_usci() };
        assert_eq!(active.about(true), About::Enterprise);
        let arrears = Claim::NoArrears { usci: valid_usci(), period: None };
        assert_eq!(arrears.about(true), About::Worker(FieldCategory::Arrears));
        assert_eq!(arrears.about(false), About::Enterprise);
        assert!(!arrears.needs_subject() && !active.needs_subject());
        let employed = Claim::EmployedBy {
            usci: valid_usci(),
            period: Period {
                from: Month::parse("2024-01").expect("m"),
                to: Month::parse("2024-02").expect("m"),
            },
        };
        assert!(employed.needs_subject());
        assert_eq!(format!("{employed:?}"), "employed_by");
    }
}
