//! The unified, OpenAI-shaped surface at `/v1/orgs/{org}`: an OpenAI SDK pointed there with a
//! service token as its API key calls chat completions, embeddings and the model list of every
//! provider the organization can call, routed by model.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Access, Caller};
use crate::error::{ApiError, ErrorCode, Problem};
use crate::extract::OrgParam;
use crate::openapi::OrgPath;
use crate::routes::gateway::{answered, failed};
use crate::state::AppState;
use keyledger_domain::routing::Surface;
use keyledger_domain::OrgId;
use keyledger_infra::gateway::UnifiedCall;

/// `POST /v1/orgs/{org}/chat/completions`: an OpenAI chat completions body, routed by its
/// `model` (`provider/model`, or a bare name), its `models` fallback chain, or its `provider`.
#[utoipa::path(post, path = "/v1/orgs/{org}/chat/completions", tag = "model calls",
    params(OrgPath),
    request_body(content = serde_json::Value, description = "an OpenAI chat completions body; \"model\" may be \"provider/model\", \"models\" a fallback list, \"provider\" forces one provider"),
    responses((status = 200, description = "the serving provider's OpenAI-shaped answer (streamed with \"stream\": true), with x-keyledger-key-source"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "invalid_request or model_not_routable; errors also carry an OpenAI-style \"error\" object"),
              (status = 429, body = Problem, content_type = "application/problem+json"),
              (status = 502, body = Problem, content_type = "application/problem+json", description = "byok_key_rejected, or every candidate failed (provider_unreachable)"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "no_key_available"),
              (status = 504, body = Problem, content_type = "application/problem+json", description = "provider_timeout"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    model_call(&state, &caller, &org, Surface::Chat, &headers, body).await
}

/// `POST /v1/orgs/{org}/embeddings`: an OpenAI embeddings body, routed like chat completions
/// to the providers that offer embeddings.
#[utoipa::path(post, path = "/v1/orgs/{org}/embeddings", tag = "model calls",
    params(OrgPath),
    request_body(content = serde_json::Value, description = "an OpenAI embeddings body; \"model\" may be \"provider/model\""),
    responses((status = 200, description = "the serving provider's OpenAI-shaped embeddings, with x-keyledger-key-source"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "invalid_request or model_not_routable"),
              (status = "4XX", body = Problem, content_type = "application/problem+json"),
              (status = "5XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    model_call(&state, &caller, &org, Surface::Embeddings, &headers, body).await
}

async fn model_call(
    state: &AppState,
    caller: &Caller,
    org: &OrgId,
    surface: Surface,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(org, Access::RecordUsage)?;
    let body = body.map_err(|e| {
        ApiError::with_status(e.status(), ErrorCode::PayloadTooLarge, "the body is too large")
    })?;
    let actor = caller.actor();
    let call = UnifiedCall { org, actor: &actor, surface, headers, body };
    match state.gateway.unified(call).await {
        Ok(answer) => Ok(answered(answer)),
        Err(error) => Err(failed(state, org, error).await),
    }
}

/// The models an organization can call now, as OpenAI lists models.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelList {
    #[schema(example = "list")]
    object: &'static str,
    data: Vec<ModelView>,
}

/// One model, `provider/model`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelView {
    #[schema(example = "openai/gpt-4o-mini")]
    id: String,
    #[schema(example = "model")]
    object: &'static str,
    /// Unix seconds, as the provider says; 0 when it does not.
    created: u64,
    #[schema(example = "openai")]
    owned_by: String,
}

/// `GET /v1/orgs/{org}/models`: every model the organization can call now, from each provider
/// it holds a key for (its own, or the platform's within plan), in the order calls try them.
#[utoipa::path(get, path = "/v1/orgs/{org}/models", tag = "model calls",
    params(OrgPath),
    responses((status = 200, body = ModelList),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn models(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
) -> Result<axum::Json<ModelList>, ApiError> {
    caller.authorize(&org, Access::RecordUsage)?;
    let data = state
        .gateway
        .models(&org)
        .await?
        .into_iter()
        .map(|m| ModelView {
            id: m.id,
            object: "model",
            created: m.created,
            owned_by: m.owned_by.to_string(),
        })
        .collect();
    Ok(axum::Json(ModelList { object: "list", data }))
}
