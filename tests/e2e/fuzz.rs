//! Schema-blind fuzzing of the HTTP edge: any method, path, query, body and token gets an
//! answer, never a 500, and every error keyledger gives is problem+json.

use axum::http::Method;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("anthropic"),
            Just("openai"),
            Just("pro"),
            Just("gpt-4o"),
            Just("openai/gpt-4o")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let field = prop_oneof![
            Just("provider"),
            Just("key"),
            Just("model"),
            Just("models"),
            Just("messages"),
            Just("plan"),
            Just("providers"),
            Just("input_tokens"),
            Just("request_id"),
            Just("at"),
            Just("enabled"),
            Just("input"),
            Just("stream"),
            Just("max_tokens"),
            Just("verify"),
        ]
        .prop_map(str::to_owned);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop_oneof![field, ".{0,12}"], inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("acme".to_owned()),
        Just("anthropic".to_owned()),
        Just("openai".to_owned()),
        Just("%2e%2e".to_owned()),
        "[A-Za-z0-9._~-]{0,70}",
        "[%0-9A-F]{0,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    let org = segment();
    (org, segment(), segment(), "[a-z_=&0-9-]{0,30}", 0usize..15).prop_map(
        |(org, provider, rest, query, which)| {
            let base = format!("/v1/orgs/{org}");
            let path = match which {
                0 => base,
                1 => format!("{base}/keys"),
                2 => format!("{base}/keys/{provider}"),
                3 => format!("{base}/keys/{provider}/verify"),
                4 => format!("{base}/plan"),
                5 => format!("{base}/provider-order"),
                6 => format!("{base}/usage"),
                7 => format!("{base}/usage/calls"),
                8 => format!("{base}/audit"),
                9 => format!("{base}/events"),
                10 => format!("{base}/chat/completions"),
                11 => format!("{base}/embeddings"),
                12 => format!("{base}/models"),
                13 => format!("{base}/gateway/{provider}/{rest}"),
                _ => format!("{base}/byok-access"),
            };
            if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            }
        },
    )
}

on_both_backends!(no_input_gets_a_500_or_an_error_body_that_is_not_problem_json);

async fn no_input_gets_a_500_or_an_error_body_that_is_not_problem_json(backend: Backend) {
    let app = TestApp::start(backend).await;
    crate::keys::store_accepted(&app, &["openai", "anthropic"]).await;
    let tokens = [
        Some(app.owner("acme")),
        Some(app.token("acme", Role::Service, "worker")),
        Some(app.platform_admin()),
        Some("not-a-token".to_owned()),
        None,
    ];
    let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    let body = prop_oneof![
        json_value().prop_map(|v| Some(v.to_string())),
        ".{0,60}".prop_map(Some),
        Just(None)
    ];
    let strategy = (0..methods.len(), path(), body, 0..tokens.len());
    let handle = tokio::runtime::Handle::current();
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let mut runner =
        TestRunner::new(Config { cases: 1_000, failure_persistence: None, ..Config::default() });
    let outcome = runner.run(&strategy, |(method, path, body, token)| {
        let (method, token) = (methods[method].clone(), tokens[token].as_deref());
        let answered = tokio::task::block_in_place(|| {
            handle.block_on(async {
                let request = axum::http::Request::builder().method(method.clone()).uri(&path);
                if request.uri_ref().is_none() || axum::http::Uri::try_from(path.as_str()).is_err()
                {
                    return None;
                }
                Some(app.send_raw(method.clone(), &path, token, body.as_deref()).await)
            })
        });
        let Some(answer) = answered else { return Ok(()) };
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        prop_assert_ne!(
            answer.status.as_u16(),
            500,
            "{} {}: {}",
            method,
            path,
            answer.everything()
        );
        if answer.status.as_u16() >= 400 && !answer.headers.contains_key("x-keyledger-key-source") {
            prop_assert_eq!(
                answer.headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/problem+json"),
                "{} {}: {}",
                method,
                path,
                answer.everything()
            );
            prop_assert!(!answer.code().is_empty(), "{} {}: {}", method, path, answer.everything());
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent >= 800, "only {sent} of the generated requests could be sent");
    app.finish().await;
}
