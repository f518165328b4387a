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

/// Events the views may trail the log by and still be called ready.
const READY_LAG: i64 = 10_000;

/// The store answers and the views are caught up within bounds: the process can serve.
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.db.backend();
    if !state.db.is_reachable().await {
        let body = json!({"status": "not_ready", "store": store, "reason": "store unreachable"});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body));
    }
    match state.projector.lag(READY_LAG).await {
        Ok(lag) if lag < READY_LAG => (
            StatusCode::OK,
            axum::Json(json!({"status": "ready", "store": store, "projection_lag": lag})),
        ),
        Ok(lag) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "not_ready", "store": store, "projection_lag": lag, "reason": "views are catching up"}),
            ),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "not_ready", "store": store, "reason": "projection state unreadable"}),
            ),
        ),
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
