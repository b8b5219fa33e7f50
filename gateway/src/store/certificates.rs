//! The certificate registry: every department certificate the CA issued, and its revocation.
//!
//! The registry, not the CRL file, is what gateway replicas poll for revocations: it is shared by all
//! replicas through the database, so a revocation reaches every replica within one poll interval
//! without redistributing files. The CRL is still generated for relying parties outside fedx.

use std::fmt;
use std::str::FromStr;

use sqlx::Row;

use super::{Store, StoreError};

/// RFC 5280 §5.3.1 revocation reasons an administrator can give. `certificateHold` is deliberately
/// absent: revocation in fedx is final, a department gets a new certificate instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 8] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::CaCompromise => "ca-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
            RevocationReason::PrivilegeWithdrawn => "privilege-withdrawn",
            RevocationReason::AaCompromise => "aa-compromise",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RevocationReason::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            let known: Vec<_> = RevocationReason::ALL.iter().map(|r| r.as_str()).collect();
            format!("unknown revocation reason '{s}' (one of: {})", known.join(", "))
        })
    }
}

/// One row of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    pub serial: String,
    pub dept: String,
    pub role: String,
    pub fingerprint: String,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    pub renewed_from: Option<String>,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<RevocationReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Valid,
    NotYetValid,
    Expired,
    Revoked,
}

impl CertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::Valid => "valid",
            CertStatus::NotYetValid => "not-yet-valid",
            CertStatus::Expired => "expired",
            CertStatus::Revoked => "revoked",
        }
    }
}

impl CertRecord {
    /// Status at `now` (unix seconds); revocation wins over the validity window.
    pub fn status(&self, now: i64) -> CertStatus {
        if self.revoked_at.is_some() {
            CertStatus::Revoked
        } else if now < self.not_before {
            CertStatus::NotYetValid
        } else if now > self.not_after {
            CertStatus::Expired
        } else {
            CertStatus::Valid
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no certificate with serial {0} in the registry")]
    UnknownSerial(String),
    #[error("certificate {serial} was already revoked at {revoked_at} (unix seconds)")]
    AlreadyRevoked { serial: String, revoked_at: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RevokeError {
    fn from(e: sqlx::Error) -> Self {
        RevokeError::Store(e.into())
    }
}

/// A cheap summary of the revocation state; when it changes, replicas reload the revoked serials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevocationVersion {
    pub count: i64,
    pub latest: i64,
}

const COLUMNS: &str = "serial, dept, role, fingerprint, not_before, not_after, issued_at, \
                       renewed_from, revoked_at, revocation_reason";

fn record_from_row(row: &sqlx::any::AnyRow) -> Result<CertRecord, sqlx::Error> {
    let reason: Option<String> = row.try_get("revocation_reason")?;
    Ok(CertRecord {
        serial: row.try_get("serial")?,
        dept: row.try_get("dept")?,
        role: row.try_get("role")?,
        fingerprint: row.try_get("fingerprint")?,
        not_before: row.try_get("not_before")?,
        not_after: row.try_get("not_after")?,
        issued_at: row.try_get("issued_at")?,
        renewed_from: row.try_get("renewed_from")?,
        revoked_at: row.try_get("revoked_at")?,
        revocation_reason: reason.map(|r| r.parse().unwrap_or(RevocationReason::Unspecified)),
    })
}

impl Store {
    pub async fn insert_certificate(&self, record: &CertRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO certificates (serial, dept, role, fingerprint, not_before, not_after, issued_at, \
             renewed_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&record.serial)
        .bind(&record.dept)
        .bind(&record.role)
        .bind(&record.fingerprint)
        .bind(record.not_before)
        .bind(record.not_after)
        .bind(record.issued_at)
        .bind(record.renewed_from.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn certificate(&self, serial: &str) -> Result<Option<CertRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM certificates WHERE serial = $1"))
            .bind(serial)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(record_from_row).transpose()?)
    }

    /// All certificates, oldest first.
    pub async fn certificates(&self) -> Result<Vec<CertRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM certificates ORDER BY issued_at, serial"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(record_from_row).collect::<Result<_, _>>()?)
    }

    /// Marks a certificate revoked. The conditional update makes concurrent revocations of the same
    /// serial resolve to exactly one winner; the loser is told it was already revoked.
    pub async fn revoke_certificate(
        &self,
        serial: &str,
        reason: RevocationReason,
        at: i64,
    ) -> Result<CertRecord, RevokeError> {
        let updated = sqlx::query(
            "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 \
             WHERE serial = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(reason.as_str())
        .bind(serial)
        .execute(self.pool())
        .await?
        .rows_affected();
        let record =
            self.certificate(serial).await?.ok_or_else(|| RevokeError::UnknownSerial(serial.to_owned()))?;
        match (updated, record.revoked_at) {
            (1, _) => Ok(record),
            (_, Some(revoked_at)) => {
                Err(RevokeError::AlreadyRevoked { serial: serial.to_owned(), revoked_at })
            }
            (_, None) => Err(RevokeError::UnknownSerial(serial.to_owned())),
        }
    }

    pub async fn revoked_certificates(&self) -> Result<Vec<CertRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE revoked_at IS NOT NULL ORDER BY revoked_at, serial"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(record_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn revocation_version(&self) -> Result<RevocationVersion, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MAX(revoked_at), 0) AS latest \
             FROM certificates WHERE revoked_at IS NOT NULL",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(RevocationVersion { count: row.try_get("n")?, latest: row.try_get("latest")? })
    }
}
