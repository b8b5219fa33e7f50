//! The closed-loop client: `concurrency` tasks, each sending its next call as soon as the last is
//! answered, over a shared set of HTTP/2 connections. A scenario warms up, then is measured for a fixed
//! time; only calls that complete inside the measured window count. Latency is from just before the call
//! is handed to tonic to the decoded response (for BatchVerify: from an item being queued on its stream
//! to its answer), in microseconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedx_proto::v1 as pb;
use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::workload::{self, Pool};

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What one call produced: labels to count (a resolution status, verdicts), or the gRPC error.
pub type CallResult = Result<Vec<&'static str>, tonic::Status>;
/// A unary call for (task number, call number): the task picks its connection, the number the subject.
pub type Call = Arc<dyn Fn(usize, usize) -> BoxFuture<'static, CallResult> + Send + Sync>;

/// Counts and latencies of one task, merged over all tasks at the end.
pub struct Tally {
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    /// gRPC code name → count (per item for BatchVerify).
    pub errors: BTreeMap<String, u64>,
    /// Outcome labels of successful calls → count.
    pub outcomes: BTreeMap<String, u64>,
    /// BatchVerify streams completed inside the window.
    pub streams: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            streams: 0,
        }
    }

    fn record(&mut self, started: Instant, result: &CallResult) {
        match result {
            Ok(labels) => {
                self.ok += 1;
                self.latency_us.saturating_record(started.elapsed().as_micros().max(1) as u64);
                for label in labels {
                    *self.outcomes.entry((*label).to_owned()).or_default() += 1;
                }
            }
            Err(status) => self.error(code_name(status.code())),
        }
    }

    fn error(&mut self, code: String) {
        *self.errors.entry(code).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.latency_us.add(&other.latency_us).expect("same histogram bounds");
        self.ok += other.ok;
        self.streams += other.streams;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }
}

pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

/// Shared phase of a scenario's tasks.
#[derive(Clone)]
pub struct Phase(Arc<AtomicU8>);

impl Phase {
    fn new() -> Phase {
        Phase(Arc::new(AtomicU8::new(WARMUP)))
    }
    fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }
    fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::Release);
    }
}

/// A running scenario: its tasks, and the switch between warm-up, measurement and stop.
pub struct Run {
    phase: Phase,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Run {
    /// `concurrency` tasks calling `call` in a closed loop.
    pub fn unary(concurrency: usize, call: Call) -> Run {
        let phase = Phase::new();
        let counter = Arc::new(AtomicUsize::new(0));
        let tasks = (0..concurrency)
            .map(|task| {
                let (call, phase, counter) = (call.clone(), phase.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::new();
                    while phase.get() != STOP {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let started = Instant::now();
                        let result = call(task, n).await;
                        if phase.get() == MEASURE {
                            tally.record(started, &result);
                        }
                    }
                    tally
                })
            })
            .collect();
        Run { phase, tasks }
    }

    /// `streams` tasks, each sending BatchVerify streams of `items` items with at most `window` unanswered.
    pub fn batch(channels: &[Channel], pool: Pool, streams: usize, items: usize, window: usize) -> Run {
        let phase = Phase::new();
        let counter = Arc::new(AtomicUsize::new(0));
        let tasks = (0..streams)
            .map(|task| {
                let channel = channels[task % channels.len()].clone();
                let (pool, phase, counter) = (pool.clone(), phase.clone(), counter.clone());
                tokio::spawn(batch_task(channel, pool, phase, counter, items.max(1), window.max(1)))
            })
            .collect();
        Run { phase, tasks }
    }

    pub fn start_measuring(&self) {
        self.phase.set(MEASURE);
    }

    /// Stops counting: calls completing from now on are not counted, and tasks send no new ones.
    pub fn halt(&self) {
        self.phase.set(STOP);
    }

