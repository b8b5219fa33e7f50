//! Signed checkpoints: the gateway's signed statement "after `tree_size` records the Merkle root was
//! `root` and the hash-chain head was `head`". Auditors keep them; a later checkpoint plus a
//! consistency proof shows the log only grew, and any record can be proven included under one.
//!
//! # Signed bytes (stable, `v1`)
//!
//! The signature covers this UTF-8 text, one field per line, each line ending in `\n` (no `\r`):
//!
//! ```text
//! fedx-audit-checkpoint/v1
//! seq {seq}
//! tree_size {tree_size}
//! root {root_hash, 64 lower-case hex digits}
//! head {head_hash, 64 lower-case hex digits}
//! signed_at {signing time as integer microseconds since the Unix epoch, UTC}
//! key_id {key id, e.g. ed25519:0123456789abcdef}
//! ```
//!
//! Numbers are canonical decimal: no sign (except `-` on a pre-1970 `signed_at`), no leading zeros,
//! no `-0`. Text rather than a binary or JSON encoding so an auditor can read exactly what was signed
//! and re-create it with any tool, with no canonicalisation rules to get wrong; the version line keeps
//! these signatures from being confused with any other statement the same key signs. `signed_at` is
//! signed because key validity windows are checked against it (see [`crate::signing`]), which is also
//! why it is truncated to whole microseconds: the stored, signed and displayed values are the same.
//!
//! # File form
//!
//! `fedx audit checkpoint --out FILE` writes the signed text followed by `signature {base64}\n`
//! (standard, padded base64 of the 64 signature bytes). [`Checkpoint::from_file_text`] parses it
//! strictly: exactly those eight lines, in that order, each canonical, or an error naming the line.
//! Strictness matters because a lenient parser would accept variants (upper-case hex, leading zeros,
//! CRLF) that are not the bytes that were signed yet still verify after normalisation — two files
//! for one checkpoint, and a parser whose acceptance can't be reasoned about.

use base64::Engine;
use time::OffsetDateTime;

use super::Hash;
use crate::signing::{KeyRing, SigningError};

/// First line of the signed text; bump the version for any change to the format.
pub const HEADER: &str = "fedx-audit-checkpoint/v1";

/// Longest key id accepted from a file (ours are 24 characters).
const MAX_KEY_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub tree_size: u64,
    pub root_hash: Hash,
    pub head_hash: Hash,
    /// Truncated to whole microseconds (UTC) by [`Checkpoint::sign`] and by the parser.
    pub signed_at: OffsetDateTime,
    pub key_id: String,
    pub signature: [u8; 64],
}

/// Why a checkpoint file was rejected; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint file, line {line}: {message}")]
pub struct CheckpointParseError {
    pub line: usize,
    pub message: String,
}

/// Microseconds since the Unix epoch, rounded down (also before 1970).
fn unix_micros(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos().div_euclid(1000)
}

/// `t` truncated to whole microseconds, in UTC.
fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    // Rounding a representable instant down to a whole microsecond stays representable, so the
    // fallback is never taken.
    OffsetDateTime::from_unix_timestamp_nanos(unix_micros(t) * 1000).unwrap_or(t)
}

impl Checkpoint {
    /// The exact bytes signed (see the module doc).
    pub fn signed_text(&self) -> String {
        format!(
            "{HEADER}\nseq {}\ntree_size {}\nroot {}\nhead {}\nsigned_at {}\nkey_id {}\n",
            self.seq,
            self.tree_size,
            hex::encode(self.root_hash),
            hex::encode(self.head_hash),
            unix_micros(self.signed_at),
            self.key_id,
        )
    }

