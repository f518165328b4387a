//! keyledger's adapters: the event store on PostgreSQL or SQLite, migrations, envelope
//! encryption, the key-material store, provider clients and configuration.

pub mod config;
pub mod crypto;
pub mod db;
pub mod event_store;
pub mod gateway;
pub mod keyrings;
pub mod material;
pub mod providers;
pub mod services;
pub mod usage;

pub use config::{Config, ConfigError};
pub use db::{Database, DatabaseError};
pub use gateway::{Gateway, GatewayError};
pub use keyrings::{Actor, CommandError, Committed, Keyrings};
pub use usage::{RecordError, Recorded, UsageRecorder};
