//! GetWorkerView end to end over mTLS, against sources seeded by the synthetic generator, on both
//! backends: exactly the granted fields for every shipped purpose, the legal basis (statute or consent)
//! recorded with the field names disclosed, masking, partial views when a source is down or slow, and the
//! refusals in the order the contract promises.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fedx_adapters::{Department, SeedOptions, TruthRecord};
use fedx_gateway::audit::record::LegalBasis;
use fedx_gateway::authn::Role;
use fedx_gateway::policy::{Purpose, PurposeCatalogue, BUILT_IN_CATALOGUE};
use fedx_tests::status::{metadata, reason, record_of, with_request_id};
use fedx_tests::well_known;
use fedx_tests::wire::fields_present;
use fedx_tests::{backend_suite, pb, subject_of, Backend, Fault, TestGateway};
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

type ViewClient = pb::worker_view_service_client::WorkerViewServiceClient<tonic::transport::Channel>;
type ConsentClient = pb::consent_service_client::ConsentServiceClient<tonic::transport::Channel>;

fn population() -> SeedOptions {
    SeedOptions::new(300, 23)
}

fn catalogue() -> PurposeCatalogue {
    PurposeCatalogue::from_toml(BUILT_IN_CATALOGUE).expect("the shipped catalogue parses")
}

fn view_request(purpose: &str, person: &TruthRecord, consent_id: &str) -> pb::GetWorkerViewRequest {
    pb::GetWorkerViewRequest {
        purpose: purpose.into(),
        subject: Some(subject_of(person)),
        field_categories: Vec::new(),
        consent_id: consent_id.into(),
    }
}

async fn view_client(gw: &TestGateway, dept: &str) -> anyhow::Result<ViewClient> {
    let id = gw.issue(dept, Role::Consumer).await?;
    Ok(ViewClient::new(gw.channel(Some(&id))?))
}

/// Every `{category}.{field}` carrying a value anywhere in the view (provenance excluded: it accompanies
/// every value), read from the wire encoding so that a field added to the contract is covered too.
fn disclosed(view: &pb::GetWorkerViewResponse) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |category: &str, fields: BTreeSet<String>| {
        out.extend(fields.into_iter().filter(|f| f != "provenance").map(|f| format!("{category}.{f}")));
    };
    if let Some(identity) = &view.identity {
        add("identity", fields_present(identity, "IdentitySummary"));
    }
    for p in &view.residence_permits {
        add("residence_permit", fields_present(p, "ResidencePermit"));
    }
    for e in &view.employment {
        add("employment", fields_present(e, "Employment"));
    }
    for c in &view.contributions {
        add("contributions", fields_present(c, "ContributionSummary"));
    }
    for a in &view.arrears {
        add("arrears", fields_present(a, "ContributionArrears"));
    }
    for e in &view.enrolments {
        add("enrolment", fields_present(e, "ChildEnrolment"));
    }
    for b in &view.enterprises {
        add("enterprise", fields_present(b, "Business"));
    }
    for b in &view.individual_businesses {
        add("individual_business", fields_present(b, "Business"));
    }
    out
}

fn granted(purpose: &Purpose) -> BTreeSet<String> {
    purpose.grants.values().flatten().cloned().collect()
}

/// Every valid citizen ID number (17 digits, a correct check character, a real birth date) in the
/// encoded view. USCIs of 18 digits are not mistaken for one: their "birth dates" are not dates.
fn full_ids_in(view: &pb::GetWorkerViewResponse) -> Vec<String> {
    let text = String::from_utf8_lossy(&view.encode_to_vec()).into_owned();
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 18 <= chars.len() {
        let candidate: String = chars[i..i + 18].iter().collect();
        let starts_a_run = i == 0 || !chars[i - 1].is_ascii_digit();
        let shaped = chars[i..i + 17].iter().all(char::is_ascii_digit)
            && (chars[i + 17].is_ascii_digit() || chars[i + 17] == 'X');
        if starts_a_run && shaped && candidate.parse::<fedx_adapters::ident::CitizenId>().is_ok() {
            found.push(candidate);
            i += 18;
        } else {
            i += 1;
        }
    }
    found
}

