//! The Fellegi–Sunter model: m/u probabilities per field and agreement level, the match weights they
//! give, and the thresholds that turn a total weight into a link class.
//!
//! For each compared field, `m` is the probability of the observed agreement level when the two records
//! are the same person and `u` the probability when they are different people; the evidence the level
//! carries is the log-likelihood ratio `log2(m / u)` ("match weight", Splink's convention), and the
//! weights of independent fields add up. A positive total favours a link; +10 is about 1000 : 1.
//!
//! The defaults below are documented estimates for the migrant-worker sources (noise rates as observed
//! in the departments' exports and reproduced by the generator, population-level frequencies for the
//! `u`s). Every one can be overridden in the `[identity.m_u]` configuration section.

use serde::{Deserialize, Serialize};

/// One (m, u) pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MU {
    /// P(this level | same person).
    pub m: f64,
    /// P(this level | different people).
    pub u: f64,
}

impl MU {
    pub const fn new(m: f64, u: f64) -> MU {
        MU { m, u }
    }

    /// `log2(m / u)`.
    pub fn weight(&self) -> f64 {
        (self.m / self.u).log2()
    }

    fn valid(&self) -> bool {
        self.m > 0.0 && self.m <= 1.0 && self.u > 0.0 && self.u <= 1.0
    }
}

/// m/u per field and level. Field names follow `SubjectQuery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MuTable {
    /// Same canonical 18-character number. `u`: two different people's records carrying the same
    /// number happens only through duplicate issuance or data-entry fraud — rare at provincial scale.
    pub citizen_id_exact: MU,
    /// One digit substituted or two adjacent digits transposed (the copying errors GB 11643's check
    /// character catches, so one side is always a suspect number). `m`: the share of a person's records
    /// typed this way; `u`: a typo of someone else's number landing one edit away from this one.
    pub citizen_id_typo: MU,
    /// Otherwise different. Kept strongly negative because two valid numbers that differ belong to
    /// different people: this is what keeps namesakes with the same birth date apart.
    pub citizen_id_other: MU,
    /// Same normalised name. `u` here is only the fallback when no source could say how frequent the
    /// name is; normally it is replaced by the name's term frequency (see [`Model::name_exact`]).
    pub name_exact: MU,
    /// Jaro–Winkler ≥ `name_close_similarity` (typically one character of a 3–4 character name).
    pub name_close: MU,
    /// Jaro–Winkler ≥ `name_similar_similarity` (for two-character names this is also what two
    /// different people with the same surname score, hence the `u` and the slightly negative weight).
    pub name_similar: MU,
    pub name_other: MU,
    /// `u` = 1 / (days in the ~40-year birth range of working-age people).
    pub birth_date_exact: MU,
    pub birth_date_other: MU,
    pub sex_agree: MU,
    pub sex_other: MU,
    /// A mobile number is held by one subscriber; `u` is the chance an unrelated record carries it
    /// (recycled numbers, a relative's phone). `m` < 1 because people change numbers.
    pub phone_exact: MU,
    /// Weak: a different number is usually an old one of the same person.
    pub phone_other: MU,
    /// Same 6-digit region code.
    pub region_exact: MU,
    /// Same prefecture (first 4 digits), or the query gave an area code that contains the record's.
    pub region_area: MU,
    /// Records name the hukou county, the workplace or the school district, so disagreement is weak.
    pub region_other: MU,
}

impl Default for MuTable {
    fn default() -> Self {
        MuTable {
            citizen_id_exact: MU::new(0.97, 1e-8),
            citizen_id_typo: MU::new(0.02, 1e-6),
            citizen_id_other: MU::new(1e-4, 1.0),
            name_exact: MU::new(0.95, 1e-3),
            name_close: MU::new(0.02, 1e-3),
            name_similar: MU::new(0.01, 0.02),
            name_other: MU::new(0.02, 0.977),
            birth_date_exact: MU::new(0.98, 1.0 / 14_600.0),
            birth_date_other: MU::new(0.02, 1.0),
            sex_agree: MU::new(0.99, 0.5),
            sex_other: MU::new(0.01, 0.5),
            phone_exact: MU::new(0.85, 1e-7),
            phone_other: MU::new(0.15, 1.0),
            region_exact: MU::new(0.6, 0.02),
            region_area: MU::new(0.1, 0.05),
            region_other: MU::new(0.3, 0.93),
        }
    }
}

