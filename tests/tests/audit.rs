//! End-to-end over real mTLS: the exchange log. Every call is recorded before it is answered, auditors
//! query and verify the log (hash chain, Merkle proofs, Ed25519-signed checkpoints checked here with
//! ed25519-dalek and the published key, not with the gateway's own code), tampering is reported, workers
//! can learn who asked about them, and the gateway fails closed when it cannot write the log.
//! Each test runs on SQLite and on PostgreSQL.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signature, VerifyingKey};
use fedx_adapters::{SeedOptions, TruthRecord};
use fedx_gateway::audit::checkpoint::Checkpoint;
use fedx_gateway::audit::merkle::{self, leaf_hash, node_hash};
use fedx_gateway::audit::Hash;
use fedx_gateway::authn::Role;
use fedx_tests::status::with_request_id;
use fedx_tests::{backend_suite, pb, resolvable, subject_of, Backend, ClientIdentity, TestGateway};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

type AuditClient = pb::audit_service_client::AuditServiceClient<Channel>;
type HistoryClient = pb::access_history_service_client::AccessHistoryServiceClient<Channel>;
type IdentityClient = pb::identity_service_client::IdentityServiceClient<Channel>;
type AdminClient = pb::admin_service_client::AdminServiceClient<Channel>;
type GatewayClient = pb::gateway_service_client::GatewayServiceClient<Channel>;

const PURPOSE: &str = "wage_arrears_investigation";
const RESOLVE: &str = "/fedx.v1.IdentityService/ResolveIdentity";
const LIST_CERTS: &str = "/fedx.v1.AdminService/ListCertificates";
const WHO_AM_I: &str = "/fedx.v1.GatewayService/WhoAmI";
const ACCESS_HISTORY: &str = "/fedx.v1.AccessHistoryService/GetAccessHistory";
const AUDIT_PREFIX: &str = "/fedx.v1.AuditService/";
const ALL_SOURCES: [&str; 5] =
    ["education", "industry_commerce", "public_security", "social_insurance", "tax"];

fn small_population() -> SeedOptions {
    SeedOptions::new(200, 7)
}

/// The suite calls from several departments under one purpose: the shipped catalogue registers only
/// social insurance for it, so the gateway runs with a copy that opens it to every department.
async fn start_gateway(backend: Backend) -> anyhow::Result<(TestGateway, Vec<TruthRecord>)> {
    TestGateway::start_with_sources_configured(backend, small_population(), |config| {
        TestGateway::open_purpose_to_all(config, PURPOSE).expect("test catalogue")
    })
    .await
}

fn resolve_request(person: &TruthRecord) -> pb::ResolveIdentityRequest {
    pb::ResolveIdentityRequest { purpose: PURPOSE.into(), subject: Some(subject_of(person)) }
}

fn request_id_of(metadata: &MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("every response carries x-request-id")
}

fn is_well_formed_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn error_reason(status: &Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

fn field_violations(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Asserts an INVALID_ARGUMENT naming one of `fields` in its BadRequest.
fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, fields: &[&str], what: &str) {
    let status = match result {
        Ok(v) => panic!("{what}: expected INVALID_ARGUMENT, got {v:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let violations = field_violations(&status);
    assert!(
        violations.iter().any(|v| fields.contains(&v.as_str())),
        "{what}: expected a field violation on one of {fields:?}, got {violations:?}"
    );
}

async fn query(
    client: &mut AuditClient,
    request: pb::QueryExchangesRequest,
) -> Result<Vec<pb::ExchangeRecord>, Status> {
    let mut stream = client.query_exchanges(request).await?.into_inner();
    let mut records = Vec::new();
    while let Some(record) = stream.message().await? {
        records.push(record);
    }
    Ok(records)
}

async fn query_all(client: &mut AuditClient) -> anyhow::Result<Vec<pb::ExchangeRecord>> {
    Ok(query(client, pb::QueryExchangesRequest::default()).await?)
}

fn not_audit(r: &&pb::ExchangeRecord) -> bool {
    !r.method.starts_with(AUDIT_PREFIX)
}

fn by_request_id<'a>(records: &'a [pb::ExchangeRecord], id: &str) -> &'a pb::ExchangeRecord {
    let found: Vec<_> = records.iter().filter(|r| r.request_id == id).collect();
    assert_eq!(found.len(), 1, "exactly one record with request_id {id}: {found:#?}");
    found[0]
}

fn caller(r: &pb::ExchangeRecord) -> &pb::Caller {
    r.caller.as_ref().expect("record names its caller")
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() as i64
}

fn time_key(r: &pb::ExchangeRecord) -> (i64, i32) {
    let t = r.time.as_ref().expect("record has a time");
    (t.seconds, t.nanos)
}

fn hex_decode(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit()), "not hex: {s}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_from(bytes: &[u8]) -> Hash {
    bytes.try_into().unwrap_or_else(|_| panic!("expected 32 bytes, got {}", bytes.len()))
}

fn record_hash_of(r: &pb::ExchangeRecord) -> Hash {
    assert_eq!(r.record_hash.len(), 64, "record_hash is 64 hex digits");
    hash_from(&hex_decode(&r.record_hash))
}

