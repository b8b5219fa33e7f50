//! The `Source` trait: what the gateway may ask a department's database, and what comes back.
//!
//! The gateway never copies department data; it asks each source at request time. A source answers two
//! kinds of question, both by index look-ups:
//!
//! * **candidate look-up** — which of your records might be this person? ([`LookupKey`] → [`Candidate`]s,
//!   with the identifying fields *as the department recorded them*, after normalisation, so the gateway's
//!   identity resolver can weigh agreement and disagreement);
//! * **facts** — for one linked record, what do you know in this category? ([`FactCategory`] → [`Facts`]).
//!
//! Errors never contain personal data: they name the department and what went wrong, not the key.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use time::{Date, OffsetDateTime};

use crate::dept::Department;
use crate::ident::citizen_id::Sex;

/// A key to look candidates up by. Values must already be normalised with `crate::ident`
/// (canonical 18-character ID, `normalize_name`, 11-digit mobile, canonical USCI); sources compare them
/// with their indexed normalised columns verbatim.
#[derive(Clone, PartialEq, Eq)]
pub enum LookupKey {
    /// Canonical 18-character citizen ID number (upper-case `X`).
    CitizenId(String),
    /// Normalised name plus birth date. Not unique: namesakes share both.
    NameBirth { name_norm: String, birth_date: Date },
    /// Normalised 11-digit mobile number.
    Phone(String),
    /// Canonical unified social credit code of an enterprise or individual business.
    Usci(String),
}

impl LookupKey {
    /// Which kind of key this is, for metrics and logs (never the value).
    pub fn kind(&self) -> &'static str {
        match self {
            LookupKey::CitizenId(_) => "citizen_id",
            LookupKey::NameBirth { .. } => "name_birth",
            LookupKey::Phone(_) => "phone",
            LookupKey::Usci(_) => "usci",
        }
    }
}

/// Deliberately redacted: a key is personal data.
impl fmt::Debug for LookupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LookupKey::{}(<redacted>)", self.kind())
    }
}

/// Opaque key of one record in one source, e.g. `person/R5323010000001`. Built from the department's own
/// surrogate record numbers, never from ID numbers, names or phones, so it is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey(pub String);

impl RecordKey {
    /// `table/key`.
    pub fn new(table: &str, key: &str) -> Self {
        RecordKey(format!("{table}/{key}"))
    }

    /// Split into (table, key).
    pub fn parts(&self) -> Option<(&str, &str)> {
        self.0.split_once('/')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How trustworthy the ID number on a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdQuality {
    /// A valid 18-character number with a correct check character, as recorded.
    Valid,
    /// A legacy 15-digit number, upgraded to 18 characters at write time.
    Upgraded,
    /// Shaped like an ID but failing validation (bad check character, impossible date…); the cleaned
    /// form is kept because a typo'd number still carries evidence.
    Suspect,
}

impl IdQuality {
    pub fn code(self) -> &'static str {
        match self {
            IdQuality::Valid => "valid",
            IdQuality::Upgraded => "upgraded",
            IdQuality::Suspect => "suspect",
        }
    }

    pub fn from_code(s: &str) -> Option<Self> {
        match s {
            "valid" => Some(IdQuality::Valid),
            "upgraded" => Some(IdQuality::Upgraded),
            "suspect" => Some(IdQuality::Suspect),
            _ => None,
        }
    }
}

/// One record a source thinks might be the person asked about, with the identifying fields as observed
/// (normalised at write time). Fields the department does not record are `None`.
#[derive(Clone, PartialEq, Eq)]
pub struct Candidate {
    pub dept: Department,
    pub record_key: RecordKey,
    /// Canonical 18-character ID, or the cleaned form of a suspect one (see `id_quality`).
    pub id: Option<String>,
    pub id_quality: Option<IdQuality>,
    pub name_norm: Option<String>,
    pub birth_date: Option<Date>,
    pub sex: Option<Sex>,
    pub phone: Option<String>,
    /// GB/T 2260 code of the record's region (hukou, school, business address…).
    pub region: Option<String>,
}

/// Redacted: candidates carry personal data.
impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate")
            .field("dept", &self.dept)
            .field("record_key", &self.record_key)
            .field("id_quality", &self.id_quality)
            .finish_non_exhaustive()
    }
}

/// Categories of facts a source can give about a linked record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactCategory {
    Identity,
    ResidencePermit,
    Employment,
    Contributions,
    Enrolment,
    Enterprise,
    IndividualBusiness,
}

