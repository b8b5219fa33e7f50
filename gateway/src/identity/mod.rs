//! Identity resolution: which person a request is about, across the five departments' records.
//!
//! One file per job: [`query`] validates and normalises what the requester knows; [`model`] holds the
//! Fellegi–Sunter parameters and thresholds; [`compare`] scores one record field by field; [`resolver`]
//! gathers candidates from every source under a deadline, groups them into people and classifies;
//! [`reference`] mints the pseudonymous worker reference; [`cache`] remembers recent answers;
//! [`eval`] measures precision and recall against a generator's ground truth.
//!
//! No tonic and no SQL here: sources are reached through `fedx_adapters::Source`, and conversion to the
//! wire format happens in `rpc::identity`. Nothing in this module logs personal data; the worker
//! reference is what logs carry.

pub mod cache;
pub mod compare;
pub mod eval;
pub mod model;
pub mod query;
pub mod reference;
pub mod resolver;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;

pub use model::{IdentityConfig, MatchClass, Model};
pub use query::{Query, SubjectInput};
pub use reference::{KeyRing, WorkerRef};
pub use resolver::{Resolution, ResolveError, Resolver, SourceOutcome, Status};