/// RFC 6962 §2.1 Merkle tree hash over leaf hashes, computed here from first principles.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => panic!("no leaves"),
        1 => leaves[0],
        n => {
            let k = if n.is_power_of_two() { n / 2 } else { 1 << (usize::BITS - 1 - n.leading_zeros()) };
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// The checkpoint as the gateway's type, rebuilt from the wire form only (fields map 1:1).
fn checkpoint_from_proto(c: &pb::Checkpoint) -> Checkpoint {
    let signed_at = c.signed_at.as_ref().expect("signed_at set");
    assert_eq!(signed_at.nanos % 1000, 0, "signed_at is whole microseconds");
    Checkpoint {
        seq: c.seq,
        tree_size: c.tree_size,
        root_hash: hash_from(&c.root_hash),
        head_hash: hash_from(&hex_decode(&c.head_hash)),
        signed_at: time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(signed_at.seconds) * 1_000_000_000 + i128::from(signed_at.nanos),
        )
        .expect("signed_at in range"),
        key_id: c.key_id.clone(),
        signature: c.signature.as_slice().try_into().expect("64-byte signature"),
    }
}

/// Checks a checkpoint's signature with ed25519-dalek against the raw key GetSigningKeys publishes.
fn signature_verifies(keys: &pb::GetSigningKeysResponse, checkpoint: &Checkpoint) -> bool {
    let Some(key) = keys.keys.iter().find(|k| k.key_id == checkpoint.key_id) else {
        panic!("key {} not published: {keys:?}", checkpoint.key_id);
    };
    let raw: [u8; 32] = key.public_key.as_slice().try_into().expect("raw 32-byte Ed25519 key");
    let key = VerifyingKey::from_bytes(&raw).expect("valid Ed25519 public key");
    let signature = Signature::from_bytes(&checkpoint.signature);
    key.verify_strict(checkpoint.signed_text().as_bytes(), &signature).is_ok()
}

fn violated_text(status: &Status) -> String {
    let details: Vec<String> = status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| format!("{} {}", v.field, v.description)).collect())
        .unwrap_or_default();
    format!("{} {}", status.message(), details.join(" "))
}

async fn auditor_client(gw: &TestGateway) -> anyhow::Result<AuditClient> {
    let id = gw.issue("discipline_inspection", Role::Auditor).await?;
    Ok(AuditClient::new(gw.channel(Some(&id))?))
}

async fn count_records_with_request_id(gw: &TestGateway, id: &str) -> anyhow::Result<i64> {
    assert!(is_well_formed_request_id(id));
    // Request ids are [A-Za-z0-9._-]: safe to inline, and the same SQL on both backends.
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_records WHERE request_id = '{id}'"
    ))
    .fetch_one(gw.store.pool())
    .await?;
    Ok(n)
}

