//! Extractors that answer bad input with the same problem+json as every other error.

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use keyledger_domain::{OrgId, ProviderId};

/// A JSON body; malformed JSON, a missing or unknown field, or a body over the limit become
/// `invalid_request` (400) or 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_error(&rejection)),
        }
    }
}

fn json_error(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is over 64 KiB",
        );
    }
    // serde's message names the field or position, never echoes a value of a secret field
    // beyond its type; keep only that first line.
    let detail = match rejection {
        JsonRejection::JsonDataError(e) => format!("the body does not fit: {}", source_message(e)),
        JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON".to_owned(),
        JsonRejection::MissingJsonContentType(_) => "send the body as application/json".to_owned(),
        _ => "the body could not be read".to_owned(),
    };
    ApiError::invalid_request(detail)
}

fn source_message(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message = inner.to_string();
        source = inner.source();
    }
    // serde_json's "invalid value: string \"…\"" would quote what was sent.
    match message.find(": string \"") {
        Some(at) => format!("{} (value not shown)", &message[..at]),
        None => message,
    }
}

/// The `{org}` path parameter, parsed.
#[derive(Debug, Clone)]
pub struct OrgParam(pub OrgId);

/// The `{org}` and `{provider}` path parameters, parsed.
#[derive(Debug, Clone)]
pub struct KeyParams(pub OrgId, pub ProviderId);

async fn params(parts: &mut Parts) -> Result<HashMap<String, String>, ApiError> {
    Path::<HashMap<String, String>>::from_request_parts(parts, &())
        .await
        .map(|Path(map)| map)
        .map_err(|_| ApiError::invalid_request("the path is malformed"))
}

fn org_of(params: &HashMap<String, String>) -> Result<OrgId, ApiError> {
    let raw = params.get("org").map_or("", String::as_str);
    OrgId::parse(raw).map_err(|e| ApiError::invalid_request(e.to_string()))
}

/// Parses a provider id as the contract wants it refused: 422 `unknown_provider`.
///
/// # Errors
/// `unknown_provider` when the id is not in the registry.
pub fn parse_provider(raw: &str) -> Result<ProviderId, ApiError> {
    raw.parse::<ProviderId>().map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_provider", e.to_string())
    })
}

impl<S: Send + Sync> FromRequestParts<S> for OrgParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(org_of(&params(parts).await?)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for KeyParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let params = params(parts).await?;
        let org = org_of(&params)?;
        let provider = parse_provider(params.get("provider").map_or("", String::as_str))?;
        Ok(Self(org, provider))
    }
}
