//! Signed receipts: the gateway's signed statement of the verdicts it gave on one joint-verification
//! request (verify.proto `SignedReceipt`, `ReceiptSummary`), so that another office can rely on them
//! later without asking again — offline with the published public keys (`GatewayService.GetSigningKeys`,
//! `fedx receipts keys`, `fedx receipts verify`) or online with `VerificationService.VerifyReceipt`.
//!
//! # Signed bytes (stable, `v1`)
//!
//! `SignedReceipt.payload` is, byte for byte:
//!
//! ```text
//! fedx-receipt/v1\n      the 16 ASCII bytes of HEADER (the line ends in one 0x0A, no \r)
//! <ReceiptSummary>       the protobuf binary encoding of a fedx.v1.ReceiptSummary, to the end
//! ```
//!
//! The summary is encoded by prost: fields in field-number order, default values (empty strings, zero
//! enums and integers, unset messages and oneofs) omitted, no unknown fields, and no maps anywhere in the
//! message tree — so the encoding of a given message is deterministic. `ReceiptSummary.signed_at` is
//! always set.
//!
//! `SignedReceipt.signature` is the 64-byte Ed25519 signature (RFC 8032) over the whole payload, header
//! included, by the key named in `SignedReceipt.key_id` (ids and validity windows: [`crate::signing`]).
//! Verification is strict (no small-order keys, no non-canonical signatures), so a valid signature has
//! exactly one encoding.
//!
//! `SignedReceipt.signed_at` repeats `ReceiptSummary.signed_at` and must equal it. Both are the signing
//! time truncated to whole microseconds (`nanos` a multiple of 1000), like checkpoints and exchange
//! records: the time shown, stored in the audit log and signed is the same value, and a receipt survives a
//! round trip through the proto3 JSON mapping (RFC 3339, up to 9 fraction digits) exactly.
//!
//! The header does two things. It separates receipts from everything else the same key signs — audit
//! checkpoints start with `fedx-audit-checkpoint/v1` (see [`crate::audit::checkpoint`]) — so that no
//! signature over one kind of statement can be passed off as another. And it versions the format: an
//! incompatible change to the payload gets a new header, which verifiers that do not know it reject as
//! MALFORMED. Fields added to `ReceiptSummary` later are compatible: older verifiers decode them as
//! unknown fields and ignore them.
//!
//! # Verifying: the bytes as received, then decode
//!
//! [`verify_receipt`] checks the signature over `payload` exactly as received and only then decodes it;
//! it never re-encodes the decoded summary to compare or to verify. Protobuf encoding is deterministic for
//! one encoder and one version of the schema but not canonical across them: another implementation may
//! order or pack fields differently, a newer schema adds fields that an older verifier would drop when
//! re-encoding, and a decoder maps many byte strings to one message (a repeated non-repeated field, the
//! last one wins). A verifier that re-encoded would reject genuine receipts whenever its encoder differs
//! from the signer's, and would be checking a signature over bytes other than those it decoded. Verifying
//! the received bytes means what is decoded and displayed is exactly what was signed. Clients must not
//! re-encode receipts either: keep and forward `payload` as the opaque bytes it is.
//!
//! The checks, in order; the first that fails gives the reason:
//!
//! 1. `SignedReceipt.signed_at` is present and a valid timestamp — else MALFORMED.
//! 2. `key_id` names a key of the ring — else UNKNOWN_KEY; the signature is 64 bytes and verifies over
//!    `payload` under that key — else BAD_SIGNATURE; the key's validity window contains the receipt's
//!    (outer) `signed_at` — else KEY_NOT_VALID_AT_SIGNING. The signature is checked before anything looks
//!    inside the payload, so any change to a payload byte, header included, is BAD_SIGNATURE.
//! 3. The payload starts with the header, the rest decodes as a `ReceiptSummary`, and its `signed_at` is
//!    present and equal to the outer one — else MALFORMED. The window in step 2 was checked against the
//!    outer time, which the signature does not cover; this equality is what binds it to the signed one (a
//!    receipt whose outer `signed_at` was moved into some key's window fails here).
//!
//! # JSON files
//!
//! The offline tool reads receipts and keys in the proto3 JSON mapping, as grpcurl prints them
//! ([`receipt_from_json`], [`keys_from_json`]): bytes as base64 (standard or URL-safe, padded or not),
//! timestamps as RFC 3339, field names in lowerCamelCase or as in the .proto file (snake_case). Unknown
//! fields are ignored and `null` counts as absent. Error messages name fields, never values.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use fedx_proto::v1 as pb;
use prost::Message;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::signing::{key_id, KeyRing, PublicKeyInfo, SigningError};

/// Start of every payload: the format name and version, and the newline that ends them.
pub const HEADER: &[u8] = b"fedx-receipt/v1\n";