async fn every_call_is_recorded_before_it_is_answered(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start_gateway(backend).await?;
    let person = resolvable(&truth)[0];
    let consumer = gw.issue("social_insurance", Role::Consumer).await?;
    let channel = gw.channel(Some(&consumer))?;
    let started = unix_now();

    // Health checks are not exchanges.
    HealthClient::new(channel.clone()).check(HealthCheckRequest { service: String::new() }).await?;
    let me = GatewayClient::new(channel.clone())
        .who_am_i(with_request_id(pb::WhoAmIRequest {}, "whoami-1"))
        .await?
        .into_inner()
        .caller
        .expect("caller");

    // 1. A resolution, with the caller's request id.
    let response = IdentityClient::new(channel.clone())
        .resolve_identity(with_request_id(resolve_request(person), "resolve-1.a_B"))
        .await?;
    assert_eq!(request_id_of(response.metadata()), "resolve-1.a_B");
    let resolved = response.into_inner();
    assert_eq!(resolved.status(), pb::ResolutionStatus::Resolved);
    // Recorded before it was answered: the row is in the database the moment the answer arrives.
    assert_eq!(count_records_with_request_id(&gw, "resolve-1.a_B").await?, 1, "resolution not yet recorded");

    // 2. Refused by authorisation, without a request id: one is generated and returned.
    let refused = AdminClient::new(channel.clone())
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .expect_err("a consumer may not list certificates");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused_id = request_id_of(refused.metadata());
    assert!(is_well_formed_request_id(&refused_id), "generated id {refused_id:?}");
    assert_eq!(count_records_with_request_id(&gw, &refused_id).await?, 1, "refusal not yet recorded");

    // 3. An invalid request with a malformed request id: the gateway replaces it.
    let bad = pb::ResolveIdentityRequest {
        purpose: PURPOSE.into(),
        subject: Some(pb::SubjectQuery { citizen_id: "5323012A".into(), ..Default::default() }),
    };
    let invalid = IdentityClient::new(channel.clone())
        .resolve_identity(with_request_id(bad, "not a valid id!"))
        .await
        .expect_err("invalid citizen ID");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let invalid_id = request_id_of(invalid.metadata());
    assert_ne!(invalid_id, "not a valid id!");
    assert!(is_well_formed_request_id(&invalid_id), "generated id {invalid_id:?}");
    assert_ne!(invalid_id, refused_id, "generated ids are unique");
    assert_eq!(count_records_with_request_id(&gw, &invalid_id).await?, 1, "invalid call not yet recorded");
    let finished = unix_now();

    let mut auditor = auditor_client(&gw).await?;
    let records = query_all(&mut auditor).await?;
    let exchanges: Vec<&pb::ExchangeRecord> = records.iter().filter(not_audit).collect();
    let methods: Vec<&str> = exchanges.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, [WHO_AM_I, RESOLVE, LIST_CERTS, RESOLVE], "exactly the calls made, in order");
    assert!(records.iter().all(|r| !r.method.starts_with("/grpc.")), "health checks are not recorded");
    // The log is gap-free and chained.
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        let expected_prev = if i == 0 { "0".repeat(64) } else { records[i - 1].record_hash.clone() };
        assert_eq!(r.prev_hash, expected_prev, "prev_hash of seq {}", r.seq);
        assert_eq!(r.record_hash.len(), 64);
        let t = r.time.as_ref().expect("time");
        assert!((started - 1..=finished + 1).contains(&t.seconds), "time of seq {} outside the test", r.seq);
        assert_eq!(t.nanos % 1000, 0, "times are whole microseconds");
    }

    let resolve = by_request_id(&records, "resolve-1.a_B");
    assert_eq!(resolve.method, RESOLVE);
    assert_eq!(caller(resolve).department, "social_insurance");
    assert_eq!(caller(resolve).role(), pb::Role::Consumer);
    assert_eq!(caller(resolve).certificate_serial, consumer.serial);
    assert_eq!(caller(resolve).certificate_fingerprint, me.certificate_fingerprint);
    assert_eq!(resolve.purpose, PURPOSE);
    assert_eq!(resolve.worker_ref, resolved.worker_ref);
    assert_eq!(resolve.outcome_code, 0);
    assert_eq!(resolve.outcome_reason, "");
    let consulted: BTreeSet<&str> = resolve.sources_consulted.iter().map(String::as_str).collect();
    assert_eq!(consulted, BTreeSet::from(ALL_SOURCES), "{:?}", resolve.sources_consulted);
    assert_eq!(resolve.sources_consulted.len(), 5);
    assert_eq!(resolve.disclosed_fields, ["identity.worker_ref", "identity.links"]);
    assert!(resolve.claims_verified.is_empty());
    assert!(resolve.latency_us > 0);

    let denied = by_request_id(&records, &refused_id);
    assert_eq!(denied.method, LIST_CERTS);
    assert_eq!(caller(denied).department, "social_insurance");
    assert_eq!(caller(denied).role(), pb::Role::Consumer);
    assert_eq!(caller(denied).certificate_serial, consumer.serial);
    assert_eq!(denied.outcome_code, Code::PermissionDenied as i32);
    assert_eq!(denied.outcome_reason, "ROLE_NOT_PERMITTED");
    assert!(denied.worker_ref.is_empty() && denied.disclosed_fields.is_empty());

    let rejected = by_request_id(&records, &invalid_id);
    assert_eq!(rejected.method, RESOLVE);
    assert_eq!(rejected.outcome_code, Code::InvalidArgument as i32);
    assert_eq!(rejected.outcome_reason, error_reason(&invalid));
    assert_eq!(rejected.outcome_reason, "INVALID_REQUEST");
    assert!(rejected.worker_ref.is_empty() && rejected.disclosed_fields.is_empty());

    let whoami = by_request_id(&records, "whoami-1");
    assert_eq!((whoami.method.as_str(), whoami.outcome_code), (WHO_AM_I, 0));

    // The auditor's own query is recorded too (seen by the next query).
    let again = query_all(&mut auditor).await?;
    let audit_calls: Vec<_> =
        again.iter().filter(|r| r.method == "/fedx.v1.AuditService/QueryExchanges").collect();
    assert!(!audit_calls.is_empty(), "the auditor's query is not recorded");
    assert_eq!(caller(audit_calls[0]).department, "discipline_inspection");
    assert_eq!(caller(audit_calls[0]).role(), pb::Role::Auditor);

    // Metadata only: nothing of the person queried appears in any record.
    for record in &again {
        let text = format!("{record:?}");
        for personal in [&person.citizen_id, &person.citizen_id.to_lowercase(), &person.name, &person.phone] {
            assert!(!text.contains(personal.as_str()), "personal data in record {}: {text}", record.seq);
        }
        assert!(!text.contains("5323012A"), "rejected input echoed in record {}", record.seq);
    }
    gw.stop().await
}

/// Runs a filtered query and checks it returns exactly the `base` records matching, in ascending seq;
/// records it returns beyond the base (the auditor's own, recorded meanwhile) must match too.
async fn check(
    auditor: &mut AuditClient,
    base: &[pb::ExchangeRecord],
    request: pb::QueryExchangesRequest,
    matches: impl Fn(&pb::ExchangeRecord) -> bool,
    expected: &[u64],
) -> anyhow::Result<()> {
    let last = base.last().map(|r| r.seq).unwrap_or(0);
    let what = format!("{request:?}");
    let got = query(auditor, request).await?;
    let expected_from_base: Vec<u64> = base.iter().filter(|r| matches(r)).map(|r| r.seq).collect();
    assert_eq!(expected_from_base, expected, "test set-up for {what}");
    assert!(!expected.is_empty() && expected.len() < base.len(), "the filter must select: {what}");
    let within: Vec<u64> = got.iter().map(|r| r.seq).filter(|s| *s <= last).collect();
    assert_eq!(within, expected, "{what}");
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "{what}: ascending seq");
    for r in &got {
        assert!(matches(r), "{what}: record {} does not match: {r:?}", r.seq);
    }
    Ok(())
}

