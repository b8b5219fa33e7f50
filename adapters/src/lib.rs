//! Department sources for fedx: the [`Source`] trait the gateway asks at request time, one module per
//! department (schema, look-ups, facts), CSV import of real exports, and the synthetic data generator.
//!
//! Identifier normalisation lives in [`ident`] and nowhere else.
#![forbid(unsafe_code)]

pub mod ident;

pub mod db;
pub mod dept;
pub mod education;
pub mod generate;
pub mod import;
pub mod industry_commerce;
mod keys;
pub mod public_security;
mod reader;
pub mod social_insurance;
pub mod source;
mod sql_source;
pub mod table;
pub mod tax;

pub use db::{migrate_schema, SourceLocation, SourceLocationSet, DEFAULT_SCHEMA_PREFIX};
pub use dept::Department;
pub use generate::{seed, NoiseConfig, SeedError, SeedOptions, SeedReport, TruthRecord};
pub use import::{import_csv, ImportError, ImportMode, ImportReport};
pub use source::{
    Candidate, EmployerContributions, Fact, FactCategory, Facts, IdQuality, LookupKey, RecordKey, Source,
    SourceError,
};
pub use sql_source::{open_source, tables};
