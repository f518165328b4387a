//! What every request handler shares.

use std::sync::Arc;

use crate::auth::TokenKeys;
use keyledger_infra::providers::EndpointPolicy;
use keyledger_infra::{Database, Keyrings};

/// Shared state of the HTTP API.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Database,
    pub keyrings: Arc<Keyrings>,
    pub tokens: Arc<TokenKeys>,
    pub endpoints: EndpointPolicy,
}
