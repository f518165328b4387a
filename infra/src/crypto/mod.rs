//! Envelope encryption of provider keys: a master key ring, a per-organization key-encryption
//! key derived with HKDF, a fresh data key per key version, AES-256-GCM with associated data
//! binding every ciphertext to its organization, provider, key id and version.

mod audit_signing;
mod envelope;
mod fingerprint;
mod master_key;

pub use audit_signing::{key_id, verify_signature, AuditSigner};
pub use envelope::{Binding, CryptoError, Envelope, SealedKey};
pub use master_key::{MasterKey, MasterKeyError, MasterKeyRing, DEFAULT_KEY_ID};
