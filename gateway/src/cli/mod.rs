//! The `fedx` command line: running the gateway and the administrators' and auditors' tools.

mod audit;
mod certs;
mod identity;
mod receipts;
mod serve;
mod sources;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(name = "fedx", version, about = "Federated data-exchange gateway between government departments")]
pub struct Cli {
    /// Configuration file (TOML); see deploy/fedx.example.toml.
    #[arg(long, global = true, env = "FEDX_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the embedded store and department sources [default: data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Gateway store URL (sqlite://… or postgres://…) [default: sqlite file in the data directory].
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// PKI directory (CA, CRL, server certificate, issued certificates) [default: certs/dev].
    #[arg(long, global = true)]
    pki_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Listen address, e.g. 0.0.0.0:7443.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the gateway on embedded defaults with a development PKI and demo certificates, creating
    /// whatever is missing on first run.
    Demo {
        /// Listen address.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Manage department certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Load department source data: synthetic populations and CSV exports.
    #[command(subcommand)]
    Sources(sources::SourcesCommand),
    /// Identity resolution tools: evaluation against a ground truth.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// The exchange log: query, verify, checkpoints, export, retention.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Signed verification receipts: check one offline, print the public keys to check them with.
    #[command(subcommand)]
    Receipts(receipts::ReceiptsCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the gateway store.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration (file, FEDX_* variables, flags) and print the result.
    Check,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Apply pending migrations to the gateway store.
    Migrate,
    /// List the store's migrations and whether each is applied. Exits with 1 when any is pending,
    /// failed, changed since it was applied, or unknown to this binary, so that a deployment step can wait
    /// for `fedx db migrate` or refuse to roll out.
    Status,
}

/// Entry point of the binary: parses arguments, runs, and turns errors into a message and exit code 1
/// (2 when `fedx receipts` could not read its input, as for usage errors, so that 1 means "not valid").
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime (the OTLP exporter's channel needs one); dropped before it, flushing spans.
    let _telemetry = {
        let _runtime = runtime.enter();
        init_telemetry(&cli)
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.is::<receipts::InputError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs (and, for `serve` and `demo`, trace export) from the file's `[telemetry]` section and the
/// environment; see [`crate::telemetry`]. A file that does not load is reported by the command itself.
fn init_telemetry(cli: &Cli) -> Option<crate::telemetry::TelemetryGuard> {
    let config =
        Config::load(cli.config.as_deref(), &Overrides::default()).map(|c| c.telemetry).unwrap_or_default();
    let export = matches!(cli.command, Command::Serve { .. } | Command::Demo { .. });
    match crate::telemetry::init(&config, export) {
        Ok(guard) => Some(guard),
        Err(e) => {
            eprintln!("warning: {e}; traces are not exported");
            crate::telemetry::init(&config, false).ok()
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let overrides = |listen: Option<SocketAddr>| Overrides {
        listen_addr: listen,
        database_url: cli.database_url.clone(),
        data_dir: cli.data_dir.clone(),
        pki_dir: cli.pki_dir.clone(),
    };
    let load = |listen| Config::load(cli.config.as_deref(), &overrides(listen));
    match cli.command {
        Command::Serve { listen } => serve::serve(load(listen)?).await,
        Command::Demo { listen } => serve::demo(load(listen)?).await,
        Command::Certs(command) => certs::run(command, load(None)?).await,
        Command::Sources(command) => sources::run(command, load(None)?).await,
        Command::Identity(command) => identity::run(command, load(None)?).await,
        Command::Audit(command) => audit::run(command, load(None)?).await,
        Command::Receipts(command) => receipts::run(command, || load(None)),
        Command::Config(ConfigCommand::Check) => {
            let config = load(None)?;
            println!("configuration is valid\n");
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Command::Db(DbCommand::Status) => {
            let config = load(None)?;
            let store = crate::store::Store::connect(&config.database_url()).await?;
            let status = store.migration_status().await;
            store.close().await;
            let status = status?;
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING).set_header(["version", "migration", "state"]);
            for m in &status {
                table.add_row([m.version.to_string(), m.description.clone(), m.state.as_str().to_owned()]);
            }
            println!("gateway store: {}\n{table}", redact_url(&config.database_url()));
            let behind = status.iter().filter(|m| m.state != crate::store::MigrationState::Applied).count();
            anyhow::ensure!(behind == 0, "{behind} migration(s) not applied as this binary expects");
            println!("up to date");
            Ok(())
        }
        Command::Db(DbCommand::Migrate) => {
            let config = load(None)?;
            crate::store::Store::open(&config.database_url()).await?;
            println!("gateway store migrated: {}", redact_url(&config.database_url()));
            Ok(())
        }
    }
}

/// Database URLs may carry a password; never print it.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://fedx:s3cret@db:5432/fedx"), "postgres://***@db:5432/fedx");
        assert_eq!(redact_url("sqlite://data/fedx.db"), "sqlite://data/fedx.db");
    }
}
