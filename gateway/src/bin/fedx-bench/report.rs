//! The results: one row per scenario, the targets of issue 10, a table for people and JSON for tools.

use std::collections::BTreeMap;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use serde::Serialize;

use crate::procfs::Machine;
use crate::setup::SourcesReport;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub started_at: String,
    pub git_revision: Option<String>,
    /// Whether the working tree had uncommitted changes.
    pub git_dirty: Option<bool>,
    pub machine: Machine,
    pub settings: Settings,
    pub sources: SourcesReport,
    pub consents: Option<ConsentReport>,
    pub scenarios: Vec<ScenarioResult>,
    pub gateway: GatewayMemory,
    pub targets: Vec<TargetCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub workers: u64,
    pub seed: u64,
    /// "sqlite" or "postgresql" (gateway store and sources alike).
    pub backend: &'static str,
    pub concurrency: usize,
    pub connections_per_department: usize,
    pub warmup_seconds: f64,
    pub duration_seconds: f64,
    pub client_threads: usize,
    /// Distinct workers the calls cycle over.
    pub pool: usize,
    pub resolution_cache: bool,
    pub batch_items_per_stream: usize,
    pub batch_window: usize,
    pub batch_streams: usize,
    pub limits: &'static str,
    pub audit: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsentReport {
    pub granted: usize,
    pub failed: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayMemory {
    /// Resident set size once the gateway was serving, before any scenario.
    pub rss_at_start_mib: f64,
    /// Highest VmRSS seen by the 100 ms sampler.
    pub peak_rss_sampled_mib: f64,
    /// Highest RssAnon (heap, stacks; no file-backed pages) seen by the sampler.
    pub peak_rss_anon_mib: f64,
    /// Highest Pss (every page once, however often the process maps it) at the end of a scenario.
    pub peak_pss_mib: f64,
    /// The kernel's high-water mark (VmHWM) at the end of the run.
    pub peak_rss_hwm_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: &'static str,
    pub method: &'static str,
    /// "calls", or "items" for BatchVerify.
    pub unit: &'static str,
    pub measured_seconds: f64,
    /// Successful calls (items) completed in the measured window.
    pub ok: u64,
    pub per_second: f64,
    /// Latency of successful calls (items), milliseconds.
    pub latency_ms: Latency,
    pub errors: u64,
    /// gRPC code name → count; RESOURCE_EXHAUSTED (rate limits, harvest guard) is among them.
    pub errors_by_code: BTreeMap<String, u64>,
    pub resource_exhausted: u64,
    /// per_second over the health baseline's in the same run.
    pub ratio_to_health: Option<f64>,
    /// CPU time over the measured window as a percentage of one core (200 % = both cores of two).
    pub gateway_cpu_percent: Option<f64>,
    pub client_cpu_percent: Option<f64>,
    /// Every process on the machine (gateway, client, PostgreSQL, anything else running), same unit.
    pub machine_cpu_percent: Option<f64>,
    /// Peak VmRSS of the gateway during the scenario (warm-up included), and of its RssAnon part.
    pub peak_rss_mib: f64,
    pub peak_rss_anon_mib: f64,
    /// Pss at the end of the scenario.
    pub pss_mib: f64,
    /// Department-source queries per successful call (item), from the gateway's metrics.
    pub source_calls_per_call: Option<f64>,
    /// Mean exchange-log group-commit size in the window.
    pub audit_records_per_commit: Option<f64>,
    /// Resolution statuses / verdicts of successful calls.
    pub outcomes: BTreeMap<String, u64>,
    /// BatchVerify streams completed in the window.
    pub streams: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

fn find<'a>(scenarios: &'a [ScenarioResult], name: &str) -> Option<&'a ScenarioResult> {
    scenarios.iter().find(|s| s.scenario == name)
}

