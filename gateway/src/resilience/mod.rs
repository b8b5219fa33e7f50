//! Resilience: per-source circuit breakers, caller deadlines, load shedding and bounded connections.

use serde::{Deserialize, Serialize};

/// `[resilience]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {}
