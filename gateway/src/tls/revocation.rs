//! Revocation that takes effect without a restart.
//!
//! Two inputs, merged into one set of revoked serials: the certificate registry in the gateway database
//! (shared by every replica, so `fedx certs revoke` on any machine reaches all of them) and the CRL file
//! (for revocations made by an external CA process). A background task re-reads both every
//! `tls.revocation_poll_interval`; handshakes consult the set, and so does every call on an already-open
//! connection, so a revoked department is cut off within one interval either way.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateRevocationListDer;
use tokio::sync::watch;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::verifier::ClientVerifier;
use crate::authn::serial_hex;
use crate::store::certificates::RevocationVersion;
use crate::store::{Store, StoreError};

/// The current set of revoked serials; reads are lock-free.
#[derive(Debug, Default)]
pub struct RevocationState {
    serials: ArcSwap<HashSet<String>>,
}

impl RevocationState {
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.serials.load().contains(serial)
    }

    pub fn len(&self) -> usize {
        self.serials.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn replace(&self, serials: HashSet<String>) {
        self.serials.store(Arc::new(serials));
    }

    /// Adds one serial at once, for a revocation made through this replica's admin API.
    pub fn insert(&self, serial: &str) {
        self.serials.rcu(|current| {
            let mut next = HashSet::clone(current);
            next.insert(serial.to_owned());
            next
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("cannot read CRL {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("CRL {0} is not a PEM-encoded X.509 CRL")]
    Parse(PathBuf),
}

/// A parsed CRL: the DER for the TLS verifier and the serials it lists.
#[derive(Debug, Clone)]
pub struct LoadedCrl {
    pub der: CertificateRevocationListDer<'static>,
    pub serials: HashSet<String>,
    pub next_update: Option<i64>,
}

pub fn load_crl(path: &std::path::Path) -> Result<LoadedCrl, CrlError> {
    let pem = std::fs::read(path).map_err(|e| CrlError::Read(path.to_owned(), e))?;
    let der =
        CertificateRevocationListDer::from_pem_slice(&pem).map_err(|_| CrlError::Parse(path.to_owned()))?;
    let (_, crl) =
        CertificateRevocationList::from_der(der.as_ref()).map_err(|_| CrlError::Parse(path.to_owned()))?;
    let serials = crl.iter_revoked_certificates().map(|revoked| serial_hex(revoked.raw_serial())).collect();
    let next_update = crl.next_update().map(|t| t.timestamp());
    Ok(LoadedCrl { der, serials, next_update })
}

/// Keeps [`RevocationState`] and the verifier's CRL in step with the registry and the CRL file.
pub struct RevocationWatcher {
    store: Store,
    crl_path: PathBuf,
    state: Arc<RevocationState>,
    verifier: Arc<ClientVerifier>,
    registry_version: Option<RevocationVersion>,
    registry_serials: HashSet<String>,
    crl_modified: Option<SystemTime>,
    crl_serials: HashSet<String>,
}

impl RevocationWatcher {
    pub fn new(
        store: Store,
        crl_path: PathBuf,
        state: Arc<RevocationState>,
        verifier: Arc<ClientVerifier>,
    ) -> Self {
        RevocationWatcher {
            store,
            crl_path,
            state,
            verifier,
            registry_version: None,
            registry_serials: HashSet::new(),
            crl_modified: None,
            crl_serials: HashSet::new(),
        }
    }

    /// One refresh. Start-up calls it directly so the gateway never serves before it knows the
    /// revocations; afterwards a failure keeps the last known set and is retried next interval.
    pub async fn refresh(&mut self) -> Result<(), StoreError> {
        let mut changed = false;
        let version = self.store.revocation_version().await?;
        if self.registry_version != Some(version) {
            self.registry_serials =
                self.store.revoked_certificates().await?.into_iter().map(|record| record.serial).collect();
            self.registry_version = Some(version);
            changed = true;
        }
        let modified = std::fs::metadata(&self.crl_path).and_then(|m| m.modified()).ok();
        if modified != self.crl_modified {
            self.crl_modified = modified;
            changed = true;
            match modified.map(|_| load_crl(&self.crl_path)) {
                Some(Ok(crl)) => {
                    self.crl_serials = crl.serials.clone();
                    self.verifier.set_crl(Some(crl));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "keeping the previous CRL"),
                None => {
                    self.crl_serials.clear();
                    self.verifier.set_crl(None);
                }
            }
        }
        if changed {
            let merged: HashSet<String> = self.registry_serials.union(&self.crl_serials).cloned().collect();
            tracing::info!(revoked = merged.len(), "revocation set reloaded");
            self.state.replace(merged);
        }
        Ok(())
    }

    /// Polls until `shutdown` flips to true.
    pub async fn run(mut self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!(error = %e, "revocation refresh failed; keeping the last known set");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