async fn query_filters_and_paging(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start_gateway(backend).await?;
    let people = resolvable(&truth);
    let (a, b) = (people[0], people[1]);
    let tax = IdentityClient::new(gw.channel(Some(&gw.issue("tax", Role::Consumer).await?))?);
    let education_id = gw.issue("education", Role::Consumer).await?;
    let education = IdentityClient::new(gw.channel(Some(&education_id))?);

    let ref_a = tax.clone().resolve_identity(resolve_request(a)).await?.into_inner().worker_ref; // seq 1
    let ref_b = tax.clone().resolve_identity(resolve_request(b)).await?.into_inner().worker_ref; // seq 2
    assert_ne!(ref_a, ref_b);
    education.clone().resolve_identity(resolve_request(a)).await?; // seq 3
    AdminClient::new(gw.channel(Some(&education_id))?)
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .expect_err("refused"); // seq 4
    let bad = pb::ResolveIdentityRequest { purpose: PURPOSE.into(), subject: None };
    tax.clone().resolve_identity(bad).await.expect_err("invalid"); // seq 5
    tokio::time::sleep(Duration::from_millis(5)).await;
    education.clone().resolve_identity(resolve_request(a)).await?; // seq 6

    let mut auditor = auditor_client(&gw).await?;
    let all = query_all(&mut auditor).await?;
    let base: Vec<pb::ExchangeRecord> = all.iter().filter(not_audit).cloned().collect();
    assert_eq!(base.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);

    let dept = |d: &'static str| move |r: &pb::ExchangeRecord| caller(r).department == d;
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest { department: "tax".into(), ..Default::default() },
        dept("tax"),
        &[1, 2, 5],
    )
    .await?;
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest { method: RESOLVE.into(), ..Default::default() },
        |r| r.method == RESOLVE,
        &[1, 2, 3, 5, 6],
    )
    .await?;
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest { outcome_code: Some(Code::PermissionDenied as i32), ..Default::default() },
        |r| r.outcome_code == Code::PermissionDenied as i32,
        &[4],
    )
    .await?;
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest {
            outcome_code: Some(0),
            department: "education".into(),
            ..Default::default()
        },
        |r| r.outcome_code == 0 && caller(r).department == "education",
        &[3, 6],
    )
    .await?;
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest { purpose: PURPOSE.into(), outcome_code: Some(0), ..Default::default() },
        |r| r.purpose == PURPOSE && r.outcome_code == 0,
        &[1, 2, 3, 6],
    )
    .await?;
    let is_a = |r: &pb::ExchangeRecord| r.worker_ref == ref_a;
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest { worker_ref: ref_a.clone(), ..Default::default() },
        is_a,
        &[1, 3, 6],
    )
    .await?;
    // By subject, resolved server-side to the same worker_ref.
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest { subject: Some(subject_of(a)), ..Default::default() },
        is_a,
        &[1, 3, 6],
    )
    .await?;
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest {
            subject: Some(pb::SubjectQuery { citizen_id: b.citizen_id.clone(), ..Default::default() }),
            ..Default::default()
        },
        |r| r.worker_ref == ref_b,
        &[2],
    )
    .await?;
    // Time range [time of seq 2, time of seq 6): start inclusive, end exclusive.
    let (t2, t6) = (base[1].time, base[5].time);
    let in_range =
        |r: &pb::ExchangeRecord| time_key(r) >= time_key(&base[1]) && time_key(r) < time_key(&base[5]);
    let expected_in_range: Vec<u64> = base.iter().filter(|r| in_range(r)).map(|r| r.seq).collect();
    assert!(
        expected_in_range.contains(&2) && !expected_in_range.contains(&6) && !expected_in_range.contains(&1)
    );
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest { start_time: t2, end_time: t6, ..Default::default() },
        in_range,
        &expected_in_range,
    )
    .await?;
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest { start_time: t6, ..Default::default() },
        |r| time_key(r) >= time_key(&base[5]),
        &[6],
    )
    .await?;
    check(
        &mut auditor,
        &base,
        pb::QueryExchangesRequest { method: RESOLVE.into(), after_seq: 3, ..Default::default() },
        |r| r.method == RESOLVE && r.seq > 3,
        &[5, 6],
    )
    .await?;

    // Paging: page_size caps a stream, after_seq resumes; each record exactly once.
    let first_page =
        query(&mut auditor, pb::QueryExchangesRequest { page_size: 2, ..Default::default() }).await?;
    assert_eq!(first_page.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = query(
            &mut auditor,
            pb::QueryExchangesRequest { page_size: 3, after_seq: after, ..Default::default() },
        )
        .await?;
        assert!(page.len() <= 3, "page_size exceeded: {}", page.len());
        assert!(page.iter().all(|r| r.seq > after));
        seen.extend(page.iter().map(|r| r.seq));
        if page.len() < 3 {
            break;
        }
        after = page.last().map(|r| r.seq).unwrap_or(after);
        assert!(seen.len() < 1000, "paging does not end");
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "each record exactly once: {seen:?}");
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seen, expected, "paging skipped or repeated records");
    let mut tax_seen = Vec::new();
    let mut after = 0;
    loop {
        let page = query(
            &mut auditor,
            pb::QueryExchangesRequest {
                department: "tax".into(),
                page_size: 1,
                after_seq: after,
                ..Default::default()
            },
        )
        .await?;
        assert!(page.len() <= 1);
        let Some(r) = page.first() else { break };
        tax_seen.push(r.seq);
        after = r.seq;
        assert!(tax_seen.len() < 100);
    }
    assert_eq!(tax_seen, [1, 2, 5]);

    // Subject given as a valid ID that no source holds.
    let stranger = "11010519491231002X";
    if truth.iter().all(|t| t.citizen_id != stranger) {
        let status = query(
            &mut auditor,
            pb::QueryExchangesRequest {
                subject: Some(pb::SubjectQuery { citizen_id: stranger.into(), ..Default::default() }),
                ..Default::default()
            },
        )
        .await
        .expect_err("nobody to resolve");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(error_reason(&status), "SUBJECT_NOT_FOUND");
    }

    // Invalid filters: BadRequest with field violations, values never echoed.
    assert_invalid(
        query(
            &mut auditor,
            pb::QueryExchangesRequest {
                subject: Some(subject_of(a)),
                worker_ref: ref_a.clone(),
                ..Default::default()
            },
        )
        .await,
        &["subject", "worker_ref"],
        "subject and worker_ref together",
    );
    assert_invalid(
        query(&mut auditor, pb::QueryExchangesRequest { start_time: t6, end_time: t2, ..Default::default() })
            .await,
        &["end_time", "start_time"],
        "end before start",
    );
    let malformed = "wr_NOT-A-REF-0123";
    let result =
        query(&mut auditor, pb::QueryExchangesRequest { worker_ref: malformed.into(), ..Default::default() })
            .await;
    if let Err(status) = &result {
        assert!(!violated_text(status).contains(malformed), "value echoed: {}", violated_text(status));
    }
    assert_invalid(result, &["worker_ref"], "malformed worker_ref");
    assert_invalid(
        query(&mut auditor, pb::QueryExchangesRequest { page_size: -1, ..Default::default() }).await,
        &["page_size"],
        "negative page_size",
    );
    // Only auditors query the log.
    let status = AuditClient::new(gw.channel(Some(&education_id))?)
        .query_exchanges(pb::QueryExchangesRequest::default())
        .await
        .expect_err("a consumer may not read the log");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(error_reason(&status), "ROLE_NOT_PERMITTED");
    gw.stop().await
}

