//! keyledger's adapters: organizations' Keyrings and usage ledgers over the event store (in
//! `keyledger-store`), envelope encryption, provider clients, the
//! model-call gateway and configuration.

pub mod config;
pub mod crypto;
pub mod gateway;
pub mod keyrings;
pub mod providers;
pub mod services;
pub mod usage;

pub use config::{Config, ConfigError};
pub use gateway::{Gateway, GatewayError};
pub use keyledger_store::metadata::Actor;
pub use keyrings::{CommandError, Committed, Keyrings};
pub use usage::{RecordError, Recorded, UsageRecorder};
