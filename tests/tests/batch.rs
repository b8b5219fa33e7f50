//! BatchVerify end to end over mTLS, on both backends: a reader that stops reading stops the gateway
//! taking items (flow control, not buffering), per-item failures are answered and the stream goes on,
//! stream-level problems end it. The 10,000-item memory measurement is `batch_memory.rs`.

use std::time::Duration;

use fedx_adapters::{SeedOptions, TruthRecord};
use fedx_gateway::audit::store::ExchangeFilter;
use fedx_gateway::authn::Role;
use fedx_tests::{backend_suite, endpoint_to, identity_check, pb, resolvable, Backend, TestGateway};
use futures::StreamExt;
use tonic::Code;

type VerifyClient = pb::verification_service_client::VerificationServiceClient<tonic::transport::Channel>;

const PURPOSE: &str = "social_insurance_enrolment";

fn population() -> SeedOptions {
    SeedOptions::new(300, 41)
}

fn item(i: usize, person: &TruthRecord) -> pb::BatchVerifyRequest {
    identity_check(i, person, PURPOSE)
}

async fn client(gw: &TestGateway) -> anyhow::Result<VerifyClient> {
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    Ok(VerifyClient::new(gw.channel(Some(&id))?))
}

/// How many item records the stream sent with `stream_request_id` has so far.
async fn items_recorded(gw: &TestGateway, stream_request_id: &str) -> anyhow::Result<usize> {
    let store = gw.gateway.as_ref().expect("running").state.audit.store();
    let filter = ExchangeFilter {
        method: Some("/fedx.v1.VerificationService/BatchVerify".into()),
        ..ExchangeFilter::default()
    };
    let prefix = format!("{stream_request_id}.");
    let records = store.query(&filter, 0, 100_000).await?;
    Ok(records.iter().filter(|r| r.exchange.request_id.starts_with(&prefix)).count())
}

/// A reader that does not read holds the gateway back: with no answer read, the gateway stops taking
/// items once its own small queues and the transport's windows are full, far below what was sent. The
/// client advertises 64 KiB HTTP/2 windows, so the transport cannot hide thousands of answers.
async fn a_reader_that_stops_reading_stops_the_gateway_taking_items(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let people: Vec<TruthRecord> = resolvable(&truth).into_iter().cloned().collect();
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    let channel = endpoint_to(gw.addr(), &gw.ca_pem()?, Some(&id))?
        .timeout(Duration::from_secs(120))
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect_lazy();
    let mut client = VerifyClient::new(channel);
    let items = futures::stream::iter(0..5_000).map(move |i| item(i, &people[i % people.len()]));
    let mut request = tonic::Request::new(items);
    request.metadata_mut().insert("x-request-id", "stalled".parse()?);
    let mut answers = client.batch_verify(request).await?.into_inner();
    // Read nothing; wait until the gateway stops recording items.
    let (mut last, mut recorded) = (usize::MAX, 0);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        recorded = items_recorded(&gw, "stalled").await?;
        if recorded == last {
            break;
        }
        last = recorded;
    }
    eprintln!("BatchVerify on {backend:?}, reader stalled: {recorded} of 5,000 items taken");
    assert!(recorded > 0, "items were verified before the reader stalled");
    // 16 in flight + 16 queued + what fits the gateway's per-stream send buffer and the client's 64 KiB.
    assert!(recorded < 1_000, "{recorded} of 5,000 items taken while nobody read an answer");
    // Reading again lets the rest through.
    let mut read = 0;
    while answers.message().await?.is_some() {
        read += 1;
    }
    assert_eq!(read, 5_000);
    assert_eq!(items_recorded(&gw, "stalled").await?, 5_000);
    gw.stop().await
}

async fn item_failures_are_answered_and_the_stream_goes_on(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let people = resolvable(&truth);
    let mut client = client(&gw).await?;
    let mut bad = item(1, people[1]);
    bad.item_id = "bad".into();
    if let Some(request) = bad.request.as_mut() {
        request.claims.clear();
    }
    let mut unknown_purpose = item(2, people[2]);
    unknown_purpose.item_id = "unknown-purpose".into();
    if let Some(request) = unknown_purpose.request.as_mut() {
        request.purpose = "no_such_purpose".into();
    }
    let mut signed = item(3, people[3]);
    signed.item_id = "signed".into();
    if let Some(request) = signed.request.as_mut() {
        request.signed_receipt = true;
    }
    let items = vec![item(0, people[0]), bad, unknown_purpose, signed];
    let mut answers = client.batch_verify(futures::stream::iter(items)).await?.into_inner();
    let mut by_id = std::collections::BTreeMap::new();
    while let Some(answer) = answers.message().await? {
        by_id.insert(answer.item_id.clone(), answer);
    }
    assert_eq!(by_id.len(), 4);
    match &by_id["bad"].outcome {
        Some(pb::batch_verify_response::Outcome::Error(e)) => {
            assert_eq!(e.code, Code::InvalidArgument as i32);
            assert_eq!(e.invalid_fields, ["claims"]);
        }
        other => panic!("expected an item error, got {other:?}"),
    }
    match &by_id["unknown-purpose"].outcome {
        Some(pb::batch_verify_response::Outcome::Error(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (Code::InvalidArgument as i32, "PURPOSE_UNKNOWN"));
        }
        other => panic!("expected an item error, got {other:?}"),
    }
    let receipt = match &by_id["signed"].outcome {
        Some(pb::batch_verify_response::Outcome::Result(r)) => r.receipt.clone().expect("receipt asked for"),
        other => panic!("expected a result, got {other:?}"),
    };
    let checked =
        client.verify_receipt(pb::VerifyReceiptRequest { receipt: Some(receipt) }).await?.into_inner();
    assert!(checked.valid, "{checked:?}");
    let summary = checked.summary.expect("valid receipts are decoded");
    assert!(summary.receipt_id.ends_with(".4"), "the item's exchange: {}", summary.receipt_id);
    gw.stop().await
}

async fn a_duplicate_item_id_ends_the_stream_with_invalid_argument(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let people = resolvable(&truth);
    let mut client = client(&gw).await?;
    let mut twin = item(1, people[1]);
    twin.item_id = "item-0".into();
    let items = vec![item(0, people[0]), twin, item(2, people[2])];
    let mut answers = client.batch_verify(futures::stream::iter(items)).await?.into_inner();
    let status = loop {
        match answers.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("duplicate"), "{}", status.message());
    assert!(!status.message().contains("item-0"), "the id is not echoed: {}", status.message());
    gw.stop().await
}

backend_suite!(
    a_reader_that_stops_reading_stops_the_gateway_taking_items,
    item_failures_are_answered_and_the_stream_goes_on,
    a_duplicate_item_id_ends_the_stream_with_invalid_argument,
);
