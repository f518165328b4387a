//! Keyed fingerprints: tell two keys apart without keeping either.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::envelope::{derive, Envelope};
use keyledger_domain::keyring::Fingerprint;
use keyledger_domain::{ApiKey, OrgId};

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "fp1";

impl Envelope {
    /// HMAC-SHA256 of the key under a per-organization fingerprint key, tagged with the master
    /// key id it was derived from so it can be recomputed after the active key changes.
    #[must_use]
    pub fn fingerprint(&self, org: &OrgId, key: &ApiKey) -> Fingerprint {
        let master = self.ring().active();
        Fingerprint(format!("{VERSION}:{}:{}", master.id(), self.mac_hex(master.bytes(), org, key)))
    }

    /// Whether `key` is the key `fingerprint` was taken of, compared in constant time.
    #[must_use]
    pub fn is_same_key(&self, org: &OrgId, key: &ApiKey, fingerprint: &Fingerprint) -> bool {
        let mut parts = fingerprint.0.splitn(3, ':');
        let (Some(VERSION), Some(master_id), Some(expected)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Some(master) = self.ring().get(master_id) else {
            return false;
        };
        let actual = self.mac_hex(master.bytes(), org, key);
        actual.as_bytes().ct_eq(expected.as_bytes()).into()
    }

    fn mac_hex(&self, master: &[u8; 32], org: &OrgId, key: &ApiKey) -> String {
        let mac_key = derive(master, b"keyledger fingerprint v1", org.as_str().as_bytes());
        let mut mac =
            HmacSha256::new_from_slice(mac_key.as_ref()).expect("HMAC takes any key length");
        mac.update(key.provider().as_str().as_bytes());
        mac.update(&[0]);
        mac.update(key.expose().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}
