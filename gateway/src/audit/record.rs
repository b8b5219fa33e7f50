//! One exchange record and its canonical encoding, the input of its hash.
//!
//! An [`Exchange`] is what the request path knows about one exchange (metadata only: field and claim
//! type names, never values; the worker only as `worker_ref`). The log seals it into an
//! [`ExchangeRecord`] by giving it the next `seq`, the previous record's hash as `prev_hash`, and
//! `record_hash = SHA-256(canonical encoding)`.
//!
//! # Canonical encoding (`fedx-exchange/v1`)
//!
//! This is the "canonical encoding" `proto/fedx/v1/audit.proto` refers to. It is a byte string built
//! as follows; anyone holding an `ExchangeRecord` (from `AuditService.QueryExchanges` or an export) can
//! recompute `record_hash` from it.
//!
//! Primitive encodings:
//! - `u8`: one byte.
//! - `u32`, `u64`, `i32`, `i64`: fixed width, big-endian, two's complement for signed types.
//! - `str`: the byte length of its UTF-8 encoding as `u32`, then those bytes (no terminator, no
//!   normalisation: the bytes are hashed as recorded).
//! - `list`: the number of items as `u32`, then each item as `str`.
//! - `hash`: the 32 raw bytes (not hex).
//!
//! The encoding is the concatenation of, in this order (proto field numbers in brackets):
//!
//! | # | content                                   | encoding |
//! |---|-------------------------------------------|----------|
//! | – | domain separator `"fedx-exchange/v1\0"`    | the 17 ASCII bytes `66 65 64 78 2d 65 78 63 68 61 6e 67 65 2f 76 31 00` |
//! | 1 | `seq`                                     | `u64` |
//! | 2 | `time`: receipt time, microseconds since 1970-01-01T00:00:00Z | `i64` |
//! | 3 | `request_id`                              | `str` |
//! | 4 | `trace_id`                                | `str` |
//! | 5 | `caller.department`                       | `str` |
//! | 5 | `caller.role` (the certificate role name, e.g. `"consumer"`) | `str` |
//! | 5 | `caller.certificate_serial`               | `str` |
//! | 5 | `caller.certificate_fingerprint`          | `str` |
//! | 6 | `method`                                  | `str` |
//! | 7 | `purpose`                                 | `str` |
//! | 8 | `legal_basis`                             | `u8` tag: `0` unset (nothing follows), `1` `consent_id` then `str`, `2` `statute` then `str` |
//! | 9 | `worker_ref`                              | `str` |
//! | 10 | `sources_consulted`                      | `list` |
//! | 11 | `disclosed_fields`                       | `list` |
//! | 12 | `claims_verified`                        | `list` |
//! | 13 | `outcome_code`                           | `i32` |
//! | 14 | `outcome_reason`                         | `str` |
//! | 15 | `latency_us`                             | `u64` |
//! | 16 | `prev_hash`                              | `hash` (32 zero bytes for seq 1) |
//!
//! `record_hash` (17) is SHA-256 of that byte string. Every field is length-prefixed or fixed width,
//! so the encoding is injective: two different records never share an encoding. Times are kept to
//! whole microseconds: the log truncates (towards the past) any finer part of [`Exchange::time`]
//! before sealing, and the proto `Timestamp` of a record always has a multiple of 1000 in `nanos`.
//! Strings are limited to `u32::MAX` bytes and lists to `u32::MAX` items (the gateway's request limits
//! are far below).
//!
//! [`canonical_bytes`] returns the encoding (for documentation and tests); [`record_hash`] feeds the
//! same bytes straight into the hasher without building it.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Hash;

/// The domain separator that starts every canonical encoding.
pub const DOMAIN: &[u8] = b"fedx-exchange/v1\0";

/// The legal basis an exchange rests on (`fedx.v1.LegalBasis`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LegalBasis {
    /// Identifier of the consent relied on.
    Consent(String),
    /// Citation of the statutory duty.
    Statute(String),
}

