//! The HTTP endpoints, one module per resource.

pub mod keys;
pub mod ops;
pub mod orgs;