async fn who_am_i_n(client: &GatewayClient, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        client.clone().who_am_i(pb::WhoAmIRequest {}).await?;
    }
    Ok(())
}

async fn verify_chain_proofs_and_signed_checkpoints(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let log = &gw.gateway.as_ref().expect("running").state.audit;
    let consumer: ClientIdentity = gw.issue("tax", Role::Consumer).await?;
    let client = GatewayClient::new(gw.channel(Some(&consumer))?);

    who_am_i_n(&client, 5).await?;
    let cp1 = log.checkpoint_now().await?.expect("the log grew: checkpoint 1");
    who_am_i_n(&client, 7).await?;
    let cp2 = log.checkpoint_now().await?.expect("the log grew: checkpoint 2");
    assert!(log.checkpoint_now().await?.is_none(), "no new checkpoint when the log has not grown");
    assert_eq!((cp1.seq, cp1.tree_size), (1, 5));
    assert_eq!((cp2.seq, cp2.tree_size), (2, 12));

    let mut auditor = auditor_client(&gw).await?;
    let verified = auditor.verify_chain(pb::VerifyChainRequest::default()).await?.into_inner();
    assert!(verified.valid, "{verified:?}");
    assert_eq!(verified.head_seq, 12, "one record per call so far: {verified:?}");
    assert_eq!(verified.records_checked, 12);
    assert_eq!(verified.checkpoints_checked, 2);
    assert_eq!(verified.first_invalid_seq, 0);
    assert_eq!(verified.failure(), pb::ChainFailure::Unspecified);

    let records = query_all(&mut auditor).await?;
    assert!(records.len() >= 13, "VerifyChain is recorded too");
    assert_eq!(verified.head_hash, records[11].record_hash);
    let leaves: Vec<Hash> = records.iter().map(|r| leaf_hash(&record_hash_of(r))).collect();

    // A range.
    let part = auditor.verify_chain(pb::VerifyChainRequest { from_seq: 3, to_seq: 8 }).await?.into_inner();
    assert!(part.valid, "{part:?}");
    assert_eq!((part.records_checked, part.head_seq), (6, 8));
    assert_eq!(part.head_hash, records[7].record_hash);
    assert_invalid(
        auditor.verify_chain(pb::VerifyChainRequest { from_seq: 9, to_seq: 8 }).await,
        &["from_seq", "to_seq"],
        "from_seq > to_seq",
    );

    // Checkpoints: by number, latest, listed newest first with paging.
    let latest = auditor.get_checkpoint(pb::GetCheckpointRequest { seq: 0 }).await?.into_inner();
    let first = auditor.get_checkpoint(pb::GetCheckpointRequest { seq: 1 }).await?.into_inner();
    assert_eq!(checkpoint_from_proto(&latest), cp2);
    assert_eq!(checkpoint_from_proto(&first), cp1);
    let missing =
        auditor.get_checkpoint(pb::GetCheckpointRequest { seq: 99 }).await.expect_err("no checkpoint 99");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(error_reason(&missing), "RESOURCE_NOT_FOUND");
    let listed = auditor.list_checkpoints(pb::ListCheckpointsRequest::default()).await?.into_inner();
    assert_eq!(listed.checkpoints, [latest.clone(), first.clone()]);
    assert!(listed.next_page_token.is_empty());
    let page1 = auditor
        .list_checkpoints(pb::ListCheckpointsRequest { page_size: 1, page_token: String::new() })
        .await?
        .into_inner();
    assert_eq!(page1.checkpoints, std::slice::from_ref(&latest));
    assert!(!page1.next_page_token.is_empty());
    let page2 = auditor
        .list_checkpoints(pb::ListCheckpointsRequest { page_size: 1, page_token: page1.next_page_token })
        .await?
        .into_inner();
    assert_eq!(page2.checkpoints, std::slice::from_ref(&first));
    assert!(page2.next_page_token.is_empty(), "{page2:?}");
    assert_invalid(
        auditor
            .list_checkpoints(pb::ListCheckpointsRequest { page_size: 1, page_token: "garbage!".into() })
            .await,
        &["page_token"],
        "bad page token",
    );

    // Each checkpoint commits to the records: head hash, Merkle root, and an Ed25519 signature by a
    // published key, checked independently of the gateway's code.
    let keys = GatewayClient::new(gw.channel(Some(&consumer))?)
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await?
        .into_inner();
    for cp in [&cp1, &cp2] {
        let n = cp.tree_size as usize;
        assert_eq!(hex_encode(&cp.head_hash), records[n - 1].record_hash, "head of checkpoint {}", cp.seq);
        assert_eq!(cp.root_hash, mth(&leaves[..n]), "Merkle root of checkpoint {}", cp.seq);
        assert!(signature_verifies(&keys, cp), "signature of checkpoint {} does not verify", cp.seq);
        let mut forged = cp.clone();
        forged.tree_size += 1;
        assert!(!signature_verifies(&keys, &forged), "signature must cover tree_size");
        let mut forged = cp.clone();
        forged.root_hash[0] ^= 1;
        assert!(!signature_verifies(&keys, &forged), "signature must cover root_hash");
    }

    // Inclusion proofs against each checkpoint's root.
    for (cp, tree_size_asked, seqs) in
        [(&cp1, 5, &[1u64, 2, 4, 5][..]), (&cp2, 12, &[1, 5, 6, 11, 12][..]), (&cp2, 0, &[3, 8][..])]
    {
        for &seq in seqs {
            let proof = auditor
                .get_inclusion_proof(pb::GetInclusionProofRequest { seq, tree_size: tree_size_asked })
                .await?
                .into_inner();
            assert_eq!((proof.leaf_index, proof.tree_size), (seq - 1, cp.tree_size));
            let leaf = hash_from(&proof.leaf_hash);
            assert_eq!(leaf, leaves[(seq - 1) as usize], "leaf hash of seq {seq}");
            let path: Vec<Hash> = proof.audit_path.iter().map(|h| hash_from(h)).collect();
            assert!(
                merkle::verify_inclusion(&leaf, seq - 1, cp.tree_size, &path, &cp.root_hash),
                "inclusion of seq {seq} in tree {}",
                cp.tree_size
            );
            let other_leaf = leaves[(seq % cp.tree_size) as usize];
            assert!(!merkle::verify_inclusion(&other_leaf, seq - 1, cp.tree_size, &path, &cp.root_hash));
        }
    }

    // Consistency between the two checkpoints.
    for second in [12, 0] {
        let proof = auditor
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                first_tree_size: 5,
                second_tree_size: second,
            })
            .await?
            .into_inner();
        assert_eq!((proof.first_tree_size, proof.second_tree_size), (5, 12));
        let hashes: Vec<Hash> = proof.proof.iter().map(|h| hash_from(h)).collect();
        assert!(!hashes.is_empty());
        assert!(merkle::verify_consistency(5, 12, &cp1.root_hash, &cp2.root_hash, &hashes));
        assert!(!merkle::verify_consistency(5, 12, &cp2.root_hash, &cp1.root_hash, &hashes));
    }
    let same = auditor
        .get_consistency_proof(pb::GetConsistencyProofRequest { first_tree_size: 12, second_tree_size: 12 })
        .await?
        .into_inner();
    assert!(same.proof.is_empty());

    // Bad arguments.
    assert_invalid(
        auditor.get_inclusion_proof(pb::GetInclusionProofRequest { seq: 0, tree_size: 12 }).await,
        &["seq"],
        "seq 0",
    );
    assert_invalid(
        auditor.get_inclusion_proof(pb::GetInclusionProofRequest { seq: 6, tree_size: 5 }).await,
        &["seq", "tree_size"],
        "seq beyond the tree",
    );
    assert_invalid(
        auditor.get_inclusion_proof(pb::GetInclusionProofRequest { seq: 1, tree_size: 7 }).await,
        &["tree_size"],
        "tree_size not a checkpoint",
    );
    assert_invalid(
        auditor
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                first_tree_size: 0,
                second_tree_size: 12,
            })
            .await,
        &["first_tree_size"],
        "first_tree_size 0",
    );
    assert_invalid(
        auditor
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                first_tree_size: 12,
                second_tree_size: 5,
            })
            .await,
        &["first_tree_size", "second_tree_size"],
        "first greater than second",
    );
    assert_invalid(
        auditor
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                first_tree_size: 6,
                second_tree_size: 12,
            })
            .await,
        &["first_tree_size"],
        "first_tree_size not a checkpoint",
    );
    gw.stop().await
}

