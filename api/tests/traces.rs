//! OpenTelemetry traces from a real `keyledger serve`: an in-process OTLP/HTTP collector
//! receives a span per request and per model call, with org, provider, model, key source,
//! status and token counts, joined into one trace, and never the stored key or a token.

mod harness;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Attribute;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;

use harness::Setup;

#[path = "../../tests/src/fake_provider/mod.rs"]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod fake_provider;

/// What the collector received: every body as it came, and the spans in them.
#[derive(Default)]
struct Received {
    bodies: Vec<Bytes>,
    spans: Vec<Span>,
}

/// An OTLP/HTTP collector on a loopback port, answering as a collector does.
async fn collector() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post({
            let received = Arc::clone(&received);
            move |headers: axum::http::HeaderMap, body: Bytes| async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let request = ExportTraceServiceRequest::decode(body.clone()).expect("OTLP");
                let mut received = received.lock().expect("received");
                received.spans.extend(
                    request
                        .resource_spans
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans),
                );
                received.bodies.push(body);
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        Attribute::StringValue(s) => s.clone(),
        Attribute::IntValue(i) => i.to_string(),
        Attribute::DoubleValue(d) => d.to_string(),
        Attribute::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_model_calls_arrive_as_spans_that_hold_no_key() {
    let (endpoint, received) = collector().await;
    let fake = fake_provider::FakeProvider::start().await;
    let key = format!("sk-ant-api03-TRACECANARY{}", "q".repeat(60));
    fake.accept(&key);
    let setup = Setup::new(false).await;
    let anthropic = fake.url("anthropic");
    let server = setup
        .serve_with(&[
            ("KEYLEDGER_PROVIDER_ANTHROPIC_BASE_URL", anthropic.as_str()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "keyledger-under-test"),
        ])
        .await;
    let (admin, owner, service) = (
        setup.token("*", "platform_admin"),
        setup.token("acme", "owner"),
        setup.token("acme", "service"),
    );
    let client = reqwest::Client::new();
    let base = &server.base;
    let plan = client.put(format!("{base}/v1/orgs/acme/plan")).bearer_auth(&admin);
    assert!(plan.json(&json!({"plan": "pro"})).send().await.expect("plan").status().is_success());
    let stored = client.post(format!("{base}/v1/orgs/acme/keys")).bearer_auth(&owner);
    let stored =
        stored.json(&json!({"provider": "anthropic", "key": key})).send().await.expect("store");
    assert_eq!(stored.status(), 201);
    let call = client
        .post(format!("{base}/v1/orgs/acme/gateway/anthropic/v1/messages"))
        .bearer_auth(&service)
        .json(&json!({"model": "claude-3-5-haiku-latest", "max_tokens": 16,
            "messages": [{"role": "user", "content": "a prompt that must not be traced"}]}))
        .send()
        .await
        .expect("call");
    assert_eq!(call.status(), 200);
    let answer = call.text().await.expect("answer");
    let refused = client.get(format!("{base}/v1/orgs/acme/keys")).bearer_auth("not-a-token");
    assert_eq!(refused.send().await.expect("refused").status(), 401);

    // The batch processor sends every 100 ms; the model call's span ends with its answer.
    let started = Instant::now();
    let model_call = loop {
        let found = received
            .lock()
            .expect("received")
            .spans
            .iter()
            .find(|s| attribute(s, "input_tokens").is_some())
            .cloned();
        if let Some(span) = found {
            break span;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no model-call span arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = received.lock().expect("received");

    assert_eq!(model_call.name, "model call anthropic");
    for (name, value) in [
        ("org", "acme"),
        ("provider", "anthropic"),
        ("key_source", "byok"),
        ("key_version", "1"),
        ("status", "200"),
    ] {
        assert_eq!(attribute(&model_call, name).as_deref(), Some(value), "{name}");
    }
    assert!(attribute(&model_call, "model").is_some_and(|m| m.starts_with("claude")));
    let input: u64 =
        attribute(&model_call, "input_tokens").and_then(|t| t.parse().ok()).expect("n");
    assert!(input > 0 && attribute(&model_call, "output_tokens").is_some());

    let by_route = |route: &str, status: &str| {
        received.spans.iter().find(|s| {
            attribute(s, "http.route").as_deref() == Some(route)
                && attribute(s, "status").as_deref() == Some(status)
        })
    };
    let request =
        by_route("/v1/orgs/{org}/gateway/{provider}/{*path}", "200").expect("the call's request");
    assert_eq!(request.name, "POST /v1/orgs/{org}/gateway/{provider}/{*path}");
    assert_eq!(attribute(request, "org").as_deref(), Some("acme"));
    // request → its handler's span → the model call, in one trace.
    let parent = received.spans.iter().find(|s| s.span_id == model_call.parent_span_id);
    let handler = parent.expect("the model call's parent span arrived");
    assert_eq!(
        (handler.name.as_str(), attribute(handler, "org").as_deref()),
        ("forward", Some("acme"))
    );
    assert_eq!(handler.parent_span_id, request.span_id, "the handler runs in the request's span");
    assert!(model_call.trace_id == request.trace_id && handler.trace_id == request.trace_id);
    let store = by_route("/v1/orgs/{org}/keys", "201").expect("the store's request");
    assert_eq!(attribute(store, "method").as_deref(), Some("POST"));
    assert!(by_route("/v1/orgs/{org}/keys", "401").is_some(), "a refused request is traced too");

    // Nothing of the key, the tokens, the prompt or the answer, in any byte sent.
    let everything: Vec<u8> = received.bodies.iter().flat_map(|b| b.to_vec()).collect();
    let text = String::from_utf8_lossy(&everything);
    assert!(text.contains("keyledger-under-test"), "OTEL_SERVICE_NAME names the service");
    for secret in [key.as_str(), "TRACECANARY", &owner, &service, "must not be traced", &answer] {
        assert!(!text.contains(secret), "the traces hold {secret:?}");
    }
    // Only keyledger's own spans (requests, handlers, model calls), none of its libraries'.
    for span in &received.spans {
        let ours = attribute(span, "path").is_some() || attribute(span, "org").is_some();
        assert!(ours, "an unexpected span: {}", span.name);
    }
    drop(server);
}
