//! Recognizable test keys: each one unique, so a search for it finds only its own leaks.

use uuid::Uuid;

/// A fresh Anthropic-shaped key with a canary in the middle.
pub(crate) fn anthropic() -> String {
    format!(
        "sk-ant-api03-CANARY{}x{}",
        Uuid::new_v4().simple(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A fresh OpenAI-shaped key.
pub(crate) fn openai() -> String {
    format!(
        "sk-proj-CANARY{}{}",
        Uuid::new_v4().simple(),
        &Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A fresh Google-shaped key (`AIza` + 35).
pub(crate) fn google() -> String {
    format!("AIza{}", &format!("CANARY{}", Uuid::new_v4().simple())[..35])
}

/// The last four characters, as the mask shows them.
pub(crate) fn last4(key: &str) -> &str {
    &key[key.len() - 4..]
}

/// A fresh key of `provider`'s shape, for the providers the tests store keys for.
pub(crate) fn of(provider: &str) -> String {
    match provider {
        "anthropic" => anthropic(),
        "openai" => openai(),
        "google" => google(),
        "groq" => format!("gsk_CANARY{}", Uuid::new_v4().simple()),
        _ => Uuid::new_v4().simple().to_string(),
    }
}

/// Puts `acme` on `pro` and stores a key the fake providers accept for each of `providers`.
pub(crate) async fn store_accepted(app: &keyledger_tests::TestApp, providers: &[&str]) {
    store_accepted_for(app, "acme", providers).await;
}

/// [`store_accepted`] for `org`.
pub(crate) async fn store_accepted_for(
    app: &keyledger_tests::TestApp,
    org: &str,
    providers: &[&str],
) {
    app.set_plan(org, "pro").await;
    for provider in providers {
        let key = of(provider);
        app.provider.accept(&key);
        let stored = app
            .post(
                &format!("/v1/orgs/{org}/keys"),
                &app.owner(org),
                serde_json::json!({"provider": provider, "key": key}),
            )
            .await;
        assert_eq!(
            stored.status,
            axum::http::StatusCode::CREATED,
            "{provider}: {}",
            stored.everything()
        );
    }
}
