//! Bad input gets the right problem code and changes nothing.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::keys;
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(bad_input_is_refused_with_its_code_and_writes_nothing);

async fn bad_input_is_refused_with_its_code_and_writes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let events_before = app.count("select count(*) from events").await;
    let key = keys::anthropic();
    let oversize =
        json!({"provider": "anthropic", "key": key, "description": "x".repeat(70 * 1024)})
            .to_string();
    let whitespace_key = format!("{key} ");

    let cases: Vec<(&str, &str, String, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            "/v1/orgs/acme/keys",
            r#"{"provider": "anthropic", "key": "#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown field",
            "/v1/orgs/acme/keys",
            json!({"provider": "anthropic", "key": key, "colour": "red"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "missing field",
            "/v1/orgs/acme/keys",
            json!({"key": key}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "oversize body",
            "/v1/orgs/acme/keys",
            oversize,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "bad org id",
            "/v1/orgs/-acme/keys",
            json!({"provider": "anthropic", "key": key}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown provider",
            "/v1/orgs/acme/keys",
            json!({"provider": "openia", "key": key}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_provider",
        ),
        (
            "whitespace in key",
            "/v1/orgs/acme/keys",
            json!({"provider": "anthropic", "key": whitespace_key}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_format",
        ),
        (
            "wrong prefix",
            "/v1/orgs/acme/keys",
            json!({"provider": "google", "key": key}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_format",
        ),
        (
            "private endpoint",
            "/v1/orgs/acme/keys",
            json!({"provider": "ollama", "endpoint": "http://127.0.0.1:11434"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "missing endpoint",
            "/v1/orgs/acme/keys",
            json!({"provider": "azure_openai", "key": "a".repeat(32)}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "missing key",
            "/v1/orgs/acme/keys",
            json!({"provider": "anthropic"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "wrong type",
            "/v1/orgs/acme/keys",
            json!({"provider": "anthropic", "key": key, "verify": "yes"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (what, path, body, status, code) in cases {
        let response = app.send_raw(Method::POST, path, Some(&owner), Some(&body)).await;
        assert_eq!(response.status, status, "{what}: {}", response.everything());
        assert_eq!(response.code(), code, "{what}");
        assert_eq!(response.headers["content-type"], "application/problem+json", "{what}");
        assert!(!response.everything().contains(&key[12..]), "{what} echoed the key");
    }
    // Each refusal says what is wrong with that input.
    for (body, says) in [
        (json!({"provider": "anthropic"}), "send \"key\": an Anthropic key is required"),
        (
            json!({"provider": "openai", "key": key}),
            "this looks like an Anthropic key, not an OpenAI key",
        ),
        (
            json!({"provider": "openai", "key": format!("sk-{}", "a".repeat(2000))}),
            "the key is longer than 1024 characters",
        ),
    ] {
        let refused = app.post("/v1/orgs/acme/keys", &owner, body).await;
        assert_eq!(refused.json()["detail"], says, "{}", refused.everything());
    }
    let unknown_provider = app.put("/v1/orgs/acme/keys/openia", &owner, json!({"key": key})).await;
    assert_eq!(unknown_provider.code(), "unknown_provider");
    let not_rfc3339 = app.get("/v1/orgs/acme/keys?as_of=yesterday", &owner).await;
    assert_eq!(not_rfc3339.code(), "invalid_request");

    assert_eq!(
        app.count("select count(*) from events").await,
        events_before,
        "nothing was written"
    );
    assert_eq!(app.count("select count(*) from key_material").await, 0, "nothing was sealed");
    app.finish().await;
}

on_both_backends!(operations_endpoints_answer);

async fn operations_endpoints_answer(backend: Backend) {
    let app = TestApp::start(backend).await;
    assert_eq!(app.send(Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
    let ready = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK);
    let spec = app.send(Method::GET, "/openapi.json", None, None).await.json();
    assert!(spec["openapi"].as_str().unwrap_or_default().starts_with("3.1"));
    for path in [
        "/v1/orgs/{org}/keys",
        "/v1/orgs/{org}/keys/{provider}/verify",
        "/v1/orgs/{org}/plan",
        "/v1/orgs/{org}/gateway/{provider}/{path}",
        "/v1/orgs/{org}/chat/completions",
        "/metrics",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
    let metrics = app.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.headers["content-type"].to_str().unwrap_or_default().starts_with("text/plain"));
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains(
            r#"keyledger_http_requests_total{method="GET",route="/readyz",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE keyledger_projection_lag_events gauge"), "{text}");
    // The rendering loads nothing from elsewhere: it works offline.
    let docs = app.send(Method::GET, "/docs", None, None).await;
    let page = String::from_utf8_lossy(&docs.body).into_owned();
    assert!(!page.contains("https://") && page.contains("/docs/redoc.standalone.js"), "{page}");
    let renderer = app.send(Method::GET, "/docs/redoc.standalone.js", None, None).await;
    assert_eq!(renderer.status, StatusCode::OK);
    assert!(renderer.body.len() > 100_000, "the renderer itself");
    let missing = app.send(Method::GET, "/v2/nothing", None, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.headers["content-type"], "application/problem+json");
    assert!(missing.headers.contains_key("x-request-id"));
    app.finish().await;
}

on_both_backends!(nothing_the_caller_sent_comes_back_in_an_error);

async fn nothing_the_caller_sent_comes_back_in_an_error(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let key = crate::keys::anthropic();
    let pasted = format!(r#"{{"provider": "anthropic", "{key}": true}}"#);
    let number = r#"{"provider": "anthropic", "key": 987654321987654321}"#.to_owned();
    let provider = format!(r#"{{"provider": "{key}", "key": "x"}}"#);
    for (what, body, code) in [
        ("a key as a field name", pasted, "invalid_request"),
        ("a number for the key", number, "invalid_request"),
        ("a key as the provider", provider, "unknown_provider"),
    ] {
        let refused =
            app.send_raw(Method::POST, "/v1/orgs/acme/keys", Some(&owner), Some(&body)).await;
        assert_eq!(refused.code(), code, "{what}: {}", refused.everything());
        for echoed in [&key[7..], "987654321987654321"] {
            assert!(
                !refused.everything().contains(echoed),
                "{what}: echoed {}",
                refused.everything()
            );
        }
    }
    // A body is an object: an array's items would be read as fields by position.
    let array = json!(["anthropic", key]).to_string();
    let refused =
        app.send_raw(Method::POST, "/v1/orgs/acme/keys", Some(&owner), Some(&array)).await;
    assert_eq!(refused.code(), "invalid_request");
    assert_eq!(refused.json()["detail"], "the body must be a JSON object");
    assert_eq!(
        app.get("/v1/orgs/acme/keys", &owner).await.json()["keys"],
        json!([]),
        "nothing stored"
    );
    // Control characters would rewrite a log line or a terminal.
    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "anthropic", "key": key, "description": "prod\u{1b}[2J\rfake"}),
        )
        .await;
    assert_eq!(stored.code(), "invalid_request");
    assert_eq!(stored.json()["detail"], "description contains control characters");
    app.finish().await;
}

on_both_backends!(an_unfit_request_id_is_replaced_before_it_reaches_the_log_or_an_event);

async fn an_unfit_request_id_is_replaced_before_it_reaches_the_log_or_an_event(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.platform_admin();
    for (id, kept, plan) in [
        ("x".repeat(30_000), false, "pro"),
        ("bad id {with} spaces".to_owned(), false, "business"),
        ("req-42.a_b:c".to_owned(), true, "growth"),
    ] {
        let request = axum::http::Request::put("/v1/orgs/acme/plan")
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .header(
                "x-request-id",
                axum::http::HeaderValue::from_bytes(id.as_bytes()).expect("header"),
            )
            .body(axum::body::Body::from(json!({"plan": plan}).to_string()))
            .expect("request");
        let response =
            tower::ServiceExt::oneshot(app.router.clone(), request).await.expect("router");
        assert_eq!(response.status(), StatusCode::OK);
        let answered = response.headers()["x-request-id"].to_str().unwrap_or_default().to_owned();
        assert_eq!(answered == id, kept, "{}", &id[..id.len().min(20)]);
        assert!(answered.len() <= 128);
    }
    let events = app.get("/v1/orgs/acme/events", &admin).await;
    let text = String::from_utf8_lossy(&events.body).into_owned();
    assert!(
        !text.contains(&"x".repeat(200)) && text.contains("req-42.a_b:c"),
        "{}",
        &text[..text.len().min(500)]
    );
    app.finish().await;
}
