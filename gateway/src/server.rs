//! Assembling and running the gateway: store, PKI, revocation watcher, TLS accept loop and gRPC router.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::audit::store::AuditStore;
use crate::audit::AuditLog;
use crate::config::{Config, ConfigError, DepartmentRegistry};
use crate::identity::{KeyRing, Model, Resolver};
use crate::pki::PkiPaths;
use crate::policy::{PolicyError, PolicyHandle};
use crate::rpc;
use crate::sources::{SourceSet, SourceWrapper};
use crate::store::{Store, StoreError};
use crate::tls::accept::{tls_incoming, AcceptSettings};
use crate::tls::revocation::{RevocationState, RevocationWatcher};
use crate::tls::verifier::ClientVerifier;
use crate::tls::{self, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("gateway store: {0}")]
    Store(#[from] StoreError),
    #[error("{0} (run `fedx certs init` to create a development PKI)")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("department sources: {0}")]
    Sources(#[from] fedx_adapters::SourceError),
    #[error(transparent)]
    WorkerRefKey(#[from] crate::identity::reference::KeyError),
    #[error("signing key: {0}")]
    Signing(#[from] crate::signing::SigningError),
    #[error("exchange log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Limits(#[from] crate::limits::LimitsError),
}

/// State shared by the service implementations.
#[derive(Clone)]
pub struct GatewayState {
    pub config: Arc<Config>,
    pub store: Store,
    pub revocation: Arc<RevocationState>,
    /// Identity resolution over the five department sources.
    pub identity: Arc<Resolver>,
    /// The exchange log every call is recorded in (with the signing keys of its checkpoints).
    pub audit: AuditLog,
    /// The department registry the certificates and the purpose catalogue are checked against.
    pub departments: Arc<DepartmentRegistry>,
    /// The purpose catalogue in force (reloadable).
    pub policy: Arc<PolicyHandle>,
    /// Consent records, read from the shared store on every check so that revocations reach every
    /// replica at once.
    pub consents: crate::consent::ConsentStore,
    /// Rate limits, concurrency limits and the harvest guard (reloadable with the purpose catalogue).
    pub limits: Arc<crate::limits::Limits>,
    /// The graceful-shutdown phase, watched by the call layer and the connections.
    pub drain: crate::resilience::Drain,
}

/// A running gateway. Dropping it does not stop the server; call [`RunningGateway::shutdown`].
pub struct RunningGateway {
    pub local_addr: SocketAddr,
    /// The admin endpoint (`/metrics`, `/healthz`), when `telemetry.admin_listen` is set.
    pub admin_addr: Option<SocketAddr>,
    pub state: GatewayState,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningGateway {
    /// Graceful shutdown: stops accepting (the listening socket is closed, so new connections are
    /// refused), lets the calls in flight finish — for at most `resilience.drain_timeout`, after which
    /// those still running are answered UNAVAILABLE (SHUTTING_DOWN) and recorded, and connections still
    /// open a moment later are closed — then flushes the exchange log (and signs a last checkpoint) and
    /// closes the store. See [`crate::resilience::shutdown`].
    pub async fn shutdown(self) -> Result<(), tonic::transport::Error> {
        use crate::resilience::shutdown::{Phase, CUT_GRACE};
        let drain = self.state.drain.clone();
        drain.advance(Phase::Draining);
        let _ = self.shutdown.send(true);
        let mut server = self.server;
        let drain_timeout = self.state.config.resilience.drain_timeout;
        let mut finished = tokio::time::timeout(drain_timeout, &mut server).await;
        if finished.is_err() {
            tracing::warn!(?drain_timeout, "drain time over: answering the calls still running UNAVAILABLE");
            drain.advance(Phase::Cut);
            finished = tokio::time::timeout(CUT_GRACE, &mut server).await;
        }
        if finished.is_err() {
            tracing::warn!("closing the connections still open");
            drain.advance(Phase::Abort);
            finished = tokio::time::timeout(CUT_GRACE, &mut server).await;
        }
        let result = match finished {
            Ok(joined) => joined.unwrap_or(Ok(())),
            Err(_) => {
                server.abort();
                Ok(())
            }
        };
        self.state.audit.shutdown().await;
        self.state.store.close().await;
        result
    }

    /// Serves until `signal` resolves, then shuts down gracefully ([`RunningGateway::shutdown`]); or
    /// until the server stops on its own (a fatal transport error), then flushes the exchange log.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let stopped = tokio::select! {
            joined = &mut self.server => Some(joined),
            () = signal => None,
        };
        match stopped {
            None => self.shutdown().await,
            Some(joined) => {
                let _ = self.shutdown.send(true);
                self.state.audit.shutdown().await;
                self.state.store.close().await;
                joined.unwrap_or(Ok(()))
            }
        }
    }

    /// Runs until the server stops on its own (it only does on a fatal transport error).
    pub async fn wait(self) -> Result<(), tonic::transport::Error> {
        self.server.await.unwrap_or(Ok(()))
    }

    /// The raw stop signal: stops accepting and drains without a time limit, flushing nothing. Prefer
    /// [`RunningGateway::shutdown`] or [`RunningGateway::run_until`].
    pub fn shutdown_signal(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts the gateway and returns once it is listening. Port 0 picks a free port (tests).
/// What embedders (tests, benchmarks) may change about a gateway beyond its configuration.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Wraps every department source after it is opened (fault injection in tests).
    pub wrap_sources: Option<SourceWrapper>,
}

/// Starts a gateway on `config`.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    start_with(config, StartOptions::default()).await
}

/// Starts a gateway on `config` with `options`.
pub async fn start_with(config: Config, options: StartOptions) -> Result<RunningGateway, StartError> {
    config.validate()?;
    let registry = config.department_registry()?;
    let store = Store::open(&config.database_url()).await?;
    let paths = PkiPaths::new(&config.pki.dir);

    let roots = tls::load_roots(&paths.ca_cert())?;
    let revocation = Arc::new(RevocationState::default());
    let verifier = Arc::new(
        ClientVerifier::new(
            roots,
            tls::crypto_provider(),
            revocation.clone(),
            config.trust_domain.clone(),
            registry.clone(),
        )
        .map_err(|e| TlsError::Config(e.to_string()))?,
    );
    // Know every revocation before the first handshake.
    let mut watcher =
        RevocationWatcher::new(store.clone(), paths.crl(), revocation.clone(), verifier.clone());
    watcher.refresh().await?;

    let server_config = tls::server_config(&paths.server_cert(), &paths.server_key(), verifier)?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
    let local_addr =
        listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(watcher.run(config.tls.revocation_poll_interval, shutdown_rx.clone()));
    // Stops with the gateway, or as soon as start-up fails below (the shutdown sender is dropped).
    let admin_addr = crate::telemetry::metrics::serve_admin(
        &config.telemetry,
        crate::telemetry::metrics::AdminSources { store: store.clone(), server_cert: paths.server_cert() },
        shutdown_rx.clone(),
    )
    .await
    .map_err(|(addr, source)| StartError::Bind { addr, source })?;

    let drain = crate::resilience::Drain::new();
    let incoming = tls_incoming(
        listener,
        TlsAcceptor::from(Arc::new(server_config)),
        AcceptSettings {
            max_concurrent_handshakes: config.tls.max_concurrent_handshakes,
            handshake_timeout: config.tls.handshake_timeout,
            trust_domain: config.trust_domain.clone(),
            registry: registry.clone(),
            max_connections: config.resilience.max_connections,
            drain: drain.clone(),
        },
    );
    let departments = Arc::new(registry);
    let policy = Arc::new(PolicyHandle::open(config.policy.source(), departments.as_ref())?);
    let limits = Arc::new(crate::limits::Limits::open(&config.limits, departments.as_ref())?);
    let identity = Arc::new(open_resolver_with(&config, options.wrap_sources.as_ref()).await?);
    let audit = open_audit_log(&config, &store).await?;
    let state = GatewayState {
        config: Arc::new(config),
        consents: crate::consent::ConsentStore::new(store.clone()),
        store,
        revocation,
        identity,
        audit,
        departments,
        policy,
        limits,
        drain,
    };
    let router = rpc::router(state.clone()).await;
    let mut stop = shutdown_rx;
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    }));
    tracing::info!(%local_addr, "fedx gateway listening (mTLS)");
    Ok(RunningGateway { local_addr, admin_addr, state, shutdown, server })
}

