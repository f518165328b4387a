//! A fake AI provider on loopback: answers any GET like a models listing, accepting only the
//! keys it was told to accept, and reading them where the real provider would.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;

#[derive(Debug, Default)]
struct Inner {
    accepted: Mutex<HashSet<String>>,
    requests: AtomicUsize,
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
        let app = Router::new().fallback(move |headers: HeaderMap| {
            let inner = Arc::clone(&handler_inner);
            async move { answer(&inner, &headers) }
        });
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
}

fn answer(inner: &Inner, headers: &HeaderMap) -> impl IntoResponse {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let presented = ["x-api-key", "x-goog-api-key", "api-key"]
        .iter()
        .find_map(|name| headers.get(*name))
        .or_else(|| headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_owned());
    let accepted = presented.is_some_and(|key| inner.accepted.lock().expect("lock").contains(&key));
    if accepted {
        (StatusCode::OK, r#"{"data":[{"id":"fake-model"}]}"#)
    } else {
        (StatusCode::UNAUTHORIZED, r#"{"error":{"type":"authentication_error"}}"#)
    }
}
