//! The gateway's Ed25519 signing keys: audit checkpoints now, verification receipts later.
//!
//! One current key signs; retired keys stay in the ring, public half only, so statements signed before
//! a rotation still verify. Every key has a validity window, and a signature only counts if the time
//! it claims to have been made falls inside its key's window: a leaked retired key cannot sign
//! "new" statements that verify.
//!
//! Key ids are `ed25519:` + the first 8 bytes of SHA-256(raw 32-byte public key) in lower-case hex.
//! Derived rather than assigned so an id is stable across restarts, hosts and configuration edits, can
//! be recomputed by any auditor from the public key alone, and needs no registry to stay unique
//! (64 bits is ample for the handful of keys a gateway ever has).
//!
//! Private key material is never logged, displayed (the `Debug` impls print ids only) or written
//! anywhere but the key file.

use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// File name of the development key, under `<data_dir>/keys/`.
pub const DEV_KEY_FILE: &str = "signing-dev.key.pem";

/// `[signing]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// PKCS#8 PEM file holding the current Ed25519 private key (`openssl genpkey -algorithm ed25519`).
    /// The environment variable `FEDX_SIGNING_KEY_FILE` overrides it (applied by the config loader).
    /// Unset: a development key in `<data_dir>/keys/signing-dev.key.pem`, generated on first run —
    /// fine for evaluation, not for production, since anyone with the data directory can sign.
    pub key_file: Option<PathBuf>,
    /// Start of the current key's validity (RFC 3339). Set it to the rotation time when rotating, so
    /// the previous key's `valid_until` and this meet. Unset: valid since the Unix epoch.
    #[serde(with = "time::serde::rfc3339::option")]
    pub current_valid_from: Option<OffsetDateTime>,
    /// Keys that signed in the past and may no longer sign, kept so their signatures still verify.
    pub retired: Vec<RetiredKey>,
}

/// A key that was current during [valid_from, valid_until).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredKey {
    /// Standard, padded base64 of the 32 raw public-key bytes.
    pub public_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
}

/// A verifying key as published to auditors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    pub key_id: String,
    pub public_key: [u8; 32],
    /// Signatures made before this instant do not verify.
    pub valid_from: OffsetDateTime,
    /// Signatures made at or after this instant do not verify; `None` for the current key.
    pub valid_until: Option<OffsetDateTime>,
}

impl PublicKeyInfo {
    /// Whether a signature made at `at` falls inside this key's window [valid_from, valid_until).
    pub fn valid_at(&self, at: OffsetDateTime) -> bool {
        at >= self.valid_from && self.valid_until.is_none_or(|until| at < until)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("this key ring holds public keys only and cannot sign")]
    NoPrivateKey,
    #[error("unknown signing key {0}")]
    UnknownKey(String),
    #[error("signature does not verify under key {0}")]
    BadSignature(String),
    #[error("key {key_id} was not valid at {signed_at} (the time the signature claims)")]
    OutsideValidity { key_id: String, signed_at: OffsetDateTime },
    #[error("public key of {0} is not a valid Ed25519 point")]
    InvalidPublicKey(String),
    #[error("cannot read signing key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("signing key file {path}: {reason}")]
    InvalidKeyFile { path: PathBuf, reason: String },
    #[error("cannot create the development signing key at {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("[signing] configuration: {0}")]
    Config(String),
}

/// The derived key id of a public key (see the module doc).
pub fn key_id(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    format!("ed25519:{}", hex::encode(&digest[..8]))
}

#[derive(Clone)]
struct Entry {
    info: PublicKeyInfo,
    /// None if the bytes are not a valid point (only possible through `from_public_keys`).
    verifying: Option<VerifyingKey>,
}

/// The gateway's signing keys: the current one (signs, unless the ring is public-only) and retired
/// ones (verify only).
#[derive(Clone)]
pub struct KeyRing {
    signer: Option<SigningKey>,
    current_key_id: String,
    /// Newest `valid_from` first.
    keys: Vec<Entry>,
}

