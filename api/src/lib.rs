//! keyledger's HTTP API: routes, auth, errors, and the application that serves them.

pub mod app;
pub mod auth;
pub mod checkpoints;
mod error;
mod extract;
mod layers;
mod metrics;
mod openapi;
mod read;
mod router;
mod routes;
mod state;
pub mod telemetry;
mod views;
mod views_ahead;

pub use app::{build_state, start_serving, Application, StartError};
pub use auth::{Role, TokenKeys};
pub use router::router;
pub use state::{AppState, Services};
pub use views_ahead::ViewsAhead;