impl FactCategory {
    pub const ALL: [FactCategory; 7] = [
        FactCategory::Identity,
        FactCategory::ResidencePermit,
        FactCategory::Employment,
        FactCategory::Contributions,
        FactCategory::Enrolment,
        FactCategory::Enterprise,
        FactCategory::IndividualBusiness,
    ];

    pub fn code(self) -> &'static str {
        match self {
            FactCategory::Identity => "identity",
            FactCategory::ResidencePermit => "residence_permit",
            FactCategory::Employment => "employment",
            FactCategory::Contributions => "contributions",
            FactCategory::Enrolment => "enrolment",
            FactCategory::Enterprise => "enterprise",
            FactCategory::IndividualBusiness => "individual_business",
        }
    }
}

/// Household-registration identity (公安 户籍).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFact {
    pub citizen_id: String,
    pub name: String,
    pub sex: Option<Sex>,
    pub birth_date: Option<Date>,
    pub ethnicity: Option<String>,
    pub hukou_region: Option<String>,
    pub hukou_address: Option<String>,
}

/// A residence permit (居住证).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidencePermitFact {
    pub permit_no: String,
    pub city_region: String,
    pub valid_from: Date,
    pub valid_until: Date,
}

/// One month of employment by one employer. From tax: income and tax withheld; from social insurance:
/// a month in which the employer declared contributions (amounts in [`ContributionFact`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmploymentFact {
    pub employer_usci: String,
    pub employer_name: Option<String>,
    /// `YYYY-MM`.
    pub month: String,
    /// Income in fen (0.01 yuan).
    pub income_fen: Option<i64>,
    /// Tax withheld in fen.
    pub tax_fen: Option<i64>,
}

/// Social-insurance contribution status for a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContributionStatus {
    Paid,
    Arrears,
}

impl ContributionStatus {
    pub fn code(self) -> &'static str {
        match self {
            ContributionStatus::Paid => "paid",
            ContributionStatus::Arrears => "arrears",
        }
    }
}

/// One month of one insurance type by one employer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContributionFact {
    pub employer_usci: String,
    pub month: String,
    /// `pension`, `medical`, `unemployment`, `work_injury` or `maternity`.
    pub insurance_type: String,
    pub base_fen: i64,
    pub amount_fen: i64,
    pub status: ContributionStatus,
    /// GB/T 2260 code of the insuring county/district (参保地) of the insured-person record the
    /// contribution was declared under; `None` when the record does not say.
    pub insured_region: Option<String>,
}

/// A child's school enrolment (学籍) with the guardian as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentFact {
    pub student_no: String,
    pub child_name: String,
    pub child_id: Option<String>,
    pub school_code: String,
    pub school_name: String,
    /// GB/T 2260 code of the school's district, when recorded.
    pub school_region: Option<String>,
    pub grade: String,
    /// `enrolled`, `transferred`, `graduated`, `suspended`.
    pub status: String,
    pub guardian_name: Option<String>,
    pub guardian_id: Option<String>,
    pub guardian_phone: Option<String>,
}

/// An entry on the abnormal-operation list (经营异常名录).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbnormalEntry {
    pub listed_on: Date,
    pub reason: String,
    pub removed_on: Option<Date>,
}

/// An enterprise's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnterpriseFact {
    pub usci: String,
    pub name: String,
    /// `存续`, `吊销` or `注销`.
    pub status: String,
    pub legal_rep: String,
    pub region: String,
    pub established: Option<Date>,
    pub abnormal: Vec<AbnormalEntry>,
}

/// An individual business (个体工商户).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndividualBusinessFact {
    pub usci: String,
    pub name: String,
    pub status: String,
    pub operator_name: String,
    pub region: String,
    pub established: Option<Date>,
    /// Entries on the abnormal-operation list (the list covers individual businesses too).
    pub abnormal: Vec<AbnormalEntry>,
}

/// One fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Identity(IdentityFact),
    ResidencePermit(ResidencePermitFact),
    Employment(EmploymentFact),
    Contribution(ContributionFact),
    Enrolment(EnrolmentFact),
    Enterprise(EnterpriseFact),
    IndividualBusiness(IndividualBusinessFact),
}

/// What social insurance holds about an employer's declared contributions over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmployerContributions {
    /// Whether the employer declared any contribution (paid or in arrears) in the period.
    pub declared: bool,
    /// Whether any declared contribution in the period is in arrears.
    pub in_arrears: bool,
    /// When the answer was read (sources here do not track record update times).
    pub as_of: OffsetDateTime,
}

