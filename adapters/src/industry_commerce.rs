//! 市场监管/工商 industry and commerce: enterprises (with their legal representative), individual
//! businesses (个体工商户, often run by workers) and the abnormal-operation list (经营异常名录).

use crate::reader::{ReadError, Reader};
use futures::future::BoxFuture;

use crate::dept::Department;
use crate::source::{AbnormalEntry, EnterpriseFact, Fact, FactCategory, IndividualBusinessFact};
use crate::sql_source::{row_date, row_str, CandidateTable, DeptSpec};
use crate::table::{col, IndexSpec, Kind, PersonKeys, TableSpec};

/// Registration status: 存续 (active), 吊销 (licence revoked), 注销 (deregistered).
pub const STATUSES: &[&str] = &["存续", "吊销", "注销"];

pub static ENTERPRISE: TableSpec = TableSpec {
    dept: Department::IndustryCommerce,
    name: "enterprise",
    doc: "Registered enterprises.",
    columns: &[
        col("usci", Kind::Usci, true, "Unified social credit code; record key."),
        col("name", Kind::Text, true, "Registered name (企业名称)."),
        col("status", Kind::OneOf(STATUSES), true, "登记状态."),
        col("legal_rep_name", Kind::Name, true, "Legal representative (法定代表人)."),
        col("legal_rep_id", Kind::CitizenIdLoose, false, "Legal representative's ID number."),
        col("region", Kind::Text, true, "GB/T 2260 code of the registration authority's district."),
        col("industry", Kind::Text, false, "Industry (行业), e.g. 建筑业."),
        col("established_on", Kind::Date, false, "成立日期."),
    ],
    person: Some(PersonKeys {
        record_key: "usci",
        prefix: "rep_",
        id: Some("legal_rep_id"),
        name: Some("legal_rep_name"),
        phone: None,
        birth: None,
        sex: None,
    }),
    indexes: &[IndexSpec { name: "pk", columns: "usci", unique: true }],
};

pub static INDIVIDUAL_BUSINESS: TableSpec = TableSpec {
    dept: Department::IndustryCommerce,
    name: "individual_business",
    doc: "Individual businesses (个体工商户) and their operators.",
    columns: &[
        col("usci", Kind::Usci, true, "USCI (registration authority code 9, type 2); record key."),
        col("name", Kind::Text, true, "Business name (字号), may be the operator's name."),
        col("status", Kind::OneOf(STATUSES), true, "登记状态."),
        col("operator_name", Kind::Name, true, "经营者姓名."),
        col("operator_id", Kind::CitizenIdLoose, false, "经营者身份证号."),
        col("operator_phone", Kind::Phone, false, "经营者联系电话."),
        col("region", Kind::Text, true, "GB/T 2260 code of the business's district."),
        col("established_on", Kind::Date, false, "成立日期."),
    ],
    person: Some(PersonKeys {
        record_key: "usci",
        prefix: "operator_",
        id: Some("operator_id"),
        name: Some("operator_name"),
        phone: Some("operator_phone"),
        birth: None,
        sex: None,
    }),
    indexes: &[IndexSpec { name: "pk", columns: "usci", unique: true }],
};

pub static ABNORMAL_LIST: TableSpec = TableSpec {
    dept: Department::IndustryCommerce,
    name: "abnormal_list",
    doc: "Entries on the abnormal-operation list; an entry stays after removal, with removed_on set.",
    columns: &[
        col("usci", Kind::Usci, true, "Listed enterprise or individual business."),
        col("listed_on", Kind::Date, true, "列入日期."),
        col("reason", Kind::Text, true, "列入原因, e.g. 未按规定报送年度报告."),
        col("authority", Kind::Text, false, "Deciding authority (作出决定机关)."),
        col("removed_on", Kind::Date, false, "移出日期, if removed."),
    ],
    person: None,
    indexes: &[IndexSpec { name: "pk", columns: "usci, listed_on", unique: true }],
};

pub(crate) static SPEC: DeptSpec = DeptSpec {
    dept: Department::IndustryCommerce,
    tables: &[&ENTERPRISE, &INDIVIDUAL_BUSINESS, &ABNORMAL_LIST],
    candidates: &[
        CandidateTable { table: &ENTERPRISE, region_col: Some("region"), usci: Some("usci") },
        CandidateTable { table: &INDIVIDUAL_BUSINESS, region_col: Some("region"), usci: Some("usci") },
    ],
    categories: &[FactCategory::Enterprise, FactCategory::IndividualBusiness],
    facts,
    employer_contributions: None,
};

async fn abnormal(reader: &Reader, usci: &str) -> Result<Vec<AbnormalEntry>, ReadError> {
    let rows = reader
        .rows(
            "SELECT listed_on, reason, removed_on FROM abnormal_list WHERE usci = $1 ORDER BY listed_on",
            &[usci],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(AbnormalEntry {
                listed_on: row_date(r, 0)?,
                reason: row_str(r, 1)?,
                removed_on: row_date(r, 2),
            })
        })
        .collect())
}

fn facts<'a>(
    reader: &'a Reader,
    table: &'a str,
    key: &'a str,
    category: FactCategory,
) -> BoxFuture<'a, Result<Option<Vec<Fact>>, ReadError>> {
    Box::pin(async move {
        match (table, category) {
            ("enterprise", FactCategory::Enterprise) => {
                let Some(r) = reader
                    .first(
                        "SELECT usci, name, status, legal_rep_name, region, established_on \
                     FROM enterprise WHERE usci = $1",
                        &[key],
                    )
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some(vec![Fact::Enterprise(EnterpriseFact {
                    usci: row_str(&r, 0).unwrap_or_default(),
                    name: row_str(&r, 1).unwrap_or_default(),
                    status: row_str(&r, 2).unwrap_or_default(),
                    legal_rep: row_str(&r, 3).unwrap_or_default(),
                    region: row_str(&r, 4).unwrap_or_default(),
                    established: row_date(&r, 5),
                    abnormal: abnormal(reader, key).await?,
                })]))
            }
            ("individual_business", FactCategory::IndividualBusiness) => {
                let Some(r) = reader
                    .first(
                        "SELECT usci, name, status, operator_name, region, established_on \
                     FROM individual_business WHERE usci = $1",
                        &[key],
                    )
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some(vec![Fact::IndividualBusiness(IndividualBusinessFact {
                    usci: row_str(&r, 0).unwrap_or_default(),
                    name: row_str(&r, 1).unwrap_or_default(),
                    status: row_str(&r, 2).unwrap_or_default(),
                    operator_name: row_str(&r, 3).unwrap_or_default(),
                    region: row_str(&r, 4).unwrap_or_default(),
                    established: row_date(&r, 5),
                    abnormal: abnormal(reader, key).await?,
                })]))
            }
            _ => Ok(None),
        }
    })
}
