//! Operations endpoints: liveness, readiness, the OpenAPI document and its rendering.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use serde_json::json;
use utoipa::OpenApi as _;

use crate::openapi::ApiDoc;
use crate::state::AppState;

/// The process is up.
pub(crate) async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// The store answers: the process can serve requests.
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.db.is_reachable().await {
        (StatusCode::OK, axum::Json(json!({"status": "ready", "store": state.db.backend()})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "store": state.db.backend()})),
        )
    }
}

/// The OpenAPI 3.1 document of this API, generated from the code.
pub(crate) async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
}

/// A browsable rendering of the OpenAPI document.
pub(crate) async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
