//! The fedx gateway library: everything the `fedx` binary runs, importable by the end-to-end tests.
#![forbid(unsafe_code)]

pub mod audit;
pub mod authn;
pub mod cli;
pub mod config;
pub mod consent;
pub mod identity;
pub mod limits;
pub mod pki;
pub mod policy;
pub mod resilience;
pub mod rpc;
pub mod secret_file;
pub mod server;
pub mod signing;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod verify;
pub mod view;
