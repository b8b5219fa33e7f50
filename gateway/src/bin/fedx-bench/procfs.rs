//! What Linux says about the gateway process and the machine: resident memory (`/proc/<pid>/status`),
//! CPU time (`/proc/<pid>/stat`), cores, memory, load. Off Linux the readings are simply absent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ): 100 on every Linux ABI this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU time of a process (all threads), in seconds; `None` for the process itself means
/// `/proc/self`.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at state (field 3); utime and
    // stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// A `kB` field of `/proc/<pid>/smaps_rollup` (`Pss`), in bytes.
pub fn smaps_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory of a process: all of it (VmRSS), and its anonymous part (RssAnon: heap, stacks — not the
/// file pages SQLite maps from the databases, which the kernel can drop).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resident {
    pub total: u64,
    pub anon: u64,
}

/// Samples the gateway's resident memory every 100 ms: the peaks since the last [`RssSampler::take_peak`]
/// and over the whole run. (Pss, which counts a page mapped by several SQLite connections once, is read
/// separately and rarely: walking 4 GiB of mappings takes ~50 ms and would disturb the run.)
#[derive(Clone)]
pub struct RssSampler {
    window: Arc<[AtomicU64; 2]>,
    overall: Arc<[AtomicU64; 2]>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let zero = || Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let sampler = RssSampler { window: zero(), overall: zero() };
        let (window, overall) = (sampler.window.clone(), sampler.overall.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(total) = status_bytes(pid, "VmRSS") else { break };
                let anon = status_bytes(pid, "RssAnon").unwrap_or(0);
                for (i, value) in [total, anon].into_iter().enumerate() {
                    window[i].fetch_max(value, Ordering::Relaxed);
                    overall[i].fetch_max(value, Ordering::Relaxed);
                }
            }
        });
        sampler
    }

    /// The peaks since the previous call, and starts a new window.
    pub fn take_peak(&self) -> Resident {
        Resident {
            total: self.window[0].swap(0, Ordering::Relaxed),
            anon: self.window[1].swap(0, Ordering::Relaxed),
        }
    }

    pub fn overall_peak(&self) -> Resident {
        Resident {
            total: self.overall[0].load(Ordering::Relaxed),
            anon: self.overall[1].load(Ordering::Relaxed),
        }
    }
}

/// CPU time all cores spent busy (not idle, not waiting for I/O) since boot, in seconds.
pub fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<f64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = fields.first()?
        + fields.get(1)?
        + fields.get(2)?
        + fields.get(5)?
        + fields.get(6)?
        + fields.get(7)?;
    Some(busy / TICKS_PER_SECOND)
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub kernel: String,
    /// 1-minute load average when the run started and when it ended.
    pub load_start: f64,
    pub load_end: f64,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kb: u64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model,
            memory_mib: memory_kb / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            load_start: load_average(),
            load_end: 0.0,
        }
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        if !std::path::Path::new("/proc/self/status").exists() {
            return;
        }
        let pid = std::process::id();
        assert!(status_bytes(pid, "VmRSS").is_some_and(|b| b > 0));
        assert!(status_bytes(pid, "VmHWM").is_some_and(|b| b > 0));
        assert!(smaps_bytes(pid, "Pss").is_some_and(|b| b > 0));
        assert!(cpu_seconds(None).is_some());
        assert!(cpu_seconds(Some(pid)).is_some());
    }
}
