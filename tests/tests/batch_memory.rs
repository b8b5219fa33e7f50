//! A BatchVerify stream of 10,000 items holds no more memory in the gateway than one of 1,000: the heap
//! is measured with a peak-tracking global allocator, and every item must be in the exchange log.
//!
//! Its own test binary, with one test that runs the backends one after the other: the allocator counts
//! the whole process, so nothing else may run beside the measurement. The figures include the client
//! (which generates items lazily and keeps only each answer's verdict), so they are an upper bound on the
//! gateway's share; SQLite's and PostgreSQL's own caches are outside the Rust heap and bounded by their
//! configuration, not by the stream.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fedx_adapters::{SeedOptions, TruthRecord};
use fedx_gateway::audit::store::ExchangeFilter;
use fedx_gateway::authn::Role;
use fedx_tests::{endpoint_to, identity_check, pb, postgres_available, resolvable, Backend, TestGateway};
use futures::StreamExt;
use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

type VerifyClient = pb::verification_service_client::VerificationServiceClient<tonic::transport::Channel>;

const PURPOSE: &str = "social_insurance_enrolment";
const MIB: f64 = 1_048_576.0;

/// Streams `count` items and reads every answer, pausing `pause` after the first one as a slow reader
/// would. Returns the verdicts in arrival order (item id, verdict) and the peak heap growth.
async fn run_batch(
    client: &mut VerifyClient,
    people: &[TruthRecord],
    count: usize,
    request_id: &str,
    pause: Duration,
) -> anyhow::Result<(Vec<(String, i32)>, usize)> {
    let people = people.to_vec();
    let items =
        futures::stream::iter(0..count).map(move |i| identity_check(i, &people[i % people.len()], PURPOSE));
    let mut request = tonic::Request::new(items);
    request.metadata_mut().insert("x-request-id", request_id.parse()?);
    let baseline = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let mut answers = client.batch_verify(request).await?.into_inner();
    let mut out = Vec::with_capacity(count);
    while let Some(answer) = answers.message().await? {
        if out.is_empty() {
            tokio::time::sleep(pause).await;
        }
        let verdict = match answer.outcome {
            Some(pb::batch_verify_response::Outcome::Result(r)) => {
                r.results.first().map_or(-1, |c| c.verdict)
            }
            _ => -1,
        };
        out.push((answer.item_id, verdict));
    }
    Ok((out, HEAP.peak_usage().saturating_sub(baseline)))
}

/// Request ids of the item records of the stream sent with `stream_request_id`.
async fn item_records(gw: &TestGateway, stream_request_id: &str) -> anyhow::Result<Vec<String>> {
    let store = gw.gateway.as_ref().expect("running").state.audit.store();
    let filter = ExchangeFilter {
        method: Some("/fedx.v1.VerificationService/BatchVerify".into()),
        ..ExchangeFilter::default()
    };
    let prefix = format!("{stream_request_id}.");
    let (mut ids, mut after) = (Vec::new(), 0);
    loop {
        let page = store.query(&filter, after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        ids.extend(page.into_iter().map(|r| r.exchange.request_id).filter(|id| id.starts_with(&prefix)));
    }
    Ok(ids)
}

async fn measure(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, SeedOptions::new(300, 41)).await?;
    let people: Vec<TruthRecord> = resolvable(&truth).into_iter().cloned().collect();
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    let channel =
        endpoint_to(gw.addr(), &gw.ca_pem()?, Some(&id))?.timeout(Duration::from_secs(300)).connect_lazy();
    let mut client = VerifyClient::new(channel);

    // Warm-up: pools, caches and the log reach their working size before anything is measured.
    let (warm, _) = run_batch(&mut client, &people, people.len(), "warm-up", Duration::ZERO).await?;
    assert_eq!(warm.len(), people.len());

    let pause = Duration::from_millis(500);
    let started = Instant::now();
    let (small, small_growth) = run_batch(&mut client, &people, 1_000, "batch-1k", pause).await?;
    let small_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (large, large_growth) = run_batch(&mut client, &people, 10_000, "batch-10k", pause).await?;
    let large_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "BatchVerify on {backend:?}: 1,000 items in {small_secs:.1} s, peak heap growth {:.1} MiB; 10,000 items \
         in {large_secs:.1} s ({:.0} items/s), peak heap growth {:.1} MiB (whole test process)",
        small_growth as f64 / MIB,
        10_000.0 / large_secs,
        large_growth as f64 / MIB,
    );

    assert_eq!(small.len(), 1_000);
    assert_eq!(large.len(), 10_000);
    let ids: BTreeSet<&str> = large.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 10_000, "every item answered exactly once");
    let confirmed = large.iter().filter(|(_, v)| *v == pb::Verdict::Confirmed as i32).count();
    assert_eq!(confirmed, 10_000, "identity claims about seeded workers are confirmed");

    // Bounded: ten times the items, read by a client that paused, must not need materially more memory.
    // Queuing items or answers per stream would add tens of MiB for the 9,000 extra items.
    assert!(
        large_growth < small_growth + 8 * 1_048_576,
        "heap growth {large_growth} B for 10,000 items vs {small_growth} B for 1,000: grows with the stream"
    );

    // Every item in the exchange log under the stream's request id, each once.
    let records = item_records(&gw, "batch-10k").await?;
    let distinct: BTreeSet<&String> = records.iter().collect();
    assert_eq!((records.len(), distinct.len()), (10_000, 10_000));
    assert!(distinct.contains(&"batch-10k.1".to_owned()) && distinct.contains(&"batch-10k.10000".to_owned()));
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_items_stream_through_in_bounded_memory_and_are_each_audited() -> anyhow::Result<()> {
    measure(Backend::Sqlite).await?;
    if postgres_available().await? {
        measure(Backend::Postgres).await?;
    }
    Ok(())
}