/// A statutory purpose is served without consent: exactly the granted fields, the full ID where the
/// purpose grants it, and an exchange record naming the statute, the sources and the same fields.
async fn statutory_purposes_disclose_exactly_their_grants(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let catalogue = catalogue();
    let person = well_known(&truth);
    let mut client = view_client(&gw, "social_insurance").await?;
    for code in ["wage_arrears_investigation", "social_insurance_enrolment"] {
        let purpose = catalogue.purpose(code).expect("shipped");
        let request_id = format!("view-{code}");
        let response =
            client.get_worker_view(with_request_id(view_request(code, person, ""), &request_id)).await?;
        let view = response.into_inner();
        let shown = disclosed(&view);
        let grant = granted(purpose);
        let extra: Vec<_> = shown.difference(&grant).collect();
        assert!(extra.is_empty(), "{code}: fields beyond the grant: {extra:?}");
        assert!(!view.employment.is_empty(), "{code}: the person has employment on record");
        assert!(
            shown.contains("employment.employer_usci") && shown.contains("identity.citizen_id"),
            "{code}: {shown:?}"
        );
        assert_eq!(
            view.identity.as_ref().and_then(|i| i.citizen_id.as_ref()).map(|t| t.value.as_str()),
            Some(person.citizen_id.as_str()),
            "{code}: full_citizen_id purposes show the number"
        );
        assert!(!view.partial && view.unavailable_departments.is_empty());
        assert_eq!(
            full_ids_in(&view),
            std::slice::from_ref(&person.citizen_id),
            "{code}: only the worker's own number, in full"
        );
        assert_eq!(
            view.legal_basis.and_then(|b| b.basis),
            Some(pb::legal_basis::Basis::Statute(purpose.statute().expect("statutory").to_owned()))
        );
        for employment in &view.employment {
            assert!(!employment.provenance.is_empty(), "every value carries its source");
        }

        let record = record_of(&gw, &request_id).await?;
        assert_eq!(record.exchange.outcome_code, 0);
        assert_eq!(record.exchange.purpose, code);
        assert_eq!(record.exchange.worker_ref, view.worker_ref);
        assert_eq!(
            record.exchange.legal_basis,
            Some(LegalBasis::Statute(purpose.statute().unwrap_or_default().to_owned()))
        );
        let recorded: BTreeSet<String> = record.exchange.disclosed_fields.iter().cloned().collect();
        // The record names every field shown, and may name more: a zero count (no months in arrears) is
        // disclosed too, but proto3 leaves zeros off the wire.
        assert!(recorded.is_superset(&shown), "{code}: shown {shown:?}, recorded {recorded:?}");
        assert!(recorded.is_subset(&grant), "{code}: recorded beyond the grant: {recorded:?}");
        assert!(
            record.exchange.sources_consulted.iter().any(|d| d == "tax"),
            "{:?}",
            record.exchange.sources_consulted
        );
    }
    gw.stop().await
}

/// Purposes that grant no worker data, purposes of other departments, unknown purposes and a missing
/// consent are refused before any source is asked, each with its documented reason — and recorded.
async fn refusals_follow_the_contract(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let person = well_known(&truth);
    let mut social = view_client(&gw, "social_insurance").await?;

    let status = social.get_worker_view(view_request("no_such_purpose", person, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "PURPOSE_UNKNOWN");
    assert!(status
        .get_details_bad_request()
        .is_some_and(|b| b.field_violations.iter().any(|v| v.field == "purpose")));

    // residence_permit_application belongs to public security.
    let status =
        social.get_worker_view(view_request("residence_permit_application", person, "")).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "PURPOSE_NOT_PERMITTED"));
    assert_eq!(metadata(&status, "purpose"), "residence_permit_application");

    for code in ["employer_compliance", "access_history"] {
        let status = social.get_worker_view(view_request(code, person, "")).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::PermissionDenied, "PURPOSE_NOT_PERMITTED"),
            "{code}"
        );
    }

    let mut police = view_client(&gw, "public_security").await?;
    let request_id = "view-without-consent";
    let status = police
        .get_worker_view(with_request_id(
            view_request("residence_permit_application", person, ""),
            request_id,
        ))
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "CONSENT_REQUIRED"));
    let record = record_of(&gw, request_id).await?;
    assert_eq!(record.exchange.outcome_reason, "CONSENT_REQUIRED");
    assert!(record.exchange.disclosed_fields.is_empty());

    // A consent id that does not exist.
    let status = police
        .get_worker_view(view_request(
            "residence_permit_application",
            person,
            "cs_00000000000000000000000000000000",
        ))
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "CONSENT_NOT_FOUND"));

    // Bad input: every problem at once.
    let mut bad = view_request("wage_arrears_investigation", person, "");
    bad.field_categories = vec![0, 42];
    bad.subject = Some(pb::SubjectQuery { citizen_id: "12345".into(), ..Default::default() });
    let status = social.get_worker_view(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["subject.citizen_id", "field_categories[0]", "field_categories[1]"]);
    gw.stop().await
}