/// Ids and windows only: never key material.
impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current_key_id", &self.current_key_id)
            .field("can_sign", &self.signer.is_some())
            .field("key_ids", &self.keys.iter().map(|e| e.info.key_id.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// Loads the ring as configured: the current key from `cfg.key_file`, or the development key in
    /// `<data_dir>/keys/` (created on first run, mode 0600); retired keys from `cfg.retired`.
    pub fn load(cfg: &SigningConfig, data_dir: &Path) -> Result<KeyRing, SigningError> {
        let signer = match &cfg.key_file {
            Some(path) => read_key_file(path)?,
            None => {
                let path = data_dir.join("keys").join(DEV_KEY_FILE);
                let key = dev_key(&path)?;
                tracing::warn!(
                    path = %path.display(),
                    key_id = %key_id(&key.verifying_key().to_bytes()),
                    "a development signing key is in use: set signing.key_file or FEDX_SIGNING_KEY_FILE \
                     in production"
                );
                key
            }
        };
        let valid_from = cfg.current_valid_from.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut keys = vec![entry_for(signer.verifying_key(), valid_from, None)];
        for (i, r) in cfg.retired.iter().enumerate() {
            let bad = |reason: &str| SigningError::Config(format!("retired key {}: {reason}", i + 1));
            let raw = base64::engine::general_purpose::STANDARD
                .decode(r.public_key.trim())
                .map_err(|_| bad("public_key is not standard base64"))?;
            let raw: [u8; 32] = raw.try_into().map_err(|_| bad("public_key is not 32 bytes"))?;
            let verifying =
                VerifyingKey::from_bytes(&raw).map_err(|_| bad("public_key is not an Ed25519 public key"))?;
            if r.valid_from >= r.valid_until {
                return Err(bad("valid_from must be before valid_until"));
            }
            let entry = entry_for(verifying, r.valid_from, Some(r.valid_until));
            if keys.iter().any(|e| e.info.key_id == entry.info.key_id) {
                return Err(bad(&format!("{} is listed twice (or is the current key)", entry.info.key_id)));
            }
            keys.push(entry);
        }
        Ok(KeyRing::assemble(Some(signer), keys))
    }

    /// A verify-only ring, for auditors checking signatures offline with published keys. The current
    /// key id is that of the newest key (empty if there are none). Key ids are recomputed from the
    /// public keys (ids are derived, never asserted), so a mislabelled entry cannot shadow another.
    pub fn from_public_keys(keys: Vec<PublicKeyInfo>) -> KeyRing {
        let keys = keys
            .into_iter()
            .map(|mut info| {
                info.key_id = key_id(&info.public_key);
                let verifying = VerifyingKey::from_bytes(&info.public_key).ok();
                Entry { info, verifying }
            })
            .collect();
        KeyRing::assemble(None, keys)
    }

    /// A fresh random key valid since the Unix epoch, for tests anywhere in the crate.
    pub fn generate_for_tests() -> KeyRing {
        let signer = SigningKey::generate(&mut rand::rngs::OsRng);
        let keys = vec![entry_for(signer.verifying_key(), OffsetDateTime::UNIX_EPOCH, None)];
        KeyRing::assemble(Some(signer), keys)
    }

    fn assemble(signer: Option<SigningKey>, mut keys: Vec<Entry>) -> KeyRing {
        keys.sort_by_key(|e| std::cmp::Reverse(e.info.valid_from));
        let current_key_id = match &signer {
            Some(s) => key_id(&s.verifying_key().to_bytes()),
            None => keys.first().map(|e| e.info.key_id.clone()).unwrap_or_default(),
        };
        KeyRing { signer, current_key_id, keys }
    }

    /// Signs with the current key: (key id, signature).
    pub fn sign(&self, message: &[u8]) -> Result<(String, [u8; 64]), SigningError> {
        let signer = self.signer.as_ref().ok_or(SigningError::NoPrivateKey)?;
        Ok((self.current_key_id.clone(), signer.sign(message).to_bytes()))
    }

    /// Checks `signature` over `message` by key `key_id`, claimed to have been made at `signed_at`.
    /// Uses strict verification (rejects small-order keys and non-canonical signatures), so a valid
    /// signature cannot be re-encoded into a second valid one.
    pub fn verify(
        &self,
        key_id: &str,
        message: &[u8],
        signature: &[u8],
        signed_at: OffsetDateTime,
    ) -> Result<(), SigningError> {
        let mut entries = self.keys.iter().filter(|e| e.info.key_id == key_id).peekable();
        let first = entries.peek().ok_or_else(|| SigningError::UnknownKey(key_id.to_owned()))?;
        let verifying = first.verifying.ok_or_else(|| SigningError::InvalidPublicKey(key_id.to_owned()))?;
        let bad = || SigningError::BadSignature(key_id.to_owned());
        let signature = Signature::from_slice(signature).map_err(|_| bad())?;
        verifying.verify_strict(message, &signature).map_err(|_| bad())?;
        // The same key may be listed with more than one window (public-only rings): any will do.
        if entries.any(|e| e.info.valid_at(signed_at)) {
            Ok(())
        } else {
            Err(SigningError::OutsideValidity { key_id: key_id.to_owned(), signed_at })
        }
    }

    /// Every key in the ring, newest `valid_from` first.
    pub fn public_keys(&self) -> Vec<PublicKeyInfo> {
        self.keys.iter().map(|e| e.info.clone()).collect()
    }

    /// Id of the key [`KeyRing::sign`] uses.
    pub fn current_key_id(&self) -> &str {
        &self.current_key_id
    }
}

fn entry_for(
    verifying: VerifyingKey,
    valid_from: OffsetDateTime,
    valid_until: Option<OffsetDateTime>,
) -> Entry {
    let public_key = verifying.to_bytes();
    Entry {
        info: PublicKeyInfo { key_id: key_id(&public_key), public_key, valid_from, valid_until },
        verifying: Some(verifying),
    }
}

fn read_key_file(path: &Path) -> Result<SigningKey, SigningError> {
    let bytes = std::fs::read(path).map_err(|source| SigningError::Read { path: path.to_owned(), source })?;
    let invalid = |reason: String| SigningError::InvalidKeyFile { path: path.to_owned(), reason };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| invalid("not a PEM text file (expected a PKCS#8 Ed25519 private key)".into()))?;
    // The parser's error names the structural problem only, never the content.
    SigningKey::from_pkcs8_pem(text)
        .map_err(|e| invalid(format!("not a PKCS#8 PEM Ed25519 private key ({e})")))
}

