//! Fake AI providers on loopback that behave like the real ones: one server, each registry
//! provider under its own base path (`http://127.0.0.1:PORT/anthropic`, …). Each serves only
//! its own models and answers others with its own `model not found`, reads the key only where
//! that provider does and refuses any key it was not told to accept with its own error body,
//! and streams with its own framing (`event:` lines, `: keep-alive` comments, usage in the
//! last chunk only when asked). A provider can be made slow, failing, or stalled mid-stream.
//!
//! The same server runs as the `fake-providers` binary for the SDK suite, steered over HTTP
//! under `/__admin/`.

mod answers;
mod catalog;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use keyledger_domain::ProviderId;
use serde_json::{json, Value};

use answers::Answer;
pub use catalog::{models, serves};
use catalog::{Problem, Route};

/// A request a fake provider received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub provider: ProviderId,
    pub method: String,
    /// Path under the provider's base, with the query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Debug, Default)]
struct Inner {
    accepted: Mutex<HashSet<String>>,
    calls: Mutex<Vec<Seen>>,
    /// A stream asked to hold (`x-test-hold`) waits here after its first chunk.
    hold: tokio::sync::Notify,
    delays: Mutex<HashMap<ProviderId, Duration>>,
    failing: Mutex<HashMap<ProviderId, u16>>,
    /// Streams whose reader went away before their end.
    cancelled: AtomicUsize,
}

/// The running fake providers.
#[derive(Debug, Clone)]
pub struct FakeProvider {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeProvider {
    /// Starts the fake providers on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts the fake providers on `addr`.
    pub async fn start_on(addr: &str) -> Self {
        let inner = Arc::new(Inner::default());
        let handler_inner = Arc::clone(&inner);
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let inner = Arc::clone(&handler_inner);
                async move { answer(inner, method, uri, headers, body).await }
            },
        );
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    /// The server's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of `provider` (a registry id).
    #[must_use]
    pub fn url(&self, provider: &str) -> String {
        format!("http://{}/{provider}", self.addr)
    }

    /// Makes every provider accept `key` from now on.
    pub fn accept(&self, key: &str) {
        self.inner.accepted.lock().expect("lock").insert(key.to_owned());
    }

    /// How many requests the providers received in all.
    #[must_use]
    pub fn requests(&self) -> usize {
        self.inner.calls.lock().expect("lock").len()
    }

    /// Every request received, in order.
    #[must_use]
    pub fn calls(&self) -> Vec<Seen> {
        self.inner.calls.lock().expect("lock").clone()
    }

    /// The model calls received (not model lists), in order.
    #[must_use]
    pub fn model_calls(&self) -> Vec<Seen> {
        self.calls().into_iter().filter(|c| c.method != "GET").collect()
    }

    /// The headers of every request received, in order.
    #[must_use]
    pub fn seen(&self) -> Vec<HeaderMap> {
        self.calls().into_iter().map(|c| c.headers).collect()
    }

    /// Lets a held stream go on.
    pub fn release(&self) {
        self.inner.hold.notify_one();
    }

    /// Makes `provider` take `delay` before it answers.
    pub fn delay(&self, provider: ProviderId, delay: Duration) {
        self.inner.delays.lock().expect("lock").insert(provider, delay);
    }

    /// Makes `provider` answer every call with `status` (429, 500, 503…) in its own words.
    pub fn fail(&self, provider: ProviderId, status: u16) {
        self.inner.failing.lock().expect("lock").insert(provider, status);
    }

    /// Streams whose reader went away (closed the connection) before they ended.
    #[must_use]
    pub fn cancelled(&self) -> usize {
        self.inner.cancelled.load(Ordering::SeqCst)
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn answer(
    inner: Arc<Inner>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(command) = uri.path().strip_prefix("/__admin/") {
        return admin(&inner, command, &body);
    }
    let path = uri.path().trim_start_matches('/');
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    let Ok(provider) = first.parse::<ProviderId>() else {
        return (StatusCode::NOT_FOUND, "no such provider").into_response();
    };
    let rest = format!("/{rest}");
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path_and_query = match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.clone(),
    };
    inner.calls.lock().expect("lock").push(Seen {
        provider,
        method: method.to_string(),
        path: path_and_query,
        headers: headers.clone(),
        body: request.clone(),
    });
    let delay = inner.delays.lock().expect("lock").get(&provider).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let failing = inner.failing.lock().expect("lock").get(&provider).copied();
    if let Some(status) = failing {
        let (status, body) = catalog::error(provider, Problem::Failing(status));
        return json_response(status, &body);
    }
    if catalog::checks_keys(provider) {
        let presented = headers
            .get(catalog::key_header(provider, &rest))
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_owned())
            .unwrap_or_default();
        if !inner.accepted.lock().expect("lock").contains(&presented) {
            let (status, body) =
                catalog::error(provider, Problem::BadKey { presented: &presented });
            return json_response(status, &body);
        }
    }
    match served(provider, &method, &rest, &request) {
        Ok(Answer::Json(mut body)) => {
            // A provider that reports absurd usage (`x-test-prompt-tokens`).
            let reported = headers.get("x-test-prompt-tokens").and_then(|v| v.to_str().ok());
            if let Some(tokens) = reported.and_then(|v| v.parse::<u64>().ok()) {
                body["usage"]["prompt_tokens"] = json!(tokens);
            }
            json_response(200, &body)
        }
        Ok(Answer::Events(chunks)) => stream(inner, chunks, headers.contains_key("x-test-hold")),
        Err((status, body)) => json_response(status, &body),
    }
}