    /// Waits for the tasks to finish their current call (at most 60 s) and merges their tallies.
    pub async fn join(self) -> Tally {
        self.halt();
        let mut total = Tally::new();
        for task in self.tasks {
            match tokio::time::timeout(Duration::from_secs(60), task).await {
                Ok(Ok(tally)) => total.merge(tally),
                Ok(Err(e)) => total.error(format!("client task failed: {e}")),
                Err(_) => total.error("client task did not stop within 60 s".into()),
            }
        }
        total
    }
}

async fn batch_task(
    channel: Channel,
    pool: Pool,
    phase: Phase,
    counter: Arc<AtomicUsize>,
    items: usize,
    window: usize,
) -> Tally {
    type VerifyClient = pb::verification_service_client::VerificationServiceClient<Channel>;
    let mut client = VerifyClient::new(channel);
    let mut tally = Tally::new();
    let item = |i: usize| {
        let person = &pool[counter.fetch_add(1, Ordering::Relaxed) % pool.len()];
        pb::BatchVerifyRequest { item_id: i.to_string(), request: Some(workload::verify_request(person)) }
    };
    while phase.get() != STOP {
        let (tx, rx) = mpsc::channel::<pb::BatchVerifyRequest>(window);
        let mut sent_at = Vec::with_capacity(items);
        while sent_at.len() < window.min(items) {
            let next = item(sent_at.len());
            sent_at.push(Instant::now());
            let _ = tx.send(next).await;
        }
        let mut tx = Some(tx);
        if sent_at.len() == items {
            tx = None;
        }
        let mut answers = match client.batch_verify(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                if phase.get() == MEASURE {
                    tally.error(code_name(status.code()));
                }
                continue;
            }
        };
        let mut answered = 0;
        loop {
            if phase.get() == STOP {
                return tally;
            }
            match answers.message().await {
                Ok(Some(answer)) => {
                    answered += 1;
                    let started = answer.item_id.parse::<usize>().ok().and_then(|i| sent_at.get(i).copied());
                    if phase.get() == MEASURE {
                        match (answer.outcome, started) {
                            (Some(pb::batch_verify_response::Outcome::Result(result)), Some(started)) => {
                                tally.record(started, &Ok(verdicts(&result)));
                            }
                            (Some(pb::batch_verify_response::Outcome::Error(error)), _) => {
                                tally.error(code_name(tonic::Code::from(error.code)));
                            }
                            _ => tally.error("MALFORMED_ANSWER".into()),
                        }
                    }
                    if let Some(sender) = &tx {
                        let next = item(sent_at.len());
                        sent_at.push(Instant::now());
                        let _ = sender.send(next).await;
                        if sent_at.len() == items {
                            tx = None;
                        }
                    }
                }
                Ok(None) => {
                    if phase.get() == MEASURE {
                        if answered < items {
                            tally.error("STREAM_ENDED_EARLY".into());
                        } else {
                            tally.streams += 1;
                        }
                    }
                    break;
                }
                Err(status) => {
                    if phase.get() == MEASURE {
                        tally.error(code_name(status.code()));
                    }
                    break;
                }
            }
        }
    }
    tally
}

/// The verdict of each claim, as counted outcome labels.
pub fn verdicts(response: &pb::JointVerifyResponse) -> Vec<&'static str> {
    response
        .results
        .iter()
        .map(|r| pb::Verdict::try_from(r.verdict).map(|v| v.as_str_name()).unwrap_or("VERDICT_UNKNOWN"))
        .collect()
}

/// Measures a scenario: warm-up, then `duration` of measurement, returning the tally and the measured
/// wall time. `around` is called right before and right after the measured window (CPU and counter
/// snapshots).
pub async fn measure<F, S>(
    run: Run,
    warmup: Duration,
    duration: Duration,
    mut around: F,
) -> (Tally, Duration, S, S)
where
    F: FnMut() -> BoxFuture<'static, S>,
{
    tokio::time::sleep(warmup).await;
    let before = around().await;
    let started = Instant::now();
    run.start_measuring();
    tokio::time::sleep(duration).await;
    run.halt();
    let elapsed = started.elapsed();
    let after = around().await;
    (run.join().await, elapsed, before, after)
}
