//! Small conversions between domain values and their protobuf forms, shared by the services.

use fedx_proto::v1 as pb;

use crate::authn::{Caller, Role};

pub fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Consumer => pb::Role::Consumer,
        Role::Provider => pb::Role::Provider,
        Role::Auditor => pb::Role::Auditor,
        Role::Admin => pb::Role::Admin,
    }
}

pub fn timestamp(unix: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: unix, nanos: 0 }
}

pub fn caller_to_proto(caller: &Caller) -> pb::Caller {
    pb::Caller {
        department: caller.dept.clone(),
        role: role_to_proto(caller.role) as i32,
        certificate_serial: caller.serial.clone(),
        certificate_fingerprint: caller.fingerprint.clone(),
    }
}
