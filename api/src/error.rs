//! The one error type at the edge: knows its status and `code`, renders problem+json, and logs
//! the cause of a 500 instead of showing it.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use keyledger_domain::routing::RoutingError;
use keyledger_domain::usage::UsageError;
use keyledger_domain::KeyringError;
use keyledger_infra::{CommandError, GatewayError, RecordError};
use keyledger_store::StorageFailure;

/// An RFC 9457 problem, as every error is answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
}

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    detail: String,
}

impl ApiError {
    /// An error with `status`, contract `code` and a human `detail` (never a secret).
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code: Cow::Borrowed(code), detail: detail.into() }
    }

    /// An error whose code is made at run time (from a status a layer answered).
    #[must_use]
    pub(crate) fn dynamic(status: StatusCode, code: String, detail: String) -> Self {
        Self { status, code: Cow::Owned(code), detail }
    }

    #[must_use]
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    #[must_use]
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    #[must_use]
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// A failure of ours: the cause goes to the log, the client gets a generic message.
    #[must_use]
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an internal error occurred")
    }

    /// The database is unavailable: nothing was done, and the same request may succeed once it
    /// is back (said in `Retry-After`).
    #[must_use]
    pub fn store_unavailable() -> Self {
        tracing::warn!("the database is unavailable; answered 503");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the database is unavailable; nothing was changed, retry shortly",
        )
    }

    /// A storage failure: 503 while the database is unavailable, else a failure of ours.
    #[must_use]
    pub fn storage(failure: &StorageFailure) -> Self {
        if failure.unavailable() {
            Self::store_unavailable()
        } else {
            Self::internal(failure)
        }
    }

    /// A storage error of any layer, classified by the database error in its sources.
    #[must_use]
    pub fn from_store(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::storage(&StorageFailure::of(error))
    }

    /// The contract code.
    #[must_use]
    pub fn code(&self) -> &str {
        &self.code
    }

    fn problem(&self) -> Problem {
        Problem {
            type_: format!("urn:keyledger:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if matches!(self.code(), "store_unavailable" | "overloaded") {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<KeyringError> for ApiError {
    fn from(error: KeyringError) -> Self {
        use KeyringError as E;
        let (status, code) = match &error {
            E::ByokNotAllowed => (StatusCode::FORBIDDEN, "byok_not_allowed"),
            E::ProviderLimitReached { .. } => (StatusCode::CONFLICT, "provider_limit_reached"),
            E::ProviderOrderNotAllowed => (StatusCode::FORBIDDEN, "provider_order_not_allowed"),
            E::KeyExists(_) => (StatusCode::CONFLICT, "key_exists"),
            E::KeyNotFound(_) => (StatusCode::NOT_FOUND, "key_not_found"),
            E::SameKey => (StatusCode::CONFLICT, "same_key"),
            // A body without its key is malformed, not a key of the wrong shape.
            E::KeyRequired(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            E::KeyOfAnotherProvider(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_key_format"),
            E::EndpointRequired(_) | E::EndpointNotAccepted(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            }
            E::DuplicateProvider(_) | E::DetailTooLong { .. } | E::ControlCharacters { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            E::UnknownPlan(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_plan"),
            E::VerificationFailed(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "key_verification_failed")
            }
            E::ProviderUnreachable => (StatusCode::BAD_GATEWAY, "provider_unreachable"),
            E::StaleVerification => (StatusCode::CONFLICT, "conflict"),
            E::Service(_) => return Self::internal(&error),
            E::ServiceUnavailable(_) => return Self::store_unavailable(),
        };
        Self::new(status, code, error.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Rejected(rejection) => rejection.into(),
            CommandError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "the organization was changed concurrently; retry",
            ),
            CommandError::Storage(failure) => Self::storage(&failure),
        }
    }
}

impl From<RecordError> for ApiError {
    /// A refusal is the caller's to map (its code depends on the route); this is for failures.
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::Storage(failure) => Self::storage(&failure),
            refused @ RecordError::Refused(_) => Self::internal(&refused),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        use GatewayError as E;
        let error = match error {
            E::Keyring(command) => return command.into(),
            other => other,
        };
        let (status, code) = match &error {
            E::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            E::UnknownProvider(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_provider"),
            E::Routing(RoutingError::NotRoutable { .. }) => {
                (StatusCode::BAD_REQUEST, "model_not_routable")
            }
            E::Routing(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            E::NoKey { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_key_available"),
            E::Limit(UsageError::QuotaExceeded { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded")
            }
            E::Limit(UsageError::CostCapReached { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "cost_cap_reached")
            }
            E::KeyRejected { .. } => (StatusCode::BAD_GATEWAY, "byok_key_rejected"),
            E::Unreachable(_) => (StatusCode::BAD_GATEWAY, "provider_unreachable"),
            E::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "provider_timeout"),
            E::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            E::Usage(RecordError::Storage(failure)) => return Self::storage(failure),
            E::Keyring(_) | E::Usage(_) => return Self::internal(&error),
        };
        Self::new(status, code, error.to_string())
    }
}
