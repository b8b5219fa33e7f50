//! The exchange log's store, writer and verification, on SQLite and PostgreSQL.
//!
//! Every test runs on both backends: SQLite in a temporary directory, PostgreSQL in a fresh database
//! created on `FEDX_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped
//! afterwards. When PostgreSQL is unreachable its tests fail if `FEDX_REQUIRE_PG=1` and are skipped with
//! a notice otherwise.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use fedx_gateway::audit::checkpoint::Checkpoint;
use fedx_gateway::audit::merkle::{self, Frontier};
use fedx_gateway::audit::record::{record_hash, Exchange, LegalBasis};
use fedx_gateway::audit::store::{AuditStore, ExchangeFilter};
use fedx_gateway::audit::verify::{verify_range, verify_saved_checkpoint, ChainFailure, VerifyReport};
use fedx_gateway::audit::writer::AuditLog;
use fedx_gateway::audit::{AuditConfig, AuditError, Hash, ZERO_HASH};
use fedx_gateway::signing::KeyRing;
use time::macros::datetime;
use time::{Duration as TimeDuration, OffsetDateTime};

mod support;

use support::{run, Backend, Db};

backend_suite!(
    append_query_and_paging,
    access_history_newest_first,
    concurrent_appends_through_writer,
    two_stores_share_one_chain,
    tamper_altered_field,
    tamper_rehashed_record_breaks_link,
    tamper_deleted_record,
    tamper_swapped_records,
    tamper_forged_records,
    truncation_detected_by_saved_checkpoint,
    checkpoint_tampering,
    verify_sub_range,
    checkpoints_and_proofs,
    prune_keeps_chain_verifiable,
    fail_closed_on_broken_database,
    writer_shutdown_flushes_and_signs,
    writer_checkpoints_by_record_count,
    separators_and_odd_values,
    many_chunks_first_failure,
    subject_queries_span_the_index_and_its_tail,
);

impl Db {
    async fn open(&self) -> anyhow::Result<AuditStore> {
        Ok(AuditStore::open(&self.url).await?)
    }
}

const DEPTS: [&str; 3] = ["HRSS", "TAX", "MPS"];
const METHODS: [&str; 4] = [
    "/fedx.v1.WorkerViewService/GetWorkerView",
    "/fedx.v1.VerificationService/JointVerify",
    "/fedx.v1.AccessHistoryService/GetAccessHistory",
    "/fedx.v1.AuditService/QueryExchanges",
];
const PURPOSES: [&str; 2] = ["wage_arrears", "access_history"];

fn base_time() -> OffsetDateTime {
    datetime!(2024-03-01 08:00 UTC)
}

/// A varied exchange, deterministic in `i`.
fn exchange(i: u64) -> Exchange {
    Exchange {
        time: base_time() + TimeDuration::milliseconds(i as i64) + TimeDuration::microseconds(123),
        request_id: format!("req-{i}"),
        trace_id: format!("{i:032x}"),
        caller_dept: DEPTS[(i % 3) as usize].into(),
        caller_role: "ROLE_CONSUMER".into(),
        cert_serial: format!("{:x}", 0x1000 + i % 3),
        cert_fingerprint: "ab".repeat(32),
        method: METHODS[(i % 4) as usize].into(),
        purpose: PURPOSES[(i % 2) as usize].into(),
        legal_basis: match i % 3 {
            0 => None,
            1 => Some(LegalBasis::Consent(format!("consent-{i}"))),
            _ => Some(LegalBasis::Statute("PIPL art. 13(3); 保障农民工工资支付条例".into())),
        },
        worker_ref: format!("wr-{}", i % 5),
        sources_consulted: vec!["TAX".into(), "SI \"quoted\"".into()],
        disclosed_fields: if i.is_multiple_of(2) { vec!["identity.name".into()] } else { vec![] },
        claims_verified: vec!["employed_by".into(); (i % 3) as usize],
        outcome_code: if i.is_multiple_of(7) { 7 } else { 0 },
        outcome_reason: if i.is_multiple_of(7) { "PURPOSE_NOT_PERMITTED".into() } else { String::new() },
        latency_us: 1000 + i,
    }
}

async fn append_n(store: &AuditStore, from: u64, n: u64) -> anyhow::Result<()> {
    let batch: Vec<Exchange> = (from..from + n).map(exchange).collect();
    store.append(&batch).await?;
    Ok(())
}

async fn exec(store: &AuditStore, sql: &str) -> anyhow::Result<u64> {
    Ok(sqlx::query(sql).execute(store.pool()).await.with_context(|| sql.to_owned())?.rows_affected())
}

async fn stored_hash(store: &AuditStore, seq: u64) -> anyhow::Result<Hash> {
    store.record_hash(seq).await?.context("record missing")
}

fn assert_failure(report: &VerifyReport, seq: u64, failure: ChainFailure) -> anyhow::Result<()> {
    ensure!(!report.valid, "expected {failure:?} at {seq}, got a valid report {report:?}");
    ensure!(
        report.first_invalid_seq == seq && report.failure == Some(failure),
        "expected {failure:?} at {seq}, got {report:?}"
    );
    Ok(())
}

fn assert_valid(report: &VerifyReport) -> anyhow::Result<()> {
    ensure!(
        report.valid && report.failure.is_none() && report.first_invalid_seq == 0,
        "not valid: {report:?}"
    );
    Ok(())
}

/// 100 records with checkpoints at 30, 60 and 100.
async fn seeded(db: &Db) -> anyhow::Result<(AuditStore, KeyRing)> {
    let store = db.open().await?;
    let keys = KeyRing::generate_for_tests();
    append_n(&store, 1, 30).await?;
    store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("checkpoint 1")?;
    append_n(&store, 31, 30).await?;
    store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("checkpoint 2")?;
    append_n(&store, 61, 40).await?;
    store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("checkpoint 3")?;
    let report = verify_range(&store, &keys, 0, None).await?;
    assert_valid(&report)?;
    ensure!(report.records_checked == 100 && report.checkpoints_checked == 3, "{report:?}");
    Ok((store, keys))
}

