//! Declarative table specifications shared by the schema (DDL), CSV import, the generator and
//! SOURCES.md.
//!
//! A department export is a table of RAW values as the department recorded them (noisy IDs, names with
//! stray spaces…). Each table spec lists those raw columns with a validation kind, plus an optional block
//! of *person keys*: normalised look-up columns (`id_norm`, `name_norm`, `birth_norm`, …) computed at
//! write time from the raw ones, so candidate look-ups are index hits. One spec drives the DDL for both
//! SQLite and PostgreSQL, the import validation, and the generator's writes; nothing is described twice.

use std::fmt;

use crate::dept::Department;
use crate::keys;

/// A value to store. Only two SQL types are used, `TEXT` and `BIGINT`, which mean the same in SQLite
/// and PostgreSQL and map directly onto sqlx's `Any` driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

/// How a raw column is validated (and for dates/months/USCI, canonicalised) on write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text, stored as given.
    Text,
    /// A person's name, stored as given (normalised form goes to `name_norm`).
    Name,
    /// Whole number (amounts in fen).
    Int,
    /// Calendar date; stored as ISO `YYYY-MM-DD`.
    Date,
    /// Calendar month; stored as `YYYY-MM`.
    Month,
    /// Citizen ID that must be a valid 18-character number (public security is authoritative).
    CitizenIdStrict,
    /// Citizen ID as other departments record it: valid, legacy 15-digit, or suspect (typo'd) but
    /// ID-shaped. Stored raw; rejected only if it is not an ID number at all.
    CitizenIdLoose,
    /// Unified social credit code; must have a valid check character; stored canonical.
    Usci,
    /// Phone number (mobile, or landline with area code) in any common format; stored raw.
    Phone,
    /// One of a fixed set of codes.
    OneOf(&'static [&'static str]),
}

impl Kind {
    fn sql_type(self) -> &'static str {
        match self {
            Kind::Int => "BIGINT",
            _ => "TEXT",
        }
    }

    /// Human description for SOURCES.md.
    pub fn describe(self) -> String {
        match self {
            Kind::Text => "text".into(),
            Kind::Name => "name (raw)".into(),
            Kind::Int => "integer".into(),
            Kind::Date => "date YYYY-MM-DD".into(),
            Kind::Month => "month YYYY-MM".into(),
            Kind::CitizenIdStrict => "citizen ID, valid 18 chars".into(),
            Kind::CitizenIdLoose => "citizen ID as recorded (18, legacy 15, or typo'd)".into(),
            Kind::Usci => "USCI, valid check char".into(),
            Kind::Phone => "phone number, mobile or landline with area code (raw)".into(),
            Kind::OneOf(v) => format!("one of {}", v.join(", ")),
        }
    }
}

/// One raw column.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub doc: &'static str,
}

/// Shorthand constructor used by the department modules.
pub const fn col(name: &'static str, kind: Kind, required: bool, doc: &'static str) -> Column {
    Column { name, kind, required, doc }
}

/// Where a table's person identifiers live; drives the derived `<prefix>*_norm` columns and their
/// indexes.
#[derive(Debug, Clone, Copy)]
pub struct PersonKeys {
    /// The record's key column. Every person-key index ends with it, so a look-up's
    /// `ORDER BY key LIMIT n` is read straight from the index: without it a planner that believes an
    /// equality is unselective (a mostly-NULL column, say) walks the whole table in key order instead.
    pub record_key: &'static str,
    /// Prefix of the derived columns (`""`, `"guardian_"`, `"operator_"`…).
    pub prefix: &'static str,
    pub id: Option<&'static str>,
    pub name: Option<&'static str>,
    pub phone: Option<&'static str>,
    /// Raw birth-date column, used when the ID does not give one.
    pub birth: Option<&'static str>,
    /// Raw sex column, used when the ID does not give one.
    pub sex: Option<&'static str>,
}

/// Suffixes of the derived person-key columns, in storage order.
pub const PERSON_KEY_SUFFIXES: [&str; 6] =
    ["id_norm", "id_quality", "name_norm", "birth_norm", "sex_norm", "phone_norm"];

/// The indexes candidate look-ups read, one per kind of person key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonIndex {
    Id,
    NameBirth,
    Phone,
}

impl PersonIndex {
    pub const ALL: [PersonIndex; 3] = [PersonIndex::Id, PersonIndex::NameBirth, PersonIndex::Phone];
}

/// A secondary index declared by a table (person-key indexes are implicit).
#[derive(Debug, Clone, Copy)]
pub struct IndexSpec {
    pub name: &'static str,
    pub columns: &'static str,
    pub unique: bool,
}

/// One source table.
#[derive(Debug)]
pub struct TableSpec {
    pub dept: Department,
    pub name: &'static str,
    pub doc: &'static str,
    pub columns: &'static [Column],
    pub person: Option<PersonKeys>,
    pub indexes: &'static [IndexSpec],
}

/// A row that failed validation: which column and why — never the value (it may be personal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub column: &'static str,
    pub reason: &'static str,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.reason)
    }
}

