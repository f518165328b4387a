//! keyledger's adapters: organizations' Keyrings and usage ledgers over the event store (in
//! `keyledger-store`), envelope encryption, provider clients, the model-call gateway and
//! configuration. What other crates use is re-exported here or lives in the public modules;
//! the rest stays inside.

mod config;
pub mod crypto;
pub mod gateway;
mod keyrings;
pub mod providers;
pub mod services;
mod usage;

pub use config::{AccessLog, Config, ConfigError, JwksSettings};
pub use gateway::{Gateway, GatewayError};
pub use keyledger_store::metadata::Actor;
pub use keyrings::{CallKeys, CommandError, Committed, KeyringStore, Keyrings, ResealReport};
pub use usage::{Overloaded, RecordError, Recorded, Slot, UsageRecorder};
