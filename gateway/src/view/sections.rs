//! One builder per section of `GetWorkerViewResponse`: source facts in, contract messages out, every
//! value through the [`Discloser`].
//!
//! Each builder also says which departments had something for the section, so that a department that
//! answered with nothing can be reported as NOT_FOUND.

use std::collections::BTreeSet;

use fedx_adapters::source::{EnrolmentFact, IdentityFact};
use fedx_adapters::{Department, Fact, FactCategory, Facts};
use fedx_proto::v1 as pb;
use time::macros::offset;
use time::{Date, OffsetDateTime, UtcOffset};

use super::contributions;
use super::disclose::{provenance, Discloser};
use super::employment::{self, EmployerRecord};
use super::fetch::{EmployerNames, Fetched};
use crate::policy::FieldCategory;

/// A section's entries and the departments that contributed to them.
pub struct Section<T> {
    pub entries: Vec<T>,
    pub found: BTreeSet<Department>,
}

impl<T> Section<T> {
    fn single(dept: Department, entries: Vec<T>) -> Section<T> {
        let found = if entries.is_empty() { BTreeSet::new() } else { BTreeSet::from([dept]) };
        Section { entries, found }
    }
}

/// China Standard Time: calendar dates in the contract are CST dates.
const CST: UtcOffset = offset!(+8);

/// `YYYY-MM-DD`.
fn iso_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

pub(crate) fn cst_date(t: OffsetDateTime) -> Date {
    t.to_offset(CST).date()
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Items of one kind with the `Facts` (record answer) they came from.
fn items<'a, T: 'a>(
    facts: &'a [Facts],
    pick: impl Fn(&'a Fact) -> Option<&'a T> + Copy + 'a,
) -> impl Iterator<Item = (&'a T, &'a Facts)> + 'a {
    facts.iter().flat_map(move |answer| answer.items.iter().filter_map(pick).map(move |item| (item, answer)))
}

/// The identity summary from household registration. Should the person have several registry records
/// (a duplicate registration), the one carrying the resolved citizen ID is used, else the first.
pub fn identity(
    d: &mut Discloser<'_>,
    fetched: &Fetched,
    citizen_id: Option<&str>,
) -> (Option<pb::IdentitySummary>, BTreeSet<Department>) {
    const C: FieldCategory = FieldCategory::Identity;
    let dept = Department::PublicSecurity;
    let all: Vec<(&IdentityFact, &Facts)> = items(fetched.facts(dept, FactCategory::Identity), |f| match f {
        Fact::Identity(i) => Some(i),
        _ => None,
    })
    .collect();
    let chosen =
        all.iter().find(|(i, _)| Some(i.citizen_id.as_str()) == citizen_id).or_else(|| all.first()).copied();
    let Some((fact, answer)) = chosen else {
        return (None, BTreeSet::new());
    };
    let prov = provenance(dept, answer.as_of);
    let birth = fact.birth_date.map(iso_date);
    let sex = fact.sex.map(|s| match s {
        fedx_adapters::ident::citizen_id::Sex::Male => pb::Sex::Male,
        fedx_adapters::ident::citizen_id::Sex::Female => pb::Sex::Female,
    });
    let summary = pb::IdentitySummary {
        citizen_id: d.sourced(C, "citizen_id", Some(&fact.citizen_id), &prov),
        name: d.sourced(C, "name", Some(&fact.name), &prov),
        sex: d
            .value(C, "sex", sex)
            .map(|sex| pb::SourcedSex { value: sex as i32, provenance: Some(prov.clone()) }),
        birth_date: d.sourced(C, "birth_date", birth.as_deref(), &prov),
        hukou_region_code: d.sourced(C, "hukou_region_code", fact.hukou_region.as_deref(), &prov),
    };
    (Some(summary), BTreeSet::from([dept]))
}

/// Status of a permit on a day. The source records no cancellations, so CANCELLED is never reported; a
/// permit whose validity has not begun has no status in the contract and is reported UNSPECIFIED.
fn permit_status(valid_from: Date, valid_until: Date, on: Date) -> pb::ResidencePermitStatus {
    if on > valid_until {
        pb::ResidencePermitStatus::Expired
    } else if on >= valid_from {
        pb::ResidencePermitStatus::Valid
    } else {
        pb::ResidencePermitStatus::Unspecified
    }
}

/// Residence permits, most recent first (by start, then end of validity), status as of the source's
/// `as_of`.
pub fn residence_permits(d: &mut Discloser<'_>, fetched: &Fetched) -> Section<pb::ResidencePermit> {
    const C: FieldCategory = FieldCategory::ResidencePermit;
    let dept = Department::PublicSecurity;
    let mut permits: Vec<_> = items(fetched.facts(dept, FactCategory::ResidencePermit), |f| match f {
        Fact::ResidencePermit(p) => Some(p),
        _ => None,
    })
    .collect();
    permits.sort_by(|(a, _), (b, _)| {
        b.valid_from
            .cmp(&a.valid_from)
            .then(b.valid_until.cmp(&a.valid_until))
            .then(a.permit_no.cmp(&b.permit_no))
    });
    let entries = permits
        .into_iter()
        .map(|(p, answer)| {
            let status = permit_status(p.valid_from, p.valid_until, cst_date(answer.as_of));
            let status = (status != pb::ResidencePermitStatus::Unspecified).then_some(status);
            pb::ResidencePermit {
                region_code: d.text(C, "region_code", Some(&p.city_region)),
                valid_from: d.text(C, "valid_from", Some(&iso_date(p.valid_from))),
                valid_until: d.text(C, "valid_until", Some(&iso_date(p.valid_until))),
                status: d.value(C, "status", status).map_or(0, |s| s as i32),
                provenance: Some(provenance(dept, answer.as_of)),
            }
        })
        .collect();
    Section::single(dept, entries)
}

/// The employer's name: industry-commerce's registered name when it has one, else as a source recorded
/// it. Returns whether it came from industry-commerce, with that answer's `as_of`.
fn employer_name<'a>(
    names: &'a EmployerNames,
    usci: &str,
    recorded: Option<&'a str>,
) -> (Option<&'a str>, Option<OffsetDateTime>) {
    match names.names.get(usci) {
        Some(registered) => (Some(registered.name.as_str()), Some(registered.as_of)),
        None => (recorded, None),
    }
}