async fn append_query_and_paging(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    ensure!(store.head().await? == (0, ZERO_HASH));
    ensure!(store.append(&[]).await?.is_empty());
    let mut odd_time = exchange(0);
    odd_time.time = datetime!(2024-03-01 07:00:00.000000999 UTC);
    let first = store.append(&[odd_time]).await?;
    ensure!(first.len() == 1 && first[0].seq == 1 && first[0].prev_hash == ZERO_HASH);
    ensure!(first[0].exchange.time == datetime!(2024-03-01 07:00 UTC), "time truncated to microseconds");
    let batch: Vec<Exchange> = (1..60).map(exchange).collect();
    let sealed = store.append(&batch).await?;
    ensure!(sealed.iter().map(|r| r.seq).eq(2..=60));
    ensure!(sealed[0].prev_hash == first[0].record_hash);
    for pair in sealed.windows(2) {
        ensure!(pair[1].prev_hash == pair[0].record_hash);
    }
    ensure!(store.head().await? == (60, sealed[58].record_hash));

    // Round trip: every field as written.
    let all = store.records(1, 60).await?;
    ensure!(all.len() == 60);
    ensure!(all[0] == first[0]);
    ensure!(all[1..] == sealed[..], "records read back differ from those sealed");
    ensure!(all.iter().all(|r| r.hash_matches()));
    ensure!(store.records(10, 12).await?.iter().map(|r| r.seq).eq(10..=12));

    // Filters.
    let by = |f: ExchangeFilter| {
        let store = store.clone();
        async move { store.query(&f, 0, 1000).await }
    };
    let expect = |pred: &dyn Fn(&Exchange) -> bool| -> Vec<u64> {
        all.iter().filter(|r| pred(&r.exchange)).map(|r| r.seq).collect()
    };
    let seqs =
        |v: Vec<fedx_gateway::audit::record::ExchangeRecord>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
    ensure!(seqs(by(ExchangeFilter::default()).await?) == (1..=60).collect::<Vec<_>>());
    let f = ExchangeFilter { department: Some("TAX".into()), ..Default::default() };
    ensure!(seqs(by(f).await?) == expect(&|e| e.caller_dept == "TAX"));
    let f = ExchangeFilter { purpose: Some("access_history".into()), ..Default::default() };
    ensure!(seqs(by(f).await?) == expect(&|e| e.purpose == "access_history"));
    let f = ExchangeFilter { method: Some(METHODS[1].into()), ..Default::default() };
    ensure!(seqs(by(f).await?) == expect(&|e| e.method == METHODS[1]));
    let f = ExchangeFilter { outcome_code: Some(7), ..Default::default() };
    ensure!(seqs(by(f).await?) == expect(&|e| e.outcome_code == 7));
    let f = ExchangeFilter { worker_ref: Some("wr-3".into()), ..Default::default() };
    ensure!(seqs(by(f).await?) == expect(&|e| e.worker_ref == "wr-3"));
    let start = base_time() + TimeDuration::milliseconds(10);
    let end = base_time() + TimeDuration::milliseconds(20);
    let f = ExchangeFilter { start: Some(start), end: Some(end), ..Default::default() };
    ensure!(seqs(by(f).await?) == expect(&|e| e.time >= start && e.time < end));
    let f = ExchangeFilter {
        start: Some(start),
        department: Some("HRSS".into()),
        outcome_code: Some(0),
        ..Default::default()
    };
    let combined = expect(&|e| e.time >= start && e.caller_dept == "HRSS" && e.outcome_code == 0);
    ensure!(!combined.is_empty());
    ensure!(seqs(by(f.clone()).await?) == combined);

    // Paging with after_seq.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.query(&f, after, 3).await?;
        if page.is_empty() {
            break;
        }
        ensure!(page.len() <= 3);
        after = page.last().map(|r| r.seq).unwrap_or(after);
        paged.extend(page.iter().map(|r| r.seq));
    }
    ensure!(paged == combined);
    ensure!(store.query(&f, 0, 0).await?.is_empty());
    Ok(())
}

async fn access_history_newest_first(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    append_n(&store, 0, 80).await?;
    let all = store.records(1, 80).await?;
    let expected: Vec<u64> = all
        .iter()
        .rev()
        .filter(|r| {
            r.exchange.worker_ref == "wr-2" && !r.exchange.method.starts_with("/fedx.v1.AuditService/")
        })
        .map(|r| r.seq)
        .collect();
    ensure!(!expected.is_empty());
    // AuditService calls exist for wr-2 but are left out.
    ensure!(all.iter().any(|r| r.exchange.worker_ref == "wr-2" && r.exchange.method == METHODS[3]));
    let history = store.access_history("wr-2", None, None, None, 1000).await?;
    ensure!(history.iter().map(|r| r.seq).collect::<Vec<_>>() == expected);

    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store.access_history("wr-2", None, None, before, 4).await?;
        if page.is_empty() {
            break;
        }
        before = page.last().map(|r| r.seq);
        paged.extend(page.iter().map(|r| r.seq));
    }
    ensure!(paged == expected);

    let start = base_time() + TimeDuration::milliseconds(20);
    let end = base_time() + TimeDuration::milliseconds(50);
    let windowed = store.access_history("wr-2", Some(start), Some(end), None, 1000).await?;
    let expected_window: Vec<u64> = all
        .iter()
        .rev()
        .filter(|r| {
            r.exchange.worker_ref == "wr-2"
                && r.exchange.method != METHODS[3]
                && r.exchange.time >= start
                && r.exchange.time < end
        })
        .map(|r| r.seq)
        .collect();
    ensure!(windowed.iter().map(|r| r.seq).collect::<Vec<_>>() == expected_window);
    ensure!(store.access_history("nobody", None, None, None, 10).await?.is_empty());
    Ok(())
}

