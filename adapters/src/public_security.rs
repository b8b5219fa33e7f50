//! 公安 public security: household registration (户籍) and residence permits (居住证).
//!
//! The authoritative source for identity: its ID numbers are validated 18-character numbers; other
//! departments' records are linked to a person by comparing with these.

use crate::reader::{ReadError, Reader};
use futures::future::BoxFuture;

use crate::dept::Department;
use crate::source::{Fact, FactCategory, IdentityFact, ResidencePermitFact};
use crate::sql_source::{row_date, row_sex, row_str, CandidateTable, DeptSpec};
use crate::table::{col, IndexSpec, Kind, PersonKeys, TableSpec};

pub const SEX: &[&str] = &["男", "女"];

/// Household-registration records, one per person.
pub static PERSON: TableSpec = TableSpec {
    dept: Department::PublicSecurity,
    name: "person",
    doc: "Household registration (户籍): one row per registered person.",
    columns: &[
        col("person_no", Kind::Text, true, "Registry's own person number (人员编号); record key."),
        col("citizen_id", Kind::CitizenIdStrict, true, "18-character citizen ID number as registered."),
        col("name", Kind::Name, true, "Registered name (姓名)."),
        col("sex", Kind::OneOf(SEX), true, "性别: 男 or 女."),
        col("birth_date", Kind::Date, true, "出生日期."),
        col("ethnicity", Kind::Text, false, "民族, e.g. 汉, 彝, 维吾尔."),
        col("hukou_region", Kind::Text, true, "GB/T 2260 code of the hukou's county (户籍地)."),
        col("hukou_address", Kind::Text, false, "户籍地址 (street address)."),
        col("phone", Kind::Phone, false, "Contact mobile number, if given."),
        col("updated_on", Kind::Date, false, "Last change of the registration."),
    ],
    person: Some(PersonKeys {
        record_key: "person_no",
        prefix: "",
        id: Some("citizen_id"),
        name: Some("name"),
        phone: Some("phone"),
        birth: Some("birth_date"),
        sex: Some("sex"),
    }),
    indexes: &[IndexSpec { name: "pk", columns: "person_no", unique: true }],
};

/// Residence permits issued to people living outside their hukou region.
pub static RESIDENCE_PERMIT: TableSpec = TableSpec {
    dept: Department::PublicSecurity,
    name: "residence_permit",
    doc: "Residence permits (居住证), several per person over time.",
    columns: &[
        col("permit_no", Kind::Text, true, "居住证编号; unique."),
        col("person_no", Kind::Text, true, "The holder (person.person_no)."),
        col("city_region", Kind::Text, true, "GB/T 2260 code of the issuing county/district."),
        col("address", Kind::Text, false, "居住地址."),
        col("valid_from", Kind::Date, true, "First day of validity."),
        col("valid_until", Kind::Date, true, "Last day of validity."),
    ],
    person: None,
    indexes: &[
        IndexSpec { name: "pk", columns: "permit_no", unique: true },
        IndexSpec { name: "person", columns: "person_no, valid_from", unique: false },
    ],
};

pub(crate) static SPEC: DeptSpec = DeptSpec {
    dept: Department::PublicSecurity,
    tables: &[&PERSON, &RESIDENCE_PERMIT],
    candidates: &[CandidateTable { table: &PERSON, region_col: Some("hukou_region"), usci: None }],
    categories: &[FactCategory::Identity, FactCategory::ResidencePermit],
    facts,
    employer_contributions: None,
};

fn facts<'a>(
    reader: &'a Reader,
    table: &'a str,
    key: &'a str,
    category: FactCategory,
) -> BoxFuture<'a, Result<Option<Vec<Fact>>, ReadError>> {
    Box::pin(async move {
        if table != "person" {
            return Ok(None);
        }
        match category {
            FactCategory::Identity => {
                let row = reader
                    .first(
                        "SELECT citizen_id, name, sex_norm, birth_norm, ethnicity, hukou_region, \
                     hukou_address FROM person WHERE person_no = $1",
                        &[key],
                    )
                    .await?;
                Ok(row.map(|r| {
                    vec![Fact::Identity(IdentityFact {
                        citizen_id: row_str(&r, 0).unwrap_or_default(),
                        name: row_str(&r, 1).unwrap_or_default(),
                        sex: row_sex(&r, 2),
                        birth_date: row_date(&r, 3),
                        ethnicity: row_str(&r, 4),
                        hukou_region: row_str(&r, 5),
                        hukou_address: row_str(&r, 6),
                    })]
                }))
            }
            FactCategory::ResidencePermit => {
                // The person row tells whether the record exists; NULL permit columns: no permits.
                let Some(rows) = reader
                    .rows_of_record(
                        "SELECT r.permit_no, r.city_region, r.valid_from, r.valid_until FROM person p \
                         LEFT JOIN residence_permit r ON r.person_no = p.person_no \
                         WHERE p.person_no = $1 ORDER BY r.valid_from",
                        key,
                    )
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some(
                    rows.iter()
                        .filter_map(|r| {
                            Some(Fact::ResidencePermit(ResidencePermitFact {
                                permit_no: row_str(r, 0)?,
                                city_region: row_str(r, 1)?,
                                valid_from: row_date(r, 2)?,
                                valid_until: row_date(r, 3)?,
                            }))
                        })
                        .collect(),
                ))
            }
            _ => Ok(None),
        }
    })
}
