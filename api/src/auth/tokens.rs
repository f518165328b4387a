//! Checking a bearer token: keyledger's own HS256 tokens with the shared secret, the identity
//! provider's with its published keys, and never one algorithm's token with the other's key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use jsonwebtoken::{decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::claims::{ClaimPaths, Claims};
use super::jwks::Jwks;
use super::Role;
use crate::error::ApiError;
use keyledger_infra::JwksSettings;

/// The longest a token may live: one that expires later is refused, and `keyledger token`
/// issues none longer.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// Seconds of clock difference tolerated on `exp` and `nbf`.
const LEEWAY: u64 = 5;

/// Why no token could be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(
        "keyledger issues tokens with KEYLEDGER_JWT_SECRET, which is not set: with \
         KEYLEDGER_JWKS_URL alone, tokens come from the identity provider"
    )]
    NoSecret,
    #[error("signing failed: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

/// The shared secret of keyledger's own tokens.
struct SharedSecret {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The identity provider: its keys and where its tokens carry role and organization.
#[derive(Debug)]
struct IdentityProvider {
    jwks: Jwks,
    paths: ClaimPaths,
}

/// Signs keyledger's own tokens and checks every token.
pub struct TokenKeys {
    shared: Option<SharedSecret>,
    identity_provider: Option<IdentityProvider>,
    /// `KEYLEDGER_JWT_ISSUER`: put in every token issued here, and required of every token.
    issuer: Option<String>,
    /// `KEYLEDGER_JWT_AUDIENCE`: likewise.
    audience: Option<String>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("shared", &self.shared.as_ref().map(|_| "[REDACTED]"))
            .field("identity_provider", &self.identity_provider)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the UTF-8 bytes of the secret, with no issuer or audience required.
    #[must_use]
    pub fn new(secret: &SecretString) -> Self {
        Self::with_claims(secret, None, None)
    }

    /// Keys from the UTF-8 bytes of the secret; tokens must name `issuer` and `audience` where
    /// these are set.
    #[must_use]
    pub fn with_claims(
        secret: &SecretString,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Self {
        Self::configured(Some(secret), None, issuer, audience)
    }

    /// Keys as configured: the shared secret, the identity provider, or both.
    #[must_use]
    pub fn configured(
        secret: Option<&SecretString>,
        jwks: Option<&JwksSettings>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Self {
        let shared = secret.map(|secret| {
            let bytes = secret.expose_secret().as_bytes();
            SharedSecret {
                encoding: EncodingKey::from_secret(bytes),
                decoding: DecodingKey::from_secret(bytes),
            }
        });
        let identity_provider = jwks.map(|settings| IdentityProvider {
            jwks: Jwks::new(settings),
            paths: ClaimPaths {
                role: settings.role_claim.clone(),
                org: settings.org_claim.clone(),
            },
        });
        Self { shared, identity_provider, issuer, audience }
    }

    /// Fetches the identity provider's keys, where there is one, before the first request.
    pub async fn warm_up(&self) {
        if let Some(provider) = &self.identity_provider {
            provider.jwks.warm_up().await;
        }
    }

    /// A signed token for `sub` acting as `role` on `org`, valid for `ttl`.
    ///
    /// # Errors
    /// Without a shared secret, or when signing fails.
    pub fn issue(
        &self,
        org: &str,
        role: Role,
        sub: &str,
        ttl: Duration,
    ) -> Result<String, IssueError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            org: org.to_owned(),
            exp: (now + ttl.min(MAX_TOKEN_LIFETIME)).as_secs(),
            nbf: None,
            iat: Some(now.as_secs()),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        self.sign(&claims)
    }

    /// Signs `claims` as they are.
    ///
    /// # Errors
    /// Without a shared secret, or when signing fails.
    pub fn sign(&self, claims: &Claims) -> Result<String, IssueError> {
        let shared = self.shared.as_ref().ok_or(IssueError::NoSecret)?;
        Ok(encode(&Header::new(Algorithm::HS256), claims, &shared.encoding)?)
    }

    /// The caller a token names, once its signature, lifetime, issuer and audience are checked.
    pub(crate) async fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let not_valid = || ApiError::unauthenticated("the token is not valid");
        let header = decode_header(token).map_err(|_| not_valid())?;
        // The algorithm picks the key, and each key verifies one algorithm only: an HS256
        // token is never checked against a provider's public key, nor an RS256 one against
        // the shared secret.
        let claims = match header.alg {
            Algorithm::HS256 => {
                let shared = self.shared.as_ref().ok_or_else(|| {
                    ApiError::unauthenticated(
                        "HS256 tokens are not accepted here; present the identity provider's token",
                    )
                })?;
                let payload = self.payload(token, &shared.decoding, Algorithm::HS256)?;
                ClaimPaths::own().read(&payload)?
            }
            algorithm @ (Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) => {
                let provider = self.identity_provider.as_ref().ok_or_else(not_valid)?;
                let key = provider.jwks.key_for(header.kid.as_deref(), algorithm).await?;
                let payload = self.payload(token, &key, algorithm)?;
                provider.paths.read(&payload)?
            }
            other => {
                return Err(ApiError::unauthenticated(format!(
                    "tokens signed with {other:?} are not accepted (HS256, RS256, ES256, EdDSA)"
                )))
            }
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if claims.exp > (now + MAX_TOKEN_LIFETIME).as_secs() + LEEWAY {
            return Err(ApiError::unauthenticated("the token lives longer than 30 days"));
        }
        Ok(claims)
    }

    /// The token's payload, once its signature, `exp`, `nbf`, issuer and audience hold.
    fn payload(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithm: Algorithm,
    ) -> Result<Value, ApiError> {
        let mut validation = Validation::new(algorithm);
        let mut required = vec!["exp", "sub"];
        validation.validate_nbf = true;
        validation.leeway = LEEWAY;
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        decode::<Value>(token, key, &validation).map(|data| data.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthenticated("the token has expired"),
                ErrorKind::ImmatureSignature => {
                    ApiError::unauthenticated("the token is not valid yet")
                }
                ErrorKind::InvalidIssuer => {
                    ApiError::unauthenticated("the token is from another issuer")
                }
                ErrorKind::InvalidAudience => {
                    ApiError::unauthenticated("the token is for another audience")
                }
                _ => ApiError::unauthenticated("the token is not valid"),
            }
        })
    }
}
