//! The fedx certificate authority: issuing department and server certificates and signing CRLs.
//!
//! All X.509 encoding is rcgen's; this module only decides what goes into a certificate. Keys are
//! ECDSA P-256, which every gRPC client stack supports and which is cheap to verify on each handshake.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::authn::{fingerprint, serial_hex, spiffe_uri, Role};
use crate::store::certificates::{CertRecord, RevocationReason};

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("CA certificate or key is not valid PEM: {0}")]
    BadCaMaterial(String),
}

/// A certificate and its freshly generated private key.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub serial: String,
    pub fingerprint: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Validity window of a new certificate. Tests use windows in the past or future to get expired and
/// not-yet-valid certificates from the same code path administrators use.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a minute ago (tolerating small clock skew between CA and gateway) for `days` days.
    pub fn days_from_now(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Duration::minutes(1), not_after: now + Duration::days(i64::from(days)) }
    }
}

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl CertificateAuthority {
    /// Creates a new self-signed CA. Returns the authority and its private key in PEM.
    pub fn generate(common_name: &str, days: u32) -> Result<(CertificateAuthority, String), AuthorityError> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let validity = Validity::days_from_now(days);
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key)?;
        let authority = CertificateAuthority { cert_pem: cert.pem(), issuer: Issuer::new(params, key) };
        Ok((authority, key_pem))
    }

    /// Loads an existing CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority, AuthorityError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| AuthorityError::BadCaMaterial(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| AuthorityError::BadCaMaterial(e.to_string()))?;
        Ok(CertificateAuthority { issuer, cert_pem: cert_pem.to_owned() })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A department certificate: SPIFFE URI SAN, digitalSignature, clientAuth only.
    pub fn issue_client(
        &self,
        trust_domain: &str,
        dept: &str,
        role: Role,
        validity: Validity,
    ) -> Result<IssuedCert, AuthorityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("{dept} {role}"));
        params.subject_alt_names = vec![SanType::URI(spiffe_uri(trust_domain, dept, role).try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, validity)
    }

    /// The gateway's server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String], validity: Validity) -> Result<IssuedCert, AuthorityError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = distinguished_name("fedx gateway");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, validity)
    }

    fn sign(&self, mut params: CertificateParams, validity: Validity) -> Result<IssuedCert, AuthorityError> {
        let key = KeyPair::generate()?;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let der: &CertificateDer<'_> = cert.der();
        Ok(IssuedCert {
            serial: serial_hex(serial.as_ref()),
            fingerprint: fingerprint(der),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_before: validity.not_before.unix_timestamp(),
            not_after: validity.not_after.unix_timestamp(),
        })
    }

    /// A CRL listing `revoked`, valid from now for `validity`.
    pub fn crl(&self, revoked: &[CertRecord], validity: Duration) -> Result<String, AuthorityError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .filter_map(|record| {
                let serial = hex::decode(&record.serial).ok()?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: OffsetDateTime::from_unix_timestamp(record.revoked_at?).ok()?,
                    reason_code: record.revocation_reason.map(rcgen_reason),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + validity,
            // Time-based CRL numbers increase monotonically without a counter to keep.
            crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

fn rcgen_reason(reason: RevocationReason) -> rcgen::RevocationReason {
    match reason {
        RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
        RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
        RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
        RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => rcgen::RevocationReason::AaCompromise,
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "fedx");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// 128 random bits with the top bit cleared so the DER INTEGER stays positive without padding.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01 << 6; // never a leading zero byte, so the hex form has a fixed width
    SerialNumber::from_slice(&bytes)
}
