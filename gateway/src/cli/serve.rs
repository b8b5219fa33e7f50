//! `fedx serve` and `fedx demo`.

use fedx_adapters::{Department, SeedOptions, SourceLocationSet};

use crate::authn::Role;
use crate::config::Config;
use crate::pki::{self, CertRequest, PkiPaths, Validity};
use crate::server;
use crate::store::Store;

/// Serves until SIGTERM or SIGINT, then shuts down gracefully: no new connections, the calls in flight
/// finish (for at most `resilience.drain_timeout`; a second signal cuts them short), the exchange log is
/// flushed and the store closed ([`server::RunningGateway::shutdown`]).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let gateway = server::start(config).await?;
    #[cfg(unix)]
    tokio::spawn(reload_policy_on_sighup(gateway.state.clone()));
    let drain = gateway.state.drain.clone();
    let drain_timeout = gateway.state.config.resilience.drain_timeout;
    gateway
        .run_until(async move {
            shutdown_requested().await;
            tracing::info!(?drain_timeout, "shutdown requested: draining in-flight calls");
            tokio::spawn(async move {
                shutdown_requested().await;
                tracing::warn!("second shutdown signal: cutting the calls still running");
                drain.advance(crate::resilience::Phase::Cut);
            });
        })
        .await?;
    tracing::info!("fedx gateway stopped");
    Ok(())
}

/// SIGHUP re-reads the purpose catalogue (and the limits file, if configured), like
/// AdminService.ReloadPolicy. The change is recorded in the exchange log as a ReloadPolicy exchange by
/// the local operator (caller department `local`, role `signal`), so a catalogue change made on the
/// host is as visible to auditors as one made over gRPC.
#[cfg(unix)]
async fn reload_policy_on_sighup(state: server::GatewayState) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!(
            "cannot listen for SIGHUP: reload the purpose catalogue with AdminService.ReloadPolicy"
        );
        return;
    };
    while hangup.recv().await.is_some() {
        let started = std::time::Instant::now();
        let time = time::OffsetDateTime::now_utc();
        // The limits file (if any) is validated first, so an invalid one leaves both as they are.
        let reloaded = state.limits.prepare_reload().map_err(|e| e.to_string()).and_then(|limits| {
            let outcome = state.policy.reload(state.departments.as_ref()).map_err(|e| e.to_string())?;
            Ok((outcome, limits))
        });
        let (outcome_code, outcome_reason) = match reloaded {
            Ok((outcome, limits)) => {
                let limits = limits.map(|prepared| state.limits.apply(prepared));
                let limits = limits
                    .map(|r| format!("; limits {} -> {}", r.previous_version, r.version))
                    .unwrap_or_default();
                tracing::info!(previous = %outcome.previous_version, version = %outcome.version, %limits, "purpose catalogue reloaded (SIGHUP)");
                (0, format!("POLICY_RELOADED {} -> {}{limits}", outcome.previous_version, outcome.version))
            }
            Err(error) => {
                tracing::error!(%error, "purpose catalogue or limits reload refused (SIGHUP); both in force stay");
                (tonic::Code::FailedPrecondition as i32, "POLICY_INVALID".to_owned())
            }
        };
        let exchange = crate::audit::record::Exchange {
            time,
            request_id: hex::encode(rand::random::<[u8; 16]>()),
            trace_id: String::new(),
            caller_dept: "local".into(),
            caller_role: "signal".into(),
            cert_serial: String::new(),
            cert_fingerprint: String::new(),
            method: "/fedx.v1.AdminService/ReloadPolicy".into(),
            purpose: String::new(),
            legal_basis: None,
            worker_ref: String::new(),
            sources_consulted: Vec::new(),
            disclosed_fields: Vec::new(),
            claims_verified: Vec::new(),
            outcome_code,
            outcome_reason,
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        };
        if let Err(error) = state.audit.append(exchange).await {
            tracing::error!(%error, "could not record the SIGHUP policy reload in the exchange log");
        }
    }
}

