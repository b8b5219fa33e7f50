//! How dirty each department's copy of a worker is. Rates are probabilities per record (or per field,
//! where stated); each applies to the departments named on it, mirroring how each department's data
//! really goes wrong.

use serde::{Deserialize, Serialize};

/// Noise rates for the generator. `Default` is a realistic mix; [`NoiseConfig::none`] gives clean data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoiseConfig {
    /// Social insurance: share of insured persons old enough to have had a pre-1999 ID (born before
    /// 1984) whose record still carries the legacy 15-digit number.
    pub si_legacy_15: f64,
    /// Tax: share of workers with tax records for whom one employer registered a mistyped ID (an
    /// adjacent transposition or one wrong digit, half each), creating a second taxpayer record.
    pub tax_mistyped_id: f64,
    /// Education: share of enrolments whose guardian is recorded by phone only (no name, no ID).
    pub edu_phone_only_guardian: f64,
    /// Education: share of the remaining enrolments with the guardian's ID missing.
    pub edu_missing_guardian_id: f64,
    /// Tax, social insurance, education, industry-commerce: per ID field, typed in full-width digits.
    pub full_width: f64,
    /// Same departments: per ID or name field, a stray space inserted.
    pub stray_space: f64,
    /// Same departments: per ID ending in `X`, written with a lower-case `x`.
    pub lowercase_x: f64,
    /// Tax, social insurance, education: per name, a homophone typo (伟/玮).
    pub homophone_typo: f64,
    /// Tax, social insurance, education: per name, written in traditional characters.
    pub traditional: f64,
    /// All but public security: per phone, written with +86, spaces or dashes.
    pub phone_format: f64,
    /// Tax, social insurance, education: per record, an old phone number instead of the current one.
    pub stale_phone: f64,
    /// Share of workers deliberately given the same name, birth date and sex as an earlier worker (on
    /// top of the namesakes the name distribution produces by itself).
    pub namesake: f64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            si_legacy_15: 0.15,
            tax_mistyped_id: 0.03,
            edu_phone_only_guardian: 0.05,
            edu_missing_guardian_id: 0.40,
            full_width: 0.02,
            stray_space: 0.02,
            lowercase_x: 0.30,
            homophone_typo: 0.01,
            traditional: 0.01,
            phone_format: 0.05,
            stale_phone: 0.05,
            namesake: 0.002,
        }
    }
}

impl NoiseConfig {
    /// No noise at all: every department records every identifier exactly.
    pub fn none() -> Self {
        NoiseConfig {
            si_legacy_15: 0.0,
            tax_mistyped_id: 0.0,
            edu_phone_only_guardian: 0.0,
            edu_missing_guardian_id: 0.0,
            full_width: 0.0,
            stray_space: 0.0,
            lowercase_x: 0.0,
            homophone_typo: 0.0,
            traditional: 0.0,
            phone_format: 0.0,
            stale_phone: 0.0,
            namesake: 0.0,
        }
    }

    /// Checks every rate is a probability.
    pub fn validate(&self) -> Result<(), &'static str> {
        let rates = [
            self.si_legacy_15,
            self.tax_mistyped_id,
            self.edu_phone_only_guardian,
            self.edu_missing_guardian_id,
            self.full_width,
            self.stray_space,
            self.lowercase_x,
            self.homophone_typo,
            self.traditional,
            self.phone_format,
            self.stale_phone,
            self.namesake,
        ];
        if rates.iter().all(|r| (0.0..=1.0).contains(r)) {
            Ok(())
        } else {
            Err("every noise rate must be between 0 and 1")
        }
    }
}
