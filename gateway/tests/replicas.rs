//! Several replicas (issue 9): two `fedx serve` processes on different ports, one configuration file,
//! one PostgreSQL database (gateway store and department sources), driven at once over mTLS.
//!
//! - **One exchange log.** Calls alternate between the replicas; each call's record is in the log
//!   exactly once, in call order, the sequence numbers of both processes' records form one contiguous
//!   chain, and `fedx audit verify` (records and the checkpoints both replicas signed) reports it valid.
//! - **Consent revocation, at the next call.** A consent granted on A serves a view on B, is revoked on
//!   B, and the very next view on A with it is refused (PERMISSION_DENIED, CONSENT_REVOKED): consent
//!   checks read the shared store on every call, no sleep needed.
//! - **Certificate revocation, by polling.** A certificate revoked through AdminService on A is refused
//!   by A at once and by B at its next poll of the registry in the shared database
//!   (`tls.revocation_poll_interval`, 200 ms here; asserted within 2 s), on the connection that was
//!   already open and on new handshakes.
//! - **Total rate limits.** With `limits.replicas = 2` and tax's total quota at 20 calls/s with bursts of
//!   10 (tax, not social insurance, whose quota stays generous for the views above), both replicas are
//!   driven from tax as fast as they answer for 3 s. The calls admitted stay within
//!   `burst + per_second × T`, T running from the start to the last admitted call's answer: every
//!   admission happens inside that interval, so this is GCRA's own bound, nominally 10 + 20 × 3 = 70;
//!   the only tolerance is 10 ms for the limiter's clock against the test's. Each replica stays within
//!   its half, at least 70 % of the nominal rate is admitted, another department is served meanwhile,
//!   and every refusal is RESOURCE_EXHAUSTED with RetryInfo, QuotaFailure and x-ratelimit-* metadata.
//!
//! PostgreSQL only (replicas need a shared store): skipped with a message when the server named by
//! `FEDX_TEST_PG_URL` is unreachable, a failure with `FEDX_REQUIRE_PG=1`.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fedx_adapters::TruthRecord;
use fedx_proto::v1 as pb;
use support::process::{
    seqs_are_contiguous, wait_until_serving, who_am_i, with_fresh_pg_database, with_request_id, Fedx,
    GatewayClient, Server,
};
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

type ViewClient = pb::worker_view_service_client::WorkerViewServiceClient<Channel>;
type ConsentClient = pb::consent_service_client::ConsentServiceClient<Channel>;
type AdminClient = pb::admin_service_client::AdminServiceClient<Channel>;

const WORKERS: u64 = 200;
/// Alternating WhoAmI + GetWorkerView pairs.
const INTERLEAVED_PAIRS: usize = 20;
/// tax's total quota over both replicas.
const TAX_PER_SECOND: f64 = 20.0;
const TAX_BURST: u32 = 10;
const REPLICAS: u32 = 2;
const RATE_WINDOW: Duration = Duration::from_secs(3);
/// Connections calling per replica in the rate window.
const RATE_CLIENTS: usize = 4;
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The limiter's clock (governor's, TSC-based) and the test's (`Instant`) are both monotonic but not the
/// same clock: 10 ms of slack in the rate bound (a fifth of a call at 20/s).
const CLOCK_SLACK: Duration = Duration::from_millis(10);

/// The configuration both replicas and every command share. Keys are files, as in a deployment
/// (`deploy/README.md`: all replicas use the same two keys); limits are generous except tax's.
fn config_toml(root: &Path, database_url: &str, schema_prefix: &str) -> String {
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let worker_ref_key = keys.join("worker_ref.key");
    std::fs::write(&worker_ref_key, hex::encode(rand::random::<[u8; 32]>())).expect("worker-ref key");
    let signing_key = keys.join("signing.key.pem");
    {
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let pem = key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
        std::fs::write(&signing_key, pem.as_bytes()).expect("signing key");
    }
    for key in [&worker_ref_key, &signing_key] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    }
    format!(
        r#"database_url = "{database_url}"

[tls]
revocation_poll_interval = {poll}
handshake_timeout = 2

[sources]
postgres_url = "{database_url}"
schema_prefix = "{schema_prefix}"

[identity]
population = {WORKERS}
worker_ref_key_file = "{worker_ref_key}"

[signing]
key_file = "{signing_key}"

[audit]
# Both replicas sign checkpoints while the test runs (and at shutdown).
checkpoint_interval = 1

[limits]
replicas = {REPLICAS}
per_second = 1000
burst = 2000

[limits.departments.tax]
per_second = {TAX_PER_SECOND}
burst = {TAX_BURST}

[resilience]
drain_timeout = 2
"#,
        poll = POLL_INTERVAL.as_secs_f64(),
        worker_ref_key = worker_ref_key.display(),
        signing_key = signing_key.display(),
    )
}

