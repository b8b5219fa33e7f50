//! From what a requester typed to a normalised query: every identifier parsed with `fedx_adapters::ident`
//! (the one home of normalisation rules), every problem reported as a field violation that never echoes
//! the value.

use fedx_adapters::ident::{
    normalize_name, parse_citizen_id, parse_date, parse_phone, CitizenId, ParsedCitizenId, Sex,
};
use sha2::{Digest, Sha256};
use time::Date;

/// The subject as received (already decoded from protobuf; empty string = not given).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SubjectInput {
    pub citizen_id: String,
    pub name: String,
    pub birth_date: String,
    pub sex: Option<Sex>,
    pub phone: String,
    pub region_code: String,
}

/// Redacted: the input is personal data.
impl std::fmt::Debug for SubjectInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectInput(<redacted>)")
    }
}

/// The query's ID number: valid, or ID-shaped but failing validation (a typo is still evidence).
#[derive(Clone, PartialEq, Eq)]
pub enum QueryId {
    Valid(CitizenId),
    /// The cleaned form (as sources index suspect numbers), and the birth date / sex its digits spell
    /// when readable — used to look candidates up, never trusted as stated values.
    Suspect {
        cleaned: String,
        birth: Option<Date>,
        sex: Option<Sex>,
    },
}

impl QueryId {
    /// The string sources index this number under.
    pub fn as_str(&self) -> &str {
        match self {
            QueryId::Valid(id) => id.as_str(),
            QueryId::Suspect { cleaned, .. } => cleaned,
        }
    }
}

/// A validated, normalised query. Fields are `None` when not given.
#[derive(Clone, PartialEq, Eq)]
pub struct Query {
    pub id: Option<QueryId>,
    /// `normalize_name` form.
    pub name: Option<String>,
    /// Birth date as stated by the requester (not derived from the ID).
    pub birth_stated: Option<Date>,
    /// Sex as stated by the requester.
    pub sex_stated: Option<Sex>,
    /// Normalised phone.
    pub phone: Option<String>,
    /// 6-digit region code.
    pub region: Option<String>,
}

/// Redacted: a query is personal data.
impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("fields", &self.given_fields())
            .field("id_valid", &self.valid_id().is_some())
            .finish()
    }
}

/// One invalid field: (request field path, reason). The reason never contains the value.
pub type Violation = (String, String);

impl Query {
    /// Validates and normalises a subject. `prefix` is the request path of the subject message
    /// (e.g. `"subject"`) used in violation field names.
    pub fn parse(input: &SubjectInput, prefix: &str) -> Result<Query, Vec<Violation>> {
        let mut violations = Vec::new();
        let field = |name: &str| format!("{prefix}.{name}");
        let mut query = Query {
            id: None,
            name: None,
            birth_stated: None,
            sex_stated: input.sex,
            phone: None,
            region: None,
        };
        if !input.citizen_id.trim().is_empty() {
            match parse_citizen_id(&input.citizen_id) {
                Ok(ParsedCitizenId::Valid(id)) => query.id = Some(QueryId::Valid(id)),
                Ok(ParsedCitizenId::Suspect(s)) => {
                    let (birth, sex) = suspect_parts(&s.cleaned);
                    query.id = Some(QueryId::Suspect { cleaned: s.cleaned, birth, sex });
                }
                Err(e) => violations.push((field("citizen_id"), e.to_string())),
            }
        }
        if !input.name.trim().is_empty() {
            let name = normalize_name(&input.name);
            let len = name.chars().count();
            if name.is_empty() {
                violations.push((field("name"), "name has no letters after normalisation".into()));
            } else if len > 64 {
                violations.push((field("name"), format!("name has {len} characters, at most 64 allowed")));
            } else {
                query.name = Some(name);
            }
        }
        if !input.birth_date.trim().is_empty() {
            match parse_date(&input.birth_date) {
                Ok(d) => query.birth_stated = Some(d),
                Err(e) => violations.push((field("birth_date"), format!("{e} (expected YYYY-MM-DD)"))),
            }
        }
        if !input.phone.trim().is_empty() {
            match parse_phone(&input.phone) {
                Ok(p) => query.phone = Some(p.into_string()),
                Err(e) => violations.push((field("phone"), e.to_string())),
            }
        }
        let region = input.region_code.trim();
        if !region.is_empty() {
            if region.len() == 6 && region.bytes().all(|b| b.is_ascii_digit()) {
                query.region = Some(region.to_owned());
            } else {
                violations.push((field("region_code"), "region code must be 6 digits (GB/T 2260)".into()));
            }
        }
        if violations.is_empty() && !query.is_searchable() {
            violations.push((
                prefix.to_owned(),
                "no usable identifier: give citizen_id, phone, or name together with birth_date".into(),
            ));
        }
        if violations.is_empty() {
            Ok(query)
        } else {
            Err(violations)
        }
    }

    /// Whether some index look-up can be made: an ID, a phone, or name + birth date.
    pub fn is_searchable(&self) -> bool {
        self.id.is_some() || self.phone.is_some() || (self.name.is_some() && self.lookup_birth().is_some())
    }

    pub fn valid_id(&self) -> Option<&CitizenId> {
        match &self.id {
            Some(QueryId::Valid(id)) => Some(id),
            _ => None,
        }
    }

    /// Birth date to compare with: stated, else the one a valid ID encodes.
    pub fn birth(&self) -> Option<Date> {
        self.birth_stated.or_else(|| self.valid_id().map(CitizenId::birth_date))
    }

