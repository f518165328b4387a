//! The gateway: a request to one provider's own API, with the key keyledger resolves for it,
//! forwarded and streamed back (the model-call path itself is `keyledger_infra::gateway`).

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;

use crate::auth::{Access, Caller};
use crate::error::{ApiError, ErrorCode, Problem};
use crate::extract::KeyParams;
use crate::openapi::KeyPath;
use crate::state::AppState;
use keyledger_domain::OrgId;
use keyledger_infra::gateway::{Answer, PassThrough};
use keyledger_infra::GatewayError;

/// `GET | POST | PUT | PATCH | DELETE /v1/orgs/{org}/gateway/{provider}/{*path}`: forwards the
/// request, query string included, to the provider's `path` with the resolved key; the
/// provider's answer, whatever it is, goes back as it is.
#[utoipa::path(method(get, post, put, patch, delete), path = "/v1/orgs/{org}/gateway/{provider}/{*path}", tag = "gateway",
    params(KeyPath,
           ("path" = String, Path, description = "the provider's own path, e.g. v1/messages; GET, PUT, PATCH and DELETE pass too, with the organization's own key")),
    request_body(content = serde_json::Value, description = "the provider's own request body"),
    responses((status = 200, description = "the provider's answer, streamed as it comes, with x-keyledger-key-source: byok|platform"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "invalid_request: a '.' or '..' path segment"),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "quota_exceeded or cost_cap_reached (platform key)"),
              (status = 502, body = Problem, content_type = "application/problem+json", description = "byok_key_rejected or provider_unreachable"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "no_key_available"),
              (status = 504, body = Problem, content_type = "application/problem+json", description = "provider_timeout"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org, provider = %provider))]
pub(crate) async fn forward(
    State(state): State<AppState>,
    caller: Caller,
    KeyParams(org, provider): KeyParams,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&org, Access::RecordUsage)?;
    let body = body.map_err(|e| {
        ApiError::with_status(e.status(), ErrorCode::PayloadTooLarge, "the body is too large")
    })?;
    // The provider's path as the caller wrote it, still encoded: what is checked is what is sent.
    let path = uri.path().splitn(7, '/').nth(6).unwrap_or_default();
    let actor = caller.actor();
    let call = PassThrough {
        org: &org,
        actor: &actor,
        provider,
        method,
        path,
        query: uri.query(),
        headers: &headers,
        body,
    };
    match state.gateway.pass_through(call).await {
        Ok(answer) => Ok(answered(answer)),
        Err(error) => Err(failed(&state, &org, error).await),
    }
}

/// A model call's failure as the caller hears it. A refusal recorded against the key is in
/// the views (the audit trail, the key's last verification) before the caller hears of it.
pub(crate) async fn failed(state: &AppState, org: &OrgId, error: GatewayError) -> ApiError {
    if matches!(&error, GatewayError::KeyRejected { check, .. } if check.is_refusal()) {
        state.settle(org).await;
    }
    error.into()
}

/// The provider's answer as the caller's response, with the key source.
pub(crate) fn answered(answer: Answer) -> Response {
    let mut response = Response::new(Body::from_stream(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
        .headers_mut()
        .insert("x-keyledger-key-source", HeaderValue::from_static(answer.key_source.as_str()));
    response
}
