//! The error codes of the contract: each with the status it is usually answered with, so a
//! code is named once and never spelled as a string in control flow.

use std::borrow::Cow;

use axum::http::StatusCode;

/// A problem's `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    UnknownProvider,
    InvalidKeyFormat,
    ByokNotAllowed,
    ProviderLimitReached,
    ProviderOrderNotAllowed,
    KeyExists,
    KeyNotFound,
    SameKey,
    KeyVerificationFailed,
    UnknownPlan,
    Conflict,
    QuotaExceeded,
    CostCapReached,
    ModelNotRoutable,
    ByokKeyRejected,
    ProviderUnreachable,
    NoKeyAvailable,
    Overloaded,
    ProviderTimeout,
    RequestTimeout,
    StoreUnavailable,
    NotFound,
    MethodNotAllowed,
    Internal,
    /// An error status a layer or library answered without a body, named after its reason.
    Other(StatusCode),
}

impl ErrorCode {
    /// Every code of the contract (an `Other` is not one: it is named after its status).
    pub const CONTRACT: [Self; 28] = [
        Self::Unauthenticated,
        Self::Forbidden,
        Self::InvalidRequest,
        Self::PayloadTooLarge,
        Self::UnknownProvider,
        Self::InvalidKeyFormat,
        Self::ByokNotAllowed,
        Self::ProviderLimitReached,
        Self::ProviderOrderNotAllowed,
        Self::KeyExists,
        Self::KeyNotFound,
        Self::SameKey,
        Self::KeyVerificationFailed,
        Self::UnknownPlan,
        Self::Conflict,
        Self::QuotaExceeded,
        Self::CostCapReached,
        Self::ModelNotRoutable,
        Self::ByokKeyRejected,
        Self::ProviderUnreachable,
        Self::NoKeyAvailable,
        Self::Overloaded,
        Self::ProviderTimeout,
        Self::RequestTimeout,
        Self::StoreUnavailable,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Internal,
    ];

    /// The code as the problem carries it.
    #[must_use]
    pub fn as_str(self) -> Cow<'static, str> {
        use ErrorCode as C;
        Cow::Borrowed(match self {
            C::Unauthenticated => "unauthenticated",
            C::Forbidden => "forbidden",
            C::InvalidRequest => "invalid_request",
            C::PayloadTooLarge => "payload_too_large",
            C::UnknownProvider => "unknown_provider",
            C::InvalidKeyFormat => "invalid_key_format",
            C::ByokNotAllowed => "byok_not_allowed",
            C::ProviderLimitReached => "provider_limit_reached",
            C::ProviderOrderNotAllowed => "provider_order_not_allowed",
            C::KeyExists => "key_exists",
            C::KeyNotFound => "key_not_found",
            C::SameKey => "same_key",
            C::KeyVerificationFailed => "key_verification_failed",
            C::UnknownPlan => "unknown_plan",
            C::Conflict => "conflict",
            C::QuotaExceeded => "quota_exceeded",
            C::CostCapReached => "cost_cap_reached",
            C::ModelNotRoutable => "model_not_routable",
            C::ByokKeyRejected => "byok_key_rejected",
            C::ProviderUnreachable => "provider_unreachable",
            C::NoKeyAvailable => "no_key_available",
            C::Overloaded => "overloaded",
            C::ProviderTimeout => "provider_timeout",
            C::RequestTimeout => "request_timeout",
            C::StoreUnavailable => "store_unavailable",
            C::NotFound => "not_found",
            C::MethodNotAllowed => "method_not_allowed",
            C::Internal => "internal",
            C::Other(status) => {
                let reason = status.canonical_reason().unwrap_or("error");
                return Cow::Owned(reason.to_ascii_lowercase().replace([' ', '-'], "_"));
            }
        })
    }

    /// The status this code is answered with (a few answers choose another: see
    /// [`super::ApiError::with_status`]).
    #[must_use]
    pub fn status(self) -> StatusCode {
        use ErrorCode as C;
        match self {
            C::Unauthenticated => StatusCode::UNAUTHORIZED,
            C::Forbidden | C::ByokNotAllowed | C::ProviderOrderNotAllowed => StatusCode::FORBIDDEN,
            C::InvalidRequest | C::ModelNotRoutable => StatusCode::BAD_REQUEST,
            C::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            C::UnknownProvider
            | C::InvalidKeyFormat
            | C::KeyVerificationFailed
            | C::UnknownPlan => StatusCode::UNPROCESSABLE_ENTITY,
            C::ProviderLimitReached | C::KeyExists | C::SameKey | C::Conflict => {
                StatusCode::CONFLICT
            }
            C::KeyNotFound | C::NotFound => StatusCode::NOT_FOUND,
            C::QuotaExceeded | C::CostCapReached => StatusCode::TOO_MANY_REQUESTS,
            C::ByokKeyRejected | C::ProviderUnreachable => StatusCode::BAD_GATEWAY,
            C::NoKeyAvailable | C::Overloaded | C::RequestTimeout | C::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            C::ProviderTimeout => StatusCode::GATEWAY_TIMEOUT,
            C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            C::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            C::Other(status) => status,
        }
    }

    /// Whether the same request may succeed shortly (said with `Retry-After`).
    #[must_use]
    pub fn retry_soon(self) -> bool {
        matches!(self, Self::StoreUnavailable | Self::Overloaded)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// The error table of the API document, as (codes, status) per row.
    fn documented() -> Vec<(Vec<String>, u16)> {
        include_str!("../../../docs/api.md")
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let status = cells.get(2)?.parse::<u16>().ok()?;
                let codes = cells.get(1)?.split(", ").map(|c| c.trim_matches('`').to_owned());
                Some((codes.collect(), status))
            })
            .collect()
    }

    #[test]
    fn every_code_is_documented_with_its_status() {
        let table = documented();
        for code in ErrorCode::CONTRACT {
            let name = code.as_str();
            let row = table.iter().find(|(codes, _)| codes.iter().any(|c| c == name.as_ref()));
            let Some((_, status)) = row else { panic!("{name} is not in docs/api.md") };
            assert_eq!(*status, code.status().as_u16(), "{name}");
        }
        let known: Vec<_> = ErrorCode::CONTRACT.iter().map(|c| c.as_str()).collect();
        for (codes, _) in &table {
            for code in codes {
                assert!(known.iter().any(|k| k == code), "docs/api.md lists {code}, no ErrorCode");
            }
        }
    }

    #[test]
    fn a_status_without_a_code_is_named_after_its_reason() {
        let code = ErrorCode::Other(axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(code.as_str(), "unsupported_media_type");
    }
}