/// Signs the verdicts in `summary` with the ring's current key, at `signed_at` truncated to whole
/// microseconds (written into the summary, replacing whatever it held, and into the receipt).
pub fn sign_receipt(
    keys: &KeyRing,
    mut summary: pb::ReceiptSummary,
    signed_at: OffsetDateTime,
) -> Result<pb::SignedReceipt, SigningError> {
    let signed_at = to_timestamp(truncate_to_micros(signed_at));
    summary.signed_at = Some(signed_at);
    let payload = payload(&summary);
    let (key_id, signature) = keys.sign(&payload)?;
    Ok(pb::SignedReceipt { payload, signature: signature.to_vec(), key_id, signed_at: Some(signed_at) })
}

/// Checks a receipt against `keys` (see the module doc for the checks and their order). Never fails:
/// an invalid receipt is `valid = false` with the reason; `summary` is set only when it is valid.
pub fn verify_receipt(keys: &KeyRing, receipt: &pb::SignedReceipt) -> pb::VerifyReceiptResponse {
    match check(keys, receipt) {
        Ok(summary) => pb::VerifyReceiptResponse {
            valid: true,
            reason: pb::ReceiptInvalidReason::Unspecified as i32,
            summary: Some(summary),
        },
        Err(reason) => pb::VerifyReceiptResponse { valid: false, reason: reason as i32, summary: None },
    }
}

fn check(
    keys: &KeyRing,
    receipt: &pb::SignedReceipt,
) -> Result<pb::ReceiptSummary, pb::ReceiptInvalidReason> {
    use pb::ReceiptInvalidReason as Reason;
    let signed_at = receipt.signed_at.as_ref().and_then(from_timestamp).ok_or(Reason::Malformed)?;
    keys.verify(&receipt.key_id, &receipt.payload, &receipt.signature, signed_at).map_err(|e| match e {
        SigningError::UnknownKey(_) => Reason::UnknownKey,
        SigningError::OutsideValidity { .. } => Reason::KeyNotValidAtSigning,
        // BadSignature; InvalidPublicKey (a published key that is not a curve point verifies nothing);
        // the rest cannot come from `verify`.
        _ => Reason::BadSignature,
    })?;
    let body = receipt.payload.strip_prefix(HEADER).ok_or(Reason::Malformed)?;
    let summary = pb::ReceiptSummary::decode(body).map_err(|_| Reason::Malformed)?;
    let inner = summary.signed_at.as_ref().and_then(from_timestamp).ok_or(Reason::Malformed)?;
    if inner != signed_at {
        return Err(Reason::Malformed);
    }
    Ok(summary)
}

/// The signed bytes for `summary` (see the module doc).
fn payload(summary: &pb::ReceiptSummary) -> Vec<u8> {
    let body = summary.encode_to_vec();
    let mut payload = Vec::with_capacity(HEADER.len() + body.len());
    payload.extend_from_slice(HEADER);
    payload.extend_from_slice(&body);
    payload
}

/// `t` truncated to whole microseconds (rounded down, also before 1970).
fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let micros = t.unix_timestamp_nanos().div_euclid(1000);
    // Rounding a representable instant down to a whole microsecond stays representable.
    OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).unwrap_or(t)
}

fn to_timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 }
}

/// None for a timestamp that is not normalised (`nanos` outside 0..1e9) or not representable.
fn from_timestamp(ts: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos))
        .ok()
}

/// Why a receipt or keys JSON document was rejected. Names the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonFormatError(String);

fn json_error(message: impl Into<String>) -> JsonFormatError {
    JsonFormatError(message.into())
}

/// Field names that make an object a `SignedReceipt` rather than a message that contains one.
const RECEIPT_FIELDS: [&str; 6] = ["payload", "signature", "keyId", "key_id", "signedAt", "signed_at"];

/// Reads a `SignedReceipt` in the proto3 JSON mapping (`{"payload": "<base64>", "signature": "<base64>",
/// "keyId": "…", "signedAt": "<RFC 3339>"}`), at the top level or inside the message grpcurl printed:
/// under `receipt` (`JointVerifyResponse`, `VerifyReceiptRequest`) or `result.receipt`
/// (`BatchVerifyResponse`). Absent fields take their default (empty bytes, empty key id, no
/// `signed_at`), as in the mapping; the verifier then says what is wrong.
pub fn receipt_from_json(doc: &Value) -> Result<pb::SignedReceipt, JsonFormatError> {
    let top = doc.as_object().ok_or_else(|| json_error("expected a JSON object"))?;
    let (receipt, at) = if RECEIPT_FIELDS.iter().any(|f| present(top, f)) {
        (top, "")
    } else if let Some(receipt) = top.get("receipt").filter(|v| !v.is_null()) {
        (receipt.as_object().ok_or_else(|| json_error("receipt: expected an object"))?, "receipt.")
    } else if let Some(receipt) = top.get("result").and_then(|r| r.get("receipt")).filter(|v| !v.is_null()) {
        let receipt = receipt.as_object().ok_or_else(|| json_error("result.receipt: expected an object"))?;
        (receipt, "result.receipt.")
    } else {
        return Err(json_error(
            "no receipt found: expected a SignedReceipt ({\"payload\", \"signature\", \"keyId\", \
             \"signedAt\"}), or a message holding one under \"receipt\" (JointVerifyResponse, \
             VerifyReceiptRequest) or \"result.receipt\" (BatchVerifyResponse); a JointVerify response \
             has a receipt only when the request set signed_receipt",
        ));
    };
    let payload = bytes_field(receipt, at, "payload", "payload")?.unwrap_or_default();
    let signature = bytes_field(receipt, at, "signature", "signature")?.unwrap_or_default();
    let key_id = string_field(receipt, at, "keyId", "key_id")?.unwrap_or_default();
    let signed_at = time_field(receipt, at, "signedAt", "signed_at")?.map(to_timestamp);
    Ok(pb::SignedReceipt { payload, signature, key_id, signed_at })
}

