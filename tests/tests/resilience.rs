//! Resilience end to end over mTLS, on both backends: a department made dead or slow has its circuit
//! opened (views come back partial at once instead of after the source timeout, and the source is no
//! longer asked) and closed again by a probe once it is back; a caller's deadline bounds a view (partial,
//! in time) and the call is recorded; calls beyond `max_in_flight` are refused at once and recorded; a
//! graceful shutdown lets in-flight calls finish and records them, refuses new connections, and cuts
//! (and records) calls still running when the drain time is over.

use std::time::{Duration, Instant};

use fedx_adapters::{Department, SeedOptions, TruthRecord};
use fedx_gateway::authn::Role;
use fedx_gateway::config::Config;
use fedx_gateway::resilience::shutdown::CUT_GRACE;
use fedx_tests::status::{reason, record_of, with_request_id};
use fedx_tests::well_known;
use fedx_tests::{backend_suite, endpoint_to, identity_check, pb, subject_of, Backend, Fault, TestGateway};
use tonic::transport::Channel;
use tonic::Code;

type ViewClient = pb::worker_view_service_client::WorkerViewServiceClient<Channel>;
type GatewayClient = pb::gateway_service_client::GatewayServiceClient<Channel>;
type VerifyClient = pb::verification_service_client::VerificationServiceClient<Channel>;

const PURPOSE: &str = "wage_arrears_investigation";
/// Small durations keep the suite fast.
const SOURCE_TIMEOUT: Duration = Duration::from_millis(300);
const OPEN_FOR: Duration = Duration::from_secs(1);
const THRESHOLD: u32 = 3;

fn population() -> SeedOptions {
    SeedOptions::new(300, 23)
}

fn breaker_config(config: &mut Config) {
    config.sources.timeout = SOURCE_TIMEOUT;
    config.resilience.failure_threshold = THRESHOLD;
    config.resilience.open_for = OPEN_FOR;
}

fn view_request(person: &TruthRecord) -> pb::GetWorkerViewRequest {
    pb::GetWorkerViewRequest {
        purpose: PURPOSE.into(),
        subject: Some(subject_of(person)),
        field_categories: Vec::new(),
        consent_id: String::new(),
    }
}

async fn view_client(gw: &TestGateway) -> anyhow::Result<ViewClient> {
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    Ok(ViewClient::new(gw.channel(Some(&id))?))
}

/// A view and how long it took.
async fn timed_view(
    client: &mut ViewClient,
    person: &TruthRecord,
) -> anyhow::Result<(pb::GetWorkerViewResponse, Duration)> {
    let started = Instant::now();
    let view = client.get_worker_view(view_request(person)).await?.into_inner();
    Ok((view, started.elapsed()))
}

fn without_tax(view: &pb::GetWorkerViewResponse) -> bool {
    view.partial && view.unavailable_departments == ["tax"]
}

/// After the fault is cleared and `open_for` has passed, a probe closes the circuit. The view carrying
/// the probe may still be partial (the probe is one call; the view's other tax questions fail fast while
/// it is out), so allow a few.
async fn complete_again(
    client: &mut ViewClient,
    person: &TruthRecord,
    full: &pb::GetWorkerViewResponse,
) -> anyhow::Result<()> {
    tokio::time::sleep(OPEN_FOR).await;
    for _ in 0..3 {
        let (view, _) = timed_view(client, person).await?;
        if !view.partial {
            assert!(view.unavailable_departments.is_empty());
            assert_eq!(view.employment, full.employment, "tax attests employment again");
            return Ok(());
        }
    }
    anyhow::bail!("views still partial after the source came back and open_for passed")
}

