//! The operator's master keys: a ring of 32-byte keys by id, the first one active.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use zeroize::Zeroizing;

/// One master key. Its bytes are zeroized on drop and never printed.
pub struct MasterKey {
    id: String,
    bytes: SecretBox<[u8; 32]>,
}

impl MasterKey {
    /// The key's id, stored next to everything sealed under it.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        self.bytes.expose_secret()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, [REDACTED])", self.id)
    }
}

/// The master keys by id; the first seals, all of them open.
#[derive(Debug)]
pub struct MasterKeyRing {
    keys: Vec<MasterKey>,
}

/// Why a master key setting is unusable. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterKeyError {
    #[error("the master key ring is empty")]
    Empty,
    #[error("master key {0:?} is not base64 of exactly 32 bytes")]
    Malformed(String),
    #[error("master key id {0:?} appears twice")]
    DuplicateId(String),
}

/// The id given to a lone master key written without one.
pub const DEFAULT_KEY_ID: &str = "default";

impl MasterKeyRing {
    /// Parses `base64` (one key, id `default`) or `id1:base64,id2:base64` (first is active).
    ///
    /// # Errors
    /// [`MasterKeyError`] naming the offending key id.
    pub fn parse(text: &str) -> Result<Self, MasterKeyError> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, encoded) = entry.split_once(':').unwrap_or((DEFAULT_KEY_ID, entry));
            let decoded = Zeroizing::new(
                STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| MasterKeyError::Malformed(id.to_owned()))?,
            );
            if decoded.len() != 32 {
                return Err(MasterKeyError::Malformed(id.to_owned()));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(MasterKeyError::DuplicateId(id.to_owned()));
            }
            let mut bytes = SecretBox::new(Box::new([0u8; 32]));
            bytes.expose_secret_mut().copy_from_slice(&decoded);
            keys.push(MasterKey { id: id.to_owned(), bytes });
        }
        if keys.is_empty() {
            return Err(MasterKeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// A new random key, base64-encoded, for dev mode and `keyledger` key generation.
    #[must_use]
    pub fn generate_encoded() -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        Zeroizing::new(STANDARD.encode(bytes.as_ref()))
    }

    /// The key that seals new material.
    #[must_use]
    pub fn active(&self) -> &MasterKey {
        &self.keys[0]
    }

    /// The key with id `id`, if the ring still has it.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_key_gets_the_default_id() {
        let ring = MasterKeyRing::parse(&MasterKeyRing::generate_encoded()).expect("valid");
        assert_eq!(ring.active().id(), DEFAULT_KEY_ID);
    }

    #[test]
    fn the_first_key_of_a_ring_is_active() {
        let text = format!(
            "new:{},old:{}",
            *MasterKeyRing::generate_encoded(),
            *MasterKeyRing::generate_encoded()
        );
        let ring = MasterKeyRing::parse(&text).expect("valid");
        assert_eq!(ring.active().id(), "new");
        assert!(ring.get("old").is_some());
    }

    #[test]
    fn short_keys_and_duplicates_are_refused() {
        assert_eq!(
            MasterKeyRing::parse("a:c2hvcnQ=").err(),
            Some(MasterKeyError::Malformed("a".into()))
        );
        let key = MasterKeyRing::generate_encoded();
        let text = format!("a:{},a:{}", *key, *key);
        assert_eq!(
            MasterKeyRing::parse(&text).err(),
            Some(MasterKeyError::DuplicateId("a".into()))
        );
        assert_eq!(MasterKeyRing::parse(" ").err(), Some(MasterKeyError::Empty));
    }

    #[test]
    fn debug_shows_ids_only() {
        let encoded = MasterKeyRing::generate_encoded();
        let ring = MasterKeyRing::parse(&encoded).expect("valid");
        let shown = format!("{ring:?}");
        assert!(shown.contains("default") && !shown.contains(encoded.as_str()));
    }
}
