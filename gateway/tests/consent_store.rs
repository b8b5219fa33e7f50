//! Consent records in the gateway store, on SQLite and PostgreSQL: grant, idempotency, lifecycle,
//! request-time checks, listing, and the concurrency guarantees replicas rely on.
//!
//! Every test runs on both backends: SQLite in a temporary directory, PostgreSQL in a fresh database
//! created on `FEDX_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped
//! afterwards. When PostgreSQL is unreachable its tests fail if `FEDX_REQUIRE_PG=1` and are skipped with
//! a notice otherwise.

use std::collections::BTreeSet;

use anyhow::ensure;
use fedx_gateway::authn::Role;
use fedx_gateway::consent::{
    Actor, CheckError, ConsentError, ConsentRefusal, ConsentStatus, ConsentStore, NewConsent,
    RevocationReason,
};
use fedx_gateway::policy::FieldCategory;
use fedx_gateway::store::Store;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

mod support;

use support::{run, Backend, Db};

backend_suite!(
    grant_and_get,
    idempotent_retry_returns_the_first_consent,
    status_transitions,
    check_basis_refusals,
    revocation_reaches_a_second_replica_on_the_next_check,
    list_pages_newest_first_with_status_filter,
    revoke_is_idempotent_and_refuses_ended_consents,
    supersede_rules,
    concurrent_supersede_has_one_winner,
    concurrent_grants_with_one_request_id_create_one_consent,
);

impl Db {
    async fn open(&self) -> anyhow::Result<ConsentStore> {
        Ok(ConsentStore::new(Store::open(&self.url).await?))
    }
}

const PURPOSE: &str = "child_school_enrolment";
const GRANTEE: &str = "education";
const CAPTURER: &str = "social_insurance";

fn worker(n: u8) -> String {
    format!("wr_{}", format!("{n:02x}").repeat(32))
}

fn t0() -> OffsetDateTime {
    datetime!(2026-03-01 08:00 UTC)
}

fn actor(dept: &str) -> Actor {
    Actor { dept: dept.into(), role: Role::Consumer, serial: "1f2e".into(), fingerprint: "ab".repeat(32) }
}

/// A consent for `worker(w)`, valid for 30 days from `t0()`, captured by social insurance for education.
fn new_consent(w: u8) -> NewConsent {
    NewConsent {
        worker_ref: worker(w),
        grantee_dept: GRANTEE.into(),
        purpose: PURPOSE.into(),
        categories: BTreeSet::from([FieldCategory::Contributions, FieldCategory::Employment]),
        valid_from: t0(),
        valid_until: t0() + Duration::days(30),
        captured_by: actor(CAPTURER),
        evidence_sha256: "C0FFEE".repeat(10) + "ABCD",
        request_id: None,
        supersedes_consent_id: None,
    }
}

fn refusal(result: Result<impl std::fmt::Debug, CheckError>) -> anyhow::Result<ConsentRefusal> {
    match result {
        Err(CheckError::Refused(r)) => Ok(r),
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }
}

fn conflict(result: Result<impl std::fmt::Debug, ConsentError>) -> anyhow::Result<ConsentRefusal> {
    match result {
        Err(ConsentError::Conflict { refusal, .. }) => Ok(refusal),
        other => anyhow::bail!("expected a conflict, got {other:?}"),
    }
}

async fn grant_and_get(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let mut new = new_consent(1);
    // Sub-microsecond parts are dropped: what is returned is exactly what is stored.
    new.valid_from += Duration::nanoseconds(1_234_567);
    let granted = store.grant(new, t0()).await?;
    ensure!(!granted.replayed);
    let c = &granted.consent;
    ensure!(c.consent_id.starts_with("cs_") && c.consent_id.len() == 35, "{}", c.consent_id);
    ensure!(c.evidence_sha256 == ("c0ffee".repeat(10) + "abcd"), "stored in lower case");
    ensure!(c.valid_from == t0() + Duration::microseconds(1_234), "{}", c.valid_from);
    ensure!(c.created_at == t0());
    let read = store.get(&c.consent_id).await?.expect("stored");
    ensure!(&read == c, "{read:#?} != {c:#?}");
    ensure!(read.status(t0()) == ConsentStatus::Active);
    ensure!(read.categories == BTreeSet::from([FieldCategory::Employment, FieldCategory::Contributions]));
    ensure!(read.captured_by == actor(CAPTURER));
    ensure!(store.get("cs_00000000000000000000000000000000").await?.is_none());
    // Each grant gets a fresh id.
    let second = store.grant(new_consent(1), t0()).await?;
    ensure!(second.consent.consent_id != c.consent_id);
    Ok(())
}