/// The keys in the JSON shape grpcurl prints for `GatewayService/GetSigningKeys`:
/// `{"keys": [{"keyId", "publicKey": "<base64>", "validFrom", "validUntil"}]}`, `validUntil` only when
/// set. Public keys only: there is nothing secret in it.
pub fn keys_to_json(keys: &[PublicKeyInfo]) -> Result<Value, JsonFormatError> {
    let keys = keys
        .iter()
        .map(|k| {
            let mut entry = Map::new();
            entry.insert("keyId".into(), json!(k.key_id));
            entry.insert("publicKey".into(), json!(STANDARD.encode(k.public_key)));
            entry.insert("validFrom".into(), json!(rfc3339(k.valid_from)?));
            if let Some(until) = k.valid_until {
                entry.insert("validUntil".into(), json!(rfc3339(until)?));
            }
            Ok(Value::Object(entry))
        })
        .collect::<Result<Vec<_>, JsonFormatError>>()?;
    Ok(json!({ "keys": keys }))
}

/// Reads published keys (the shape of [`keys_to_json`]; snake_case names accepted too). `keyId` is
/// optional, but when given it must be the id derived from the public key: a mislabelled entry is an
/// error rather than a key that silently never matches.
pub fn keys_from_json(doc: &Value) -> Result<Vec<PublicKeyInfo>, JsonFormatError> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| json_error("expected an object with a \"keys\" array (GetSigningKeysResponse)"))?;
    keys.iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("keys[{i}].");
            let entry =
                entry.as_object().ok_or_else(|| json_error(format!("keys[{i}]: expected an object")))?;
            let raw = bytes_field(entry, &at, "publicKey", "public_key")?
                .ok_or_else(|| json_error(format!("{at}publicKey is missing")))?;
            let public_key: [u8; 32] = raw.try_into().map_err(|raw: Vec<u8>| {
                json_error(format!("{at}publicKey is {} bytes, expected 32", raw.len()))
            })?;
            let derived = key_id(&public_key);
            if let Some(given) = string_field(entry, &at, "keyId", "key_id")? {
                if given != derived {
                    return Err(json_error(format!(
                        "{at}keyId does not match the public key (whose id is {derived})"
                    )));
                }
            }
            let valid_from = time_field(entry, &at, "validFrom", "valid_from")?
                .ok_or_else(|| json_error(format!("{at}validFrom is missing")))?;
            let valid_until = time_field(entry, &at, "validUntil", "valid_until")?;
            if valid_until.is_some_and(|until| until <= valid_from) {
                return Err(json_error(format!("{at}validUntil is not after validFrom")));
            }
            Ok(PublicKeyInfo { key_id: derived, public_key, valid_from, valid_until })
        })
        .collect()
}

/// RFC 3339 in UTC, as the proto3 JSON mapping writes timestamps.
pub(crate) fn rfc3339(t: OffsetDateTime) -> Result<String, JsonFormatError> {
    t.to_offset(UtcOffset::UTC).format(&Rfc3339).map_err(|_| json_error("time cannot be written as RFC 3339"))
}

/// The same instant as an RFC 3339 string, for display; None when the timestamp is not valid.
pub fn timestamp_text(ts: &prost_types::Timestamp) -> Option<String> {
    from_timestamp(ts).and_then(|t| rfc3339(t).ok())
}

fn present(obj: &Map<String, Value>, name: &str) -> bool {
    obj.get(name).is_some_and(|v| !v.is_null())
}

/// The field under its JSON name or its proto name (not both); `null` counts as absent.
fn field<'a>(
    obj: &'a Map<String, Value>,
    at: &str,
    json_name: &str,
    proto_name: &str,
) -> Result<Option<&'a Value>, JsonFormatError> {
    let json_value = obj.get(json_name).filter(|v| !v.is_null());
    let proto_value = obj.get(proto_name).filter(|v| !v.is_null());
    match (json_value, proto_value) {
        (Some(_), Some(_)) if json_name != proto_name => {
            Err(json_error(format!("{at}{json_name} and {at}{proto_name} are both present")))
        }
        (a, b) => Ok(a.or(b)),
    }
}

fn string_field(
    obj: &Map<String, Value>,
    at: &str,
    json_name: &str,
    proto_name: &str,
) -> Result<Option<String>, JsonFormatError> {
    field(obj, at, json_name, proto_name)?
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| json_error(format!("{at}{json_name}: expected a string")))
        })
        .transpose()
}

