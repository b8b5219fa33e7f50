//! The real `fedx` binary as a separate process: one data directory, PKI directory and store shared by
//! the administrators' commands (`fedx certs …`, `fedx audit …`) and by any number of `fedx serve`
//! processes, driven over mTLS by [`Client`]s holding certificates the CLI issued.
//!
//! A suite writes `mod support;` and `use support::process::{…};`. Gateways started with
//! [`Fedx::serve`] are killed when their [`Server`] is dropped (also when a test panics), and
//! [`with_fresh_pg_database`] drops its database even when the test panics.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fedx_proto::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{Backend, Db};

pub type GatewayClient = pb::gateway_service_client::GatewayServiceClient<Channel>;

/// The `fedx` binary on one data directory, PKI directory and store (and optionally a configuration
/// file shared by every command and gateway).
pub struct Fedx {
    dir: tempfile::TempDir,
    database_url: Option<String>,
    config: Option<PathBuf>,
}

impl Fedx {
    /// `database_url` is passed as `--database-url` to every command; `None`: the configuration's (by
    /// default a SQLite file in the data directory).
    pub fn new(database_url: Option<String>) -> Fedx {
        Fedx { dir: tempfile::tempdir().expect("temp dir"), database_url, config: None }
    }

    /// Writes `toml` to `<root>/fedx.toml` and passes it as `--config` to every command from now on.
    /// The data and PKI directories stay the test directory's (flags override the file).
    pub fn with_config(mut self, toml: &str) -> Fedx {
        let path = self.root().join("fedx.toml");
        std::fs::write(&path, toml).expect("write the configuration file");
        self.config = Some(path);
        self
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The URL given to every command with `--database-url`, if any.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.root().join("pki")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fedx"));
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        command.arg("--data-dir").arg(self.data_dir()).arg("--pki-dir").arg(self.pki_dir());
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        command
            .args(args)
            .env_remove("FEDX_CONFIG")
            .env_remove("FEDX_DATABASE_URL")
            .env_remove("FEDX_SIGNING_KEY_FILE")
            // Several gateways run at once: each on its own metrics port.
            .env("FEDX_ADMIN_LISTEN", "127.0.0.1:0")
            .env("FEDX_LOG", "warn");
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("fedx runs")
    }

    /// Runs a command that must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
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

    /// `fedx serve` on a free loopback port, logging to `<root>/<name>.log`.
    pub fn serve(&self, name: &str) -> Server {
        let addr = free_port();
        let log = std::fs::File::create(self.log_path(name)).expect("log file");
        let child = self
            .command(&["serve", "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("fedx serve starts");
        Server { child, addr, name: name.to_owned() }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.root().join(format!("{name}.log"))
    }

    pub fn server_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Every record, via `fedx audit query --format json`, in sequence order.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.ok(&["audit", "query", "--format", "json", "--limit", "1000000"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// `fedx certs issue --dept <dept> --role <role>`: the certificate as the department would hold it.
    pub fn issue(&self, dept: &str, role: &str) -> Client {
        let out = self.ok(&["certs", "issue", "--dept", dept, "--role", role]);
        let serial = out
            .lines()
            .find_map(|l| l.strip_prefix("issued"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("issue prints the serial: {out}"))
            .to_owned();
        let pki = self.pki_dir();
        let read =
            |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        Client {
            ca_pem: read(pki.join("ca.crt.pem")),
            cert_pem: read(pki.join(format!("issued/{dept}-{role}-{serial}.crt.pem"))),
            key_pem: read(pki.join(format!("issued/{dept}-{role}-{serial}.key.pem"))),
            serial,
        }
    }
}

/// A running `fedx serve`; killed (SIGKILL) and reaped when dropped, unless it has exited already.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub name: String,
}

impl Server {
    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL fedx serve");
        self.child.wait().expect("reap fedx serve");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address whose port was free a moment ago.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// A department's certificate and key, and the fedx CA to check the gateway with.
#[derive(Clone)]
pub struct Client {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Serial number (lower-case hex), as `fedx certs issue` printed it.
    pub serial: String,
}

impl Client {
    /// A channel to the gateway at `addr` presenting this certificate. Connects lazily (TLS failures
    /// surface on the first call); each channel is its own connection.
    pub fn channel(&self, addr: SocketAddr) -> Channel {
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

/// A request carrying `x-request-id`, so that its exchange record can be found.
pub fn with_request_id<T>(message: T, request_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", request_id.parse().expect("ascii request id"));
    request
}

/// GatewayService.WhoAmI with `request_id`; checks the response echoes it.
pub async fn who_am_i(channel: Channel, request_id: &str) -> Result<pb::WhoAmIResponse, tonic::Status> {
    let response =
        GatewayClient::new(channel).who_am_i(with_request_id(pb::WhoAmIRequest {}, request_id)).await?;
    let echoed = response.metadata().get("x-request-id").and_then(|v| v.to_str().ok());
    assert_eq!(echoed, Some(request_id), "the response carries the request id");
    Ok(response.into_inner())
}

/// Calls WhoAmI until one succeeds (the gateway is up); returns the id of the call that did.
pub async fn wait_until_serving(fedx: &Fedx, server: &mut Server, client: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let name = server.name.clone();
    for attempt in 0.. {
        if let Some(status) = server.child.try_wait().expect("child status") {
            panic!("fedx serve exited with {status}: {}", fedx.server_log(&name));
        }
        let id = format!("{name}-ready-{attempt}");
        if who_am_i(client.channel(server.addr), &id).await.is_ok() {
            return id;
        }
        assert!(Instant::now() < deadline, "fedx serve not answering after 20 s: {}", fedx.server_log(&name));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// Records numbered 1, 2, 3, … in order, each linked to the one before.
pub fn seqs_are_contiguous(records: &[serde_json::Value]) {
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"].as_u64(), Some(i as u64 + 1), "seq gap or disorder at position {i}: {r}");
        if i > 0 {
            assert_eq!(r["prev_hash"], records[i - 1]["record_hash"], "chain broken at seq {}", i + 1);
        }
    }
}

/// Runs `test` with the URL of a fresh PostgreSQL database on `FEDX_TEST_PG_URL` (see the support
/// module), dropped afterwards even if the test panics (the panic is then resumed). When the server is
/// unreachable: a failure with `FEDX_REQUIRE_PG=1`, else a skip with a message.
pub async fn with_fresh_pg_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = match Db::create(Backend::Postgres).await {
        Ok(Some(db)) => db,
        Ok(None) => return, // skipped, with a message
        Err(e) => panic!("{e:#}"),
    };
    let outcome = tokio::spawn(test(db.url.clone())).await;
    db.drop_database().await.expect("drop database");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
