//! The one error type at the edge: knows its status and `code`, renders problem+json, and logs
//! the cause of a 500 instead of showing it.

mod code;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use keyledger_domain::routing::RoutingError;
use keyledger_domain::usage::UsageError;
use keyledger_domain::KeyringError;
use keyledger_infra::{CommandError, GatewayError, RecordError};
use keyledger_store::StorageFailure;

pub(crate) use code::ErrorCode;

/// An RFC 9457 problem, as every error is answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Problem {
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
    code: ErrorCode,
    detail: String,
}

impl ApiError {
    /// An error with contract `code`, answered with its status, and a human `detail` (never a
    /// secret).
    #[must_use]
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { status: code.status(), code, detail: detail.into() }
    }

    /// An error whose status is not its code's usual one.
    #[must_use]
    pub fn with_status(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into() }
    }

    #[must_use]
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, detail)
    }

    #[must_use]
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
    }

    #[must_use]
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, detail)
    }

    /// A failure of ours: the cause goes to the log, the client gets a generic message.
    #[must_use]
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self::new(ErrorCode::Internal, "an internal error occurred")
    }

    /// The database is unavailable: nothing was done, and the same request may succeed once it
    /// is back (said in `Retry-After`).
    #[must_use]
    pub fn store_unavailable() -> Self {
        tracing::warn!("the database is unavailable; answered 503");
        Self::new(
            ErrorCode::StoreUnavailable,
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
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What the client is told.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    fn problem(&self) -> Problem {
        let code = self.code.as_str();
        Problem {
            type_: format!("urn:keyledger:problem:{code}"),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: code.into_owned(),
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
        if self.code.retry_soon() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // For `keyledger_errors_total`: the code, not the detail, travels with the response.
        response.extensions_mut().insert(self.code);
        response
    }
}

impl From<KeyringError> for ApiError {
    fn from(error: KeyringError) -> Self {
        use ErrorCode as C;
        use KeyringError as E;
        let code = match &error {
            E::ByokNotAllowed => C::ByokNotAllowed,
            E::ProviderLimitReached { .. } => C::ProviderLimitReached,
            E::ProviderOrderNotAllowed => C::ProviderOrderNotAllowed,
            E::KeyExists(_) => C::KeyExists,
            E::KeyNotFound(_) => C::KeyNotFound,
            E::SameKey => C::SameKey,
            // A body without its key is malformed, not a key of the wrong shape.
            E::KeyRequired(_) => C::InvalidRequest,
            E::KeyOfAnotherProvider(_) => C::InvalidKeyFormat,
            E::EndpointRequired(_) | E::EndpointNotAccepted(_) => {
                let status = StatusCode::UNPROCESSABLE_ENTITY;
                return Self::with_status(status, C::InvalidRequest, error.to_string());
            }
            E::DuplicateProvider(_) | E::DetailTooLong { .. } | E::ControlCharacters { .. } => {
                C::InvalidRequest
            }
            E::UnknownPlan(_) => C::UnknownPlan,
            E::VerificationFailed(_) => C::KeyVerificationFailed,
            E::ProviderUnreachable => C::ProviderUnreachable,
            E::StaleVerification | E::StaleMaterial => C::Conflict,
            E::Unprepared => return Self::internal(&error),
        };
        Self::new(code, error.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Rejected(rejection) => rejection.into(),
            CommandError::Conflict => {
                Self::new(ErrorCode::Conflict, "the organization was changed concurrently; retry")
            }
            CommandError::Storage(failure) => Self::storage(&failure),
            CommandError::Crypto(failure) => Self::internal(&failure),
        }
    }
}

impl From<UsageError> for ApiError {
    fn from(refusal: UsageError) -> Self {
        let code = match refusal {
            UsageError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            UsageError::CostCapReached { .. } => ErrorCode::CostCapReached,
        };
        Self::new(code, refusal.to_string())
    }
}

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::Refused(refusal) => refusal.into(),
            RecordError::Storage(failure) => Self::storage(&failure),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        use ErrorCode as C;
        use GatewayError as E;
        let error = match error {
            E::Keyring(command) => return command.into(),
            E::Limit(refusal) => return refusal.into(),
            E::Usage(record) => return record.into(),
            other => other,
        };
        let code = match &error {
            E::Routing(RoutingError::NotRoutable { .. }) => C::ModelNotRoutable,
            E::InvalidRequest(_) | E::ModelName(_) | E::Routing(_) => C::InvalidRequest,
            E::UnknownProvider(_) => C::UnknownProvider,
            E::NoKey { .. } => C::NoKeyAvailable,
            E::KeyRejected { .. } => C::ByokKeyRejected,
            E::Unreachable(_) | E::ProviderFailed { .. } => C::ProviderUnreachable,
            E::Timeout { .. } => C::ProviderTimeout,
            E::Overloaded(_) => C::Overloaded,
            E::Keyring(_) | E::Limit(_) | E::Usage(_) => return Self::internal(&error),
        };
        Self::new(code, error.to_string())
    }
}
