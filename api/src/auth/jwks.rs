//! The identity provider's signing keys: fetched from its JSON Web Key Set, kept, fetched again
//! when they grow old or a token names a key not among them, never more often than a cooldown.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::error::ApiError;
use keyledger_infra::JwksSettings;

/// A key set is a few kilobytes; a larger answer is refused rather than held in memory.
const MAX_KEY_SET_BYTES: usize = 256 * 1024;

/// How long one fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One verification key of the provider's, with the one algorithm it verifies.
#[derive(Clone)]
struct SigningKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: Arc<Vec<SigningKey>>,
    /// The last fetch that succeeded.
    fetched: Option<Instant>,
    /// The last fetch, whether or not it succeeded: the cooldown counts from it.
    attempted: Option<Instant>,
}

/// The provider's keys, shared by every request.
pub(crate) struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    max_age: Duration,
    cooldown: Duration,
    cache: RwLock<Cache>,
    /// One fetch at a time: a burst of tokens naming a new key waits for one fetch.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

impl Jwks {
    pub(crate) fn new(settings: &JwksSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self {
            url: settings.url.clone(),
            client,
            max_age: settings.max_age,
            cooldown: settings.cooldown,
            cache: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key that verifies a token signed with `algorithm` under key id `kid`.
    ///
    /// Only RS256, ES256 and EdDSA keys are ever held: a symmetric (`oct`) key in the set is
    /// skipped, so no token is checked against a shared secret the provider published.
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<DecodingKey, ApiError> {
        let (found, fresh) = self.find(kid, algorithm);
        if let (Some(key), true) = (&found, fresh) {
            return Ok(key.clone());
        }
        if self.may_fetch() {
            let _one_at_a_time = self.fetching.lock().await;
            // Another request may have fetched while this one waited for the lock.
            if self.may_fetch() {
                self.refresh().await;
            }
        }
        match self.find(kid, algorithm) {
            (Some(key), _) => Ok(key),
            (None, _) if self.cache.read().map_or(true, |c| c.fetched.is_none()) => {
                Err(ApiError::unauthenticated(
                    "the identity provider's signing keys could not be fetched; try again later",
                ))
            }
            (None, _) => Err(ApiError::unauthenticated(
                "the token was signed with a key the identity provider does not publish",
            )),
        }
    }

    /// Fetches the key set now, as a replica starts, so the first request does not wait.
    pub(crate) async fn warm_up(&self) {
        let _one_at_a_time = self.fetching.lock().await;
        if self.may_fetch() {
            self.refresh().await;
        }
    }

    /// The key for `kid` and `algorithm` among those held, and whether they are fresh.
    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> (Option<DecodingKey>, bool) {
        let Ok(cache) = self.cache.read() else { return (None, false) };
        let fresh = cache.fetched.is_some_and(|at| at.elapsed() < self.max_age);
        let mut candidates = cache.keys.iter().filter(|k| k.algorithm == algorithm);
        let key = match kid {
            Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid)),
            // A token without a key id is matched only where the choice is unambiguous.
            None => match (candidates.next(), candidates.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            },
        };
        (key.map(|k| k.key.clone()), fresh)
    }

    fn may_fetch(&self) -> bool {
        self.cache.read().is_ok_and(|c| c.attempted.is_none_or(|at| at.elapsed() >= self.cooldown))
    }

    async fn refresh(&self) {
        let outcome = self.fetch().await;
        let Ok(mut cache) = self.cache.write() else { return };
        let now = Instant::now();
        cache.attempted = Some(now);
        let host = self.url.host_str().unwrap_or_default();
        match outcome {
            Ok(keys) => {
                tracing::info!(host, keys = keys.len(), "fetched the identity provider's keys");
                cache.keys = Arc::new(keys);
                cache.fetched = Some(now);
            }
            Err(reason) => tracing::warn!(
                host,
                %reason,
                "could not fetch the identity provider's keys; keeping those fetched before"
            ),
        }
    }

    async fn fetch(&self) -> Result<Vec<SigningKey>, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("the key set answered HTTP {}", response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.without_url().to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_KEY_SET_BYTES {
                return Err(format!("the key set is larger than {MAX_KEY_SET_BYTES} bytes"));
            }
        }
        parse_key_set(&body)
    }
}

/// The usable keys of a JWKS document. A key of a kind keyledger does not verify with is
/// skipped, not an error: providers publish encryption keys and other algorithms beside the
/// signing keys.
fn parse_key_set(body: &[u8]) -> Result<Vec<SigningKey>, String> {
    #[derive(serde::Deserialize)]
    struct KeySet {
        keys: Vec<Value>,
    }
    let set: KeySet =
        serde_json::from_slice(body).map_err(|e| format!("the key set is not a JWKS: {e}"))?;
    Ok(set.keys.into_iter().filter_map(signing_key).collect())
}

fn signing_key(value: Value) -> Option<SigningKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) if matches!(declared, None | Some(KeyAlgorithm::RS256)) => {
            Algorithm::RS256
        }
        AlgorithmParameters::EllipticCurve(ec)
            if ec.curve == EllipticCurve::P256
                && matches!(declared, None | Some(KeyAlgorithm::ES256)) =>
        {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp)
            if okp.curve == EllipticCurve::Ed25519
                && matches!(declared, None | Some(KeyAlgorithm::EdDSA)) =>
        {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(SigningKey { kid: jwk.common.key_id, algorithm, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signing_keys_of_the_three_algorithms_are_kept() {
        let set = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "use": "sig", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "r-enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "r-384", "alg": "RS384", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
            {"kty": "EC", "kid": "e-384", "crv": "P-384", "x": "AAAA", "y": "AAAA"},
            {"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": "AAAA"},
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "ML-DSA", "kid": "future"},
        ]});
        let keys = parse_key_set(set.to_string().as_bytes()).expect("a key set");
        let kept: Vec<_> =
            keys.iter().map(|k| (k.kid.as_deref().unwrap_or_default(), k.algorithm)).collect();
        assert_eq!(
            kept,
            [("r1", Algorithm::RS256), ("e1", Algorithm::ES256), ("d1", Algorithm::EdDSA)]
        );
        assert!(parse_key_set(b"<html>").is_err());
    }
}
