//! Who is calling: the department and role come from the client certificate, and only from there.
//!
//! A department system proves its identity with the certificate the fedx CA issued to it. The certificate
//! carries one SAN URI of the form `spiffe://<trust-domain>/dept/<code>/<role>`; nothing in request fields,
//! metadata or SNI can change the caller a request is attributed to.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate allows its holder to do. Each RPC names the roles it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A department system asking for views and verdicts.
    Consumer,
    /// A department's adapter side, answering for its own source.
    Provider,
    /// Discipline inspection or the data-protection officer reading the exchange log.
    Auditor,
    /// Operators managing certificates and the purpose catalogue.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Consumer, Role::Provider, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Consumer => "consumer",
            Role::Provider => "provider",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(s.to_owned()))
    }
}

/// The authenticated caller of one connection, derived once at handshake time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub dept: String,
    pub role: Role,
    /// Certificate serial number, lower-case hex without leading zero bytes.
    pub serial: String,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// End of the certificate's validity, unix seconds; calls on a long-lived connection stop when it passes.
    pub not_after: i64,
}

/// Why a certificate does not name an acceptable caller. Messages never include certificate contents
/// beyond the SPIFFE path, which identifies a department, not a person.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("certificate could not be parsed")]
    Unparseable,
    #[error("certificate has no SAN URI of the form spiffe://{trust_domain}/dept/<code>/<role>")]
    NoSpiffeId { trust_domain: String },
    #[error("certificate has more than one fedx SPIFFE identity")]
    AmbiguousSpiffeId,
    #[error("unknown role '{0}'")]
    UnknownRole(String),
    #[error("department '{0}' is not in the department registry")]
    UnknownDepartment(String),
    #[error("department '{dept}' may not hold role '{role}'")]
    RoleNotAllowed { dept: String, role: Role },
}

/// The SPIFFE URI a certificate for `dept`/`role` carries.
pub fn spiffe_uri(trust_domain: &str, dept: &str, role: Role) -> String {
    format!("spiffe://{trust_domain}/dept/{dept}/{role}")
}

/// Parses `spiffe://<trust_domain>/dept/<code>/<role>`; any other URI (another trust domain, extra path
/// segments) is not a fedx identity.
pub fn parse_spiffe_uri(uri: &str, trust_domain: &str) -> Result<Option<(String, Role)>, IdentityError> {
    let Some(path) = uri
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.strip_prefix(trust_domain))
        .and_then(|rest| rest.strip_prefix("/dept/"))
    else {
        return Ok(None);
    };
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(dept), Some(role), None) if is_dept_code(dept) => Ok(Some((dept.to_owned(), role.parse()?))),
        _ => Ok(None),
    }
}

/// Department codes are short snake_case identifiers, as in the registry.
pub fn is_dept_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Reads the caller out of a DER certificate. Chain, validity window and revocation are checked by the TLS
/// verifier; this only extracts the identity and checks it against the department registry.
pub fn caller_from_der(
    der: &[u8],
    trust_domain: &str,
    registry: &crate::config::DepartmentRegistry,
) -> Result<Caller, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparseable)?;
    let mut identity = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(found) = parse_spiffe_uri(uri, trust_domain)? {
                    if identity.replace(found).is_some() {
                        return Err(IdentityError::AmbiguousSpiffeId);
                    }
                }
            }
        }
    }
    let (dept, role) =
        identity.ok_or_else(|| IdentityError::NoSpiffeId { trust_domain: trust_domain.to_owned() })?;
    registry.check(&dept, role)?;
    Ok(Caller {
        dept,
        role,
        serial: serial_hex(cert.raw_serial()),
        fingerprint: fingerprint(der),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Canonical serial text: lower-case hex of the big-endian magnitude, leading zero bytes dropped, so that
/// the registry, the CRL and the handshake all spell one serial the same way.
pub fn serial_hex(raw: &[u8]) -> String {
    let trimmed: &[u8] = match raw.iter().position(|&b| b != 0) {
        Some(first) => &raw[first..],
        None => &[0],
    };
    hex::encode(trimmed)
}

pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Connection-level identity attached to every request on the connection (tonic connect info).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub caller: Arc<Caller>,
    pub remote_addr: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_round_trip() {
        let uri = spiffe_uri("fedx.internal", "tax", Role::Consumer);
        assert_eq!(
            parse_spiffe_uri(&uri, "fedx.internal").unwrap(),
            Some(("tax".to_owned(), Role::Consumer))
        );
    }

    #[test]
    fn spiffe_rejects_other_trust_domains_and_shapes() {
        for uri in [
            "spiffe://evil.internal/dept/tax/consumer",
            "spiffe://fedx.internal.evil/dept/tax/consumer",
            "spiffe://fedx.internal/dept/tax/consumer/extra",
            "spiffe://fedx.internal/dept/TAX/consumer",
            "spiffe://fedx.internal/dept//consumer",
            "https://fedx.internal/dept/tax/consumer",
        ] {
            assert_eq!(parse_spiffe_uri(uri, "fedx.internal").unwrap(), None, "{uri}");
        }
        assert_eq!(
            parse_spiffe_uri("spiffe://fedx.internal/dept/tax/root", "fedx.internal"),
            Err(IdentityError::UnknownRole("root".into()))
        );
    }

    #[test]
    fn serial_hex_drops_sign_padding() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "00");
    }
}