/// Tax down: every view is partial; after `THRESHOLD` failures the circuit opens and tax is not even
/// asked any more; once it is back and `open_for` has passed, views are complete again.
async fn a_dead_source_opens_its_circuit_and_recovers(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) =
        TestGateway::start_with_sources_configured(backend, population(), breaker_config).await?;
    let person = well_known(&truth);
    let mut client = view_client(&gw).await?;
    let (full, _) = timed_view(&mut client, person).await?;
    assert!(!full.partial, "{:?}", full.unavailable_departments);

    gw.faults.set(Department::Tax, Fault::Down);
    let before = gw.faults.calls(Department::Tax);
    let mut asked = Vec::new();
    for _ in 0..THRESHOLD + 3 {
        let (view, took) = timed_view(&mut client, person).await?;
        assert!(without_tax(&view), "{:?}", view.unavailable_departments);
        assert!(took < SOURCE_TIMEOUT, "a dead source fails fast: {took:?}");
        asked.push(gw.faults.calls(Department::Tax) - before);
    }
    let last = asked.len() - 1;
    assert_eq!(asked[last], asked[last - 2], "the open circuit stopped asking tax: {asked:?}");
    assert!(asked[last] >= u64::from(THRESHOLD), "{asked:?}");

    gw.faults.clear();
    complete_again(&mut client, person, &full).await?;
    gw.stop().await
}

/// Tax slow (facts take longer than the source timeout): until the circuit opens each view waits out the
/// source timeout for tax; from then on views are partial at once, well under the source timeout; when
/// tax is back and `open_for` has passed, views are complete again.
async fn a_slow_source_opens_its_circuit_and_recovers(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) =
        TestGateway::start_with_sources_configured(backend, population(), breaker_config).await?;
    let person = well_known(&truth);
    let mut client = view_client(&gw).await?;
    let (full, _) = timed_view(&mut client, person).await?;
    assert!(!full.partial, "{:?}", full.unavailable_departments);

    gw.faults.set(Department::Tax, Fault::SlowFacts(Duration::from_secs(2)));
    let mut slow_views = 0;
    loop {
        let (view, took) = timed_view(&mut client, person).await?;
        assert!(without_tax(&view), "{:?}", view.unavailable_departments);
        if took < SOURCE_TIMEOUT / 2 {
            break;
        }
        assert!(took >= SOURCE_TIMEOUT, "waited out the source timeout: {took:?}");
        slow_views += 1;
        assert!(slow_views <= THRESHOLD, "the circuit did not open after {slow_views} slow views");
    }
    let asked = gw.faults.calls(Department::Tax);
    for _ in 0..3 {
        let (view, took) = timed_view(&mut client, person).await?;
        assert!(without_tax(&view));
        assert!(took < SOURCE_TIMEOUT / 2, "open circuit: partial at once, took {took:?}");
    }
    assert_eq!(gw.faults.calls(Department::Tax), asked, "tax is not asked while the circuit is open");

    gw.faults.clear();
    complete_again(&mut client, person, &full).await?;
    gw.stop().await
}

/// A 200 ms deadline against a source slowed to 5 s (source timeout 2 s): the view comes back partial
/// within the deadline, since the sources only get what is left of it (on a loaded machine it may be
/// DEADLINE_EXCEEDED instead), and the call is recorded either way.
async fn a_caller_deadline_bounds_the_view_and_is_recorded(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let person = well_known(&truth);
    let mut client = view_client(&gw).await?;
    assert!(!timed_view(&mut client, person).await?.0.partial);

    gw.faults.set(Department::Tax, Fault::SlowFacts(Duration::from_secs(5)));
    let deadline = Duration::from_millis(200);
    let mut request = with_request_id(view_request(person), "view-deadline");
    request.set_timeout(deadline);
    let started = Instant::now();
    let answer = client.get_worker_view(request).await;
    let took = started.elapsed();
    assert!(took < deadline + Duration::from_millis(50), "answered in {took:?}");
    let expected_code = match answer {
        Ok(view) => {
            let view = view.into_inner();
            // Tax missed the budget; on a loaded machine the employer-name round may miss it too.
            assert!(view.partial && view.unavailable_departments.contains(&"tax".to_owned()));
            0
        }
        Err(status) => {
            eprintln!("view-deadline: {status:?} after {took:?} (a loaded machine?)");
            assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
            Code::DeadlineExceeded as i32
        }
    };
    // The gateway answers (and queues the record) before the deadline; the commit may land just after.
    let mut record = record_of(&gw, "view-deadline").await;
    for _ in 0..20 {
        if record.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        record = record_of(&gw, "view-deadline").await;
    }
    let record = record?;
    assert_eq!(record.exchange.outcome_code, expected_code);
    assert!(record.exchange.latency_us < 200_000, "{}", record.exchange.latency_us);
    gw.stop().await
}

