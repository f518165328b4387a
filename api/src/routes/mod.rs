//! The HTTP endpoints, one module per resource.

pub mod audit;
pub mod gateway;
pub mod keys;
pub mod openai;
pub mod ops;
pub mod orgs;
pub mod usage;
