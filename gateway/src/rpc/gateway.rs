//! `fedx.v1.GatewayService`: what any authenticated department may ask the gateway about itself.

use std::sync::Arc;

use fedx_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::audit::to_timestamp;
use super::authz::caller_of;
use super::convert::{caller_to_proto, timestamp};
use crate::authn::Role;
use crate::policy::PolicyHandle;
use crate::signing::KeyRing;

pub struct GatewaySvc {
    keys: Arc<KeyRing>,
    policy: Arc<PolicyHandle>,
}

impl GatewaySvc {
    pub fn new(keys: Arc<KeyRing>, policy: Arc<PolicyHandle>) -> GatewaySvc {
        GatewaySvc { keys, policy }
    }
}

#[tonic::async_trait]
impl pb::gateway_service_server::GatewayService for GatewaySvc {
    /// Echoes the identity taken from the client certificate, so a department can check its set-up, with
    /// the purposes of the catalogue in force its department is registered for (consumers only).
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = caller_of(&request)?;
        Ok(Response::new(pb::WhoAmIResponse {
            caller: Some(caller_to_proto(&caller)),
            certificate_not_after: Some(timestamp(caller.not_after)),
            purposes: if caller.role == Role::Consumer {
                self.policy.current().purposes_for_department(&caller.dept).map(|p| p.code.clone()).collect()
            } else {
                Vec::new()
            },
        }))
    }

    /// The public keys that sign checkpoints and receipts, so anyone can check them offline.
    async fn get_signing_keys(
        &self,
        _request: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::GetSigningKeysResponse>, Status> {
        let keys = self
            .keys
            .public_keys()
            .into_iter()
            .map(|k| pb::SigningKey {
                key_id: k.key_id,
                public_key: k.public_key.to_vec(),
                valid_from: Some(to_timestamp(k.valid_from)),
                valid_until: k.valid_until.map(to_timestamp),
            })
            .collect();
        Ok(Response::new(pb::GetSigningKeysResponse { keys }))
    }
}
