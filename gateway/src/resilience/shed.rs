//! Load shedding: at most `max_in_flight` calls are handled at once; the next one is refused at once
//! with UNAVAILABLE (OVERLOADED) and RetryInfo, rather than queued.
//!
//! A queue in front of a saturated gateway only grows — memory with it — and every call in it waits
//! longer than its caller will; refusing immediately tells the caller (or its load balancer) to go
//! elsewhere or come back, and costs nothing. The layer sits inside the audit layer, so refused calls are
//! recorded, and before authorisation, so a flood costs no certificate checks.
//!
//! A call holds its place until its response starts: the whole of a unary call, the start of a stream.
//! Streams are bounded separately (BatchVerify holds at most 32 items per stream, and a connection at
//! most `max_concurrent_streams` streams). Health checks and reflection are not counted and never
//! refused: a probe must be able to tell an overloaded gateway from a dead one.
//!
//! tower's `load_shed` over `concurrency_limit` does the same but refuses with an error, which would
//! bypass the audit layer (it only records responses); hence a semaphore and a gRPC answer here.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tower::Service;

use crate::rpc::error::ApiError;

#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl LoadShedLayer {
    pub fn new(max_in_flight: usize) -> LoadShedLayer {
        let limit = max_in_flight.max(1);
        LoadShedLayer { permits: Arc::new(Semaphore::new(limit)), limit }
    }

    /// Calls being handled now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

crate::middleware_layer!(LoadShedLayer);

/// Health checks and reflection: never counted, never refused.
fn is_exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl crate::rpc::middleware::Middleware for LoadShedLayer {
    fn call<S>(
        &self,
        request: http::Request<Body>,
        next: S,
    ) -> BoxFuture<'static, Result<http::Response<Body>, S::Error>>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let permit = if is_exempt(request.uri().path()) {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    metrics::counter!("fedx_calls_shed_total").increment(1);
                    tracing::debug!(method = %request.uri().path(), limit = self.limit, "call shed");
                    let limit = self.limit;
                    return Box::pin(
                        async move { Ok(ApiError::Overloaded { limit }.into_status().into_http()) },
                    );
                }
            }
        };
        let mut inner = next;
        let call = inner.call(request);
        let layer = self.clone();
        if permit.is_some() {
            metrics::gauge!("fedx_calls_in_flight").set(layer.in_flight() as f64);
        }
        Box::pin(async move {
            let response = call.await;
            if let Some(permit) = permit {
                drop(permit);
                metrics::gauge!("fedx_calls_in_flight").set(layer.in_flight() as f64);
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;
    use tower::Layer;

    use tonic_types::StatusExt;

    use super::*;

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_limit_are_refused_at_once_and_health_checks_never() {
        let layer = LoadShedLayer::new(1);
        let slow = tower::service_fn(|_: http::Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        });
        let mut service = layer.layer(slow);
        let first = tokio::spawn(service.call(request("/fedx.v1.GatewayService/WhoAmI")));
        tokio::task::yield_now().await;
        assert_eq!(layer.in_flight(), 1);

        let refused = service.call(request("/fedx.v1.GatewayService/WhoAmI")).await.unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).expect("a trailers-only refusal");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.get_details_error_info().expect("ErrorInfo").reason, "OVERLOADED");
        assert!(status.get_details_retry_info().is_some());

        let health = service.call(request("/grpc.health.v1.Health/Check")).await.unwrap();
        assert!(tonic::Status::from_header_map(health.headers()).is_none(), "health checks pass");

        first.await.unwrap().unwrap();
        assert_eq!(layer.in_flight(), 0, "the place is given back");
        let after = service.call(request("/fedx.v1.GatewayService/WhoAmI")).await.unwrap();
        assert!(tonic::Status::from_header_map(after.headers()).is_none());
    }
}