/// One exchange as the request path describes it, before it is sealed into the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Receipt time. Kept to whole microseconds (finer parts are truncated when sealed).
    pub time: OffsetDateTime,
    pub request_id: String,
    pub trace_id: String,
    pub caller_dept: String,
    pub caller_role: String,
    pub cert_serial: String,
    pub cert_fingerprint: String,
    pub method: String,
    pub purpose: String,
    pub legal_basis: Option<LegalBasis>,
    pub worker_ref: String,
    pub sources_consulted: Vec<String>,
    pub disclosed_fields: Vec<String>,
    pub claims_verified: Vec<String>,
    pub outcome_code: i32,
    pub outcome_reason: String,
    pub latency_us: u64,
}

impl Default for Exchange {
    /// Every string and list empty, no legal basis, outcome 0, time the unix epoch.
    fn default() -> Self {
        Exchange {
            time: OffsetDateTime::UNIX_EPOCH,
            request_id: String::new(),
            trace_id: String::new(),
            caller_dept: String::new(),
            caller_role: String::new(),
            cert_serial: String::new(),
            cert_fingerprint: String::new(),
            method: String::new(),
            purpose: String::new(),
            legal_basis: None,
            worker_ref: String::new(),
            sources_consulted: Vec::new(),
            disclosed_fields: Vec::new(),
            claims_verified: Vec::new(),
            outcome_code: 0,
            outcome_reason: String::new(),
            latency_us: 0,
        }
    }
}

impl Exchange {
    /// The receipt time in whole microseconds since the unix epoch (floor).
    pub fn time_us(&self) -> i64 {
        time_to_us(self.time)
    }
}

/// One sealed record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    pub exchange: Exchange,
    /// `record_hash` of record `seq - 1`; zeros for seq 1.
    pub prev_hash: Hash,
    /// [`record_hash`]`(seq, exchange, prev_hash)`.
    pub record_hash: Hash,
}

impl ExchangeRecord {
    /// Seals `exchange` at `seq` after `prev_hash` (truncating its time to whole microseconds).
    pub fn seal(seq: u64, mut exchange: Exchange, prev_hash: Hash) -> ExchangeRecord {
        exchange.time = truncate_to_us(exchange.time);
        let record_hash = record_hash(seq, &exchange, &prev_hash);
        ExchangeRecord { seq, exchange, prev_hash, record_hash }
    }

    /// Whether `record_hash` is the hash of the rest of the record.
    pub fn hash_matches(&self) -> bool {
        record_hash(self.seq, &self.exchange, &self.prev_hash) == self.record_hash
    }
}

/// Microseconds since the unix epoch, rounded towards the past.
pub fn time_to_us(t: OffsetDateTime) -> i64 {
    let nanos = t.unix_timestamp_nanos().div_euclid(1000);
    // Representable OffsetDateTimes span ±9999 years: ±3.2e17 µs, well inside i64.
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// The time at `us` microseconds since the unix epoch, if representable.
pub fn time_from_us(us: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).ok()
}

/// `t` truncated (towards the past) to whole microseconds, in UTC.
pub fn truncate_to_us(t: OffsetDateTime) -> OffsetDateTime {
    time_from_us(time_to_us(t)).unwrap_or(t)
}

/// Where the encoder writes: a byte buffer or a hasher.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