async fn concurrent_appends_through_writer(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let keys = Arc::new(KeyRing::generate_for_tests());
    let config = AuditConfig { max_batch: 64, ..AuditConfig::default() };
    let log = AuditLog::start(store.clone(), keys.clone(), config);
    let mut tasks = Vec::new();
    for t in 0..100u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20u64 {
                seqs.push(log.append(exchange(t * 1000 + i)).await?);
            }
            Ok::<_, AuditError>(seqs)
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await??);
    }
    seqs.sort_unstable();
    ensure!(seqs == (1..=2000).collect::<Vec<_>>(), "seqs are not 1..=2000 exactly once");
    log.shutdown().await;
    let checkpoint = store.checkpoint(None).await?.context("final checkpoint")?;
    ensure!(checkpoint.tree_size == 2000);
    let report = verify_range(&store, &keys, 0, None).await?;
    assert_valid(&report)?;
    ensure!(report.records_checked == 2000 && report.head_seq == 2000);
    Ok(())
}

async fn two_stores_share_one_chain(db: &Db) -> anyhow::Result<()> {
    // Two gateway processes: two stores, each with its own pools, on one database.
    let a = db.open().await?;
    let b = db.open().await?;
    let mut tasks = Vec::new();
    for (k, store) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for round in 0..25u64 {
                let batch: Vec<Exchange> =
                    (0..1 + round % 7).map(|i| exchange(k as u64 * 100_000 + round * 10 + i)).collect();
                seqs.extend(store.append(&batch).await?.iter().map(|r| r.seq));
            }
            Ok::<_, AuditError>(seqs)
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await??);
    }
    let n = seqs.len() as u64;
    seqs.sort_unstable();
    ensure!(seqs == (1..=n).collect::<Vec<_>>(), "seqs overlap or have gaps");
    ensure!(a.head().await? == b.head().await?);
    let keys = KeyRing::generate_for_tests();
    // Both sign; the second finds nothing new.
    ensure!(a.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.is_some());
    ensure!(b.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.is_none());
    let report = verify_range(&b, &keys, 0, None).await?;
    assert_valid(&report)?;
    ensure!(report.records_checked == n && report.checkpoints_checked == 1);
    Ok(())
}

async fn tamper_altered_field(db: &Db) -> anyhow::Result<()> {
    let (store, keys) = seeded(db).await?;
    exec(&store, "UPDATE audit_records SET purpose = 'marketing' WHERE seq = 37").await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 37, ChainFailure::RecordHashMismatch)?;
    exec(&store, "UPDATE audit_records SET purpose = 'access_history' WHERE seq = 37").await?;
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;

    // A value the gateway never writes: a malformed list, a legal basis value without a kind.
    exec(&store, "UPDATE audit_records SET sources_consulted = 'not json' WHERE seq = 12").await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 12, ChainFailure::RecordHashMismatch)?;
    ensure!(store.records(12, 12).await.is_err(), "reading a malformed record is an error");
    exec(
        &store,
        "UPDATE audit_records SET sources_consulted = '[\"TAX\",\"SI \\\"quoted\\\"\"]' WHERE seq = 12",
    )
    .await?;
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;
    exec(&store, "UPDATE audit_records SET legal_basis_value = 'x' WHERE seq = 3").await?; // kind 0
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 3, ChainFailure::RecordHashMismatch)?;
    exec(&store, "UPDATE audit_records SET legal_basis_value = NULL WHERE seq = 3").await?;

    // A malformed prev_hash.
    exec(&store, "UPDATE audit_records SET prev_hash = 'zz' WHERE seq = 5").await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 5, ChainFailure::PrevHashMismatch)?;
    Ok(())
}

async fn tamper_rehashed_record_breaks_link(db: &Db) -> anyhow::Result<()> {
    // The attacker alters a record and recomputes its hash: the next record no longer links to it.
    let (store, keys) = seeded(db).await?;
    let mut record = store.records(44, 44).await?.remove(0);
    record.exchange.caller_dept = "FORGED".into();
    let forged_hash = record_hash(44, &record.exchange, &record.prev_hash);
    exec(
        &store,
        &format!(
            "UPDATE audit_records SET caller_dept = 'FORGED', record_hash = '{}' WHERE seq = 44",
            hex::encode(forged_hash)
        ),
    )
    .await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 45, ChainFailure::PrevHashMismatch)?;
    Ok(())
}

async fn tamper_deleted_record(db: &Db) -> anyhow::Result<()> {
    let (store, keys) = seeded(db).await?;
    exec(&store, "DELETE FROM audit_records WHERE seq = 42").await?;
    let report = verify_range(&store, &keys, 0, None).await?;
    assert_failure(&report, 42, ChainFailure::SeqGap)?;
    ensure!(report.head_seq == 41 && report.records_checked == 41, "{report:?}");
    // The last records deleted (head row left alone).
    exec(&store, "DELETE FROM audit_records WHERE seq >= 42").await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 42, ChainFailure::SeqGap)?;
    Ok(())
}

async fn tamper_swapped_records(db: &Db) -> anyhow::Result<()> {
    let (store, keys) = seeded(db).await?;
    exec(&store, "UPDATE audit_records SET seq = -1 WHERE seq = 10").await?;
    exec(&store, "UPDATE audit_records SET seq = 10 WHERE seq = 11").await?;
    exec(&store, "UPDATE audit_records SET seq = 11 WHERE seq = -1").await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 10, ChainFailure::PrevHashMismatch)?;
    Ok(())
}

