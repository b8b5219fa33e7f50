//! Pseudonymous worker references: `wr_` + hex(HMAC-SHA-256(key, canonical 18-character ID)).
//!
//! Logs, audit records, traces and metrics name a worker only by this reference. A keyed hash rather
//! than a plain one because ID numbers have little entropy (region, birth date, 3-digit sequence): an
//! unkeyed SHA-256 could be reversed by enumerating every plausible number in minutes. The key ring
//! keeps retired keys so references minted before a rotation can still be re-derived; the current key
//! mints. Keys are never logged, displayed or written anywhere but the key file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedx_adapters::ident::CitizenId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::model::IdentityConfig;

/// Shortest key accepted: the HMAC-SHA-256 block is 64 bytes, the hash 32; anything shorter than the
/// output size weakens the pseudonym.
pub const MIN_KEY_BYTES: usize = 32;

/// A worker reference and the key it was derived with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerRef {
    /// `wr_` + 64 lower-case hex digits.
    pub value: String,
    pub key_id: String,
}

impl std::fmt::Display for WorkerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.value)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("worker-reference key {key_id}: cannot read {path}: {source}")]
    Read { key_id: String, path: PathBuf, source: std::io::Error },
    #[error("worker-reference key {key_id}: {reason}")]
    Invalid { key_id: String, reason: &'static str },
    #[error("cannot create the development worker-reference key at {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
}

struct Key(Vec<u8>);

/// Never print key material.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<secret>)")
    }
}

/// The gateway's worker-reference keys: one current (mints), any number retired (re-derives).
#[derive(Debug)]
pub struct KeyRing {
    current: String,
    keys: BTreeMap<String, Key>,
}

impl KeyRing {
    /// A ring with one key (tests, benchmarks, evaluation).
    pub fn single(key_id: &str, key: &[u8]) -> Result<KeyRing, KeyError> {
        check_len(key_id, key)?;
        Ok(KeyRing {
            current: key_id.to_owned(),
            keys: BTreeMap::from([(key_id.to_owned(), Key(key.to_vec()))]),
        })
    }

    /// Loads the ring as configured: the current key from `env_key` (hex, the value of
    /// FEDX_WORKER_REF_KEY) or `worker_ref_key_file`; with neither, a development key in
    /// `<data_dir>/worker_ref.key`, generated on first run. Retired keys come from
    /// `previous_worker_ref_keys`.
    pub fn load(
        config: &IdentityConfig,
        data_dir: &Path,
        env_key: Option<&str>,
    ) -> Result<KeyRing, KeyError> {
        let id = config.worker_ref_key_id.clone();
        let current = match (env_key, &config.worker_ref_key_file) {
            (Some(hex_key), _) => decode(&id, hex_key)?,
            (None, Some(path)) => read_key_file(&id, path)?,
            (None, None) => dev_key(&id, &data_dir.join("worker_ref.key"))?,
        };
        let mut keys = BTreeMap::from([(id.clone(), Key(current))]);
        for (old_id, path) in &config.previous_worker_ref_keys {
            if *old_id != id {
                keys.insert(old_id.clone(), Key(read_key_file(old_id, path)?));
            }
        }
        Ok(KeyRing { current: id, keys })
    }

    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The reference of `id` under the current key.
    pub fn mint(&self, id: &CitizenId) -> WorkerRef {
        self.derive(&self.current, id).expect("the current key is always in the ring")
    }

    /// The reference of `id` under a named key (current or retired), if the ring holds it.
    pub fn derive(&self, key_id: &str, id: &CitizenId) -> Option<WorkerRef> {
        let key = self.keys.get(key_id)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC accepts keys of any length");
        mac.update(id.as_str().as_bytes());
        let value = format!("wr_{}", hex::encode(mac.finalize().into_bytes()));
        Some(WorkerRef { value, key_id: key_id.to_owned() })
    }
}

fn check_len(key_id: &str, key: &[u8]) -> Result<(), KeyError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(KeyError::Invalid { key_id: key_id.to_owned(), reason: "key shorter than 32 bytes" });
    }
    Ok(())
}

fn decode(key_id: &str, hex_key: &str) -> Result<Vec<u8>, KeyError> {
    let key = hex::decode(hex_key.trim())
        .map_err(|_| KeyError::Invalid { key_id: key_id.to_owned(), reason: "key is not hex" })?;
    check_len(key_id, &key)?;
    Ok(key)
}

fn read_key_file(key_id: &str, path: &Path) -> Result<Vec<u8>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        key_id: key_id.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    decode(key_id, &text)
}

/// The development key: read it if present, otherwise create it with owner-only permissions. Only the
/// fact of creation is logged.
fn dev_key(key_id: &str, path: &Path) -> Result<Vec<u8>, KeyError> {
    let key: [u8; 32] = rand::random();
    let create = |source| KeyError::Create { path: path.to_owned(), source };
    if !crate::secret_file::create_once(path, hex::encode(key).as_bytes()).map_err(create)? {
        // There already, or another process starting beside this one created it first: use that one.
        return read_key_file(key_id, path);
    }
    tracing::warn!(
        path = %path.display(),
        "no worker-reference key configured: generated a development key (set identity.worker_ref_key_file \
         or FEDX_WORKER_REF_KEY in production)"
    );
    Ok(key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> CitizenId {
        "11010519491231002X".parse().unwrap()
    }

    #[test]
    fn format_is_wr_plus_64_hex_and_keyed() {
        let a = KeyRing::single("k1", &[1u8; 32]).unwrap();
        let b = KeyRing::single("k1", &[2u8; 32]).unwrap();
        let r = a.mint(&id());
        assert!(r.value.starts_with("wr_") && r.value.len() == 67);
        assert!(r.value[3..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(r, a.mint(&id()), "stable under one key");
        assert_ne!(r.value, b.mint(&id()).value, "depends on the key");
        assert!(!format!("{a:?}").contains("0101"), "Debug never shows key bytes");
        assert!(KeyRing::single("k", &[0u8; 16]).is_err());
    }

    #[test]
    fn rotation_keeps_old_refs_derivable() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.key");
        std::fs::write(&old, hex::encode([7u8; 32])).unwrap();
        let config = IdentityConfig {
            worker_ref_key_id: "2027".into(),
            previous_worker_ref_keys: [("2026".to_owned(), old)].into(),
            ..IdentityConfig::default()
        };
        let ring = KeyRing::load(&config, dir.path(), Some(&hex::encode([9u8; 32]))).unwrap();
        assert_eq!(ring.mint(&id()).key_id, "2027");
        let before = KeyRing::single("2026", &[7u8; 32]).unwrap().mint(&id());
        assert_eq!(ring.derive("2026", &id()), Some(before));
        assert!(ring.derive("1999", &id()).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn dev_key_is_generated_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = IdentityConfig::default();
        let first = KeyRing::load(&config, dir.path(), None).unwrap().mint(&id());
        let path = dir.path().join("worker_ref.key");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let second = KeyRing::load(&config, dir.path(), None).unwrap().mint(&id());
        assert_eq!(first, second, "the generated key is reused");
    }
}
