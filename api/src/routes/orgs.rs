//! `/v1/orgs/{org}`: status, plan, BYOK access and provider order.

use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{parse_provider, Json, OrgParam};
use crate::openapi::OrgPath;
use crate::read;
use crate::state::AppState;
use crate::views::{OrgStatus, ProviderOrder};
use keyledger_domain::{KeyringCommand, PlanId};

/// Body of `PUT /v1/orgs/{org}/plan`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    #[schema(example = "pro")]
    plan: String,
}

/// Body of `PUT /v1/orgs/{org}/byok-access`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ByokAccessRequest {
    enabled: bool,
}

/// Body of `PUT /v1/orgs/{org}/provider-order`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderOrderRequest {
    #[schema(schema_with = provider_list, example = json!(["ollama", "anthropic"]))]
    providers: Vec<String>,
}

impl From<PlanRequest> for KeyringCommand {
    fn from(body: PlanRequest) -> Self {
        Self::ChangePlan { plan: PlanId::new(body.plan) }
    }
}

impl From<ByokAccessRequest> for KeyringCommand {
    fn from(body: ByokAccessRequest) -> Self {
        Self::SetByokAccess { enabled: body.enabled }
    }
}

impl TryFrom<ProviderOrderRequest> for KeyringCommand {
    type Error = ApiError;

    fn try_from(body: ProviderOrderRequest) -> Result<Self, ApiError> {
        let providers =
            body.providers.iter().map(|p| parse_provider(p)).collect::<Result<_, _>>()?;
        Ok(Self::SetProviderOrder { providers })
    }
}

/// Registry providers, each at most once.
fn provider_list() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("ProviderName"))
        .unique_items(true)
        .max_items(Some(keyledger_domain::ProviderId::ALL.len()))
        .build()
}

/// The organization's plan, BYOK state, masked keys and provider order.
#[utoipa::path(get, path = "/v1/orgs/{org}", tag = "orgs",
    params(OrgPath),
    responses((status = 200, body = OrgStatus), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn org_status(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
) -> Result<axum::Json<OrgStatus>, ApiError> {
    caller.authorize(&org, Access::ReadKeys)?;
    Ok(axum::Json(read::org_status(&state, &org).await?))
}

/// Set the organization's plan (platform admin); keys the new plan does not allow are
/// suspended, keys it allows again are reinstated.
#[utoipa::path(put, path = "/v1/orgs/{org}/plan", tag = "orgs",
    params(OrgPath),
    request_body = PlanRequest,
    responses((status = 200, body = OrgStatus), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn set_plan(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    Json(body): Json<PlanRequest>,
) -> Result<axum::Json<OrgStatus>, ApiError> {
    caller.authorize(&org, Access::ManagePlan)?;
    let command = KeyringCommand::from(body);
    let committed = state.execute(&org, command, &caller).await?;
    Ok(axum::Json(OrgStatus::of(&org, &committed.state)))
}

/// Grant or withdraw the organization's BYOK access (platform admin).
#[utoipa::path(put, path = "/v1/orgs/{org}/byok-access", tag = "orgs",
    params(OrgPath),
    request_body = ByokAccessRequest,
    responses((status = 200, body = OrgStatus), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn set_byok_access(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    Json(body): Json<ByokAccessRequest>,
) -> Result<axum::Json<OrgStatus>, ApiError> {
    caller.authorize(&org, Access::ManagePlan)?;
    let command = KeyringCommand::from(body);
    let committed = state.execute(&org, command, &caller).await?;
    Ok(axum::Json(OrgStatus::of(&org, &committed.state)))
}

/// The organization's provider order.
#[utoipa::path(get, path = "/v1/orgs/{org}/provider-order", tag = "orgs",
    params(OrgPath),
    responses((status = 200, body = ProviderOrder), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn get_provider_order(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
) -> Result<axum::Json<ProviderOrder>, ApiError> {
    caller.authorize(&org, Access::ReadKeys)?;
    Ok(axum::Json(read::provider_order(&state, &org).await?))
}

/// Set the order in which providers are tried (plans with provider order).
#[utoipa::path(put, path = "/v1/orgs/{org}/provider-order", tag = "orgs",
    params(OrgPath),
    request_body = ProviderOrderRequest,
    responses((status = 200, body = ProviderOrder), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn set_provider_order(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    Json(body): Json<ProviderOrderRequest>,
) -> Result<axum::Json<ProviderOrder>, ApiError> {
    caller.authorize(&org, Access::ManageKeys)?;
    let command = KeyringCommand::try_from(body)?;
    let committed = state.execute(&org, command, &caller).await?;
    Ok(axum::Json(ProviderOrder::of(&committed.state)))
}
