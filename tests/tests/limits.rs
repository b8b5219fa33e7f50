//! Rate limits, concurrency limits and the harvest guard end to end over mTLS, on both backends: a
//! department over its quota is refused with RESOURCE_EXHAUSTED, the exact RetryInfo, QuotaFailure and
//! `x-ratelimit-*` metadata while another department is served; per-method quotas; the concurrency cap;
//! a sweep of subjects trips the harvest guard and the refusal is in the exchange log; BatchVerify items
//! over quota get item errors while the stream goes on; a reload of the limits file changes a quota
//! without a restart.

use std::time::{Duration, Instant};

use fedx_adapters::{Department, SeedOptions, TruthRecord};
use fedx_gateway::authn::Role;
use fedx_gateway::config::Config;
use fedx_gateway::limits::{DepartmentLimits, HarvestOverride, MethodLimits, Rate};
use fedx_tests::status::{reason, record_of, with_request_id};
use fedx_tests::{backend_suite, identity_check, pb, resolvable, subject_of, Backend, Fault, TestGateway};
use tonic::{Code, Status};
use tonic_types::StatusExt;

type GatewayClient = pb::gateway_service_client::GatewayServiceClient<tonic::transport::Channel>;
type ViewClient = pb::worker_view_service_client::WorkerViewServiceClient<tonic::transport::Channel>;
type VerifyClient = pb::verification_service_client::VerificationServiceClient<tonic::transport::Channel>;
type IdentityClient = pb::identity_service_client::IdentityServiceClient<tonic::transport::Channel>;
type AdminClient = pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>;

const SIGNING_KEYS: &str = "/fedx.v1.GatewayService/GetSigningKeys";
const JOINT_VERIFY: &str = "/fedx.v1.VerificationService/JointVerify";
const WAGES: &str = "wage_arrears_investigation";
const ENROLMENT: &str = "social_insurance_enrolment";

fn population() -> SeedOptions {
    SeedOptions::new(80, 17)
}

async fn gateway_client(gw: &TestGateway, dept: &str) -> anyhow::Result<GatewayClient> {
    let id = gw.issue(dept, Role::Consumer).await?;
    Ok(GatewayClient::new(gw.channel(Some(&id))?))
}

fn limit_dept(config: &mut Config, dept: &str, per_second: f64, burst: u32) {
    config.limits.departments.insert(
        dept.into(),
        DepartmentLimits { per_second: Some(per_second), burst: Some(burst), max_concurrent: None },
    );
}

