//! The scenarios: the unary call each one makes, and measuring one — warm-up, the measured window, and
//! what is read around it (CPU time, the gateway's counters, its memory).

use std::sync::Arc;
use std::time::Duration;

use fedx_proto::v1 as pb;
use futures::FutureExt;
use tonic::transport::Channel;

use crate::cli::Scenario;
use crate::driver::{self, Call, Run};
use crate::fedx::{self, Counters, Gateway};
use crate::procfs::{self, mib, RssSampler};
use crate::report::{self, ScenarioResult};
use crate::workload::{self, Pool};

/// CPU and counters read around the measured window.
#[derive(Clone, Copy)]
struct Snapshot {
    gateway_cpu: Option<f64>,
    client_cpu: Option<f64>,
    machine_busy: Option<f64>,
    counters: Option<Counters>,
}

pub async fn measure(
    gateway: &Gateway,
    run: Run,
    scenario: Scenario,
    warmup: Duration,
    duration: Duration,
    sampler: &RssSampler,
) -> ScenarioResult {
    let (pid, admin) = (gateway.pid, gateway.admin);
    let snapshot = move || {
        async move {
            let counters = fedx::scrape(admin).await.ok().map(|text| Counters::parse(&text));
            Snapshot {
                gateway_cpu: procfs::cpu_seconds(Some(pid)),
                client_cpu: procfs::cpu_seconds(None),
                machine_busy: procfs::machine_busy_seconds(),
                counters,
            }
        }
        .boxed()
    };
    let (tally, elapsed, before, after) = driver::measure(run, warmup, duration, snapshot).await;
    let peak = sampler.take_peak();
    // File mappings only grow while the gateway runs, so the Pss at the end of a scenario is its peak.
    let pss = procfs::smaps_bytes(pid, "Pss").unwrap_or(0);
    let seconds = elapsed.as_secs_f64();
    let cpu = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / seconds * 100.0);
    let counters = before.counters.zip(after.counters);
    let ok = tally.ok;
    let per_call = |d: f64| if ok > 0 { Some(d / ok as f64) } else { None };
    let h = &tally.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let errors: u64 = tally.errors.values().sum();
    ScenarioResult {
        scenario: scenario.name(),
        method: scenario.method(),
        unit: if scenario == Scenario::Batch { "items" } else { "calls" },
        measured_seconds: seconds,
        ok,
        per_second: ok as f64 / seconds,
        latency_ms: report::Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        },
        errors,
        resource_exhausted: tally.errors.get("ResourceExhausted").copied().unwrap_or(0),
        errors_by_code: tally.errors,
        ratio_to_health: None,
        gateway_cpu_percent: cpu(before.gateway_cpu, after.gateway_cpu),
        client_cpu_percent: cpu(before.client_cpu, after.client_cpu),
        machine_cpu_percent: cpu(before.machine_busy, after.machine_busy),
        peak_rss_mib: mib(peak.total),
        peak_rss_anon_mib: mib(peak.anon),
        pss_mib: mib(pss),
        source_calls_per_call: counters.and_then(|(b, a)| per_call(a.source_calls - b.source_calls)),
        audit_records_per_commit: counters.and_then(|(b, a)| {
            let commits = a.audit_commits - b.audit_commits;
            (commits > 0.0).then(|| (a.audit_records - b.audit_records) / commits)
        }),
        outcomes: tally.outcomes,
        streams: (scenario == Scenario::Batch).then_some(tally.streams),
    }
}

pub fn health_call(channels: Vec<Channel>) -> Call {
    Arc::new(move |task, _| {
        let mut client =
            tonic_health::pb::health_client::HealthClient::new(channels[task % channels.len()].clone());
        async move {
            client
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await
                .map(|_| Vec::new())
        }
        .boxed()
    })
}

pub fn resolve_call(channels: Vec<Channel>, pool: Pool) -> Call {
    type Client = pb::identity_service_client::IdentityServiceClient<Channel>;
    Arc::new(move |task, n| {
        let mut client = Client::new(channels[task % channels.len()].clone());
        let request = workload::resolve_request(&pool[n % pool.len()]);
        async move {
            let response = client.resolve_identity(request).await?.into_inner();
            let status =
                pb::ResolutionStatus::try_from(response.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
            Ok(vec![status])
        }
        .boxed()
    })
}

pub fn view_call(channels: Vec<Channel>, pool: Pool) -> Call {
    type Client = pb::worker_view_service_client::WorkerViewServiceClient<Channel>;
    Arc::new(move |task, n| {
        let mut client = Client::new(channels[task % channels.len()].clone());
        let request = workload::view_request(&pool[n % pool.len()]);
        async move {
            let view = client.get_worker_view(request).await?.into_inner();
            Ok(vec![if view.partial { "PARTIAL_VIEW" } else { "COMPLETE_VIEW" }])
        }
        .boxed()
    })
}

pub fn verify_call(channels: Vec<Channel>, pool: Pool) -> Call {
    type Client = pb::verification_service_client::VerificationServiceClient<Channel>;
    Arc::new(move |task, n| {
        let mut client = Client::new(channels[task % channels.len()].clone());
        let request = workload::verify_request(&pool[n % pool.len()]);
        async move {
            let response = client.joint_verify(request).await?.into_inner();
            Ok(driver::verdicts(&response))
        }
        .boxed()
    })
}