/// The facts of one category for one record, with the time the source's data was current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub dept: Department,
    pub record_key: RecordKey,
    pub category: FactCategory,
    /// When the source database was last loaded or updated (its snapshot time).
    pub as_of: OffsetDateTime,
    pub items: Vec<Fact>,
}

/// Why a source could not answer. Never contains personal data.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The database cannot be reached or opened (missing file, refused connection, pool exhausted).
    #[error("{dept} source unavailable: {reason}")]
    Unavailable { dept: Department, reason: String },
    /// The source did not answer within its timeout.
    #[error("{dept} source timed out after {after:?}")]
    Timeout { dept: Department, after: Duration },
    /// The record key does not belong to this source or does not exist.
    #[error("{dept} source has no record {key}")]
    NoSuchRecord { dept: Department, key: RecordKey },
    /// The source does not hold facts of this category.
    #[error("{dept} source does not provide {} facts", .category.code())]
    UnsupportedCategory { dept: Department, category: FactCategory },
    /// The look-up key kind is not served by this source.
    #[error("{dept} source does not support look-up by {kind}")]
    UnsupportedKey { dept: Department, kind: &'static str },
    /// The database answered with something unexpected (schema drift, corrupt row).
    #[error("{dept} source error: {reason}")]
    Backend { dept: Department, reason: String },
}

impl SourceError {
    /// Short stable code for metrics and gRPC error details.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Unavailable { .. } => "unavailable",
            SourceError::Timeout { .. } => "timeout",
            SourceError::NoSuchRecord { .. } => "no_such_record",
            SourceError::UnsupportedCategory { .. } => "unsupported_category",
            SourceError::UnsupportedKey { .. } => "unsupported_key",
            SourceError::Backend { .. } => "backend",
        }
    }

    /// Whether retrying later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Unavailable { .. } | SourceError::Timeout { .. })
    }
}

/// A department's source database as the gateway sees it. Object safe: the gateway holds
/// `Arc<dyn Source>`. Every method is bounded by the source's timeout.
pub trait Source: Send + Sync {
    /// Which department this is.
    fn department(&self) -> Department;

    /// Fact categories this source can answer.
    fn categories(&self) -> &'static [FactCategory];

    /// Records that might belong to the person (or enterprise) identified by `key`. Index look-ups only;
    /// results are capped (see [`MAX_CANDIDATES`]).
    fn lookup<'a>(&'a self, key: &'a LookupKey) -> BoxFuture<'a, Result<Vec<Candidate>, SourceError>>;

    /// How many person records in this source carry this normalised name, for term-frequency weighting
    /// of name agreement (a common name is weak evidence, a rare one strong).
    fn name_frequency<'a>(&'a self, name_norm: &'a str) -> BoxFuture<'a, Result<u64, SourceError>>;

    /// Facts of one category for one record returned by [`Source::lookup`].
    fn fetch_facts<'a>(
        &'a self,
        record_key: &'a RecordKey,
        category: FactCategory,
    ) -> BoxFuture<'a, Result<Facts, SourceError>>;

    /// Contributions declared by the employer `usci` (canonical, upper case) in months `from..=to`
    /// (`YYYY-MM`, inclusive; `None` = every month on record). Only social insurance answers; the default
    /// is `SourceError::UnsupportedCategory { dept, category: FactCategory::Contributions }`.
    ///
    /// Index probes only (never a scan of the employer's rows): at most two `LIMIT 1` look-ups. Month
    /// bounds in another common form (`2024-3`, `2024年3月`) are canonicalised first; a bound that is not
    /// a month at all is refused (`SourceError::Backend`) rather than compared as text, which could
    /// silently leave arrears out of the period. An empty period (`from > to`) declares nothing.
    fn employer_contributions<'a>(
        &'a self,
        usci: &'a str,
        months: Option<(&'a str, &'a str)>,
    ) -> BoxFuture<'a, Result<EmployerContributions, SourceError>> {
        let _ = (usci, months);
        let dept = self.department();
        Box::pin(async move {
            Err(SourceError::UnsupportedCategory { dept, category: FactCategory::Contributions })
        })
    }

    /// Cheap liveness probe (one trivial query).
    fn health(&self) -> BoxFuture<'_, Result<(), SourceError>>;
}

/// Upper bound on candidates returned per look-up and per table: a name + birth date of a very common
/// name may match a handful of people, never thousands; the cap keeps a pathological key bounded.
pub const MAX_CANDIDATES: usize = 50;