    /// Signs a checkpoint with the ring's current key. `signed_at` is truncated to whole microseconds.
    pub fn sign(
        seq: u64,
        tree_size: u64,
        root_hash: Hash,
        head_hash: Hash,
        signed_at: OffsetDateTime,
        keys: &KeyRing,
    ) -> Result<Checkpoint, SigningError> {
        let mut checkpoint = Checkpoint {
            seq,
            tree_size,
            root_hash,
            head_hash,
            signed_at: truncate_to_micros(signed_at),
            key_id: keys.current_key_id().to_owned(),
            signature: [0; 64],
        };
        // The key id is part of the signed text, so it is set before signing; `sign` reports the same
        // (current) id.
        let (key_id, signature) = keys.sign(checkpoint.signed_text().as_bytes())?;
        debug_assert_eq!(key_id, checkpoint.key_id);
        checkpoint.signature = signature;
        Ok(checkpoint)
    }

    /// Checks the signature, and that the key was valid at `signed_at`.
    pub fn verify_signature(&self, keys: &KeyRing) -> Result<(), SigningError> {
        keys.verify(&self.key_id, self.signed_text().as_bytes(), &self.signature, self.signed_at)
    }

    /// Portable file form for auditors to save (`fedx audit checkpoint --out FILE`): signed_text
    /// followed by "signature {base64}\n".
    pub fn to_file_text(&self) -> String {
        let signature = base64::engine::general_purpose::STANDARD.encode(self.signature);
        format!("{}signature {signature}\n", self.signed_text())
    }

    /// Strict parser of [`Checkpoint::to_file_text`]; any deviation (extra, missing or reordered
    /// lines, bad hex, bad base64, wrong lengths, non-canonical numbers, `\r`) is an error naming the
    /// line. Never panics. Does not check the signature: call [`Checkpoint::verify_signature`].
    pub fn from_file_text(text: &str) -> Result<Checkpoint, CheckpointParseError> {
        let mut lines = Lines { rest: text, number: 0 };

        let header = lines.next()?;
        if header != HEADER {
            return Err(lines.error(format!("expected the header line `{HEADER}`")));
        }
        let seq = lines.field("seq").and_then(|v| lines.wrap(parse_u64(v)))?;
        let tree_size = lines.field("tree_size").and_then(|v| lines.wrap(parse_u64(v)))?;
        let root_hash = lines.field("root").and_then(|v| lines.wrap(parse_hash(v)))?;
        let head_hash = lines.field("head").and_then(|v| lines.wrap(parse_hash(v)))?;
        let signed_at = lines.field("signed_at").and_then(|v| lines.wrap(parse_micros(v)))?;
        let key_id = lines.field("key_id").and_then(|v| lines.wrap(parse_key_id(v)))?;
        let signature = lines.field("signature").and_then(|v| lines.wrap(parse_signature(v)))?;
        if !lines.rest.is_empty() {
            lines.number += 1;
            return Err(lines.error("unexpected content after the signature line".into()));
        }
        Ok(Checkpoint { seq, tree_size, root_hash, head_hash, signed_at, key_id, signature })
    }
}

/// A cursor over `\n`-terminated lines that knows its line number for error messages.
struct Lines<'a> {
    rest: &'a str,
    number: usize,
}

impl<'a> Lines<'a> {
    fn error(&self, message: String) -> CheckpointParseError {
        CheckpointParseError { line: self.number, message }
    }

    fn wrap<T>(&self, r: Result<T, String>) -> Result<T, CheckpointParseError> {
        r.map_err(|m| self.error(m))
    }

    /// The next line without its `\n`; every line, the last included, must end in one.
    fn next(&mut self) -> Result<&'a str, CheckpointParseError> {
        self.number += 1;
        if self.rest.is_empty() {
            return Err(self.error("missing line (the file ends early)".into()));
        }
        let Some((line, rest)) = self.rest.split_once('\n') else {
            return Err(self.error("line does not end with a newline".into()));
        };
        self.rest = rest;
        if line.contains('\r') {
            return Err(self.error("carriage return in line (line ends must be \\n)".into()));
        }
        Ok(line)
    }

    /// The value of the next line, which must be `{name} {value}`.
    fn field(&mut self, name: &str) -> Result<&'a str, CheckpointParseError> {
        let line = self.next()?;
        line.strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .ok_or_else(|| self.error(format!("expected `{name} <value>`")))
    }
}