fn meta<T>(response: &tonic::Response<T>, key: &str) -> String {
    response.metadata().get(key).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn status_meta(status: &Status, key: &str) -> String {
    status.metadata().get(key).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn retry_delay(status: &Status) -> Duration {
    status.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo")
}

fn quota_subject(status: &Status) -> String {
    let quota = status.get_details_quota_failure().expect("QuotaFailure");
    quota.violations.first().map(|v| v.subject.clone()).unwrap_or_default()
}

/// Checks a rate-limit refusal and returns its retry delay.
fn assert_rate_limited(status: &Status, subject: &str) -> Duration {
    assert_eq!(
        (status.code(), reason(status).as_str()),
        (Code::ResourceExhausted, "RATE_LIMITED"),
        "{status:?}"
    );
    assert_eq!(quota_subject(status), subject);
    retry_delay(status)
}

/// A department over its quota is refused — RESOURCE_EXHAUSTED with the GCRA wait in RetryInfo,
/// QuotaFailure naming the quota, ErrorInfo RATE_LIMITED, `x-ratelimit-*` metadata, an exchange
/// record — while another department calling at the same moment is served; health checks are never
/// limited; after the wait the department is served again.
async fn a_department_over_its_quota_is_refused_while_another_is_served(
    backend: Backend,
) -> anyhow::Result<()> {
    // One call per 2 s after a burst of 2: the third call at once is refused, with a wait near 2 s.
    let gw = TestGateway::start_configured(backend, |config| limit_dept(config, "tax", 0.5, 2)).await?;
    let mut tax = gateway_client(&gw, "tax").await?;
    let mut social = gateway_client(&gw, "social_insurance").await?;

    let first = tax.who_am_i(pb::WhoAmIRequest {}).await?;
    assert_eq!(meta(&first, "x-ratelimit-limit"), "2");
    assert_eq!(meta(&first, "x-ratelimit-remaining"), "1");
    let second = tax.who_am_i(pb::WhoAmIRequest {}).await?;
    assert_eq!(meta(&second, "x-ratelimit-remaining"), "0");

    let started = Instant::now();
    let (refused, served) = tokio::join!(
        tax.who_am_i(with_request_id(pb::WhoAmIRequest {}, "tax-over-quota")),
        social.who_am_i(pb::WhoAmIRequest {}),
    );
    let refused = refused.expect_err("the third call within the burst's refill is refused");
    let wait = assert_rate_limited(&refused, "department:tax");
    assert!(wait > Duration::from_millis(1000) && wait <= Duration::from_secs(2), "GCRA wait {wait:?}");
    assert!(refused.message().contains("retry after"), "{}", refused.message());
    assert_eq!(status_meta(&refused, "x-ratelimit-limit"), "2");
    assert_eq!(status_meta(&refused, "x-ratelimit-remaining"), "0");
    assert_eq!(status_meta(&refused, "x-ratelimit-reset"), "2");
    let served = served.expect("social insurance is served at the same moment");
    assert_eq!(served.get_ref().caller.as_ref().map(|c| c.department.as_str()), Some("social_insurance"));
    assert_eq!(meta(&served, "x-ratelimit-limit"), "20000", "the default quota");

    let record = record_of(&gw, "tax-over-quota").await?;
    assert_eq!(
        (record.exchange.outcome_code, record.exchange.outcome_reason.as_str()),
        (Code::ResourceExhausted as i32, "RATE_LIMITED")
    );
    assert_eq!(record.exchange.caller_dept, "tax");

    // Health checks are not exchanges and are never limited.
    let id = gw.issue("tax", Role::Consumer).await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(gw.channel(Some(&id))?);
    for _ in 0..5 {
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?;
    }

    // After the wait RetryInfo gave, the department is served again.
    tokio::time::sleep((wait + Duration::from_millis(20)).saturating_sub(started.elapsed())).await;
    tax.who_am_i(pb::WhoAmIRequest {}).await?;
    gw.stop().await
}

/// A per-method quota limits that method for each department separately (with a per-department
/// override), and leaves the department's other methods alone.
async fn a_method_quota_limits_that_method_only(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start_configured(backend, |config| {
        config.limits.methods.insert(
            SIGNING_KEYS.into(),
            MethodLimits {
                per_second: Some(0.1),
                burst: Some(1),
                departments: [("education".to_owned(), Rate { per_second: 0.1, burst: 3 })].into(),
            },
        );
    })
    .await?;
    let mut tax = gateway_client(&gw, "tax").await?;
    let keys = tax.get_signing_keys(pb::GetSigningKeysRequest {}).await?;
    assert_eq!(meta(&keys, "x-ratelimit-limit"), "1", "the tightest quota: the method's");
    let refused = tax.get_signing_keys(pb::GetSigningKeysRequest {}).await.expect_err("one per 10 s");
    let wait = assert_rate_limited(&refused, &format!("department:tax/method:{SIGNING_KEYS}"));
    assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10), "{wait:?}");
    tax.who_am_i(pb::WhoAmIRequest {}).await.expect("other methods are not limited by it");

    let mut education = gateway_client(&gw, "education").await?;
    for _ in 0..3 {
        education.get_signing_keys(pb::GetSigningKeysRequest {}).await?;
    }
    let refused = education.get_signing_keys(pb::GetSigningKeysRequest {}).await.unwrap_err();
    assert_rate_limited(&refused, &format!("department:education/method:{SIGNING_KEYS}"));
    gw.stop().await
}

fn view_request(purpose: &str, person: &TruthRecord) -> pb::GetWorkerViewRequest {
    pb::GetWorkerViewRequest {
        purpose: purpose.into(),
        subject: Some(subject_of(person)),
        field_categories: Vec::new(),
        consent_id: String::new(),
    }
}