/// The answer to an accepted call, or the provider's error.
fn served(
    provider: ProviderId,
    method: &Method,
    path: &str,
    request: &Value,
) -> Result<Answer, (u16, Value)> {
    let fail = |problem| Err(catalog::error(provider, problem));
    let model_of = |deployment: &Option<String>| {
        deployment.clone().or_else(|| request["model"].as_str().map(str::to_owned))
    };
    let stream = request["stream"].as_bool().unwrap_or(false);
    match catalog::route(provider, method.as_str(), path) {
        Route::Models => Ok(Answer::Json(answers::listing(provider, path))),
        Route::Unknown => fail(Problem::NoSuchPath),
        Route::Admin => fail(Problem::MissingScope),
        Route::Chat { deployment } => {
            let Some(model) = model_of(&deployment) else {
                return fail(Problem::MissingField("model"));
            };
            if !request["messages"].is_array() {
                return fail(Problem::MissingField("messages"));
            }
            if !serves(provider, &model) {
                return fail(Problem::UnknownModel(&model));
            }
            let asked = request["stream_options"]["include_usage"].as_bool().unwrap_or(false);
            Ok(answers::chat(provider, &model, stream, asked))
        }
        Route::Messages => {
            let Some(model) = request["model"].as_str() else {
                return fail(Problem::MissingField("model"));
            };
            for field in ["max_tokens", "messages"] {
                if request[field].is_null() {
                    return fail(Problem::MissingField(field));
                }
            }
            if !serves(provider, model) {
                return fail(Problem::UnknownModel(model));
            }
            Ok(answers::messages(model, stream))
        }
        Route::Generate { model, stream } => {
            if !request["contents"].is_array() {
                return fail(Problem::MissingField("contents"));
            }
            if !serves(provider, &model) {
                return fail(Problem::UnknownModel(&model));
            }
            Ok(answers::generate(&model, stream))
        }
        Route::Embeddings { deployment } => {
            let Some(model) = model_of(&deployment) else {
                return fail(Problem::MissingField("model"));
            };
            if request["input"].is_null() {
                return fail(Problem::MissingField("input"));
            }
            if !serves(provider, &model) {
                return fail(Problem::UnknownModel(&model));
            }
            let inputs = request["input"].as_array().map_or(1, Vec::len);
            Ok(Answer::Json(answers::embeddings(&model, inputs)))
        }
        Route::Native => {
            let Some(model) = request["model"].as_str() else {
                return fail(Problem::MissingField("model"));
            };
            if !serves(provider, model) {
                return fail(Problem::UnknownModel(model));
            }
            Ok(Answer::Json(answers::native(provider, model)))
        }
    }
}

/// Counts a stream as cancelled when it is dropped before its last chunk went out.
struct Unfinished(Option<Arc<Inner>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn stream(inner: Arc<Inner>, chunks: Vec<String>, hold: bool) -> Response {
    let guard = Unfinished(Some(Arc::clone(&inner)));
    let body = futures::stream::unfold(
        (chunks.into_iter().peekable(), inner, hold, true, guard),
        |(mut chunks, inner, mut hold, first, mut guard)| async move {
            if hold && !first {
                // Only once, after the first chunk: the caller must have it by now.
                inner.hold.notified().await;
                hold = false;
            }
            let chunk = chunks.next()?;
            if chunks.peek().is_none() {
                guard.0 = None;
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (chunks, inner, hold, false, guard)))
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

/// Steering from another process: accept a key, slow or fail a provider, list what came.
fn admin(inner: &Inner, command: &str, body: &Bytes) -> Response {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let provider = request["provider"].as_str().and_then(|p| p.parse::<ProviderId>().ok());
    match (command, provider) {
        ("accept", _) => {
            if let Some(key) = request["key"].as_str() {
                inner.accepted.lock().expect("lock").insert(key.to_owned());
            }
        }
        ("delay", Some(provider)) => {
            let delay = Duration::from_millis(request["ms"].as_u64().unwrap_or(0));
            inner.delays.lock().expect("lock").insert(provider, delay);
        }
        ("fail", Some(provider)) => {
            let status = u16::try_from(request["status"].as_u64().unwrap_or(500)).unwrap_or(500);
            inner.failing.lock().expect("lock").insert(provider, status);
        }
        ("calls", _) => {
            let calls: Vec<Value> = inner
                .calls
                .lock()
                .expect("lock")
                .iter()
                .map(|c| json!({"provider": c.provider, "method": c.method, "path": c.path, "model": c.body["model"]}))
                .collect();
            return axum::Json(calls).into_response();
        }
        _ => return (StatusCode::NOT_FOUND, "no such admin command").into_response(),
    }
    StatusCode::NO_CONTENT.into_response()
}