/// Canonical unsigned decimal: digits only, no leading zero unless the number is 0.
fn canonical_digits(v: &str) -> Result<(), String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{v:?} is not an unsigned decimal number"));
    }
    if v.len() > 1 && v.starts_with('0') {
        return Err(format!("{v:?} has a leading zero"));
    }
    Ok(())
}

fn parse_u64(v: &str) -> Result<u64, String> {
    canonical_digits(v)?;
    v.parse().map_err(|_| format!("{v:?} is too large"))
}

fn parse_micros(v: &str) -> Result<OffsetDateTime, String> {
    let (negative, digits) = match v.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, v),
    };
    canonical_digits(digits)?;
    if negative && digits == "0" {
        return Err("\"-0\" is not canonical".into());
    }
    let micros: i64 = v.parse().map_err(|_| format!("{v:?} is out of range"))?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|_| format!("{v:?} microseconds is outside the representable dates"))
}

fn parse_hash(v: &str) -> Result<Hash, String> {
    if v.len() != 64 || !v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("expected 64 lower-case hex digits".into());
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(v, &mut hash).map_err(|_| "expected 64 lower-case hex digits".to_string())?;
    Ok(hash)
}

fn parse_key_id(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > MAX_KEY_ID_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("key id must be 1 to {MAX_KEY_ID_LEN} printable ASCII characters, no spaces"));
    }
    Ok(v.to_owned())
}