/// With one call in flight allowed, a second call of the same department while the first waits for a
/// slow source is refused at once (not queued); other departments and later calls are served.
async fn calls_in_flight_are_capped_per_department(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources_configured(backend, population(), |config| {
        config.limits.departments.insert(
            "social_insurance".into(),
            DepartmentLimits { per_second: None, burst: None, max_concurrent: Some(1) },
        );
    })
    .await?;
    let people = resolvable(&truth);
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    let view = ViewClient::new(gw.channel(Some(&id))?);
    gw.faults.set(Department::Tax, Fault::SlowFacts(Duration::from_millis(1200)));

    let mut slow_client = view.clone();
    let slow_request = view_request(WAGES, people[0]);
    let slow = tokio::spawn(async move { slow_client.get_worker_view(slow_request).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let refused = view
        .clone()
        .get_worker_view(with_request_id(view_request(WAGES, people[1]), "second-in-flight"))
        .await
        .expect_err("a second call while one is in flight");
    assert!(started.elapsed() < Duration::from_millis(500), "refused at once, not queued");
    assert_rate_limited(&refused, "department:social_insurance/concurrency");
    assert!(retry_delay(&refused) <= Duration::from_secs(1));
    let record = record_of(&gw, "second-in-flight").await?;
    assert_eq!(record.exchange.outcome_reason, "RATE_LIMITED");
    gateway_client(&gw, "tax").await?.who_am_i(pb::WhoAmIRequest {}).await.expect("another department");

    let answered = slow.await??.into_inner();
    assert!(answered.identity.is_some(), "the call in flight is answered");
    gw.faults.clear();
    // The permit is released when the first call's response stream ends on the gateway, which may be a
    // moment after the client has read it.
    let mut attempts = 0;
    while let Err(status) = view.clone().get_worker_view(view_request(WAGES, people[1])).await {
        attempts += 1;
        assert!(attempts < 20 && quota_subject(&status).ends_with("/concurrency"), "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await
}

/// The windows are fixed clock hours: a test that crossed one would see the budget refilled.
async fn clear_of_an_hour_boundary() {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let into_hour = secs.as_secs_f64() % 3600.0;
    if into_hour > 3600.0 - 20.0 {
        tokio::time::sleep(Duration::from_secs_f64(3600.0 - into_hour + 0.5)).await;
    }
}

/// Sweeping more distinct workers than the budget trips the guard: RESOURCE_EXHAUSTED,
/// BUDGET_EXHAUSTED, RetryInfo until the hour rolls over, QuotaFailure naming department and purpose;
/// the refusal is in the exchange log with the worker's reference. Workers already seen still pass, the
/// guard counts ResolveIdentity and JointVerify too, and another purpose has its own budget.
async fn sweeping_subjects_trips_the_harvest_guard_and_is_audited(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources_configured(backend, population(), |config| {
        config
            .limits
            .harvest
            .purposes
            .insert(WAGES.into(), HarvestOverride { subjects_per_hour: Some(3), subjects_per_day: None });
    })
    .await?;
    clear_of_an_hour_boundary().await;
    let people = resolvable(&truth);
    anyhow::ensure!(people.len() >= 6, "the seed has enough resolvable people");
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    let mut view = ViewClient::new(gw.channel(Some(&id))?);
    for person in &people[..3] {
        view.get_worker_view(view_request(WAGES, person)).await?;
    }
    let refused = view
        .get_worker_view(with_request_id(view_request(WAGES, people[3]), "fourth-subject"))
        .await
        .expect_err("the fourth distinct worker this hour");
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::ResourceExhausted, "BUDGET_EXHAUSTED"));
    assert_eq!(quota_subject(&refused), format!("department:social_insurance/purpose:{WAGES}"));
    let wait = retry_delay(&refused);
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(3600),
        "until the hour rolls over: {wait:?}"
    );
    assert!(!refused.message().contains(&people[3].name) && !refused.message().contains("wr_"));
    let record = record_of(&gw, "fourth-subject").await?;
    assert_eq!(
        (record.exchange.outcome_code, record.exchange.outcome_reason.as_str()),
        (Code::ResourceExhausted as i32, "BUDGET_EXHAUSTED")
    );
    assert!(record.exchange.worker_ref.starts_with("wr_"), "the refused worker is noted in the record");
    assert_eq!(record.exchange.purpose, WAGES);
    assert!(record.exchange.disclosed_fields.is_empty(), "nothing was disclosed");

    // Workers already seen this hour still pass.
    let again = view.get_worker_view(view_request(WAGES, people[0])).await?.into_inner();
    assert!(again.identity.is_some());
    // The same budget covers resolution and verification under the purpose.
    let mut identity = IdentityClient::new(gw.channel(Some(&id))?);
    let request = |person: &TruthRecord| pb::ResolveIdentityRequest {
        purpose: WAGES.into(),
        subject: Some(subject_of(person)),
    };
    identity.resolve_identity(request(people[1])).await.expect("seen");
    let status = identity.resolve_identity(request(people[4])).await.unwrap_err();
    assert_eq!(reason(&status), "BUDGET_EXHAUSTED");
    let mut verify = VerifyClient::new(gw.channel(Some(&id))?);
    let check = identity_check(0, people[5], WAGES).request.expect("a request");
    let status = verify.joint_verify(check).await.unwrap_err();
    assert_eq!(reason(&status), "BUDGET_EXHAUSTED");
    // Another purpose has a budget of its own.
    view.get_worker_view(view_request(ENROLMENT, people[3])).await.expect("another purpose");
    gw.stop().await
}

/// BatchVerify items count against the JointVerify quota one by one: those over it are answered with
/// code 8 (RATE_LIMITED) and recorded, the others are verified, and the stream carries on to the end.
async fn batch_items_over_quota_get_item_errors_and_the_stream_goes_on(
    backend: Backend,
) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources_configured(backend, population(), |config| {
        config.limits.methods.insert(
            JOINT_VERIFY.into(),
            MethodLimits { per_second: Some(1.0), burst: Some(5), departments: Default::default() },
        );
    })
    .await?;
    let people: Vec<TruthRecord> = resolvable(&truth).into_iter().cloned().collect();
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    let mut client = VerifyClient::new(gw.channel(Some(&id))?);
    let items: Vec<_> = (0..20).map(|i| identity_check(i, &people[i % people.len()], ENROLMENT)).collect();
    let started = Instant::now();
    let mut answers =
        client.batch_verify(with_request_id(futures::stream::iter(items), "batch-over")).await?.into_inner();
    let (mut verified, mut limited) = (0, 0);
    while let Some(answer) = answers.message().await? {
        match answer.outcome {
            Some(pb::batch_verify_response::Outcome::Result(_)) => verified += 1,
            Some(pb::batch_verify_response::Outcome::Error(e)) => {
                assert_eq!(
                    (e.code, e.reason.as_str()),
                    (Code::ResourceExhausted as i32, "RATE_LIMITED"),
                    "{e:?}"
                );
                assert!(e.message.contains(JOINT_VERIFY), "{}", e.message);
                limited += 1;
            }
            None => anyhow::bail!("an answer without an outcome"),
        }
    }
    let refill = started.elapsed().as_secs() as usize + 1;
    assert_eq!(verified + limited, 20, "every item answered, the stream went on");
    assert!(verified >= 5 && verified <= 5 + refill, "{verified} verified in {:?}", started.elapsed());

    // Each refused item is an exchange record of its own with the reason.
    let store = gw.gateway.as_ref().expect("running").state.audit.store();
    let records = store.query(&Default::default(), 0, 10_000).await?;
    let items: Vec<_> = records.iter().filter(|r| r.exchange.request_id.starts_with("batch-over.")).collect();
    assert_eq!(items.len(), 20);
    let refused = items.iter().filter(|r| r.exchange.outcome_reason == "RATE_LIMITED").count();
    assert_eq!(refused, limited);
    assert!(items.iter().all(|r| r.exchange.purpose == ENROLMENT));

    // A JointVerify call now is over the same quota.
    let check = identity_check(0, &people[0], ENROLMENT).request.expect("a request");
    let status = client.joint_verify(check).await.unwrap_err();
    assert_rate_limited(&status, &format!("department:social_insurance/method:{JOINT_VERIFY}"));
    gw.stop().await
}

