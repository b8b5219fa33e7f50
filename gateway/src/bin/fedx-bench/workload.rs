//! What the client asks: a pool of seeded workers (with an employer and contribution months read from the
//! social-insurance source, so the claims are about real records), the requests of each scenario, the
//! mTLS channels, and the consents the view scenario relies on.

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fedx_adapters::{SourceLocation, TruthRecord};
use fedx_proto::v1 as pb;
use futures::StreamExt;
use sqlx::{Connection, Row};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Purpose of ResolveIdentity (statutory; social insurance).
pub const RESOLVE_PURPOSE: &str = "wage_arrears_investigation";
/// Purpose of GetWorkerView (consent; public security).
pub const VIEW_PURPOSE: &str = "residence_permit_application";
/// Purpose of JointVerify and BatchVerify (statutory; social insurance; allows all three claim types).
pub const VERIFY_PURPOSE: &str = "social_insurance_enrolment";

/// One worker the calls are about.
#[derive(Debug, Clone)]
pub struct Person {
    pub citizen_id: String,
    pub name: String,
    /// The employer with the most paid pension months on record, and the last such month.
    pub employer_usci: String,
    pub last_paid_month: String,
    /// Set once a consent for the view scenario is registered.
    pub consent_id: Option<String>,
}

impl Person {
    pub fn subject(&self) -> pb::SubjectQuery {
        pb::SubjectQuery {
            citizen_id: self.citizen_id.clone(),
            name: self.name.clone(),
            ..Default::default()
        }
    }
}

/// Up to `pool` people from the truth file, spread evenly over it: known to public security and social
/// insurance, nobody's namesake. Only the lines picked are parsed (the 1,000,000-worker file is 281 MiB).
/// Ask for more than needed: [`with_facts`] leaves out people without a paid pension month.
pub fn sample_truth(truth: &Path, workers: u64, pool: usize) -> anyhow::Result<Vec<TruthRecord>> {
    let file = std::fs::File::open(truth).with_context(|| format!("opening {}", truth.display()))?;
    let stride = (workers as usize / pool.max(1)).max(1);
    let mut picked = Vec::with_capacity(pool);
    let mut next = 0usize;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        if picked.len() >= pool {
            break;
        }
        let line = line?;
        if i < next {
            continue;
        }
        let record: TruthRecord =
            serde_json::from_str(&line).with_context(|| format!("truth line {}", i + 1))?;
        let eligible = record.namesake_of.is_none()
            && record.records.contains_key("public_security")
            && record.records.contains_key("social_insurance");
        if eligible {
            picked.push(record);
            next = picked.len() * stride;
        }
    }
    Ok(picked)
}

/// Reads each sampled person's employer and last paid pension month from the social-insurance source;
/// people with no paid pension month are left out. Of the rest, at most `pool`, evenly spaced.
pub async fn with_facts(
    sampled: Vec<TruthRecord>,
    source: &SourceLocation,
    pool: usize,
) -> anyhow::Result<Vec<Person>> {
    sqlx::any::install_default_drivers();
    let mut conn = match source {
        SourceLocation::Sqlite { path } => {
            sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro", path.display())).await?
        }
        SourceLocation::Postgres { url, schema } => {
            let mut conn = sqlx::AnyConnection::connect(url).await?;
            sqlx::query(&format!("SET search_path TO {schema}")).execute(&mut conn).await?;
            conn
        }
    };
    let sql = "SELECT employer_usci, MAX(month), COUNT(*) FROM contribution \
               WHERE si_no = $1 AND insurance_type = 'pension' AND status = 'paid' \
               GROUP BY employer_usci ORDER BY COUNT(*) DESC, employer_usci LIMIT 1";
    let mut people = Vec::with_capacity(sampled.len());
    for record in sampled {
        let Some(si_no) = record
            .records
            .get("social_insurance")
            .and_then(|keys| keys.first())
            .and_then(|k| k.strip_prefix("insured_person/"))
        else {
            continue;
        };
        if let Some(row) = sqlx::query(sql).bind(si_no).fetch_optional(&mut conn).await? {
            people.push(Person {
                citizen_id: record.citizen_id,
                name: record.name,
                employer_usci: row.try_get(0)?,
                last_paid_month: row.try_get(1)?,
                consent_id: None,
            });
        }
    }
    conn.close().await?;
    if people.len() > pool {
        let step = people.len() as f64 / pool as f64;
        people = (0..pool).map(|i| people[(i as f64 * step) as usize].clone()).collect();
    }
    Ok(people)
}