async fn tampering_is_reported_by_verify_chain(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let log = &gw.gateway.as_ref().expect("running").state.audit;
    let consumer = gw.issue("tax", Role::Consumer).await?;
    who_am_i_n(&GatewayClient::new(gw.channel(Some(&consumer))?), 6).await?;
    let cp = log.checkpoint_now().await?.expect("checkpoint over 6 records");
    assert_eq!(cp.tree_size, 6);

    let mut auditor = auditor_client(&gw).await?;
    let before = auditor.verify_chain(pb::VerifyChainRequest::default()).await?.into_inner();
    assert!(before.valid && before.head_seq == 6, "{before:?}");

    // A department rewrites who asked, directly in the database.
    sqlx::query("UPDATE audit_records SET caller_dept = 'public_security' WHERE seq = 4")
        .execute(gw.store.pool())
        .await?;
    let after = auditor.verify_chain(pb::VerifyChainRequest::default()).await?.into_inner();
    assert!(!after.valid, "tampering not detected: {after:?}");
    assert_eq!(after.first_invalid_seq, 4, "{after:?}");
    assert_eq!(after.failure(), pb::ChainFailure::RecordHashMismatch, "{after:?}");
    // The records before it still verify.
    let prefix = auditor.verify_chain(pb::VerifyChainRequest { from_seq: 1, to_seq: 3 }).await?.into_inner();
    assert!(prefix.valid, "{prefix:?}");

    // Put it back: valid again (the detection is about content, not a sticky state).
    sqlx::query("UPDATE audit_records SET caller_dept = 'tax' WHERE seq = 4")
        .execute(gw.store.pool())
        .await?;
    let restored = auditor.verify_chain(pb::VerifyChainRequest::default()).await?.into_inner();
    assert!(restored.valid, "{restored:?}");

    // A forged checkpoint signature is reported at that checkpoint's tree size.
    let mut signature = hex_encode(&cp.signature);
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    signature.replace_range(0..1, flipped);
    sqlx::query(&format!("UPDATE audit_checkpoints SET signature = '{signature}' WHERE seq = {}", cp.seq))
        .execute(gw.store.pool())
        .await?;
    let forged = auditor.verify_chain(pb::VerifyChainRequest::default()).await?.into_inner();
    assert!(!forged.valid, "forged checkpoint signature not detected: {forged:?}");
    assert_eq!(forged.failure(), pb::ChainFailure::CheckpointSignature, "{forged:?}");
    assert_eq!(forged.first_invalid_seq, cp.tree_size, "{forged:?}");
    gw.stop().await
}

