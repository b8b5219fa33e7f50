//! `fedx identity …`: evaluating identity resolution against a generator's ground truth.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use fedx_adapters::SourceLocationSet;

use crate::config::Config;
use crate::identity::eval::{evaluate, read_truth, EvalMode};
use crate::identity::{KeyRing, Model, Resolver};
use crate::sources::SourceSet;

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Resolve every person of a ground-truth file (JSON Lines from `fedx sources seed`) and print
    /// link precision, recall, F1, wrong-person links and the count of ambiguous answers.
    Eval {
        /// Ground-truth file.
        #[arg(long)]
        truth: PathBuf,
        /// What the requester knows: `id-name` (true citizen ID + registered name) or `name-birth`.
        #[arg(long, default_value = "id-name")]
        mode: EvalMode,
        /// SQLite source directory (`<dept>.db` files) [default: from the configuration].
        #[arg(long)]
        sources_dir: Option<PathBuf>,
        /// Evaluate only the first N people.
        #[arg(long)]
        limit: Option<usize>,
        /// Queries in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Population for name term frequencies [default: the number of people in the truth file,
        /// which is the public-security person count of a generated dataset].
        #[arg(long)]
        population: Option<u64>,
    },
}

pub async fn run(command: IdentityCommand, config: Config) -> anyhow::Result<()> {
    match command {
        IdentityCommand::Eval { truth, mode, sources_dir, limit, concurrency, population } => {
            let mut truths = read_truth(&truth)?;
            let total = truths.len() as u64;
            if let Some(n) = limit {
                truths.truncate(n);
            }
            let locations = match sources_dir {
                Some(dir) => SourceLocationSet::SqliteDir(dir),
                None => config.source_locations(),
            };
            let mut identity = config.identity.clone();
            identity.population = population.unwrap_or(total).max(1);
            identity.cache_capacity = 0;
            // Evaluation never touches the gateway's real key: references are not compared, only links.
            let keys = KeyRing::single("eval", &rand::random::<[u8; 32]>())?;
            let sources = SourceSet::open(&locations, config.sources.timeout).await?;
            let resolver = Resolver::new(Model::new(identity.clone()), sources, Arc::new(keys));
            eprintln!(
                "resolving {} people ({} mode, population {}, {concurrency} in flight)…",
                truths.len(),
                mode.code(),
                identity.population
            );
            let r = evaluate(&resolver, &truths, mode, concurrency).await;
            println!("identity resolution evaluation: {} ({} mode)", truth.display(), mode.code());
            println!("  queries                   {}", r.queries);
            println!("  resolved                  {}", r.resolved);
            println!("  ambiguous                 {}", r.ambiguous);
            println!("  not found                 {}", r.not_found);
            println!("  errors                    {}", r.errors);
            println!("  wrong-person resolutions  {}", r.wrong_person_resolutions);
            println!("  true links                {}", r.true_links);
            println!("  wrong-person links        {}", r.wrong_person_links);
            println!(
                "  missed links              {}  (of which left POSSIBLE: {})",
                r.missed_links, r.possible_links
            );
            println!("  link precision            {:.6}", r.precision());
            println!("  link recall               {:.6}", r.recall());
            println!("  link F1                   {:.6}", r.f1());
            for (dept, (tp, fp, missed)) in &r.per_dept {
                println!("    {dept:<18} linked {tp:>8}  wrong {fp:>5}  missed {missed:>6}");
            }
            let secs = r.elapsed.as_secs_f64();
            println!(
                "  elapsed                   {secs:.1} s ({:.0} queries/s)",
                r.queries as f64 / secs.max(1e-9)
            );
            let per_100k = r.wrong_person_links as f64 * 100_000.0 / (r.queries.max(1)) as f64;
            println!(
                "  targets (id-name): wrong-person links ≤ 1 per 100,000 queries [{per_100k:.2}], \
                 precision ≥ 0.999 [{:.6}], recall ≥ 0.99 [{:.6}]",
                r.precision(),
                r.recall()
            );
        }
    }
    Ok(())
}
