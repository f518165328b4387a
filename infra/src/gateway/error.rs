//! Why a model call was not answered by a provider, as one typed error the API maps once.

use std::time::Duration;

use keyledger_domain::routing::{Failure, RoutingError};
use keyledger_domain::usage::UsageError;
use keyledger_domain::{ProviderId, VerificationOutcome};

use crate::keyrings::CommandError;
use crate::usage::RecordError;

/// A model call that ended without a provider's answer to pass back.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request itself is malformed (body, path): what is wrong with it, in the caller's terms.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// A model name of the request is empty or too long.
    #[error("model: {0}")]
    ModelName(#[from] keyledger_domain::routing::ModelRefError),
    /// The request names a provider the registry does not know.
    #[error(transparent)]
    UnknownProvider(#[from] keyledger_domain::UnknownProvider),
    /// No route: no model, no provider serving it, or a provider without that endpoint.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// Neither the organization's own key nor the platform's can serve this call.
    #[error("the organization has no active {provider} key{}", why.says())]
    NoKey { provider: ProviderId, why: NoKey },
    /// The platform's key is over the plan's monthly quota or cost cap.
    #[error(transparent)]
    Limit(UsageError),
    /// The provider refused the organization's own key; the call stops there. `check` is what
    /// keyledger's own check of the key said: a refusal there was recorded against the key.
    #[error("{provider} refused the organization's own key ({}); {}", refused.as_str(), check_said(*check))]
    KeyRejected { provider: ProviderId, refused: VerificationOutcome, check: VerificationOutcome },
    /// Every provider tried failed: unreachable, failing, throttling, or not serving the model.
    #[error("{0}")]
    Unreachable(Unanswered),
    /// The one provider a pass-through call goes to failed.
    #[error("{provider} {}", failure.describe())]
    ProviderFailed { provider: ProviderId, failure: Failure },
    /// A provider took the call but did not answer within the call's time.
    #[error("{provider} did not answer within {} s", after.as_secs())]
    Timeout { provider: ProviderId, after: Duration },
    /// The organization's Keyring could not be read, or its key not opened.
    #[error(transparent)]
    Keyring(#[from] CommandError),
    /// The usage ledger could not be written.
    #[error(transparent)]
    Usage(RecordError),
    /// Too many calls are in flight or waiting to be recorded: this one is not made.
    #[error(transparent)]
    Overloaded(#[from] crate::usage::Overloaded),
}

/// Why the platform's key does not stand in for an organization without its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// The platform has no key for the provider.
    PlatformHasNone,
    /// The platform's key serves model calls (POST) only, and this is not one.
    PlatformKeyForModelCallsOnly,
    /// The organization was erased and has not started afresh.
    OrganizationErased,
}

impl NoKey {
    fn says(self) -> &'static str {
        match self {
            Self::PlatformHasNone => " and the platform has none",
            Self::OrganizationErased => {
                ": it was erased, and no key serves it until it starts afresh"
            }
            Self::PlatformKeyForModelCallsOnly => {
                "; the platform's shared key serves model calls (POST) only"
            }
        }
    }
}

/// The providers a call was tried at, and how each failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unanswered(pub Vec<(ProviderId, Failure)>);

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("no provider could take the call"),
            each => {
                f.write_str("every provider tried failed: ")?;
                for (i, (provider, failure)) in each.iter().enumerate() {
                    let separator = if i == 0 { "" } else { "; " };
                    write!(f, "{separator}{provider} {}", failure.describe())?;
                }
                Ok(())
            }
        }
    }
}

fn check_said(check: VerificationOutcome) -> String {
    if check.is_refusal() {
        format!("keyledger's own check confirmed it ({}) and recorded the refusal", check.as_str())
    } else {
        format!(
            "keyledger's own check of the key answered {}, so nothing was recorded against it",
            check.as_str()
        )
    }
}

impl From<RecordError> for GatewayError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::Refused(limit) => Self::Limit(limit),
            storage @ RecordError::Storage(_) => Self::Usage(storage),
        }
    }
}

impl GatewayError {
    /// Whether another provider might still take the call (this one has no key or no quota
    /// for it), as opposed to an error that ends the call.
    #[must_use]
    pub(crate) fn leaves_others_open(&self) -> bool {
        matches!(self, Self::NoKey { .. } | Self::Limit(_))
    }
}