async fn access_history_lists_who_asked(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start_gateway(backend).await?;
    let people = resolvable(&truth);
    let (worker, other) = (people[0], people[1]);
    let started = unix_now();

    let tax = IdentityClient::new(gw.channel(Some(&gw.issue("tax", Role::Consumer).await?))?);
    let education = IdentityClient::new(gw.channel(Some(&gw.issue("education", Role::Consumer).await?))?);
    let worker_ref = tax.clone().resolve_identity(resolve_request(worker)).await?.into_inner().worker_ref;
    tokio::time::sleep(Duration::from_millis(5)).await;
    education.clone().resolve_identity(resolve_request(worker)).await?;
    // Someone else's exchange, and an auditor looking the worker up: neither is listed.
    education.clone().resolve_identity(resolve_request(other)).await?;
    let mut auditor = auditor_client(&gw).await?;
    let oversight = query(
        &mut auditor,
        pb::QueryExchangesRequest { worker_ref: worker_ref.clone(), ..Default::default() },
    )
    .await?;
    assert_eq!(oversight.iter().filter(not_audit).count(), 2, "{oversight:?}");

    let desk_id = gw.issue("social_insurance", Role::Consumer).await?;
    let mut desk = HistoryClient::new(gw.channel(Some(&desk_id))?);
    let ask = |purpose: &str| pb::GetAccessHistoryRequest {
        purpose: purpose.into(),
        subject: Some(subject_of(worker)),
        ..Default::default()
    };
    let history = desk.get_access_history(ask("access_history")).await?.into_inner();
    let seen: Vec<(&str, &str, &str, i32)> = history
        .entries
        .iter()
        .map(|e| (e.department.as_str(), e.purpose.as_str(), e.method.as_str(), e.outcome_code))
        .collect();
    assert_eq!(seen, [("education", PURPOSE, RESOLVE, 0), ("tax", PURPOSE, RESOLVE, 0)], "newest first");
    let times: Vec<(i64, i32)> = history
        .entries
        .iter()
        .map(|e| e.time.as_ref().map(|t| (t.seconds, t.nanos)).expect("time"))
        .collect();
    assert!(times[0] > times[1], "newest first: {times:?}");
    assert!(times.iter().all(|t| t.0 >= started - 1 && t.0 <= unix_now() + 1));
    assert!(history.next_page_token.is_empty());

    // The purpose must be access_history.
    let status = desk.get_access_history(ask(PURPOSE)).await.expect_err("wrong purpose");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(error_reason(&status), "PURPOSE_NOT_PERMITTED");

    // The lookup is itself an exchange about the worker: recorded, and listed next time.
    let again = desk.get_access_history(ask("access_history")).await?.into_inner();
    assert_eq!(again.entries.len(), 3, "{again:?}");
    let newest = &again.entries[0];
    assert_eq!(
        (newest.department.as_str(), newest.purpose.as_str(), newest.method.as_str(), newest.outcome_code),
        ("social_insurance", "access_history", ACCESS_HISTORY, 0)
    );
    let recorded = query(
        &mut auditor,
        pb::QueryExchangesRequest { method: ACCESS_HISTORY.into(), ..Default::default() },
    )
    .await?;
    let outcomes: Vec<(i32, &str, &str, &str)> = recorded
        .iter()
        .map(|r| {
            (r.outcome_code, r.outcome_reason.as_str(), r.purpose.as_str(), caller(r).department.as_str())
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (0, "", "access_history", "social_insurance"),
            (Code::PermissionDenied as i32, "PURPOSE_NOT_PERMITTED", PURPOSE, "social_insurance"),
            (0, "", "access_history", "social_insurance"),
        ]
    );
    assert_eq!(recorded[0].worker_ref, worker_ref);
    // Only consumers may ask.
    let status =
        HistoryClient::new(gw.channel(Some(&gw.issue("discipline_inspection", Role::Auditor).await?))?)
            .get_access_history(ask("access_history"))
            .await
            .expect_err("auditors use AuditService");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(error_reason(&status), "ROLE_NOT_PERMITTED");
    gw.stop().await
}