/// Seeded people every source can resolve by ID and name (as `fedx_tests::resolvable`).
fn resolvable(truth: &[TruthRecord]) -> Vec<&TruthRecord> {
    truth
        .iter()
        .filter(|t| {
            t.records.contains_key("public_security") && t.records.len() >= 3 && t.namesake_of.is_none()
        })
        .collect()
}

fn subject_of(person: &TruthRecord) -> pb::SubjectQuery {
    pb::SubjectQuery {
        citizen_id: person.citizen_id.clone(),
        name: person.name.clone(),
        ..Default::default()
    }
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

fn view_request(person: &TruthRecord, purpose: &str, consent_id: &str) -> pb::GetWorkerViewRequest {
    pb::GetWorkerViewRequest {
        purpose: purpose.into(),
        subject: Some(subject_of(person)),
        field_categories: vec![],
        consent_id: consent_id.into(),
    }
}

/// SIGTERM (graceful: drain, flush the log, sign a last checkpoint) and wait for a clean exit.
async fn stop(fedx: &Fedx, server: &mut Server) {
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().expect("child status") {
            assert!(
                status.success(),
                "{} exited with {status}: {}",
                server.name,
                fedx.server_log(&server.name)
            );
            return;
        }
        assert!(Instant::now() < deadline, "{} did not stop: {}", server.name, fedx.server_log(&server.name));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one connection saw in the rate window.
#[derive(Default)]
struct RateTally {
    ok: usize,
    refused: usize,
    last_ok_answer: Option<Instant>,
    answered_ids: Vec<String>,
    max_retry: Duration,
}

async fn hammer(channel: Channel, label: String, start: Instant) -> RateTally {
    let mut client = GatewayClient::new(channel);
    let mut tally = RateTally::default();
    for n in 0u64.. {
        if start.elapsed() >= RATE_WINDOW {
            break;
        }
        let id = format!("{label}-{n:05}");
        match client.who_am_i(with_request_id(pb::WhoAmIRequest {}, &id)).await {
            Ok(_) => {
                tally.ok += 1;
                tally.last_ok_answer = Some(Instant::now());
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tally.refused += 1;
                assert_eq!(reason(&status), "RATE_LIMITED", "{status:?}");
                let retry = status
                    .get_details_retry_info()
                    .and_then(|r| r.retry_delay)
                    .unwrap_or_else(|| panic!("a refusal carries RetryInfo: {status:?}"));
                // One emission interval of this replica's share (2 / 20 s) at most.
                assert!(
                    !retry.is_zero() && retry <= Duration::from_millis(100),
                    "RetryInfo {retry:?} not within one emission interval: {status:?}"
                );
                tally.max_retry = tally.max_retry.max(retry);
                let quota = status.get_details_quota_failure().expect("QuotaFailure");
                assert_eq!(quota.violations[0].subject, "department:tax", "{status:?}");
                let limit = status.metadata().get("x-ratelimit-limit").and_then(|v| v.to_str().ok());
                assert_eq!(limit, Some("5"), "x-ratelimit-limit is this replica's burst share: {status:?}");
            }
            Err(status) => panic!("call {id}: unexpected {status:?}"),
        }
        tally.answered_ids.push(id);
    }
    tally
}

async fn two_replicas(database_url: String) {
    let started = Instant::now();
    let fedx = Fedx::new(None);
    let schema_prefix = format!("fedx_src_r{}_", hex::encode(rand::random::<[u8; 4]>()));
    let config = config_toml(fedx.root(), &database_url, &schema_prefix);
    let fedx = fedx.with_config(&config);

    fedx.ok(&["certs", "init"]);
    let social = fedx.issue("social_insurance", "consumer");
    let police = fedx.issue("public_security", "consumer");
    let tax = fedx.issue("tax", "consumer");
    let education = fedx.issue("education", "consumer");
    let admin = fedx.issue("gateway_ops", "admin");
    let truth_path = fedx.root().join("truth.jsonl");
    let workers = WORKERS.to_string();
    let truth_arg = truth_path.to_str().expect("utf-8 path");
    fedx.ok(&["sources", "seed", "--workers", &workers, "--seed", "7", "--truth", truth_arg, "--quiet"]);
    let truth = fedx_gateway::identity::eval::read_truth(&truth_path).expect("truth file");
    let people = resolvable(&truth);
    let consent_person = INTERLEAVED_PAIRS / 2;
    assert!(people.len() > consent_person, "too few resolvable people in the seeded population");

    // Both replicas start at once on the same configuration (the keys are files named by it: two
    // processes generating development keys into one data directory at once would race).
    let mut a = fedx.serve("replica-a");
    let mut b = fedx.serve("replica-b");
    let ready_a = wait_until_serving(&fedx, &mut a, &social).await;
    let ready_b = wait_until_serving(&fedx, &mut b, &social).await;
    let setup = started.elapsed();

    // --- 1. Interleaved traffic: every call alternates replica, in one chain in call order. ----------
    let mut expected: Vec<String> = vec![ready_a, ready_b];
    let who_channels = [social.channel(a.addr), social.channel(b.addr)];
    let mut views = [ViewClient::new(social.channel(a.addr)), ViewClient::new(social.channel(b.addr))];
    let mut worker_refs: HashMap<String, String> = HashMap::new();
    for i in 0..INTERLEAVED_PAIRS {
        let r = i % 2;
        let replica = ["a", "b"][r];
        let id = format!("il-{i:03}-{replica}-who");
        let me = who_am_i(who_channels[r].clone(), &id).await.expect("WhoAmI");
        assert_eq!(me.caller.expect("caller").department, "social_insurance");
        expected.push(id);
        // The same person on both replicas: i and i + 1 ask about person i / 2.
        let person = people[i / 2];
        let id = format!("il-{i:03}-{replica}-view");
        let view = views[r]
            .get_worker_view(with_request_id(view_request(person, "wage_arrears_investigation", ""), &id))
            .await
            .unwrap_or_else(|e| panic!("GetWorkerView {id}: {e:?}"))
            .into_inner();
        assert!(view.worker_ref.starts_with("wr_"), "{}", view.worker_ref);
        let known = worker_refs.entry(person.citizen_id.clone()).or_insert_with(|| view.worker_ref.clone());
        assert_eq!(*known, view.worker_ref, "both replicas derive the same worker_ref");
        expected.push(id);
    }

    // --- 2. Consent: granted on A, used on B, revoked on B, refused on A at the next call. ------------
    let person = people[consent_person];
    let mut grant = pb::GrantConsentRequest {
        subject: Some(subject_of(person)),
        grantee_department: "public_security".into(),
        purpose: "residence_permit_application".into(),
        field_categories: vec![pb::FieldCategory::Employment as i32, pb::FieldCategory::Contributions as i32],
        valid_from: None,
        valid_until: None,
        evidence_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        supersedes_consent_id: String::new(),
        request_id: String::new(),
    };
    let until = grant.valid_until.get_or_insert_with(Default::default);
    until.seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
        + 30 * 86_400;
    let mut consent_a = ConsentClient::new(police.channel(a.addr));
    let mut consent_b = ConsentClient::new(police.channel(b.addr));
    let mut police_view_a = ViewClient::new(police.channel(a.addr));
    let mut police_view_b = ViewClient::new(police.channel(b.addr));
    let consent = consent_a
        .grant_consent(with_request_id(grant, "consent-grant-a"))
        .await
        .expect("GrantConsent on A")
        .into_inner()
        .consent
        .expect("consent");
    let consent_id = consent.consent_id.clone();
    let purpose = "residence_permit_application";
    let seen = police_view_b
        .get_worker_view(with_request_id(view_request(person, purpose, &consent_id), "consent-view-b"))
        .await
        .expect("a consent granted on A serves a view on B")
        .into_inner();
    assert_eq!(seen.worker_ref, consent.worker_ref);
    let revoked = consent_b
        .revoke_consent(with_request_id(
            pb::RevokeConsentRequest {
                consent_id: consent_id.clone(),
                reason: pb::RevocationReason::WithdrawnByWorker as i32,
            },
            "consent-revoke-b",
        ))
        .await
        .expect("RevokeConsent on B")
        .into_inner()
        .consent
        .expect("consent");
    assert_eq!(revoked.status(), pb::ConsentStatus::Revoked);
    // No sleep: the very next call on the other replica.
    let refused = police_view_a
        .get_worker_view(with_request_id(view_request(person, purpose, &consent_id), "consent-view-a-after"))
        .await
        .expect_err("a consent revoked on B is refused on A at the next call");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(reason(&refused), "CONSENT_REVOKED", "{refused:?}");
    expected.extend(
        ["consent-grant-a", "consent-view-b", "consent-revoke-b", "consent-view-a-after"].map(String::from),
    );

    // --- 3. Certificate revocation: at once on A, within the poll interval on B. ----------------------
    let open_a = education.channel(a.addr);
    let open_b = education.channel(b.addr);
    who_am_i(open_a.clone(), "cert-before-a").await.expect("education on A before the revocation");
    who_am_i(open_b.clone(), "cert-before-b").await.expect("education on B before the revocation");
    AdminClient::new(admin.channel(a.addr))
        .revoke_certificate(with_request_id(
            pb::RevokeCertificateRequest {
                serial: education.serial.clone(),
                reason: pb::CertificateRevocationReason::KeyCompromise as i32,
            },
            "cert-revoke-a",
        ))
        .await
        .expect("RevokeCertificate on A");
    let revoked_at = Instant::now();
    let on_a = who_am_i(open_a, "cert-after-a").await.expect_err("A refuses the certificate at once");
    assert_eq!(on_a.code(), Code::Unauthenticated, "{on_a:?}");
    assert_eq!(reason(&on_a), "CERTIFICATE_REVOKED", "{on_a:?}");
    let mut polls = 0;
    let seen_on_b = loop {
        let id = format!("cert-poll-b-{polls:03}");
        polls += 1;
        match who_am_i(open_b.clone(), &id).await {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                assert_eq!(reason(&status), "CERTIFICATE_REVOKED", "{status:?}");
                break revoked_at.elapsed();
            }
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "B still serves the revoked certificate after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for (replica, addr) in [("A", a.addr), ("B", b.addr)] {
        let fresh = who_am_i(education.channel(addr), "cert-new-connection").await;
        assert!(fresh.is_err(), "a new connection to {replica} with the revoked certificate is refused");
    }

    // --- 4. Total rate: tax drives both replicas as fast as they answer. ------------------------------
    let rate_start = Instant::now();
    let mut tasks = Vec::new();
    for (r, addr) in [a.addr, b.addr].into_iter().enumerate() {
        for k in 0..RATE_CLIENTS {
            let label = format!("rate-{}-{k}", ["a", "b"][r]);
            tasks.push((r, tokio::spawn(hammer(tax.channel(addr), label, rate_start))));
        }
    }
    // Meanwhile another department is not held back by tax's quota.
    tokio::time::sleep(RATE_WINDOW / 2).await;
    for (replica, addr) in [("a", a.addr), ("b", b.addr)] {
        who_am_i(social.channel(addr), &format!("rate-other-dept-{replica}"))
            .await
            .expect("social insurance is served while tax is throttled");
        expected.push(format!("rate-other-dept-{replica}"));
    }
    let mut per_replica = [(0usize, 0usize); 2];
    let mut last_ok: Option<Instant> = None;
    let mut rate_ids = Vec::new();
    let mut max_retry = Duration::ZERO;
    for (r, task) in tasks {
        let tally = task.await.expect("rate client");
        per_replica[r].0 += tally.ok;
        per_replica[r].1 += tally.refused;
        last_ok = last_ok.max(tally.last_ok_answer);
        rate_ids.extend(tally.answered_ids);
        max_retry = max_retry.max(tally.max_retry);
    }
    let ok = per_replica[0].0 + per_replica[1].0;
    let refused = per_replica[0].1 + per_replica[1].1;
    let span = last_ok.expect("some calls admitted").duration_since(rate_start).as_secs_f64();
    let bound = f64::from(TAX_BURST) + TAX_PER_SECOND * (span + CLOCK_SLACK.as_secs_f64());
    let nominal = TAX_PER_SECOND * RATE_WINDOW.as_secs_f64();
    assert!(refused > 0, "the quota was never reached: {ok} admitted");
    assert!(
        (ok as f64) <= bound,
        "{ok} calls admitted in {span:.3} s: over the total of {TAX_PER_SECOND}/s with bursts of {TAX_BURST} \
         (bound {bound:.1})"
    );
    let share_bound = f64::from(TAX_BURST.div_ceil(REPLICAS))
        + TAX_PER_SECOND / f64::from(REPLICAS) * (span + CLOCK_SLACK.as_secs_f64());
    for (r, (replica_ok, _)) in per_replica.iter().enumerate() {
        assert!(
            *replica_ok as f64 <= share_bound,
            "replica {r}: {replica_ok} admitted, share bound {share_bound:.1}"
        );
    }
    assert!(
        span <= RATE_WINDOW.as_secs_f64() + 1.0,
        "the last admitted call answered {span:.3} s after the start"
    );
    assert!(ok as f64 >= 0.7 * nominal, "over-throttled: {ok} admitted, nominal {nominal}");

    // --- 5. Both stop gracefully; one chain holds every call exactly once and verifies. ---------------
    stop(&fedx, &mut a).await;
    stop(&fedx, &mut b).await;
    let verify = fedx.ok(&["audit", "verify"]);
    assert!(verify.contains(": valid"), "{verify}");
    let records = fedx.records();
    seqs_are_contiguous(&records);
    let mut seq_of: HashMap<&str, Vec<u64>> = HashMap::new();
    for r in &records {
        seq_of
            .entry(r["request_id"].as_str().expect("request_id"))
            .or_default()
            .push(r["seq"].as_u64().expect("seq"));
    }
    let once = |id: &str| -> u64 {
        match seq_of.get(id).map(Vec::as_slice) {
            Some([seq]) => *seq,
            other => panic!("request {id}: expected one record, found {other:?}"),
        }
    };
    // Sequential calls: each was recorded before it was answered, so the chain has them in call order,
    // alternating between the two processes.
    let interleaved: Vec<u64> = expected.iter().take(2 + 2 * INTERLEAVED_PAIRS).map(|id| once(id)).collect();
    assert!(interleaved.windows(2).all(|w| w[0] < w[1]), "records not in call order: {interleaved:?}");
    for id in &expected {
        once(id);
    }
    let polled: Vec<u64> = (0..polls).map(|n| once(&format!("cert-poll-b-{n:03}"))).collect();
    let last_poll = records.iter().find(|r| r["seq"].as_u64() == polled.last().copied()).expect("record");
    assert_eq!(last_poll["outcome_reason"], "CERTIFICATE_REVOKED", "{last_poll}");
    for id in &rate_ids {
        once(id);
    }
    let rate_records = records.iter().filter(|r| {
        r["request_id"].as_str().is_some_and(|id| id.starts_with("rate-") && !id.starts_with("rate-other"))
    });
    let (mut recorded_ok, mut recorded_refused) = (0, 0);
    for r in rate_records {
        match (r["outcome_code"].as_i64(), r["outcome_reason"].as_str()) {
            (Some(0), _) => recorded_ok += 1,
            (Some(8), Some("RATE_LIMITED")) => recorded_refused += 1,
            _ => panic!("unexpected rate-window record {r}"),
        }
    }
    assert_eq!((recorded_ok, recorded_refused), (ok, refused), "the log agrees with the answers");
    let consent_refusal = &records[once("consent-view-a-after") as usize - 1];
    assert_eq!(consent_refusal["outcome_reason"], "CONSENT_REVOKED", "{consent_refusal}");

    eprintln!(
        "two replicas: setup {:.1} s; {} records, verify: {}",
        setup.as_secs_f64(),
        records.len(),
        verify.trim()
    );
    eprintln!(
        "  certificate revoked on A: refused by B after {:.0} ms ({polls} calls; poll interval {} ms)",
        seen_on_b.as_secs_f64() * 1000.0,
        POLL_INTERVAL.as_millis()
    );
    eprintln!(
        "  rate: {ok} admitted (A {}, B {}), {refused} refused in {span:.3} s; bound {bound:.1} \
         (nominal {TAX_BURST} + {TAX_PER_SECOND} x {} s = {}); floor {:.0}; max RetryInfo {max_retry:?}",
        per_replica[0].0,
        per_replica[1].0,
        RATE_WINDOW.as_secs(),
        f64::from(TAX_BURST) + nominal,
        0.7 * nominal
    );
    eprintln!("  total {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_log_consents_revocations_and_quotas() {
    with_fresh_pg_database(two_replicas).await;
}
