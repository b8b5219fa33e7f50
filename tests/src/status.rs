//! Reading the google.rpc details of a refused call, and finding a call's exchange record.

use fedx_gateway::audit::record::ExchangeRecord;
use fedx_gateway::audit::store::ExchangeFilter;
use tonic::Status;
use tonic_types::StatusExt;

use crate::TestGateway;

/// The ErrorInfo reason (empty when there is none).
pub fn reason(status: &Status) -> String {
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

/// An ErrorInfo metadata entry (empty when absent).
pub fn metadata(status: &Status, key: &str) -> String {
    status.get_details_error_info().and_then(|i| i.metadata.get(key).cloned()).unwrap_or_default()
}

/// The fields named by the BadRequest violations, in order.
pub fn violations(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// A request carrying `x-request-id`, so that its exchange record can be found.
pub fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", id.parse().expect("ascii request id"));
    request
}

/// The exchange record of the call made with `request_id` (exactly one).
pub async fn record_of(gw: &TestGateway, request_id: &str) -> anyhow::Result<ExchangeRecord> {
    let store = gw.gateway.as_ref().expect("running").state.audit.store();
    let records = store.query(&ExchangeFilter::default(), 0, 10_000).await?;
    let mut found: Vec<_> = records.into_iter().filter(|r| r.exchange.request_id == request_id).collect();
    anyhow::ensure!(found.len() == 1, "expected one record for {request_id}, found {}", found.len());
    Ok(found.remove(0))
}
