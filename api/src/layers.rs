//! Middleware that keeps every answer a client can read: a time limit answered as problem+json,
//! no error with an empty body, and OpenAI-shaped errors where OpenAI SDKs read them.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;

use crate::error::{ApiError, ErrorCode};

/// What a request that is not a model call may take in all.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Error bodies are small; more than this is not rewritten.
const PROBLEM_LIMIT: usize = 64 * 1024;

/// The longest request id a caller may choose.
const MAX_REQUEST_ID: usize = 128;

/// Drops a caller's `x-request-id` that is longer than 128 characters or holds anything but
/// letters, digits and `._:-`, so that a fresh one is made instead: the id goes into every
/// event's metadata and every log line of the request.
pub(crate) async fn sane_request_id(mut request: Request, next: Next) -> Response {
    let acceptable = |id: &HeaderValue| {
        let id = id.as_bytes();
        !id.is_empty()
            && id.len() <= MAX_REQUEST_ID
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    if request.headers().get("x-request-id").is_some_and(|id| !acceptable(id)) {
        request.headers_mut().remove("x-request-id");
    }
    next.run(request).await
}

/// Ends a request that takes longer than [`REQUEST_TIMEOUT`] with a problem+json 503. Model
/// calls are not under it: they have their own limits (`ModelCallTimeouts`).
pub(crate) async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request did not complete within {} s", REQUEST_TIMEOUT.as_secs()),
        )
        .into_response(),
    }
}

/// Gives an error answer that has no body (from a layer or a library, never a handler of
/// ours) a problem+json one. A provider's own answer, relayed by the gateway, stays as it is.
pub(crate) async fn never_empty(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let empty = axum::body::HttpBody::size_hint(response.body()).exact() == Some(0);
    if !(status.is_client_error() || status.is_server_error())
        || !empty
        || response.headers().contains_key("x-keyledger-key-source")
    {
        return response;
    }
    let reason = status.canonical_reason().unwrap_or("error");
    let mut problem = ApiError::new(ErrorCode::Other(status), reason).into_response();
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

/// Adds OpenAI's `"error": {"message", "type", "code"}` to a problem+json answer, so an OpenAI
/// SDK shows keyledger's message; the problem's own fields stay for everyone else.
pub(crate) async fn openai_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, PROBLEM_LIMIT).collect().await else {
        return ApiError::internal(&"an error body could not be read").into_response();
    };
    let bytes = collected.to_bytes();
    let Ok(serde_json::Value::Object(mut problem)) = serde_json::from_slice(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let message = problem.get("detail").cloned().unwrap_or_default();
    let code = problem.get("code").cloned().unwrap_or_default();
    problem.insert(
        "error".to_owned(),
        serde_json::json!({"message": message, "type": openai_type(parts.status), "code": code}),
    );
    let body = serde_json::to_vec(&problem).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    Response::from_parts(parts, Body::from(body))
}

/// OpenAI's error `type` for a status.
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}