/// Opens the department sources (lazily: a source that is down is reported per request, not here) and
/// loads the worker-reference key ring (FEDX_WORKER_REF_KEY, the key file, or a generated dev key).
pub async fn open_resolver(config: &Config) -> Result<Resolver, StartError> {
    open_resolver_with(config, None).await
}

/// [`open_resolver`], with every source wrapped by `wrapper` if given.
pub async fn open_resolver_with(
    config: &Config,
    wrapper: Option<&SourceWrapper>,
) -> Result<Resolver, StartError> {
    let mut sources = SourceSet::open(&config.source_locations(), config.sources.timeout).await?;
    if let Some(wrapper) = wrapper {
        sources = sources.wrapped(wrapper);
    }
    // Outside the fault injector of tests (injected faults trip it), inside telemetry (which sees what
    // the gateway gets: fast "circuit open" failures included).
    if let Some(breakers) = crate::resilience::breaker::wrapper(&config.resilience, config.sources.timeout) {
        sources = sources.wrapped(&breakers);
    }
    // Outermost: spans and metrics see every call as the gateway does (see telemetry::source).
    sources = sources.wrapped(&crate::telemetry::source::wrapper());
    let env_key = std::env::var("FEDX_WORKER_REF_KEY").ok();
    let keys = KeyRing::load(&config.identity, &config.data_dir, env_key.as_deref())?;
    Ok(Resolver::new(Model::new(config.identity.clone()), sources, Arc::new(keys)))
}

/// Loads the signing keys and starts the exchange-log writer on the gateway store.
pub async fn open_audit_log(config: &Config, store: &Store) -> Result<AuditLog, StartError> {
    let keys = Arc::new(crate::signing::KeyRing::load(&config.signing, &config.data_dir)?);
    let audit_store = AuditStore::with_store(store.clone(), &config.database_url()).await?;
    Ok(AuditLog::start(audit_store, keys, config.audit.clone()))
}
