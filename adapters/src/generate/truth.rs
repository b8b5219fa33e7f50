//! The ground truth written next to a seeded dataset: which source records belong to which worker.
//! One JSON object per line (JSON Lines), one line per worker; the format is documented in SOURCES.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One worker and every record of theirs in every source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthRecord {
    /// Generator's person reference, `W` + 9 digits.
    pub person: String,
    /// True canonical 18-character citizen ID.
    pub citizen_id: String,
    /// True name (simplified, no noise).
    pub name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// `M` or `F`.
    pub sex: String,
    /// Current 11-digit mobile number.
    pub phone: String,
    /// GB/T 2260 code of the hukou county.
    pub hukou_region: String,
    /// If this worker was deliberately made a namesake (same name, birth date and sex) of an earlier
    /// one, that worker's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namesake_of: Option<String>,
    /// Department code → record keys (`table/key`, exactly as `Source::lookup` returns them).
    /// Departments with no record are omitted.
    pub records: BTreeMap<String, Vec<String>>,
}