/// Employment, one entry per employer, most recent first (see [`employment::reconcile`]).
pub fn employment(
    d: &mut Discloser<'_>,
    fetched: &Fetched,
    names: &EmployerNames,
) -> Section<pb::Employment> {
    const C: FieldCategory = FieldCategory::Employment;
    let records: Vec<EmployerRecord> = employment::reconcile(
        [Department::Tax, Department::SocialInsurance]
            .into_iter()
            .flat_map(|dept| fetched.facts(dept, FactCategory::Employment)),
    );
    let found = records.iter().flat_map(|r| r.sources.keys().copied()).collect();
    let entries = records
        .into_iter()
        .map(|r| {
            let (name, named_at) = employer_name(names, &r.employer_usci, r.recorded_name.as_deref());
            let employer_name = d.text(C, "employer_name", name);
            let periods: Vec<pb::EmploymentPeriod> = r
                .periods
                .iter()
                .map(|p| pb::EmploymentPeriod {
                    months: Some(p.months.to_proto()),
                    departments: p.departments.iter().map(|dept| dept.code().to_owned()).collect(),
                })
                .collect();
            let mut prov: Vec<pb::Provenance> =
                r.sources.iter().map(|(dept, as_of)| provenance(*dept, *as_of)).collect();
            if let (Some(as_of), false) = (named_at, employer_name.is_empty()) {
                prov.push(provenance(Department::IndustryCommerce, as_of));
            }
            pb::Employment {
                employer_usci: d.text(C, "employer_usci", Some(&r.employer_usci)),
                employer_name,
                periods: d.value(C, "periods", (!periods.is_empty()).then_some(periods)).unwrap_or_default(),
                months: d.value(C, "months", Some(count(r.months))).unwrap_or(0),
                provenance: prov,
            }
        })
        .collect();
    Section { entries, found }
}

/// Contribution summaries per insurance type and region (see [`contributions::summarize`]).
pub fn contributions(d: &mut Discloser<'_>, fetched: &Fetched) -> Section<pb::ContributionSummary> {
    const C: FieldCategory = FieldCategory::Contributions;
    let dept = Department::SocialInsurance;
    let entries = contributions::summarize(fetched.facts(dept, FactCategory::Contributions))
        .into_iter()
        .map(|s| {
            let paid: Vec<pb::MonthRange> = s.paid.iter().map(|run| run.to_proto()).collect();
            pb::ContributionSummary {
                insurance_type: d.value(C, "insurance_type", Some(s.insurance_type)).map_or(0, |t| t as i32),
                region_code: d.text(C, "region_code", s.region.as_deref()),
                months_paid: d.value(C, "months_paid", Some(count(s.months_paid))).unwrap_or(0),
                paid_periods: d
                    .value(C, "paid_periods", (!paid.is_empty()).then_some(paid))
                    .unwrap_or_default(),
                months_in_arrears: d
                    .value(C, "months_in_arrears", Some(count(s.months_in_arrears)))
                    .unwrap_or(0),
                provenance: Some(provenance(dept, s.as_of)),
            }
        })
        .collect();
    Section::single(dept, entries)
}

