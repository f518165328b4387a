//! The key that signs audit checkpoints: Ed25519, derived from a master key with HKDF (info
//! `keyledger audit signing v1`) or given as a seed. Its public half is published, so anyone
//! holding a checkpoint can check it without trusting the database it came from.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hkdf::Hkdf;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::MasterKey;

/// HKDF `info` of the signing key derived from a master key.
const DERIVATION_INFO: &[u8] = b"keyledger audit signing v1";

/// An Ed25519 signing key. Its seed is not kept once the key pair is made.
pub struct AuditSigner {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl AuditSigner {
    /// The signing key derived from `master`.
    #[must_use]
    pub fn derived(master: &MasterKey) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, master.bytes())
            .expand(DERIVATION_INFO, seed.as_mut())
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
        Self::from_seed(&seed)
    }

    /// The signing key of a 32-byte Ed25519 seed.
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .unwrap_or_else(|_| unreachable!("any 32 bytes are an Ed25519 seed"));
        let key_id = key_id(pair.public_key().as_ref());
        Self { pair, key_id }
    }

    /// The first 16 hex characters of SHA-256 of the public key.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The 32-byte public key, base64.
    #[must_use]
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.pair.public_key().as_ref())
    }

    /// The signature of `message`, base64.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.pair.sign(message).as_ref())
    }
}

impl fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditSigner({})", self.key_id)
    }
}

/// The id of a 32-byte Ed25519 public key: the first 16 hex characters of its SHA-256.
#[must_use]
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(public_key))[..16].to_owned()
}

/// Whether `signature` (base64) is `public_key`'s (base64) over `message`.
#[must_use]
pub fn verify_signature(public_key: &str, message: &[u8], signature: &str) -> bool {
    let (Ok(public_key), Ok(signature)) = (STANDARD.decode(public_key), STANDARD.decode(signature))
    else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public_key).verify(message, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKeyRing;

    #[test]
    fn a_signature_verifies_with_the_public_key_and_nothing_else() {
        let signer = AuditSigner::from_seed(&[7u8; 32]);
        let signature = signer.sign(b"keyledger-checkpoint/v1\nacme\n3\n");
        assert!(verify_signature(
            &signer.public_key(),
            b"keyledger-checkpoint/v1\nacme\n3\n",
            &signature
        ));
        assert!(!verify_signature(
            &signer.public_key(),
            b"keyledger-checkpoint/v1\nacme\n4\n",
            &signature
        ));
        let other = AuditSigner::from_seed(&[8u8; 32]);
        assert!(!verify_signature(
            &other.public_key(),
            b"keyledger-checkpoint/v1\nacme\n3\n",
            &signature
        ));
        assert!(!verify_signature("not base64", b"x", &signature));
    }

    #[test]
    fn the_key_follows_from_the_master_key_and_its_id_from_the_public_key() {
        let ring = MasterKeyRing::parse(&MasterKeyRing::generate_encoded()).expect("ring");
        let (a, b) = (AuditSigner::derived(ring.active()), AuditSigner::derived(ring.active()));
        assert_eq!(a.public_key(), b.public_key());
        let other = MasterKeyRing::parse(&MasterKeyRing::generate_encoded()).expect("ring");
        assert_ne!(a.public_key(), AuditSigner::derived(other.active()).public_key());
        let public = STANDARD.decode(a.public_key()).expect("base64");
        assert_eq!(public.len(), 32);
        assert_eq!(a.key_id(), &hex::encode(Sha256::digest(&public))[..16]);
        assert!(!format!("{a:?}").contains(&a.public_key()));
    }

    /// RFC 8032's first test vector: the seed, its public key and its signature of nothing.
    #[test]
    fn ed25519_as_rfc_8032_signs() {
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .expect("hex")
                .try_into()
                .expect("32 bytes");
        let signer = AuditSigner::from_seed(&seed);
        assert_eq!(
            hex::encode(STANDARD.decode(signer.public_key()).expect("base64")),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(STANDARD.decode(signer.sign(b"")).expect("base64")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }
}
