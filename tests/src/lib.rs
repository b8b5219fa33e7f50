//! Shared harness for fedx end-to-end tests: a real gateway on a free port, a throw-away PKI generated at
//! test time, department clients over real mTLS, and the store on SQLite or PostgreSQL.
//!
//! PostgreSQL tests create a fresh database per test on the server named by `FEDX_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) and drop it afterwards. When the server is
//! unreachable they fail if `FEDX_REQUIRE_PG=1` (as in CI) and are skipped with a message otherwise.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use fedx_adapters::table::{TableSpec, Value};
use fedx_adapters::{Department, SeedOptions, SourceLocation, SourceLocationSet, TruthRecord};
use fedx_gateway::authn::Role;
use fedx_gateway::config::Config;
use fedx_gateway::pki::{self, CertRequest, CertificateAuthority, IssuedCert, PkiPaths, Validity};
use fedx_gateway::server::{self, RunningGateway};
use fedx_gateway::store::Store;
use sqlx::Connection;
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use fedx_proto::v1 as pb;

pub mod faults;
pub mod status;
pub mod wire;

pub use faults::{Fault, SourceFaults};

/// People of a seeded population every source can resolve by ID and name, distinct from each other: in
/// public security and at least two other sources, and nobody's namesake.
pub fn resolvable(truth: &[TruthRecord]) -> Vec<&TruthRecord> {
    truth
        .iter()
        .filter(|t| {
            t.records.contains_key("public_security") && t.records.len() >= 3 && t.namesake_of.is_none()
        })
        .collect()
}

/// A seeded person as a requester knows them: citizen ID and name.
pub fn subject_of(person: &TruthRecord) -> pb::SubjectQuery {
    pb::SubjectQuery {
        citizen_id: person.citizen_id.clone(),
        name: person.name.clone(),
        ..Default::default()
    }
}

