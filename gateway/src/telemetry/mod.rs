//! Traces (OpenTelemetry), metrics (Prometheus scrape endpoint on the admin port) and structured logs,
//! none of them carrying personal data.

use serde::{Deserialize, Serialize};

/// `[telemetry]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {}
