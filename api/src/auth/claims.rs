//! What a token says about its caller, wherever the identity provider put it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Role;
use crate::error::ApiError;

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

/// Where a token carries the role and the organization: `role` and `org` in keyledger's own
/// tokens; in an identity provider's, wherever `KEYLEDGER_JWT_ROLE_CLAIM` and
/// `KEYLEDGER_JWT_ORG_CLAIM` say (Keycloak nests roles in `realm_access.roles`, Auth0 wants
/// namespaced names such as `https://platform.example/org`).
#[derive(Debug, Clone)]
pub(crate) struct ClaimPaths {
    pub(crate) role: String,
    pub(crate) org: String,
}

impl ClaimPaths {
    /// The layout of the tokens `keyledger token` issues.
    pub(crate) fn own() -> Self {
        Self { role: "role".to_owned(), org: "org".to_owned() }
    }

    /// The caller's claims out of a token's verified payload.
    pub(crate) fn read(&self, payload: &Value) -> Result<Claims, ApiError> {
        let refuse = |detail: String| ApiError::unauthenticated(detail);
        let sub = payload["sub"].as_str().filter(|s| !s.is_empty());
        let sub = sub.ok_or_else(|| refuse("the token's sub claim is not a string".to_owned()))?;
        let exp = payload["exp"].as_u64();
        let exp = exp.ok_or_else(|| refuse("the token's exp claim is not a time".to_owned()))?;
        let org = lookup(payload, &self.org).and_then(Value::as_str).filter(|s| !s.is_empty());
        let org = org.ok_or_else(|| {
            refuse(format!("the token names no organization in the {:?} claim", self.org))
        })?;
        Ok(Claims {
            sub: sub.to_owned(),
            role: self.role_of(payload)?,
            org: org.to_owned(),
            exp,
            nbf: payload["nbf"].as_u64(),
            iat: payload["iat"].as_u64(),
            iss: payload["iss"].as_str().map(str::to_owned),
            aud: payload["aud"].as_str().map(str::to_owned),
        })
    }

    /// The role claim is a role's name, or a list of names (as identity providers give
    /// roles) among which exactly one is a keyledger role: a token may not leave the choice
    /// between two roles to keyledger.
    fn role_of(&self, payload: &Value) -> Result<Role, ApiError> {
        let names: Vec<&str> = match lookup(payload, &self.role) {
            Some(Value::String(name)) => vec![name.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => {
                return Err(ApiError::unauthenticated(format!(
                    "the token names no role in the {:?} claim",
                    self.role
                )))
            }
        };
        let mut roles: Vec<Role> = names.into_iter().filter_map(Role::named).collect();
        roles.dedup();
        match roles.as_slice() {
            [role] => Ok(*role),
            [] => Err(ApiError::unauthenticated(format!(
                "the token's {:?} claim names no keyledger role (owner, admin, member, auditor, \
                 service, platform_admin)",
                self.role
            ))),
            _ => Err(ApiError::unauthenticated(format!(
                "the token's {:?} claim names several keyledger roles; a token carries one",
                self.role
            ))),
        }
    }
}

/// The claim at a dotted `path`. A name that itself holds dots (a URL, as Auth0's namespaced
/// claims are) is found too: at each level the longest name present wins over splitting.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    if let Some(found) = object.get(path) {
        return Some(found);
    }
    path.rmatch_indices('.').find_map(|(at, _)| {
        object.get(&path[..at]).and_then(|inner| lookup(inner, &path[at + 1..]))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(role: &str, org: &str) -> ClaimPaths {
        ClaimPaths { role: role.to_owned(), org: org.to_owned() }
    }

    fn detail(error: ApiError) -> String {
        error.detail().to_owned()
    }

    #[test]
    fn claims_are_found_flat_nested_and_under_names_with_dots() {
        let keycloak = json!({"sub": "u1", "exp": 9, "realm_access": {"roles": ["offline_access", "owner"]}, "tenant": {"id": "acme"}});
        let claims = paths("realm_access.roles", "tenant.id").read(&keycloak).expect("keycloak");
        assert_eq!((claims.role, claims.org.as_str()), (Role::Owner, "acme"));

        let auth0 = json!({"sub": "u2", "exp": 9, "https://platform.example/org": "acme",
            "https://platform.example/app": {"role": "auditor"}});
        let claims = paths("https://platform.example/app.role", "https://platform.example/org")
            .read(&auth0)
            .expect("auth0");
        assert_eq!((claims.role, claims.org.as_str()), (Role::Auditor, "acme"));

        let own = json!({"sub": "u3", "exp": 9, "role": "platform_admin", "org": "*"});
        assert_eq!(ClaimPaths::own().read(&own).expect("own").role, Role::PlatformAdmin);
    }

    #[test]
    fn a_missing_unknown_or_ambiguous_role_is_refused_with_the_claim_named() {
        let read = |payload: Value| paths("roles", "org").read(&payload).map_err(detail);
        let missing = read(json!({"sub": "u", "exp": 9, "org": "acme"})).expect_err("missing");
        assert!(missing.contains("no role in the \"roles\" claim"), "{missing}");
        let unknown =
            read(json!({"sub": "u", "exp": 9, "org": "acme", "roles": ["root"]})).expect_err("x");
        assert!(unknown.contains("names no keyledger role"), "{unknown}");
        let two = read(json!({"sub": "u", "exp": 9, "org": "acme", "roles": ["owner", "member"]}))
            .expect_err("two");
        assert!(two.contains("several keyledger roles"), "{two}");
        let no_org = read(json!({"sub": "u", "exp": 9, "roles": "owner"})).expect_err("org");
        assert!(no_org.contains("no organization in the \"org\" claim"), "{no_org}");
        let number_sub = read(json!({"sub": 7, "exp": 9, "org": "acme", "roles": "owner"}));
        assert!(number_sub.expect_err("sub").contains("sub claim"));
    }
}