/// Which gateway store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates each listed async test once per backend:
/// `backend_suite!(my_test, other_test);` → `sqlite::my_test`, `postgres::my_test`, …
/// Each test is an `async fn(Backend) -> anyhow::Result<()>` in scope.
#[macro_export]
macro_rules! backend_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::$test($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    if !$crate::postgres_available().await? {
                        return Ok(());
                    }
                    super::$test($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

fn pg_admin_url() -> String {
    std::env::var("FEDX_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Someone tax, social insurance and public security all know, with no namesake: views of them have
/// something in most sections and ask every worker-holding department.
pub fn well_known(truth: &[TruthRecord]) -> &TruthRecord {
    truth
        .iter()
        .filter(|t| t.namesake_of.is_none())
        .max_by_key(|t| {
            (
                ["public_security", "tax", "social_insurance"]
                    .iter()
                    .filter(|d| t.records.contains_key(**d))
                    .count(),
                t.records.len(),
            )
        })
        .expect("a populated seed")
}

/// BatchVerify item `i`: under `purpose`, does `person`'s name go with their citizen ID? (Seeded workers'
/// do: public security records them as the truth has them.)
pub fn identity_check(i: usize, person: &TruthRecord, purpose: &str) -> pb::BatchVerifyRequest {
    pb::BatchVerifyRequest {
        item_id: format!("item-{i}"),
        request: Some(pb::JointVerifyRequest {
            purpose: purpose.into(),
            subject: Some(subject_of(person)),
            claims: vec![pb::Claim {
                claim: Some(pb::claim::Claim::IdentityMatches(pb::IdentityMatches {
                    name: person.name.clone(),
                    citizen_id: person.citizen_id.clone(),
                })),
            }],
            consent_id: String::new(),
            signed_receipt: false,
        }),
    }
}

/// Whether PostgreSQL tests can run; an error when they must (`FEDX_REQUIRE_PG=1`) but cannot.
pub async fn postgres_available() -> anyhow::Result<bool> {
    match sqlx::PgConnection::connect(&pg_admin_url()).await {
        Ok(conn) => {
            conn.close().await?;
            Ok(true)
        }
        Err(e) if std::env::var("FEDX_REQUIRE_PG").is_ok_and(|v| v == "1") => {
            Err(anyhow::anyhow!("PostgreSQL required (FEDX_REQUIRE_PG=1) but unreachable: {e}"))
        }
        Err(e) => {
            eprintln!("skipping PostgreSQL test: server unreachable ({e})");
            Ok(false)
        }
    }
}

/// A database for one test: a SQLite file in the test's directory, or a fresh PostgreSQL database.
pub struct TestDatabase {
    pub url: String,
    pg_name: Option<String>,
}

impl TestDatabase {
    pub async fn create(backend: Backend, dir: &std::path::Path) -> anyhow::Result<TestDatabase> {
        match backend {
            Backend::Sqlite => Ok(TestDatabase {
                url: format!("sqlite://{}?mode=rwc", dir.join("fedx.db").display()),
                pg_name: None,
            }),
            Backend::Postgres => {
                let name = format!("fedx_t_{}", hex_suffix());
                let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await?;
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
                admin.close().await?;
                let base = pg_admin_url();
                let server = base.rsplit_once('/').map(|(server, _)| server).unwrap_or(&base);
                Ok(TestDatabase { url: format!("{server}/{name}"), pg_name: Some(name) })
            }
        }
    }

    pub async fn drop_database(&self) -> anyhow::Result<()> {
        if let Some(name) = &self.pg_name {
            let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
            admin.close().await?;
        }
        Ok(())
    }
}

fn hex_suffix() -> String {
    let bytes: [u8; 6] = rand_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    // Process id + time + a counter are unique enough for test database names.
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = (std::process::id() as u64) << 32
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
            as u64
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (seed.rotate_left((i * 8) as u32) & 0xff) as u8;
    }
    out
}

/// A client certificate and key, as a department would hold them.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub serial: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl From<&IssuedCert> for ClientIdentity {
    fn from(cert: &IssuedCert) -> Self {
        ClientIdentity {
            serial: cert.serial.clone(),
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key_pem.clone(),
        }
    }
}

/// A gateway running on a free loopback port with its own PKI and store.
pub struct TestGateway {
    pub dir: TempDir,
    pub config: Config,
    pub paths: PkiPaths,
    pub store: Store,
    pub database: TestDatabase,
    pub gateway: Option<RunningGateway>,
    /// Switches that make the department sources fail (see [`faults`]); all off at start.
    pub faults: SourceFaults,
}

impl TestGateway {
    /// Revocations are polled every 200 ms and handshakes time out after 1 s in tests, so that both are
    /// checked tightly without slowing the suite.
    pub async fn start(backend: Backend) -> anyhow::Result<TestGateway> {
        Ok(TestGateway::start_inner(backend, None, |_| {}).await?.0)
    }

    /// Like [`TestGateway::start`], with the configuration adjusted by `configure` before start-up.
    pub async fn start_configured(
        backend: Backend,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestGateway> {
        Ok(TestGateway::start_inner(backend, None, configure).await?.0)
    }

    /// Like [`TestGateway::start`], with department sources seeded by the synthetic generator: SQLite
    /// files under the test's data directory, or schemas with a unique prefix in the test's PostgreSQL
    /// database. Returns the ground truth of the seeded population.
    pub async fn start_with_sources(
        backend: Backend,
        seed: SeedOptions,
    ) -> anyhow::Result<(TestGateway, Vec<TruthRecord>)> {
        TestGateway::start_with_sources_configured(backend, seed, |_| {}).await
    }

    /// [`TestGateway::start_with_sources`] with the configuration adjusted by `configure`.
    pub async fn start_with_sources_configured(
        backend: Backend,
        seed: SeedOptions,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<(TestGateway, Vec<TruthRecord>)> {
        let (gw, truth) = TestGateway::start_inner(backend, Some(seed), configure).await?;
        Ok((gw, truth.unwrap_or_default()))
    }

    /// Writes the shipped purpose catalogue with `purpose` opened to every consumer department into the
    /// test's directory and configures the gateway to use it: for suites about something else (the
    /// exchange log) that call from several departments under one purpose.
    pub fn open_purpose_to_all(config: &mut Config, purpose: &str) -> anyhow::Result<()> {
        let mut catalogue: toml::Table = toml::from_str(fedx_gateway::policy::BUILT_IN_CATALOGUE)?;
        let entry = catalogue
            .get_mut("purposes")
            .and_then(|p| p.get_mut(purpose))
            .and_then(|p| p.as_table_mut())
            .with_context(|| format!("no purpose {purpose} in the shipped catalogue"))?;
        let all = ["education", "industry_commerce", "public_security", "social_insurance", "tax"];
        entry.insert(
            "departments".into(),
            toml::Value::Array(all.iter().map(|d| toml::Value::from(*d)).collect()),
        );
        let path = config.data_dir.with_file_name(format!("purposes-{purpose}.toml"));
        std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))?;
        std::fs::write(&path, toml::to_string(&catalogue)?)?;
        config.policy.purposes_file = Some(path);
        Ok(())
    }

    async fn start_inner(
        backend: Backend,
        seed: Option<SeedOptions>,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<(TestGateway, Option<Vec<TruthRecord>>)> {
        let dir = tempfile::tempdir()?;
        let database = TestDatabase::create(backend, dir.path()).await?;
        let mut config = Config {
            listen_addr: "127.0.0.1:0".parse()?,
            data_dir: dir.path().join("data"),
            database_url: Some(database.url.clone()),
            ..Config::default()
        };
        config.pki.dir = dir.path().join("pki");
        let mut truth = None;
        if let Some(options) = seed {
            if backend == Backend::Postgres {
                config.sources.postgres_url = Some(database.url.clone());
                config.sources.schema_prefix = format!("fedx_src_{}_", hex_suffix());
            }
            let locations = config.source_locations();
            if let SourceLocationSet::SqliteDir(d) = &locations {
                std::fs::create_dir_all(d)?;
            }
            let truth_path = dir.path().join("truth.jsonl");
            fedx_adapters::seed(&options, &locations, &truth_path).await.context("seeding sources")?;
            let records = fedx_gateway::identity::eval::read_truth(&truth_path)?;
            config.identity.population = records.len() as u64;
            truth = Some(records);
        }
        config.tls.revocation_poll_interval = Duration::from_millis(200);
        config.tls.handshake_timeout = Duration::from_secs(1);
        // Many gateways run at once: each gets its own admin (metrics) port.
        config.telemetry.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        configure(&mut config);
        let paths = PkiPaths::new(&config.pki.dir);
        pki::init(&paths, &config)?;
        let store = Store::open(&database.url).await?;
        let faults = SourceFaults::default();
        let options = server::StartOptions { wrap_sources: Some(faults.wrapper()) };
        let gateway = server::start_with(config.clone(), options).await.context("gateway start")?;
        Ok((TestGateway { dir, config, paths, store, database, gateway: Some(gateway), faults }, truth))
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.gateway.as_ref().expect("gateway running").local_addr
    }

    /// Issues a certificate through the same code path as `fedx certs issue`.
    pub async fn issue(&self, dept: &str, role: Role) -> anyhow::Result<ClientIdentity> {
        self.issue_valid(dept, role, Validity::days_from_now(30)).await
    }

    pub async fn issue_valid(
        &self,
        dept: &str,
        role: Role,
        validity: Validity,
    ) -> anyhow::Result<ClientIdentity> {
        let registry = self.config.department_registry()?;
        let issued = pki::issue(
            &self.store,
            &self.paths,
            &self.config,
            &registry,
            CertRequest { dept, role, validity, renewed_from: None },
        )
        .await?;
        Ok((&issued.cert).into())
    }

    /// The fedx CA itself, for crafting certificates the registry would never issue.
    pub fn ca(&self) -> anyhow::Result<CertificateAuthority> {
        Ok(pki::load_ca(&self.paths)?)
    }

    pub fn ca_pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.paths.ca_cert())?)
    }

    /// A channel to the gateway presenting `identity` (or no client certificate at all). Connects lazily,
    /// so TLS failures surface on the first call.
    pub fn channel(&self, identity: Option<&ClientIdentity>) -> anyhow::Result<Channel> {
        channel_to(self.addr(), &self.ca_pem()?, identity)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await?;
        }
        self.store.close().await;
        self.database.drop_database().await
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.paths.dir.clone()
    }

    /// A connection to one department's source database as seeded for this test (the SQLite file, or
    /// the department's schema on PostgreSQL), for crafting evidence the generator does not produce.
    async fn source_connection(&self, dept: Department) -> anyhow::Result<sqlx::AnyConnection> {
        use sqlx::Executor;
        sqlx::any::install_default_drivers();
        match self.config.source_locations().for_dept(dept) {
            SourceLocation::Sqlite { path } => {
                let url = format!("sqlite://{}?mode=rw", path.display());
                let mut conn = sqlx::AnyConnection::connect(&url).await?;
                // The gateway's readers hold the file open (WAL): wait for them rather than fail.
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                Ok(conn)
            }
            SourceLocation::Postgres { url, schema } => {
                anyhow::ensure!(
                    schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "unexpected source schema name"
                );
                let mut conn = sqlx::AnyConnection::connect(&url).await?;
                conn.execute(format!("SET search_path TO {schema}").as_str()).await?;
                Ok(conn)
            }
        }
    }

    /// Runs one statement on a department's source database with text binds (`$1`, `$2`, … on both
    /// backends; write integers as literals) and returns the rows affected. Sources are only read by
    /// the gateway, so rows written here are seen by its next request (set
    /// `config.identity.cache_capacity = 0` when a written row must change who a subject resolves to).
    pub async fn source_execute(&self, dept: Department, sql: &str, binds: &[&str]) -> anyhow::Result<u64> {
        let mut conn = self.source_connection(dept).await?;
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let affected = query.execute(&mut conn).await?.rows_affected();
        conn.close().await?;
        Ok(affected)
    }

    /// Runs a query on a department's source database with text binds and returns its rows, every
    /// column read as optional text (select only `TEXT` columns, or cast).
    pub async fn source_query(
        &self,
        dept: Department,
        sql: &str,
        binds: &[&str],
    ) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        use sqlx::Row;
        let mut conn = self.source_connection(dept).await?;
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query.fetch_all(&mut conn).await?;
        conn.close().await?;
        rows.iter()
            .map(|row| {
                (0..row.len()).map(|i| row.try_get::<Option<String>, _>(i).map_err(Into::into)).collect()
            })
            .collect()
    }

    /// Inserts one row into a department's source table the way CSV import writes it: the raw cells
    /// (`(column, value)`; columns not named are empty) are validated and canonicalised by the table's
    /// spec, and the normalised person-key columns (`*_norm`) are computed from them. Errors name the
    /// column, never the value.
    pub async fn source_insert(
        &self,
        table: &'static TableSpec,
        cells: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        for (column, _) in cells {
            anyhow::ensure!(table.column_index(column).is_some(), "{} has no column {column}", table.name);
        }
        let raw: Vec<Option<String>> = table
            .columns
            .iter()
            .map(|c| cells.iter().find(|(name, _)| *name == c.name).map(|(_, v)| (*v).to_owned()))
            .collect();
        let values = table.prepare(raw).map_err(|e| anyhow::anyhow!("{}: {e}", table.name))?;
        let names = table.all_names();
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let sql =
            format!("INSERT INTO {} ({}) VALUES ({})", table.name, names.join(", "), placeholders.join(", "));
        let mut conn = self.source_connection(table.dept).await?;
        let mut query = sqlx::query(&sql);
        for value in values {
            query = match value {
                Value::Text(text) => query.bind(text),
                Value::Int(int) => query.bind(int),
            };
        }
        query.execute(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }
}

pub fn channel_to(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&ClientIdentity>,
) -> anyhow::Result<Channel> {
    Ok(endpoint_to(addr, ca_pem, identity)?.connect_lazy())
}

/// The endpoint [`channel_to`] connects with (mTLS, 5 s to connect, 10 s per call), for tests that
/// adjust it (longer streams, smaller HTTP/2 windows).
pub fn endpoint_to(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&ClientIdentity>,
) -> anyhow::Result<Endpoint> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10)))
}
