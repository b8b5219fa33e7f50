//! mTLS termination: server configuration, client verification with hot-reloaded revocation, and the
//! accept loop. Knows nothing about gRPC services.

pub mod accept;
pub mod revocation;
pub mod verifier;

use std::path::Path;
use std::sync::Arc;

use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use verifier::ClientVerifier;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot load {what} from {path}: {reason}")]
    Load { what: &'static str, path: String, reason: String },
    #[error("TLS configuration error: {0}")]
    Config(String),
}

fn load_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustls_pki_types::pem::Error) -> TlsError + 'a {
    move |e| TlsError::Load { what, path: path.display().to_string(), reason: e.to_string() }
}

/// The one crypto provider of the workspace.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_roots(ca_cert: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_cert).map_err(load_err("CA certificate", ca_cert))? {
        roots
            .add(cert.map_err(load_err("CA certificate", ca_cert))?)
            .map_err(|e| TlsError::Config(format!("CA certificate rejected: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Config(format!("{} holds no certificate", ca_cert.display())));
    }
    Ok(Arc::new(roots))
}

/// Server config: TLS 1.3 and 1.2 only, client certificate required, ALPN h2 for gRPC.
pub fn server_config(
    server_cert: &Path,
    server_key: &Path,
    verifier: Arc<ClientVerifier>,
) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(server_cert)
        .map_err(load_err("server certificate", server_cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(load_err("server certificate", server_cert))?;
    let key = PrivateKeyDer::from_pem_file(server_key).map_err(load_err("server key", server_key))?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