/// `max_in_flight = 1`: while a slow view is in flight, the next call is refused at once with
/// UNAVAILABLE (OVERLOADED) and RetryInfo, and recorded; afterwards calls go through again.
async fn calls_beyond_max_in_flight_are_shed_and_recorded(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources_configured(backend, population(), |config| {
        config.resilience.max_in_flight = 1;
    })
    .await?;
    let person = well_known(&truth).clone();
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    let channel = gw.channel(Some(&id))?;
    let mut gateway = GatewayClient::new(channel.clone());
    gateway.who_am_i(pb::WhoAmIRequest::default()).await?;

    gw.faults.set(Department::Tax, Fault::SlowFacts(Duration::from_secs(1)));
    let mut views = ViewClient::new(channel.clone());
    let slow = tokio::spawn(async move { views.get_worker_view(view_request(&person)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let refused = gateway
        .who_am_i(with_request_id(pb::WhoAmIRequest::default(), "shed-1"))
        .await
        .expect_err("shed while the view is in flight");
    assert!(started.elapsed() < Duration::from_millis(200), "refused at once: {:?}", started.elapsed());
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::Unavailable, "OVERLOADED"));
    assert!(tonic_types::StatusExt::get_details_retry_info(&refused).is_some());
    let record = record_of(&gw, "shed-1").await?;
    assert_eq!(record.exchange.outcome_code, Code::Unavailable as i32);
    assert_eq!(record.exchange.outcome_reason, "OVERLOADED");

    let view = slow.await??.into_inner();
    assert!(!view.partial, "the call in flight was not disturbed");
    gateway.who_am_i(pb::WhoAmIRequest::default()).await?;
    gw.stop().await
}

/// `max_connections = 1`: while one connection is open, another is closed at once (the caller sees
/// UNAVAILABLE straight away, not a hang); once the first is gone, a new one is served.
async fn connections_beyond_max_connections_are_closed_at_once(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start_configured(backend, |config| config.resilience.max_connections = 1).await?;
    let id = gw.issue("tax", Role::Consumer).await?;
    let first = endpoint_to(gw.addr(), &gw.ca_pem()?, Some(&id))?.connect().await?;
    GatewayClient::new(first.clone()).who_am_i(pb::WhoAmIRequest::default()).await?;

    let started = Instant::now();
    let refused = GatewayClient::new(gw.channel(Some(&id))?)
        .who_am_i(pb::WhoAmIRequest::default())
        .await
        .expect_err("a second connection is over the limit");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once: {:?}", started.elapsed());

    drop(first);
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let channel = gw.channel(Some(&id))?;
        if GatewayClient::new(channel).who_am_i(pb::WhoAmIRequest::default()).await.is_ok() {
            served = true;
            break;
        }
    }
    assert!(served, "the slot of a closed connection is given back");
    gw.stop().await
}

/// The exchange record of `request_id` in the store the gateway wrote (readable after it stopped):
/// `(outcome code, outcome reason)`, or `None` when there is none.
async fn stored_outcome(gw: &TestGateway, request_id: &str) -> anyhow::Result<Option<(i64, String)>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT CAST(outcome_code AS BIGINT), outcome_reason FROM audit_records WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_all(gw.store.pool())
    .await?;
    anyhow::ensure!(rows.len() <= 1, "{request_id}: {} records", rows.len());
    Ok(rows.into_iter().next())
}