/// The limits file is re-read by ReloadPolicy: an invalid file is refused (the limits in force stay),
/// a valid one changes a quota at once, without a restart.
async fn a_reload_of_the_limits_file_changes_a_quota_without_restart(backend: Backend) -> anyhow::Result<()> {
    let path = tempfile::NamedTempFile::new()?.into_temp_path();
    std::fs::write(&path, "[limits.departments.tax]\nper_second = 0.1\nburst = 2\n")?;
    let gw = TestGateway::start_configured(backend, |config| config.limits.file = Some(path.to_path_buf()))
        .await?;
    let mut tax = gateway_client(&gw, "tax").await?;
    let admin = gw.issue("gateway_ops", Role::Admin).await?;
    let mut admin = AdminClient::new(gw.channel(Some(&admin))?);
    for _ in 0..2 {
        tax.who_am_i(pb::WhoAmIRequest {}).await?;
    }
    assert_rate_limited(&tax.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err(), "department:tax");

    std::fs::write(&path, "[limits.departments.housing]\nburst = 5\n")?;
    let status = admin.reload_policy(pb::ReloadPolicyRequest { validate_only: false }).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "POLICY_INVALID"));
    let fields: Vec<String> = status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["limits.departments.housing"]);
    assert_rate_limited(&tax.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err(), "department:tax");

    std::fs::write(&path, "[limits.departments.tax]\nper_second = 0.1\nburst = 5\n")?;
    let reloaded = admin
        .reload_policy(with_request_id(pb::ReloadPolicyRequest { validate_only: false }, "reload-limits"))
        .await?
        .into_inner();
    for _ in 0..5 {
        let response = tax.who_am_i(pb::WhoAmIRequest {}).await?;
        assert_eq!(meta(&response, "x-ratelimit-limit"), "5");
    }
    assert_rate_limited(&tax.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err(), "department:tax");
    let record = record_of(&gw, "reload-limits").await?;
    assert!(
        record
            .exchange
            .outcome_reason
            .starts_with(&format!("POLICY_RELOADED {}", reloaded.previous_policy_version))
            && record.exchange.outcome_reason.contains("; limits "),
        "{}",
        record.exchange.outcome_reason
    );
    gw.stop().await
}

backend_suite!(
    a_department_over_its_quota_is_refused_while_another_is_served,
    a_method_quota_limits_that_method_only,
    calls_in_flight_are_capped_per_department,
    sweeping_subjects_trips_the_harvest_guard_and_is_audited,
    batch_items_over_quota_get_item_errors_and_the_stream_goes_on,
    a_reload_of_the_limits_file_changes_a_quota_without_restart,
);