/// The targets of issue 10 that this run can check, and, with an earlier run's JSON, the scaling target.
pub fn check_targets(
    scenarios: &[ScenarioResult],
    memory: &GatewayMemory,
    earlier: Option<&serde_json::Value>,
) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let mut ratio = |name: &str, label: &str, min: f64| {
        if let Some(ratio) = find(scenarios, name).and_then(|s| s.ratio_to_health) {
            out.push(TargetCheck {
                target: format!("{label} ≥ {:.0} % of health calls/s", min * 100.0),
                measured: format!("{:.1} %", ratio * 100.0),
                pass: ratio >= min,
            });
        }
    };
    ratio("view", "GetWorkerView", 0.30);
    ratio("verify", "JointVerify (3 claims)", 0.30);
    ratio("resolve", "ResolveIdentity", 0.40);
    if let Some(view) = find(scenarios, "view") {
        out.push(TargetCheck {
            target: "GetWorkerView p99 ≤ 20 ms".into(),
            measured: format!("{:.2} ms", view.latency_ms.p99),
            pass: view.latency_ms.p99 <= 20.0,
        });
    }
    let peak = memory.peak_rss_hwm_mib.unwrap_or(memory.peak_rss_sampled_mib);
    out.push(TargetCheck {
        target: "gateway resident memory ≤ 256 MiB (VmHWM)".into(),
        measured: format!("{peak:.1} MiB"),
        pass: peak <= 256.0,
    });
    if memory.peak_pss_mib > 0.0 {
        out.push(TargetCheck {
            target: "the same, each mapped page counted once (peak Pss)".into(),
            measured: format!("{:.1} MiB", memory.peak_pss_mib),
            pass: memory.peak_pss_mib <= 256.0,
        });
    }
    if let Some(earlier) = earlier {
        let workers = earlier["settings"]["workers"].as_u64().unwrap_or(0);
        for s in scenarios.iter().filter(|s| s.scenario != "health") {
            let before = earlier["scenarios"]
                .as_array()
                .and_then(|all| all.iter().find(|e| e["scenario"] == s.scenario))
                .and_then(|e| e["per_second"].as_f64());
            if let Some(before) = before.filter(|b| *b > 0.0) {
                let relative = s.per_second / before;
                out.push(TargetCheck {
                    target: format!("{} {}/s within 20 % of the {workers}-worker run", s.method, s.unit),
                    measured: format!(
                        "{:.0} vs {before:.0} ({:+.1} %)",
                        s.per_second,
                        (relative - 1.0) * 100.0
                    ),
                    pass: relative >= 0.8,
                });
            }
        }
    }
    out
}

fn opt(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map(format).unwrap_or_else(|| "—".into())
}

pub fn table(report: &Report) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "scenario",
        "calls/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "vs health",
        "gateway CPU",
        "client CPU",
        "machine CPU",
        "peak RSS MiB (anon; Pss)",
        "source queries/call",
    ]);
    for s in &report.scenarios {
        let errors = if s.resource_exhausted > 0 {
            format!("{} ({} RESOURCE_EXHAUSTED)", s.errors, s.resource_exhausted)
        } else {
            s.errors.to_string()
        };
        let label = if s.unit == "items" { format!("{} — items/s", s.method) } else { s.method.to_owned() };
        table.add_row(vec![
            label,
            format!("{:.0}", s.per_second),
            format!("{:.2}", s.latency_ms.p50),
            format!("{:.2}", s.latency_ms.p90),
            format!("{:.2}", s.latency_ms.p99),
            errors,
            opt(s.ratio_to_health, |r| format!("{:.1} %", r * 100.0)),
            opt(s.gateway_cpu_percent, |c| format!("{c:.0} %")),
            opt(s.client_cpu_percent, |c| format!("{c:.0} %")),
            opt(s.machine_cpu_percent, |c| format!("{c:.0} %")),
            format!("{:.0} ({:.0}, {:.0})", s.peak_rss_mib, s.peak_rss_anon_mib, s.pss_mib),
            opt(s.source_calls_per_call, |c| format!("{c:.1}")),
        ]);
    }
    for i in 1..=11 {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.to_string()
}

