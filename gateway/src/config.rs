//! Gateway configuration: one TOML file, overridable by environment variables and command-line flags.
//!
//! Precedence (lowest to highest): built-in defaults, the file, `FEDX_*` environment variables, flags.
//! Every setting has a default that runs a single-machine gateway on an embedded SQLite store, so
//! `fedx demo` works on a fresh checkout; production deployments override the database URL, PKI paths and
//! listen address (see `deploy/fedx.example.toml`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authn::{is_dept_code, IdentityError, Role};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the mTLS gRPC server listens on.
    pub listen_addr: SocketAddr,
    /// Directory for the embedded defaults: the SQLite database and department source files.
    pub data_dir: PathBuf,
    /// sqlx URL of the gateway store (`sqlite://…` or `postgres://…`). Default: `<data_dir>/fedx.db`.
    pub database_url: Option<String>,
    /// SPIFFE trust domain of department certificates.
    pub trust_domain: String,
    pub pki: PkiConfig,
    pub tls: TlsConfig,
    pub sources: SourcesConfig,
    /// Identity resolution: thresholds, m/u overrides, worker-reference keys, cache.
    pub identity: crate::identity::IdentityConfig,
    /// The exchange log: group commit, checkpoints, retention.
    pub audit: crate::audit::AuditConfig,
    /// The gateway's Ed25519 keys, which sign audit checkpoints and verification receipts.
    pub signing: crate::signing::SigningConfig,
    /// The purpose catalogue.
    pub policy: PolicyConfig,
    /// Department registry: code → names and the roles its certificates may carry.
    pub departments: BTreeMap<String, Department>,
    /// Rate limits, harvest guard, per-department concurrency.
    pub limits: crate::limits::LimitsConfig,
    /// Traces, metrics, logs.
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Circuit breakers, deadlines, load shedding.
    pub resilience: crate::resilience::ResilienceConfig,
}

/// Where the purpose catalogue comes from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The purpose catalogue file (format: `deploy/purposes.toml`), re-read on AdminService.ReloadPolicy
    /// and SIGHUP. Unset: the copy of `deploy/purposes.toml` built into the binary, which only a rebuild
    /// changes — set it in production. `FEDX_PURPOSES_FILE` overrides it.
    pub purposes_file: Option<PathBuf>,
}

impl PolicyConfig {
    pub fn source(&self) -> crate::policy::CatalogueSource {
        match &self.purposes_file {
            Some(path) => crate::policy::CatalogueSource::File(path.clone()),
            None => crate::policy::CatalogueSource::BuiltIn,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkiConfig {
    /// Directory holding `ca.crt.pem`, `ca.key.pem` (administrators only), `ca.crl.pem`,
    /// `server.crt.pem`, `server.key.pem` and issued client certificates under `issued/`.
    pub dir: PathBuf,
    /// Default validity of issued department certificates, in days.
    pub client_cert_days: u32,
    /// How long a CRL stays fresh (its nextUpdate), in hours.
    pub crl_validity_hours: u32,
    /// Extra DNS names / IP addresses for the server certificate (localhost and 127.0.0.1 are always in).
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Handshakes allowed in flight at once; further connections wait in the accept backlog.
    pub max_concurrent_handshakes: usize,
    /// A client that has not completed its handshake in this time is dropped.
    #[serde(with = "duration_secs")]
    pub handshake_timeout: Duration,
    /// How often the gateway re-reads the revocation registry and the CRL file.
    #[serde(with = "duration_secs")]
    pub revocation_poll_interval: Duration,
}

/// Where the five department source databases are and how long the gateway waits for each.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// PostgreSQL URL holding one schema per department; unset = SQLite files in `<data_dir>/sources/`.
    pub postgres_url: Option<String>,
    /// Schema name prefix on PostgreSQL: `<prefix><department code>`.
    pub schema_prefix: String,
    /// Per-source deadline for one look-up or fact fetch; a source that misses it counts as unavailable.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            postgres_url: None,
            schema_prefix: fedx_adapters::DEFAULT_SCHEMA_PREFIX.to_owned(),
            timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    pub name_zh: String,
    pub name_en: String,
    pub roles: Vec<String>,
}

/// Durations in the file are written as seconds (fractions allowed), e.g. `handshake_timeout = 5`.
pub(crate) mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 7443)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            trust_domain: "fedx.internal".to_owned(),
            pki: PkiConfig::default(),
            tls: TlsConfig::default(),
            sources: SourcesConfig::default(),
            identity: crate::identity::IdentityConfig::default(),
            audit: crate::audit::AuditConfig::default(),
            signing: crate::signing::SigningConfig::default(),
            policy: PolicyConfig::default(),
            departments: default_departments(),
            limits: crate::limits::LimitsConfig::default(),
            telemetry: crate::telemetry::TelemetryConfig::default(),
            resilience: crate::resilience::ResilienceConfig::default(),
        }
    }
}

