//! End-to-end over real mTLS: consent records. A front desk registers a worker's consent, the grantee
//! and the capturing department look it up, any desk lists a worker's consents and revokes one, and
//! superseding replaces a consent atomically. Requests are validated field by field without echoing
//! personal data, visibility and roles are enforced, and every call is in the exchange log with the
//! worker reference and the consent's purpose. Each test runs on SQLite and on PostgreSQL.

use std::time::{SystemTime, UNIX_EPOCH};

use fedx_adapters::{SeedOptions, TruthRecord};
use fedx_gateway::audit::record::{ExchangeRecord, LegalBasis};
use fedx_gateway::audit::store::ExchangeFilter;
use fedx_gateway::authn::Role;
use fedx_tests::status::{
    metadata as error_metadata, reason as error_reason, violations as field_violations,
};
use fedx_tests::{backend_suite, pb, resolvable, subject_of, Backend, ClientIdentity, TestGateway};
use tonic::transport::Channel;
use tonic::{Code, Status};

type ConsentClient = pb::consent_service_client::ConsentServiceClient<Channel>;

const PURPOSE: &str = "child_school_enrolment";
const GRANT: &str = "/fedx.v1.ConsentService/GrantConsent";
const GET: &str = "/fedx.v1.ConsentService/GetConsent";
const LIST: &str = "/fedx.v1.ConsentService/ListConsents";
const REVOKE: &str = "/fedx.v1.ConsentService/RevokeConsent";

fn population() -> SeedOptions {
    SeedOptions::new(200, 7)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() as i64
}

/// Sets `valid_until` to `days` from now. (The Timestamp type is reached through the generated message,
/// so the test crate needs no prost-types.)
fn valid_until_in(r: &mut pb::GrantConsentRequest, days: i64) {
    let t = r.valid_until.get_or_insert_with(Default::default);
    t.seconds = unix_now() + days * 86_400;
    t.nanos = 0;
}

fn valid_from_in(r: &mut pb::GrantConsentRequest, days: i64) {
    let t = r.valid_from.get_or_insert_with(Default::default);
    t.seconds = unix_now() + days * 86_400;
    t.nanos = 0;
}

async fn client(gw: &TestGateway, dept: &str) -> anyhow::Result<(ConsentClient, ClientIdentity)> {
    let id = gw.issue(dept, Role::Consumer).await?;
    Ok((ConsentClient::new(gw.channel(Some(&id))?), id))
}

fn grant_request(person: &TruthRecord) -> pb::GrantConsentRequest {
    let mut request = pb::GrantConsentRequest {
        subject: Some(subject_of(person)),
        grantee_department: "education".into(),
        purpose: PURPOSE.into(),
        field_categories: vec![pb::FieldCategory::Employment as i32, pb::FieldCategory::Contributions as i32],
        valid_from: None,
        valid_until: None,
        evidence_sha256: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08".into(),
        supersedes_consent_id: String::new(),
        request_id: String::new(),
    };
    valid_until_in(&mut request, 90);
    request
}