fn put_len<S: Sink>(out: &mut S, len: usize) {
    // Lengths beyond u32::MAX cannot occur (gRPC messages are limited to a few MiB); saturate rather
    // than wrap so that such a record could never collide with a shorter one's prefix silently.
    out.put(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_str<S: Sink>(out: &mut S, s: &str) {
    put_len(out, s.len());
    out.put(s.as_bytes());
}

fn put_list<S: Sink, L: AsRef<str>>(out: &mut S, items: &[L]) {
    put_len(out, items.len());
    for item in items {
        put_str(out, item.as_ref());
    }
}

/// The content of an exchange as the encoder reads it: borrowed, so that verification can hash records
/// straight from the text the database returns. `L` is the list item type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a, L: AsRef<str>> {
    pub time_us: i64,
    pub request_id: &'a str,
    pub trace_id: &'a str,
    pub caller_dept: &'a str,
    pub caller_role: &'a str,
    pub cert_serial: &'a str,
    pub cert_fingerprint: &'a str,
    pub method: &'a str,
    pub purpose: &'a str,
    /// (1, consent id) or (2, statute citation).
    pub legal_basis: Option<(u8, &'a str)>,
    pub worker_ref: &'a str,
    pub sources_consulted: &'a [L],
    pub disclosed_fields: &'a [L],
    pub claims_verified: &'a [L],
    pub outcome_code: i32,
    pub outcome_reason: &'a str,
    pub latency_us: u64,
}

impl Exchange {
    pub(crate) fn fields(&self) -> Fields<'_, String> {
        Fields {
            time_us: self.time_us(),
            request_id: &self.request_id,
            trace_id: &self.trace_id,
            caller_dept: &self.caller_dept,
            caller_role: &self.caller_role,
            cert_serial: &self.cert_serial,
            cert_fingerprint: &self.cert_fingerprint,
            method: &self.method,
            purpose: &self.purpose,
            legal_basis: match &self.legal_basis {
                None => None,
                Some(LegalBasis::Consent(id)) => Some((1, id)),
                Some(LegalBasis::Statute(citation)) => Some((2, citation)),
            },
            worker_ref: &self.worker_ref,
            sources_consulted: &self.sources_consulted,
            disclosed_fields: &self.disclosed_fields,
            claims_verified: &self.claims_verified,
            outcome_code: self.outcome_code,
            outcome_reason: &self.outcome_reason,
            latency_us: self.latency_us,
        }
    }
}

fn encode<S: Sink, L: AsRef<str>>(out: &mut S, seq: u64, f: &Fields<'_, L>, prev_hash: &Hash) {
    out.put(DOMAIN);
    out.put(&seq.to_be_bytes());
    out.put(&f.time_us.to_be_bytes());
    put_str(out, f.request_id);
    put_str(out, f.trace_id);
    put_str(out, f.caller_dept);
    put_str(out, f.caller_role);
    put_str(out, f.cert_serial);
    put_str(out, f.cert_fingerprint);
    put_str(out, f.method);
    put_str(out, f.purpose);
    match f.legal_basis {
        None => out.put(&[0]),
        Some((tag, value)) => {
            out.put(&[tag]);
            put_str(out, value);
        }
    }
    put_str(out, f.worker_ref);
    put_list(out, f.sources_consulted);
    put_list(out, f.disclosed_fields);
    put_list(out, f.claims_verified);
    out.put(&f.outcome_code.to_be_bytes());
    put_str(out, f.outcome_reason);
    out.put(&f.latency_us.to_be_bytes());
    out.put(prev_hash);
}

/// [`record_hash`] over borrowed fields.
pub(crate) fn fields_hash<L: AsRef<str>>(seq: u64, fields: &Fields<'_, L>, prev_hash: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    encode(&mut hasher, seq, fields, prev_hash);
    hasher.finalize().into()
}

/// The canonical encoding of the record `seq` holding `exchange` after `prev_hash` (see the module
/// documentation).
pub fn canonical_bytes(seq: u64, exchange: &Exchange, prev_hash: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    encode(&mut out, seq, &exchange.fields(), prev_hash);
    out
}

/// `record_hash`: SHA-256 of [`canonical_bytes`], computed without building them.
pub fn record_hash(seq: u64, exchange: &Exchange, prev_hash: &Hash) -> Hash {
    fields_hash(seq, &exchange.fields(), prev_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Exchange {
        Exchange {
            time: time::macros::datetime!(2024-05-06 07:08:09.123456 UTC),
            request_id: "req-1".into(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            caller_dept: "HRSS".into(),
            caller_role: "ROLE_CONSUMER".into(),
            cert_serial: "1f".into(),
            cert_fingerprint: "ab".repeat(32),
            method: "/fedx.v1.WorkerViewService/GetWorkerView".into(),
            purpose: "wage_arrears".into(),
            legal_basis: Some(LegalBasis::Statute("PIPL art. 13(3)".into())),
            worker_ref: "wr_123".into(),
            sources_consulted: vec!["TAX".into(), "SI".into()],
            disclosed_fields: vec!["identity.name".into()],
            claims_verified: vec![],
            outcome_code: 0,
            outcome_reason: String::new(),
            latency_us: 1234,
        }
    }

    #[test]
    fn canonical_bytes_layout() {
        let e = Exchange {
            time: OffsetDateTime::from_unix_timestamp(1).unwrap(),
            request_id: "r".into(),
            legal_basis: Some(LegalBasis::Consent("c".into())),
            sources_consulted: vec!["a".into(), "bc".into()],
            outcome_code: -1,
            latency_us: 7,
            ..Exchange::default()
        };
        let prev = [0xAA; 32];
        let bytes = canonical_bytes(5, &e, &prev);
        let mut expected = Vec::new();
        expected.extend_from_slice(b"fedx-exchange/v1\0");
        expected.extend_from_slice(&5u64.to_be_bytes());
        expected.extend_from_slice(&1_000_000i64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 1, b'r']); // request_id
        for _ in 0..7 {
            expected.extend_from_slice(&[0, 0, 0, 0]); // trace_id … purpose
        }
        expected.extend_from_slice(&[1, 0, 0, 0, 1, b'c']); // consent
        expected.extend_from_slice(&[0, 0, 0, 0]); // worker_ref
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // two empty lists
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // outcome_code -1
        expected.extend_from_slice(&[0, 0, 0, 0]); // outcome_reason
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.extend_from_slice(&prev);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn record_hash_is_sha256_of_canonical_bytes() {
        let e = sample();
        let prev = [3u8; 32];
        let expected: Hash = Sha256::digest(canonical_bytes(9, &e, &prev)).into();
        assert_eq!(record_hash(9, &e, &prev), expected);
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = sample();
        let h = record_hash(1, &base, &[0; 32]);
        type Change = Box<dyn Fn(&mut Exchange)>;
        let variants: Vec<Change> = vec![
            Box::new(|e| e.time += time::Duration::microseconds(1)),
            Box::new(|e| e.request_id.push('x')),
            Box::new(|e| e.trace_id.push('x')),
            Box::new(|e| e.caller_dept.push('x')),
            Box::new(|e| e.caller_role.push('x')),
            Box::new(|e| e.cert_serial.push('x')),
            Box::new(|e| e.cert_fingerprint.push('x')),
            Box::new(|e| e.method.push('x')),
            Box::new(|e| e.purpose.push('x')),
            Box::new(|e| e.legal_basis = None),
            Box::new(|e| e.legal_basis = Some(LegalBasis::Consent("PIPL art. 13(3)".into()))),
            Box::new(|e| e.worker_ref.push('x')),
            Box::new(|e| e.sources_consulted.reverse()),
            Box::new(|e| e.disclosed_fields.clear()),
            Box::new(|e| e.claims_verified.push("employed_by".into())),
            Box::new(|e| e.outcome_code = 7),
            Box::new(|e| e.outcome_reason.push('x')),
            Box::new(|e| e.latency_us += 1),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut e = base.clone();
            change(&mut e);
            assert_ne!(record_hash(1, &e, &[0; 32]), h, "variant {i}");
        }
        assert_ne!(record_hash(2, &base, &[0; 32]), h);
        assert_ne!(record_hash(1, &base, &[1; 32]), h);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = Exchange { request_id: "ab".into(), trace_id: "c".into(), ..Exchange::default() };
        let b = Exchange { request_id: "a".into(), trace_id: "bc".into(), ..Exchange::default() };
        assert_ne!(record_hash(1, &a, &[0; 32]), record_hash(1, &b, &[0; 32]));
        let a = Exchange { sources_consulted: vec!["ab".into()], ..Exchange::default() };
        let b = Exchange { sources_consulted: vec!["a".into(), "b".into()], ..Exchange::default() };
        assert_ne!(record_hash(1, &a, &[0; 32]), record_hash(1, &b, &[0; 32]));
    }

    #[test]
    fn seal_truncates_time_to_microseconds() {
        let mut e = sample();
        e.time = time::macros::datetime!(2024-05-06 07:08:09.123456789 UTC);
        let r = ExchangeRecord::seal(1, e, [0; 32]);
        assert_eq!(r.exchange.time, time::macros::datetime!(2024-05-06 07:08:09.123456 UTC));
        assert!(r.hash_matches());
        let before_epoch = time::macros::datetime!(1969-12-31 23:59:59.9999995 UTC);
        assert_eq!(time_to_us(before_epoch), -1);
        assert_eq!(time_from_us(-1), Some(time::macros::datetime!(1969-12-31 23:59:59.999999 UTC)));
    }
}