impl Default for PkiConfig {
    fn default() -> Self {
        PkiConfig {
            dir: PathBuf::from("certs/dev"),
            client_cert_days: 365,
            crl_validity_hours: 7 * 24,
            server_names: Vec::new(),
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            max_concurrent_handshakes: 256,
            handshake_timeout: Duration::from_secs(5),
            revocation_poll_interval: Duration::from_secs(1),
        }
    }
}

fn default_departments() -> BTreeMap<String, Department> {
    let dept = |zh: &str, en: &str, roles: &[&str]| Department {
        name_zh: zh.to_owned(),
        name_en: en.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    };
    BTreeMap::from([
        ("public_security".into(), dept("公安", "Public security", &["consumer", "provider"])),
        ("tax".into(), dept("税务", "Tax", &["consumer", "provider"])),
        (
            "social_insurance".into(),
            dept("人力资源和社会保障", "Social insurance", &["consumer", "provider"]),
        ),
        ("education".into(), dept("教育", "Education", &["consumer", "provider"])),
        ("industry_commerce".into(), dept("市场监管", "Industry and commerce", &["consumer", "provider"])),
        ("discipline_inspection".into(), dept("纪检监察", "Discipline inspection", &["auditor"])),
        (
            "data_protection_office".into(),
            dept("个人信息保护负责人", "Data-protection officer", &["auditor"]),
        ),
        ("gateway_ops".into(), dept("平台运维", "Gateway operations", &["admin"])),
    ])
}

/// Validated view of the department registry used on the authentication path.
#[derive(Debug, Clone)]
pub struct DepartmentRegistry {
    roles: BTreeMap<String, Vec<Role>>,
}

impl DepartmentRegistry {
    /// Whether `dept` exists and may hold `role`.
    pub fn check(&self, dept: &str, role: Role) -> Result<(), IdentityError> {
        let roles = self.roles.get(dept).ok_or_else(|| IdentityError::UnknownDepartment(dept.to_owned()))?;
        if roles.contains(&role) {
            Ok(())
        } else {
            Err(IdentityError::RoleNotAllowed { dept: dept.to_owned(), role })
        }
    }

