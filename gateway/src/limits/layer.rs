//! The tower layer that applies the rate and concurrency limits to every call.
//!
//! It sits inside the authorisation layer, which has put the caller into the request's extensions, and
//! inside the audit layer, so each refusal is recorded with its reason like any other answer. A refusal
//! is produced here, before the request is decoded. An admitted call holds its department's concurrency
//! permit until its response body ends — for a streaming call, until the stream ends — and its response
//! carries the `x-ratelimit-*` metadata of the tightest quota that applied.

use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use http::HeaderValue;
use std::task::{Context, Poll};
use tokio::sync::OwnedSemaphorePermit;
use tonic::body::Body;
use tower::Service;

use super::{Limits, RateStatus};
use crate::rpc::authz::AuthenticatedCaller;

/// Whether calls to `path` count against the limits: every call except health checks and reflection.
pub fn is_limited(path: &str) -> bool {
    !(path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection."))
}

#[derive(Clone)]
pub struct LimitLayer {
    limits: Arc<Limits>,
}

impl LimitLayer {
    pub fn new(limits: Arc<Limits>) -> LimitLayer {
        LimitLayer { limits }
    }
}

crate::middleware_layer!(LimitLayer);

impl crate::rpc::middleware::Middleware for LimitLayer {
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
        let mut inner = next;
        let path = request.uri().path();
        let caller = request.extensions().get::<AuthenticatedCaller>().map(|c| c.0.clone());
        // Without a caller the authorisation layer has refused the call already.
        let Some(caller) = caller.filter(|_| is_limited(path)) else {
            return Box::pin(inner.call(request));
        };
        match self.limits.admit_call(&caller.dept, path) {
            Ok(admission) => Box::pin(async move {
                let response = inner.call(request).await?;
                let (mut parts, body) = response.into_parts();
                if let Some(rate) = admission.rate {
                    insert_headers(&mut parts.headers, &rate);
                }
                let body = match admission.permit {
                    Some(permit) => Body::new(PermitBody { inner: body, _permit: permit }),
                    None => body,
                };
                Ok(http::Response::from_parts(parts, body))
            }),
            Err(refusal) => {
                tracing::info!(method = path, dept = %caller.dept, scope = refusal.scope.as_str(),
                    reason = %refusal.error, "call refused by the limits");
                Box::pin(futures::future::ready(Ok(refusal.into_status().into_http())))
            }
        }
    }
}

fn insert_headers(headers: &mut http::HeaderMap, rate: &RateStatus) {
    for (key, value) in rate.headers() {
        headers.insert(key, HeaderValue::from(value));
    }
}

/// A response body that holds the call's concurrency permit until it ends or is dropped.
struct PermitBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for PermitBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
