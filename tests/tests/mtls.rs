//! End-to-end over real mTLS: who the gateway sees, and every way a certificate must be refused.
//! Each test runs on SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use fedx_gateway::authn::Role;
use fedx_gateway::pki::{CertificateAuthority, Validity};
use fedx_gateway::store::certificates::RevocationReason;
use fedx_tests::{backend_suite, pb, Backend, ClientIdentity, TestGateway};
use time::OffsetDateTime;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

type GatewayClient = pb::gateway_service_client::GatewayServiceClient<tonic::transport::Channel>;
type AdminClient = pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>;

async fn who_am_i(
    gw: &TestGateway,
    id: Option<&ClientIdentity>,
) -> Result<pb::WhoAmIResponse, tonic::Status> {
    let channel = gw.channel(id).map_err(|e| tonic::Status::internal(e.to_string()))?;
    GatewayClient::new(channel).who_am_i(pb::WhoAmIRequest {}).await.map(|r| r.into_inner())
}

async fn department_sees_its_identity_from_the_certificate(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let id = gw.issue("social_insurance", Role::Consumer).await?;
    let channel = gw.channel(Some(&id))?;

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await?
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    let me = GatewayClient::new(channel).who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
    let me = me.caller.expect("caller present");
    assert_eq!(me.department, "social_insurance");
    assert_eq!(me.role(), pb::Role::Consumer);
    assert_eq!(me.certificate_serial, id.serial);
    assert_eq!(me.certificate_fingerprint.len(), 64);
    gw.stop().await
}

async fn metadata_cannot_spoof_the_department(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let id = gw.issue("education", Role::Consumer).await?;
    let mut request = tonic::Request::new(pb::WhoAmIRequest {});
    for (key, value) in [
        ("x-fedx-department", "public_security"),
        ("x-fedx-role", "admin"),
        ("x-forwarded-client-cert", "spiffe://fedx.internal/dept/gateway_ops/admin"),
    ] {
        request.metadata_mut().insert(key, value.parse()?);
    }
    let me = GatewayClient::new(gw.channel(Some(&id))?).who_am_i(request).await?.into_inner();
    let me = me.caller.expect("caller present");
    assert_eq!((me.department.as_str(), me.role()), ("education", pb::Role::Consumer));
    gw.stop().await
}

async fn no_client_certificate_is_refused(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let err = who_am_i(&gw, None).await.expect_err("a call without a client certificate must fail");
    assert_ne!(err.code(), Code::Ok);
    gw.stop().await
}

async fn certificate_from_another_ca_is_refused(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let (rogue_ca, _) = CertificateAuthority::generate("rogue CA", 30)?;
    let rogue =
        rogue_ca.issue_client(&gw.config.trust_domain, "tax", Role::Consumer, Validity::days_from_now(30))?;
    who_am_i(&gw, Some(&(&rogue).into())).await.expect_err("a certificate from another CA must be refused");
    gw.stop().await
}

async fn expired_and_not_yet_valid_certificates_are_refused(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let expired = gw
        .issue_valid("tax", Role::Consumer, Validity { not_before: now - 10 * day, not_after: now - day })
        .await?;
    let future = gw
        .issue_valid("tax", Role::Consumer, Validity { not_before: now + day, not_after: now + 10 * day })
        .await?;
    let valid = gw.issue("tax", Role::Consumer).await?;
    who_am_i(&gw, Some(&expired)).await.expect_err("expired certificate must be refused");
    who_am_i(&gw, Some(&future)).await.expect_err("not-yet-valid certificate must be refused");
    who_am_i(&gw, Some(&valid)).await?;
    gw.stop().await
}

async fn identity_outside_the_registry_is_refused(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let ca = gw.ca()?;
    let validity = Validity::days_from_now(30);
    // Signed by the right CA, but: a role the department may not hold, an unknown department, and a
    // foreign trust domain. None of them may get in.
    let wrong_role = ca.issue_client(&gw.config.trust_domain, "tax", Role::Admin, validity)?;
    let unknown_dept = ca.issue_client(&gw.config.trust_domain, "mars_bureau", Role::Consumer, validity)?;
    let foreign_domain = ca.issue_client("other.internal", "tax", Role::Consumer, validity)?;
    for cert in [&wrong_role, &unknown_dept, &foreign_domain] {
        who_am_i(&gw, Some(&cert.into())).await.expect_err("identity outside the registry must be refused");
    }
    gw.stop().await
}

async fn revocation_applies_to_new_and_open_connections_without_restart(
    backend: Backend,
) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let id = gw.issue("tax", Role::Consumer).await?;
    let bystander = gw.issue("education", Role::Consumer).await?;
    let open = GatewayClient::new(gw.channel(Some(&id))?);
    open.clone().who_am_i(pb::WhoAmIRequest {}).await?;

    // Revoke the way `fedx certs revoke` does: registry + CRL, from outside the gateway process.
    fedx_gateway::pki::revoke(&gw.store, &gw.paths, &gw.config, &id.serial, RevocationReason::KeyCompromise)
        .await?;
    let revoked_at = Instant::now();

    let refusal = loop {
        match open.clone().who_am_i(pb::WhoAmIRequest {}).await {
            Err(status) => break status,
            Ok(_) if revoked_at.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(_) => anyhow::bail!("revoked certificate still served on an open connection after 5 s"),
        }
    };
    assert_eq!(refusal.code(), Code::Unauthenticated, "{refusal:?}");
    assert!(refusal.message().contains("revoked"), "{}", refusal.message());
    assert!(refusal.message().contains(&id.serial), "{}", refusal.message());

    who_am_i(&gw, Some(&id)).await.expect_err("a new connection with a revoked certificate must fail");
    who_am_i(&gw, Some(&bystander)).await?;
    gw.stop().await
}

