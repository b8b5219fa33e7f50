//! The authentication and authorisation layer in front of every service.
//!
//! For each call: take the caller identity established at the TLS handshake (connect info), refuse it if
//! the certificate has since been revoked or has expired, look the method up in the method table and
//! refuse a role it does not list. What passes carries an [`AuthenticatedCaller`] extension, which is
//! the only way handlers learn who is calling.

use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::Service;

use super::error::ApiError;
use super::methods::{self, Availability};
use crate::authn::{Caller, PeerInfo};
use crate::store::now_unix;
use crate::tls::revocation::RevocationState;

/// The caller of the current request, as authorised by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthenticatedCaller(pub Arc<Caller>);

#[derive(Clone)]
pub struct AuthLayer {
    revocation: Arc<RevocationState>,
}

impl AuthLayer {
    pub fn new(revocation: Arc<RevocationState>) -> AuthLayer {
        AuthLayer { revocation }
    }

    /// Decides one call; pure apart from the clock, so the matrix tests can drive it directly too.
    pub fn authorize(&self, path: &str, peer: Option<&PeerInfo>, now: i64) -> Result<Arc<Caller>, ApiError> {
        let peer = peer.ok_or(ApiError::NoIdentity)?;
        let caller = &peer.caller;
        if self.revocation.is_revoked(&caller.serial) {
            return Err(ApiError::CertificateRevoked { serial: caller.serial.clone() });
        }
        if now > caller.not_after {
            return Err(ApiError::CertificateExpired { serial: caller.serial.clone() });
        }
        let spec = methods::lookup(path).ok_or_else(|| ApiError::UnknownMethod(path.to_owned()))?;
        if !spec.roles.contains(&caller.role) {
            let required: Vec<_> = spec.roles.iter().map(|r| r.as_str()).collect();
            return Err(ApiError::RoleNotAllowed {
                method: path.to_owned(),
                required: required.join(" or "),
                dept: caller.dept.clone(),
                actual: caller.role.to_string(),
            });
        }
        if let Availability::Planned(note) = spec.availability {
            return Err(ApiError::NotImplemented { method: path.to_owned(), note });
        }
        Ok(caller.clone())
    }
}

crate::middleware_layer!(AuthLayer);

impl crate::rpc::middleware::Middleware for AuthLayer {
    fn call<S>(
        &self,
        mut request: http::Request<Body>,
        next: S,
    ) -> BoxFuture<'static, Result<http::Response<Body>, S::Error>>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let decision =
            self.authorize(request.uri().path(), request.extensions().get::<PeerInfo>(), now_unix());
        match decision {
            Ok(caller) => {
                request.extensions_mut().insert(AuthenticatedCaller(caller));
                let mut ready = next;
                Box::pin(ready.call(request))
            }
            Err(error) => {
                tracing::info!(method = request.uri().path(), reason = %error, "call refused");
                let status: tonic::Status = error.into();
                Box::pin(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The authorised caller of a request; a handler reached without the layer is a wiring bug.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Result<Arc<Caller>, tonic::Status> {
    request
        .extensions()
        .get::<AuthenticatedCaller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| ApiError::NoIdentity.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::Role;

    fn peer(role: Role, not_after: i64) -> PeerInfo {
        PeerInfo {
            caller: Arc::new(Caller {
                dept: "tax".into(),
                role,
                serial: "4a".into(),
                fingerprint: "00".into(),
                not_after,
            }),
            remote_addr: None,
        }
    }

    #[test]
    fn decisions() {
        let layer = AuthLayer::new(Arc::default());
        let who = "/fedx.v1.GatewayService/WhoAmI";
        assert!(layer.authorize(who, Some(&peer(Role::Consumer, 100)), 50).is_ok());
        assert!(matches!(layer.authorize(who, None, 50), Err(ApiError::NoIdentity)));
        assert!(matches!(
            layer.authorize(who, Some(&peer(Role::Consumer, 100)), 101),
            Err(ApiError::CertificateExpired { .. })
        ));
        assert!(matches!(
            layer.authorize("/fedx.v1.AdminService/ListCertificates", Some(&peer(Role::Consumer, 100)), 50),
            Err(ApiError::RoleNotAllowed { .. })
        ));
        assert!(matches!(
            layer.authorize("/fedx.v1.Nope/Nope", Some(&peer(Role::Admin, 100)), 50),
            Err(ApiError::UnknownMethod(_))
        ));
        layer.revocation.insert("4a");
        assert!(matches!(
            layer.authorize(who, Some(&peer(Role::Consumer, 100)), 50),
            Err(ApiError::CertificateRevoked { .. })
        ));
    }
}
