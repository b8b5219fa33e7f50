//! `fedx sources …`: loading department data — synthetic populations for trials and benchmarks, and
//! CSV exports from the departments' own systems.

use std::path::PathBuf;

use clap::Subcommand;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use fedx_adapters::{
    import_csv, migrate_schema, seed, Department, ImportError, ImportMode, NoiseConfig, SeedOptions,
};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Generate a synthetic population into all five department databases, with the ground truth
    /// (which source records belong to which person) written to a JSON Lines file.
    Seed {
        /// Number of workers.
        #[arg(long, default_value_t = 10_000)]
        workers: u64,
        /// Random seed; the same seed and worker count give the same data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Ground-truth output file [default: <data-dir>/truth.jsonl].
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Noise rates as a TOML file (fields of the generator's NoiseConfig; missing ones keep defaults).
        #[arg(long)]
        noise: Option<PathBuf>,
        /// Generate clean data (no noise at all).
        #[arg(long, conflicts_with = "noise")]
        clean: bool,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Import one table of a department's CSV export, validating every row. By default any bad row
    /// aborts the import and leaves the database unchanged; with --skip-bad the good rows are imported
    /// and the bad ones written, with line number and reason, to the given file.
    Import {
        /// Department code: public_security, tax, social_insurance, education, industry_commerce.
        #[arg(long)]
        dept: String,
        /// Table name as documented in adapters/SOURCES.md.
        #[arg(long)]
        table: String,
        /// The CSV file (UTF-8, header row with the documented column names).
        #[arg(long)]
        csv: PathBuf,
        /// Import the good rows and write rejected rows to this file.
        #[arg(long)]
        skip_bad: Option<PathBuf>,
    },
    /// Bring existing department databases up to this version's schema (missing tables and indexes;
    /// rows untouched). Run after upgrading fedx.
    Migrate,
}

pub async fn run(command: SourcesCommand, config: Config) -> anyhow::Result<()> {
    let locations = config.source_locations();
    match command {
        SourcesCommand::Seed { workers, seed: rng_seed, truth, noise, clean, quiet } => {
            let noise = match (noise, clean) {
                (_, true) => NoiseConfig::none(),
                (Some(path), false) => toml::from_str(&std::fs::read_to_string(&path)?)
                    .map_err(|e| anyhow::anyhow!("noise file {}: {e}", path.display()))?,
                (None, false) => NoiseConfig::default(),
            };
            let truth = truth.unwrap_or_else(|| config.data_dir.join("truth.jsonl"));
            let options = SeedOptions { workers, seed: rng_seed, noise, progress: !quiet };
            let report = seed(&options, &locations, &truth).await?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header(["department", "table", "rows"]);
            for dept in &report.depts {
                for (name, rows) in &dept.rows {
                    table.add_row([dept.dept.code().to_owned(), name.to_string(), rows.to_string()]);
                }
            }
            println!("{table}");
            let secs = report.elapsed.as_secs_f64();
            println!(
                "{} workers, {} enterprises, {} rows in {secs:.1} s ({:.0} rows/s); truth: {}",
                report.workers,
                report.enterprises,
                report.total_rows(),
                report.total_rows() as f64 / secs.max(1e-9),
                report.truth_path.display()
            );
        }
        SourcesCommand::Migrate => {
            for dept in Department::ALL {
                migrate_schema(dept, &locations.for_dept(dept)).await?;
                println!("{dept}: schema up to date");
            }
        }
        SourcesCommand::Import { dept, table, csv, skip_bad } => {
            let dept: Department = dept.parse().map_err(|e| anyhow::anyhow!("--dept: {e}"))?;
            let mode = match skip_bad {
                Some(rejects) => ImportMode::SkipBad { rejects },
                None => ImportMode::AllOrNothing,
            };
            match import_csv(dept, &table, &csv, &locations.for_dept(dept), mode).await {
                Ok(report) => {
                    println!(
                        "{} {}: {} rows read, {} imported, {} rejected",
                        report.dept,
                        report.table,
                        report.rows_read,
                        report.rows_imported,
                        report.rows_rejected
                    );
                    if let Some(path) = report.rejects_path {
                        println!("rejected rows written to {}", path.display());
                    }
                }
                Err(ImportError::BadRows { rows, total }) => {
                    for row in &rows {
                        eprintln!("line {}: {}", row.line, row.reason);
                    }
                    if total as usize > rows.len() {
                        eprintln!("… and {} more", total as usize - rows.len());
                    }
                    anyhow::bail!(
                        "{total} bad row(s) in {}; nothing was imported (use --skip-bad FILE to import the good rows)",
                        csv.display()
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
