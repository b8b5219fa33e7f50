//! Consent records in the gateway store (migration `0003_consents.sql`), on SQLite and PostgreSQL.
//!
//! One row per consent in `consents`; times in unix microseconds, categories as comma-separated codes in
//! contract order. Rows are never deleted and never changed except for the lifecycle columns: the
//! `revoked_*` group and `superseded_by`, each written at most once by a conditional `UPDATE … WHERE …
//! IS NULL`, so concurrent lifecycle changes of one consent resolve to exactly one winner on either
//! backend (PostgreSQL re-checks the condition after waiting for the row lock; SQLite serialises
//! writers, and the grant transaction starts with `BEGIN IMMEDIATE` so it never has to upgrade a read).
//!
//! The store keeps no cache: every read goes to the database, which is what makes a revocation visible
//! to every replica sharing it at once (see [`super::check`]).

use std::collections::BTreeSet;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;

use super::check::ConsentRefusal;
use super::model::{
    new_consent_id, Actor, Consent, ConsentStatus, ListCursor, NewConsent, Revocation, RevocationReason,
};
use crate::audit::record::{time_from_us, time_to_us, truncate_to_us};
use crate::authn::Role;
use crate::policy::FieldCategory;
use crate::store::{Backend, Store, StoreError};

const COLUMNS: &str = "consent_id, worker_ref, grantee_dept, purpose, categories, valid_from_us, \
     valid_until_us, created_us, captured_by_dept, captured_by_role, captured_by_serial, \
     captured_by_fingerprint, evidence_sha256, request_id, supersedes_consent_id, superseded_by, revoked_us, \
     revoked_by_dept, revoked_by_role, revoked_by_serial, revoked_by_fingerprint, revocation_reason";

/// Why a grant or a revocation was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The consent named (to revoke, or to supersede) does not exist.
    #[error("no consent {0}")]
    NotFound(String),
    /// The consent named is not in a state that allows the change: superseding needs an ACTIVE consent
    /// of the same worker (else Revoked, Expired, Superseded or Mismatch); revoking needs one that is
    /// neither expired nor superseded.
    #[error("consent {consent_id}: {refusal}")]
    Conflict { consent_id: String, refusal: ConsentRefusal },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ConsentError {
    fn from(e: sqlx::Error) -> Self {
        ConsentError::Store(e.into())
    }
}

/// The result of [`ConsentStore::grant`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub consent: Consent,
    /// The request id had been used before by the same department: `consent` is the one the first
    /// attempt created, and nothing was written.
    pub replayed: bool,
}

/// Consent records. Cheap to clone; every clone shares the store's pool.
#[derive(Debug, Clone)]
pub struct ConsentStore {
    store: Store,
}

