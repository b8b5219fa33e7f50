//! The real `fedx` binary: its configuration for the run, administrative commands (`certs`, `sources
//! seed`), and `fedx serve` as a child process — started, checked for health, scraped, stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `fedx` binary with the run's configuration file.
pub struct Fedx {
    pub bin: PathBuf,
    pub config: PathBuf,
}

impl Fedx {
    /// The `fedx` next to this executable (both come from `cargo build --release -p fedx-gateway`).
    pub fn locate() -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe().context("locating fedx-bench")?;
        let bin = exe.with_file_name(format!("fedx{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            bail!(
                "{} not found: build both binaries with `cargo build --release -p fedx-gateway`",
                bin.display()
            );
        }
        Ok(bin)
    }

    /// A `fedx` command on the run's configuration, with no `FEDX_*` or `OTEL_*` variable of the caller's
    /// environment (they would override the file), logging warnings only.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("FEDX_") || key.starts_with("OTEL_") {
                command.env_remove(key.as_ref());
            }
        }
        command.arg("--config").arg(&self.config).args(args).env("FEDX_LOG", "warn");
        command
    }

    /// Runs a command to completion and returns its standard output; its standard error (a progress
    /// bar, warnings) goes to ours.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(args)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "fedx {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Issues a consumer certificate for `dept`; returns the certificate and key files.
    pub fn issue_consumer(&self, dept: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let out = self.ok(&["certs", "issue", "--dept", dept, "--role", "consumer", "--days", "7"])?;
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .map(PathBuf::from)
                .with_context(|| format!("`fedx certs issue` printed no {name} line: {out}"))
        };
        Ok((field("cert ")?, field("key ")?))
    }
}

/// What the run's configuration file says.
pub struct RunConfig<'a> {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: &'a Path,
    pub pki_dir: &'a Path,
    pub store_url: &'a str,
    pub sources_postgres_url: Option<&'a str>,
    pub workers: u64,
    pub resolution_cache: bool,
    pub concurrency: usize,
}

/// Limits lifted so that the benchmark measures the work, not the quotas: what the report says.
pub const LIMITS_NOTE: &str = "[limits] per_second = 1e6, burst = 1e6, max_concurrent = 100000; \
harvest guard 100,000,000 subjects per hour and per day (still evaluated on every call, never refusing)";

impl RunConfig<'_> {
    /// The configuration as TOML. Everything not set here keeps the shipped default — notably the
    /// exchange log: durable (SQLite `synchronous = FULL`, PostgreSQL `synchronous_commit = on`), group
    /// commit of up to 2,048 records.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        use toml::{Table, Value};
        let table = |pairs: Vec<(&str, Value)>| -> Value {
            Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        };
        let path = |p: &Path| Value::String(p.display().to_string());
        let mut root = Table::new();
        root.insert("listen_addr".into(), Value::String(self.listen.to_string()));
        root.insert("data_dir".into(), path(self.data_dir));
        root.insert("database_url".into(), Value::String(self.store_url.to_owned()));
        root.insert("pki".into(), table(vec![("dir", path(self.pki_dir))]));
        if let Some(url) = self.sources_postgres_url {
            root.insert("sources".into(), table(vec![("postgres_url", Value::String(url.to_owned()))]));
        }
        let mut identity = vec![("population", Value::Integer(self.workers as i64))];
        if !self.resolution_cache {
            identity.push(("cache_capacity", Value::Integer(0)));
        }
        root.insert("identity".into(), table(identity));
        root.insert(
            "limits".into(),
            table(vec![
                ("per_second", Value::Float(1_000_000.0)),
                ("burst", Value::Integer(1_000_000)),
                ("max_concurrent", Value::Integer(100_000)),
                (
                    "harvest",
                    table(vec![
                        ("subjects_per_hour", Value::Integer(100_000_000)),
                        ("subjects_per_day", Value::Integer(100_000_000)),
                    ]),
                ),
            ]),
        );
        root.insert(
            "resilience".into(),
            table(vec![("max_in_flight", Value::Integer((self.concurrency * 4).max(2048) as i64))]),
        );
        root.insert(
            "telemetry".into(),
            table(vec![
                ("admin_listen", Value::String(self.admin.to_string())),
                ("log_filter", Value::String("warn".into())),
            ]),
        );
        Ok(toml::to_string(&root)?)
    }
}

/// A free loopback port (bound, then released for the gateway to take).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// `fedx serve` running as a child process.
pub struct Gateway {
    child: Child,
    pub pid: u32,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Gateway {
    pub fn spawn(fedx: &Fedx, admin: SocketAddr, log: PathBuf) -> anyhow::Result<Gateway> {
        let file = std::fs::File::create(&log)?;
        let child = fedx
            .command(&["serve"])
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting fedx serve")?;
        Ok(Gateway { pid: child.id(), child, admin, log })
    }

    /// Fails with the log when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("fedx serve exited with {status}:\n{}", self.log_tail());
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM (the gateway drains, flushes the exchange log and exits), SIGKILL after 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("fedx serve still running 30 s after SIGTERM: killing it");
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The Prometheus text of the gateway's admin port.
pub async fn scrape(admin: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(admin).await?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (_, body) = text.split_once("\r\n\r\n").context("no HTTP body from /metrics")?;
    Ok(body.to_owned())
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Never leave a gateway behind when the benchmark fails half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Gateway counters read from `/metrics` (sums over every label set).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub source_calls: f64,
    pub audit_records: f64,
    pub audit_commits: f64,
}

impl Counters {
    pub fn parse(text: &str) -> Counters {
        Counters {
            source_calls: sum(text, "fedx_source_duration_seconds_count"),
            audit_records: sum(text, "fedx_audit_records_total"),
            audit_commits: sum(text, "fedx_audit_commits_total"),
        }
    }
}

/// The sum of every sample of metric `name` in Prometheus text.
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_of_one_metric_only() {
        let text = "# TYPE fedx_audit_records_total counter\n\
                    fedx_audit_records_total 12\n\
                    fedx_audit_records_total_other 5\n\
                    fedx_source_duration_seconds_count{department=\"tax\",operation=\"lookup\"} 3\n\
                    fedx_source_duration_seconds_count{department=\"education\",operation=\"lookup\"} 4\n";
        let c = Counters::parse(text);
        assert_eq!(c.audit_records, 12.0);
        assert_eq!(c.source_calls, 7.0);
        assert_eq!(c.audit_commits, 0.0);
    }

    #[test]
    fn config_is_valid_toml_with_the_lifted_limits() {
        let dir = Path::new("/tmp/x");
        let config = RunConfig {
            listen: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:2".parse().unwrap(),
            data_dir: dir,
            pki_dir: dir,
            store_url: "sqlite:///tmp/x/fedx.db?mode=rwc",
            sources_postgres_url: None,
            workers: 10,
            resolution_cache: false,
            concurrency: 64,
        };
        let parsed: toml::Table = toml::from_str(&config.to_toml().unwrap()).unwrap();
        assert_eq!(parsed["limits"]["per_second"].as_float(), Some(1_000_000.0));
        assert_eq!(parsed["identity"]["cache_capacity"].as_integer(), Some(0));
    }
}
