//! The phases of a graceful shutdown, shared by the server, the call layer and the connections.
//!
//! ```text
//!  Serving ─shutdown─▶ Draining ─drain_timeout─▶ Cut ─CUT_GRACE─▶ Abort
//! ```
//!
//! * **Draining**: tonic stops accepting (the listener is closed, so new connections are refused), tells
//!   open connections to go away (HTTP/2 GOAWAY: no new calls on them) and waits for the calls already
//!   running. Nothing is cut: a call that finishes is answered and recorded as usual.
//! * **Cut**: `drain_timeout` has passed. The calls still running are answered UNAVAILABLE
//!   (SHUTTING_DOWN) by [`super::DeadlineLayer`], which sits inside the audit layer, so each of them is
//!   recorded. A caller may retry on another replica.
//! * **Abort**: what is still open a moment later — streams, whose bodies outlive their handlers — has
//!   its connection closed under it (reads and writes fail), so shutdown always ends.
//!
//! Then the server flushes the exchange log (signing a last checkpoint) and closes the store
//! ([`crate::server::RunningGateway::shutdown`]).

use std::time::Duration;

use tokio::sync::watch;

/// How long cut calls get to be answered and recorded before connections are closed under them.
pub const CUT_GRACE: Duration = Duration::from_secs(2);

/// Where a shutdown is. Ordered: a later phase implies the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    Draining,
    Cut,
    Abort,
}

/// The shutdown phase, set by the server and watched by calls and connections.
#[derive(Debug, Clone)]
pub struct Drain {
    phase: watch::Sender<Phase>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain::new()
    }
}

impl Drain {
    pub fn new() -> Drain {
        Drain { phase: watch::Sender::new(Phase::Serving) }
    }

    /// Moves to `phase` (never back).
    pub fn advance(&self, phase: Phase) {
        self.phase.send_if_modified(|current| {
            let later = phase > *current;
            if later {
                *current = phase;
            }
            later
        });
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }
}

/// Resolves once `phase` has been reached; never, if the [`Drain`] is gone first.
pub async fn reached(mut watcher: watch::Receiver<Phase>, phase: Phase) {
    if watcher.wait_for(|current| *current >= phase).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward_and_wake_watchers() {
        let drain = Drain::new();
        let watcher = tokio::spawn(reached(drain.subscribe(), Phase::Cut));
        drain.advance(Phase::Draining);
        tokio::task::yield_now().await;
        assert!(!watcher.is_finished());
        drain.advance(Phase::Abort);
        watcher.await.expect("woken at a later phase");
        drain.advance(Phase::Draining);
        assert_eq!(drain.phase(), Phase::Abort);
    }
}