fn bytes_field(
    obj: &Map<String, Value>,
    at: &str,
    json_name: &str,
    proto_name: &str,
) -> Result<Option<Vec<u8>>, JsonFormatError> {
    string_field(obj, at, json_name, proto_name)?
        .map(|s| decode_base64(&s).ok_or_else(|| json_error(format!("{at}{json_name}: not base64"))))
        .transpose()
}

fn time_field(
    obj: &Map<String, Value>,
    at: &str,
    json_name: &str,
    proto_name: &str,
) -> Result<Option<OffsetDateTime>, JsonFormatError> {
    string_field(obj, at, json_name, proto_name)?
        .map(|s| {
            OffsetDateTime::parse(&s, &Rfc3339)
                .map_err(|_| json_error(format!("{at}{json_name}: not an RFC 3339 time")))
        })
        .transpose()
}

/// Standard or URL-safe base64, with or without padding, as the proto3 JSON mapping accepts.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    standard.decode(s).or_else(|_| url_safe.decode(s)).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;
    use time::macros::datetime;

    use super::*;
    use crate::audit::checkpoint::Checkpoint;

    use pb::ReceiptInvalidReason as Reason;

    const SIGNED_AT: OffsetDateTime = datetime!(2026-11-03 09:30:15.123456789 +08:00);

    fn provenance(department: &str, as_of: OffsetDateTime) -> pb::Provenance {
        pb::Provenance { department: department.into(), as_of: Some(to_timestamp(as_of)) }
    }

    fn sample_summary() -> pb::ReceiptSummary {
        pb::ReceiptSummary {
            receipt_id: "req_01JC3V6Q9W2X".into(),
            signed_at: None,
            department: "housing".into(),
            purpose: "wage_arrears_investigation".into(),
            legal_basis: Some(pb::LegalBasis {
                basis: Some(pb::legal_basis::Basis::Statute("保障农民工工资支付条例".into())),
            }),
            worker_ref: "wr_5f2a9c".into(),
            claims: vec![
                pb::Claim {
                    claim: Some(pb::claim::Claim::EmployedBy(pb::EmployedBy {
                        employer_usci: "91310000MA1FL8XQ3K".into(),
                        period: Some(pb::MonthRange {
                            start_month: "2026-01".into(),
                            end_month: "2026-06".into(),
                        }),
                    })),
                },
                pb::Claim {
                    claim: Some(pb::claim::Claim::EnterpriseActive(pb::EnterpriseActive {
                        usci: "91310000MA1FL8XQ3K".into(),
                    })),
                },
            ],
            results: vec![
                pb::ClaimResult {
                    claim_type: "employed_by".into(),
                    verdict: pb::Verdict::Confirmed as i32,
                    undetermined_reason: 0,
                    attested_by: vec![
                        provenance("tax", datetime!(2026-10-31 00:00 UTC)),
                        provenance("social_insurance", datetime!(2026-11-01 00:00 UTC)),
                    ],
                },
                pb::ClaimResult {
                    claim_type: "enterprise_active".into(),
                    verdict: pb::Verdict::Undetermined as i32,
                    undetermined_reason: pb::UndeterminedReason::SourceUnavailable as i32,
                    attested_by: vec![],
                },
            ],
        }
    }

    fn reason(keys: &KeyRing, receipt: &pb::SignedReceipt) -> Reason {
        let response = verify_receipt(keys, receipt);
        assert_eq!(response.valid, response.reason == Reason::Unspecified as i32, "{response:?}");
        assert_eq!(response.valid, response.summary.is_some(), "summary only when valid");
        Reason::try_from(response.reason).expect("a known reason")
    }

    /// A receipt whose payload and signature are whatever the test wants, correctly signed.
    fn signed_raw(keys: &KeyRing, payload: Vec<u8>, signed_at: OffsetDateTime) -> pb::SignedReceipt {
        let (key_id, signature) = keys.sign(&payload).unwrap();
        pb::SignedReceipt {
            payload,
            signature: signature.to_vec(),
            key_id,
            signed_at: Some(to_timestamp(signed_at)),
        }
    }

    fn fixture() -> &'static (KeyRing, pb::SignedReceipt) {
        static FIXTURE: OnceLock<(KeyRing, pb::SignedReceipt)> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let keys = KeyRing::generate_for_tests();
            let receipt = sign_receipt(&keys, sample_summary(), SIGNED_AT).unwrap();
            (keys, receipt)
        })
    }

    #[test]
    fn payload_is_exactly_the_documented_format() {
        let (keys, receipt) = fixture();
        assert_eq!(HEADER, b"fedx-receipt/v1\n");
        let mut summary = sample_summary();
        summary.signed_at =
            Some(prost_types::Timestamp { seconds: SIGNED_AT.unix_timestamp(), nanos: 123_456_000 });
        let mut expected = b"fedx-receipt/v1\n".to_vec();
        expected.extend(summary.encode_to_vec());
        assert_eq!(receipt.payload, expected);
        assert_eq!(receipt.key_id, keys.current_key_id());
        assert_eq!(receipt.signature.len(), 64);
        assert_eq!(receipt.signed_at, summary.signed_at);
        // Deterministic: signing the same content again gives the same bytes (Ed25519 is deterministic).
        let again = sign_receipt(keys, sample_summary(), SIGNED_AT).unwrap();
        assert_eq!(&again, receipt);
    }

    #[test]
    fn round_trip() {
        let (keys, receipt) = fixture();
        let response = verify_receipt(keys, receipt);
        assert!(response.valid, "{response:?}");
        assert_eq!(response.reason, Reason::Unspecified as i32);
        let mut expected = sample_summary();
        expected.signed_at = receipt.signed_at;
        assert_eq!(response.summary, Some(expected));

        // An office with the published keys only.
        let office = KeyRing::from_public_keys(keys.public_keys());
        assert!(verify_receipt(&office, receipt).valid);
        assert!(matches!(
            sign_receipt(&office, sample_summary(), SIGNED_AT),
            Err(SigningError::NoPrivateKey)
        ));

        // An empty summary signs and verifies too (signed_at is always set).
        let empty = sign_receipt(keys, pb::ReceiptSummary::default(), SIGNED_AT).unwrap();
        assert!(verify_receipt(keys, &empty).valid);
    }

    #[test]
    fn signed_at_is_truncated_to_microseconds_and_survives_rfc3339() {
        let (keys, receipt) = fixture();
        let signed_at = receipt.signed_at.unwrap();
        assert_eq!(signed_at.nanos, 123_456_000);
        assert_eq!(from_timestamp(&signed_at), Some(datetime!(2026-11-03 01:30:15.123456 UTC)));
        let text = timestamp_text(&signed_at).unwrap();
        assert_eq!(text, "2026-11-03T01:30:15.123456Z");
        let parsed = to_timestamp(OffsetDateTime::parse(&text, &Rfc3339).unwrap());
        assert_eq!(parsed, signed_at);
        // Before 1970, truncation rounds down too.
        let old = sign_receipt(keys, sample_summary(), datetime!(1969-12-31 23:59:59.9999995 UTC)).unwrap();
        assert_eq!(old.signed_at, Some(prost_types::Timestamp { seconds: -1, nanos: 999_999_000 }));
    }

    #[test]
    fn flipping_any_payload_byte_is_a_bad_signature() {
        let (keys, receipt) = fixture();
        for i in 0..receipt.payload.len() {
            let mut tampered = receipt.clone();
            tampered.payload[i] ^= 0x01;
            assert_eq!(reason(keys, &tampered), Reason::BadSignature, "payload byte {i}");
        }
    }

    #[test]
    fn flipping_any_signature_byte_is_a_bad_signature() {
        let (keys, receipt) = fixture();
        for i in 0..receipt.signature.len() {
            let mut tampered = receipt.clone();
            tampered.signature[i] ^= 0x01;
            assert_eq!(reason(keys, &tampered), Reason::BadSignature, "signature byte {i}");
        }
    }

    #[test]
    fn truncated_or_extended_bytes_are_a_bad_signature() {
        let (keys, receipt) = fixture();
        let p = &receipt.payload;
        let s = &receipt.signature;
        let payloads = [
            p[..p.len() - 1].to_vec(),
            p[1..].to_vec(),
            p[HEADER.len()..].to_vec(),
            [p.as_slice(), &[0]].concat(),
            [p.as_slice(), p.as_slice()].concat(),
            Vec::new(),
        ];
        for payload in payloads {
            let tampered = pb::SignedReceipt { payload, ..receipt.clone() };
            assert_eq!(
                reason(keys, &tampered),
                Reason::BadSignature,
                "payload of {}",
                tampered.payload.len()
            );
        }
        let signatures =
            [s[..63].to_vec(), s[1..].to_vec(), [s.as_slice(), &[0]].concat(), Vec::new(), vec![0; 64]];
        for signature in signatures {
            let tampered = pb::SignedReceipt { signature, ..receipt.clone() };
            assert_eq!(
                reason(keys, &tampered),
                Reason::BadSignature,
                "signature of {}",
                tampered.signature.len()
            );
        }
    }

    #[test]
    fn another_key_id_is_unknown() {
        let (keys, receipt) = fixture();
        let other = KeyRing::generate_for_tests();
        for key_id in ["ed25519:0000000000000000", "", other.current_key_id(), &receipt.key_id.to_uppercase()]
        {
            let tampered = pb::SignedReceipt { key_id: key_id.into(), ..receipt.clone() };
            assert_eq!(reason(keys, &tampered), Reason::UnknownKey, "{key_id:?}");
        }
        // Another gateway's ring does not know the key at all.
        assert_eq!(reason(&other, receipt), Reason::UnknownKey);
    }

    #[test]
    fn changed_or_missing_signed_at_is_malformed() {
        let (keys, receipt) = fixture();
        let ts = receipt.signed_at.unwrap();
        let changed = [
            prost_types::Timestamp { nanos: ts.nanos + 1000, ..ts },
            prost_types::Timestamp { nanos: ts.nanos + 1, ..ts },
            prost_types::Timestamp { seconds: ts.seconds - 86_400, ..ts },
            prost_types::Timestamp { seconds: ts.seconds + 1, nanos: ts.nanos },
        ];
        // Still inside the key's window (valid since 1970, no end): the window check passes and the
        // comparison with the signed time fails.
        for signed_at in changed {
            let tampered = pb::SignedReceipt { signed_at: Some(signed_at), ..receipt.clone() };
            assert_eq!(reason(keys, &tampered), Reason::Malformed, "{signed_at:?}");
        }
        let invalid = [
            None,
            Some(prost_types::Timestamp { nanos: -1, ..ts }),
            Some(prost_types::Timestamp { nanos: 1_000_000_000, ..ts }),
            Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }),
        ];
        for signed_at in invalid {
            let tampered = pb::SignedReceipt { signed_at, ..receipt.clone() };
            assert_eq!(reason(keys, &tampered), Reason::Malformed, "{signed_at:?}");
        }
        // Moved outside the key's window: the window is checked first.
        let before_key = pb::SignedReceipt {
            signed_at: Some(prost_types::Timestamp { seconds: -1, nanos: 0 }),
            ..receipt.clone()
        };
        assert_eq!(reason(keys, &before_key), Reason::KeyNotValidAtSigning);
    }

    #[test]
    fn key_outside_its_window_is_not_valid_at_signing() {
        let keys = KeyRing::generate_for_tests();
        let mut info = keys.public_keys().remove(0);
        info.valid_from = datetime!(2024-01-01 00:00 UTC);
        info.valid_until = Some(datetime!(2025-06-01 00:00 UTC));
        let retired = KeyRing::from_public_keys(vec![info]);

        let after = sign_receipt(&keys, sample_summary(), SIGNED_AT).unwrap();
        assert_eq!(reason(&retired, &after), Reason::KeyNotValidAtSigning);
        let at_end = sign_receipt(&keys, sample_summary(), datetime!(2025-06-01 00:00 UTC)).unwrap();
        assert_eq!(reason(&retired, &at_end), Reason::KeyNotValidAtSigning, "the window excludes its end");
        let before =
            sign_receipt(&keys, sample_summary(), datetime!(2023-12-31 23:59:59.999999 UTC)).unwrap();
        assert_eq!(reason(&retired, &before), Reason::KeyNotValidAtSigning);

        // Signed inside the window, it still verifies after retirement.
        let inside =
            sign_receipt(&keys, sample_summary(), datetime!(2025-05-31 23:59:59.999999 UTC)).unwrap();
        assert!(verify_receipt(&retired, &inside).valid);
        let at_start = sign_receipt(&keys, sample_summary(), datetime!(2024-01-01 00:00 UTC)).unwrap();
        assert!(verify_receipt(&retired, &at_start).valid);
    }

    #[test]
    fn signature_by_another_key_under_the_same_id_is_bad() {
        let (keys, _) = fixture();
        let impostor = KeyRing::generate_for_tests();
        let mut forged = sign_receipt(&impostor, sample_summary(), SIGNED_AT).unwrap();
        forged.key_id = keys.current_key_id().to_owned();
        assert_eq!(reason(keys, &forged), Reason::BadSignature);
    }

    #[test]
    fn validly_signed_non_receipts_are_malformed() {
        let (keys, _) = fixture();
        // An audit checkpoint signed by the same key: its signature verifies, but it is not a receipt.
        let checkpoint = Checkpoint::sign(7, 1234, [0xab; 32], [0x01; 32], SIGNED_AT, keys).unwrap();
        let cross = pb::SignedReceipt {
            payload: checkpoint.signed_text().into_bytes(),
            signature: checkpoint.signature.to_vec(),
            key_id: checkpoint.key_id.clone(),
            signed_at: Some(to_timestamp(checkpoint.signed_at)),
        };
        assert_eq!(reason(keys, &cross), Reason::Malformed);

        let signed_at = truncate_to_micros(SIGNED_AT);
        let mut summary = sample_summary();
        summary.signed_at = Some(to_timestamp(signed_at));
        let body = summary.encode_to_vec();
        let with_header = |header: &[u8], body: &[u8]| [header, body].concat();
        let cases = [
            // No header, or another version or spelling of it.
            body.clone(),
            with_header(b"fedx-receipt/v2\n", &body),
            with_header(b"fedx-receipt/v1\r\n", &body),
            with_header(b"fedx-receipt/v1", &body),
            with_header(b"FEDX-RECEIPT/V1\n", &body),
            // Not a ReceiptSummary after the header.
            with_header(HEADER, b"\xff\xff\xff"),
            with_header(HEADER, &body[..body.len() - 1]),
            // A summary without signed_at (the header alone decodes as an empty summary).
            HEADER.to_vec(),
            with_header(HEADER, &pb::ReceiptSummary { signed_at: None, ..summary.clone() }.encode_to_vec()),
            // signed_at inside differs from outside.
            with_header(
                HEADER,
                &pb::ReceiptSummary {
                    signed_at: Some(to_timestamp(signed_at + time::Duration::MICROSECOND)),
                    ..summary.clone()
                }
                .encode_to_vec(),
            ),
            // Not normalised inside.
            with_header(
                HEADER,
                &pb::ReceiptSummary {
                    signed_at: Some(prost_types::Timestamp {
                        seconds: signed_at.unix_timestamp() - 1,
                        nanos: 1_123_456_000,
                    }),
                    ..summary.clone()
                }
                .encode_to_vec(),
            ),
        ];
        for (i, payload) in cases.into_iter().enumerate() {
            let receipt = signed_raw(keys, payload, signed_at);
            assert_eq!(reason(keys, &receipt), Reason::Malformed, "case {i}");
        }
        // The control: the same construction with the right header and body is valid.
        assert!(verify_receipt(keys, &signed_raw(keys, with_header(HEADER, &body), signed_at)).valid);
        // Unknown fields (a later version of ReceiptSummary) are accepted and ignored.
        let mut newer = with_header(HEADER, &body);
        newer.extend([0xfa, 0x01, 0x02, b'o', b'k']); // field 31, length-delimited, "ok"
        let response = verify_receipt(keys, &signed_raw(keys, newer, signed_at));
        assert!(response.valid);
        assert_eq!(response.summary, Some(summary));
    }

    #[derive(Debug, Clone)]
    enum Edit {
        Xor { at: prop::sample::Index, mask: u8 },
        Truncate { keep: prop::sample::Index },
        Insert { at: prop::sample::Index, byte: u8 },
        Remove { at: prop::sample::Index },
        Replace(Vec<u8>),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            4 => (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(at, mask)| Edit::Xor { at, mask }),
            1 => any::<prop::sample::Index>().prop_map(|keep| Edit::Truncate { keep }),
            1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert { at, byte }),
            1 => any::<prop::sample::Index>().prop_map(|at| Edit::Remove { at }),
            1 => proptest::collection::vec(any::<u8>(), 0..128).prop_map(Edit::Replace),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
        match edit {
            Edit::Xor { at, mask } if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
            Edit::Truncate { keep } => bytes.truncate(keep.index(bytes.len() + 1)),
            Edit::Insert { at, byte } => bytes.insert(at.index(bytes.len() + 1), *byte),
            Edit::Remove { at } if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            Edit::Replace(new) => bytes.clone_from(new),
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever is done to the payload and signature bytes, a changed receipt never verifies, and the
        /// reason is always the signature.
        #[test]
        fn any_change_to_payload_or_signature_is_rejected(
            edits in proptest::collection::vec((any::<bool>(), edit()), 1..5),
        ) {
            let (keys, receipt) = fixture();
            let mut tampered = receipt.clone();
            for (on_payload, edit) in &edits {
                apply(if *on_payload { &mut tampered.payload } else { &mut tampered.signature }, edit);
            }
            prop_assume!(tampered != *receipt);
            let response = verify_receipt(keys, &tampered);
            prop_assert!(!response.valid);
            prop_assert_eq!(response.reason, Reason::BadSignature as i32);
            prop_assert!(response.summary.is_none());
        }

        /// The JSON reader never panics on arbitrary objects.
        #[test]
        fn json_reader_never_panics(
            payload in "[A-Za-z0-9+/=_-]{0,40}",
            key in "[a-zA-Z_]{0,12}",
            time in "[0-9TZ:.+-]{0,30}",
        ) {
            let mut doc = Map::new();
            doc.insert("payload".into(), json!(payload));
            doc.insert("signedAt".into(), json!(time));
            doc.insert(key.clone(), json!(time));
            doc.insert("receipt".into(), json!(key));
            let doc = Value::Object(doc);
            let _ = receipt_from_json(&doc);
            let _ = keys_from_json(&json!({ "keys": [doc] }));
        }
    }

    /// The receipt as grpcurl prints it (proto3 JSON: camelCase, padded standard base64, RFC 3339).
    fn grpcurl_json(receipt: &pb::SignedReceipt) -> Value {
        json!({
            "payload": STANDARD.encode(&receipt.payload),
            "signature": STANDARD.encode(&receipt.signature),
            "keyId": receipt.key_id,
            "signedAt": timestamp_text(receipt.signed_at.as_ref().unwrap()).unwrap(),
        })
    }

    #[test]
    fn receipts_are_read_as_grpcurl_prints_them() {
        let (keys, receipt) = fixture();
        let flat = grpcurl_json(receipt);
        let snake = json!({
            "payload": flat["payload"],
            "signature": flat["signature"],
            "key_id": flat["keyId"],
            "signed_at": "2026-11-03T09:30:15.123456+08:00",
        });
        let url_safe = json!({
            "payload": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&receipt.payload),
            "signature": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&receipt.signature),
            "keyId": receipt.key_id,
            "signedAt": "2026-11-03T01:30:15.123456000Z",
        });
        let joint = json!({
            "workerRef": "wr_5f2a9c",
            "legalBasis": { "statute": "…" },
            "results": [{ "claimType": "employed_by", "verdict": "VERDICT_CONFIRMED" }],
            "receipt": flat,
        });
        let batch = json!({ "itemId": "case-17", "result": joint });
        for doc in [&flat, &snake, &url_safe, &joint, &batch, &json!({ "receipt": snake })] {
            let read = receipt_from_json(doc).unwrap();
            assert_eq!(&read, receipt, "{doc}");
            assert!(verify_receipt(keys, &read).valid);
        }

        // Absent fields take their defaults and the verifier names the problem.
        let read = receipt_from_json(&json!({ "payload": flat["payload"], "keyId": null })).unwrap();
        assert_eq!(read.signature, b"");
        assert_eq!(read.key_id, "");
        assert_eq!(read.signed_at, None);
        assert_eq!(reason(keys, &read), Reason::Malformed);
    }

    #[test]
    fn json_that_is_not_a_receipt_is_an_error() {
        let (_, receipt) = fixture();
        let flat = grpcurl_json(receipt);
        let cases = [
            (json!([flat]), "expected a JSON object"),
            (json!({}), "no receipt found"),
            (json!({ "workerRef": "wr_1", "results": [] }), "signed_receipt"),
            (json!({ "itemId": "x", "error": { "code": 8 } }), "no receipt found"),
            (json!({ "receipt": "abc" }), "receipt: expected an object"),
            (json!({ "result": { "receipt": [] } }), "result.receipt: expected an object"),
            (json!({ "keyId": "a", "key_id": "a" }), "keyId and key_id are both present"),
            (json!({ "payload": "not base64!" }), "payload: not base64"),
            (json!({ "signature": 12 }), "signature: expected a string"),
            (json!({ "receipt": { "signedAt": "yesterday" } }), "receipt.signedAt: not an RFC 3339 time"),
        ];
        for (doc, message) in cases {
            let err = receipt_from_json(&doc).unwrap_err();
            assert!(err.to_string().contains(message), "{doc}: {err}");
        }
        // Errors name fields, never values.
        let err = receipt_from_json(&json!({ "signedAt": "110101199003071234" })).unwrap_err();
        assert!(!err.to_string().contains("110101199003071234"), "{err}");
    }

    #[test]
    fn keys_round_trip_through_json() {
        let current = KeyRing::generate_for_tests().public_keys().remove(0);
        let mut retired = KeyRing::generate_for_tests().public_keys().remove(0);
        retired.valid_from = datetime!(2024-01-01 00:00 +08:00);
        retired.valid_until = Some(datetime!(2025-06-01 00:00:00.5 UTC));
        let keys = vec![current.clone(), retired.clone()];
        let doc = keys_to_json(&keys).unwrap();
        assert_eq!(doc["keys"][0]["keyId"], current.key_id.as_str());
        assert_eq!(doc["keys"][0]["validFrom"], "1970-01-01T00:00:00Z");
        assert!(doc["keys"][0].get("validUntil").is_none(), "unset for the current key, as grpcurl omits it");
        assert_eq!(doc["keys"][1]["validFrom"], "2023-12-31T16:00:00Z");
        assert_eq!(doc["keys"][1]["validUntil"], "2025-06-01T00:00:00.5Z");
        assert_eq!(
            STANDARD.decode(doc["keys"][1]["publicKey"].as_str().unwrap()).unwrap(),
            retired.public_key
        );
        assert_eq!(keys_from_json(&doc).unwrap(), keys);

        // snake_case, and no keyId at all.
        let snake = json!({ "keys": [{
            "public_key": doc["keys"][1]["publicKey"],
            "valid_from": "2024-01-01T00:00:00+08:00",
            "valid_until": "2025-06-01T00:00:00.500Z",
        }] });
        assert_eq!(keys_from_json(&snake).unwrap(), vec![retired.clone()]);
    }

    #[test]
    fn bad_keys_json_is_an_error() {
        let info = KeyRing::generate_for_tests().public_keys().remove(0);
        let pk = STANDARD.encode(info.public_key);
        let cases = [
            (json!([]), "\"keys\" array"),
            (json!({ "keys": {} }), "\"keys\" array"),
            (json!({ "keys": [1] }), "keys[0]: expected an object"),
            (json!({ "keys": [{ "validFrom": "2024-01-01T00:00:00Z" }] }), "keys[0].publicKey is missing"),
            (
                json!({ "keys": [{ "publicKey": STANDARD.encode([1u8; 31]), "validFrom": "2024-01-01T00:00:00Z" }] }),
                "is 31 bytes",
            ),
            (json!({ "keys": [{ "publicKey": pk }] }), "keys[0].validFrom is missing"),
            (
                json!({ "keys": [{ "publicKey": pk, "validFrom": "2024-01-01T00:00:00Z", "keyId": "ed25519:0000000000000000" }] }),
                "keyId does not match",
            ),
            (
                json!({ "keys": [{ "publicKey": pk, "validFrom": "2024-01-01T00:00:00Z", "validUntil": "2024-01-01T00:00:00Z" }] }),
                "validUntil is not after validFrom",
            ),
        ];
        for (doc, message) in cases {
            let err = keys_from_json(&doc).unwrap_err();
            assert!(err.to_string().contains(message), "{doc}: {err}");
        }
    }
}
