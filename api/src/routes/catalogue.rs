//! `/v1/whoami`, `/v1/providers` and `/v1/plans`: what a settings page needs before it asks
//! anything of an organization (who is signed in, which providers exist, what each plan allows).

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use keyledger_domain::ProviderId;

/// One provider of the registry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderView {
    /// The id the API takes.
    #[schema(example = "openai")]
    id: &'static str,
    /// The name people write.
    #[schema(example = "OpenAI")]
    name: &'static str,
    /// A stored key must say where the provider lives (`endpoint`).
    needs_endpoint: bool,
    /// The key may be left out (local servers often have none).
    key_optional: bool,
    /// Public prefixes its keys start with; shown in masks, not secret.
    key_prefixes: &'static [&'static str],
}

/// The provider registry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderList {
    providers: Vec<ProviderView>,
}

/// What one plan allows.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PlanView {
    #[schema(example = "pro")]
    id: String,
    byok: bool,
    /// How many providers may hold an active key; `null` is unlimited.
    max_providers: Option<u32>,
    provider_order: bool,
    monthly_platform_queries: u64,
    monthly_platform_cost_cap_usd: f64,
}

/// The plan catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PlanList {
    plans: Vec<PlanView>,
}

/// The caller as keyledger understood the token.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WhoAmI {
    /// Who acts (the token's `sub`).
    #[schema(example = "alice")]
    sub: String,
    #[schema(value_type = String, example = "owner")]
    role: crate::auth::Role,
    /// The organization, or `*` for a platform-wide token.
    #[schema(example = "acme")]
    org: String,
    /// When the token expires.
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// Who the token names (any role): its subject, role and organization as keyledger read them,
/// wherever the identity provider put them in the token.
#[utoipa::path(get, path = "/v1/whoami", tag = "catalogue",
    responses((status = 200, body = WhoAmI), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn whoami(caller: Caller) -> axum::Json<WhoAmI> {
    let claims = caller.claims;
    let expires_at = i64::try_from(claims.exp)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_default();
    axum::Json(WhoAmI { sub: claims.sub, role: claims.role, org: claims.org, expires_at })
}

/// The providers keyledger knows, in registry order (any role).
#[utoipa::path(get, path = "/v1/providers", tag = "catalogue",
    responses((status = 200, body = ProviderList), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn providers(_caller: Caller) -> Result<axum::Json<ProviderList>, ApiError> {
    let providers = ProviderId::ALL
        .iter()
        .map(|&p| ProviderView {
            id: p.as_str(),
            name: p.display_name(),
            needs_endpoint: p.needs_endpoint(),
            key_optional: p.key_is_optional(),
            key_prefixes: p.public_prefixes(),
        })
        .collect();
    Ok(axum::Json(ProviderList { providers }))
}

/// The plans this deployment offers and what each allows (any role).
#[utoipa::path(get, path = "/v1/plans", tag = "catalogue",
    responses((status = 200, body = PlanList), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn plans(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<axum::Json<PlanList>, ApiError> {
    let catalogue = &state.keyrings.plans();
    let plans = catalogue
        .ids()
        .filter_map(|id| catalogue.rules(id).map(|rules| (id, rules)))
        .map(|(id, rules)| PlanView {
            id: id.to_string(),
            byok: rules.byok,
            max_providers: rules.max_providers,
            provider_order: rules.provider_order,
            monthly_platform_queries: rules.monthly_platform_queries,
            monthly_platform_cost_cap_usd: rules.monthly_platform_cost_cap_usd,
        })
        .collect();
    Ok(axum::Json(PlanList { plans }))
}
