//! The exchange log survives a crash: the real `fedx` binary serving mTLS clients is killed with SIGKILL
//! while calls are in flight. Every call that was answered OK must be in the log afterwards, the chain
//! must verify (`fedx audit verify`), and a restarted gateway continues the same chain.
//!
//! Runs on SQLite, and on PostgreSQL when the server named by `FEDX_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) is reachable; with `FEDX_REQUIRE_PG=1` an unreachable
//! server is a failure instead of a skip.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedx_proto::v1 as pb;
use sqlx::Connection;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

type GatewayClient = pb::gateway_service_client::GatewayServiceClient<Channel>;

const CLIENTS: usize = 16;

/// The `fedx` binary on one data directory, PKI directory and store.
struct Fedx {
    dir: tempfile::TempDir,
    database_url: Option<String>,
}

impl Fedx {
    fn new(database_url: Option<String>) -> Fedx {
        Fedx { dir: tempfile::tempdir().expect("temp dir"), database_url }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fedx"));
        command.arg("--data-dir").arg(self.root().join("data")).arg("--pki-dir").arg(self.root().join("pki"));
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        command
            .args(args)
            .env_remove("FEDX_CONFIG")
            .env_remove("FEDX_DATABASE_URL")
            .env_remove("FEDX_SIGNING_KEY_FILE")
            // Both backends' gateways run at once: each on its own metrics port.
            .env("FEDX_ADMIN_LISTEN", "127.0.0.1:0")
            .env("FEDX_LOG", "warn");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("fedx runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "fedx {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `fedx serve` on a free loopback port, logging to a file in the test directory.
    fn serve(&self, name: &str) -> (Child, std::net::SocketAddr) {
        let addr = free_port();
        let log = std::fs::File::create(self.root().join(format!("{name}.log"))).expect("log file");
        let child = self
            .command(&["serve", "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("fedx serve starts");
        (child, addr)
    }

    fn server_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.root().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Every record, via `fedx audit query --format json`.
    fn records(&self) -> Vec<serde_json::Value> {
        self.ok(&["audit", "query", "--format", "json", "--limit", "1000000"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

struct Client {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Client {
    fn channel(&self, addr: std::net::SocketAddr) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost")
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        Endpoint::from_shared(format!("https://{addr}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy()
    }
}

fn issue_consumer(fedx: &Fedx) -> Client {
    let out = fedx.ok(&["certs", "issue", "--dept", "tax", "--role", "consumer"]);
    let serial = out
        .lines()
        .find_map(|l| l.strip_prefix("issued"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("issue prints the serial: {out}"))
        .to_owned();
    let pki = fedx.root().join("pki");
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Client {
        ca_pem: read(pki.join("ca.crt.pem")),
        cert_pem: read(pki.join(format!("issued/tax-consumer-{serial}.crt.pem"))),
        key_pem: read(pki.join(format!("issued/tax-consumer-{serial}.key.pem"))),
    }
}

async fn who_am_i(channel: Channel, request_id: &str) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::WhoAmIRequest {});
    request.metadata_mut().insert("x-request-id", request_id.parse().expect("ascii id"));
    let response = GatewayClient::new(channel).who_am_i(request).await?;
    let echoed = response.metadata().get("x-request-id").and_then(|v| v.to_str().ok());
    assert_eq!(echoed, Some(request_id), "the response carries the request id");
    Ok(())
}

/// Calls WhoAmI until one succeeds (the gateway is up); returns the id of the call that did.
async fn wait_until_serving(
    fedx: &Fedx,
    name: &str,
    child: &mut Child,
    client: &Client,
    addr: std::net::SocketAddr,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("fedx serve exited with {status}: {}", fedx.server_log(name));
        }
        let id = format!("{name}-ready-{attempt}");
        if who_am_i(client.channel(addr), &id).await.is_ok() {
            return id;
        }
        assert!(Instant::now() < deadline, "fedx serve not answering after 20 s: {}", fedx.server_log(name));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

fn seqs_are_contiguous(records: &[serde_json::Value]) {
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"].as_u64(), Some(i as u64 + 1), "seq gap or disorder at position {i}: {r}");
        if i > 0 {
            assert_eq!(r["prev_hash"], records[i - 1]["record_hash"], "chain broken at seq {}", i + 1);
        }
    }
}

async fn crash_and_restart(fedx: Fedx) {
    let started = Instant::now();
    fedx.ok(&["certs", "init"]);
    let client = Arc::new(issue_consumer(&fedx));

    let (mut child, addr) = fedx.serve("first");
    let ready_id = wait_until_serving(&fedx, "first", &mut child, &client, addr).await;

    // 16 clients, each on its own connection, calling as fast as they are answered.
    let answered = Arc::new(Mutex::new(vec![ready_id]));
    let errors_before_kill = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, answered, errors, killed) =
            (client.clone(), answered.clone(), errors_before_kill.clone(), killed.clone());
        tasks.push(tokio::spawn(async move {
            let channel = client.channel(addr);
            for n in 0u64.. {
                let id = format!("c{c:02}-{n:06}");
                match who_am_i(channel.clone(), &id).await {
                    Ok(()) => answered.lock().expect("lock").push(id),
                    Err(_) if killed.load(Ordering::SeqCst) => break,
                    Err(status) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                        eprintln!("call {id} failed before the kill: {status:?}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let in_flight_at_kill = answered.lock().expect("lock").len();
    killed.store(true, Ordering::SeqCst);
    child.kill().expect("SIGKILL fedx serve"); // SIGKILL on Unix: no shutdown, no flush
    child.wait().expect("reap fedx serve");
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("clients notice the gateway is gone")
            .expect("client task");
    }
    let answered = std::mem::take(&mut *answered.lock().expect("lock"));
    assert!(in_flight_at_kill >= 50, "too few calls answered before the kill: {in_flight_at_kill}");
    assert_eq!(errors_before_kill.load(Ordering::SeqCst), 0, "calls failed before the kill");

    // The log verifies and holds every answered call, exactly once.
    let verify = fedx.ok(&["audit", "verify"]);
    assert!(verify.contains("valid"), "{verify}");
    let records = fedx.records();
    seqs_are_contiguous(&records);
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *by_id.entry(r["request_id"].as_str().expect("request_id")).or_default() += 1;
        assert_eq!(r["method"], "/fedx.v1.GatewayService/WhoAmI", "{r}");
        assert_eq!(r["outcome_code"], 0, "{r}");
    }
    let missing: Vec<&String> = answered.iter().filter(|id| !by_id.contains_key(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} calls answered OK are not in the log after the crash, e.g. {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(5)]
    );
    let repeated: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "request ids recorded more than once: {repeated:?}");
    let answered_set: BTreeSet<&str> = answered.iter().map(String::as_str).collect();
    assert_eq!(answered_set.len(), answered.len());
    let head_before = records.last().expect("records").clone();

    // Save a checkpoint outside the database, restart on the same data, and continue the chain.
    let checkpoint_file = fedx.root().join("checkpoint.txt");
    fedx.ok(&["audit", "checkpoint", "--out", checkpoint_file.to_str().expect("utf-8 path")]);
    let (mut child, addr) = fedx.serve("second");
    let after_id = wait_until_serving(&fedx, "second", &mut child, &client, addr).await;
    who_am_i(client.channel(addr), "after-restart").await.expect("served after restart");
    child.kill().expect("stop fedx serve");
    child.wait().expect("reap fedx serve");

    let verify = fedx.ok(&["audit", "verify", "--checkpoint", checkpoint_file.to_str().expect("utf-8 path")]);
    assert!(verify.contains("valid"), "{verify}");
    let records = fedx.records();
    seqs_are_contiguous(&records);
    let n = head_before["seq"].as_u64().expect("seq") as usize;
    assert_eq!(records[n - 1], head_before, "records before the restart are unchanged");
    let new_ids: Vec<&str> = records[n..].iter().map(|r| r["request_id"].as_str().expect("id")).collect();
    assert!(new_ids.contains(&after_id.as_str()) && new_ids.contains(&"after-restart"), "{new_ids:?}");
    assert_eq!(records[n]["prev_hash"], head_before["record_hash"], "the chain continues across the crash");

    // And the verifier is not a rubber stamp: alter one record and it names it.
    let bad_seq = (n / 2).max(1);
    let database_url = fedx.database_url.clone().unwrap_or_else(|| {
        format!("sqlite://{}?mode=rw", fedx.root().join("data").join("fedx.db").display())
    });
    let store = fedx_gateway::store::Store::open(&database_url).await.expect("open the store");
    sqlx::query(&format!("UPDATE audit_records SET cert_serial = 'ffff' WHERE seq = {bad_seq}"))
        .execute(store.pool())
        .await
        .expect("tamper");
    store.close().await;
    let out = fedx.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "verify must fail on a tampered log: {out:?}");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("first bad seq {bad_seq}")), "{text}");

    eprintln!(
        "crash test: {} calls answered before SIGKILL, {} records after restart, {:.1} s",
        answered.len(),
        records.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_log_survives_sigkill_with_calls_in_flight() {
    crash_and_restart(Fedx::new(None)).await;
}

fn pg_admin_url() -> String {
    std::env::var("FEDX_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_log_survives_sigkill_with_calls_in_flight() {
    let admin_url = pg_admin_url();
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(e) if std::env::var("FEDX_REQUIRE_PG").is_ok_and(|v| v == "1") => {
            panic!("PostgreSQL required (FEDX_REQUIRE_PG=1) but unreachable: {e}")
        }
        Err(e) => {
            eprintln!("skipping PostgreSQL crash test: server unreachable ({e})");
            return;
        }
    };
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let name = format!("fedx_crash_{}_{:x}", std::process::id(), nanos & 0xffff_ffff_ffff);
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    let server = admin_url.rsplit_once('/').map(|(server, _)| server.to_owned()).unwrap_or(admin_url.clone());
    let url = format!("{server}/{name}");

    let outcome = tokio::spawn(crash_and_restart(Fedx::new(Some(url)))).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop database");
    let _ = admin.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