impl ConsentStore {
    /// Consents in `store`, which must be migrated.
    pub fn new(store: Store) -> ConsentStore {
        ConsentStore { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Registers a consent, superseding `new.supersedes_consent_id` in the same transaction if given.
    ///
    /// Times are kept to whole microseconds (the column resolution), so the returned consent equals what
    /// [`ConsentStore::get`] reads back. A grant whose `request_id` the same department used before
    /// returns the consent of the first attempt, also when the two attempts race.
    pub async fn grant(&self, new: NewConsent, now: OffsetDateTime) -> Result<Granted, ConsentError> {
        if let Some(request_id) = &new.request_id {
            if let Some(first) = self.by_request_id(&new.captured_by.dept, request_id).await? {
                return Ok(Granted { consent: first, replayed: true });
            }
        }
        let consent = Consent {
            consent_id: new_consent_id(),
            worker_ref: new.worker_ref,
            grantee_dept: new.grantee_dept,
            purpose: new.purpose,
            categories: new.categories,
            valid_from: truncate_to_us(new.valid_from),
            valid_until: truncate_to_us(new.valid_until),
            created_at: truncate_to_us(now),
            captured_by: new.captured_by,
            evidence_sha256: new.evidence_sha256.to_ascii_lowercase(),
            request_id: new.request_id,
            supersedes_consent_id: new.supersedes_consent_id,
            superseded_by: None,
            revocation: None,
        };
        match self.insert(&consent, now).await {
            Ok(()) => Ok(Granted { consent, replayed: false }),
            Err(error) => {
                // A concurrent attempt with the same idempotency key may have won: its consent is the
                // answer to this attempt too (whether this one failed on the key or on the supersede).
                if let Some(request_id) = &consent.request_id {
                    if let Some(first) = self.by_request_id(&consent.captured_by.dept, request_id).await? {
                        return Ok(Granted { consent: first, replayed: true });
                    }
                }
                Err(error)
            }
        }
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.store.backend() {
            Backend::Sqlite => self.store.pool().begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.store.pool().begin().await,
        }
    }

    /// Writes a new consent and, if it supersedes one, marks that one superseded — the old row first, so
    /// that the conditional update (not a constraint error) decides between concurrent supersedes.
    async fn insert(&self, c: &Consent, now: OffsetDateTime) -> Result<(), ConsentError> {
        let mut tx = self.begin().await?;
        if let Some(old_id) = &c.supersedes_consent_id {
            let updated = sqlx::query(
                "UPDATE consents SET superseded_by = $1 WHERE consent_id = $2 AND worker_ref = $3 \
                 AND revoked_us IS NULL AND superseded_by IS NULL AND valid_until_us > $4",
            )
            .bind(&c.consent_id)
            .bind(old_id)
            .bind(&c.worker_ref)
            .bind(time_to_us(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                let old = fetch(&mut *tx, old_id).await?;
                tx.rollback().await?;
                return Err(supersede_refusal(old_id, old.as_ref(), &c.worker_ref, now));
            }
        }
        sqlx::query(&format!(
            "INSERT INTO consents ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        ))
        .bind(&c.consent_id)
        .bind(&c.worker_ref)
        .bind(&c.grantee_dept)
        .bind(&c.purpose)
        .bind(encode_categories(&c.categories))
        .bind(time_to_us(c.valid_from))
        .bind(time_to_us(c.valid_until))
        .bind(time_to_us(c.created_at))
        .bind(&c.captured_by.dept)
        .bind(c.captured_by.role.as_str())
        .bind(&c.captured_by.serial)
        .bind(&c.captured_by.fingerprint)
        .bind(&c.evidence_sha256)
        .bind(c.request_id.as_deref())
        .bind(c.supersedes_consent_id.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes a consent. Idempotent: a consent already revoked is returned unchanged (with its first
    /// revocation). One that is expired or superseded has nothing left to revoke.
    pub async fn revoke(
        &self,
        consent_id: &str,
        by: &Actor,
        reason: RevocationReason,
        now: OffsetDateTime,
    ) -> Result<Consent, ConsentError> {
        let updated = sqlx::query(
            "UPDATE consents SET revoked_us = $1, revoked_by_dept = $2, revoked_by_role = $3, \
             revoked_by_serial = $4, revoked_by_fingerprint = $5, revocation_reason = $6 \
             WHERE consent_id = $7 AND revoked_us IS NULL AND superseded_by IS NULL AND valid_until_us > $8",
        )
        .bind(time_to_us(now))
        .bind(&by.dept)
        .bind(by.role.as_str())
        .bind(&by.serial)
        .bind(&by.fingerprint)
        .bind(reason.as_str())
        .bind(consent_id)
        .bind(time_to_us(now))
        .execute(self.store.pool())
        .await?
        .rows_affected();
        let consent =
            self.get(consent_id).await?.ok_or_else(|| ConsentError::NotFound(consent_id.to_owned()))?;
        if updated == 1 {
            return Ok(consent);
        }
        match consent.status(now) {
            ConsentStatus::Revoked => Ok(consent),
            ConsentStatus::Superseded => Err(ConsentError::Conflict {
                consent_id: consent_id.to_owned(),
                refusal: ConsentRefusal::Superseded { by: consent.superseded_by.unwrap_or_default() },
            }),
            ConsentStatus::Expired => Err(ConsentError::Conflict {
                consent_id: consent_id.to_owned(),
                refusal: ConsentRefusal::Expired,
            }),
            // Lifecycle columns only ever go from NULL to set, so a consent the update did not match
            // cannot read back ACTIVE; if it does, the database is not behaving as one.
            ConsentStatus::Active => Err(anomaly("revocation matched no row of an active consent")),
        }
    }

    /// The consent with this id, read from the database (one primary-key look-up).
    pub async fn get(&self, consent_id: &str) -> Result<Option<Consent>, StoreError> {
        Ok(fetch(self.store.pool(), consent_id).await?)
    }

    /// The consent the department registered with this idempotency key, if any.
    pub async fn by_request_id(
        &self,
        captured_by_dept: &str,
        request_id: &str,
    ) -> Result<Option<Consent>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM consents WHERE captured_by_dept = $1 AND request_id = $2"
        ))
        .bind(captured_by_dept)
        .bind(request_id)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.as_ref().map(decode).transpose()?)
    }

    /// A worker's consents, newest first (`created_at`, then `consent_id`, descending): those after
    /// `after` (the last consent of the previous page), in the given statuses at `now` (empty = all), at
    /// most `limit`. Statuses are evaluated in SQL, so pages are full and keyset paging stays exact.
    pub async fn list(
        &self,
        worker_ref: &str,
        statuses: &BTreeSet<ConsentStatus>,
        after: Option<&ListCursor>,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<Consent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut sql = format!("SELECT {COLUMNS} FROM consents WHERE worker_ref = $1");
        let mut next = 2;
        let now_param = if statuses.is_empty() || statuses.len() == ConsentStatus::ALL.len() {
            None
        } else {
            let n = next;
            next += 1;
            let conditions: Vec<String> = statuses.iter().map(|s| status_condition(*s, n)).collect();
            sql.push_str(&format!(" AND ({})", conditions.join(" OR ")));
            Some(time_to_us(now))
        };
        if after.is_some() {
            sql.push_str(&format!(
                " AND (created_us < ${a} OR (created_us = ${a} AND consent_id < ${b}))",
                a = next,
                b = next + 1
            ));
            next += 2;
        }
        sql.push_str(&format!(" ORDER BY created_us DESC, consent_id DESC LIMIT ${next}"));
        let mut query = sqlx::query(&sql).bind(worker_ref);
        if let Some(now_us) = now_param {
            query = query.bind(now_us);
        }
        if let Some(cursor) = after {
            query = query.bind(time_to_us(cursor.created_at)).bind(cursor.consent_id.as_str());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = query.bind(limit).fetch_all(self.store.pool()).await?;
        Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
    }
}

/// The SQL condition for a status at the instant bound as `$n` (mirrors [`Consent::status`]).
fn status_condition(status: ConsentStatus, n: usize) -> String {
    match status {
        ConsentStatus::Revoked => "revoked_us IS NOT NULL".to_owned(),
        ConsentStatus::Superseded => "(revoked_us IS NULL AND superseded_by IS NOT NULL)".to_owned(),
        ConsentStatus::Expired => {
            format!("(revoked_us IS NULL AND superseded_by IS NULL AND valid_until_us <= ${n})")
        }
        ConsentStatus::Active => {
            format!("(revoked_us IS NULL AND superseded_by IS NULL AND valid_until_us > ${n})")
        }
    }
}

async fn fetch<'e, E>(executor: E, consent_id: &str) -> Result<Option<Consent>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM consents WHERE consent_id = $1"))
        .bind(consent_id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Why the consent `old_id` could not be superseded by a consent for `worker_ref`.
fn supersede_refusal(
    old_id: &str,
    old: Option<&Consent>,
    worker_ref: &str,
    now: OffsetDateTime,
) -> ConsentError {
    let Some(old) = old else {
        return ConsentError::NotFound(old_id.to_owned());
    };
    let refusal = if old.worker_ref != worker_ref {
        ConsentRefusal::Mismatch
    } else {
        match old.status(now) {
            ConsentStatus::Revoked => ConsentRefusal::Revoked,
            ConsentStatus::Superseded => {
                ConsentRefusal::Superseded { by: old.superseded_by.clone().unwrap_or_default() }
            }
            ConsentStatus::Expired => ConsentRefusal::Expired,
            // An ACTIVE consent of the same worker (not yet valid included) is what the update matches.
            ConsentStatus::Active => return anomaly("supersede matched no row of an active consent"),
        }
    };
    ConsentError::Conflict { consent_id: old_id.to_owned(), refusal }
}

fn anomaly(what: &'static str) -> ConsentError {
    ConsentError::Store(StoreError::Database(sqlx::Error::Protocol(what.to_owned())))
}

fn encode_categories(categories: &BTreeSet<FieldCategory>) -> String {
    categories.iter().map(|c| c.code()).collect::<Vec<_>>().join(",")
}

fn corrupt(column: &str, what: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_owned(), source: what.into() }
}

fn time_column(row: &AnyRow, column: &str) -> Result<OffsetDateTime, sqlx::Error> {
    let us: i64 = row.try_get(column)?;
    time_from_us(us).ok_or_else(|| corrupt(column, format!("{us} µs is out of range")))
}

fn role_column(row: &AnyRow, column: &str) -> Result<Role, sqlx::Error> {
    let role: String = row.try_get(column)?;
    role.parse().map_err(|_| corrupt(column, format!("unknown role '{role}'")))
}

fn decode(row: &AnyRow) -> Result<Consent, sqlx::Error> {
    let categories_text: String = row.try_get("categories")?;
    let categories = categories_text
        .split(',')
        .map(|code| {
            FieldCategory::from_code(code)
                .ok_or_else(|| corrupt("categories", format!("unknown category '{code}'")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let revoked_us: Option<i64> = row.try_get("revoked_us")?;
    let revocation = match revoked_us {
        None => None,
        Some(us) => {
            let reason: String = row.try_get("revocation_reason")?;
            Some(Revocation {
                at: time_from_us(us)
                    .ok_or_else(|| corrupt("revoked_us", format!("{us} µs is out of range")))?,
                by: Actor {
                    dept: row.try_get("revoked_by_dept")?,
                    role: role_column(row, "revoked_by_role")?,
                    serial: row.try_get("revoked_by_serial")?,
                    fingerprint: row.try_get("revoked_by_fingerprint")?,
                },
                reason: reason.parse().map_err(|e: String| corrupt("revocation_reason", e))?,
            })
        }
    };
    Ok(Consent {
        consent_id: row.try_get("consent_id")?,
        worker_ref: row.try_get("worker_ref")?,
        grantee_dept: row.try_get("grantee_dept")?,
        purpose: row.try_get("purpose")?,
        categories,
        valid_from: time_column(row, "valid_from_us")?,
        valid_until: time_column(row, "valid_until_us")?,
        created_at: time_column(row, "created_us")?,
        captured_by: Actor {
            dept: row.try_get("captured_by_dept")?,
            role: role_column(row, "captured_by_role")?,
            serial: row.try_get("captured_by_serial")?,
            fingerprint: row.try_get("captured_by_fingerprint")?,
        },
        evidence_sha256: row.try_get("evidence_sha256")?,
        request_id: row.try_get("request_id")?,
        supersedes_consent_id: row.try_get("supersedes_consent_id")?,
        superseded_by: row.try_get("superseded_by")?,
        revocation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_round_trip_in_contract_order() {
        let set =
            BTreeSet::from([FieldCategory::Enrolment, FieldCategory::Identity, FieldCategory::Employment]);
        assert_eq!(encode_categories(&set), "identity,employment,enrolment");
    }

    #[test]
    fn status_conditions_use_the_given_parameter() {
        assert!(status_condition(ConsentStatus::Active, 3).contains("valid_until_us > $3"));
        assert!(status_condition(ConsentStatus::Expired, 2).contains("valid_until_us <= $2"));
    }
}