impl TableSpec {
    /// Raw column names, in CSV / storage order.
    pub fn raw_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.name)
    }

    /// Derived person-key column names.
    pub fn derived_names(&self) -> Vec<String> {
        match &self.person {
            Some(p) => PERSON_KEY_SUFFIXES.iter().map(|s| format!("{}{s}", p.prefix)).collect(),
            None => Vec::new(),
        }
    }

    /// All stored columns: raw then derived.
    pub fn all_names(&self) -> Vec<String> {
        self.raw_names().map(str::to_owned).chain(self.derived_names()).collect()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// `CREATE TABLE IF NOT EXISTS` for both backends. No constraints beyond NOT NULL: uniqueness is
    /// enforced by unique indexes, which bulk loads build after inserting.
    pub fn create_sql(&self) -> String {
        let mut cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let null = if c.required { " NOT NULL" } else { "" };
                format!("{} {}{null}", c.name, c.kind.sql_type())
            })
            .collect();
        cols.extend(self.derived_names().into_iter().map(|n| format!("{n} TEXT")));
        format!("CREATE TABLE IF NOT EXISTS {} ({})", self.name, cols.join(", "))
    }

    /// Name and columns of one of the table's person-key indexes (`None` for a table without person
    /// keys). Each ends with the record key: see [`PersonKeys::record_key`].
    pub fn person_index(&self, which: PersonIndex) -> Option<(String, String)> {
        let p = self.person.as_ref()?;
        let (pre, k, t) = (p.prefix, p.record_key, self.name);
        Some(match which {
            PersonIndex::Id => (format!("{t}_{pre}id_key"), format!("{pre}id_norm, {k}")),
            PersonIndex::NameBirth => {
                (format!("{t}_{pre}name_birth_key"), format!("{pre}name_norm, {pre}birth_norm, {k}"))
            }
            PersonIndex::Phone => (format!("{t}_{pre}phone_key"), format!("{pre}phone_norm, {k}")),
        })
    }

    /// `CREATE INDEX IF NOT EXISTS` statements: declared indexes plus the person-key indexes.
    pub fn index_sql(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .indexes
            .iter()
            .map(|i| {
                let unique = if i.unique { "UNIQUE " } else { "" };
                format!(
                    "CREATE {unique}INDEX IF NOT EXISTS {t}_{n} ON {t} ({c})",
                    t = self.name,
                    n = i.name,
                    c = i.columns
                )
            })
            .collect();
        for which in PersonIndex::ALL {
            if let Some((name, columns)) = self.person_index(which) {
                out.push(format!("CREATE INDEX IF NOT EXISTS {name} ON {} ({columns})", self.name));
            }
        }
        out
    }

    /// Validates one raw row (aligned with [`TableSpec::columns`]; empty cells already `None`) and returns
    /// the values to store: canonicalised raw columns followed by derived person keys.
    pub fn prepare(&self, raw: Vec<Option<String>>) -> Result<Vec<Value>, RowError> {
        debug_assert_eq!(raw.len(), self.columns.len());
        let mut out = Vec::with_capacity(raw.len() + 6);
        for (c, v) in self.columns.iter().zip(raw) {
            out.push(validate(c, v)?);
        }
        if let Some(p) = &self.person {
            let get = |name: Option<&'static str>| -> Option<&str> {
                let i = self.column_index(name?)?;
                match &out[i] {
                    Value::Text(Some(s)) => Some(s.as_str()),
                    _ => None,
                }
            };
            let derived = keys::person_keys(get(p.id), get(p.name), get(p.phone), get(p.birth), get(p.sex));
            out.extend(derived.into_iter().map(Value::Text));
        }
        Ok(out)
    }
}

fn validate(c: &Column, v: Option<String>) -> Result<Value, RowError> {
    let err = |reason| RowError { column: c.name, reason };
    let v = match v {
        None if c.required => return Err(err("required value missing")),
        None => {
            return Ok(match c.kind {
                Kind::Int => Value::Int(None),
                _ => Value::Text(None),
            })
        }
        Some(v) => v,
    };
    let text = |s: String| Ok(Value::Text(Some(s)));
    match c.kind {
        Kind::Text | Kind::Name => text(v),
        Kind::Int => {
            v.trim().parse::<i64>().map(|i| Value::Int(Some(i))).map_err(|_| err("not a whole number"))
        }
        Kind::Date => {
            keys::canonical_date(&v).map(|d| Value::Text(Some(d))).ok_or_else(|| err("not a valid date"))
        }
        Kind::Month => keys::canonical_month(&v)
            .map(|d| Value::Text(Some(d)))
            .ok_or_else(|| err("not a valid month (YYYY-MM)")),
        Kind::CitizenIdStrict => match keys::check_citizen_id(&v, true) {
            Ok(()) => text(v),
            Err(reason) => Err(err(reason)),
        },
        Kind::CitizenIdLoose => match keys::check_citizen_id(&v, false) {
            Ok(()) => text(v),
            Err(reason) => Err(err(reason)),
        },
        Kind::Usci => keys::canonical_usci(&v).map(|u| Value::Text(Some(u))).map_err(err),
        Kind::Phone => {
            if keys::normalise_phone(&v).is_some() {
                text(v)
            } else {
                Err(err("not a valid phone number"))
            }
        }
        Kind::OneOf(allowed) => {
            let t = v.trim();
            if allowed.contains(&t) {
                text(t.to_owned())
            } else {
                Err(err("value not in the allowed set"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::dept::Department;
    use crate::sql_source::tables;

    /// SOURCES.md is written by hand; this keeps its index lists in step with the DDL.
    #[test]
    fn sources_md_names_every_index_with_its_columns() {
        let doc = include_str!("../SOURCES.md");
        for dept in Department::ALL {
            for table in tables(dept) {
                for sql in table.index_sql() {
                    // "CREATE [UNIQUE ]INDEX IF NOT EXISTS <name> ON <table> (<columns>)"
                    let name = sql.split(" ON ").next().and_then(|h| h.split(' ').next_back()).expect("name");
                    let columns = sql.split_once('(').expect("column list").1.trim_end_matches(')');
                    let documented = format!("`{name}` ({columns})");
                    assert!(doc.contains(&documented), "SOURCES.md lacks {documented}");
                }
            }
        }
    }
}