/// Asserts the status code and ErrorInfo reason of a failed call.
fn assert_error<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
    what: &str,
) -> Status {
    let status = match result {
        Ok(v) => panic!("{what}: expected {code:?}/{reason}, got {v:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert_eq!(error_reason(&status), reason, "{what}: {status:?}");
    status
}

/// Asserts that nothing the caller said about the person comes back in a status.
fn assert_no_personal_data(status: &Status, person: &TruthRecord) {
    let details = String::from_utf8_lossy(status.details()).into_owned();
    for text in [status.message(), details.as_str()] {
        assert!(!text.contains(&person.citizen_id), "citizen ID echoed: {status:?}");
        assert!(!text.contains(&person.name), "name echoed: {status:?}");
    }
}

async fn consent_lifecycle_grant_get_list_supersede_revoke(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let person = resolvable(&truth)[0];
    // Social insurance's service hall captures the consent for education (the grantee).
    let (mut desk, desk_id) = client(&gw, "social_insurance").await?;
    let (mut education, _) = client(&gw, "education").await?;
    let (mut tax, tax_id) = client(&gw, "tax").await?;

    let mut request = grant_request(person);
    request.request_id = "0b9f3c7e-5d1a-4c2b-8e6f-7a9d0c1b2e3f".into();
    let first = desk.grant_consent(request.clone()).await?.into_inner().consent.expect("consent returned");
    assert!(first.consent_id.starts_with("cs_") && first.consent_id.len() <= 64, "{}", first.consent_id);
    assert!(first.worker_ref.starts_with("wr_") && first.worker_ref.len() == 67, "{}", first.worker_ref);
    assert_eq!(first.status(), pb::ConsentStatus::Active);
    assert_eq!(first.grantee_department, "education");
    assert_eq!(first.purpose, PURPOSE);
    assert_eq!(
        first.field_categories,
        [pb::FieldCategory::Employment as i32, pb::FieldCategory::Contributions as i32]
    );
    assert_eq!(first.evidence_sha256, request.evidence_sha256.to_lowercase());
    let captured = first.captured_by.as_ref().expect("captured_by set");
    assert_eq!(captured.department, "social_insurance");
    assert_eq!(captured.role(), pb::Role::Consumer);
    assert_eq!(captured.certificate_serial, desk_id.serial);
    assert_eq!(captured.certificate_fingerprint.len(), 64);
    let valid_from = first.valid_from.expect("valid_from set").seconds;
    assert!((valid_from - unix_now()).abs() < 60, "valid_from defaults to now");
    assert!(first.created_at.is_some() && first.revoked_at.is_none() && first.revoked_by.is_none());
    assert_eq!(first.revocation_reason(), pb::RevocationReason::Unspecified);

    // A retry with the same request id returns the first consent.
    let retry = desk.grant_consent(request).await?.into_inner().consent.expect("consent returned");
    assert_eq!(retry, first);

    // The grantee and the capturing department see it; another department does not.
    let get = |id: &str| pb::GetConsentRequest { consent_id: id.to_owned() };
    let seen = education.get_consent(get(&first.consent_id)).await?.into_inner().consent.expect("consent");
    assert_eq!(seen, first);
    assert_eq!(desk.get_consent(get(&first.consent_id)).await?.into_inner().consent.as_ref(), Some(&first));
    let hidden = tax.get_consent(get(&first.consent_id)).await;
    let status =
        assert_error(hidden, Code::NotFound, "RESOURCE_NOT_FOUND", "GetConsent by another department");
    // Answered exactly like an id that does not exist.
    let missing = tax.get_consent(get("cs_00000000000000000000000000000000")).await.expect_err("unknown id");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        status.message().replace(&first.consent_id, "<id>"),
        missing.message().replace("cs_00000000000000000000000000000000", "<id>")
    );

    // The education desk corrects the consent with a new one that supersedes it (grantee: itself).
    let mut correction = grant_request(person);
    correction.grantee_department = String::new();
    correction.field_categories = vec![pb::FieldCategory::Contributions as i32];
    correction.supersedes_consent_id = first.consent_id.clone();
    let second = education.grant_consent(correction).await?.into_inner().consent.expect("consent");
    assert_eq!(second.grantee_department, "education");
    assert_eq!(second.supersedes_consent_id, first.consent_id);
    assert_eq!(second.worker_ref, first.worker_ref);
    let old = education.get_consent(get(&first.consent_id)).await?.into_inner().consent.expect("consent");
    assert_eq!(old.status(), pb::ConsentStatus::Superseded);

    // Any desk that can identify the worker lists all of their consents, newest first.
    let list =
        |statuses: Vec<pb::ConsentStatus>, page_size: i32, page_token: String| pb::ListConsentsRequest {
            subject: Some(subject_of(person)),
            statuses: statuses.into_iter().map(|s| s as i32).collect(),
            page_size,
            page_token,
        };
    let all = tax.list_consents(list(vec![], 0, String::new())).await?.into_inner();
    assert_eq!(all.worker_ref, first.worker_ref);
    let ids: Vec<_> = all.consents.iter().map(|c| c.consent_id.as_str()).collect();
    assert_eq!(ids, [second.consent_id.as_str(), first.consent_id.as_str()]);
    assert_eq!(all.consents[1].status(), pb::ConsentStatus::Superseded);
    assert!(all.next_page_token.is_empty());
    // Paging one at a time gives the same list.
    let page1 = tax.list_consents(list(vec![], 1, String::new())).await?.into_inner();
    assert_eq!(page1.consents.len(), 1);
    assert!(!page1.next_page_token.is_empty());
    let page2 = tax.list_consents(list(vec![], 1, page1.next_page_token.clone())).await?.into_inner();
    assert_eq!(page2.consents.len(), 1);
    assert_eq!(page2.consents[0].consent_id, first.consent_id);
    assert!(page2.next_page_token.is_empty(), "{}", page2.next_page_token);
    let bad_token = tax.list_consents(list(vec![], 1, "not-a-token".into())).await;
    let status = assert_error(bad_token, Code::InvalidArgument, "INVALID_REQUEST", "bad page token");
    assert_eq!(field_violations(&status), ["page_token"]);

    // The worker withdraws at the tax office's desk.
    let revoke = |id: &str| pb::RevokeConsentRequest {
        consent_id: id.to_owned(),
        reason: pb::RevocationReason::WithdrawnByWorker as i32,
    };
    let revoked =
        tax.revoke_consent(revoke(&second.consent_id)).await?.into_inner().consent.expect("consent");
    assert_eq!(revoked.status(), pb::ConsentStatus::Revoked);
    assert_eq!(revoked.revocation_reason(), pb::RevocationReason::WithdrawnByWorker);
    let by = revoked.revoked_by.as_ref().expect("revoked_by set");
    assert_eq!((by.department.as_str(), by.certificate_serial.as_str()), ("tax", tax_id.serial.as_str()));
    assert!(revoked.revoked_at.is_some());
    // Idempotent: a second revocation returns it unchanged.
    let again = desk
        .revoke_consent(pb::RevokeConsentRequest {
            consent_id: second.consent_id.clone(),
            reason: pb::RevocationReason::RegisteredInError as i32,
        })
        .await?
        .into_inner()
        .consent
        .expect("consent");
    assert_eq!(again, revoked);
    // A superseded consent has nothing left to revoke.
    let status = assert_error(
        tax.revoke_consent(revoke(&first.consent_id)).await,
        Code::FailedPrecondition,
        "CONSENT_SUPERSEDED",
        "revoke superseded",
    );
    assert_eq!(error_metadata(&status, "consent_id"), first.consent_id);
    assert_eq!(error_metadata(&status, "superseded_by"), second.consent_id);
    assert_error(
        tax.revoke_consent(revoke("cs_00000000000000000000000000000000")).await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
        "revoke unknown",
    );
    // A revoked consent cannot be superseded either.
    let mut resurrect = grant_request(person);
    resurrect.supersedes_consent_id = second.consent_id.clone();
    let status = assert_error(
        desk.grant_consent(resurrect).await,
        Code::FailedPrecondition,
        "CONSENT_REVOKED",
        "supersede revoked",
    );
    assert_eq!(error_metadata(&status, "consent_id"), second.consent_id);

    // The list shows the statuses now, and filters by them.
    let all = desk.list_consents(list(vec![], 0, String::new())).await?.into_inner();
    let statuses: Vec<_> = all.consents.iter().map(|c| c.status()).collect();
    assert_eq!(statuses, [pb::ConsentStatus::Revoked, pb::ConsentStatus::Superseded]);
    let revoked_only = desk.list_consents(list(vec![pb::ConsentStatus::Revoked], 0, String::new())).await?;
    let ids: Vec<_> = revoked_only.get_ref().consents.iter().map(|c| c.consent_id.as_str()).collect();
    assert_eq!(ids, [second.consent_id.as_str()]);
    let active = desk.list_consents(list(vec![pb::ConsentStatus::Active], 0, String::new())).await?;
    assert!(active.get_ref().consents.is_empty());
    gw.stop().await
}

async fn invalid_requests_get_field_violations_without_personal_data(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let people = resolvable(&truth);
    let person = people[0];
    let (mut desk, _) = client(&gw, "social_insurance").await?;

    // Every bad field at once, none echoed.
    let mut bad = grant_request(person);
    bad.subject = Some(pb::SubjectQuery {
        citizen_id: format!("{}9", person.citizen_id),
        name: person.name.clone(),
        ..Default::default()
    });
    bad.purpose = "wage_arrears_investigation".into();
    bad.field_categories = vec![0];
    valid_from_in(&mut bad, -1);
    bad.valid_until = None;
    bad.evidence_sha256 = "not a hash".into();
    bad.request_id = "x".repeat(65);
    let status = assert_error(
        desk.grant_consent(bad).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "many bad fields",
    );
    assert_eq!(
        field_violations(&status),
        [
            "subject.citizen_id",
            "purpose",
            "field_categories[0]",
            "valid_from",
            "valid_until",
            "evidence_sha256",
            "request_id"
        ]
    );
    assert_no_personal_data(&status, person);

    // Categories beyond what the purpose can grant; validity beyond its maximum (180 days).
    let mut too_much = grant_request(person);
    too_much.field_categories.push(pb::FieldCategory::Enterprise as i32);
    valid_until_in(&mut too_much, 181);
    let status = assert_error(
        desk.grant_consent(too_much).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "beyond the purpose",
    );
    assert_eq!(field_violations(&status), ["field_categories[2]", "valid_until"]);

    // An unknown purpose on its own.
    let mut unknown = grant_request(person);
    unknown.purpose = "no_such_purpose".into();
    let status = assert_error(
        desk.grant_consent(unknown).await,
        Code::InvalidArgument,
        "PURPOSE_UNKNOWN",
        "unknown purpose",
    );
    assert_eq!(field_violations(&status), ["purpose"]);

    // A grantee not registered for the purpose.
    let mut wrong_grantee = grant_request(person);
    wrong_grantee.grantee_department = "tax".into();
    let status = assert_error(
        desk.grant_consent(wrong_grantee).await,
        Code::PermissionDenied,
        "PURPOSE_NOT_PERMITTED",
        "grantee not registered",
    );
    assert_eq!(error_metadata(&status, "purpose"), PURPOSE);

    // A subject no source holds.
    let mut nobody = grant_request(person);
    nobody.subject = Some(pb::SubjectQuery { citizen_id: "11010519491231002X".into(), ..Default::default() });
    let status = assert_error(
        desk.grant_consent(nobody).await,
        Code::NotFound,
        "SUBJECT_NOT_FOUND",
        "unknown subject",
    );
    assert!(!status.message().contains("11010519491231002X"));

    // Superseding an unknown consent, or another person's.
    let mut unknown_old = grant_request(person);
    unknown_old.supersedes_consent_id = "cs_00000000000000000000000000000000".into();
    assert_error(
        desk.grant_consent(unknown_old).await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
        "unknown supersede",
    );
    let theirs = desk.grant_consent(grant_request(people[1])).await?.into_inner().consent.expect("consent");
    let mut cross = grant_request(person);
    cross.supersedes_consent_id = theirs.consent_id.clone();
    let status = assert_error(
        desk.grant_consent(cross).await,
        Code::FailedPrecondition,
        "CONSENT_MISMATCH",
        "cross-person",
    );
    assert_no_personal_data(&status, people[1]);

    // The other RPCs validate too.
    let status = assert_error(
        desk.revoke_consent(pb::RevokeConsentRequest { consent_id: "bad id!".into(), reason: 0 }).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "revoke",
    );
    assert_eq!(field_violations(&status), ["consent_id", "reason"]);
    let status = assert_error(
        desk.get_consent(pb::GetConsentRequest { consent_id: String::new() }).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "get",
    );
    assert_eq!(field_violations(&status), ["consent_id"]);
    let status = assert_error(
        desk.list_consents(pb::ListConsentsRequest {
            subject: None,
            statuses: vec![0, 42],
            page_size: -1,
            page_token: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "list",
    );
    assert_eq!(field_violations(&status), ["subject", "statuses[0]", "statuses[1]", "page_size"]);
    gw.stop().await
}

async fn only_consumers_may_call_and_only_parties_may_look(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let person = resolvable(&truth)[0];
    let (mut desk, _) = client(&gw, "social_insurance").await?;
    let consent = desk.grant_consent(grant_request(person)).await?.into_inner().consent.expect("consent");

    // The social-insurance provider endpoint, the auditors and the administrators may not.
    for (dept, role) in [
        ("social_insurance", Role::Provider),
        ("discipline_inspection", Role::Auditor),
        ("gateway_ops", Role::Admin),
    ] {
        let id = gw.issue(dept, role).await?;
        let mut other = ConsentClient::new(gw.channel(Some(&id))?);
        let status = assert_error(
            other.get_consent(pb::GetConsentRequest { consent_id: consent.consent_id.clone() }).await,
            Code::PermissionDenied,
            "ROLE_NOT_PERMITTED",
            &format!("{role} GetConsent"),
        );
        assert_eq!(error_metadata(&status, "required_roles"), "consumer");
        assert_error(
            other.grant_consent(grant_request(person)).await,
            Code::PermissionDenied,
            "ROLE_NOT_PERMITTED",
            &format!("{role} GrantConsent"),
        );
    }
    // A consumer that is neither grantee nor capturer is told nothing exists.
    for dept in ["public_security", "industry_commerce", "tax"] {
        let (mut other, _) = client(&gw, dept).await?;
        assert_error(
            other.get_consent(pb::GetConsentRequest { consent_id: consent.consent_id.clone() }).await,
            Code::NotFound,
            "RESOURCE_NOT_FOUND",
            dept,
        );
    }
    gw.stop().await
}

async fn consent_calls_are_audited_with_worker_ref_and_purpose(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let person = resolvable(&truth)[0];
    let (mut desk, _) = client(&gw, "social_insurance").await?;
    let (mut tax, _) = client(&gw, "tax").await?;
    let consent = desk.grant_consent(grant_request(person)).await?.into_inner().consent.expect("consent");
    desk.get_consent(pb::GetConsentRequest { consent_id: consent.consent_id.clone() }).await?;
    tax.get_consent(pb::GetConsentRequest { consent_id: consent.consent_id.clone() })
        .await
        .expect_err("hidden");
    tax.list_consents(pb::ListConsentsRequest { subject: Some(subject_of(person)), ..Default::default() })
        .await?;
    tax.revoke_consent(pb::RevokeConsentRequest {
        consent_id: consent.consent_id.clone(),
        reason: pb::RevocationReason::WithdrawnByWorker as i32,
    })
    .await?;
    let mut bad = grant_request(person);
    bad.evidence_sha256 = String::new();
    desk.grant_consent(bad).await.expect_err("invalid");

    // Records are durable before the answer, so they are all there now.
    let log = &gw.gateway.as_ref().expect("running").state.audit;
    let records: Vec<ExchangeRecord> = log.store().query(&ExchangeFilter::default(), 0, 1000).await?;
    let of = |method: &str| -> Vec<&ExchangeRecord> {
        records.iter().filter(|r| r.exchange.method == method).collect()
    };
    let basis = Some(LegalBasis::Consent(consent.consent_id.clone()));

    let grants = of(GRANT);
    assert_eq!(grants.len(), 2, "{grants:#?}");
    let ok = grants.iter().find(|r| r.exchange.outcome_code == 0).expect("successful grant recorded");
    assert_eq!(ok.exchange.worker_ref, consent.worker_ref);
    assert_eq!(ok.exchange.purpose, PURPOSE);
    assert_eq!(ok.exchange.legal_basis, basis);
    assert_eq!(ok.exchange.caller_dept, "social_insurance");
    let refused = grants.iter().find(|r| r.exchange.outcome_code != 0).expect("refused grant recorded");
    assert_eq!(refused.exchange.outcome_code, Code::InvalidArgument as i32);
    assert_eq!(refused.exchange.outcome_reason, "INVALID_REQUEST");
    assert_eq!(refused.exchange.purpose, PURPOSE);

    let gets = of(GET);
    assert_eq!(gets.len(), 2);
    let visible = gets.iter().find(|r| r.exchange.caller_dept == "social_insurance").expect("desk's get");
    assert_eq!(visible.exchange.worker_ref, consent.worker_ref);
    assert_eq!(visible.exchange.purpose, PURPOSE);
    assert_eq!(visible.exchange.legal_basis, basis);
    let hidden = gets.iter().find(|r| r.exchange.caller_dept == "tax").expect("tax's get");
    assert_eq!(hidden.exchange.outcome_code, Code::NotFound as i32);
    assert_eq!(hidden.exchange.worker_ref, "", "a consent the caller may not see is not attributed to them");

    let lists = of(LIST);
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].exchange.worker_ref, consent.worker_ref);

    let revokes = of(REVOKE);
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0].exchange.worker_ref, consent.worker_ref);
    assert_eq!(revokes[0].exchange.purpose, PURPOSE);
    assert_eq!(revokes[0].exchange.legal_basis, basis);
    assert_eq!(revokes[0].exchange.caller_dept, "tax");

    // No personal data anywhere in the consent calls' records.
    for record in records.iter().filter(|r| r.exchange.method.starts_with("/fedx.v1.ConsentService/")) {
        let text = format!("{:?}", record.exchange);
        assert!(!text.contains(&person.citizen_id) && !text.contains(&person.name), "{text}");
    }
    gw.stop().await
}

backend_suite!(
    consent_lifecycle_grant_get_list_supersede_revoke,
    invalid_requests_get_field_violations_without_personal_data,
    only_consumers_may_call_and_only_parties_may_look,
    consent_calls_are_audited_with_worker_ref_and_purpose,
);