async fn idempotent_retry_returns_the_first_consent(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let mut new = new_consent(1);
    new.request_id = Some("4d2a9a4e-2c1b-4f7e-9a53-1d0c7f3e2b10".into());
    let first = store.grant(new.clone(), t0()).await?;
    ensure!(!first.replayed);
    // The retry arrives later, even with a different body: the first consent is the answer.
    let mut retry = new.clone();
    retry.valid_until += Duration::days(1);
    let again = store.grant(retry, t0() + Duration::seconds(5)).await?;
    ensure!(again.replayed);
    ensure!(again.consent == first.consent);
    // The same key from another department is another request.
    let mut other = new.clone();
    other.captured_by = actor("public_security");
    let theirs = store.grant(other, t0()).await?;
    ensure!(!theirs.replayed && theirs.consent.consent_id != first.consent.consent_id);
    // No key, no idempotency.
    let a = store.grant(new_consent(1), t0()).await?;
    let b = store.grant(new_consent(1), t0()).await?;
    ensure!(a.consent.consent_id != b.consent.consent_id);
    Ok(())
}

async fn status_transitions(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let mut future = new_consent(1);
    future.valid_from = t0() + Duration::days(2);
    future.valid_until = t0() + Duration::days(4);
    let c = store.grant(future, t0()).await?.consent;
    // Not yet valid: ACTIVE, but not a basis until valid_from.
    ensure!(c.status(t0()) == ConsentStatus::Active);
    ensure!(
        refusal(store.check_basis(&c.consent_id, &worker(1), GRANTEE, PURPOSE, t0()).await)?
            == ConsentRefusal::Expired
    );
    let at = t0() + Duration::days(3);
    ensure!(store.check_basis(&c.consent_id, &worker(1), GRANTEE, PURPOSE, at).await.is_ok());
    // Expired at valid_until (exclusive).
    let end = t0() + Duration::days(4);
    ensure!(store.get(&c.consent_id).await?.expect("stored").status(end) == ConsentStatus::Expired);
    ensure!(
        refusal(store.check_basis(&c.consent_id, &worker(1), GRANTEE, PURPOSE, end).await)?
            == ConsentRefusal::Expired
    );

    // Revoked.
    let r = store.grant(new_consent(2), t0()).await?.consent;
    let revoked = store
        .revoke(&r.consent_id, &actor("tax"), RevocationReason::WithdrawnByWorker, t0() + Duration::hours(1))
        .await?;
    ensure!(revoked.status(t0() + Duration::hours(1)) == ConsentStatus::Revoked);
    let revocation = revoked.revocation.as_ref().expect("revocation recorded");
    ensure!(revocation.by == actor("tax") && revocation.reason == RevocationReason::WithdrawnByWorker);
    ensure!(revocation.at == t0() + Duration::hours(1));
    // Revocation wins over expiry.
    ensure!(revoked.status(t0() + Duration::days(60)) == ConsentStatus::Revoked);

    // Superseded.
    let old = store.grant(new_consent(3), t0()).await?.consent;
    let mut replacement = new_consent(3);
    replacement.supersedes_consent_id = Some(old.consent_id.clone());
    let new = store.grant(replacement, t0() + Duration::hours(1)).await?.consent;
    ensure!(new.supersedes_consent_id.as_deref() == Some(old.consent_id.as_str()));
    let old = store.get(&old.consent_id).await?.expect("stored");
    ensure!(old.superseded_by.as_deref() == Some(new.consent_id.as_str()));
    ensure!(old.status(t0() + Duration::hours(2)) == ConsentStatus::Superseded);
    ensure!(new.status(t0() + Duration::hours(2)) == ConsentStatus::Active);
    Ok(())
}

