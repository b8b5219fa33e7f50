//! End-to-end identity resolution over real mTLS, against sources seeded by the synthetic generator.
//! Each test runs with the gateway store and the department sources on SQLite and on PostgreSQL.

use fedx_adapters::{NoiseConfig, SeedOptions, TruthRecord};
use fedx_gateway::authn::Role;
use fedx_tests::{backend_suite, pb, Backend, TestGateway};
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

type IdentityClient = pb::identity_service_client::IdentityServiceClient<tonic::transport::Channel>;

const PURPOSE: &str = "wage_arrears_investigation";

/// A small population with every default noise kind plus plenty of deliberate namesakes.
fn population() -> SeedOptions {
    SeedOptions {
        noise: NoiseConfig { namesake: 0.05, ..NoiseConfig::default() },
        ..SeedOptions::new(400, 11)
    }
}

async fn client(gw: &TestGateway, dept: &str) -> anyhow::Result<IdentityClient> {
    let id = gw.issue(dept, Role::Consumer).await?;
    Ok(IdentityClient::new(gw.channel(Some(&id))?))
}

fn request(subject: pb::SubjectQuery) -> pb::ResolveIdentityRequest {
    pb::ResolveIdentityRequest { purpose: PURPOSE.into(), subject: Some(subject) }
}

async fn id_and_name_resolve_to_a_stable_worker_ref(backend: Backend) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let mut client = client(&gw, "social_insurance").await?;
    let person: &TruthRecord = truth.iter().find(|t| t.records.len() >= 3).expect("someone in three sources");
    // Typed the way a service hall might: lower-case x, spaces, traditional characters are all normalised.
    let subject = pb::SubjectQuery {
        citizen_id: format!(" {} ", person.citizen_id.to_lowercase()),
        name: person.name.clone(),
        ..Default::default()
    };
    let first = client.resolve_identity(request(subject.clone())).await?.into_inner();
    assert_eq!(first.status(), pb::ResolutionStatus::Resolved);
    assert!(first.worker_ref.starts_with("wr_") && first.worker_ref.len() == 67, "{}", first.worker_ref);
    assert!(!first.worker_ref_key_id.is_empty());
    assert!(first.confidence > 0.99, "{}", first.confidence);
    assert!(first.unavailable_departments.is_empty());
    let departments: Vec<&str> = first.links.iter().map(|l| l.department.as_str()).collect();
    assert_eq!(departments, ["education", "industry_commerce", "public_security", "social_insurance", "tax"]);
    for link in &first.links {
        let expected = person.records.contains_key(&link.department);
        let linked = link.match_class() == pb::MatchClass::Linked;
        // Every department the truth lists is linked (this person has no unreachable record) or at
        // least shown; none the truth does not list is linked.
        assert!(!linked || expected, "{} linked but not in the truth", link.department);
        if linked {
            assert!(link.agreeing_fields.iter().any(|f| f == "citizen_id" || f == "phone"), "{link:?}");
            assert!(link.score >= 20.0);
        }
    }
    let ps = first.links.iter().find(|l| l.department == "public_security").expect("registry link");
    assert_eq!(ps.match_class(), pb::MatchClass::Linked);
    // The worker reference is stable across calls (and calling departments).
    let mut other = client_for(&gw, "education").await?;
    let second = other
        .resolve_identity(pb::ResolveIdentityRequest {
            purpose: "child_school_enrolment".into(),
            subject: Some(subject),
        })
        .await?
        .into_inner();
    assert_eq!(second.worker_ref, first.worker_ref);
    gw.stop().await
}

async fn client_for(gw: &TestGateway, dept: &str) -> anyhow::Result<IdentityClient> {
    client(gw, dept).await
}

async fn namesakes_by_name_and_birth_are_ambiguous_and_disclose_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    let (gw, truth) = TestGateway::start_with_sources(backend, population()).await?;
    let mut client = client(&gw, "social_insurance").await?;
    let b = truth.iter().find(|t| t.namesake_of.is_some()).expect("the seed makes namesakes");
    let a = truth.iter().find(|t| Some(&t.person) == b.namesake_of.as_ref()).expect("the original");
    let mut answers = Vec::new();
    for person in [a, b] {
        let subject = pb::SubjectQuery {
            name: person.name.clone(),
            birth_date: person.birth_date.clone(),
            sex: if person.sex == "M" { pb::Sex::Male } else { pb::Sex::Female } as i32,
            ..Default::default()
        };
        let answer = client.resolve_identity(request(subject)).await?.into_inner();
        assert_eq!(answer.status(), pb::ResolutionStatus::Ambiguous);
        assert!(answer.worker_ref.is_empty() && answer.links.is_empty());
        assert!(answer.disambiguating_fields.iter().any(|f| f == "citizen_id"));
        answers.push(answer.encode_to_vec());
    }
    assert_eq!(answers[0], answers[1], "the answer does not depend on which namesake is meant");
    // With the ID each is resolved, to different references.
    let mut refs = Vec::new();
    for person in [a, b] {
        let subject = pb::SubjectQuery {
            citizen_id: person.citizen_id.clone(),
            name: person.name.clone(),
            ..Default::default()
        };
        let answer = client.resolve_identity(request(subject)).await?.into_inner();
        assert_eq!(answer.status(), pb::ResolutionStatus::Resolved);
        refs.push(answer.worker_ref);
    }
    assert_ne!(refs[0], refs[1]);
    gw.stop().await
}

async fn invalid_requests_get_field_violations_without_values(backend: Backend) -> anyhow::Result<()> {
    let (gw, _) = TestGateway::start_with_sources(backend, SeedOptions::new(50, 3)).await?;
    let mut client = client(&gw, "tax").await?;
    let bad = pb::ResolveIdentityRequest {
        purpose: String::new(),
        subject: Some(pb::SubjectQuery {
            citizen_id: "5323012A".into(),
            birth_date: "1990-13-01".into(),
            ..Default::default()
        }),
    };
    let status = client.resolve_identity(bad).await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["purpose", "subject.citizen_id", "subject.birth_date"]);
    assert!(!status.message().contains("5323012A") && !status.message().contains("1990-13"));
    // A subject with nothing to look up by.
    let empty = request(pb::SubjectQuery { name: "张伟".into(), ..Default::default() });
    let status = client.resolve_identity(empty).await.expect_err("no usable identifier");
    assert_eq!(status.code(), Code::InvalidArgument);
    // Only consumers may resolve.
    let auditor = gw.issue("discipline_inspection", Role::Auditor).await?;
    let mut as_auditor = IdentityClient::new(gw.channel(Some(&auditor))?);
    let subject = pb::SubjectQuery { citizen_id: "11010519491231002X".into(), ..Default::default() };
    let denied = as_auditor.resolve_identity(request(subject)).await.expect_err("auditor");
    assert_eq!(denied.code(), Code::PermissionDenied);
    gw.stop().await
}

backend_suite!(
    id_and_name_resolve_to_a_stable_worker_ref,
    namesakes_by_name_and_birth_are_ambiguous_and_disclose_nothing,
    invalid_requests_get_field_violations_without_values,
);
