//! The purpose catalogue over mTLS on both backends: administrators read it and reload it without a
//! restart (an invalid file changes nothing and says why), every reload is in the exchange log, WhoAmI
//! lists a department's purposes, and ResolveIdentity refuses purposes the department is not registered for.

use fedx_gateway::audit::store::ExchangeFilter;
use fedx_gateway::authn::Role;
use fedx_gateway::policy::BUILT_IN_CATALOGUE;
use fedx_tests::status::reason;
use fedx_tests::{backend_suite, pb, Backend, TestGateway};
use tonic::Code;
use tonic_types::StatusExt;

type AdminClient = pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>;

async fn reload_swaps_a_valid_catalogue_and_refuses_an_invalid_one(backend: Backend) -> anyhow::Result<()> {
    let path = tempfile::NamedTempFile::new()?.into_temp_path();
    std::fs::write(&path, BUILT_IN_CATALOGUE)?;
    let gw = TestGateway::start_configured(backend, |config| {
        config.policy.purposes_file = Some(path.to_path_buf());
    })
    .await?;
    let admin = gw.issue("gateway_ops", Role::Admin).await?;
    let mut client = AdminClient::new(gw.channel(Some(&admin))?);

    let catalogue = client.get_purpose_catalogue(pb::GetPurposeCatalogueRequest {}).await?.into_inner();
    let codes: Vec<&str> = catalogue.purposes.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(codes.len(), 7);
    assert!(codes.windows(2).all(|w| w[0] < w[1]), "ordered by code: {codes:?}");
    let v1 = catalogue.policy_version.clone();

    // Education is not registered for the wage-arrears purpose: its resolution is refused.
    let education = gw.issue("education", Role::Consumer).await?;
    let resolve = pb::ResolveIdentityRequest {
        purpose: "wage_arrears_investigation".into(),
        subject: Some(pb::SubjectQuery { citizen_id: "11010519491231002X".into(), ..Default::default() }),
    };
    let mut identity = pb::identity_service_client::IdentityServiceClient::new(gw.channel(Some(&education))?);
    let status = identity.resolve_identity(resolve.clone()).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "PURPOSE_NOT_PERMITTED"));

    // An invalid file: refused with the entry at fault, the catalogue in force unchanged.
    std::fs::write(
        &path,
        BUILT_IN_CATALOGUE.replace(r#"departments = ["social_insurance"]"#, r#"departments = ["housing"]"#),
    )?;
    let status = client.reload_policy(pb::ReloadPolicyRequest { validate_only: false }).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "POLICY_INVALID"));
    let violations = status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
    assert!(
        violations.iter().any(|v| v.field.ends_with(".departments") && v.description.contains("housing")),
        "{violations:?}"
    );
    assert_eq!(
        client.get_purpose_catalogue(pb::GetPurposeCatalogueRequest {}).await?.into_inner().policy_version,
        v1
    );

    // A valid change: validate-only reports it without putting it in force, reload puts it in force.
    let edited = BUILT_IN_CATALOGUE.replace(
        r#"departments = ["social_insurance"]
claim_types = [
    "identity_matches","#,
        r#"departments = ["education", "social_insurance"]
claim_types = [
    "identity_matches","#,
    );
    assert_ne!(edited, BUILT_IN_CATALOGUE, "the edit applies to the wage-arrears purpose");
    std::fs::write(&path, &edited)?;
    let checked = client.reload_policy(pb::ReloadPolicyRequest { validate_only: true }).await?.into_inner();
    assert_eq!(checked.previous_policy_version, v1);
    assert_ne!(checked.policy_version, v1);
    assert!(checked.loaded_at.is_none());
    assert_eq!(
        client.get_purpose_catalogue(pb::GetPurposeCatalogueRequest {}).await?.into_inner().policy_version,
        v1
    );
    let reloaded = client
        .reload_policy(tonic::Request::new(pb::ReloadPolicyRequest { validate_only: false }))
        .await?
        .into_inner();
    assert_eq!((reloaded.previous_policy_version.as_str(), reloaded.purpose_count), (v1.as_str(), 7));
    assert_eq!(reloaded.policy_version, checked.policy_version);
    assert!(reloaded.loaded_at.is_some() && reloaded.department_count >= 5);

    // In force for the next request, without a restart.
    let status = identity.resolve_identity(resolve).await;
    assert!(status.as_ref().map_or_else(|s| s.code() != Code::PermissionDenied, |_| true), "{status:?}");
    let who = pb::gateway_service_client::GatewayServiceClient::new(gw.channel(Some(&education))?)
        .who_am_i(pb::WhoAmIRequest {})
        .await?
        .into_inner();
    assert!(who.purposes.iter().any(|p| p == "wage_arrears_investigation"), "{:?}", who.purposes);

    // Every reload attempt is in the exchange log with its outcome; the successful one names both versions.
    let store = gw.gateway.as_ref().expect("running").state.audit.store();
    let filter =
        ExchangeFilter { method: Some("/fedx.v1.AdminService/ReloadPolicy".into()), ..Default::default() };
    let records = store.query(&filter, 0, 100).await?;
    let outcomes: Vec<(i32, &str)> =
        records.iter().map(|r| (r.exchange.outcome_code, r.exchange.outcome_reason.as_str())).collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(outcomes[0], (Code::FailedPrecondition as i32, "POLICY_INVALID"));
    assert_eq!(outcomes[1], (0, format!("POLICY_VALID {v1} -> {}", checked.policy_version).as_str()));
    assert_eq!(outcomes[2], (0, format!("POLICY_RELOADED {v1} -> {}", reloaded.policy_version).as_str()));
    gw.stop().await
}

async fn who_am_i_lists_the_departments_purposes(backend: Backend) -> anyhow::Result<()> {
    let gw = TestGateway::start(backend).await?;
    let who = |dept: &'static str, role| {
        let gw = &gw;
        async move {
            let id = gw.issue(dept, role).await?;
            let response = pb::gateway_service_client::GatewayServiceClient::new(gw.channel(Some(&id))?)
                .who_am_i(pb::WhoAmIRequest {})
                .await?;
            anyhow::Ok(response.into_inner().purposes)
        }
    };
    assert_eq!(
        who("public_security", Role::Consumer).await?,
        ["access_history", "points_based_services", "residence_permit_application"]
    );
    assert_eq!(
        who("social_insurance", Role::Consumer).await?,
        ["access_history", "employer_compliance", "social_insurance_enrolment", "wage_arrears_investigation"]
    );
    assert!(who("discipline_inspection", Role::Auditor).await?.is_empty());
    gw.stop().await
}

backend_suite!(
    reload_swaps_a_valid_catalogue_and_refuses_an_invalid_one,
    who_am_i_lists_the_departments_purposes
);