async fn tamper_forged_records(db: &Db) -> anyhow::Result<()> {
    let (store, keys) = seeded(db).await?;
    // 1. A correctly chained record after the head, without updating the head row.
    let mut forged = exchange(999);
    forged.caller_dept = "FORGED".into();
    let prev = stored_hash(&store, 100).await?;
    insert_raw(&store, 101, &forged, &prev, &record_hash(101, &forged, &prev)).await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 101, ChainFailure::SeqGap)?;
    exec(&store, "DELETE FROM audit_records WHERE seq = 101").await?;
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;

    // 2. A record slipped in after 20, correctly chained to 20; later records shifted up by one.
    exec(&store, "UPDATE audit_records SET seq = -seq WHERE seq > 20").await?;
    exec(&store, "UPDATE audit_records SET seq = 1 - seq WHERE seq < 0").await?;
    let prev = stored_hash(&store, 20).await?;
    insert_raw(&store, 21, &forged, &prev, &record_hash(21, &forged, &prev)).await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 22, ChainFailure::PrevHashMismatch)?;

    // 3. A forged record with a made-up hash in a gap.
    exec(&store, "DELETE FROM audit_records WHERE seq = 21").await?;
    insert_raw(&store, 21, &forged, &prev, &[7u8; 32]).await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 21, ChainFailure::RecordHashMismatch)?;
    Ok(())
}

/// Inserts a record row directly, as an attacker with database access would.
async fn insert_raw(
    store: &AuditStore,
    seq: u64,
    e: &Exchange,
    prev: &Hash,
    hash: &Hash,
) -> anyhow::Result<()> {
    let (kind, value) = match &e.legal_basis {
        None => (0i16, None),
        Some(LegalBasis::Consent(c)) => (1, Some(c.clone())),
        Some(LegalBasis::Statute(s)) => (2, Some(s.clone())),
    };
    sqlx::query(
        "INSERT INTO audit_records (seq, time_us, request_id, trace_id, caller_dept, caller_role, cert_serial, \
         cert_fingerprint, method, purpose, legal_basis_kind, legal_basis_value, worker_ref, sources_consulted, \
         disclosed_fields, claims_verified, outcome_code, outcome_reason, latency_us, prev_hash, record_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(seq as i64)
    .bind(e.time_us())
    .bind(&e.request_id)
    .bind(&e.trace_id)
    .bind(&e.caller_dept)
    .bind(&e.caller_role)
    .bind(&e.cert_serial)
    .bind(&e.cert_fingerprint)
    .bind(&e.method)
    .bind(&e.purpose)
    .bind(kind)
    .bind(value)
    .bind(&e.worker_ref)
    .bind(serde_json::to_string(&e.sources_consulted)?)
    .bind(serde_json::to_string(&e.disclosed_fields)?)
    .bind(serde_json::to_string(&e.claims_verified)?)
    .bind(e.outcome_code)
    .bind(&e.outcome_reason)
    .bind(e.latency_us as i64)
    .bind(hex::encode(prev))
    .bind(hex::encode(hash))
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Rewinds the log to `size` records as an attacker would: records, Merkle nodes, checkpoints and the
/// head row all made consistent.
async fn truncate_as_attacker(store: &AuditStore, size: u64) -> anyhow::Result<()> {
    exec(store, &format!("DELETE FROM audit_records WHERE seq > {size}")).await?;
    exec(store, &format!("DELETE FROM audit_checkpoints WHERE tree_size > {size}")).await?;
    for level in 1..64u32 {
        exec(store, &format!("DELETE FROM audit_nodes WHERE level = {level} AND idx >= {}", size >> level))
            .await?;
    }
    let ids = Frontier::node_ids(size);
    let nodes = store.nodes(&ids).await?;
    let mut frontier = String::new();
    for id in &ids {
        frontier.push_str(&hex::encode(nodes.get(id).context("frontier node")?));
    }
    let head = hex::encode(stored_hash(store, size).await?);
    exec(
        store,
        &format!(
            "UPDATE audit_head SET seq = {size}, tree_size = {size}, head_hash = '{head}', frontier = '{frontier}' \
             WHERE id = 1"
        ),
    )
    .await?;
    Ok(())
}

async fn truncation_detected_by_saved_checkpoint(db: &Db) -> anyhow::Result<()> {
    let (store, keys) = seeded(db).await?;
    // The auditor keeps the latest checkpoint outside the database.
    let saved = store.checkpoint(None).await?.context("checkpoint")?;
    ensure!(saved.tree_size == 100);
    let report = verify_saved_checkpoint(&store, &keys, &saved).await?;
    assert_valid(&report)?;
    ensure!(report.records_checked == 100 && report.head_hash == saved.head_hash);

    truncate_as_attacker(&store, 80).await?;
    // The database alone looks consistent…
    let report = verify_range(&store, &keys, 0, None).await?;
    assert_valid(&report)?;
    ensure!(report.head_seq == 80 && report.checkpoints_checked == 2);
    // …but not against the saved checkpoint.
    let report = verify_saved_checkpoint(&store, &keys, &saved).await?;
    assert_failure(&report, 81, ChainFailure::SeqGap)?;

    // Rewritten: the log goes on with other records past the saved size.
    append_n(&store, 5000, 30).await?;
    ensure!(store.head().await?.0 == 110);
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;
    let report = verify_saved_checkpoint(&store, &keys, &saved).await?;
    assert_failure(&report, 100, ChainFailure::CheckpointMismatch)?;

    // A checkpoint that was never signed by the key.
    let mut bogus = saved.clone();
    bogus.signature[0] ^= 1;
    assert_failure(
        &verify_saved_checkpoint(&store, &keys, &bogus).await?,
        100,
        ChainFailure::CheckpointSignature,
    )?;
    Ok(())
}

async fn checkpoint_tampering(db: &Db) -> anyhow::Result<()> {
    let (store, keys) = seeded(db).await?;
    let original = store.checkpoint(Some(2)).await?.context("checkpoint 2")?;
    ensure!(original.tree_size == 60);
    let root = hex::encode(original.root_hash);
    let signature = hex::encode(original.signature);

    // Altered root: the signature no longer covers it.
    exec(&store, &format!("UPDATE audit_checkpoints SET root_hash = '{}' WHERE seq = 2", "11".repeat(32)))
        .await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 60, ChainFailure::CheckpointSignature)?;
    exec(&store, &format!("UPDATE audit_checkpoints SET root_hash = '{root}' WHERE seq = 2")).await?;
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;

    // Altered or malformed signature.
    let mut flipped = original.signature;
    flipped[10] ^= 0x40;
    exec(
        &store,
        &format!("UPDATE audit_checkpoints SET signature = '{}' WHERE seq = 2", hex::encode(flipped)),
    )
    .await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 60, ChainFailure::CheckpointSignature)?;
    exec(&store, "UPDATE audit_checkpoints SET signature = 'nothex' WHERE seq = 2").await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 60, ChainFailure::CheckpointSignature)?;
    ensure!(store.checkpoint(Some(2)).await.is_err(), "a malformed checkpoint row reads as an error");
    exec(&store, &format!("UPDATE audit_checkpoints SET signature = '{signature}' WHERE seq = 2")).await?;
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;

    // A validly signed checkpoint whose root is not the records' root.
    let wrong =
        Checkpoint::sign(4, 45, [9u8; 32], stored_hash(&store, 45).await?, OffsetDateTime::now_utc(), &keys)?;
    insert_checkpoint(&store, &wrong).await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 45, ChainFailure::CheckpointMismatch)?;
    exec(&store, "DELETE FROM audit_checkpoints WHERE seq = 4").await?;

    // Records rewritten consistently (last record altered, hash and head row updated): the signed
    // checkpoint at 100 no longer matches.
    let mut last = store.records(100, 100).await?.remove(0);
    last.exchange.outcome_code = 0;
    last.exchange.outcome_reason = "rewritten".into();
    let rewritten = record_hash(100, &last.exchange, &last.prev_hash);
    exec(
        &store,
        &format!(
            "UPDATE audit_records SET outcome_code = 0, outcome_reason = 'rewritten', record_hash = '{}' \
             WHERE seq = 100",
            hex::encode(rewritten)
        ),
    )
    .await?;
    exec(&store, &format!("UPDATE audit_head SET head_hash = '{}' WHERE id = 1", hex::encode(rewritten)))
        .await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 100, ChainFailure::CheckpointMismatch)?;
    // A range that stops before it does not include that checkpoint.
    assert_valid(&verify_range(&store, &keys, 0, Some(99)).await?)?;

    // Checkpoints signed by a key the verifier does not know.
    let other = KeyRing::generate_for_tests();
    assert_failure(&verify_range(&store, &other, 0, Some(99)).await?, 30, ChainFailure::CheckpointSignature)?;
    Ok(())
}

