//! The unified, OpenAI-shaped surface at `/v1/orgs/{org}`: embeddings routed and metered, the
//! models an organization can call, errors an OpenAI SDK shows, driven by the real Rust OpenAI
//! client (`async-openai`) against keyledger over HTTP.

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessage, CreateChatCompletionRequestArgs,
};
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use async_openai::Client;
use axum::http::StatusCode;
use futures::StreamExt as _;
use serde_json::json;

use crate::gateway::recorded_calls;
use crate::keys;
use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

/// `acme` on `pro` with its own OpenAI and Anthropic keys, and the platform's Groq key.
async fn acme(backend: Backend) -> TestApp {
    let groq = format!("gsk_{}", uuid::Uuid::new_v4().simple());
    let app = TestApp::start_with(backend, &[("KEYLEDGER_PLATFORM_KEY_GROQ", &groq)]).await;
    app.provider.accept(&groq);
    app.set_plan("acme", "pro").await;
    for (provider, key) in [("openai", keys::openai()), ("anthropic", keys::anthropic())] {
        app.provider.accept(&key);
        let stored = app
            .post(
                "/v1/orgs/acme/keys",
                &app.owner("acme"),
                json!({"provider": provider, "key": key}),
            )
            .await;
        assert_eq!(stored.status, StatusCode::CREATED);
    }
    app
}

/// The OpenAI client pointed at keyledger, with a service token as its API key.
async fn openai_client(app: &TestApp) -> Client<OpenAIConfig> {
    let base = app.serve().await;
    let config = OpenAIConfig::new()
        .with_api_base(format!("{base}/v1/orgs/acme"))
        .with_api_key(app.token("acme", Role::Service, "worker"));
    Client::with_config(config)
}

on_both_backends!(the_openai_client_chats_streams_embeds_and_lists_through_keyledger);

