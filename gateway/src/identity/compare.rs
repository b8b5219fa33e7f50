//! Field-by-field comparison of what is known about the subject (a [`Profile`]) with one source record
//! (a `Candidate`), giving each field an agreement level and its match weight.
//!
//! Birth date and sex are encoded in the citizen ID, so when both sides carry an ID the ID comparison
//! already says everything the date and sex digits say; comparing them again would count the same
//! evidence twice (Fellegi–Sunter assumes independent fields) and would let a namesake born the same
//! day climb over a disagreeing ID. They are compared separately only when one side has no ID, or when
//! the requester *stated* a birth date or sex that contradicts their own ID — then the contradiction
//! is counted as evidence against, as it must be.

use fedx_adapters::ident::{id_distance, name_similarity, IdDistance, Sex};
use fedx_adapters::Candidate;
use time::Date;

use super::model::{Model, MU};

/// A compared field, named as in `SubjectQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    CitizenId,
    Name,
    BirthDate,
    Sex,
    Phone,
    RegionCode,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::CitizenId => "citizen_id",
            Field::Name => "name",
            Field::BirthDate => "birth_date",
            Field::Sex => "sex",
            Field::Phone => "phone",
            Field::RegionCode => "region_code",
        }
    }
}

/// How one field compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Agreement {
    Exact,
    /// Partial agreement: an ID one typo away, a similar name, the same prefecture.
    Approximate,
    Disagree,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldOutcome {
    pub field: Field,
    pub agreement: Agreement,
    pub weight: f64,
}

/// The comparison of a profile with one record: per-field outcomes and their total weight.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Comparison {
    pub fields: Vec<FieldOutcome>,
    pub score: f64,
}

impl Comparison {
    fn push(&mut self, field: Field, agreement: Agreement, weight: f64) {
        self.score += weight;
        self.fields.push(FieldOutcome { field, agreement, weight });
    }

    pub fn agreement(&self, field: Field) -> Option<Agreement> {
        self.fields.iter().find(|f| f.field == field).map(|f| f.agreement)
    }
}

/// What is known about the subject, to compare records with: the validated query, and after the
/// subject is singled out, the same enriched with the authoritative record's identifiers.
#[derive(Clone, Default)]
pub struct Profile {
    /// Canonical ID, or the cleaned form of a suspect one.
    pub id: Option<String>,
    /// Names with the weight exact agreement on each carries (term-frequency adjusted).
    pub names: Vec<(String, f64)>,
    pub birth: Option<Date>,
    /// The birth date is the one the profile's own ID spells (or was not stated apart from it).
    pub birth_implied_by_id: bool,
    pub sex: Option<Sex>,
    pub sex_implied_by_id: bool,
    pub phones: Vec<String>,
    pub region: Option<String>,
}

/// Redacted: a profile is personal data.
impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Profile(<redacted>)")
    }
}

/// Compares `profile` with `candidate` under `model`.
pub fn compare(model: &Model, profile: &Profile, candidate: &Candidate) -> Comparison {
    let mu = model.mu();
    let w = MU::weight;
    let mut c = Comparison::default();
    let both_ids = profile.id.is_some() && candidate.id.is_some();

    if let (Some(p), Some(r)) = (&profile.id, &candidate.id) {
        match id_distance(p, r) {
            IdDistance::Same => c.push(Field::CitizenId, Agreement::Exact, w(&mu.citizen_id_exact)),
            IdDistance::OneSubstitution | IdDistance::AdjacentTransposition => {
                c.push(Field::CitizenId, Agreement::Approximate, w(&mu.citizen_id_typo))
            }
            IdDistance::Other => c.push(Field::CitizenId, Agreement::Disagree, w(&mu.citizen_id_other)),
        }
    }

    if let Some(r) = &candidate.name_norm {
        if let Some((agreement, weight)) = compare_name(model, &profile.names, r) {
            c.push(Field::Name, agreement, weight);
        }
    }

    if let (Some(p), Some(r)) = (profile.birth, candidate.birth_date) {
        if !(both_ids && profile.birth_implied_by_id) {
            if p == r {
                c.push(Field::BirthDate, Agreement::Exact, w(&mu.birth_date_exact));
            } else {
                c.push(Field::BirthDate, Agreement::Disagree, w(&mu.birth_date_other));
            }
        }
    }

    if let (Some(p), Some(r)) = (profile.sex, candidate.sex) {
        if !(both_ids && profile.sex_implied_by_id) {
            if p == r {
                c.push(Field::Sex, Agreement::Exact, w(&mu.sex_agree));
            } else {
                c.push(Field::Sex, Agreement::Disagree, w(&mu.sex_other));
            }
        }
    }

    if let Some(r) = &candidate.phone {
        if !profile.phones.is_empty() {
            if profile.phones.iter().any(|p| p == r) {
                c.push(Field::Phone, Agreement::Exact, w(&mu.phone_exact));
            } else {
                c.push(Field::Phone, Agreement::Disagree, w(&mu.phone_other));
            }
        }
    }

    if let (Some(p), Some(r)) = (&profile.region, &candidate.region) {
        match region_agreement(p, r) {
            Agreement::Exact => c.push(Field::RegionCode, Agreement::Exact, w(&mu.region_exact)),
            Agreement::Approximate => c.push(Field::RegionCode, Agreement::Approximate, w(&mu.region_area)),
            Agreement::Disagree => c.push(Field::RegionCode, Agreement::Disagree, w(&mu.region_other)),
        }
    }
    c
}

