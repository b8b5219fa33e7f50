//! 税务 tax: the natural-person taxpayer registry and monthly withholding declarations by employers
//! (扣缴义务人).
//!
//! Employers register their employees; a mistyped ID number creates a second taxpayer record for the
//! same person, which is why a person can have several taxpayer records here.

use crate::reader::{ReadError, Reader};
use futures::future::BoxFuture;

use crate::dept::Department;
use crate::source::{EmploymentFact, Fact, FactCategory};
use crate::sql_source::{row_int, row_str, CandidateTable, DeptSpec};
use crate::table::{col, IndexSpec, Kind, PersonKeys, TableSpec};

/// Natural-person taxpayer registry (自然人纳税人).
pub static TAXPAYER: TableSpec = TableSpec {
    dept: Department::Tax,
    name: "taxpayer",
    doc: "Natural-person taxpayers as registered by their employers.",
    columns: &[
        col("taxpayer_no", Kind::Text, true, "Tax bureau's internal taxpayer file number; record key."),
        col(
            "id_number",
            Kind::CitizenIdLoose,
            true,
            "ID number as typed by the registering employer (may be mistyped).",
        ),
        col("name", Kind::Name, true, "Name as registered."),
        col("phone", Kind::Phone, false, "Mobile number, if registered."),
        col("registered_by", Kind::Usci, false, "USCI of the employer that registered the taxpayer."),
        col("registered_on", Kind::Date, false, "Registration date."),
    ],
    person: Some(PersonKeys {
        record_key: "taxpayer_no",
        prefix: "",
        id: Some("id_number"),
        name: Some("name"),
        phone: Some("phone"),
        birth: None,
        sex: None,
    }),
    indexes: &[IndexSpec { name: "pk", columns: "taxpayer_no", unique: true }],
};

/// Monthly individual-income-tax withholding lines (全员全额扣缴申报).
pub static WITHHOLDING: TableSpec = TableSpec {
    dept: Department::Tax,
    name: "withholding",
    doc: "One row per taxpayer, employer and month of a withholding declaration.",
    columns: &[
        col("taxpayer_no", Kind::Text, true, "taxpayer.taxpayer_no."),
        col("employer_usci", Kind::Usci, true, "Withholding agent's USCI."),
        col("month", Kind::Month, true, "Income month (所属期), YYYY-MM."),
        col("income_fen", Kind::Int, true, "Wage income for the month, in fen (0.01 yuan)."),
        col("tax_fen", Kind::Int, true, "Tax withheld for the month, in fen."),
        col("declared_on", Kind::Date, false, "Date of the declaration."),
    ],
    person: None,
    indexes: &[IndexSpec { name: "pk", columns: "taxpayer_no, month, employer_usci", unique: true }],
};

pub(crate) static SPEC: DeptSpec = DeptSpec {
    dept: Department::Tax,
    tables: &[&TAXPAYER, &WITHHOLDING],
    candidates: &[CandidateTable { table: &TAXPAYER, region_col: None, usci: None }],
    categories: &[FactCategory::Employment],
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
        if table != "taxpayer" || category != FactCategory::Employment {
            return Ok(None);
        }
        // The taxpayer row tells whether the record exists; NULL withholding columns: no declarations.
        let Some(rows) = reader
            .rows_of_record(
                "SELECT w.employer_usci, w.month, w.income_fen, w.tax_fen FROM taxpayer t \
                 LEFT JOIN withholding w ON w.taxpayer_no = t.taxpayer_no WHERE t.taxpayer_no = $1 \
                 ORDER BY w.month, w.employer_usci",
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
                        // Names come from industry-commerce by USCI; tax declarations key on the code.
                        employer_name: None,
                        month: row_str(r, 1)?,
                        income_fen: row_int(r, 2),
                        tax_fen: row_int(r, 3),
                    }))
                })
                .collect(),
        ))
    })
}