async fn insert_checkpoint(store: &AuditStore, c: &Checkpoint) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, tree_size, root_hash, head_hash, signed_at_us, key_id, signature) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(c.seq as i64)
    .bind(c.tree_size as i64)
    .bind(hex::encode(c.root_hash))
    .bind(hex::encode(c.head_hash))
    .bind((c.signed_at.unix_timestamp_nanos() / 1000) as i64)
    .bind(&c.key_id)
    .bind(hex::encode(c.signature))
    .execute(store.pool())
    .await?;
    Ok(())
}

async fn verify_sub_range(db: &Db) -> anyhow::Result<()> {
    let (store, keys) = seeded(db).await?;
    let report = verify_range(&store, &keys, 31, Some(80)).await?;
    assert_valid(&report)?;
    // Checkpoint 30 (the boundary: frontier from stored nodes) and 60.
    ensure!(
        report.records_checked == 50 && report.checkpoints_checked == 2 && report.head_seq == 80,
        "{report:?}"
    );
    ensure!(report.head_hash == stored_hash(&store, 80).await?);
    let report = verify_range(&store, &keys, 7, Some(7)).await?;
    ensure!(report.valid && report.records_checked == 1);
    // Tampering outside the range is not seen; inside it is.
    exec(&store, "UPDATE audit_records SET method = 'x' WHERE seq = 20").await?;
    assert_valid(&verify_range(&store, &keys, 31, None).await?)?;
    assert_failure(&verify_range(&store, &keys, 10, None).await?, 20, ChainFailure::RecordHashMismatch)?;
    // The range's first record must link to the stored record before it.
    exec(&store, &format!("UPDATE audit_records SET record_hash = '{}' WHERE seq = 50", "00".repeat(32)))
        .await?;
    assert_failure(&verify_range(&store, &keys, 51, None).await?, 51, ChainFailure::PrevHashMismatch)?;
    // A damaged frontier node at the start of a sub-range shows at the boundary checkpoint.
    exec(&store, &format!("UPDATE audit_nodes SET hash = '{}' WHERE level = 5 AND idx = 0", "22".repeat(32)))
        .await?;
    assert_failure(&verify_range(&store, &keys, 61, None).await?, 60, ChainFailure::CheckpointMismatch)?;
    Ok(())
}

