//! Operations endpoints: liveness, readiness, metrics, and the rendering of the OpenAPI
//! document (the document itself is served by `crate::openapi`).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use serde_json::json;

use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the process is up")))]
pub(crate) async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Events the views may trail the log by and still be called ready.
const READY_LAG: i64 = 10_000;

/// The store answers and the views are caught up within bounds: the process can serve.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, description = "the store is unreachable or the views are catching up")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.db.backend();
    if !state.db.is_reachable().await {
        let body = json!({"status": "not_ready", "store": store, "reason": "store unreachable"});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body));
    }
    if let Some(panic) = state.projector.panicked() {
        let body = json!({"status": "not_ready", "store": store, "reason": format!("a projection pipeline panicked ({panic})")});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body));
    }
    match state.projector.lag(READY_LAG).await {
        Ok(lag) if lag.events < READY_LAG => (
            StatusCode::OK,
            axum::Json(json!({"status": "ready", "store": store, "projection_lag": lag.events})),
        ),
        Ok(lag) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "not_ready", "store": store, "projection_lag": lag.events,
                "projection": lag.projection,
                "reason": format!("the {} view is {} or more events behind the log", lag.projection.unwrap_or("?"), lag.events),
            })),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "not_ready", "store": store, "reason": "projection state unreadable"}),
            ),
        ),
    }
}

/// What this process counted, and how far the views trail the log, as Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let lag = state.projector.lag(READY_LAG).await.map_or(-1.0, |lag| lag.events as f64);
    let trusted = if state.keyrings.calls().trusts_its_cache() { 1.0 } else { 0.0 };
    let material = state.keyrings.material_versions().await.unwrap_or_default();
    let text = state.metrics.render(
        &state.gateway.counts().snapshot(),
        state.usage.recorded_total(),
        &[
            (
                "keyledger_projection_lag_events",
                "Events of its types the furthest-behind view has yet to apply (counted up to 10000; -1 unreadable).",
                lag,
            ),
            (
                "keyledger_usage_backlog",
                "Model calls in flight or waiting to be recorded, and releases waiting to be written.",
                state.usage.backlog() as f64,
            ),
            (
                "keyledger_commands_ahead_of_views",
                "Keyring commands answered here that the views do not show yet (at most 256; reads wait for them).",
                state.views_ahead.depth() as f64,
            ),
            (
                "keyledger_keyring_cache_trusted",
                "1 while model calls here use cached Keyrings without asking the log.",
                trusted,
            ),
            (
                "keyledger_keyring_cache_orgs",
                "Organizations whose Keyring states this process holds (at most KEYLEDGER_CACHE_ORGS).",
                state.keyrings.calls().cached_orgs() as f64,
            ),
            (
                "keyledger_usage_ledgers_cached",
                "Usage ledgers this process holds in memory (at most KEYLEDGER_CACHE_ORGS).",
                state.usage.cached_ledgers() as f64,
            ),
        ],
        &material,
    );
    let mut text = text;
    let backend = match state.db {
        keyledger_store::Database::Postgres(_) => "postgres",
        keyledger_store::Database::Sqlite(_) => "sqlite",
    };
    crate::metrics::render_info(&mut text, backend);
    crate::metrics::render_counter(
        &mut text,
        "keyledger_keyring_commands_on_kept_state_total",
        "Keyring commands decided on the state this replica's previous command on the organization left, not loaded from the log.",
        state.keyrings.decided_on_kept(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

/// A browsable rendering of the OpenAPI document.
pub(crate) async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

/// The renderer `/docs` uses (Redoc 2.1.5, MIT; its license beside it in `api/assets/redoc`),
/// served from the binary so the page works offline.
pub(crate) async fn docs_renderer() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../assets/redoc/redoc.standalone.js"),
    )
}
