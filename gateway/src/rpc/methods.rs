//! The method table: every RPC the gateway serves, the certificate roles allowed to call it, and
//! whether this release implements it.
//!
//! Authorisation is decided here, in one place, before a request reaches any service: a method missing
//! from the table is refused, so a new RPC cannot be exposed by forgetting a check. The authorisation
//! matrix tests iterate over this table and the proto descriptors.

use crate::authn::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Implemented,
    /// Part of the fedx.v1 contract, not built yet; answered with UNIMPLEMENTED and this note.
    Planned(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    pub roles: &'static [Role],
    pub availability: Availability,
}

const ANY: &[Role] = &[Role::Consumer, Role::Provider, Role::Auditor, Role::Admin];
const CONSUMER: &[Role] = &[Role::Consumer];
const AUDITOR: &[Role] = &[Role::Auditor];
const ADMIN: &[Role] = &[Role::Admin];
/// Receipts are meant to be checked by whoever relies on them, including auditors.
const RECEIPT_CHECKERS: &[Role] = &[Role::Consumer, Role::Auditor, Role::Admin];

const fn method(path: &'static str, roles: &'static [Role], availability: Availability) -> MethodSpec {
    MethodSpec { path, roles, availability }
}

use Availability::Implemented;

pub const METHODS: &[MethodSpec] = &[
    method("/grpc.health.v1.Health/Check", ANY, Implemented),
    method("/grpc.health.v1.Health/Watch", ANY, Implemented),
    method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", ANY, Implemented),
    method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", ANY, Implemented),
    method("/fedx.v1.GatewayService/WhoAmI", ANY, Implemented),
    method("/fedx.v1.GatewayService/GetSigningKeys", ANY, Implemented),
    method("/fedx.v1.IdentityService/ResolveIdentity", CONSUMER, Implemented),
    method("/fedx.v1.WorkerViewService/GetWorkerView", CONSUMER, Implemented),
    method("/fedx.v1.VerificationService/JointVerify", CONSUMER, Implemented),
    method("/fedx.v1.VerificationService/BatchVerify", CONSUMER, Implemented),
    method("/fedx.v1.VerificationService/VerifyReceipt", RECEIPT_CHECKERS, Implemented),
    method("/fedx.v1.ConsentService/GrantConsent", CONSUMER, Implemented),
    method("/fedx.v1.ConsentService/RevokeConsent", CONSUMER, Implemented),
    method("/fedx.v1.ConsentService/GetConsent", CONSUMER, Implemented),
    method("/fedx.v1.ConsentService/ListConsents", CONSUMER, Implemented),
    method("/fedx.v1.AccessHistoryService/GetAccessHistory", CONSUMER, Implemented),
    method("/fedx.v1.AuditService/QueryExchanges", AUDITOR, Implemented),
    method("/fedx.v1.AuditService/VerifyChain", AUDITOR, Implemented),
    method("/fedx.v1.AuditService/GetCheckpoint", AUDITOR, Implemented),
    method("/fedx.v1.AuditService/ListCheckpoints", AUDITOR, Implemented),
    method("/fedx.v1.AuditService/GetInclusionProof", AUDITOR, Implemented),
    method("/fedx.v1.AuditService/GetConsistencyProof", AUDITOR, Implemented),
    method("/fedx.v1.AdminService/ListCertificates", ADMIN, Implemented),
    method("/fedx.v1.AdminService/RevokeCertificate", ADMIN, Implemented),
    method("/fedx.v1.AdminService/GetPurposeCatalogue", ADMIN, Implemented),
    method("/fedx.v1.AdminService/ReloadPolicy", ADMIN, Implemented),
];

pub fn lookup(path: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.path == path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    /// The table and the contract must list the same fedx.v1 methods: an RPC added to the proto without
    /// an authorisation entry would be refused, and a stale entry would hide a removed one.
    #[test]
    fn table_covers_exactly_the_fedx_contract() {
        let set = prost_types::FileDescriptorSet::decode(fedx_proto::v1::FILE_DESCRIPTOR_SET).unwrap();
        let from_proto: BTreeSet<String> = set
            .file
            .iter()
            .flat_map(|file| {
                let package = file.package().to_owned();
                file.service.iter().flat_map(move |service| {
                    let package = package.clone();
                    service.method.iter().map(move |m| format!("/{package}.{}/{}", service.name(), m.name()))
                })
            })
            .collect();
        let from_table: BTreeSet<String> =
            METHODS.iter().filter(|m| m.path.starts_with("/fedx.")).map(|m| m.path.to_owned()).collect();
        assert_eq!(from_proto, from_table);
    }

    #[test]
    fn paths_are_unique() {
        let unique: BTreeSet<_> = METHODS.iter().map(|m| m.path).collect();
        assert_eq!(unique.len(), METHODS.len());
    }
}