async fn fails_closed_when_the_log_cannot_be_written(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = start_gateway(backend).await?;
    let person = resolvable(&truth)[0];
    let mut client = IdentityClient::new(gw.channel(Some(&gw.issue("tax", Role::Consumer).await?))?);
    let answer = client.resolve_identity(resolve_request(person)).await?.into_inner();
    assert_eq!(answer.status(), pb::ResolutionStatus::Resolved);

    sqlx::query("ALTER TABLE audit_records RENAME TO audit_records_away").execute(gw.store.pool()).await?;
    let status = client
        .resolve_identity(with_request_id(resolve_request(person), "while-log-down"))
        .await
        .expect_err("no answer without a durable record");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(error_reason(&status), "AUDIT_UNAVAILABLE", "{status:?}");
    assert!(status.get_details_retry_info().is_some(), "RetryInfo expected: {status:?}");
    assert_eq!(request_id_of(status.metadata()), "while-log-down");
    let text = format!("{status:?}");
    assert!(!text.contains(&answer.worker_ref), "data leaked with the refusal: {text}");
    for field in ["public_security", "agreeing", "confidence"] {
        assert!(!status.message().contains(field), "{}", status.message());
    }

    // Once the log is back, calls are answered again and the chain is intact: the refused call left
    // no record and no gap.
    sqlx::query("ALTER TABLE audit_records_away RENAME TO audit_records").execute(gw.store.pool()).await?;
    let recovered = client.resolve_identity(with_request_id(resolve_request(person), "log-back")).await?;
    assert_eq!(request_id_of(recovered.metadata()), "log-back");
    let mut auditor = auditor_client(&gw).await?;
    let verified = auditor.verify_chain(pb::VerifyChainRequest::default()).await?.into_inner();
    assert!(verified.valid, "{verified:?}");
    assert_eq!(verified.head_seq, 2, "{verified:?}");
    let records = query_all(&mut auditor).await?;
    assert!(records.iter().all(|r| r.request_id != "while-log-down"));
    assert_eq!(records[1].request_id, "log-back");
    gw.stop().await
}

backend_suite!(
    every_call_is_recorded_before_it_is_answered,
    query_filters_and_paging,
    verify_chain_proofs_and_signed_checkpoints,
    tampering_is_reported_by_verify_chain,
    access_history_lists_who_asked,
    fails_closed_when_the_log_cannot_be_written,
);
