//! A fake AI provider on loopback, accepting only the keys it was told to accept and reading
//! them where the real provider would: any GET is a models listing; `POST …/messages` answers
//! in Anthropic's shape and `POST …/chat/completions` in OpenAI's, as JSON or, with
//! `"stream": true`, as server-sent events (OpenAI-shaped ones report usage only when asked
//! with `stream_options.include_usage`, as OpenAI's do).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;

#[derive(Debug, Default)]
struct Inner {
    accepted: Mutex<HashSet<String>>,
    requests: AtomicUsize,
    seen: Mutex<Vec<HeaderMap>>,
    /// A stream asked to hold (`x-test-hold`) waits here after its first chunk.
    hold: tokio::sync::Notify,
}

/// A running fake provider.
#[derive(Debug, Clone)]
pub struct FakeProvider {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeProvider {
    /// Starts a fake provider on a free loopback port.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let handler_inner = Arc::clone(&inner);
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let inner = Arc::clone(&handler_inner);
                async move { answer(inner, &method, &uri, &headers, &body) }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    /// Its base URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the provider accept `key` from now on.
    pub fn accept(&self, key: &str) {
        self.inner.accepted.lock().expect("lock").insert(key.to_owned());
    }

    /// How many requests it has answered.
    #[must_use]
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// The headers of every request it received, in order.
    #[must_use]
    pub fn seen(&self) -> Vec<HeaderMap> {
        self.inner.seen.lock().expect("lock").clone()
    }

    /// Lets a held stream go on.
    pub fn release(&self) {
        self.inner.hold.notify_one();
    }
}

fn answer(
    inner: Arc<Inner>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    inner.seen.lock().expect("lock").push(headers.clone());
    let presented = ["x-api-key", "x-goog-api-key", "api-key"]
        .iter()
        .find_map(|name| headers.get(*name))
        .or_else(|| headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_owned());
    let accepted = presented.is_some_and(|key| inner.accepted.lock().expect("lock").contains(&key));
    if !accepted {
        return (StatusCode::UNAUTHORIZED, r#"{"error":{"type":"authentication_error"}}"#)
            .into_response();
    }
    if *method == Method::GET {
        return (StatusCode::OK, r#"{"data":[{"id":"fake-model"}]}"#).into_response();
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let model = request["model"].as_str().unwrap_or("fake-model").to_owned();
    let stream = request["stream"].as_bool().unwrap_or(false);
    // As OpenAI: a stream reports usage only when asked.
    let usage_asked = request["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let anthropic = uri.path().ends_with("/messages");
    let chunks: Vec<String> = match (anthropic, stream) {
        (true, false) => vec![json!({"type": "message", "model": model, "content": [{"type": "text", "text": "Hello"}],
                                     "usage": {"input_tokens": 30, "output_tokens": 5}}).to_string()],
        (false, false) => vec![json!({"object": "chat.completion", "model": model,
                                      "choices": [{"message": {"role": "assistant", "content": "Hello"}}],
                                      "usage": {"prompt_tokens": 12, "completion_tokens": 7}}).to_string()],
        (true, true) => vec![
            format!("event: message_start\ndata: {}\n\n", json!({"type": "message_start", "message": {"model": model, "usage": {"input_tokens": 25, "output_tokens": 1}}})),
            format!("event: content_block_delta\ndata: {}\n\n", json!({"type": "content_block_delta", "delta": {"text": "Hel"}})),
            format!("event: message_delta\ndata: {}\n\n", json!({"type": "message_delta", "usage": {"output_tokens": 15}})),
        ],
        (false, true) => vec![
            format!("data: {}\n\n", json!({"model": model, "choices": [{"delta": {"content": "Hel"}}]})),
            format!("data: {}\n\n", json!({"model": model, "choices": [{"delta": {"content": "lo"}}]})),
            if usage_asked {
                format!("data: {}\n\ndata: [DONE]\n\n", json!({"model": model, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}))
            } else {
                "data: [DONE]\n\n".to_owned()
            },
        ],
    };
    let hold = headers.contains_key("x-test-hold");
    let content_type = if stream { "text/event-stream" } else { "application/json" };
    let body = futures::stream::unfold(
        (chunks.into_iter(), inner, hold, true),
        |(mut chunks, inner, hold, first)| async move {
            let chunk = chunks.next()?;
            let mut hold = hold;
            if hold && !first {
                // Only once, after the first chunk: the caller must have it by now.
                inner.hold.notified().await;
                hold = false;
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (chunks, inner, hold, false)))
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(Body::from_stream(body))
        .unwrap_or_default()
}