/// Name and birth date shared by two people: FAILED_PRECONDITION naming the fields that would settle it.
async fn ambiguous_subjects_say_what_would_settle_them(backend: Backend) -> anyhow::Result<()> {
    let options = SeedOptions {
        noise: fedx_adapters::NoiseConfig { namesake: 0.1, ..Default::default() },
        ..population()
    };
    let (gw, truth) = TestGateway::start_with_sources(backend, options).await?;
    let b = truth.iter().find(|t| t.namesake_of.is_some()).expect("namesakes seeded");
    let mut client = view_client(&gw, "social_insurance").await?;
    let mut request = view_request("wage_arrears_investigation", b, "");
    request.subject = Some(pb::SubjectQuery {
        name: b.name.clone(),
        birth_date: b.birth_date.clone(),
        ..Default::default()
    });
    let status = client.get_worker_view(request).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "SUBJECT_AMBIGUOUS"));
    assert!(metadata(&status, "disambiguating_fields").contains("citizen_id"), "{status:?}");
    assert!(!status.message().contains(&b.name));
    gw.stop().await
}

/// A source that is down or too slow leaves a marked gap, within the source timeout; the others still
/// answer; when it is back, so is its part.
async fn a_source_offline_gives_a_partial_view(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let person = well_known(&truth);
    let mut client = view_client(&gw, "social_insurance").await?;
    let request = || view_request("wage_arrears_investigation", person, "");
    let full = client.get_worker_view(request()).await?.into_inner();
    assert!(!full.partial);

    gw.faults.set(Department::Tax, Fault::SlowFacts(Duration::from_secs(30)));
    let started = Instant::now();
    let partial = client.get_worker_view(with_request_id(request(), "view-slow-tax")).await?.into_inner();
    let took = started.elapsed();
    let timeout = gw.config.sources.timeout;
    assert!(took < timeout * 3, "answered in {took:?} with a {timeout:?} source timeout");
    assert!(partial.partial);
    assert_eq!(partial.unavailable_departments, ["tax"]);
    assert!(partial.omitted.iter().any(|o| o.department == "tax"
        && o.reason() == pb::OmissionReason::SourceUnavailable
        && o.category() == pb::FieldCategory::Employment));
    // Social insurance still attests employment.
    assert!(partial
        .employment
        .iter()
        .all(|e| e.periods.iter().all(|p| !p.departments.iter().any(|d| d == "tax"))));
    let record = record_of(&gw, "view-slow-tax").await?;
    assert_eq!(record.exchange.outcome_code, 0, "a partial view is an answer");

    gw.faults.set(Department::Tax, Fault::Down);
    let down = client.get_worker_view(request()).await?.into_inner();
    assert!(down.partial && down.unavailable_departments == ["tax"]);

    gw.faults.clear();
    let back = client.get_worker_view(request()).await?.into_inner();
    assert!(!back.partial);
    assert_eq!(back.employment, full.employment);
    gw.stop().await
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Registers a consent of `person` for `dept` and `purpose` over `categories`, valid for `seconds`.
async fn grant(
    gw: &TestGateway,
    dept: &str,
    purpose: &str,
    person: &TruthRecord,
    categories: &[pb::FieldCategory],
    seconds: i64,
) -> anyhow::Result<String> {
    let id = gw.issue(dept, Role::Consumer).await?;
    let mut client = ConsentClient::new(gw.channel(Some(&id))?);
    let response = client
        .grant_consent(pb::GrantConsentRequest {
            subject: Some(subject_of(person)),
            grantee_department: String::new(),
            purpose: purpose.into(),
            field_categories: categories.iter().map(|c| *c as i32).collect(),
            valid_from: None,
            valid_until: Some(prost_types::Timestamp { seconds: unix_now() + seconds, nanos: 0 }),
            evidence_sha256: "ab".repeat(32),
            supersedes_consent_id: String::new(),
            request_id: String::new(),
        })
        .await?;
    Ok(response.into_inner().consent.expect("consent").consent_id)
}

/// Every consent purpose: the view needs an ACTIVE consent of this worker for this department and
/// purpose, shows exactly the granted fields it covers (never a full ID number: none of these purposes
/// grants one), records the consent as the legal basis, and stops at the very next call after revocation.
async fn consent_purposes_need_and_honour_consent(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let catalogue = catalogue();
    let person = well_known(&truth);
    let other =
        truth.iter().find(|t| t.person != person.person && t.namesake_of.is_none()).expect("someone else");
    for (code, dept) in [
        ("residence_permit_application", "public_security"),
        ("child_school_enrolment", "education"),
        ("points_based_services", "education"),
        ("points_based_services", "public_security"),
    ] {
        let purpose = catalogue.purpose(code).expect("shipped");
        let categories: Vec<pb::FieldCategory> = purpose.field_categories().map(|c| c.to_proto()).collect();
        let consent_id = grant(&gw, dept, code, person, &categories, 86_400).await?;
        let mut client = view_client(&gw, dept).await?;
        let request_id = format!("view-{code}-{dept}");
        let view = client
            .get_worker_view(with_request_id(view_request(code, person, &consent_id), &request_id))
            .await?
            .into_inner();
        let shown = disclosed(&view);
        let grant_fields = granted(purpose);
        assert!(shown.is_subset(&grant_fields), "{code}: {shown:?} beyond {grant_fields:?}");
        assert!(!shown.is_empty(), "{code}: the person has data in the granted categories");
        assert!(full_ids_in(&view).is_empty(), "{code}: a full ID number in a view that does not grant it");
        assert_eq!(
            view.legal_basis.and_then(|b| b.basis),
            Some(pb::legal_basis::Basis::ConsentId(consent_id.clone()))
        );
        let record = record_of(&gw, &request_id).await?;
        assert_eq!(record.exchange.legal_basis, Some(LegalBasis::Consent(consent_id.clone())));
        assert!(record.exchange.disclosed_fields.iter().all(|f| grant_fields.contains(f)));

        // The consent of one person is no basis for another.
        let status = client.get_worker_view(view_request(code, other, &consent_id)).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::PermissionDenied, "CONSENT_MISMATCH"),
            "{code}"
        );

        // Revoked at any desk: refused at the very next call.
        let desk = gw.issue("tax", Role::Consumer).await?;
        ConsentClient::new(gw.channel(Some(&desk))?)
            .revoke_consent(pb::RevokeConsentRequest {
                consent_id: consent_id.clone(),
                reason: pb::RevocationReason::WithdrawnByWorker as i32,
            })
            .await?;
        let status = client.get_worker_view(view_request(code, person, &consent_id)).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::PermissionDenied, "CONSENT_REVOKED"),
            "{code}"
        );
        assert_eq!(metadata(&status, "consent_id"), consent_id);
    }
    gw.stop().await
}

