//! The five departments that hold a slice of a migrant worker's record.
//!
//! The code (`public_security`, …) is the stable identifier used in configuration, CLI arguments,
//! database file names and the ground-truth file; the Chinese and English names are for display.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A department that owns a source database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Department {
    /// 公安: household registration and residence permits.
    PublicSecurity,
    /// 税务: individual income tax withheld by employers.
    Tax,
    /// 人社/社保: insured persons and monthly contributions.
    SocialInsurance,
    /// 教育: school enrolment of workers' children.
    Education,
    /// 市场监管/工商: enterprises, individual businesses, abnormal-operation list.
    IndustryCommerce,
}

impl Department {
    /// All departments, in a fixed order (used for deterministic iteration).
    pub const ALL: [Department; 5] = [
        Department::PublicSecurity,
        Department::Tax,
        Department::SocialInsurance,
        Department::Education,
        Department::IndustryCommerce,
    ];

    /// Stable machine code, e.g. `social_insurance`.
    pub fn code(self) -> &'static str {
        match self {
            Department::PublicSecurity => "public_security",
            Department::Tax => "tax",
            Department::SocialInsurance => "social_insurance",
            Department::Education => "education",
            Department::IndustryCommerce => "industry_commerce",
        }
    }

    /// Chinese name as used in policy documents.
    pub fn name_zh(self) -> &'static str {
        match self {
            Department::PublicSecurity => "公安",
            Department::Tax => "税务",
            Department::SocialInsurance => "人社(社保)",
            Department::Education => "教育",
            Department::IndustryCommerce => "市场监管(工商)",
        }
    }

    /// English name for logs and documentation.
    pub fn name_en(self) -> &'static str {
        match self {
            Department::PublicSecurity => "public security",
            Department::Tax => "tax",
            Department::SocialInsurance => "social insurance",
            Department::Education => "education",
            Department::IndustryCommerce => "industry and commerce",
        }
    }

    /// Index into [`Department::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Department {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Error for an unknown department code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown department code (expected one of public_security, tax, social_insurance, education, industry_commerce)")]
pub struct UnknownDepartment;

impl FromStr for Department {
    type Err = UnknownDepartment;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Department::ALL.into_iter().find(|d| d.code() == s.trim()).ok_or(UnknownDepartment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for d in Department::ALL {
            assert_eq!(d.code().parse::<Department>().unwrap(), d);
            assert_eq!(Department::ALL[d.index()], d);
        }
        assert!("police".parse::<Department>().is_err());
    }
}
