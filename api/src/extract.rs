//! Extractors that answer bad input with the same problem+json as every other error.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};
use keyledger_domain::{OrgId, ProviderId};

/// A JSON body; malformed JSON, a missing or unknown field, or a body over the limit become
/// `invalid_request` (400) or 413.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let mime = v.split(';').next().unwrap_or_default().trim();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::invalid_request("send the body as application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the body is over 64 KiB")
            } else {
                ApiError::invalid_request("the body could not be read")
            }
        })?;
        // serde would read a struct from an array by position: a body is an object or nothing.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid_request("the body must be a JSON object"));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_error(&rejection)),
        }
    }
}

fn json_error(rejection: &JsonRejection) -> ApiError {
    let detail = match rejection {
        JsonRejection::JsonDataError(e) => format!("the body does not fit: {}", source_message(e)),
        JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON".to_owned(),
        _ => "the body could not be read".to_owned(),
    };
    ApiError::invalid_request(detail)
}

/// serde's own account of what does not fit, with whatever the caller sent taken out: only
/// names from the schema (the fields it expects, the field it missed) are kept. A value or an
/// unknown field name could be a key pasted in the wrong place.
fn source_message(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message = inner.to_string();
        source = inner.source();
    }
    without_input(&message)
}

fn without_input(message: &str) -> String {
    // "unknown field `x`, expected one of `a`, `b`": the list is the schema's. The path before
    // an unknown field's message ends in that field's name, so it goes too.
    for (unknown, keep_path) in [("unknown field `", false), ("unknown variant `", true)] {
        if let Some(at) = message.find(unknown) {
            let what = &unknown[..unknown.len() - 2];
            let expected = message[at..].find(", expected").map_or("", |e| &message[at + e..]);
            let path = if keep_path { &message[..at] } else { "" };
            return format!("{path}an {what}{expected}");
        }
    }
    if message.contains("missing field `") {
        return message.to_owned();
    }
    // "invalid type: string \"…\", expected a boolean": the value goes, the rest stays.
    let mut kept = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match (quote, c) {
            (None, '`' | '"') => {
                quote = Some(c);
                kept.push_str("(value not shown)");
            }
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, c) => kept.push(c),
        }
    }
    kept
}

/// The `{org}` path parameter, parsed.
#[derive(Debug, Clone)]
pub(crate) struct OrgParam(pub OrgId);

/// The `{org}` and `{provider}` path parameters, parsed.
#[derive(Debug, Clone)]
pub(crate) struct KeyParams(pub OrgId, pub ProviderId);

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
pub(crate) fn parse_provider(raw: &str) -> Result<ProviderId, ApiError> {
    raw.parse::<ProviderId>().map_err(|e| ApiError::new(ErrorCode::UnknownProvider, e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::without_input;

    #[test]
    fn what_the_caller_sent_is_never_repeated() {
        let unknown =
            "sk-ant-api03-secret: unknown field `sk-ant-api03-secret`, expected one of `provider`, `key`";
        assert_eq!(without_input(unknown), "an unknown field, expected one of `provider`, `key`");
        let value =
            "verify: invalid type: string \"sk-secret\", expected a boolean at line 1 column 9";
        assert_eq!(
            without_input(value),
            "verify: invalid type: string (value not shown), expected a boolean at line 1 column 9"
        );
        let number = "invalid value: integer `123456789`, expected u32";
        assert_eq!(without_input(number), "invalid value: integer (value not shown), expected u32");
        assert_eq!(without_input("missing field `key`"), "missing field `key`");
    }
}
