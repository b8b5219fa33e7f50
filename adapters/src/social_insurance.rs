//! 人社/社保 social insurance: insured persons and monthly contributions per employer and insurance
//! type, paid or in arrears.
//!
//! Records created before 1999 may still carry the person's legacy 15-digit ID number as the social
//! security number; those are upgraded to 18 characters in `id_norm` at write time.

use futures::future::BoxFuture;
use sqlx::AnyPool;

use crate::dept::Department;
use crate::source::{ContributionFact, ContributionStatus, EmploymentFact, Fact, FactCategory};
use crate::sql_source::{row_int, row_str, CandidateTable, DeptSpec};
use crate::table::{col, IndexSpec, Kind, PersonKeys, TableSpec};

pub const INSURANCE_TYPES: &[&str] = &["pension", "medical", "unemployment", "work_injury", "maternity"];
pub const STATUSES: &[&str] = &["paid", "arrears"];

/// Insured persons (参保人员).
pub static INSURED_PERSON: TableSpec = TableSpec {
    dept: Department::SocialInsurance,
    name: "insured_person",
    doc: "Insured persons, one row per social security number.",
    columns: &[
        col("si_no", Kind::Text, true, "个人编号 (social insurance person number); record key."),
        col(
            "id_number",
            Kind::CitizenIdLoose,
            true,
            "社会保障号码: the ID number, legacy records 15 digits.",
        ),
        col("name", Kind::Name, true, "Name as enrolled."),
        col("sex", Kind::OneOf(crate::public_security::SEX), false, "性别 as enrolled."),
        col("birth_date", Kind::Date, false, "出生日期 as enrolled."),
        col("phone", Kind::Phone, false, "Contact mobile number."),
        col("insured_region", Kind::Text, true, "GB/T 2260 code of the insuring county/district (参保地)."),
        col("registered_on", Kind::Date, false, "参保登记日期."),
    ],
    person: Some(PersonKeys {
        record_key: "si_no",
        prefix: "",
        id: Some("id_number"),
        name: Some("name"),
        phone: Some("phone"),
        birth: Some("birth_date"),
        sex: Some("sex"),
    }),
    indexes: &[IndexSpec { name: "pk", columns: "si_no", unique: true }],
};

/// Monthly contributions (缴费明细).
pub static CONTRIBUTION: TableSpec = TableSpec {
    dept: Department::SocialInsurance,
    name: "contribution",
    doc: "One row per insured person, employer, month and insurance type.",
    columns: &[
        col("si_no", Kind::Text, true, "insured_person.si_no."),
        col("employer_usci", Kind::Usci, true, "Contributing employer (参保单位) USCI."),
        col("month", Kind::Month, true, "Contribution month (费款所属期), YYYY-MM."),
        col("insurance_type", Kind::OneOf(INSURANCE_TYPES), true, "险种."),
        col("base_fen", Kind::Int, true, "Contribution base (缴费基数), fen."),
        col("amount_fen", Kind::Int, true, "Amount due, employer + employee share, fen."),
        col("status", Kind::OneOf(STATUSES), true, "paid, or arrears (欠缴)."),
    ],
    person: None,
    indexes: &[IndexSpec {
        name: "pk",
        columns: "si_no, month, employer_usci, insurance_type",
        unique: true,
    }],
};

pub(crate) static SPEC: DeptSpec = DeptSpec {
    dept: Department::SocialInsurance,
    tables: &[&INSURED_PERSON, &CONTRIBUTION],
    candidates: &[CandidateTable { table: &INSURED_PERSON, region_col: Some("insured_region"), usci: None }],
    categories: &[FactCategory::Employment, FactCategory::Contributions],
    facts,
};

fn facts<'a>(
    pool: &'a AnyPool,
    table: &'a str,
    key: &'a str,
    category: FactCategory,
) -> BoxFuture<'a, Result<Option<Vec<Fact>>, sqlx::Error>> {
    Box::pin(async move {
        if table != "insured_person" {
            return Ok(None);
        }
        // The insuring region belongs to the insured-person record; contributions inherit it.
        let Some(person) = sqlx::query("SELECT insured_region FROM insured_person WHERE si_no = $1")
            .bind(key)
            .fetch_optional(pool)
            .await?
        else {
            return Ok(None);
        };
        let insured_region = row_str(&person, 0);
        match category {
            FactCategory::Contributions => {
                let rows = sqlx::query(
                    "SELECT employer_usci, month, insurance_type, base_fen, amount_fen, status \
                     FROM contribution WHERE si_no = $1 \
                     ORDER BY month, employer_usci, insurance_type",
                )
                .bind(key)
                .fetch_all(pool)
                .await?;
                Ok(Some(
                    rows.iter()
                        .filter_map(|r| {
                            Some(Fact::Contribution(ContributionFact {
                                employer_usci: row_str(r, 0)?,
                                month: row_str(r, 1)?,
                                insurance_type: row_str(r, 2)?,
                                base_fen: row_int(r, 3)?,
                                amount_fen: row_int(r, 4)?,
                                status: match row_str(r, 5)?.as_str() {
                                    "arrears" => ContributionStatus::Arrears,
                                    _ => ContributionStatus::Paid,
                                },
                                insured_region: insured_region.clone(),
                            }))
                        })
                        .collect(),
                ))
            }
            // A month in which an employer declared any contribution is a month of employment.
            FactCategory::Employment => {
                let rows = sqlx::query(
                    "SELECT DISTINCT employer_usci, month FROM contribution \
                     WHERE si_no = $1 ORDER BY month, employer_usci",
                )
                .bind(key)
                .fetch_all(pool)
                .await?;
                Ok(Some(
                    rows.iter()
                        .filter_map(|r| {
                            Some(Fact::Employment(EmploymentFact {
                                employer_usci: row_str(r, 0)?,
                                employer_name: None,
                                month: row_str(r, 1)?,
                                income_fen: None,
                                tax_fen: None,
                            }))
                        })
                        .collect(),
                ))
            }
            _ => Ok(None),
        }
    })
}