    pub fn departments(&self) -> impl Iterator<Item = (&str, &[Role])> {
        self.roles.iter().map(|(d, r)| (d.as_str(), r.as_slice()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid value in environment variable {var}: {reason}")]
    Env { var: &'static str, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Command-line overrides; `None` leaves the file/env value in place.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen_addr: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub pki_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the file (if any), applies `FEDX_*` environment variables, then the flags, and validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(|var| std::env::var(var).ok())?;
        config.apply_overrides(overrides);
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::from_toml(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(addr) = get("FEDX_LISTEN_ADDR") {
            self.listen_addr = addr
                .parse()
                .map_err(|e| ConfigError::Env { var: "FEDX_LISTEN_ADDR", reason: format!("{e}") })?;
        }
        if let Some(url) = get("FEDX_DATABASE_URL") {
            self.database_url = Some(url);
        }
        if let Some(dir) = get("FEDX_DATA_DIR") {
            self.data_dir = dir.into();
        }
        if let Some(dir) = get("FEDX_PKI_DIR") {
            self.pki.dir = dir.into();
        }
        if let Some(url) = get("FEDX_SOURCES_POSTGRES_URL") {
            self.sources.postgres_url = Some(url);
        }
        if let Some(domain) = get("FEDX_TRUST_DOMAIN") {
            self.trust_domain = domain;
        }
        // The key itself (FEDX_WORKER_REF_KEY) is read where the key ring is built, so it never sits in
        // the printable configuration.
        if let Some(id) = get("FEDX_WORKER_REF_KEY_ID") {
            self.identity.worker_ref_key_id = id;
        }
        if let Some(path) = get("FEDX_SIGNING_KEY_FILE") {
            self.signing.key_file = Some(path.into());
        }
        if let Some(path) = get("FEDX_PURPOSES_FILE") {
            self.policy.purposes_file = Some(path.into());
        }
        if let Some(addr) = get("FEDX_ADMIN_LISTEN") {
            self.telemetry.admin_listen = crate::telemetry::parse_optional_addr(&addr)
                .map_err(|reason| ConfigError::Env { var: "FEDX_ADMIN_LISTEN", reason })?;
        }
        Ok(())
    }

    fn apply_overrides(&mut self, o: &Overrides) {
        if let Some(addr) = o.listen_addr {
            self.listen_addr = addr;
        }
        if let Some(url) = &o.database_url {
            self.database_url = Some(url.clone());
        }
        if let Some(dir) = &o.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(dir) = &o.pki_dir {
            self.pki.dir = dir.clone();
        }
    }

    /// Start-up validation: refuse to run with a configuration that would fail later on a request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.trust_domain.is_empty() || self.trust_domain.contains('/') {
            return invalid(format!("trust_domain '{}' must be a bare domain name", self.trust_domain));
        }
        if self.tls.max_concurrent_handshakes == 0 {
            return invalid("tls.max_concurrent_handshakes must be at least 1".into());
        }
        if self.tls.handshake_timeout.is_zero() || self.tls.revocation_poll_interval.is_zero() {
            return invalid("tls.handshake_timeout and tls.revocation_poll_interval must be positive".into());
        }
        if self.sources.timeout.is_zero() {
            return invalid("sources.timeout must be positive".into());
        }
        if self.pki.client_cert_days == 0 || self.pki.crl_validity_hours == 0 {
            return invalid("pki.client_cert_days and pki.crl_validity_hours must be positive".into());
        }
        self.identity.validate().map_err(ConfigError::Invalid)?;
        self.resilience.validate().map_err(ConfigError::Invalid)?;
        self.telemetry.validate().map_err(ConfigError::Invalid)?;
        let audit = &self.audit;
        if audit.max_batch == 0 || audit.max_pending == 0 || audit.checkpoint_every_records == 0 {
            return invalid(
                "audit.max_batch, audit.max_pending and audit.checkpoint_every_records must be positive"
                    .into(),
            );
        }
        if audit.checkpoint_interval.is_zero() {
            return invalid("audit.checkpoint_interval must be positive".into());
        }
        if audit.retention_days < 365 {
            return invalid(format!(
                "audit.retention_days = {} is under a year; exchange records are evidence (PIPL art. 56 \
                 asks for three years)",
                audit.retention_days
            ));
        }
        if self.departments.is_empty() {
            return invalid("the department registry is empty".into());
        }
        let limits = self.limits.violations(&|d| self.departments.contains_key(d));
        if !limits.is_empty() {
            return Err(ConfigError::Invalid(crate::limits::LimitsError::Invalid(limits).to_string()));
        }
        self.department_registry().map(|_| ())
    }

    pub fn department_registry(&self) -> Result<DepartmentRegistry, ConfigError> {
        let mut roles = BTreeMap::new();
        for (code, dept) in &self.departments {
            if !is_dept_code(code) {
                return Err(ConfigError::Invalid(format!(
                    "department code '{code}' must be lower-case letters, digits and '_'"
                )));
            }
            let parsed = dept
                .roles
                .iter()
                .map(|r| r.parse::<Role>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::Invalid(format!("department '{code}': {e}")))?;
            if parsed.is_empty() {
                return Err(ConfigError::Invalid(format!("department '{code}' has no roles")));
            }
            roles.insert(code.clone(), parsed);
        }
        Ok(DepartmentRegistry { roles })
    }

    /// The store URL, defaulting to a SQLite file in the data directory (created on first use).
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("fedx.db").display()))
    }

    /// Where each department's source database is.
    pub fn source_locations(&self) -> fedx_adapters::SourceLocationSet {
        match &self.sources.postgres_url {
            Some(url) => fedx_adapters::SourceLocationSet::Postgres {
                url: url.clone(),
                schema_prefix: self.sources.schema_prefix.clone(),
            },
            None => fedx_adapters::SourceLocationSet::SqliteDir(self.data_dir.join("sources")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_in_deploy_parses_and_validates() {
        let text = include_str!("../../deploy/fedx.example.toml");
        let config = Config::from_toml(text).expect("example parses");
        config.validate().expect("example validates");
        assert_eq!(config.trust_domain, "fedx.internal");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let mut config = Config::default();
        config
            .apply_env(|var| match var {
                "FEDX_LISTEN_ADDR" => Some("0.0.0.0:9000".into()),
                "FEDX_DATABASE_URL" => Some("postgres://db/fedx".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.listen_addr.port(), 9000);
        config.apply_overrides(&Overrides {
            listen_addr: Some("127.0.0.1:9100".parse().unwrap()),
            ..Overrides::default()
        });
        assert_eq!(config.listen_addr.port(), 9100);
        assert_eq!(config.database_url(), "postgres://db/fedx");
    }

    #[test]
    fn bad_env_value_is_named() {
        let err = Config::default()
            .apply_env(|var| (var == "FEDX_LISTEN_ADDR").then(|| "nope".into()))
            .unwrap_err();
        assert!(err.to_string().contains("FEDX_LISTEN_ADDR"), "{err}");
    }

    #[test]
    fn unknown_keys_and_roles_are_refused() {
        assert!(Config::from_toml("listen_adress = '127.0.0.1:1'").is_err());
        let config = Config::from_toml(
            "[departments.tax]\nname_zh = '税务'\nname_en = 'Tax'\nroles = ['superuser']\n",
        )
        .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("superuser"), "{err}");
    }

    #[test]
    fn registry_checks_department_and_role() {
        let registry = Config::default().department_registry().unwrap();
        assert!(registry.check("tax", Role::Consumer).is_ok());
        assert_eq!(
            registry.check("tax", Role::Admin),
            Err(IdentityError::RoleNotAllowed { dept: "tax".into(), role: Role::Admin })
        );
        assert!(matches!(registry.check("mars", Role::Consumer), Err(IdentityError::UnknownDepartment(_))));
    }
}
