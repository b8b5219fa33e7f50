//! The tower plumbing every gateway layer shares, written once.
//!
//! Each cross-cutting concern (telemetry, the exchange log, load shedding, deadlines, authorisation,
//! rate limits) is a [`Middleware`]: given one call and the inner service, already polled ready, it
//! answers itself or passes the call on. [`MiddlewareService`] does the rest — `poll_ready` delegation
//! and handing the ready service over (tower's contract: the service that was polled ready is the one
//! that must be called) — and [`middleware_layer!`](crate::middleware_layer) makes a middleware a
//! `tower::Layer`.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::Service;

pub type HttpRequest = http::Request<Body>;
pub type HttpResponse = http::Response<Body>;

/// What one layer does with one call.
pub trait Middleware: Clone + Send + Sync + 'static {
    /// Handles `request`; `next` is the inner service, ready to be called once.
    fn call<S>(&self, request: HttpRequest, next: S) -> BoxFuture<'static, Result<HttpResponse, S::Error>>
    where
        S: Service<HttpRequest, Response = HttpResponse> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static;
}

/// A middleware in front of an inner service.
#[derive(Clone)]
pub struct MiddlewareService<M, S> {
    middleware: M,
    inner: S,
}

impl<M, S> MiddlewareService<M, S> {
    pub fn new(middleware: M, inner: S) -> Self {
        MiddlewareService { middleware, inner }
    }
}

impl<M, S> Service<HttpRequest> for MiddlewareService<M, S>
where
    M: Middleware,
    S: Service<HttpRequest, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<HttpResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        // The service that was polled ready is the one that must be called (tower contract).
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        self.middleware.call(request, ready)
    }
}

/// Implements `tower::Layer` for a [`Middleware`] type: `middleware_layer!(AuthLayer);`.
#[macro_export]
macro_rules! middleware_layer {
    ($middleware:ty) => {
        impl<S> tower::Layer<S> for $middleware {
            type Service = $crate::rpc::middleware::MiddlewareService<$middleware, S>;

            fn layer(&self, inner: S) -> Self::Service {
                $crate::rpc::middleware::MiddlewareService::new(self.clone(), inner)
            }
        }
    };
}