async fn check_basis_refusals(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let c = store.grant(new_consent(1), t0()).await?.consent;
    let id = c.consent_id.as_str();
    let now = t0() + Duration::days(1);
    let ok = store.check_basis(id, &worker(1), GRANTEE, PURPOSE, now).await?;
    ensure!(ok == c);
    // Unknown and malformed ids.
    ensure!(
        refusal(
            store.check_basis("cs_ffffffffffffffffffffffffffffffff", &worker(1), GRANTEE, PURPOSE, now).await
        )? == ConsentRefusal::NotFound
    );
    ensure!(
        refusal(store.check_basis("", &worker(1), GRANTEE, PURPOSE, now).await)? == ConsentRefusal::NotFound
    );
    ensure!(
        refusal(store.check_basis("x'; DROP TABLE consents; --", &worker(1), GRANTEE, PURPOSE, now).await)?
            == ConsentRefusal::NotFound
    );
    // Another worker, another purpose.
    ensure!(
        refusal(store.check_basis(id, &worker(2), GRANTEE, PURPOSE, now).await)? == ConsentRefusal::Mismatch
    );
    ensure!(
        refusal(store.check_basis(id, &worker(1), GRANTEE, "points_based_services", now).await)?
            == ConsentRefusal::Mismatch
    );
    // The capturing department can see the consent but is not the grantee.
    ensure!(
        refusal(store.check_basis(id, &worker(1), CAPTURER, PURPOSE, now).await)? == ConsentRefusal::Mismatch
    );
    // A department that neither captured nor received it is not told it exists.
    ensure!(
        refusal(store.check_basis(id, &worker(1), "tax", PURPOSE, now).await)? == ConsentRefusal::NotFound
    );
    // After the end of validity.
    ensure!(
        refusal(store.check_basis(id, &worker(1), GRANTEE, PURPOSE, t0() + Duration::days(31)).await)?
            == ConsentRefusal::Expired
    );
    // Superseded names its successor.
    let mut replacement = new_consent(1);
    replacement.supersedes_consent_id = Some(c.consent_id.clone());
    let new = store.grant(replacement, now).await?.consent;
    ensure!(
        refusal(store.check_basis(id, &worker(1), GRANTEE, PURPOSE, now).await)?
            == ConsentRefusal::Superseded { by: new.consent_id.clone() }
    );
    // Revoked.
    store.revoke(&new.consent_id, &actor(GRANTEE), RevocationReason::RegisteredInError, now).await?;
    ensure!(
        refusal(store.check_basis(&new.consent_id, &worker(1), GRANTEE, PURPOSE, now).await)?
            == ConsentRefusal::Revoked
    );
    Ok(())
}

async fn revocation_reaches_a_second_replica_on_the_next_check(db: &Db) -> anyhow::Result<()> {
    let replica_a = db.open().await?;
    let replica_b = db.open().await?;
    let c = replica_a.grant(new_consent(1), t0()).await?.consent;
    let now = t0() + Duration::days(1);
    // Replica B relies on the consent (and has read it, so any cache would now hold it)...
    for _ in 0..3 {
        replica_b.check_basis(&c.consent_id, &worker(1), GRANTEE, PURPOSE, now).await?;
    }
    // ...replica A registers the revocation...
    replica_a.revoke(&c.consent_id, &actor("tax"), RevocationReason::WithdrawnByWorker, now).await?;
    // ...and B's very next check refuses.
    ensure!(
        refusal(replica_b.check_basis(&c.consent_id, &worker(1), GRANTEE, PURPOSE, now).await)?
            == ConsentRefusal::Revoked
    );
    // Supersession likewise.
    let d = replica_a.grant(new_consent(2), t0()).await?.consent;
    replica_b.check_basis(&d.consent_id, &worker(2), GRANTEE, PURPOSE, now).await?;
    let mut replacement = new_consent(2);
    replacement.supersedes_consent_id = Some(d.consent_id.clone());
    let e = replica_a.grant(replacement, now).await?.consent;
    ensure!(
        refusal(replica_b.check_basis(&d.consent_id, &worker(2), GRANTEE, PURPOSE, now).await)?
            == ConsentRefusal::Superseded { by: e.consent_id }
    );
    replica_a.store().close().await;
    replica_b.store().close().await;
    Ok(())
}

