//! The one list of routes: each handler with its layers, and from the same list the OpenAPI
//! document (utoipa-axum), so no endpoint is served undocumented or documented unserved.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{
    DefaultOnFailure, DefaultOnResponse, OnFailure as _, OnResponse as _, TraceLayer,
};
use tracing::Level;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorCode};
use crate::layers;
use crate::openapi::ApiDoc;
use crate::routes::{
    audit, catalogue, checkpoints, console, export, gateway, keys, openai, ops, orgs, usage,
};
use crate::state::AppState;
use keyledger_infra::AccessLog;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;
/// The largest usage batch body: 1,000 calls of up to 200-character ids and model names.
pub(crate) const BATCH_BODY_LIMIT: usize = 1024 * 1024;
/// Model calls carry prompts: their bodies may be larger.
pub const GATEWAY_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Every route, documented ones with their OpenAPI operations.
fn routes() -> OpenApiRouter<AppState> {
    bounded_routes().merge(model_call_routes())
}

/// The OpenAPI document of the routes.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let (_, mut document) = routes().split_for_parts();
    // axum writes a catch-all segment `{*path}`, OpenAPI `{path}`.
    let paths = std::mem::take(&mut document.paths.paths);
    document.paths.paths =
        paths.into_iter().map(|(path, item)| (path.replace("{*", "{"), item)).collect();
    document
}

/// The OpenAPI 3.1 document of this API, generated from the code.
pub(crate) async fn openapi_json() -> impl axum::response::IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = DOCUMENT.get_or_init(|| document().to_pretty_json().unwrap_or_default());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], json.as_str())
}

/// The HTTP API over `state`, with its layers.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let access_log = state.access_log;
    let (routes, _) = routes().split_for_parts();
    let api = routes
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            crate::metrics::count_requests,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    api.layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            // The panic message could hold anything; it stays out of the response.
            axum::response::IntoResponse::into_response(ApiError::internal(&"a handler panicked"))
        }))
        .layer(axum::middleware::from_fn(layers::never_empty))
        .layer(
            // Method and path only: no headers (Authorization), no query, no body.
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    // The route and org are known once the request is routed (`count_requests`
                    // records them), the status once it is answered.
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id = %id,
                        "otel.name" = %request.method(),
                        "otel.kind" = "server",
                        "http.route" = tracing::field::Empty,
                        org = tracing::field::Empty,
                        status = tracing::field::Empty,
                        "otel.status_code" = tracing::field::Empty,
                    )
                })
                .on_response(
                    move |response: &axum::http::Response<_>, latency, span: &tracing::Span| {
                        let status = response.status();
                        span.record("status", status.as_u16());
                        if status.is_server_error() {
                            span.record("otel.status_code", "ERROR");
                        }
                        if access_log.logs(status.as_u16()) {
                            DefaultOnResponse::new()
                                .level(Level::INFO)
                                .on_response(response, latency, span);
                        }
                    },
                )
                .on_failure(
                    move |failure: ServerErrorsFailureClass, latency, span: &tracing::Span| {
                        if access_log != AccessLog::Off {
                            DefaultOnFailure::new()
                                .level(Level::WARN)
                                .on_failure(failure, latency, span);
                        }
                    },
                ),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::from_fn(layers::sane_request_id))
}

/// Model calls: no request time limit (they have their own, see `ModelCallTimeouts`), prompt-
/// sized bodies, and on the OpenAI-shaped routes errors an OpenAI SDK can show.
fn model_call_routes() -> OpenApiRouter<AppState> {
    let openai = OpenApiRouter::new()
        .routes(routes!(openai::chat_completions))
        .routes(routes!(openai::embeddings))
        .route_layer(axum::middleware::from_fn(layers::openai_errors));
    let gateway = OpenApiRouter::new().routes(routes!(gateway::forward));
    gateway.merge(openai).layer(DefaultBodyLimit::max(GATEWAY_BODY_LIMIT))
}

