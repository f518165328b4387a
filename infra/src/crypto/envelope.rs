//! Sealing and opening one key version.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::master_key::MasterKeyRing;
use keyledger_domain::{ApiKey, OrgId, ProviderId};

/// Seals and opens key material under the master key ring.
#[derive(Debug)]
pub struct Envelope {
    ring: MasterKeyRing,
}

/// What a sealed key is bound to; opening it under any other binding fails.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub org: &'a OrgId,
    pub provider: ProviderId,
    pub key_id: u32,
    pub version: u32,
}

pub use keyledger_store::material::SealedKey;

/// Why material cannot be sealed or opened. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("master key {0:?} is no longer in the key ring")]
    UnknownMasterKey(String),
    #[error("the material does not open under this binding (moved, altered or wrong key)")]
    DoesNotOpen,
    #[error("sealing failed")]
    Seal,
}

const NONCE_LEN: usize = 12;

impl Envelope {
    /// Envelope encryption under `ring`.
    #[must_use]
    pub fn new(ring: MasterKeyRing) -> Self {
        Self { ring }
    }

    pub(super) fn ring(&self) -> &MasterKeyRing {
        &self.ring
    }

    /// Seals `key` under a fresh data key, bound to `binding`.
    ///
    /// # Errors
    /// [`CryptoError::Seal`] if the cipher refuses (it does not for valid sizes).
    pub fn seal(&self, binding: Binding<'_>, key: &ApiKey) -> Result<SealedKey, CryptoError> {
        let master = self.ring.active();
        let kek = derive(master.bytes(), b"keyledger kek v1", binding.org.as_str().as_bytes());
        let mut dek = SecretBox::new(Box::new([0u8; 32]));
        OsRng.fill_bytes(dek.expose_secret_mut());

        let key_nonce = random_nonce();
        let ciphertext = encrypt(
            dek.expose_secret(),
            &key_nonce,
            key.expose().as_bytes(),
            &aad("key", binding),
        )?;
        let dek_nonce = random_nonce();
        let wrapped_dek = encrypt(&kek, &dek_nonce, dek.expose_secret(), &aad("dek", binding))?;
        Ok(SealedKey {
            master_key_id: master.id().to_owned(),
            dek_nonce: dek_nonce.to_vec(),
            wrapped_dek,
            key_nonce: key_nonce.to_vec(),
            ciphertext,
        })
    }

    /// The id of the master key new material is sealed under.
    #[must_use]
    pub fn active_master_key_id(&self) -> &str {
        self.ring.active().id()
    }

    /// Whether the ring holds master key `id` (material under it opens).
    #[must_use]
    pub fn holds(&self, id: &str) -> bool {
        self.ring.get(id).is_some()
    }

    /// `sealed` re-sealed under the active master key, or `None` if it already is. Only the
    /// data key is unwrapped and wrapped again, in zeroized memory; the API key itself is never
    /// decrypted, and its ciphertext stays as it is.
    ///
    /// # Errors
    /// As [`Envelope::open`]: the material does not open under `binding`, or its master key
    /// left the ring.
    pub fn rewrap(
        &self,
        binding: Binding<'_>,
        sealed: &SealedKey,
    ) -> Result<Option<SealedKey>, CryptoError> {
        let active = self.ring.active();
        if sealed.master_key_id == active.id() {
            return Ok(None);
        }
        let old = self
            .ring
            .get(&sealed.master_key_id)
            .ok_or_else(|| CryptoError::UnknownMasterKey(sealed.master_key_id.clone()))?;
        let org = binding.org.as_str().as_bytes();
        let old_kek = derive(old.bytes(), b"keyledger kek v1", org);
        let dek = Zeroizing::new(decrypt(
            &old_kek,
            &sealed.dek_nonce,
            &sealed.wrapped_dek,
            &aad("dek", binding),
        )?);
        let new_kek = derive(active.bytes(), b"keyledger kek v1", org);
        let dek_nonce = random_nonce();
        let wrapped_dek = encrypt(&new_kek, &dek_nonce, &dek, &aad("dek", binding))?;
        Ok(Some(SealedKey {
            master_key_id: active.id().to_owned(),
            dek_nonce: dek_nonce.to_vec(),
            wrapped_dek,
            key_nonce: sealed.key_nonce.clone(),
            ciphertext: sealed.ciphertext.clone(),
        }))
    }

    /// Opens `sealed`, which must have been sealed under exactly `binding`.
    ///
    /// # Errors
    /// [`CryptoError::DoesNotOpen`] for any other binding or altered material;
    /// [`CryptoError::UnknownMasterKey`] if its master key left the ring.
    pub fn open(&self, binding: Binding<'_>, sealed: &SealedKey) -> Result<ApiKey, CryptoError> {
        let master = self
            .ring
            .get(&sealed.master_key_id)
            .ok_or_else(|| CryptoError::UnknownMasterKey(sealed.master_key_id.clone()))?;
        let kek = derive(master.bytes(), b"keyledger kek v1", binding.org.as_str().as_bytes());
        let dek = Zeroizing::new(decrypt(
            &kek,
            &sealed.dek_nonce,
            &sealed.wrapped_dek,
            &aad("dek", binding),
        )?);
        let dek: &[u8; 32] = dek.as_slice().try_into().map_err(|_| CryptoError::DoesNotOpen)?;
        let plaintext = decrypt(dek, &sealed.key_nonce, &sealed.ciphertext, &aad("key", binding))?;
        let text = String::from_utf8(plaintext).map_err(|e| {
            drop(Zeroizing::new(e.into_bytes()));
            CryptoError::DoesNotOpen
        })?;
        Ok(ApiKey::from_storage(binding.provider, SecretString::from(text)))
    }
}