impl MuTable {
    fn entries(&self) -> [(&'static str, MU); 16] {
        [
            ("citizen_id_exact", self.citizen_id_exact),
            ("citizen_id_typo", self.citizen_id_typo),
            ("citizen_id_other", self.citizen_id_other),
            ("name_exact", self.name_exact),
            ("name_close", self.name_close),
            ("name_similar", self.name_similar),
            ("name_other", self.name_other),
            ("birth_date_exact", self.birth_date_exact),
            ("birth_date_other", self.birth_date_other),
            ("sex_agree", self.sex_agree),
            ("sex_other", self.sex_other),
            ("phone_exact", self.phone_exact),
            ("phone_other", self.phone_other),
            ("region_exact", self.region_exact),
            ("region_area", self.region_area),
            ("region_other", self.region_other),
        ]
    }
}

/// Identity-resolution settings: the `[identity]` configuration section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Total match weight at or above which a record is LINKED. The default, 20, is a likelihood ratio
    /// of about 10⁶ : 1 — with the prior below a posterior above 0.999. Precision first: namesakes with
    /// the same birth date are common, so a link must rest on more than name + birth date of a common
    /// name unless the authoritative registry shows the person is the only one.
    pub link_threshold: f64,
    /// At or above this (and below `link_threshold`) a record is POSSIBLE: shown as such, never used to
    /// disclose data or confirm a claim.
    pub possible_threshold: f64,
    /// When several people clear the possible threshold, the best is still named if it clears the link
    /// threshold and beats the runner-up by at least this weight (2^margin times more likely): a phone
    /// or ID that only one namesake's records carry settles it; agreement on name + birth date alone
    /// never does.
    pub ambiguity_margin: f64,
    /// log2 prior odds that a candidate returned by an index look-up is the person, used only to turn
    /// weights into the reported confidence (posterior probability).
    pub prior_weight: f64,
    /// Approximate number of people the sources cover: the denominator of a name's term frequency
    /// (`u` of exact name agreement = records with that name / population). Set it to the public
    /// security person count.
    pub population: u64,
    /// Jaro–Winkler similarity for the `name_close` level.
    pub name_close_similarity: f64,
    /// Jaro–Winkler similarity for the `name_similar` level.
    pub name_similar_similarity: f64,
    /// Largest weight exact name agreement may contribute, however rare the name; keeps a one-off
    /// spelling from outweighing a disagreeing ID.
    pub max_name_weight: f64,
    /// Seconds one resolution may take end to end (both look-up rounds); sources still answering then
    /// are reported unavailable. Each source call is also bounded by `sources.timeout`.
    #[serde(with = "crate::config::duration_secs")]
    pub deadline: std::time::Duration,
    /// Resolutions kept in the cache (0 disables it).
    pub cache_capacity: usize,
    /// Seconds a cached resolution is reused. Short: sources change, and consent-bound callers must
    /// not see a stale link for long.
    #[serde(with = "crate::config::duration_secs")]
    pub cache_ttl: std::time::Duration,
    /// Identifier of the current worker-reference key (minted refs carry it as `worker_ref_key_id`).
    /// Env: FEDX_WORKER_REF_KEY_ID.
    pub worker_ref_key_id: String,
    /// File holding the current key as hex (at least 32 bytes). Env FEDX_WORKER_REF_KEY (hex) takes
    /// precedence. With neither, a random key is generated into `<data_dir>/worker_ref.key` (dev/demo).
    pub worker_ref_key_file: Option<std::path::PathBuf>,
    /// Retired keys still recognised (key id → hex key file), for rotation: refs minted under an old
    /// key can be re-derived while callers migrate.
    pub previous_worker_ref_keys: std::collections::BTreeMap<String, std::path::PathBuf>,
    pub m_u: MuTable,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            link_threshold: 20.0,
            possible_threshold: 10.0,
            ambiguity_margin: 15.0,
            prior_weight: -10.0,
            population: 1_000_000,
            name_close_similarity: 0.8,
            name_similar_similarity: 0.7,
            max_name_weight: 20.0,
            deadline: std::time::Duration::from_secs(3),
            cache_capacity: 10_000,
            cache_ttl: std::time::Duration::from_secs(30),
            worker_ref_key_id: "local".to_owned(),
            worker_ref_key_file: None,
            previous_worker_ref_keys: Default::default(),
            m_u: MuTable::default(),
        }
    }
}

