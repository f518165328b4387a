//! `/v1/orgs/{org}`: status, plan, BYOK access and provider order.

use axum::extract::{Query, State};
use chrono::{Datelike, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{parse_provider, Json, OrgParam};
use crate::openapi::OrgPath;
use crate::read;
use crate::state::AppState;
use crate::views::{OrgStatus, ProviderOrder};
use keyledger_domain::{KeyringCommand, PlanId};
use keyledger_projections::queries;

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

/// Erase the organization (platform admin; the right to erasure): every key's material is
/// destroyed, its provider order forgotten and its plan back to the default. Its audit trail
/// and usage history stay; they hold no key material. Model calls find no key, not even the
/// platform's, until the organization's next change starts it afresh. Erasing an erased
/// organization changes nothing.
#[utoipa::path(delete, path = "/v1/orgs/{org}", tag = "orgs",
    params(OrgPath),
    responses((status = 200, body = OrgStatus), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn erase_org(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
) -> Result<axum::Json<OrgStatus>, ApiError> {
    caller.authorize(&org, Access::ManagePlan)?;
    let committed = state.execute(&org, KeyringCommand::EraseOrganization, &caller).await?;
    Ok(axum::Json(OrgStatus::of(&org, &committed.state)))
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

/// Query of `GET /v1/orgs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrgListQuery {
    /// Organizations after this id (the previous page's `next`).
    after: Option<String>,
    /// At most this many organizations (1 to 200, default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Only organizations whose id contains this text.
    #[param(max_length = 64)]
    q: Option<String>,
}

/// One organization in the list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrgSummary {
    org: String,
    plan: String,
    byok_access: bool,
    byok_active: bool,
    /// Keys held, active or suspended.
    keys: i64,
    /// Model calls this month (UTC), on own and platform keys.
    calls_this_month: i64,
    cost_usd_this_month: f64,
}

/// A page of organizations.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrgList {
    orgs: Vec<OrgSummary>,
    /// Pass as `after` for the next page; `null` at the end.
    next: Option<String>,
}

/// Every organization with an event, in id order (platform admin with `org: "*"`).
#[utoipa::path(get, path = "/v1/orgs", tag = "orgs",
    params(OrgListQuery),
    responses((status = 200, body = OrgList), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn org_list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<OrgListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<OrgList>, ApiError> {
    caller.authorize_platform(Access::ManagePlan)?;
    let Query(params) =
        params.map_err(|_| ApiError::invalid_request("unknown or malformed query parameter"))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_request("limit is 1 to 200"));
    }
    let query = params.q.unwrap_or_default();
    if query.chars().count() > 64 {
        return Err(ApiError::invalid_request("q is at most 64 characters"));
    }
    // The list shows every change committed so far, and this month's calls and cost every
    // call recorded so far.
    state.settle_all().await;
    state.settle_usage_reads(None).await;
    let today = Utc::now().date_naive();
    let month_start = today.with_day(1).unwrap_or(today).format("%Y-%m-%d").to_string();
    let after = params.after.unwrap_or_default();
    let rows = queries::org_list(&state.views, &after, &query, limit + 1, &month_start)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    let orgs: Vec<OrgSummary> = rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|r| OrgSummary {
            plan: r.plan.unwrap_or_else(|| PlanId::starter().to_string()),
            byok_access: r.byok_access.unwrap_or(true),
            byok_active: r.active_keys > 0,
            keys: r.keys,
            calls_this_month: r.calls,
            cost_usd_this_month: r.cost_micros as f64 / 1_000_000.0,
            org: r.org_id,
        })
        .collect();
    let next = if more { orgs.last().map(|o| o.org.clone()) } else { None };
    Ok(axum::Json(OrgList { orgs, next }))
}