pub fn targets_table(targets: &[TargetCheck]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(["target", "measured", "result"]);
    for t in targets {
        table.add_row([
            t.target.clone(),
            t.measured.clone(),
            if t.pass { "PASS" } else { "FAIL" }.to_owned(),
        ]);
    }
    table.to_string()
}

/// Everything a reader needs to interpret the table, printed above it.
pub fn header(report: &Report) -> String {
    let s = &report.settings;
    let m = &report.machine;
    let mut lines = vec![
        format!(
            "fedx-bench {} ({}{}), {}",
            report.started_at,
            report.git_revision.as_deref().unwrap_or("no git revision"),
            if report.git_dirty == Some(true) { ", uncommitted changes" } else { "" },
            m.cpu_model
        ),
        format!(
            "machine: {} cores, {} MiB, Linux {}, load average {:.2} before the run ({:.2} at its end, the benchmark's own \
             threads included)",
            m.cpus, m.memory_mib, m.kernel, m.load_start, m.load_end
        ),
        format!(
            "gateway: {} workers ({}), {} store and sources; audit {}",
            s.workers,
            if report.sources.reused { "reused" } else { "seeded now" },
            s.backend,
            s.audit
        ),
        format!("limits: {}", s.limits),
        format!(
            "client: closed loop, {} calls in flight over {} mTLS connections per department, {} runtime thread(s); \
             {} s warm-up + {} s measured per scenario; {} distinct workers; resolution cache {}",
            s.concurrency,
            s.connections_per_department,
            s.client_threads,
            s.warmup_seconds,
            s.duration_seconds,
            s.pool,
            if s.resolution_cache { "on (as shipped)" } else { "off" }
        ),
        format!(
            "BatchVerify: {} streams × {} unanswered items, {} items per stream; latency per item from queueing to answer",
            s.batch_streams, s.batch_window, s.batch_items_per_stream
        ),
    ];
    if let Some(c) = &report.consents {
        lines.push(format!(
            "consents for the view scenario: {} granted ({} failed) in {:.1} s, not measured",
            c.granted, c.failed, c.seconds
        ));
    }
    lines.join("\n")
}

pub fn footer(report: &Report) -> String {
    let g = &report.gateway;
    let mut lines = vec![format!(
        "gateway memory: {:.1} MiB resident at start; peaks: VmRSS {:.1} MiB (sampled every 100 ms), of which \
         anonymous {:.1} MiB (the rest file-backed: the binary and SQLite's memory-mapped database pages, counted \
         once per connection that maps them); Pss {:.1} MiB (each page once, read at the end of each scenario); \
         VmHWM {}",
        g.rss_at_start_mib,
        g.peak_rss_sampled_mib,
        g.peak_rss_anon_mib,
        g.peak_pss_mib,
        opt(g.peak_rss_hwm_mib, |m| format!("{m:.1} MiB"))
    )];
    for s in &report.scenarios {
        if !s.outcomes.is_empty() || !s.errors_by_code.is_empty() {
            let outcomes: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let errors: Vec<String> = s.errors_by_code.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let mut line = format!("{}: ", s.scenario);
            if !outcomes.is_empty() {
                line.push_str(&format!("outcomes {}", outcomes.join(", ")));
            }
            if !errors.is_empty() {
                line.push_str(&format!("; errors {}", errors.join(", ")));
            }
            if let Some(batch) = s.audit_records_per_commit {
                line.push_str(&format!("; {batch:.1} exchange records per commit"));
            }
            if let Some(streams) = s.streams {
                line.push_str(&format!("; {streams} streams completed"));
            }
            lines.push(line);
        }
    }
    lines.push(
        "targets (issue 10) are set for 1,000,000 workers, 64 calls in flight, durable audit on SQLite, this 2-core \
         machine; the check below applies them to this run as it is:"
            .into(),
    );
    lines.join("\n")
}