/// Views in flight when shutdown begins complete normally for their callers and are in the exchange log
/// afterwards; a new connection made while the gateway drains is refused.
async fn graceful_shutdown_completes_and_records_calls_in_flight(backend: Backend) -> anyhow::Result<()> {
    let (mut gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let person = well_known(&truth).clone();
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    let mut client = ViewClient::new(gw.channel(Some(&id))?);
    assert!(!timed_view(&mut client, &person).await?.0.partial);

    // Slower than the test's pause before shutdown, faster than the source timeout (2 s).
    gw.faults.set(Department::Tax, Fault::SlowFacts(Duration::from_millis(1200)));
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut client = client.clone();
            let request = with_request_id(view_request(&person), &format!("drain-{i}"));
            tokio::spawn(async move { client.get_worker_view(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let addr = gw.addr();
    let running = gw.gateway.take().expect("running");
    let shutdown = tokio::spawn(running.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = endpoint_to(addr, &gw.ca_pem()?, Some(&id))?.connect().await;
    assert!(fresh.is_err(), "a new connection while draining is refused");

    for (i, call) in calls.into_iter().enumerate() {
        let view = call.await?.map_err(|s| anyhow::anyhow!("drain-{i}: {s:?}"))?.into_inner();
        assert!(!view.partial, "drain-{i} completed with every source");
    }
    shutdown.await??;
    for i in 0..8 {
        let outcome = stored_outcome(&gw, &format!("drain-{i}")).await?;
        assert_eq!(outcome, Some((0, String::new())), "drain-{i} recorded as answered");
    }
    gw.stop().await
}

/// A call still running when the drain time is over is answered UNAVAILABLE (SHUTTING_DOWN) and
/// recorded; a stream the client keeps open has its connection closed a moment later, so shutdown ends
/// shortly after the drain time whatever the clients do.
async fn calls_still_running_after_the_drain_timeout_are_cut_and_recorded(
    backend: Backend,
) -> anyhow::Result<()> {
    let drain_timeout = Duration::from_millis(300);
    let (mut gw, truth) = TestGateway::start_with_sources_configured(backend, population(), |config| {
        config.sources.timeout = Duration::from_secs(20);
        config.resilience.drain_timeout = drain_timeout;
    })
    .await?;
    let person = well_known(&truth).clone();
    let mut client = view_client(&gw).await?;
    assert!(!timed_view(&mut client, &person).await?.0.partial);

    // A BatchVerify stream whose client never closes its side.
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    let mut batch = VerifyClient::new(gw.channel(Some(&id))?);
    let (items, inbound) = tokio::sync::mpsc::channel(4);
    items.send(identity_check(1, &person, "social_insurance_enrolment")).await?;
    let mut answers =
        batch.batch_verify(tokio_stream::wrappers::ReceiverStream::new(inbound)).await?.into_inner();
    assert!(answers.message().await?.is_some(), "the stream is up");

    gw.faults.set(Department::Tax, Fault::SlowFacts(Duration::from_secs(15)));
    let request = with_request_id(view_request(&person), "cut-1");
    let call = tokio::spawn(async move { client.get_worker_view(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    gw.gateway.take().expect("running").shutdown().await?;
    let took = started.elapsed();
    // Drain, then CUT_GRACE for the cut calls, then the open stream's connection is closed at once.
    assert!(took > drain_timeout + CUT_GRACE, "the open stream held the drain: {took:?}");
    assert!(took < drain_timeout + CUT_GRACE + Duration::from_secs(1), "shutdown took {took:?}");
    assert!(!matches!(answers.message().await, Ok(Some(_))), "the open stream ended");
    drop(items);

    let status = call.await?.expect_err("cut");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::Unavailable, "SHUTTING_DOWN"));
    assert_eq!(
        stored_outcome(&gw, "cut-1").await?,
        Some((i64::from(Code::Unavailable as i32), "SHUTTING_DOWN".to_owned()))
    );
    gw.stop().await
}

backend_suite!(
    a_dead_source_opens_its_circuit_and_recovers,
    a_slow_source_opens_its_circuit_and_recovers,
    a_caller_deadline_bounds_the_view_and_is_recorded,
    calls_beyond_max_in_flight_are_shed_and_recorded,
    connections_beyond_max_connections_are_closed_at_once,
    graceful_shutdown_completes_and_records_calls_in_flight,
    calls_still_running_after_the_drain_timeout_are_cut_and_recorded,
);