/// A consent covering less than the purpose grants: asked for everything, the view shows what it covers
/// and lists the rest as NO_CONSENT; asked explicitly for an uncovered category, the call is refused
/// naming it. An expired consent is refused.
async fn consent_scope_and_expiry(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let person = well_known(&truth);
    let code = "residence_permit_application";
    let dept = "public_security";
    let consent_id = grant(&gw, dept, code, person, &[pb::FieldCategory::Employment], 86_400).await?;
    let mut client = view_client(&gw, dept).await?;

    let view = client.get_worker_view(view_request(code, person, &consent_id)).await?.into_inner();
    assert!(view.contributions.is_empty());
    assert!(!view.employment.is_empty());
    assert!(view.omitted.iter().any(|o| o.category() == pb::FieldCategory::Contributions
        && o.reason() == pb::OmissionReason::NoConsent
        && o.department.is_empty()));
    assert!(disclosed(&view).iter().all(|f| f.starts_with("employment.")));

    let mut explicit = view_request(code, person, &consent_id);
    explicit.field_categories =
        vec![pb::FieldCategory::Employment as i32, pb::FieldCategory::Contributions as i32];
    let status = client.get_worker_view(explicit).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "CONSENT_INSUFFICIENT"));
    assert_eq!(metadata(&status, "missing_categories"), "contributions");

    // Asking for a category the purpose does not grant is not an error: it is listed as not permitted.
    let mut beyond = view_request(code, person, &consent_id);
    beyond.field_categories = vec![pb::FieldCategory::Employment as i32, pb::FieldCategory::Identity as i32];
    let view = client.get_worker_view(beyond).await?.into_inner();
    assert!(view.identity.is_none());
    assert!(view.omitted.iter().any(|o| o.category() == pb::FieldCategory::Identity
        && o.reason() == pb::OmissionReason::NotPermittedForPurpose));

    let short = grant(&gw, dept, code, person, &[pb::FieldCategory::Employment], 2).await?;
    assert!(
        client.get_worker_view(view_request(code, person, &short)).await.is_ok(),
        "valid for two seconds"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let status = client.get_worker_view(view_request(code, person, &short)).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "CONSENT_EXPIRED"));
    gw.stop().await
}

backend_suite!(
    consent_purposes_need_and_honour_consent,
    consent_scope_and_expiry,
    statutory_purposes_disclose_exactly_their_grants,
    refusals_follow_the_contract,
    ambiguous_subjects_say_what_would_settle_them,
    a_source_offline_gives_a_partial_view,
);
