//! 教育 education: school enrolment (学籍) of migrant workers' children (随迁子女).
//!
//! A worker appears here only as a guardian: the guardian's ID is often missing and some guardians are
//! recorded by phone only, so look-ups go through the `guardian_*` normalised columns.

use crate::reader::{ReadError, Reader};
use futures::future::BoxFuture;

use crate::dept::Department;
use crate::source::{EnrolmentFact, Fact, FactCategory};
use crate::sql_source::{row_str, CandidateTable, DeptSpec};
use crate::table::{col, IndexSpec, Kind, PersonKeys, TableSpec};

pub const STATUSES: &[&str] = &["enrolled", "transferred", "graduated", "suspended"];
pub const RELATIONS: &[&str] = &["父亲", "母亲", "其他"];

/// Student enrolment records.
pub static STUDENT: TableSpec = TableSpec {
    dept: Department::Education,
    name: "student",
    doc: "One row per enrolled child, with the guardian as recorded by the school.",
    columns: &[
        col("student_no", Kind::Text, true, "School-roll number (学籍辅号); record key."),
        col("child_id", Kind::CitizenIdLoose, false, "Child's ID number (missing for some children)."),
        col("child_name", Kind::Name, true, "Child's name."),
        col("child_sex", Kind::OneOf(crate::public_security::SEX), false, "Child's sex."),
        col("child_birth_date", Kind::Date, false, "Child's birth date."),
        col("school_code", Kind::Text, true, "10-digit school identification code (学校标识码)."),
        col("school_name", Kind::Text, true, "School name."),
        col("school_region", Kind::Text, true, "GB/T 2260 code of the school's district."),
        col("grade", Kind::Text, true, "Grade, e.g. 一年级 … 九年级."),
        col("status", Kind::OneOf(STATUSES), true, "Enrolment status."),
        col("enrolled_on", Kind::Date, false, "Date of enrolment at this school."),
        col("guardian_name", Kind::Name, false, "Guardian's name (missing for phone-only guardians)."),
        col("guardian_id", Kind::CitizenIdLoose, false, "Guardian's ID number (often missing)."),
        col("guardian_phone", Kind::Phone, false, "Guardian's mobile number."),
        col("guardian_relation", Kind::OneOf(RELATIONS), false, "Relation of the guardian to the child."),
    ],
    person: Some(PersonKeys {
        record_key: "student_no",
        prefix: "guardian_",
        id: Some("guardian_id"),
        name: Some("guardian_name"),
        phone: Some("guardian_phone"),
        birth: None,
        sex: None,
    }),
    indexes: &[IndexSpec { name: "pk", columns: "student_no", unique: true }],
};

pub(crate) static SPEC: DeptSpec = DeptSpec {
    dept: Department::Education,
    tables: &[&STUDENT],
    candidates: &[CandidateTable { table: &STUDENT, region_col: Some("school_region"), usci: None }],
    categories: &[FactCategory::Enrolment],
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
        if table != "student" || category != FactCategory::Enrolment {
            return Ok(None);
        }
        let row = reader
            .first(
                "SELECT student_no, child_name, child_id, school_code, school_name, grade, status, \
             guardian_name, guardian_id, guardian_phone, school_region FROM student WHERE student_no = $1",
                &[key],
            )
            .await?;
        Ok(row.map(|r| {
            vec![Fact::Enrolment(EnrolmentFact {
                student_no: row_str(&r, 0).unwrap_or_default(),
                child_name: row_str(&r, 1).unwrap_or_default(),
                child_id: row_str(&r, 2),
                school_code: row_str(&r, 3).unwrap_or_default(),
                school_name: row_str(&r, 4).unwrap_or_default(),
                school_region: row_str(&r, 10),
                grade: row_str(&r, 5).unwrap_or_default(),
                status: row_str(&r, 6).unwrap_or_default(),
                guardian_name: row_str(&r, 7),
                guardian_id: row_str(&r, 8),
                guardian_phone: row_str(&r, 9),
            })]
        }))
    })
}