async fn checkpoints_and_proofs(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let keys = KeyRing::generate_for_tests();
    ensure!(store.checkpoint(None).await?.is_none());
    ensure!(store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.is_none(), "empty log");
    let mut sizes = Vec::new();
    for (round, n) in [1u64, 2, 5, 13, 40, 3].into_iter().enumerate() {
        append_n(&store, round as u64 * 100, n).await?;
        let checkpoint =
            store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("log grew")?;
        ensure!(checkpoint.seq == round as u64 + 1);
        ensure!(store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.is_none(), "no growth");
        sizes.push(checkpoint.tree_size);
    }
    ensure!(sizes == [1, 3, 8, 21, 61, 64]);
    let latest = store.checkpoint(None).await?.context("latest")?;
    ensure!(latest.seq == 6 && latest.tree_size == 64);
    ensure!(store.checkpoint(Some(3)).await?.map(|c| c.tree_size) == Some(8));
    ensure!(store.checkpoint(Some(7)).await?.is_none());
    ensure!(store.checkpoint_at_size(21).await?.map(|c| c.seq) == Some(4));
    ensure!(store.checkpoint_at_size(22).await?.is_none());
    let listed: Vec<u64> = store.list_checkpoints(None, 100).await?.iter().map(|c| c.seq).collect();
    ensure!(listed == [6, 5, 4, 3, 2, 1]);
    let page: Vec<u64> = store.list_checkpoints(Some(5), 2).await?.iter().map(|c| c.seq).collect();
    ensure!(page == [4, 3]);
    for c in store.list_checkpoints(None, 100).await? {
        c.verify_signature(&keys)?;
    }

    // Every record's inclusion proof under every checkpoint, and consistency between checkpoints.
    let records = store.records(1, 64).await?;
    let checkpoints = store.list_checkpoints(None, 100).await?;
    for c in &checkpoints {
        let nodes = store.nodes(&merkle::root_nodes(c.tree_size)).await?;
        ensure!(merkle::root_from_nodes(c.tree_size, &nodes) == Some(c.root_hash));
        for r in records.iter().take(c.tree_size as usize) {
            let index = r.seq - 1;
            let nodes = store.nodes(&merkle::inclusion_proof_nodes(index, c.tree_size)).await?;
            let path = merkle::inclusion_proof(index, c.tree_size, &nodes).context("inclusion proof")?;
            let leaf = merkle::leaf_hash(&r.record_hash);
            ensure!(merkle::verify_inclusion(&leaf, index, c.tree_size, &path, &c.root_hash));
        }
        for d in &checkpoints {
            if d.tree_size > c.tree_size {
                let nodes = store.nodes(&merkle::consistency_proof_nodes(c.tree_size, d.tree_size)).await?;
                let proof =
                    merkle::consistency_proof(c.tree_size, d.tree_size, &nodes).context("consistency")?;
                ensure!(merkle::verify_consistency(
                    c.tree_size,
                    d.tree_size,
                    &c.root_hash,
                    &d.root_hash,
                    &proof
                ));
            }
        }
    }
    // Nodes beyond the log are absent.
    let ids = [merkle::NodeId { level: 0, index: 64 }, merkle::NodeId { level: 3, index: 8 }];
    ensure!(store.nodes(&ids).await?.is_empty());
    Ok(())
}

async fn prune_keeps_chain_verifiable(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let keys = KeyRing::generate_for_tests();
    let old = datetime!(2020-06-01 00:00 UTC);
    let recent = datetime!(2024-06-01 00:00 UTC);
    let at = |n: u64| -> Vec<Exchange> { (0..n).map(|i| Exchange { time: old, ..exchange(i) }).collect() };
    // 2500 old records, checkpoints at 1000 and 2200, then 500 recent ones, checkpoints at 2700, 3000.
    store.append(&at(1000)).await?;
    let c1000 = store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("c1000")?;
    store.append(&at(1200)).await?;
    store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("c2200")?;
    store.append(&at(300)).await?;
    let fresh: Vec<Exchange> = (0..500).map(|i| Exchange { time: recent, ..exchange(i) }).collect();
    store.append(&fresh[..200]).await?;
    let c2700 = store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("c2700")?;
    store.append(&fresh[200..]).await?;
    store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("c3000")?;
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;

    // Nothing is older than 2019.
    let report = store.prune(datetime!(2019-01-01 00:00 UTC)).await?;
    ensure!(report.pruned_through == 0 && report.records_deleted == 0);

    let report = store.prune(datetime!(2021-01-01 00:00 UTC)).await?;
    // Newest checkpoint with all records old: 2200 → rounded down to 2048.
    ensure!(report.pruned_through == 2048, "{report:?}");
    ensure!(report.records_deleted == 2048);
    ensure!(report.anchor.as_ref().map(|c| c.tree_size) == Some(2200));
    ensure!(store.pruned_through().await? == 2048);
    ensure!(store.records(1, 3000).await?.first().map(|r| r.seq) == Some(2049));
    ensure!(store.head().await?.0 == 3000);

    let report = verify_range(&store, &keys, 0, None).await?;
    assert_valid(&report)?;
    ensure!(report.records_checked == 952 && report.checkpoints_checked == 3, "{report:?}");
    // The saved checkpoints still verify: inside the pruned part from the stored nodes, after it fully.
    assert_valid(&verify_saved_checkpoint(&store, &keys, &c1000).await?)?;
    assert_valid(&verify_saved_checkpoint(&store, &keys, &c2700).await?)?;
    // Proofs: a retained record has one, a pruned record has none.
    let nodes = store.nodes(&merkle::inclusion_proof_nodes(2048, 3000)).await?;
    ensure!(merkle::inclusion_proof(2048, 3000, &nodes).is_some());
    let nodes = store.nodes(&merkle::inclusion_proof_nodes(5, 3000)).await?;
    ensure!(merkle::inclusion_proof(5, 3000, &nodes).is_none());

    // Pruning again with the same cutoff changes nothing; appends go on.
    let again = store.prune(datetime!(2021-01-01 00:00 UTC)).await?;
    ensure!(again.pruned_through == 2048 && again.records_deleted == 0);
    store.append(&fresh[..10]).await?;
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;

    // Tampering with the first retained record is still caught.
    exec(&store, "UPDATE audit_records SET request_id = 'x' WHERE seq = 2049").await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 2049, ChainFailure::RecordHashMismatch)?;
    Ok(())
}

