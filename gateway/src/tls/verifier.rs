//! Client-certificate verification: chain to the fedx CA (webpki, with the current CRL), then the
//! fedx-specific checks rustls cannot know about: a SPIFFE identity the department registry accepts, and
//! the live revocation set from the registry.
//!
//! The webpki verifier is immutable once built, so the CRL is applied by swapping in a freshly built one;
//! in-flight handshakes keep the verifier they started with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::revocation::{LoadedCrl, RevocationState};
use crate::authn::caller_from_der;
use crate::config::DepartmentRegistry;

#[derive(Debug)]
pub struct ClientVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    root_hints: Vec<DistinguishedName>,
    inner: ArcSwap<Arc<dyn ClientCertVerifier>>,
    revocation: Arc<RevocationState>,
    trust_domain: String,
    registry: DepartmentRegistry,
}

impl ClientVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        revocation: Arc<RevocationState>,
        trust_domain: String,
        registry: DepartmentRegistry,
    ) -> Result<ClientVerifier, rustls::server::VerifierBuilderError> {
        let inner = build_webpki(&roots, &provider, None)?;
        Ok(ClientVerifier {
            root_hints: inner.root_hint_subjects().to_vec(),
            inner: ArcSwap::from_pointee(inner),
            roots,
            provider,
            revocation,
            trust_domain,
            registry,
        })
    }

    /// Replaces the CRL used for chain verification. A CRL that webpki refuses is logged and ignored,
    /// leaving the previous verifier in place; the registry's revocations still apply.
    pub fn set_crl(&self, crl: Option<LoadedCrl>) {
        match build_webpki(&self.roots, &self.provider, crl.map(|c| c.der)) {
            Ok(verifier) => self.inner.store(Arc::new(verifier)),
            Err(e) => {
                tracing::error!(error = %e, "CRL rejected by the TLS verifier; keeping the previous one")
            }
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn registry(&self) -> &DepartmentRegistry {
        &self.registry
    }
}

fn build_webpki(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crl: Option<rustls_pki_types::CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, rustls::server::VerifierBuilderError> {
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crl)
        // Department certificates are issued directly by the fedx CA: only the end entity has a status.
        .only_check_end_entity_revocation()
        // A CRL only covers the CA that issued it; certificates from elsewhere fail the chain check anyway.
        .allow_unknown_revocation_status()
        .build()
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner.load().verify_client_cert(end_entity, intermediates, now)?;
        let caller = caller_from_der(end_entity, &self.trust_domain, &self.registry).map_err(|e| {
            tracing::info!(error = %e, "client certificate refused");
            Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        })?;
        if self.revocation.is_revoked(&caller.serial) {
            tracing::info!(serial = %caller.serial, dept = %caller.dept, "revoked client certificate refused");
            return Err(Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.load().supported_verify_schemes()
    }
}