async fn list_pages_newest_first_with_status_filter(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    // 7 consents for worker 1, two of them created in the same microsecond (the id breaks the tie), and
    // some for worker 2 that must never show up.
    let mut ids = Vec::new();
    for i in 0..7i64 {
        let created = t0() + Duration::minutes(if i == 4 { 3 } else { i });
        ids.push(store.grant(new_consent(1), created).await?.consent);
        store.grant(new_consent(2), created).await?;
    }
    let mut expected: Vec<_> = ids.iter().map(|c| (c.created_at, c.consent_id.clone())).collect();
    expected.sort();
    expected.reverse();
    let now = t0() + Duration::days(1);
    let all = BTreeSet::new();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(&worker(1), &all, after.as_ref(), 3, now).await?;
        ensure!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        ensure!(page.iter().all(|c| c.worker_ref == worker(1)));
        seen.extend(page.iter().map(|c| (c.created_at, c.consent_id.clone())));
        after = page.last().map(|c| c.cursor());
    }
    ensure!(seen == expected, "{seen:#?}\n!=\n{expected:#?}");

    // Status filters are applied before the limit, so pages stay full.
    store.revoke(&ids[0].consent_id, &actor(GRANTEE), RevocationReason::WithdrawnByWorker, now).await?;
    let mut replacement = new_consent(1);
    replacement.supersedes_consent_id = Some(ids[1].consent_id.clone());
    let newest = store.grant(replacement, now).await?.consent;
    let revoked = store.list(&worker(1), &BTreeSet::from([ConsentStatus::Revoked]), None, 10, now).await?;
    ensure!(revoked.len() == 1 && revoked[0].consent_id == ids[0].consent_id);
    let superseded =
        store.list(&worker(1), &BTreeSet::from([ConsentStatus::Superseded]), None, 10, now).await?;
    ensure!(superseded.len() == 1 && superseded[0].consent_id == ids[1].consent_id);
    let active = store.list(&worker(1), &BTreeSet::from([ConsentStatus::Active]), None, 2, now).await?;
    ensure!(active.len() == 2 && active[0].consent_id == newest.consent_id);
    let later = t0() + Duration::days(40);
    let expired = store.list(&worker(1), &BTreeSet::from([ConsentStatus::Expired]), None, 10, later).await?;
    ensure!(expired.len() == 6, "{} expired", expired.len());
    let ended = BTreeSet::from([ConsentStatus::Revoked, ConsentStatus::Superseded]);
    ensure!(store.list(&worker(1), &ended, None, 10, later).await?.len() == 2);
    ensure!(store.list(&worker(1), &all, None, 0, now).await?.is_empty());
    ensure!(store.list(&worker(3), &all, None, 10, now).await?.is_empty());
    Ok(())
}

async fn revoke_is_idempotent_and_refuses_ended_consents(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let c = store.grant(new_consent(1), t0()).await?.consent;
    let first = store.revoke(&c.consent_id, &actor(GRANTEE), RevocationReason::EvidenceInvalid, t0()).await?;
    // A second revocation, by someone else and for another reason, returns the first unchanged.
    let second = store
        .revoke(&c.consent_id, &actor("tax"), RevocationReason::WithdrawnByWorker, t0() + Duration::hours(1))
        .await?;
    ensure!(second == first, "{second:#?} != {first:#?}");
    // Even after it would have expired.
    let third = store
        .revoke(&c.consent_id, &actor("tax"), RevocationReason::WithdrawnByWorker, t0() + Duration::days(90))
        .await?;
    ensure!(third == first);

    match store
        .revoke(
            "cs_ffffffffffffffffffffffffffffffff",
            &actor(GRANTEE),
            RevocationReason::EvidenceInvalid,
            t0(),
        )
        .await
    {
        Err(ConsentError::NotFound(_)) => {}
        other => anyhow::bail!("expected NotFound, got {other:?}"),
    }
    // Nothing left to revoke once expired or superseded.
    let d = store.grant(new_consent(2), t0()).await?.consent;
    let after_end = t0() + Duration::days(30);
    ensure!(
        conflict(
            store
                .revoke(&d.consent_id, &actor(GRANTEE), RevocationReason::WithdrawnByWorker, after_end)
                .await
        )? == ConsentRefusal::Expired
    );
    ensure!(store.get(&d.consent_id).await?.expect("stored").revocation.is_none());
    let e = store.grant(new_consent(3), t0()).await?.consent;
    let mut replacement = new_consent(3);
    replacement.supersedes_consent_id = Some(e.consent_id.clone());
    let f = store.grant(replacement, t0()).await?.consent;
    ensure!(
        conflict(
            store.revoke(&e.consent_id, &actor(GRANTEE), RevocationReason::WithdrawnByWorker, t0()).await
        )? == ConsentRefusal::Superseded { by: f.consent_id }
    );
    Ok(())
}

