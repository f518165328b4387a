//! Bearer tokens and what each role may do. Tokens are keyledger's own (HS256 with
//! `KEYLEDGER_JWT_SECRET`) or the platform's identity provider's (RS256, ES256 or EdDSA, checked
//! against its JWKS).

mod claims;
mod jwks;
mod tokens;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

pub use claims::Claims;
pub use tokens::{IssueError, TokenKeys, MAX_TOKEN_LIFETIME};

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

    /// The role of that name.
    #[must_use]
    pub fn named(name: &str) -> Option<Self> {
        [Self::Owner, Self::Admin, Self::Member, Self::Auditor, Self::Service, Self::PlatformAdmin]
            .into_iter()
            .find(|role| role.as_str() == name)
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
        let claims = tokens.verify(presented_token(&parts.headers)?).await?;
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Self { claims, request_id })
    }
}