async fn fail_closed_on_broken_database(db: &Db) -> anyhow::Result<()> {
    // A schema the append cannot write to: the transaction rolls back, every waiter gets the error.
    let store = db.open().await?;
    append_n(&store, 0, 5).await?;
    let log = AuditLog::start(store.clone(), Arc::new(KeyRing::generate_for_tests()), AuditConfig::default());
    exec(&store, "DROP TABLE audit_nodes").await?;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append(exchange(i)).await }));
    }
    for task in tasks {
        ensure!(matches!(task.await?, Err(AuditError::Database(_))), "an append succeeded on a broken store");
    }
    ensure!(store.head().await?.0 == 5);
    ensure!(store.max_record_seq().await? == 5, "a failed batch left records behind");
    let stats = log.stats();
    ensure!(stats.records == 0 && stats.failed_records == 50 && stats.failed_commits >= 1, "{stats:?}");

    // A closed database.
    let store = db.open().await?;
    let log = AuditLog::start(store.clone(), Arc::new(KeyRing::generate_for_tests()), AuditConfig::default());
    store.close().await;
    ensure!(store.append(&[exchange(1)]).await.is_err());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append(exchange(i)).await }));
    }
    for task in tasks {
        ensure!(task.await?.is_err(), "an append succeeded on a closed store");
    }
    log.shutdown().await;
    ensure!(matches!(log.append(exchange(1)).await, Err(AuditError::WriterStopped)));
    Ok(())
}

async fn writer_shutdown_flushes_and_signs(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let keys = Arc::new(KeyRing::generate_for_tests());
    let config = AuditConfig {
        checkpoint_interval: Duration::from_secs(3600),
        max_batch: 16,
        ..AuditConfig::default()
    };
    let log = AuditLog::start(store.clone(), keys.clone(), config);
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append(exchange(i)).await }));
    }
    tokio::task::yield_now().await;
    let shutdown = {
        let log = log.clone();
        tokio::spawn(async move { log.shutdown().await })
    };
    let mut ok = HashSet::new();
    for task in tasks {
        match task.await? {
            Ok(seq) => ensure!(ok.insert(seq), "seq {seq} given twice"),
            // Appends that arrived after shutdown began are refused, never lost silently.
            Err(AuditError::WriterStopped) => {}
            Err(e) => anyhow::bail!("unexpected error {e}"),
        }
    }
    shutdown.await?;
    log.shutdown().await; // idempotent
    let n = ok.len() as u64;
    ensure!(ok == (1..=n).collect::<HashSet<_>>());
    ensure!(store.head().await?.0 == n);
    ensure!(matches!(log.append(exchange(1)).await, Err(AuditError::WriterStopped)));
    if n > 0 {
        let checkpoint = store.checkpoint(None).await?.context("final checkpoint")?;
        ensure!(checkpoint.tree_size == n, "final checkpoint covers {} of {n}", checkpoint.tree_size);
    }
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;
    ensure!(log.checkpoint_now().await?.is_none());
    Ok(())
}