async fn supersede_rules(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let supersede = |w: u8, old: &str| {
        let mut n = new_consent(w);
        n.supersedes_consent_id = Some(old.to_owned());
        n
    };
    // Unknown.
    match store.grant(supersede(1, "cs_ffffffffffffffffffffffffffffffff"), t0()).await {
        Err(ConsentError::NotFound(id)) => ensure!(id == "cs_ffffffffffffffffffffffffffffffff"),
        other => anyhow::bail!("expected NotFound, got {other:?}"),
    }
    // Another person's consent.
    let c = store.grant(new_consent(1), t0()).await?.consent;
    ensure!(conflict(store.grant(supersede(2, &c.consent_id), t0()).await)? == ConsentRefusal::Mismatch);
    // Revoked, expired, already superseded.
    let r = store.grant(new_consent(1), t0()).await?.consent;
    store.revoke(&r.consent_id, &actor(GRANTEE), RevocationReason::WithdrawnByWorker, t0()).await?;
    ensure!(conflict(store.grant(supersede(1, &r.consent_id), t0()).await)? == ConsentRefusal::Revoked);
    let later = t0() + Duration::days(30);
    ensure!(conflict(store.grant(supersede(1, &c.consent_id), later).await)? == ConsentRefusal::Expired);
    let next = store.grant(supersede(1, &c.consent_id), t0()).await?.consent;
    ensure!(
        conflict(store.grant(supersede(1, &c.consent_id), t0()).await)?
            == ConsentRefusal::Superseded { by: next.consent_id.clone() }
    );
    // Failed supersedes wrote nothing: worker 1 has c, r, next; worker 2 none.
    let now = t0() + Duration::hours(1);
    ensure!(store.list(&worker(1), &BTreeSet::new(), None, 10, now).await?.len() == 3);
    ensure!(store.list(&worker(2), &BTreeSet::new(), None, 10, now).await?.is_empty());
    // A consent not yet valid is ACTIVE and may be superseded (e.g. to correct its dates).
    let mut future = new_consent(1);
    future.valid_from = t0() + Duration::days(5);
    let f = store.grant(future, t0()).await?.consent;
    store.grant(supersede(1, &f.consent_id), t0()).await?;
    // Chains: the successor can itself be superseded.
    store.grant(supersede(1, &next.consent_id), now).await?;
    Ok(())
}

async fn concurrent_supersede_has_one_winner(db: &Db) -> anyhow::Result<()> {
    // Two replicas, each with its own pool, race several times.
    let a = db.open().await?;
    let b = db.open().await?;
    for round in 0..5u8 {
        let old = a.grant(new_consent(round), t0()).await?.consent;
        let mut n = new_consent(round);
        n.supersedes_consent_id = Some(old.consent_id.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let (a, n) = (a.clone(), n.clone());
                async move { a.grant(n, t0()).await }
            }),
            tokio::spawn({
                let (b, n) = (b.clone(), n.clone());
                async move { b.grant(n, t0()).await }
            }),
        );
        let results = [ra?, rb?];
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        ensure!(winners.len() == 1, "round {round}: {results:?}");
        let winner = &winners[0].consent;
        let loser = results.iter().find_map(|r| r.as_ref().err()).expect("one failed");
        match loser {
            ConsentError::Conflict { refusal: ConsentRefusal::Superseded { by }, .. } => {
                ensure!(by == &winner.consent_id, "round {round}: loser names {by}")
            }
            other => anyhow::bail!("round {round}: loser failed with {other:?}"),
        }
        let old = a.get(&old.consent_id).await?.expect("stored");
        ensure!(old.superseded_by.as_deref() == Some(winner.consent_id.as_str()));
        // The loser's consent was not written.
        let listed = a.list(&worker(round), &BTreeSet::new(), None, 10, t0()).await?;
        ensure!(listed.len() == 2, "round {round}: {} consents", listed.len());
    }
    a.store().close().await;
    b.store().close().await;
    Ok(())
}

async fn concurrent_grants_with_one_request_id_create_one_consent(db: &Db) -> anyhow::Result<()> {
    let a = db.open().await?;
    let b = db.open().await?;
    for round in 0..5u8 {
        let mut n = new_consent(round);
        n.request_id = Some(format!("retry-{round}"));
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let (a, n) = (a.clone(), n.clone());
                async move { a.grant(n, t0()).await }
            }),
            tokio::spawn({
                let (b, n) = (b.clone(), n.clone());
                async move { b.grant(n, t0()).await }
            }),
        );
        let (ra, rb) = (ra??, rb??);
        ensure!(ra.consent == rb.consent, "round {round}");
        ensure!(ra.replayed != rb.replayed, "round {round}: exactly one attempt created it");
        ensure!(a.list(&worker(round), &BTreeSet::new(), None, 10, t0()).await?.len() == 1);
    }
    a.store().close().await;
    b.store().close().await;
    Ok(())
}