/// SIGINT or SIGTERM (the latter is what Kubernetes sends).
async fn shutdown_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Creates what is missing for a local trial — development PKI, one consumer certificate per source
/// department, an auditor and an admin certificate — prints how to call the gateway, and serves.
pub async fn demo(mut config: Config) -> anyhow::Result<()> {
    demo_catalogue_file(&mut config)?;
    let paths = PkiPaths::new(&config.pki.dir);
    if !paths.ca_cert().exists() {
        pki::init(&paths, &config)?;
        println!("created a development PKI in {}", paths.dir.display());
    }
    seed_demo_sources(&config).await?;
    let store = Store::open(&config.database_url()).await?;
    let registry = config.department_registry()?;
    let existing = store.certificates().await?;
    let wanted = [
        ("social_insurance", Role::Consumer),
        ("public_security", Role::Consumer),
        ("education", Role::Consumer),
        ("tax", Role::Consumer),
        ("industry_commerce", Role::Consumer),
        ("discipline_inspection", Role::Auditor),
        ("gateway_ops", Role::Admin),
    ];
    let mut example = None;
    for (dept, role) in wanted {
        let have =
            existing.iter().find(|r| r.dept == dept && r.role == role.as_str() && r.revoked_at.is_none());
        let (cert, key) = match have {
            Some(record) => paths.issued_pair(dept, role, &record.serial),
            None => {
                let validity = Validity::days_from_now(config.pki.client_cert_days);
                let request = CertRequest { dept, role, validity, renewed_from: None };
                let issued = pki::issue(&store, &paths, &config, &registry, request).await?;
                (issued.cert_path, issued.key_path)
            }
        };
        example.get_or_insert((cert, key));
    }
    store.close().await;

    if let Some((cert, key)) = example {
        println!("\nfedx demo: gateway on {} (mTLS). Try it with grpcurl:\n", config.listen_addr);
        println!(
            "  grpcurl -cacert {ca} -cert {cert} -key {key} {addr} fedx.v1.GatewayService/WhoAmI\n",
            ca = paths.ca_cert().display(),
            cert = cert.display(),
            key = key.display(),
            addr = config.listen_addr,
        );
        println!("Certificates for the other demo departments are in {}.", paths.issued_dir().display());
    }
    serve(config).await
}

/// Without a configured catalogue the demo serves a copy of the built-in one from its data directory, so
/// that editing it and calling ReloadPolicy (or sending SIGHUP) can be tried.
fn demo_catalogue_file(config: &mut Config) -> anyhow::Result<()> {
    if config.policy.purposes_file.is_some() {
        return Ok(());
    }
    let path = config.data_dir.join("purposes.toml");
    if !path.exists() {
        std::fs::create_dir_all(&config.data_dir)?;
        std::fs::write(&path, crate::policy::BUILT_IN_CATALOGUE)?;
    }
    println!("purpose catalogue: {} (edit it, then send SIGHUP or call ReloadPolicy)", path.display());
    config.policy.purposes_file = Some(path);
    Ok(())
}

/// Workers in the demo population: enough for namesakes and realistic noise, seeded in seconds.
const DEMO_WORKERS: u64 = 10_000;

/// Seeds the embedded (SQLite) department sources on first run; on later runs only migrates their
/// schema. Never touches a PostgreSQL source deployment.
async fn seed_demo_sources(config: &Config) -> anyhow::Result<()> {
    let locations = config.source_locations();
    let SourceLocationSet::SqliteDir(dir) = &locations else {
        println!("sources are on PostgreSQL: the demo does not seed them (use `fedx sources seed`)");
        return Ok(());
    };
    if Department::ALL.iter().any(|dept| dir.join(format!("{}.db", dept.code())).exists()) {
        // Data from an earlier run, perhaps of an earlier version: add what this version's look-ups need.
        for dept in Department::ALL {
            fedx_adapters::migrate_schema(dept, &locations.for_dept(dept)).await?;
        }
        return Ok(());
    }
    println!("seeding a demo population of {DEMO_WORKERS} workers into {}", dir.display());
    let options = SeedOptions { progress: true, ..SeedOptions::new(DEMO_WORKERS, 1) };
    let report = fedx_adapters::seed(&options, &locations, &config.data_dir.join("truth.jsonl")).await?;
    println!("seeded {} rows in {:.1} s", report.total_rows(), report.elapsed.as_secs_f64());
    Ok(())
}
