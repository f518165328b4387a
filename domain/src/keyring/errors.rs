//! Why a Keyring refuses a command.

use crate::plan::PlanId;
use crate::provider::ProviderId;
use crate::verification::VerificationOutcome;

/// A refused command. Never carries a key or other secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("the organization's plan or BYOK access does not allow its own keys")]
    ByokNotAllowed,
    #[error("the plan allows {max} provider(s) with an active key; send \"replace\": true to swap on a one-provider plan")]
    ProviderLimitReached { max: u32 },
    #[error("the plan does not allow a provider order")]
    ProviderOrderNotAllowed,
    #[error("{0} already has a key; rotate it instead")]
    KeyExists(ProviderId),
    #[error("{0} has no active key")]
    KeyNotFound(ProviderId),
    #[error("the new key is the key that is already active")]
    SameKey,
    #[error("send \"key\": {} is required", .0.a_key())]
    KeyRequired(ProviderId),
    #[error("the key was not checked as {}", .0.a_key())]
    KeyOfAnotherProvider(ProviderId),
    #[error("{0} needs an endpoint (its base URL)")]
    EndpointRequired(ProviderId),
    #[error("{0} does not take an endpoint")]
    EndpointNotAccepted(ProviderId),
    #[error("{0} appears twice in the provider order")]
    DuplicateProvider(ProviderId),
    #[error("{field} is longer than {max} characters")]
    DetailTooLong { field: &'static str, max: usize },
    #[error("{field} contains control characters")]
    ControlCharacters { field: &'static str },
    #[error("that plan is not in the catalogue")]
    UnknownPlan(PlanId),
    #[error("the provider did not accept the key ({})", .0.as_str())]
    VerificationFailed(VerificationOutcome),
    #[error("the provider did not judge the key (unreachable, rate limited or failing)")]
    ProviderUnreachable,
    #[error("the key was changed since it was checked; check it again")]
    StaleVerification,
    #[error("the key changed while its material was being re-sealed; re-seal again")]
    StaleMaterial,
    /// A caller's mistake, not the organization's: the command was decided without what its
    /// preparation asked for (a provider check, sealed material).
    #[error("the command was decided without what its preparation asked for")]
    Unprepared,
}
