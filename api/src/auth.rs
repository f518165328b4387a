//! Bearer tokens (HS256 JWT) and what each role may do.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use keyledger_domain::OrgId;
use keyledger_infra::Actor;

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Auditor,
    Service,
    PlatformAdmin,
}

impl Role {
    /// The role's name in tokens and event metadata.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Auditor => "auditor",
            Self::Service => "service",
            Self::PlatformAdmin => "platform_admin",
        }
    }

    /// Whether a token of this role may name every organization (`org: "*"`).
    const fn may_span_orgs(self) -> bool {
        matches!(self, Self::Service | Self::PlatformAdmin)
    }
}

/// What a request wants to do, for authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Org status and masked keys.
    ReadKeys,
    /// Store, rotate, change, remove, verify keys; set the provider order.
    ManageKeys,
    /// Set plans and BYOK access.
    ManagePlan,
    /// The audit trail, the raw events, usage.
    ReadAudit,
    /// Record model calls (and, with the gateway, make them).
    RecordUsage,
}

impl Access {
    const fn allows(self, role: Role) -> bool {
        use Role as R;
        match self {
            Self::ReadKeys => {
                matches!(role, R::Owner | R::Admin | R::Member | R::Auditor | R::PlatformAdmin)
            }
            Self::ManageKeys => matches!(role, R::Owner | R::Admin),
            Self::ManagePlan => matches!(role, R::PlatformAdmin),
            Self::ReadAudit => matches!(role, R::Owner | R::Admin | R::Auditor | R::PlatformAdmin),
            Self::RecordUsage => matches!(role, R::Service),
        }
    }
}

/// The claims of a keyledger token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub org: String,
    pub exp: u64,
    /// Not valid before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The longest a token may live: one that expires later is refused, and `keyledger token`
/// issues none longer.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// Seconds of clock difference tolerated on `exp` and `nbf`.
const LEEWAY: u64 = 5;

/// Signs and checks tokens with the HS256 secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// `KEYLEDGER_JWT_ISSUER`: put in every token issued here, and required of every token.
    issuer: Option<String>,
    /// `KEYLEDGER_JWT_AUDIENCE`: likewise.
    audience: Option<String>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys([REDACTED])")
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
        let bytes = secret.expose_secret().as_bytes();
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            issuer,
            audience,
        }
    }

    /// A signed token for `sub` acting as `role` on `org`, valid for `ttl`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn issue(
        &self,
        org: &str,
        role: Role,
        sub: &str,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
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
    /// When signing fails.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        let mut validation = Validation::new(Algorithm::HS256);
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
        let claims = decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ApiError::unauthenticated("the token has expired"),
            ErrorKind::ImmatureSignature => ApiError::unauthenticated("the token is not valid yet"),
            ErrorKind::InvalidIssuer => {
                ApiError::unauthenticated("the token is from another issuer")
            }
            ErrorKind::InvalidAudience => {
                ApiError::unauthenticated("the token is for another audience")
            }
            _ => ApiError::unauthenticated("the token is not valid"),
        })?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if claims.exp > (now + MAX_TOKEN_LIFETIME).as_secs() + LEEWAY {
            return Err(ApiError::unauthenticated("the token lives longer than 30 days"));
        }
        Ok(claims)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    pub request_id: String,
}

impl Caller {
    /// Allows the request if the caller's role grants `access` on `org`.
    ///
    /// # Errors
    /// `forbidden` (403) for another organization or a role without that access.
    pub fn authorize(&self, org: &OrgId, access: Access) -> Result<(), ApiError> {
        let role = self.claims.role;
        let org_matches =
            self.claims.org == org.as_str() || (self.claims.org == "*" && role.may_span_orgs());
        if !org_matches {
            return Err(ApiError::forbidden("this token is not for that organization"));
        }
        if !access.allows(role) {
            return Err(ApiError::forbidden(format!("the {} role may not do this", role.as_str())));
        }
        Ok(())
    }

    /// Allows a request about every organization at once (the organization list) if the token
    /// spans organizations (`org: "*"`) and its role grants `access`.
    ///
    /// # Errors
    /// `forbidden` (403) for a token of one organization or a role without that access.
    pub fn authorize_platform(&self, access: Access) -> Result<(), ApiError> {
        let role = self.claims.role;
        if self.claims.org != "*" || !role.may_span_orgs() || !access.allows(role) {
            return Err(ApiError::forbidden("only a platform admin token (org \"*\") may do this"));
        }
        Ok(())
    }

    /// The caller as event metadata.
    #[must_use]
    pub fn actor(&self) -> Actor {
        Actor {
            sub: self.claims.sub.clone(),
            role: self.claims.role.as_str().to_owned(),
            request_id: self.request_id.clone(),
        }
    }
}

/// The bearer token of a request: `Authorization: Bearer …`, or, without that header, the
/// `x-api-key` (or `api-key`) header where the Anthropic and Azure OpenAI SDKs put their key, so
/// those SDKs can be pointed at keyledger with a token as their key.
fn presented_token(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let missing = || ApiError::unauthenticated("send Authorization: Bearer <token>");
    if let Some(header) = headers.get(AUTHORIZATION) {
        return header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(missing);
    }
    ["x-api-key", "api-key"]
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(missing)
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<TokenKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tokens = Arc::<TokenKeys>::from_ref(state);
        let claims = tokens.verify(presented_token(&parts.headers)?)?;
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Self { claims, request_id })
    }
}
