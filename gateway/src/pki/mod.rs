//! Certificate administration: the on-disk PKI layout and the operations behind `fedx certs …`.
//!
//! Both the CLI and the tests go through these functions, so what administrators run is what is tested.

pub mod authority;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use authority::{AuthorityError, CertificateAuthority, IssuedCert, Validity};

use crate::authn::Role;
use crate::config::{Config, DepartmentRegistry};
use crate::store::certificates::{CertRecord, RevocationReason, RevokeError};
use crate::store::{now_unix, Store, StoreError};

/// File layout of a PKI directory. Private keys are written with mode 0600 and never committed.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(dir: impl Into<PathBuf>) -> PkiPaths {
        PkiPaths { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key.pem")
    }
    pub fn crl(&self) -> PathBuf {
        self.dir.join("ca.crl.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key.pem")
    }
    pub fn issued_dir(&self) -> PathBuf {
        self.dir.join("issued")
    }
    /// Where `issue` writes a department certificate and its key.
    pub fn issued_pair(&self, dept: &str, role: Role, serial: &str) -> (PathBuf, PathBuf) {
        let stem = format!("{dept}-{role}-{serial}");
        let dir = self.issued_dir();
        (dir.join(format!("{stem}.crt.pem")), dir.join(format!("{stem}.key.pem")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("no CA at {0}: run `fedx certs init` first")]
    MissingCa(PathBuf),
    #[error("a CA already exists at {0}; refusing to overwrite it")]
    CaExists(PathBuf),
    #[error("cannot access {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Revoke(#[from] RevokeError),
    #[error("{0}")]
    Identity(#[from] crate::authn::IdentityError),
    #[error("unknown serial {0}")]
    UnknownSerial(String),
    #[error("certificate {0} is revoked and cannot be renewed; issue a new one")]
    RenewRevoked(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_owned(), source }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// Writes a file atomically (temp file + rename) so a reader never sees half a certificate or CRL;
/// private keys get mode 0600.
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
        file.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// What `init` created.
#[derive(Debug)]
pub struct InitReport {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_names: Vec<String>,
}

/// Creates the CA, the gateway's server certificate and an empty CRL.
pub fn init(paths: &PkiPaths, config: &Config) -> Result<InitReport, PkiError> {
    if paths.ca_cert().exists() || paths.ca_key().exists() {
        return Err(PkiError::CaExists(paths.dir.clone()));
    }
    let (ca, ca_key) = CertificateAuthority::generate("fedx CA", 10 * 365)?;
    write_file(&paths.ca_key(), &ca_key, true)?;
    write_file(&paths.ca_cert(), ca.cert_pem(), false)?;
    let server_names = server_names(config);
    let server = ca.issue_server(&server_names, Validity::days_from_now(825))?;
    write_file(&paths.server_key(), &server.key_pem, true)?;
    write_file(&paths.server_cert(), &server.cert_pem, false)?;
    write_crl_with(&ca, paths, &[], config)?;
    Ok(InitReport { ca_cert: paths.ca_cert(), server_cert: paths.server_cert(), server_names })
}

fn server_names(config: &Config) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    for name in &config.pki.server_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Loads the CA; administrators' machines only (replicas never need the CA key).
pub fn load_ca(paths: &PkiPaths) -> Result<CertificateAuthority, PkiError> {
    if !paths.ca_cert().exists() || !paths.ca_key().exists() {
        return Err(PkiError::MissingCa(paths.dir.clone()));
    }
    Ok(CertificateAuthority::from_pem(&read(&paths.ca_cert())?, &read(&paths.ca_key())?)?)
}

/// A certificate issued and recorded in the registry, with where its files were written.
#[derive(Debug)]
pub struct Issued {
    pub record: CertRecord,
    pub cert: IssuedCert,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// What to issue: one certificate for a department and role.
#[derive(Debug, Clone)]
pub struct CertRequest<'a> {
    pub dept: &'a str,
    pub role: Role,
    pub validity: Validity,
    /// The certificate this one replaces, for `renew`.
    pub renewed_from: Option<String>,
}

/// Issues a department certificate, records it in the registry and writes it under `issued/`.
pub async fn issue(
    store: &Store,
    paths: &PkiPaths,
    config: &Config,
    registry: &DepartmentRegistry,
    request: CertRequest<'_>,
) -> Result<Issued, PkiError> {
    let CertRequest { dept, role, validity, renewed_from } = request;
    registry.check(dept, role)?;
    let ca = load_ca(paths)?;
    let cert = ca.issue_client(&config.trust_domain, dept, role, validity)?;
    let record = CertRecord {
        serial: cert.serial.clone(),
        dept: dept.to_owned(),
        role: role.as_str().to_owned(),
        fingerprint: cert.fingerprint.clone(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        issued_at: now_unix(),
        renewed_from,
        revoked_at: None,
        revocation_reason: None,
    };
    store.insert_certificate(&record).await?;
    let (cert_path, key_path) = paths.issued_pair(dept, role, &cert.serial);
    write_file(&key_path, &cert.key_pem, true)?;
    write_file(&cert_path, &cert.cert_pem, false)?;
    Ok(Issued { record, cert, cert_path, key_path })
}

/// Issues a successor for `serial` (same department and role, new key). The old certificate stays valid
/// until it expires or is revoked, so a department can roll over without downtime.
pub async fn renew(
    store: &Store,
    paths: &PkiPaths,
    config: &Config,
    registry: &DepartmentRegistry,
    serial: &str,
    days: u32,
) -> Result<Issued, PkiError> {
    let old = store.certificate(serial).await?.ok_or_else(|| PkiError::UnknownSerial(serial.to_owned()))?;
    if old.revoked_at.is_some() {
        return Err(PkiError::RenewRevoked(serial.to_owned()));
    }
    let role: Role = old.role.parse()?;
    let request = CertRequest {
        dept: &old.dept,
        role,
        validity: Validity::days_from_now(days),
        renewed_from: Some(old.serial.clone()),
    };
    issue(store, paths, config, registry, request).await
}

/// Revokes in the registry (which gateways poll) and, when the CA key is here, republishes the CRL.
/// Returns the record and whether the CRL was rewritten.
pub async fn revoke(
    store: &Store,
    paths: &PkiPaths,
    config: &Config,
    serial: &str,
    reason: RevocationReason,
) -> Result<(CertRecord, bool), PkiError> {
    let record = store.revoke_certificate(serial, reason, now_unix()).await?;
    let crl_written = match load_ca(paths) {
        Ok(ca) => {
            write_crl_with(&ca, paths, &store.revoked_certificates().await?, config)?;
            true
        }
        Err(PkiError::MissingCa(_)) => false,
        Err(e) => return Err(e),
    };
    Ok((record, crl_written))
}

/// Regenerates the CRL from the registry.
pub async fn write_crl(store: &Store, paths: &PkiPaths, config: &Config) -> Result<PathBuf, PkiError> {
    let ca = load_ca(paths)?;
    write_crl_with(&ca, paths, &store.revoked_certificates().await?, config)?;
    Ok(paths.crl())
}

fn write_crl_with(
    ca: &CertificateAuthority,
    paths: &PkiPaths,
    revoked: &[CertRecord],
    config: &Config,
) -> Result<(), PkiError> {
    let validity = time::Duration::hours(i64::from(config.pki.crl_validity_hours));
    write_file(&paths.crl(), &ca.crl(revoked, validity)?, false)
}