fn parse_signature(v: &str) -> Result<[u8; 64], String> {
    let engine = &base64::engine::general_purpose::STANDARD;
    // The standard engine already rejects missing padding and non-zero trailing bits; the round trip
    // makes "exactly one spelling per signature" explicit.
    let bytes = engine.decode(v).map_err(|_| "signature is not standard padded base64".to_string())?;
    let signature: [u8; 64] =
        bytes.try_into().map_err(|b: Vec<u8>| format!("signature is {} bytes, expected 64", b.len()))?;
    if engine.encode(signature) != v {
        return Err("signature base64 is not canonical".into());
    }
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn sample(keys: &KeyRing) -> Checkpoint {
        Checkpoint::sign(7, 1234, [0xab; 32], [0x01; 32], datetime!(2025-03-04 05:06:07.123456789 UTC), keys)
            .unwrap()
    }

    fn parse_err(text: &str) -> CheckpointParseError {
        Checkpoint::from_file_text(text).unwrap_err()
    }

    #[test]
    fn signed_text_is_exactly_the_documented_format() {
        let c = Checkpoint {
            seq: 3,
            tree_size: 0,
            root_hash: [0xe3; 32],
            head_hash: [0; 32],
            signed_at: datetime!(1970-01-01 00:00:01.5 UTC),
            key_id: "ed25519:0011223344556677".into(),
            signature: [0; 64],
        };
        let expected = format!(
            "fedx-audit-checkpoint/v1\nseq 3\ntree_size 0\nroot {}\nhead {}\nsigned_at 1500000\n\
             key_id ed25519:0011223344556677\n",
            "e3".repeat(32),
            "00".repeat(32)
        );
        assert_eq!(c.signed_text(), expected);
        assert_eq!(c.to_file_text(), format!("{expected}signature {}==\n", "A".repeat(86)));
        let before_epoch = Checkpoint { signed_at: datetime!(1969-12-31 23:59:59.9999995 UTC), ..c };
        assert!(before_epoch.signed_text().contains("\nsigned_at -1\n"));
    }

    #[test]
    fn round_trip() {
        let keys = KeyRing::generate_for_tests();
        let c = sample(&keys);
        assert_eq!(c.signed_at, datetime!(2025-03-04 05:06:07.123456 UTC), "truncated to microseconds");
        assert_eq!(c.key_id, keys.current_key_id());
        c.verify_signature(&keys).unwrap();
        let text = c.to_file_text();
        let parsed = Checkpoint::from_file_text(&text).unwrap();
        assert_eq!(parsed, c);
        assert_eq!(parsed.to_file_text(), text);
        parsed.verify_signature(&keys).unwrap();

        // An auditor with the published keys only.
        let auditor = KeyRing::from_public_keys(keys.public_keys());
        parsed.verify_signature(&auditor).unwrap();
        assert!(matches!(
            Checkpoint::sign(1, 1, [0; 32], [0; 32], c.signed_at, &auditor),
            Err(SigningError::NoPrivateKey)
        ));
        // Another gateway's keys.
        let other = KeyRing::generate_for_tests();
        assert!(matches!(parsed.verify_signature(&other), Err(SigningError::UnknownKey(_))));
    }

    #[test]
    fn extreme_values_round_trip() {
        let keys = KeyRing::generate_for_tests();
        for signed_at in [
            datetime!(1960-01-01 00:00:00.000001 +08:00),
            OffsetDateTime::UNIX_EPOCH,
            datetime!(9999-12-31 23:59:59.999999 UTC),
            datetime!(-9999-01-01 00:00 UTC),
        ] {
            let c = Checkpoint::sign(u64::MAX, 0, [0xff; 32], [0; 32], signed_at, &keys).unwrap();
            let parsed = Checkpoint::from_file_text(&c.to_file_text()).unwrap();
            assert_eq!(parsed, c);
            assert_eq!(parsed.signed_at, signed_at);
            // The test key is valid from the epoch on.
            let verdict = parsed.verify_signature(&keys);
            if signed_at < OffsetDateTime::UNIX_EPOCH {
                assert!(matches!(verdict, Err(SigningError::OutsideValidity { .. })));
            } else {
                verdict.unwrap();
            }
        }
    }

    #[test]
    fn tampered_fields_fail_verification() {
        let keys = KeyRing::generate_for_tests();
        let c = sample(&keys);
        let variants = [
            Checkpoint { seq: 8, ..c.clone() },
            Checkpoint { tree_size: 1235, ..c.clone() },
            Checkpoint { root_hash: [0xac; 32], ..c.clone() },
            Checkpoint { head_hash: [0x02; 32], ..c.clone() },
            Checkpoint { signed_at: c.signed_at + time::Duration::microseconds(1), ..c.clone() },
        ];
        for v in variants {
            assert!(matches!(v.verify_signature(&keys), Err(SigningError::BadSignature(_))), "{v:?}");
        }
    }

    /// Any single-byte substitution, deletion or insertion is caught: by the parser or by the signature.
    #[test]
    fn every_single_byte_change_is_detected() {
        let keys = KeyRing::generate_for_tests();
        let text = sample(&keys).to_file_text();
        let bytes = text.as_bytes();
        let mut tried = 0;
        let mut check = |mutated: Vec<u8>, what: &str| {
            let Ok(mutated) = String::from_utf8(mutated) else { return };
            if mutated == text {
                return;
            }
            tried += 1;
            if let Ok(c) = Checkpoint::from_file_text(&mutated) {
                assert!(c.verify_signature(&keys).is_err(), "{what} accepted:\n{mutated}");
            }
        };
        for i in 0..bytes.len() {
            for replacement in
                [bytes[i] ^ 0x01, bytes[i] ^ 0x20, b'0', b'a', b'A', b' ', b'\n', b'-', b'+', b'=']
            {
                let mut m = bytes.to_vec();
                m[i] = replacement;
                check(m, &format!("byte {i} -> {replacement:#x}"));
            }
            let mut m = bytes.to_vec();
            m.remove(i);
            check(m, &format!("deleting byte {i}"));
            for inserted in [b'0', b' ', b'\n', b'\r', b'a', b'='] {
                let mut m = bytes.to_vec();
                m.insert(i, inserted);
                check(m, &format!("inserting {inserted:#x} at {i}"));
            }
        }
        for appended in ["\n", " ", "x"] {
            check(format!("{text}{appended}").into_bytes(), "appending");
        }
        assert!(tried > 4000, "{tried}");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let keys = KeyRing::generate_for_tests();
        let text = sample(&keys).to_file_text();
        let lines: Vec<&str> = text.lines().collect();
        let with = |i: usize, replacement: &str| {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            l[i] = replacement.to_string();
            format!("{}\n", l.join("\n"))
        };
        let hex64 = "ab".repeat(32);
        let cases = [
            (String::new(), 1),
            ("fedx-audit-checkpoint/v2\n".to_string(), 1),
            (with(0, "fedx-audit-checkpoint/v1 "), 1),
            (with(1, "seq 07"), 2),
            (with(1, "seq +7"), 2),
            (with(1, "seq -7"), 2),
            (with(1, "seq  7"), 2),
            (with(1, "seq 7 "), 2),
            (with(1, "seq"), 2),
            (with(1, "seq "), 2),
            (with(1, "seq 18446744073709551616"), 2),
            (with(1, "tree_size 1234"), 2),
            (with(2, "tree_size 0x4d2"), 3),
            (with(3, &format!("root {}", hex64.to_uppercase())), 4),
            (with(3, &format!("root {}", &hex64[2..])), 4),
            (with(3, &format!("root {hex64}00")), 4),
            (with(4, "head zz"), 5),
            (with(5, "signed_at -0"), 6),
            (with(5, "signed_at 01"), 6),
            (with(5, "signed_at 9223372036854775808"), 6),
            (with(5, "signed_at 9223372036854775807"), 6),
            (with(5, "signed_at 1.5"), 6),
            (with(6, "key_id "), 7),
            (with(6, "key_id a b"), 7),
            (with(6, &format!("key_id {}", "k".repeat(129))), 7),
            (with(7, "signature AAAA"), 8),
            (with(7, &format!("signature {}", "A".repeat(88))), 8),
            (with(7, &format!("signature {}", "A".repeat(86))), 8),
            (with(7, &format!("signature {}=B", "A".repeat(86))), 8),
            (with(7, &format!("signature {}B=", "A".repeat(85))), 8),
            (with(7, &format!("signature {}==", "-".repeat(86))), 8),
            (text.trim_end_matches('\n').to_string(), 8),
            (format!("{text}\n"), 9),
            (format!("{text}extra\n"), 9),
            (text.replace('\n', "\r\n"), 1),
            (lines[..7].join("\n") + "\n", 8),
        ];
        for (input, line) in cases {
            let err = parse_err(&input);
            assert_eq!(err.line, line, "{input:?}: {err}");
            assert!(err.to_string().contains(&format!("line {line}")));
        }
        // Two lines swapped: the first out-of-place line is named.
        let mut swapped: Vec<&str> = lines.clone();
        swapped.swap(1, 2);
        assert_eq!(parse_err(&(swapped.join("\n") + "\n")).line, 2);
        let mut swapped: Vec<&str> = lines.clone();
        swapped.swap(3, 4);
        assert_eq!(parse_err(&(swapped.join("\n") + "\n")).line, 4);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parser_never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = Checkpoint::from_file_text(&text);
        }

        #[test]
        fn parser_never_panics_on_near_valid_text(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 1..6),
        ) {
            let keys = KeyRing::generate_for_tests();
            let mut text: Vec<char> = sample(&keys).to_file_text().chars().collect();
            for (at, c, op) in edits {
                let i = at.index(text.len() + 1);
                match op {
                    0 if i < text.len() => text[i] = c,
                    1 if i < text.len() => { text.remove(i); }
                    _ => text.insert(i, c),
                }
            }
            let text: String = text.into_iter().collect();
            if let Ok(c) = Checkpoint::from_file_text(&text) {
                prop_assert_eq!(Checkpoint::from_file_text(&c.to_file_text()), Ok(c.clone()));
            }
        }

        #[test]
        fn parser_never_panics_on_line_shaped_text(
            values in proptest::collection::vec("[-+0-9a-zA-Z=/ ]{0,90}", 0..10),
        ) {
            let names = ["fedx-audit-checkpoint/v1", "seq", "tree_size", "root", "head", "signed_at", "key_id", "signature", "x", "y"];
            let text: String = values.iter().zip(names).map(|(v, n)| format!("{n} {v}\n")).collect();
            let _ = Checkpoint::from_file_text(&text);
        }
    }
}
