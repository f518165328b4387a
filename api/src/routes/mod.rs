//! The HTTP endpoints, one module per resource.

pub mod audit;
pub mod gateway;
mod key_choice;
pub mod keys;
pub mod ops;
pub mod orgs;
mod relay;
pub mod usage;