/// The best agreement of `record` with any of the profile's names.
fn compare_name(model: &Model, names: &[(String, f64)], record: &str) -> Option<(Agreement, f64)> {
    let mu = model.mu();
    let cfg = &model.config;
    let mut best: Option<(Agreement, f64)> = None;
    for (name, exact_weight) in names {
        let level = if name == record {
            (Agreement::Exact, *exact_weight)
        } else {
            let sim = name_similarity(name, record);
            if sim >= cfg.name_close_similarity {
                (Agreement::Approximate, mu.name_close.weight())
            } else if sim >= cfg.name_similar_similarity {
                (Agreement::Approximate, mu.name_similar.weight())
            } else {
                (Agreement::Disagree, mu.name_other.weight())
            }
        };
        if best.is_none_or(|(_, w)| level.1 > w) {
            best = Some(level);
        }
    }
    best
}

/// Region codes: equal, or one is an area (`xx0000` province, `xxxx00` prefecture) containing the
/// other, or both in the same prefecture.
pub fn region_agreement(query: &str, record: &str) -> Agreement {
    if query == record {
        return Agreement::Exact;
    }
    let within = |area: &str, code: &str| {
        (area.ends_with("0000") && area.get(..2) == code.get(..2))
            || (area.ends_with("00") && area.get(..4) == code.get(..4))
    };
    if within(query, record) || within(record, query) || query.get(..4) == record.get(..4) {
        Agreement::Approximate
    } else {
        Agreement::Disagree
    }
}

#[cfg(test)]
mod tests {
    use fedx_adapters::{Department, IdQuality, RecordKey};
    use time::macros::date;

    use super::*;
    use crate::identity::model::IdentityConfig;

    fn cand(id: Option<&str>, name: &str, birth: Option<Date>) -> Candidate {
        Candidate {
            dept: Department::Tax,
            record_key: RecordKey::new("taxpayer", "T1"),
            id: id.map(str::to_owned),
            id_quality: id.map(|_| IdQuality::Valid),
            name_norm: Some(name.to_owned()),
            birth_date: birth,
            sex: None,
            phone: None,
            region: None,
        }
    }

    fn profile(id: Option<&str>, name: &str, birth: Option<Date>) -> Profile {
        Profile {
            id: id.map(str::to_owned),
            names: vec![(name.to_owned(), 10.0)],
            birth,
            birth_implied_by_id: true,
            ..Profile::default()
        }
    }

    #[test]
    fn id_levels_and_no_double_counting_of_birth() {
        let model = Model::new(IdentityConfig::default());
        let b = date!(1949 - 12 - 31);
        let p = profile(Some("11010519491231002X"), "张伟", Some(b));
        let exact = compare(&model, &p, &cand(Some("11010519491231002X"), "张伟", Some(b)));
        assert_eq!(exact.agreement(Field::CitizenId), Some(Agreement::Exact));
        assert_eq!(exact.agreement(Field::BirthDate), None, "birth is implied by the ID");
        let typo = compare(&model, &p, &cand(Some("11010519491231003X"), "张伟", Some(b)));
        assert_eq!(typo.agreement(Field::CitizenId), Some(Agreement::Approximate));
        assert!(typo.score < exact.score);
        // A namesake born the same day with another number: the ID disagreement dominates.
        let namesake = compare(&model, &p, &cand(Some("110105194912310118"), "张伟", Some(b)));
        assert_eq!(namesake.agreement(Field::CitizenId), Some(Agreement::Disagree));
        assert!(namesake.score < model.config.possible_threshold, "{}", namesake.score);
    }

    #[test]
    fn stated_birth_contradicting_the_id_counts_against() {
        let model = Model::new(IdentityConfig::default());
        let mut p = profile(Some("11010519491231002X"), "张伟", Some(date!(1950 - 01 - 01)));
        p.birth_implied_by_id = false;
        let c = compare(&model, &p, &cand(Some("11010519491231002X"), "张伟", Some(date!(1949 - 12 - 31))));
        assert_eq!(c.agreement(Field::BirthDate), Some(Agreement::Disagree));
    }

    #[test]
    fn without_ids_birth_and_name_are_compared() {
        let model = Model::new(IdentityConfig::default());
        let b = date!(1990 - 05 - 01);
        let c = compare(&model, &profile(None, "王建华", Some(b)), &cand(None, "王建化", Some(b)));
        assert_eq!(c.agreement(Field::Name), Some(Agreement::Approximate));
        assert_eq!(c.agreement(Field::BirthDate), Some(Agreement::Exact));
        let other = compare(&model, &profile(None, "王建华", Some(b)), &cand(None, "李娜", Some(b)));
        assert_eq!(other.agreement(Field::Name), Some(Agreement::Disagree));
    }

    #[test]
    fn regions() {
        assert_eq!(region_agreement("532301", "532301"), Agreement::Exact);
        assert_eq!(region_agreement("530000", "532301"), Agreement::Approximate);
        assert_eq!(region_agreement("532300", "532301"), Agreement::Approximate);
        assert_eq!(region_agreement("510104", "532301"), Agreement::Disagree);
    }
}