async fn role_not_allowed_is_permission_denied_naming_the_role(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let consumer = gw.issue("tax", Role::Consumer).await?;
    let status = AdminClient::new(gw.channel(Some(&consumer))?)
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .expect_err("a consumer must not list certificates");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("requires role admin"), "{}", status.message());
    assert!(status.message().contains("consumer"), "{}", status.message());

    let auditor = gw.issue("discipline_inspection", Role::Auditor).await?;
    let status = pb::identity_service_client::IdentityServiceClient::new(gw.channel(Some(&auditor))?)
        .resolve_identity(pb::ResolveIdentityRequest::default())
        .await
        .expect_err("an auditor must not resolve identities");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("requires role consumer"), "{}", status.message());
    gw.stop().await
}

async fn admin_lists_and_revokes_over_rpc(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let admin = gw.issue("gateway_ops", Role::Admin).await?;
    let victim = gw.issue("industry_commerce", Role::Consumer).await?;
    let victim_open = GatewayClient::new(gw.channel(Some(&victim))?);
    victim_open.clone().who_am_i(pb::WhoAmIRequest {}).await?;

    let mut client = AdminClient::new(gw.channel(Some(&admin))?);
    let listed = client.list_certificates(pb::ListCertificatesRequest::default()).await?.into_inner();
    let serials: Vec<_> = listed.certificates.iter().map(|c| c.serial.as_str()).collect();
    assert!(
        serials.contains(&victim.serial.as_str()) && serials.contains(&admin.serial.as_str()),
        "{serials:?}"
    );

    client
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: victim.serial.clone(),
            reason: pb::CertificateRevocationReason::KeyCompromise as i32,
        })
        .await?;
    // Revoked through this replica's API: effective on the very next call, no poll interval needed.
    let status = victim_open.clone().who_am_i(pb::WhoAmIRequest {}).await.expect_err("revoked at once");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Idempotent: a second revocation returns the certificate with its first reason.
    let again = client
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: victim.serial.clone(),
            reason: pb::CertificateRevocationReason::Superseded as i32,
        })
        .await?
        .into_inner()
        .certificate
        .expect("certificate returned");
    assert_eq!(again.status(), pb::CertificateStatus::Revoked);
    assert_eq!(again.revocation_reason(), pb::CertificateRevocationReason::KeyCompromise);
    let unknown = client
        .revoke_certificate(pb::RevokeCertificateRequest { serial: "abcdef".into(), reason: 0 })
        .await
        .expect_err("unknown serial");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let malformed = client
        .revoke_certificate(pb::RevokeCertificateRequest { serial: "not hex!".into(), reason: 0 })
        .await
        .expect_err("malformed serial");
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
    gw.stop().await
}

async fn a_verification_without_purpose_or_claims_is_refused_field_by_field(
    backend: Backend,
) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let consumer = gw.issue("social_insurance", Role::Consumer).await?;
    let status =
        pb::verification_service_client::VerificationServiceClient::new(gw.channel(Some(&consumer))?)
            .joint_verify(pb::JointVerifyRequest::default())
            .await
            .expect_err("nothing to verify");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields: Vec<String> = tonic_types::StatusExt::get_details_bad_request(&status)
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["purpose", "claims"]);
    gw.stop().await
}

async fn reflection_lists_the_contract_for_grpcurl(backend: Backend) -> anyhow::Result<()> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let gw = TestGateway::start(backend).await?;
    let id = gw.issue("tax", Role::Consumer).await?;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(gw.channel(Some(&id))?)
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await?.and_then(|r| r.message_response)
    else {
        anyhow::bail!("reflection did not list services");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["fedx.v1.WorkerViewService", "fedx.v1.AuditService", "grpc.health.v1.Health"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    gw.stop().await
}

async fn silent_client_is_dropped_after_the_handshake_timeout(backend: Backend) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;

    let gw = TestGateway::start(backend).await?;
    let mut socket = tokio::net::TcpStream::connect(gw.addr()).await?;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    // The server must close the connection on its own once the handshake timeout (1 s in tests) passes.
    let read = tokio::time::timeout(Duration::from_secs(4), socket.read(&mut buf)).await?;
    assert!(matches!(read, Ok(0) | Err(_)), "connection should be closed, got {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", started.elapsed());
    gw.stop().await
}

backend_suite!(
    reflection_lists_the_contract_for_grpcurl,
    silent_client_is_dropped_after_the_handshake_timeout,
    department_sees_its_identity_from_the_certificate,
    metadata_cannot_spoof_the_department,
    no_client_certificate_is_refused,
    certificate_from_another_ca_is_refused,
    expired_and_not_yet_valid_certificates_are_refused,
    identity_outside_the_registry_is_refused,
    revocation_applies_to_new_and_open_connections_without_restart,
    role_not_allowed_is_permission_denied_naming_the_role,
    admin_lists_and_revokes_over_rpc,
    a_verification_without_purpose_or_claims_is_refused_field_by_field,
);
