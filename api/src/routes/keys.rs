//! `/v1/orgs/{org}/keys`: store, list, get, rotate, change, remove and verify keys.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Access, Caller};
use crate::error::{ApiError, ErrorCode, Problem};
use crate::extract::{parse_provider, Json, KeyParams, OrgParam};
use crate::openapi::ProviderName;
use crate::openapi::{KeyPath, OrgPath};
use crate::read;
use crate::state::AppState;
use crate::views::{KeyList, MaskedKey, VerificationView};
use keyledger_domain::keyring::{RotateKey, StoreKey, UpdateKeyDetails};
use keyledger_domain::{ApiKey, KeyringCommand, KeyringError, ProviderId};

/// Body of `POST /v1/orgs/{org}/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreKeyRequest {
    #[schema(value_type = ProviderName, example = "anthropic")]
    provider: String,
    /// The API key; write-only, never returned. Optional for ollama, lmstudio and vllm. Its
    /// shape is the provider's (prefix, length, characters): see docs/providers.md.
    #[schema(value_type = Option<String>, write_only, min_length = 1, max_length = 1024, pattern = r"^\S+$")]
    key: Option<SecretString>,
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    description: Option<String>,
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    default_model: Option<String>,
    /// Base URL, for azure_openai, ollama, lmstudio and vllm.
    endpoint: Option<String>,
    /// Check the key with the provider first; store it only if accepted.
    #[serde(default)]
    verify: bool,
    /// On a one-provider plan, replace the other provider's key.
    #[serde(default)]
    replace: bool,
}

/// Body of `PUT /v1/orgs/{org}/keys/{provider}` (rotation).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateKeyRequest {
    /// The new key, of the provider's shape.
    #[schema(value_type = String, write_only, min_length = 1, max_length = 1024, pattern = r"^\S+$")]
    key: SecretString,
    #[serde(default)]
    verify: bool,
}

/// Body of `PATCH /v1/orgs/{org}/keys/{provider}`: absent leaves a field, `null` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateKeyRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 500, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    default_model: Option<Option<String>>,
}

/// Tells a field sent as `null` (clear it) from one not sent (leave it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Query of `GET /v1/orgs/{org}/keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Rebuild the keys as they were at this instant (RFC 3339) from the log.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    as_of: Option<String>,
}

fn parse_key(provider: ProviderId, raw: SecretString) -> Result<ApiKey, ApiError> {
    ApiKey::parse(provider, raw)
        .map_err(|e| ApiError::new(ErrorCode::InvalidKeyFormat, e.to_string()))
}

/// The body as the command it asks for; its endpoint still to be checked where it resolves.
impl TryFrom<StoreKeyRequest> for StoreKey {
    type Error = ApiError;

    fn try_from(body: StoreKeyRequest) -> Result<Self, ApiError> {
        let provider = parse_provider(&body.provider)?;
        Ok(Self {
            provider,
            key: body.key.map(|raw| parse_key(provider, raw)).transpose()?,
            description: body.description,
            default_model: body.default_model,
            endpoint: body.endpoint,
            verify: body.verify,
            replace: body.replace,
        })
    }
}

impl RotateKeyRequest {
    /// A rotation of `provider`'s key (the path's) to the body's key.
    fn into_command(self, provider: ProviderId) -> Result<RotateKey, ApiError> {
        Ok(RotateKey { provider, key: parse_key(provider, self.key)?, verify: self.verify })
    }
}

impl UpdateKeyRequest {
    /// The change of what is said about `provider`'s key (the path's).
    fn into_command(self, provider: ProviderId) -> UpdateKeyDetails {
        UpdateKeyDetails {
            provider,
            description: self.description,
            default_model: self.default_model,
        }
    }
}

fn masked(state: &keyledger_domain::Keyring, provider: ProviderId) -> Result<MaskedKey, ApiError> {
    state
        .key(provider)
        .map(|key| MaskedKey::of(provider, key))
        .ok_or_else(|| KeyringError::KeyNotFound(provider).into())
}

