//! The Keyring aggregate: one per organization, holding its plan, BYOK access, keys and
//! provider order.

mod aggregate;
mod commands;
mod decide;
mod entitlement;
mod errors;
mod events;
pub mod preparation;
mod prepare;
mod state;

#[cfg(test)]
mod tests;

pub use commands::{KeyringCommand, RotateKey, StoreKey, UpdateKeyDetails};
pub use errors::KeyringError;
pub use events::{
    ByokAccessChanged, KeyDetailsChanged, KeyMaterialResealed, KeyReinstated, KeyRemoved,
    KeyRotated, KeyStored, KeySuspended, KeyVerificationRecorded, KeyringEvent, OrganizationErased,
    OrganizationRestarted, PlanChanged, ProviderOrderSet, RemovalReason, SuspensionReason,
};
pub use preparation::{
    Fingerprint, KeyringContext, MaterialBinding, MaterialId, Preparation, Prepared,
    PreparedCommand, ProviderCheck, Resealed,
};
pub use state::{KeyState, KeyStatus, Keyring};