/// Arrears per employer, insurance type and run of months, most recent first (see
/// [`contributions::arrears`]). The single provenance is social insurance's, whose facts these are;
/// an employer name taken from industry-commerce is not separately attributed (the contract has one
/// provenance per entry).
pub fn arrears(
    d: &mut Discloser<'_>,
    fetched: &Fetched,
    names: &EmployerNames,
) -> Section<pb::ContributionArrears> {
    const C: FieldCategory = FieldCategory::Arrears;
    let dept = Department::SocialInsurance;
    let entries = contributions::arrears(fetched.facts(dept, FactCategory::Contributions))
        .into_iter()
        .map(|a| {
            let (name, _) = employer_name(names, &a.employer_usci, None);
            pb::ContributionArrears {
                employer_usci: d.text(C, "employer_usci", Some(&a.employer_usci)),
                employer_name: d.text(C, "employer_name", name),
                insurance_type: d.value(C, "insurance_type", Some(a.insurance_type)).map_or(0, |t| t as i32),
                months: d.value(C, "months", Some(a.months.to_proto())),
                provenance: Some(provenance(dept, a.as_of)),
            }
        })
        .collect();
    Section::single(dept, entries)
}

fn enrolment_status(code: &str) -> Option<pb::EnrolmentStatus> {
    match code.trim() {
        "enrolled" => Some(pb::EnrolmentStatus::Enrolled),
        "suspended" => Some(pb::EnrolmentStatus::Suspended),
        "transferred" => Some(pb::EnrolmentStatus::TransferredOut),
        "graduated" => Some(pb::EnrolmentStatus::Graduated),
        "left" | "dropped_out" => Some(pb::EnrolmentStatus::Left),
        _ => None,
    }
}

/// Enrolments of the children whose school records were linked to the worker (as guardian) at
/// resolution; nothing about the guardian as recorded is disclosed. Child ID and name are always masked
/// (see [`Discloser`]).
pub fn enrolments(d: &mut Discloser<'_>, fetched: &Fetched) -> Section<pb::ChildEnrolment> {
    const C: FieldCategory = FieldCategory::Enrolment;
    let dept = Department::Education;
    let all: Vec<(&EnrolmentFact, &Facts)> =
        items(fetched.facts(dept, FactCategory::Enrolment), |f| match f {
            Fact::Enrolment(e) => Some(e),
            _ => None,
        })
        .collect();
    let entries = all
        .into_iter()
        .map(|(e, answer)| pb::ChildEnrolment {
            child_citizen_id: d.text(C, "child_citizen_id", e.child_id.as_deref()),
            child_name: d.text(C, "child_name", Some(&e.child_name)),
            school_code: d.text(C, "school_code", Some(&e.school_code)),
            school_name: d.text(C, "school_name", Some(&e.school_name)),
            school_region_code: d.text(C, "school_region_code", e.school_region.as_deref()),
            grade: d.text(C, "grade", Some(&e.grade)),
            status: d.value(C, "status", enrolment_status(&e.status)).map_or(0, |s| s as i32),
            provenance: Some(provenance(dept, answer.as_of)),
        })
        .collect();
    Section::single(dept, entries)
}

pub(crate) fn business_status(code: &str) -> Option<pb::BusinessStatus> {
    match code.trim() {
        "存续" | "在业" | "开业" => Some(pb::BusinessStatus::Active),
        "吊销" => Some(pb::BusinessStatus::Revoked),
        "注销" => Some(pb::BusinessStatus::Deregistered),
        _ => None,
    }
}

/// Whether a business is on the abnormal-operation list on a day: listed by then and not yet removed.
pub(crate) fn listed_abnormal(entries: &[fedx_adapters::source::AbnormalEntry], on: Date) -> bool {
    entries.iter().any(|e| e.listed_on <= on && e.removed_on.is_none_or(|removed| removed > on))
}

/// What a business section needs of an enterprise or individual-business fact.
struct BusinessFacts<'a> {
    usci: &'a str,
    name: &'a str,
    status: &'a str,
    region: &'a str,
    established: Option<Date>,
    abnormal: &'a [fedx_adapters::source::AbnormalEntry],
}

