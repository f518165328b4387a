//! keyledger's HTTP API: routes, auth, errors, and the application that serves them.

pub mod app;
pub mod auth;
pub mod error;
pub mod extract;
mod layers;
pub mod metrics;
pub mod openapi;
mod read;
mod router;
pub mod routes;
pub mod state;
pub mod telemetry;
pub mod views;

pub use app::{build_state, start_serving, Application, StartError};
pub use auth::{Role, TokenKeys};
pub use router::router;
pub use state::AppState;