async fn the_openai_client_chats_streams_embeds_and_lists_through_keyledger(backend: Backend) {
    let app = acme(backend).await;
    let client = openai_client(&app).await;
    let hi = || vec![ChatCompletionRequestUserMessage::from("Hi").into()];

    let request =
        CreateChatCompletionRequestArgs::default().model("gpt-4o-mini").messages(hi()).build();
    let answer = client.chat().create(request.expect("request")).await.expect("a chat answer");
    assert_eq!(answer.choices[0].message.content.as_deref(), Some("Hello"));
    assert_eq!(answer.usage.map(|u| u.prompt_tokens), Some(12));

    let request = CreateChatCompletionRequestArgs::default()
        .model("anthropic/claude-3-5-haiku-latest")
        .messages(hi())
        .build();
    let mut stream =
        client.chat().create_stream(request.expect("request")).await.expect("a stream");
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a chunk the client understands");
        for choice in chunk.choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
        }
    }
    assert_eq!(text, "Hello");

    let request = CreateEmbeddingRequestArgs::default()
        .model("text-embedding-3-small")
        .input(vec!["first".to_owned(), "second".to_owned()])
        .build();
    let embedded = client.embeddings().create(request.expect("request")).await.expect("embeddings");
    assert_eq!(embedded.data.len(), 2);
    assert_eq!(embedded.usage.prompt_tokens, 8);

    let listed = client.models().list().await.expect("a model list");
    let ids: Vec<&str> = listed.data.iter().map(|m| m.id.as_str()).collect();
    for id in
        ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest", "groq/llama-3.3-70b-versatile"]
    {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    assert!(!ids.iter().any(|id| id.starts_with("mistral/")), "no key for mistral: {ids:?}");

    let request =
        CreateChatCompletionRequestArgs::default().model("mystery-model").messages(hi()).build();
    match client.chat().create(request.expect("request")).await {
        Err(OpenAIError::ApiError(error)) => {
            assert_eq!(error.code.as_deref(), Some("model_not_routable"));
            assert!(error.message.contains("'provider/model'"), "{}", error.message);
        }
        other => panic!("expected the API's error, got {other:?}"),
    }

    // Every answered call is recorded against the provider and model that served it.
    let calls = recorded_calls(&app, 3).await;
    let mut served: Vec<(String, String, u64)> = calls
        .iter()
        .map(|c| {
            (
                c["provider"].as_str().unwrap_or_default().to_owned(),
                c["model"].as_str().unwrap_or_default().to_owned(),
                c["input_tokens"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    served.sort();
    assert_eq!(
        served,
        [
            ("anthropic".to_owned(), "claude-3-5-haiku-latest".to_owned(), 9),
            ("openai".to_owned(), "gpt-4o-mini".to_owned(), 12),
            ("openai".to_owned(), "text-embedding-3-small".to_owned(), 8),
        ]
    );
    app.finish().await;
}

on_both_backends!(embeddings_go_only_where_they_are_offered);

async fn embeddings_go_only_where_they_are_offered(backend: Backend) {
    let app = acme(backend).await;
    let service = app.token("acme", Role::Service, "worker");
    let refused = app
        .post(
            "/v1/orgs/acme/embeddings",
            &service,
            json!({"model": "anthropic/claude-haiku-4", "input": "x"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.everything());
    assert_eq!(refused.code(), "invalid_request");
    assert!(refused.json()["error"]["message"].as_str().unwrap_or_default().contains("embeddings"));
    let unroutable = app
        .post("/v1/orgs/acme/embeddings", &service, json!({"model": "mistral-embed", "input": "x"}))
        .await;
    assert_eq!(unroutable.code(), "model_not_routable", "no key for mistral");
    app.finish().await;
}

on_both_backends!(the_model_list_follows_the_plan_and_the_keys);

async fn the_model_list_follows_the_plan_and_the_keys(backend: Backend) {
    let app = acme(backend).await;
    let service = app.token("acme", Role::Service, "worker");
    let listed = app.get("/v1/orgs/acme/models", &service).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()["object"], "list");
    assert_eq!(
        listed.json()["data"][0],
        json!({"id": "anthropic/claude-3-5-haiku-latest", "object": "model", "created": 0, "owned_by": "anthropic"})
    );
    // On starter the organization's own keys are suspended: only the platform's key serves.
    app.set_plan("acme", "starter").await;
    let listed = app.get("/v1/orgs/acme/models", &service).await.json();
    let owners: std::collections::BTreeSet<String> = listed["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| m["owned_by"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(owners, ["groq".to_owned()].into());
    // Reading the list is not a model call.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let usage = app.get("/v1/orgs/acme/usage/calls", &app.token("acme", Role::Auditor, "c")).await;
    assert_eq!(usage.json()["calls"], json!([]));
    let anonymous = app.send(axum::http::Method::GET, "/v1/orgs/acme/models", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json()["error"]["type"], "authentication_error");
    app.finish().await;
}

on_both_backends!(the_anthropic_sdks_way_of_sending_its_key_is_accepted);

/// The Anthropic SDK puts its API key in `x-api-key`: a service token there works too, and is
/// never passed on to the provider.
async fn the_anthropic_sdks_way_of_sending_its_key_is_accepted(backend: Backend) {
    let app = acme(backend).await;
    let token = app.token("acme", Role::Service, "worker");
    let request = axum::http::Request::post("/v1/orgs/acme/gateway/anthropic/v1/messages")
        .header("x-api-key", &token)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(crate::gateway::claude().to_string()))
        .expect("request");
    let response = tower::ServiceExt::oneshot(app.router.clone(), request).await.expect("router");
    assert_eq!(response.status(), StatusCode::OK);
    let seen = app.provider.seen().pop().expect("called");
    assert_ne!(seen["x-api-key"], token.as_str(), "the organization's key went, not the token");
    assert!(seen["x-api-key"].to_str().unwrap_or_default().starts_with("sk-ant-"));
    app.finish().await;
}
