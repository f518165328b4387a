//! The HTTP endpoints, one module per resource.

pub(crate) mod audit;
pub(crate) mod catalogue;
pub(crate) mod checkpoints;
pub(crate) mod console;
pub(crate) mod export;
pub(crate) mod gateway;
pub(crate) mod keys;
pub(crate) mod openai;
pub(crate) mod ops;
pub(crate) mod orgs;
pub(crate) mod usage;
