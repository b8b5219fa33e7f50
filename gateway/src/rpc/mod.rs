//! The gRPC edge: the router, the authorisation layer, and the service implementations. Decodes and
//! validates requests, calls the domain, and maps errors to `tonic::Status` in one place ([`error`]).

pub mod admin;
pub mod audit;
pub mod audit_layer;
pub mod authz;
pub mod consent;
pub mod convert;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod methods;
pub mod middleware;
pub mod purpose;
pub mod verify;
pub mod view;

use fedx_proto::v1 as pb;
use tonic::service::Routes;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tower::layer::util::{Identity, Stack};

use crate::limits::LimitLayer;
use crate::resilience::{DeadlineLayer, LoadShedLayer};
use crate::server::GatewayState;
use crate::telemetry::rpc::TelemetryLayer;
use audit_layer::AuditLayer;
use authz::AuthLayer;

/// Largest request the gateway decodes; larger ones fail with RESOURCE_EXHAUSTED before parsing.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

pub type GatewayRouter = Router<
    Stack<
        LimitLayer,
        Stack<
            AuthLayer,
            Stack<DeadlineLayer, Stack<LoadShedLayer, Stack<AuditLayer, Stack<TelemetryLayer, Identity>>>>,
        >,
    >,
>;

/// All services behind the authorisation layer, with gRPC health and reflection (v1 and v1alpha, so
/// grpcurl works against any version).
pub async fn router(state: GatewayState) -> GatewayRouter {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::gateway_service_server::GatewayServiceServer<gateway::GatewaySvc>>()
        .await;
    health_reporter.set_serving::<pb::admin_service_server::AdminServiceServer<admin::AdminSvc>>().await;
    health_reporter
        .set_serving::<pb::identity_service_server::IdentityServiceServer<identity::IdentitySvc>>()
        .await;
    health_reporter.set_serving::<pb::audit_service_server::AuditServiceServer<audit::AuditSvc>>().await;
    health_reporter
        .set_serving::<pb::worker_view_service_server::WorkerViewServiceServer<view::WorkerViewSvc>>()
        .await;
    health_reporter
        .set_serving::<pb::consent_service_server::ConsentServiceServer<consent::ConsentSvc>>()
        .await;
    health_reporter
        .set_serving::<pb::verification_service_server::VerificationServiceServer<verify::VerificationSvc>>()
        .await;
    health_reporter
        .set_serving::<pb::access_history_service_server::AccessHistoryServiceServer<audit::AccessHistorySvc>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");

    let mut routes = Routes::default();
    routes = routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            pb::gateway_service_server::GatewayServiceServer::new(gateway::GatewaySvc::new(
                state.audit.keys().clone(),
                state.policy.clone(),
            ))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        )
        .add_service(
            pb::admin_service_server::AdminServiceServer::new(admin::AdminSvc::new(state.clone()))
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        )
        .add_service(
            pb::identity_service_server::IdentityServiceServer::new(identity::IdentitySvc::new(
                state.clone(),
            ))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        )
        .add_service(
            pb::worker_view_service_server::WorkerViewServiceServer::new(view::WorkerViewSvc::new(
                state.clone(),
            ))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        )
        .add_service(
            pb::verification_service_server::VerificationServiceServer::new(verify::VerificationSvc::new(
                state.clone(),
            ))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        )
        .add_service(
            pb::consent_service_server::ConsentServiceServer::new(consent::ConsentSvc::new(state.clone()))
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        )
        .add_service(
            pb::audit_service_server::AuditServiceServer::new(audit::AuditSvc::new(state.clone()))
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        )
        .add_service(
            pb::access_history_service_server::AccessHistoryServiceServer::new(audit::AccessHistorySvc::new(
                state.clone(),
            ))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        );

    Server::builder()
        .max_concurrent_streams(Some(state.config.resilience.max_concurrent_streams))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        // Outermost first: every call is recorded, refusals by the authorisation layer included. The
        // telemetry layer's span encloses everything, the exchange-log append too.
        .layer(TelemetryLayer::new(state.policy.clone()))
        .layer(AuditLayer::new(state.audit.clone()))
        // Inside the audit layer (shed calls, expired deadlines and calls cut at shutdown are recorded),
        // before authorisation (a flood costs no certificate checks): see crate::resilience.
        .layer(LoadShedLayer::new(state.config.resilience.max_in_flight))
        .layer(DeadlineLayer::new(state.drain.subscribe()))
        .layer(AuthLayer::new(state.revocation.clone()))
        // Inside authorisation (the caller's department is known) and inside the audit layer (every
        // refusal is recorded with its reason).
        .layer(LimitLayer::new(state.limits.clone()))
        .add_routes(routes)
}
