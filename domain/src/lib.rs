//! The pure business rules of keyledger: who may hold which AI-provider key, and what happens
//! to it. No I/O lives here; what the rules need from the world is a trait in [`keyring::KeyringServices`].

pub mod api_key;
pub mod keyring;
pub mod mask;
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
    KeyState, KeyStatus, Keyring, KeyringCommand, KeyringError, KeyringEvent, KeyringServices,
};
pub use mask::Mask;
pub use org::{OrgId, OrgIdError};
pub use plan::{PlanCatalogue, PlanId, PlanRules};
pub use provider::{ProviderId, UnknownProvider};
pub use verification::{Verification, VerificationOutcome};
