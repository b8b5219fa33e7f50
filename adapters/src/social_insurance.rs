//! 人社/社保 social insurance: insured persons and monthly contributions per employer and insurance
//! type, paid or in arrears.
//!
//! Records created before 1999 may still carry the person's legacy 15-digit ID number as the social
//! security number; those are upgraded to 18 characters in `id_norm` at write time.

use crate::reader::{ReadError, Reader};
use futures::future::BoxFuture;

use crate::dept::Department;
use crate::source::{ContributionFact, ContributionStatus, EmploymentFact, Fact, FactCategory};
use crate::sql_source::{row_int, row_str, CandidateTable, DeptSpec, EmployerDeclared};
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
    indexes: &[
        IndexSpec { name: "pk", columns: "si_no, month, employer_usci, insurance_type", unique: true },
        // Employer-level status: "any arrears (in these months)?" is one probe of this index.
        IndexSpec { name: "employer", columns: EMPLOYER_INDEX_COLUMNS, unique: false },
    ],
};

/// Name of the index [`employer_contributions`] reads (`<table>_<IndexSpec::name>`).
const EMPLOYER_INDEX: &str = "contribution_employer";
const EMPLOYER_INDEX_COLUMNS: &str = "employer_usci, status, month";

pub(crate) static SPEC: DeptSpec = DeptSpec {
    dept: Department::SocialInsurance,
    tables: &[&INSURED_PERSON, &CONTRIBUTION],
    candidates: &[CandidateTable { table: &INSURED_PERSON, region_col: Some("insured_region"), usci: None }],
    categories: &[FactCategory::Employment, FactCategory::Contributions],
    facts,
    employer_contributions: Some(employer_contributions),
};

/// The probe of [`employer_contributions`]: is there a row of this employer with this status (in these
/// months)? Equality on the first two columns of `contribution_employer` and a range on the third, so it
/// is one seek into the index, which covers every column the query reads (the table is not touched).
fn employer_probe_sql(with_months: bool, force_index: bool) -> String {
    let hint = if force_index { format!(" INDEXED BY {EMPLOYER_INDEX}") } else { String::new() };
    let months = if with_months { " AND month BETWEEN $3 AND $4" } else { "" };
    format!("SELECT 1 FROM contribution{hint} WHERE employer_usci = $1 AND status = $2{months} LIMIT 1")
}

/// Two index probes: any arrears; if none, anything paid. Statuses are validated on write (`paid` or
/// `arrears`), so "declared" is "arrears or paid". An employer with millions of rows costs the same two
/// seeks as one with none.
fn employer_contributions<'a>(
    reader: &'a Reader,
    usci: &'a str,
    months: Option<(&'a str, &'a str)>,
    force_index: bool,
) -> BoxFuture<'a, Result<EmployerDeclared, ReadError>> {
    Box::pin(async move {
        let sql = employer_probe_sql(months.is_some(), force_index);
        let probe = |status: &'static str| {
            let args = match months {
                Some((from, to)) => vec![usci, status, from, to],
                None => vec![usci, status],
            };
            let sql = &sql;
            async move { reader.exists(sql, &args).await }
        };
        if probe("arrears").await? {
            return Ok(EmployerDeclared { declared: true, in_arrears: true });
        }
        let declared = probe("paid").await?;
        Ok(EmployerDeclared { declared, in_arrears: false })
    })
}

fn facts<'a>(
    reader: &'a Reader,
    table: &'a str,
    key: &'a str,
    category: FactCategory,
) -> BoxFuture<'a, Result<Option<Vec<Fact>>, ReadError>> {
    Box::pin(async move {
        if table != "insured_person" {
            return Ok(None);
        }
        // One statement per category: the person row tells whether the record exists (no row: `None`;
        // a row with NULL contribution columns: an insured person without contributions) and gives the
        // insuring region, which contributions inherit.
        match category {
            FactCategory::Contributions => {
                let Some(rows) = reader
                    .rows_of_record(
                        "SELECT p.insured_region, c.employer_usci, c.month, c.insurance_type, c.base_fen, \
                         c.amount_fen, c.status FROM insured_person p \
                         LEFT JOIN contribution c ON c.si_no = p.si_no WHERE p.si_no = $1 \
                         ORDER BY c.month, c.employer_usci, c.insurance_type",
                        key,
                    )
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some(
                    rows.iter()
                        .filter_map(|r| {
                            Some(Fact::Contribution(ContributionFact {
                                employer_usci: row_str(r, 1)?,
                                month: row_str(r, 2)?,
                                insurance_type: row_str(r, 3)?,
                                base_fen: row_int(r, 4)?,
                                amount_fen: row_int(r, 5)?,
                                status: match row_str(r, 6)?.as_str() {
                                    "arrears" => ContributionStatus::Arrears,
                                    _ => ContributionStatus::Paid,
                                },
                                insured_region: row_str(r, 0),
                            }))
                        })
                        .collect(),
                ))
            }
            // A month in which an employer declared any contribution is a month of employment.
            FactCategory::Employment => {
                let Some(rows) = reader
                    .rows_of_record(
                        "SELECT DISTINCT c.employer_usci, c.month FROM insured_person p \
                         LEFT JOIN contribution c ON c.si_no = p.si_no WHERE p.si_no = $1 \
                         ORDER BY c.month, c.employer_usci",
                        key,
                    )
                    .await?
                else {
                    return Ok(None);
                };
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

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor, Row};

    use super::*;
    use crate::db;

    /// The employer probes are one seek into `contribution_employer`, which covers them (the table is
    /// never read), with and without a period and whether or not the index is named — even when the
    /// statistics say one employer holds every row of a 48-million-row table.
    #[tokio::test]
    async fn employer_probes_seek_the_covering_employer_index() {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect("sqlite::memory:").await.unwrap();
        db::create_tables(&mut conn, SPEC.tables).await.unwrap();
        db::create_indexes(&mut conn, SPEC.tables).await.unwrap();
        assert!(CONTRIBUTION.index_sql().iter().any(|s| s.contains(&format!(
            "INDEX IF NOT EXISTS {EMPLOYER_INDEX} ON contribution ({EMPLOYER_INDEX_COLUMNS})"
        ))));
        conn.execute("ANALYZE").await.unwrap();
        for (idx, stat) in
            [("contribution_pk", "48000000 48 2 1 1"), (EMPLOYER_INDEX, "48000000 48000000 24000000 1000000")]
        {
            sqlx::query("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('contribution', $1, $2)")
                .bind(idx)
                .bind(stat)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.execute("ANALYZE sqlite_schema").await.unwrap();

        for with_months in [false, true] {
            for force_index in [false, true] {
                let sql = employer_probe_sql(with_months, force_index);
                let explain = format!("EXPLAIN QUERY PLAN {sql}");
                let mut q = sqlx::query(&explain).bind("91350100M000100Y43").bind("arrears");
                if with_months {
                    q = q.bind("2024-01").bind("2024-12");
                }
                let plan: Vec<String> = q
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.try_get::<String, _>(3).unwrap())
                    .collect();
                let plan = plan.join(" | ");
                let expected = format!("SEARCH contribution USING COVERING INDEX {EMPLOYER_INDEX} (");
                assert!(plan.starts_with(&expected), "{sql}: {plan}");
                let range = if with_months { "month>? AND month<?" } else { "status=?)" };
                assert!(plan.contains(range), "{sql}: {plan}");
            }
        }
    }
}