/// Store a key for a provider.
#[utoipa::path(post, path = "/v1/orgs/{org}/keys", tag = "keys",
    params(OrgPath),
    request_body = StoreKeyRequest,
    responses((status = 201, body = MaskedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn store_key(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    Json(body): Json<StoreKeyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.authorize(&org, Access::ManageKeys)?;
    let mut store = StoreKey::try_from(body)?;
    store.endpoint = match store.endpoint {
        Some(endpoint) => Some(state.endpoints.check(&endpoint).await.map_err(|e| {
            ApiError::with_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                e.to_string(),
            )
        })?),
        None => None,
    };
    let provider = store.provider;
    let committed = state.execute(&org, KeyringCommand::StoreKey(store), &caller).await?;
    Ok((StatusCode::CREATED, axum::Json(masked(&committed.state, provider)?)))
}

/// List the organization's keys, masked; `as_of` gives them as they were at that instant.
#[utoipa::path(get, path = "/v1/orgs/{org}/keys", tag = "keys",
    params(OrgPath, ListQuery),
    responses((status = 200, body = KeyList), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<KeyList>, ApiError> {
    caller.authorize(&org, Access::ReadKeys)?;
    let Query(query) =
        query.map_err(|_| ApiError::invalid_request("unknown or malformed query parameter"))?;
    let keyring = match query.as_of {
        Some(text) => {
            let at = DateTime::parse_from_rfc3339(&text)
                .map_err(|_| ApiError::invalid_request("as_of must be an RFC 3339 instant"))?;
            state.keyrings.load_as_of(&org, at.with_timezone(&Utc)).await?
        }
        None => return Ok(axum::Json(read::key_list(&state, &org).await?)),
    };
    Ok(axum::Json(KeyList::of(&keyring)))
}

/// One key, masked.
#[utoipa::path(get, path = "/v1/orgs/{org}/keys/{provider}", tag = "keys",
    params(KeyPath),
    responses((status = 200, body = MaskedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    KeyParams(org, provider): KeyParams,
) -> Result<axum::Json<MaskedKey>, ApiError> {
    caller.authorize(&org, Access::ReadKeys)?;
    Ok(axum::Json(read::masked_key(&state, &org, provider).await?))
}

/// Rotate a key: the new key is version + 1 and in effect at once; the old one is destroyed.
#[utoipa::path(put, path = "/v1/orgs/{org}/keys/{provider}", tag = "keys",
    params(KeyPath),
    request_body = RotateKeyRequest,
    responses((status = 200, body = MaskedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org, provider = %provider))]
pub(crate) async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    KeyParams(org, provider): KeyParams,
    Json(body): Json<RotateKeyRequest>,
) -> Result<axum::Json<MaskedKey>, ApiError> {
    caller.authorize(&org, Access::ManageKeys)?;
    let command = KeyringCommand::RotateKey(body.into_command(provider)?);
    let committed = state.execute(&org, command, &caller).await?;
    Ok(axum::Json(masked(&committed.state, provider)?))
}

/// Change a key's description or default model.
#[utoipa::path(patch, path = "/v1/orgs/{org}/keys/{provider}", tag = "keys",
    params(KeyPath),
    request_body = UpdateKeyRequest,
    responses((status = 200, body = MaskedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    KeyParams(org, provider): KeyParams,
    Json(body): Json<UpdateKeyRequest>,
) -> Result<axum::Json<MaskedKey>, ApiError> {
    caller.authorize(&org, Access::ManageKeys)?;
    let command = KeyringCommand::UpdateKeyDetails(body.into_command(provider));
    let committed = state.execute(&org, command, &caller).await?;
    Ok(axum::Json(masked(&committed.state, provider)?))
}

/// Remove a key; calls fall back to the platform's key. Its material is destroyed.
#[utoipa::path(delete, path = "/v1/orgs/{org}/keys/{provider}", tag = "keys",
    params(KeyPath),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org, provider = %provider))]
pub(crate) async fn remove_key(
    State(state): State<AppState>,
    caller: Caller,
    KeyParams(org, provider): KeyParams,
) -> Result<StatusCode, ApiError> {
    caller.authorize(&org, Access::ManageKeys)?;
    state.execute(&org, KeyringCommand::RemoveKey { provider }, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Check the stored key with its provider ("test connection") and record the outcome.
#[utoipa::path(post, path = "/v1/orgs/{org}/keys/{provider}/verify", tag = "keys",
    params(KeyPath),
    responses((status = 200, body = VerificationView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org, provider = %provider))]
pub(crate) async fn verify_key(
    State(state): State<AppState>,
    caller: Caller,
    KeyParams(org, provider): KeyParams,
) -> Result<axum::Json<VerificationView>, ApiError> {
    caller.authorize(&org, Access::ManageKeys)?;
    let verification = state.verify_key(&org, provider, &caller).await?;
    Ok(axum::Json(VerificationView::from(&verification)))
}