async fn writer_checkpoints_by_record_count(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let keys = Arc::new(KeyRing::generate_for_tests());
    let config = AuditConfig {
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_every_records: 50,
        ..AuditConfig::default()
    };
    let log = AuditLog::start(store.clone(), keys.clone(), config);
    for i in 0..60 {
        log.append(exchange(i)).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.checkpoint(None).await?.is_none() {
        ensure!(tokio::time::Instant::now() < deadline, "no checkpoint after 50 records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = store.checkpoint(None).await?.context("checkpoint")?;
    ensure!(first.tree_size >= 50);
    ensure!(Arc::ptr_eq(log.keys(), &keys));
    ensure!(log.store().head().await?.0 == 60);

    // And by time.
    let store2 = store.clone();
    let log2 = AuditLog::start(
        store2,
        keys.clone(),
        AuditConfig { checkpoint_interval: Duration::from_millis(100), ..AuditConfig::default() },
    );
    log2.append(exchange(100)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.checkpoint(None).await?.map(|c| c.tree_size) != Some(61) {
        ensure!(tokio::time::Instant::now() < deadline, "no checkpoint after the interval");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.shutdown().await;
    log2.shutdown().await;
    assert_valid(&verify_range(&store, &keys, 0, None).await?)?;
    Ok(())
}

async fn separators_and_odd_values(db: &Db) -> anyhow::Result<()> {
    // Values holding the characters the fast verification path uses as separators, or JSON escapes,
    // or nothing at all: verification must still be exact (they take the strict path).
    let store = db.open().await?;
    let keys = KeyRing::generate_for_tests();
    let mut odd = vec![Exchange::default(), exchange(1), exchange(2), exchange(3), exchange(4)];
    odd[1].outcome_reason = "a\u{1f}b\u{1e}c".into();
    odd[2].legal_basis = Some(LegalBasis::Statute("=x\u{1f}".into()));
    odd[3].sources_consulted = vec!["\u{1e}".into(), "\\\"\n".into(), String::new()];
    odd[4].legal_basis = Some(LegalBasis::Consent(String::new()));
    odd[4].latency_us = u64::MAX;
    odd[4].outcome_code = i32::MIN;
    odd[4].time = datetime!(1969-12-31 23:59:59.5 UTC);
    let sealed = store.append(&odd).await?;
    append_n(&store, 10, 20).await?;
    store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("checkpoint")?;
    ensure!(store.records(1, 5).await? == sealed, "odd values round-trip");
    let report = verify_range(&store, &keys, 0, None).await?;
    assert_valid(&report)?;
    ensure!(report.records_checked == 25);
    exec(&store, "UPDATE audit_records SET latency_us = 0 WHERE seq = 5").await?;
    assert_failure(&verify_range(&store, &keys, 0, None).await?, 5, ChainFailure::RecordHashMismatch)?;
    Ok(())
}

async fn many_chunks_first_failure(db: &Db) -> anyhow::Result<()> {
    // Several verification ranges in flight at once: the first failure is still the lowest one.
    let store = db.open().await?;
    let keys = KeyRing::generate_for_tests();
    for start in (0..20_000u64).step_by(5_000) {
        append_n(&store, start, 5_000).await?;
        store.sign_checkpoint(&keys, OffsetDateTime::now_utc()).await?.context("checkpoint")?;
    }
    let report = verify_range(&store, &keys, 0, None).await?;
    assert_valid(&report)?;
    ensure!(report.records_checked == 20_000 && report.checkpoints_checked == 4, "{report:?}");
    ensure!(report.head_hash == stored_hash(&store, 20_000).await?);
    exec(&store, "UPDATE audit_records SET purpose = 'x' WHERE seq IN (9000, 17000)").await?;
    exec(&store, "DELETE FROM audit_records WHERE seq = 19000").await?;
    let report = verify_range(&store, &keys, 0, None).await?;
    assert_failure(&report, 9000, ChainFailure::RecordHashMismatch)?;
    ensure!(report.head_seq == 8999 && report.records_checked == 9000, "{report:?}");
    assert_failure(&verify_range(&store, &keys, 9001, None).await?, 17000, ChainFailure::RecordHashMismatch)?;
    assert_failure(&verify_range(&store, &keys, 17001, None).await?, 19000, ChainFailure::SeqGap)?;
    assert_valid(&verify_range(&store, &keys, 9001, Some(16999)).await?)?;
    Ok(())
}

/// Queries by subject see every record whether it is in the bulk-built subject index or still in the tail
/// after its watermark, before, during and after indexing; pruning removes index entries with the records.
async fn subject_queries_span_the_index_and_its_tail(db: &Db) -> anyhow::Result<()> {
    let store = db.open().await?;
    let by_subject = |store: &AuditStore| {
        let store = store.clone();
        async move {
            let f = ExchangeFilter { worker_ref: Some("wr-3".into()), ..Default::default() };
            let queried: Vec<u64> = store.query(&f, 0, 10_000).await?.iter().map(|r| r.seq).collect();
            let mut history: Vec<u64> =
                store.access_history("wr-3", None, None, None, 10_000).await?.iter().map(|r| r.seq).collect();
            history.reverse();
            anyhow::Ok((queried, history))
        }
    };
    append_n(&store, 0, 100).await?;
    let expected: Vec<u64> = (1..=100).filter(|seq| (seq - 1) % 5 == 3).collect();
    ensure!(store.subject_backlog().await? == 100);
    let (queried, history) = by_subject(&store).await?;
    ensure!(queried == expected, "tail only: {queried:?}");
    // Access history leaves AuditService calls out; the query does not.
    ensure!(history.iter().all(|seq| expected.contains(seq)) && !history.is_empty());

    // Index part of it: the answer does not change.
    ensure!(store.index_subjects(37).await? == 37);
    ensure!(store.subject_backlog().await? == 63);
    ensure!(by_subject(&store).await? == (queried.clone(), history.clone()));
    let indexed =
        sqlx::query("SELECT count(*) FROM audit_subjects WHERE seq <= 37").fetch_one(store.pool()).await?;
    ensure!(sqlx::Row::try_get::<i64, _>(&indexed, 0)? == 37, "every record names a worker");

    // All of it, then more records on top.
    ensure!(store.index_subjects(u64::MAX).await? == 63);
    ensure!(store.index_subjects(u64::MAX).await? == 0);
    append_n(&store, 100, 50).await?;
    let expected: Vec<u64> = (1..=150).filter(|seq| (seq - 1) % 5 == 3).collect();
    let (queried, _) = by_subject(&store).await?;
    ensure!(queried == expected, "index and tail: {queried:?}");

    // A second store on the same database (another replica) sees the same.
    let other = db.open().await?;
    ensure!(by_subject(&other).await?.0 == expected);

    // Pruning removes the subject index entries of the pruned records (retention boundaries are
    // multiples of 1024 records).
    append_n(&store, 150, 2000).await?;
    store.index_subjects(u64::MAX).await?;
    ensure!(store
        .sign_checkpoint(&KeyRing::generate_for_tests(), OffsetDateTime::now_utc())
        .await?
        .is_some());
    let report = store.prune(OffsetDateTime::now_utc() + TimeDuration::days(1)).await?;
    ensure!(report.pruned_through == 2048, "{report:?}");
    let count = |sql: &'static str| {
        let store = store.clone();
        async move {
            anyhow::Ok(sqlx::Row::try_get::<i64, _>(&sqlx::query(sql).fetch_one(store.pool()).await?, 0)?)
        }
    };
    ensure!(count("SELECT count(*) FROM audit_subjects WHERE seq <= 2048").await? == 0);
    ensure!(count("SELECT count(*) FROM audit_subjects WHERE seq > 2048").await? == 102);
    let (queried, _) = by_subject(&store).await?;
    ensure!(queried == (2049..=2150u64).filter(|s| (s - 1) % 5 == 3).collect::<Vec<_>>());
    Ok(())
}
