//! Rate limits (governor), the harvest guard and per-department concurrency limits.

use serde::{Deserialize, Serialize};

/// `[limits]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {}