    pub fn sex(&self) -> Option<Sex> {
        self.sex_stated.or_else(|| self.valid_id().map(CitizenId::sex))
    }

    /// Birth date to look candidates up by: also the digits of a suspect ID.
    pub fn lookup_birth(&self) -> Option<Date> {
        self.birth().or(match &self.id {
            Some(QueryId::Suspect { birth, .. }) => *birth,
            _ => None,
        })
    }

    /// Fields of the query that disagree with what its own valid ID encodes: evidence against any
    /// record carrying that ID (counted in scoring, named here for the result).
    pub fn id_conflicts(&self) -> Vec<&'static str> {
        let Some(id) = self.valid_id() else { return Vec::new() };
        let mut out = Vec::new();
        if self.birth_stated.is_some_and(|b| b != id.birth_date()) {
            out.push("birth_date");
        }
        if self.sex_stated.is_some_and(|s| s != id.sex()) {
            out.push("sex");
        }
        out
    }

    /// Names of the `SubjectQuery` fields given.
    pub fn given_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.id.is_some() {
            out.push("citizen_id");
        }
        if self.name.is_some() {
            out.push("name");
        }
        if self.birth_stated.is_some() {
            out.push("birth_date");
        }
        if self.sex_stated.is_some() {
            out.push("sex");
        }
        if self.phone.is_some() {
            out.push("phone");
        }
        if self.region.is_some() {
            out.push("region_code");
        }
        out
    }

    /// SHA-256 of a canonical encoding of the normalised query: the cache key, so the cache never holds
    /// identifiers in the clear and two spellings of one query share an entry.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut put = |tag: &str, v: Option<&str>| {
            h.update(tag.as_bytes());
            h.update([0x1f]);
            h.update(v.unwrap_or("").as_bytes());
            h.update([0x1e]);
        };
        let kind = match &self.id {
            Some(QueryId::Valid(_)) => "v",
            Some(QueryId::Suspect { .. }) => "s",
            None => "",
        };
        put("id", self.id.as_ref().map(QueryId::as_str));
        put("idk", Some(kind));
        put("name", self.name.as_deref());
        put("birth", self.birth_stated.map(|d| d.to_string()).as_deref());
        put("sex", self.sex_stated.map(sex_code));
        put("phone", self.phone.as_deref());
        put("region", self.region.as_deref());
        h.finalize().into()
    }
}

pub(crate) fn sex_code(s: Sex) -> &'static str {
    match s {
        Sex::Male => "M",
        Sex::Female => "F",
    }
}

/// Birth date and sex spelled by the digits of an 18-character suspect number, when readable.
fn suspect_parts(cleaned: &str) -> (Option<Date>, Option<Sex>) {
    if cleaned.len() != 18 {
        return (None, None);
    }
    let birth = cleaned.get(6..14).and_then(|d| parse_date(d).ok());
    let sex = cleaned.as_bytes().get(16).filter(|b| b.is_ascii_digit()).map(|b| {
        if (b - b'0') % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        }
    });
    (birth, sex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(id: &str, name: &str, birth: &str) -> SubjectInput {
        SubjectInput {
            citizen_id: id.into(),
            name: name.into(),
            birth_date: birth.into(),
            ..SubjectInput::default()
        }
    }

    #[test]
    fn variants_normalise_to_one_query_and_one_digest() {
        let a = Query::parse(&input("11010519491231002x", "張 偉", "1949-12-31"), "subject").unwrap();
        let b =
            Query::parse(&input("１１０１０５１９４９１２３１００２Ｘ", "张伟", "1949年12月31日"), "subject")
                .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        assert!(a.valid_id().is_some());
        assert!(a.id_conflicts().is_empty());
    }

    #[test]
    fn suspect_id_is_kept_with_its_digits() {
        let q = Query::parse(&input("110105194912310021", "", ""), "subject").unwrap();
        assert!(matches!(q.id, Some(QueryId::Suspect { birth: Some(_), .. })));
        assert!(q.birth().is_none(), "a suspect ID's date is not a stated birth date");
        assert!(q.lookup_birth().is_some());
    }

    #[test]
    fn violations_name_fields_and_never_echo_values() {
        let bad = SubjectInput {
            citizen_id: "12345".into(),
            birth_date: "1990-02-30".into(),
            phone: "99999".into(),
            region_code: "53230".into(),
            ..SubjectInput::default()
        };
        let v = Query::parse(&bad, "subject").unwrap_err();
        let fields: Vec<&str> = v.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["subject.citizen_id", "subject.birth_date", "subject.phone", "subject.region_code"]
        );
        for (_, reason) in &v {
            assert!(!reason.contains("12345") && !reason.contains("99999") && !reason.contains("53230"));
        }
    }

    #[test]
    fn empty_or_name_only_subject_is_not_usable() {
        let v = Query::parse(&SubjectInput::default(), "subject").unwrap_err();
        assert_eq!(v[0].0, "subject");
        let v = Query::parse(&input("", "张伟", ""), "subject").unwrap_err();
        assert_eq!(v[0].0, "subject");
        assert!(Query::parse(&input("", "张伟", "1990-01-01"), "subject").is_ok());
    }

    #[test]
    fn stated_values_contradicting_the_id_are_conflicts() {
        let mut i = input("11010519491231002X", "张伟", "1950-01-01");
        i.sex = Some(Sex::Male);
        let q = Query::parse(&i, "subject").unwrap();
        assert_eq!(q.id_conflicts(), ["birth_date", "sex"]);
        assert_eq!(q.birth_stated.map(|d| d.year()), Some(1950));
    }
}