/// Everything else: answered within [`layers::REQUEST_TIMEOUT`].
fn bounded_routes() -> OpenApiRouter<AppState> {
    let models = OpenApiRouter::new()
        .routes(routes!(openai::models))
        .route_layer(axum::middleware::from_fn(layers::openai_errors));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(orgs::org_list))
        .routes(routes!(orgs::org_status, orgs::erase_org))
        .routes(routes!(catalogue::whoami))
        .routes(routes!(catalogue::providers))
        .routes(routes!(catalogue::plans))
        .routes(routes!(orgs::set_plan))
        .routes(routes!(orgs::set_byok_access))
        .routes(routes!(orgs::get_provider_order, orgs::set_provider_order))
        .routes(routes!(keys::store_key, keys::list_keys))
        .routes(routes!(keys::get_key, keys::rotate_key, keys::update_key, keys::remove_key))
        .routes(routes!(keys::verify_key))
        .routes(routes!(audit::audit_page))
        .routes(routes!(audit::audit_verify))
        .routes(routes!(audit::events))
        .routes(routes!(checkpoints::signing_keys))
        .routes(routes!(checkpoints::checkpoint))
        .routes(routes!(checkpoints::checkpoints))
        .routes(routes!(checkpoints::inclusion_proof))
        .routes(routes!(checkpoints::consistency_proof))
        .routes(routes!(usage::usage, usage::record_usage))
        .routes(routes!(usage::recent_calls))
        .merge(
            // A thousand calls do not fit in the bounded routes' 64 KiB.
            OpenApiRouter::new()
                .routes(routes!(usage::record_usage_batch))
                .layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .routes(routes!(export::org_export))
        .routes(routes!(export::export_all))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        // The document and its renderer are not operations of the API.
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(ops::docs))
        .route("/docs/redoc.standalone.js", get(ops::docs_renderer))
        // Nor is the console, a client of the API served from the binary.
        .route("/console", get(console::redirect))
        .route("/console/", get(console::index))
        .route("/console/{*path}", get(console::file))
        .merge(models)
        .layer(axum::middleware::from_fn(layers::time_limit))
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "that method is not allowed here")
}

#[cfg(test)]
mod tests {
    fn document() -> serde_json::Value {
        serde_json::from_str(&super::document().to_json().expect("json")).expect("a document")
    }

    #[test]
    fn query_parameters_are_in_the_query_and_optional() {
        let doc = document();
        for name in ["as_of", "after", "limit", "from", "to", "group_by"] {
            let mut found = 0;
            for (path, methods) in doc["paths"].as_object().expect("paths") {
                // A proof's sizes are what it is about: there they are required.
                if path.contains("/audit/proof/") {
                    continue;
                }
                for (_, operation) in methods.as_object().expect("methods") {
                    for param in operation["parameters"].as_array().into_iter().flatten() {
                        if param["name"] == name {
                            found += 1;
                            assert_eq!(param["in"], "query", "{path} {name}");
                            assert_ne!(param["required"], true, "{path} {name}");
                        }
                    }
                }
            }
            assert!(found > 0, "{name} is documented");
        }
    }

    #[test]
    fn path_parameters_say_what_they_accept() {
        let doc = document();
        let key = &doc["paths"]["/v1/orgs/{org}/keys/{provider}"]["get"]["parameters"];
        let params = key.as_array().expect("parameters");
        let org = params.iter().find(|p| p["name"] == "org").expect("org");
        assert_eq!(org["schema"]["pattern"], r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$");
        let provider = params.iter().find(|p| p["name"] == "provider").expect("provider");
        let reference = provider["schema"]["$ref"].as_str().expect("a reference");
        let name = reference.rsplit('/').next().expect("a name");
        let ids: Vec<String> = doc["components"]["schemas"][name]["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        let registry: Vec<String> =
            keyledger_domain::ProviderId::ALL.iter().map(|p| p.as_str().to_owned()).collect();
        assert_eq!(ids, registry, "the document's providers are the registry's");
    }
}