/// HKDF-SHA256 of `master` with `salt`, expanded for `info` to 32 bytes.
pub(super) fn derive(master: &[u8; 32], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), master)
        .expand(info, out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// Associated data: which secret this is (`key` or `dek`) and exactly where it belongs. Org ids
/// cannot contain ':', so the encoding is unambiguous.
fn aad(kind: &str, b: Binding<'_>) -> Vec<u8> {
    format!("keyledger:v1:{kind}:{}:{}:{}:{}", b.org, b.provider, b.key_id, b.version).into_bytes()
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

fn encrypt(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    msg: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.into());
    cipher.encrypt(Nonce::from_slice(nonce), Payload { msg, aad }).map_err(|_| CryptoError::Seal)
}

fn decrypt(key: &[u8; 32], nonce: &[u8], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if nonce.len() != NONCE_LEN {
        return Err(CryptoError::DoesNotOpen);
    }
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .map_err(|_| CryptoError::DoesNotOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope::new(MasterKeyRing::parse(&MasterKeyRing::generate_encoded()).expect("valid"))
    }

    fn key(raw: &str) -> ApiKey {
        ApiKey::parse(ProviderId::Anthropic, SecretString::from(raw.to_owned())).expect("valid key")
    }

    #[test]
    fn what_is_sealed_opens_under_the_same_binding() {
        let env = envelope();
        let org = OrgId::parse("acme").expect("valid");
        let binding = Binding { org: &org, provider: ProviderId::Anthropic, key_id: 1, version: 1 };
        let raw = format!("sk-ant-api03-{}", "q".repeat(60));
        let sealed = env.seal(binding, &key(&raw)).expect("seals");
        assert!(!sealed.ciphertext.windows(8).any(|w| w == &raw.as_bytes()[..8]));
        assert_eq!(env.open(binding, &sealed).expect("opens").expose(), raw);
    }

    #[test]
    fn material_moved_to_another_org_or_version_does_not_open() {
        let env = envelope();
        let (acme, other) =
            (OrgId::parse("acme").expect("valid"), OrgId::parse("other").expect("valid"));
        let binding =
            Binding { org: &acme, provider: ProviderId::Anthropic, key_id: 1, version: 1 };
        let sealed =
            env.seal(binding, &key(&format!("sk-ant-api03-{}", "q".repeat(60)))).expect("seals");
        for moved in [
            Binding { org: &other, ..binding },
            Binding { version: 2, ..binding },
            Binding { key_id: 2, ..binding },
            Binding { provider: ProviderId::Openai, ..binding },
        ] {
            assert_eq!(env.open(moved, &sealed).err(), Some(CryptoError::DoesNotOpen));
        }
    }

    #[test]
    fn fingerprints_tell_keys_apart_and_survive_a_new_active_master_key() {
        let old = MasterKeyRing::generate_encoded();
        let env = Envelope::new(MasterKeyRing::parse(&format!("old:{}", *old)).expect("valid"));
        let org = OrgId::parse("acme").expect("valid");
        let a = key(&format!("sk-ant-api03-{}", "a".repeat(60)));
        let b = key(&format!("sk-ant-api03-{}", "b".repeat(60)));
        let fp = env.fingerprint(&org, &a);
        assert!(env.is_same_key(&org, &a, &fp));
        assert!(!env.is_same_key(&org, &b, &fp));
        assert!(!env.is_same_key(&OrgId::parse("other").expect("valid"), &a, &fp));
        let rotated = format!("new:{},old:{}", *MasterKeyRing::generate_encoded(), *old);
        let env = Envelope::new(MasterKeyRing::parse(&rotated).expect("valid"));
        assert!(env.is_same_key(&org, &a, &fp));
    }

    #[test]
    fn rewrapped_material_opens_under_the_new_master_key_alone() {
        let (k1, k2) = (MasterKeyRing::generate_encoded(), MasterKeyRing::generate_encoded());
        let ring = |text: String| Envelope::new(MasterKeyRing::parse(&text).expect("valid ring"));
        let (old, both, new) = (
            ring(format!("k1:{}", *k1)),
            ring(format!("k2:{},k1:{}", *k2, *k1)),
            ring(format!("k2:{}", *k2)),
        );
        let org = OrgId::parse("acme").expect("valid");
        let binding = Binding { org: &org, provider: ProviderId::Anthropic, key_id: 1, version: 3 };
        let sealed = old
            .seal(binding, &key("sk-ant-api03-ROTATEme1234567890abcdefghijklmnop"))
            .expect("sealed");

        let resealed = both.rewrap(binding, &sealed).expect("rewrapped").expect("moved to k2");
        assert_eq!(resealed.master_key_id, "k2");
        assert_eq!(resealed.ciphertext, sealed.ciphertext, "the key itself was not re-encrypted");
        assert_ne!(resealed.wrapped_dek, sealed.wrapped_dek);
        assert_eq!(
            new.open(binding, &resealed).expect("opens without k1").expose(),
            "sk-ant-api03-ROTATEme1234567890abcdefghijklmnop"
        );
        assert_eq!(both.rewrap(binding, &resealed), Ok(None), "already under the active key");
        assert_eq!(
            old.open(binding, &resealed).map(|_| ()),
            Err(CryptoError::UnknownMasterKey("k2".to_owned()))
        );
        let elsewhere = Binding { version: 4, ..binding };
        assert_eq!(both.rewrap(elsewhere, &sealed), Err(CryptoError::DoesNotOpen));
    }
}
