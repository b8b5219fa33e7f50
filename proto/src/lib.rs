//! The `fedx.v1` gRPC contract.
//!
//! Generated code only: domain types live in `fedx-gateway`, and conversion between the two happens at the
//! gateway's `rpc` edge so that the wire format can evolve without touching business rules.
#![forbid(unsafe_code)]

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("fedx.v1");

    /// Encoded `FileDescriptorSet` of every fedx.v1 file, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fedx_descriptor");
}
