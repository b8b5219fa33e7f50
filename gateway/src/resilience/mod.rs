//! Resilience: per-source circuit breakers, caller deadlines, load shedding, bounded connections and
//! graceful shutdown.
//!
//! Five departments answer every view, and each of them can be slow or down on its own. What keeps one
//! bad department (or one flood of callers) from taking the gateway with it:
//!
//! ```text
//!  accept loop   at most `max_connections` TLS connections (more are closed at once), at most
//!                `tls.max_concurrent_handshakes` handshakes, each within `tls.handshake_timeout`
//!                                                                              (tls/accept.rs)
//!  connection    at most `max_concurrent_streams` calls per HTTP/2 connection          (rpc/mod.rs)
//!  AuditLayer    every call below is recorded, the refusals of these layers included
//!  LoadShed      at most `max_in_flight` calls in the gateway; the next one is refused at once with
//!                UNAVAILABLE (OVERLOADED) + RetryInfo instead of queueing                  (shed.rs)
//!  Deadline      the caller's `grpc-timeout` bounds the call: sources get what is left of it, and a
//!                call still running when it passes is answered DEADLINE_EXCEEDED (recorded); on
//!                shutdown, calls still running after `drain_timeout` are answered UNAVAILABLE
//!                (SHUTTING_DOWN)                                                        (deadline.rs)
//!  sources       every department source behind a circuit breaker: after `failure_threshold`
//!                consecutive failures the gateway stops asking for `open_for` and answers without
//!                that department at once (partial views, SOURCE_UNAVAILABLE verdicts), then lets one
//!                probe through                                                          (breaker.rs)
//!  shutdown      stop accepting, drain in-flight calls (bounded by `drain_timeout`), flush the exchange
//!                log, close the store                                       (shutdown.rs, server.rs)
//! ```
//!
//! Memory stays bounded because every queue is: connections × streams per connection, calls in flight,
//! and per call the source questions (each bounded in time by the source timeout and the caller's
//! deadline). Nothing waits in an unbounded queue for capacity; it is refused and told when to retry.

pub mod breaker;
pub mod deadline;
pub mod shed;
pub mod shutdown;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use breaker::{Breaker, BreakerSource, CircuitState};
pub use deadline::{budget, Deadline, DeadlineLayer};
pub use shed::LoadShedLayer;
pub use shutdown::{Drain, Phase};

/// `[resilience]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    /// Circuit breakers on the department sources (on by default; `false` asks a failing source on every
    /// call, each bounded by the source timeout).
    pub circuit_breaker: bool,
    /// Consecutive failures (errors meaning the source is unhealthy, or no answer within the source
    /// timeout) after which a source's circuit opens.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before one probe call is let through.
    #[serde(with = "crate::config::duration_secs")]
    pub open_for: Duration,
    /// Calls being handled at once, over all connections; the next one is refused at once with
    /// UNAVAILABLE (OVERLOADED). Health checks are not counted.
    pub max_in_flight: usize,
    /// Open client connections (including those still in their TLS handshake); further TCP connections
    /// are closed at once.
    pub max_connections: usize,
    /// Concurrent calls (HTTP/2 streams) per connection.
    pub max_concurrent_streams: u32,
    /// On shutdown, how long calls already running may take to finish; after that they are answered
    /// UNAVAILABLE (SHUTTING_DOWN), and connections still open a moment later are closed. Keep it under
    /// the orchestrator's kill grace period (Kubernetes: 30 s) so the exchange log is flushed and its
    /// last checkpoint signed before the process is killed.
    #[serde(with = "crate::config::duration_secs")]
    pub drain_timeout: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            circuit_breaker: true,
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
            max_in_flight: 2048,
            max_connections: 1024,
            max_concurrent_streams: 256,
            drain_timeout: Duration::from_secs(25),
        }
    }
}

impl ResilienceConfig {
    /// Start-up validation (called from [`crate::config::Config::validate`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.failure_threshold == 0 || self.open_for.is_zero() {
            return Err("resilience.failure_threshold and resilience.open_for must be positive (set \
                        resilience.circuit_breaker = false to turn the breakers off)"
                .into());
        }
        if self.max_in_flight == 0 || self.max_connections == 0 || self.max_concurrent_streams == 0 {
            return Err("resilience.max_in_flight, resilience.max_connections and \
                        resilience.max_concurrent_streams must be at least 1"
                .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zero_limits_do_not() {
        assert!(ResilienceConfig::default().validate().is_ok());
        let zero_threshold = ResilienceConfig { failure_threshold: 0, ..ResilienceConfig::default() };
        assert!(zero_threshold.validate().is_err());
        let zero_in_flight = ResilienceConfig { max_in_flight: 0, ..ResilienceConfig::default() };
        assert!(zero_in_flight.validate().is_err());
    }

    #[test]
    fn durations_are_written_in_seconds() {
        let config: ResilienceConfig =
            toml::from_str("open_for = 0.5\ndrain_timeout = 10\ncircuit_breaker = false").expect("parses");
        assert_eq!(config.open_for, Duration::from_millis(500));
        assert_eq!(config.drain_timeout, Duration::from_secs(10));
        assert!(!config.circuit_breaker);
        assert_eq!(config.failure_threshold, 5, "unset keys keep their defaults");
    }
}
