//! `fedx.v1.GatewayService`: what any authenticated department may ask the gateway about itself.

use fedx_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::authz::caller_of;
use super::convert::{caller_to_proto, timestamp};

#[derive(Debug, Default)]
pub struct GatewaySvc;

#[tonic::async_trait]
impl pb::gateway_service_server::GatewayService for GatewaySvc {
    /// Echoes the identity taken from the client certificate, so a department can check its set-up.
    /// `purposes` stays empty until the purpose catalogue exists.
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = caller_of(&request)?;
        Ok(Response::new(pb::WhoAmIResponse {
            caller: Some(caller_to_proto(&caller)),
            certificate_not_after: Some(timestamp(caller.not_after)),
            purposes: Vec::new(),
        }))
    }
}