/// The development key: read it if present, otherwise create it. It is written to a temporary file
/// and hard-linked into place, so a crash never leaves a truncated key and two gateways starting at
/// once on the same directory end up with the same key.
fn dev_key(path: &Path) -> Result<SigningKey, SigningError> {
    if path.exists() {
        warn_if_exposed(path);
        return read_key_file(path);
    }
    let create = |source| SigningError::Create { path: path.to_owned(), source };
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| create(std::io::Error::other(format!("encoding the key: {e}"))))?;
    if crate::secret_file::create_once(path, pem.as_bytes()).map_err(create)? {
        tracing::warn!(path = %path.display(), "generated a development signing key");
        Ok(key)
    } else {
        // Another process created it first: use theirs.
        read_key_file(path)
    }
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "signing key file is accessible to group or others");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn b64(raw: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    #[test]
    fn dev_key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SigningConfig::default();
        let first = KeyRing::load(&cfg, dir.path()).unwrap();
        let path = dir.path().join("keys").join(DEV_KEY_FILE);
        assert!(path.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let second = KeyRing::load(&cfg, dir.path()).unwrap();
        assert_eq!(first.current_key_id(), second.current_key_id());
        assert_eq!(first.public_keys(), second.public_keys());
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("keys")).unwrap().count(), 1);

        // The same file named as key_file gives the same key.
        let named = SigningConfig { key_file: Some(path), ..SigningConfig::default() };
        let third = KeyRing::load(&named, Path::new("/nonexistent")).unwrap();
        assert_eq!(third.current_key_id(), first.current_key_id());
        let (id, sig) = first.sign(b"m").unwrap();
        third.verify(&id, b"m", &sig, OffsetDateTime::now_utc()).unwrap();
    }

    #[test]
    fn key_id_format() {
        let ring = KeyRing::generate_for_tests();
        let id = ring.current_key_id();
        assert_eq!(id.len(), "ed25519:".len() + 16);
        let pk = ring.public_keys()[0].public_key;
        assert_eq!(id, key_id(&pk));
        assert_eq!(&id[8..], hex::encode(&Sha256::digest(pk)[..8]));
        assert!(id[8..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(id, KeyRing::generate_for_tests().current_key_id());
    }

    #[test]
    fn sign_verify_round_trip_and_tampering() {
        let ring = KeyRing::generate_for_tests();
        let now = OffsetDateTime::now_utc();
        let (id, sig) = ring.sign(b"hello audit").unwrap();
        assert_eq!(id, ring.current_key_id());
        ring.verify(&id, b"hello audit", &sig, now).unwrap();
        assert!(matches!(ring.verify(&id, b"hello audiT", &sig, now), Err(SigningError::BadSignature(_))));
        for i in [0, 31, 32, 63] {
            let mut bad = sig;
            bad[i] ^= 0x01;
            assert!(matches!(
                ring.verify(&id, b"hello audit", &bad, now),
                Err(SigningError::BadSignature(_))
            ));
        }
        assert!(matches!(
            ring.verify(&id, b"hello audit", &sig[..63], now),
            Err(SigningError::BadSignature(_))
        ));
        assert!(matches!(
            ring.verify("ed25519:0000000000000000", b"hello audit", &sig, now),
            Err(SigningError::UnknownKey(_))
        ));
        let other = KeyRing::generate_for_tests();
        assert!(matches!(other.verify(&id, b"hello audit", &sig, now), Err(SigningError::UnknownKey(_))));
    }

    #[test]
    fn retired_keys_verify_inside_their_window_only() {
        let dir = tempfile::tempdir().unwrap();
        let old = KeyRing::load(&SigningConfig::default(), &dir.path().join("old")).unwrap();
        let old_pk = old.public_keys()[0].public_key;
        let rotation = datetime!(2025-06-01 00:00 UTC);
        let cfg = SigningConfig {
            key_file: None,
            current_valid_from: Some(rotation),
            retired: vec![RetiredKey {
                public_key: b64(&old_pk),
                valid_from: datetime!(2024-01-01 00:00 UTC),
                valid_until: rotation,
            }],
        };
        let ring = KeyRing::load(&cfg, &dir.path().join("new")).unwrap();
        assert_ne!(ring.current_key_id(), old.current_key_id());

        let keys = ring.public_keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].key_id, ring.current_key_id(), "newest first");
        assert_eq!(keys[0].valid_until, None);
        assert_eq!(keys[1].key_id, old.current_key_id());
        assert_eq!(keys[1].valid_until, Some(rotation));

        let (old_id, sig) = old.sign(b"m").unwrap();
        ring.verify(&old_id, b"m", &sig, datetime!(2025-05-31 23:59:59.999999 UTC)).unwrap();
        ring.verify(&old_id, b"m", &sig, datetime!(2024-01-01 00:00 UTC)).unwrap();
        for outside in [rotation, datetime!(2023-12-31 23:59:59 UTC), datetime!(2030-01-01 00:00 UTC)] {
            assert!(matches!(
                ring.verify(&old_id, b"m", &sig, outside),
                Err(SigningError::OutsideValidity { .. })
            ));
        }
        // The current key is valid from the rotation on, not before.
        let (id, sig) = ring.sign(b"n").unwrap();
        ring.verify(&id, b"n", &sig, rotation).unwrap();
        assert!(matches!(
            ring.verify(&id, b"n", &sig, datetime!(2025-05-31 00:00 UTC)),
            Err(SigningError::OutsideValidity { .. })
        ));
    }

    #[test]
    fn bad_retired_entries_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = b64(&KeyRing::generate_for_tests().public_keys()[0].public_key);
        let t0 = datetime!(2024-01-01 00:00 UTC);
        let t1 = datetime!(2025-01-01 00:00 UTC);
        let current =
            b64(&KeyRing::load(&SigningConfig::default(), dir.path()).unwrap().public_keys()[0].public_key);
        let cases = [
            (String::from("not base64!"), t0, t1),
            (b64(&[1u8; 31]), t0, t1),
            (good.clone(), t1, t0),
            (good.clone(), t0, t0),
            (current, t0, t1),
        ];
        for (public_key, valid_from, valid_until) in cases {
            let cfg = SigningConfig {
                retired: vec![RetiredKey { public_key: public_key.clone(), valid_from, valid_until }],
                ..SigningConfig::default()
            };
            let err = KeyRing::load(&cfg, dir.path()).unwrap_err();
            assert!(matches!(err, SigningError::Config(_)), "{public_key}: {err}");
        }
        let twice = RetiredKey { public_key: good, valid_from: t0, valid_until: t1 };
        let cfg = SigningConfig { retired: vec![twice.clone(), twice], ..SigningConfig::default() };
        assert!(matches!(KeyRing::load(&cfg, dir.path()), Err(SigningError::Config(_))));
    }

    #[test]
    fn garbage_key_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8]); 4] = [
            ("garbage.pem", b"this is not a key\n"),
            ("binary.pem", &[0xff, 0xfe, 0x00, 0x01]),
            ("empty.pem", b""),
            (
                "wrong-type.pem",
                b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n",
            ),
        ];
        for (name, contents) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            let cfg = SigningConfig { key_file: Some(path.clone()), ..SigningConfig::default() };
            let err = KeyRing::load(&cfg, dir.path()).unwrap_err();
            assert!(matches!(err, SigningError::InvalidKeyFile { .. }), "{name}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(name), "{msg}");
        }
        let missing =
            SigningConfig { key_file: Some(dir.path().join("missing.pem")), ..SigningConfig::default() };
        assert!(matches!(KeyRing::load(&missing, dir.path()), Err(SigningError::Read { .. })));
        // A corrupted dev key is an error too, not silently replaced.
        let keys = dir.path().join("d").join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::write(keys.join(DEV_KEY_FILE), b"junk").unwrap();
        assert!(matches!(
            KeyRing::load(&SigningConfig::default(), &dir.path().join("d")),
            Err(SigningError::InvalidKeyFile { .. })
        ));
    }

    #[test]
    fn public_only_ring_verifies_but_cannot_sign() {
        let ring = KeyRing::generate_for_tests();
        let (id, sig) = ring.sign(b"m").unwrap();
        let mut published = ring.public_keys();
        published[0].key_id = "mislabelled".into();
        let auditor = KeyRing::from_public_keys(published);
        assert_eq!(auditor.current_key_id(), id);
        auditor.verify(&id, b"m", &sig, OffsetDateTime::now_utc()).unwrap();
        assert!(matches!(auditor.sign(b"m"), Err(SigningError::NoPrivateKey)));
        assert!(matches!(
            auditor.verify("mislabelled", b"m", &sig, OffsetDateTime::now_utc()),
            Err(SigningError::UnknownKey(_))
        ));

        let empty = KeyRing::from_public_keys(vec![]);
        assert_eq!(empty.current_key_id(), "");
        assert!(matches!(empty.sign(b"m"), Err(SigningError::NoPrivateKey)));

        // Not a curve point: verification reports it rather than panicking.
        let mut bogus = [0u8; 32];
        bogus[0] = 2;
        bogus[31] = 0xff;
        let ring = KeyRing::from_public_keys(vec![PublicKeyInfo {
            key_id: String::new(),
            public_key: bogus,
            valid_from: OffsetDateTime::UNIX_EPOCH,
            valid_until: None,
        }]);
        if VerifyingKey::from_bytes(&bogus).is_err() {
            assert!(matches!(
                ring.verify(&key_id(&bogus), b"m", &sig, OffsetDateTime::now_utc()),
                Err(SigningError::InvalidPublicKey(_))
            ));
        }
    }

    #[test]
    fn debug_prints_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load(&SigningConfig::default(), dir.path()).unwrap();
        let pem = std::fs::read_to_string(dir.path().join("keys").join(DEV_KEY_FILE)).unwrap();
        let secret = SigningKey::from_pkcs8_pem(&pem).unwrap().to_bytes();
        let dbg = format!("{ring:?}");
        assert!(dbg.contains(ring.current_key_id()));
        assert!(!dbg.contains(&hex::encode(secret)));
    }

    #[test]
    fn config_parses_from_toml() {
        let cfg: SigningConfig = toml::from_str(
            r#"
            key_file = "/etc/fedx/signing.pem"
            current_valid_from = "2025-06-01T00:00:00Z"
            [[retired]]
            public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            valid_from = "2024-01-01T00:00:00+08:00"
            valid_until = "2025-06-01T00:00:00Z"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.key_file.as_deref(), Some(Path::new("/etc/fedx/signing.pem")));
        assert_eq!(cfg.current_valid_from, Some(datetime!(2025-06-01 00:00 UTC)));
        assert_eq!(cfg.retired[0].valid_from, datetime!(2023-12-31 16:00 UTC));
        let empty: SigningConfig = toml::from_str("").unwrap();
        assert!(empty.key_file.is_none() && empty.current_valid_from.is_none() && empty.retired.is_empty());
        assert!(toml::from_str::<SigningConfig>("keyfile = \"x\"").is_err());
        // Serialises back (the loader may print the effective configuration).
        let text = toml::to_string(&cfg).unwrap();
        assert!(text.contains("2025-06-01T00:00:00Z"), "{text}");
    }
}