pub fn resolve_request(p: &Person) -> pb::ResolveIdentityRequest {
    pb::ResolveIdentityRequest { purpose: RESOLVE_PURPOSE.into(), subject: Some(p.subject()) }
}

pub fn view_request(p: &Person) -> pb::GetWorkerViewRequest {
    pb::GetWorkerViewRequest {
        purpose: VIEW_PURPOSE.into(),
        subject: Some(p.subject()),
        field_categories: Vec::new(),
        consent_id: p.consent_id.clone().unwrap_or_default(),
    }
}

/// Three claims: the name goes with the ID number; employed by their employer in their last paid month;
/// at least one paid pension month in the twelve up to it.
pub fn verify_request(p: &Person) -> pb::JointVerifyRequest {
    use pb::claim::Claim;
    let claim = |c: Claim| pb::Claim { claim: Some(c) };
    pb::JointVerifyRequest {
        purpose: VERIFY_PURPOSE.into(),
        subject: Some(p.subject()),
        claims: vec![
            claim(Claim::IdentityMatches(pb::IdentityMatches {
                name: p.name.clone(),
                citizen_id: p.citizen_id.clone(),
            })),
            claim(Claim::EmployedBy(pb::EmployedBy {
                employer_usci: p.employer_usci.clone(),
                period: Some(pb::MonthRange {
                    start_month: p.last_paid_month.clone(),
                    end_month: p.last_paid_month.clone(),
                }),
            })),
            claim(Claim::ContributionsAtLeast(pb::ContributionsAtLeast {
                insurance_type: pb::InsuranceType::Pension as i32,
                min_months: 1,
                window_months: 12,
                end_month: p.last_paid_month.clone(),
                region_code: String::new(),
            })),
        ],
        consent_id: String::new(),
        signed_receipt: false,
    }
}

/// A department's client certificate and the CA, for channels.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Credentials {
    pub fn read(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Credentials> {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        Ok(Credentials { ca_pem: read(ca)?, cert_pem: read(cert)?, key_pem: read(key)? })
    }

    /// `n` channels, each its own HTTP/2 connection (mTLS handshake done here, not during measurement).
    pub async fn connect(&self, addr: std::net::SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost")
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            channels.push(endpoint.connect().await.context("connecting to the gateway")?);
        }
        Ok(channels)
    }
}

/// Registers, as public security, each person's consent to the view purpose (employment and
/// contributions, valid for a day), 32 at a time. Returns how many failed; those people keep no consent.
pub async fn grant_consents(channel: Channel, people: &mut [Person]) -> anyhow::Result<usize> {
    type ConsentClient = pb::consent_service_client::ConsentServiceClient<Channel>;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let client = ConsentClient::new(channel);
    let results: Vec<(usize, Result<String, tonic::Status>)> =
        futures::stream::iter(people.iter().enumerate().map(|(i, p)| {
            let mut client = client.clone();
            let request = pb::GrantConsentRequest {
                subject: Some(p.subject()),
                grantee_department: String::new(),
                purpose: VIEW_PURPOSE.into(),
                field_categories: vec![
                    pb::FieldCategory::Employment as i32,
                    pb::FieldCategory::Contributions as i32,
                ],
                valid_from: None,
                valid_until: Some(prost_types::Timestamp { seconds: now + 86_400, nanos: 0 }),
                evidence_sha256: "ab".repeat(32),
                supersedes_consent_id: String::new(),
                request_id: String::new(),
            };
            async move {
                let result = client
                    .grant_consent(request)
                    .await
                    .map(|r| r.into_inner().consent.map(|c| c.consent_id).unwrap_or_default());
                (i, result)
            }
        }))
        .buffer_unordered(32)
        .collect()
        .await;
    let mut failed = 0;
    let mut first_error = None;
    for (i, result) in results {
        match result {
            Ok(id) if !id.is_empty() => people[i].consent_id = Some(id),
            Ok(_) => failed += 1,
            Err(status) => {
                failed += 1;
                first_error.get_or_insert(status);
            }
        }
    }
    if let Some(status) = first_error {
        eprintln!("{failed} consent grants failed; the first: {:?} {}", status.code(), status.message());
    }
    Ok(failed)
}

/// The people the scenarios cycle over, shared by the tasks.
pub type Pool = Arc<Vec<Person>>;