impl IdentityConfig {
    /// Refuses settings that would make classification meaningless.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.link_threshold.is_finite() && self.possible_threshold.is_finite()) {
            return Err("identity thresholds must be finite".into());
        }
        if self.possible_threshold > self.link_threshold {
            return Err("identity.possible_threshold must not exceed identity.link_threshold".into());
        }
        if !(self.ambiguity_margin.is_finite() && self.ambiguity_margin >= 0.0) {
            return Err("identity.ambiguity_margin must be a non-negative number".into());
        }
        if self.population == 0 {
            return Err("identity.population must be positive".into());
        }
        let sims = [self.name_close_similarity, self.name_similar_similarity];
        if sims.iter().any(|s| !(0.0..=1.0).contains(s))
            || self.name_similar_similarity > self.name_close_similarity
        {
            return Err("identity name similarities must be in 0..=1 with similar ≤ close".into());
        }
        if self.deadline.is_zero() {
            return Err("identity.deadline must be positive".into());
        }
        if self.worker_ref_key_id.is_empty()
            || !self.worker_ref_key_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(
                "identity.worker_ref_key_id must be non-empty ASCII letters, digits, '-', '_' or '.'".into(),
            );
        }
        for (name, mu) in self.m_u.entries() {
            if !mu.valid() {
                return Err(format!("identity.m_u.{name}: m and u must be in (0, 1]"));
            }
        }
        Ok(())
    }
}

/// Link class of one record (Fellegi–Sunter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchClass {
    Linked,
    Possible,
    NotLinked,
}

/// The model as used on the request path: weights precomputed from the configuration.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: IdentityConfig,
}

impl Model {
    pub fn new(config: IdentityConfig) -> Model {
        Model { config }
    }

    pub fn mu(&self) -> &MuTable {
        &self.config.m_u
    }

    /// Weight of exact name agreement, term-frequency adjusted: `u` is the share of the population
    /// carrying the name (at least one person), so 王伟 (about 1 % of workers) gives ~6.6 and a name
    /// only one person has gives ~log2(population). Without a frequency, the configured fallback `u`.
    pub fn name_exact(&self, frequency: Option<u64>) -> f64 {
        let m = self.config.m_u.name_exact.m;
        let w = match frequency {
            Some(f) => {
                let u = (f.max(1) as f64 / self.config.population as f64).min(1.0);
                (m / u).log2()
            }
            None => self.config.m_u.name_exact.weight(),
        };
        w.min(self.config.max_name_weight)
    }

    pub fn classify(&self, score: f64) -> MatchClass {
        if score >= self.config.link_threshold {
            MatchClass::Linked
        } else if score >= self.config.possible_threshold {
            MatchClass::Possible
        } else {
            MatchClass::NotLinked
        }
    }

    /// Posterior probability of a match given the total weight and the prior.
    pub fn confidence(&self, score: f64) -> f64 {
        let odds = score + self.config.prior_weight;
        1.0 / (1.0 + (-odds).exp2())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_order_levels() {
        let c = IdentityConfig::default();
        c.validate().unwrap();
        let mu = &c.m_u;
        assert!(mu.citizen_id_exact.weight() > mu.citizen_id_typo.weight());
        assert!(mu.citizen_id_typo.weight() > 0.0 && mu.citizen_id_other.weight() < -10.0);
        assert!(mu.name_close.weight() > mu.name_similar.weight());
        assert!(mu.name_similar.weight() > mu.name_other.weight());
    }

    #[test]
    fn common_names_weigh_less_than_rare_ones() {
        let model = Model::new(IdentityConfig { population: 100_000, ..IdentityConfig::default() });
        let common = model.name_exact(Some(1_000));
        let rare = model.name_exact(Some(1));
        assert!(common < 7.0 && common > 6.0, "{common}");
        assert!(rare > 16.0, "{rare}");
        assert!(model.name_exact(Some(0)) == rare);
    }

    #[test]
    fn thresholds_classify_and_confidence_is_monotone() {
        let model = Model::new(IdentityConfig::default());
        assert_eq!(model.classify(25.0), MatchClass::Linked);
        assert_eq!(model.classify(15.0), MatchClass::Possible);
        assert_eq!(model.classify(5.0), MatchClass::NotLinked);
        assert!(model.confidence(20.0) > 0.999);
        assert!(model.confidence(10.0) < model.confidence(11.0));
    }

    #[test]
    fn bad_settings_are_refused() {
        let c = IdentityConfig { possible_threshold: 30.0, ..IdentityConfig::default() };
        assert!(c.validate().is_err());
        let mut c = IdentityConfig::default();
        c.m_u.phone_exact.u = 0.0;
        assert!(c.validate().unwrap_err().contains("phone_exact"));
    }
}
