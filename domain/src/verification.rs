//! Outcomes of checking a key against its provider ("test connection").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the provider said when asked about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationOutcome {
    Valid,
    InvalidKey,
    InsufficientPermissions,
    Unreachable,
    RateLimited,
    ProviderError,
}

impl VerificationOutcome {
    /// Whether the provider accepted the key.
    #[must_use]
    pub const fn is_ok(self) -> bool {
        matches!(self, Self::Valid)
    }

    /// Whether the provider positively refused the key (as opposed to not answering).
    #[must_use]
    pub const fn is_refusal(self) -> bool {
        matches!(self, Self::InvalidKey | Self::InsufficientPermissions)
    }

    /// What a provider's answer with `status` and `body` says of the key it was sent with.
    /// Most providers refuse a key with 401 or 403; Google answers an invalid key with 400
    /// and the reason `API_KEY_INVALID`.
    #[must_use]
    pub fn of_answer(status: u16, body: &[u8]) -> Self {
        match status {
            200..=299 => Self::Valid,
            401 => Self::InvalidKey,
            403 => Self::InsufficientPermissions,
            400 if contains(body, b"API_KEY_INVALID") => Self::InvalidKey,
            429 => Self::RateLimited,
            _ => Self::ProviderError,
        }
    }

    /// The contract's name of the outcome.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::InvalidKey => "invalid_key",
            Self::InsufficientPermissions => "insufficient_permissions",
            Self::Unreachable => "unreachable",
            Self::RateLimited => "rate_limited",
            Self::ProviderError => "provider_error",
        }
    }
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// A verification as remembered on a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub outcome: VerificationOutcome,
    pub checked_at: DateTime<Utc>,
}