fn business(
    d: &mut Discloser<'_>,
    c: FieldCategory,
    b: &BusinessFacts<'_>,
    as_of: OffsetDateTime,
) -> pb::Business {
    let established = b.established.map(iso_date);
    pb::Business {
        usci: d.text(c, "usci", Some(b.usci)),
        name: d.text(c, "name", Some(b.name)),
        status: d.value(c, "status", business_status(b.status)).map_or(0, |s| s as i32),
        abnormal: d.value(c, "abnormal", Some(listed_abnormal(b.abnormal, cst_date(as_of)))).unwrap_or(false),
        region_code: d.text(c, "region_code", Some(b.region)),
        established_date: d.text(c, "established_date", established.as_deref()),
        provenance: Some(provenance(Department::IndustryCommerce, as_of)),
    }
}

/// Businesses, most recently established first, then by USCI.
fn businesses(
    d: &mut Discloser<'_>,
    c: FieldCategory,
    mut all: Vec<(BusinessFacts<'_>, OffsetDateTime)>,
) -> Section<pb::Business> {
    all.sort_by(|(a, _), (b, _)| b.established.cmp(&a.established).then(a.usci.cmp(b.usci)));
    let entries = all.iter().map(|(b, as_of)| business(d, c, b, *as_of)).collect();
    Section::single(Department::IndustryCommerce, entries)
}

/// Enterprises the worker is the legal representative of (the link was made at resolution on the
/// representative's identifiers). The representative as recorded is not disclosed.
pub fn enterprises(d: &mut Discloser<'_>, fetched: &Fetched) -> Section<pb::Business> {
    let facts = fetched.facts(Department::IndustryCommerce, FactCategory::Enterprise);
    let all = items(facts, |f| match f {
        Fact::Enterprise(e) => Some(e),
        _ => None,
    })
    .map(|(e, answer)| {
        let b = BusinessFacts {
            usci: &e.usci,
            name: &e.name,
            status: &e.status,
            region: &e.region,
            established: e.established,
            abnormal: &e.abnormal,
        };
        (b, answer.as_of)
    })
    .collect();
    businesses(d, FieldCategory::Enterprise, all)
}

/// Individual businesses the worker operates. The operator as recorded is not disclosed.
pub fn individual_businesses(d: &mut Discloser<'_>, fetched: &Fetched) -> Section<pb::Business> {
    let facts = fetched.facts(Department::IndustryCommerce, FactCategory::IndividualBusiness);
    let all = items(facts, |f| match f {
        Fact::IndividualBusiness(b) => Some(b),
        _ => None,
    })
    .map(|(b, answer)| {
        let b = BusinessFacts {
            usci: &b.usci,
            name: &b.name,
            status: &b.status,
            region: &b.region,
            established: b.established,
            abnormal: &b.abnormal,
        };
        (b, answer.as_of)
    })
    .collect();
    businesses(d, FieldCategory::IndividualBusiness, all)
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn permit_status_on_a_day() {
        let (from, until) = (date!(2024 - 03 - 01), date!(2027 - 02 - 28));
        assert_eq!(permit_status(from, until, date!(2026 - 10 - 15)), pb::ResidencePermitStatus::Valid);
        assert_eq!(permit_status(from, until, until), pb::ResidencePermitStatus::Valid);
        assert_eq!(permit_status(from, until, date!(2027 - 03 - 01)), pb::ResidencePermitStatus::Expired);
        assert_eq!(permit_status(from, until, date!(2024 - 02 - 29)), pb::ResidencePermitStatus::Unspecified);
    }

    #[test]
    fn abnormal_listing_counts_only_while_listed() {
        use fedx_adapters::source::AbnormalEntry;
        let entry =
            |listed, removed| AbnormalEntry { listed_on: listed, reason: "r".into(), removed_on: removed };
        let on = date!(2026 - 10 - 15);
        assert!(listed_abnormal(&[entry(date!(2025 - 01 - 01), None)], on));
        assert!(!listed_abnormal(&[entry(date!(2025 - 01 - 01), Some(date!(2025 - 06 - 01)))], on));
        assert!(listed_abnormal(&[entry(date!(2025 - 01 - 01), Some(date!(2026 - 11 - 01)))], on));
        assert!(!listed_abnormal(&[entry(date!(2026 - 11 - 01), None)], on));
        assert!(!listed_abnormal(&[], on));
    }

    #[test]
    fn status_codes_map_onto_the_contract() {
        assert_eq!(business_status("存续"), Some(pb::BusinessStatus::Active));
        assert_eq!(business_status("吊销"), Some(pb::BusinessStatus::Revoked));
        assert_eq!(business_status("注销"), Some(pb::BusinessStatus::Deregistered));
        assert_eq!(business_status("迁出"), None);
        assert_eq!(enrolment_status("transferred"), Some(pb::EnrolmentStatus::TransferredOut));
        assert_eq!(enrolment_status("unknown"), None);
        assert_eq!(iso_date(date!(2024 - 01 - 05)), "2024-01-05");
    }
}
