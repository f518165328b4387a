//! The pure business rules of keyledger: who may hold which AI-provider key, and what happens
//! to it. No I/O lives here: a command is decided in two pure phases with the world's work
//! between them (see [`keyring::preparation`]).

pub mod api_key;
pub mod keyring;
pub mod mask;
pub mod merkle;
pub mod org;
pub mod plan;
pub mod pricing;
pub mod provider;
pub mod resolution;
pub mod routing;
pub mod usage;
pub mod verification;

pub use api_key::{ApiKey, KeyFormatError};
pub use keyring::{
    KeyState, KeyStatus, Keyring, KeyringCommand, KeyringContext, KeyringError, KeyringEvent,
};
pub use mask::Mask;
pub use org::{OrgId, OrgIdError};
pub use plan::{PlanCatalogue, PlanId, PlanRules};
pub use provider::{ProviderId, UnknownProvider};
pub use verification::{Verification, VerificationOutcome};
