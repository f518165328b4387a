//! Keys stay secret: no plaintext anywhere, old versions shredded, material bound to its place.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::keys;
use keyledger_api::Role;
use keyledger_tests::{logs, on_both_backends, Backend, TestApp, TestResponse};

on_both_backends!(no_plaintext_key_is_in_any_table_response_header_or_log_line);

async fn no_plaintext_key_is_in_any_table_response_header_or_log_line(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let (anthropic, rotated, openai, azure) = (
        keys::anthropic(),
        keys::anthropic(),
        keys::openai(),
        format!("AzUrE{}", uuid::Uuid::new_v4().simple()),
    );
    app.provider.accept(&rotated);
    let mut responses: Vec<TestResponse> = Vec::new();

    responses.push(
        app.post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "anthropic", "key": anthropic, "verify": false}),
        )
        .await,
    );
    responses.push(
        app.post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "openai", "key": openai, "description": "team"}),
        )
        .await,
    );
    responses.push(
        app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": rotated, "verify": true}))
            .await,
    );
    responses.push(
        app.send(Method::POST, "/v1/orgs/acme/keys/anthropic/verify", Some(&owner), None).await,
    );
    responses
        .push(app.send(Method::POST, "/v1/orgs/acme/keys/openai/verify", Some(&owner), None).await);
    // Refused requests that carry a key must not echo it either.
    responses.push(app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": rotated})).await);
    responses.push(
        app.post("/v1/orgs/acme/keys", &owner, json!({"provider": "openai", "key": openai})).await,
    );
    responses.push(
        app.post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "azure_openai", "key": azure, "bogus": true}),
        )
        .await,
    );
    responses.push(
        app.post("/v1/orgs/acme/keys", &owner, json!({"provider": "google", "key": anthropic}))
            .await,
    );
    // Model calls: one the provider takes (plain and streamed, natively and OpenAI-shaped),
    // one it refuses (the organization's OpenAI key is not accepted there).
    let service = app.token("acme", Role::Service, "worker");
    let gateway = "/v1/orgs/acme/gateway";
    for (path, body) in [
        (format!("{gateway}/anthropic/v1/messages"), crate::gateway::claude()),
        (format!("{gateway}/anthropic/v1/messages"), {
            let mut streamed = crate::gateway::claude();
            streamed["stream"] = json!(true);
            streamed
        }),
        (format!("{gateway}/openai/v1/chat/completions"), crate::gateway::chat_body("gpt-4o")),
        (
            "/v1/orgs/acme/chat/completions".to_owned(),
            json!({"provider": "anthropic", "model": "claude-3-5-haiku-latest", "messages": [], "stream": true}),
        ),
        (
            "/v1/orgs/acme/chat/completions".to_owned(),
            json!({"provider": "openai", "model": "gpt-4o", "messages": []}),
        ),
    ] {
        responses.push(app.send(Method::POST, &path, Some(&service), Some(body)).await);
    }
    // The unified surface and the other gateway methods: routed, listed, refused, failed.
    let hi = json!([{"role": "user", "content": "Hi"}]);
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/orgs/acme/chat/completions",
            Some(json!({"model": "claude-3-5-haiku-latest", "messages": hi})),
        ),
        (
            Method::POST,
            "/v1/orgs/acme/chat/completions",
            Some(json!({"model": "mystery-model", "messages": hi})),
        ),
        (
            Method::POST,
            "/v1/orgs/acme/embeddings",
            Some(json!({"model": "text-embedding-3-small", "input": "x"})),
        ),
        (Method::GET, "/v1/orgs/acme/models", None),
        (Method::GET, "/v1/orgs/acme/gateway/openai/v1/models?limit=1", None),
        (Method::GET, "/v1/orgs/acme/gateway/anthropic/v1/models", None),
    ] {
        responses.push(app.send(method, path, Some(&service), body).await);
    }
    let unified: Vec<u16> = responses[14..20].iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(unified, [200, 400, 502, 200, 502, 200], "the calls went where they should");
    responses.push(app.get("/v1/orgs/acme/usage/calls", &owner).await);
    responses.push(app.get("/v1/orgs/acme/audit", &owner).await);
    responses.push(app.get("/v1/orgs/acme/events", &owner).await);
    responses.push(app.get("/v1/orgs/acme", &owner).await);
    responses.push(app.get("/v1/orgs/acme/keys", &owner).await);
    responses.push(app.get("/v1/orgs/acme/keys/anthropic", &owner).await);
    responses.push(app.delete("/v1/orgs/acme/keys/openai", &owner).await);
    responses.push(app.send(Method::GET, "/metrics", None, None).await);
    assert_eq!(responses[0].status, StatusCode::CREATED);
    assert_eq!(responses[2].status, StatusCode::OK, "{}", responses[2].everything());
    assert_eq!(responses[5].code(), "same_key");
    let model_calls: Vec<(u16, String)> =
        responses[9..14].iter().map(|r| (r.status.as_u16(), r.code())).collect();
    assert_eq!(
        model_calls,
        [200, 200, 502, 200, 502].map(|status| (
            status,
            if status == 502 { "byok_key_rejected".to_owned() } else { String::new() }
        )),
        "the calls went out with the keys"
    );

    app.keyring_views_settled().await;
    let database = app.dump_database().await;
    let log = logs::captured();
    assert!(database.contains("sk-ant-••••"), "the dump does see the stored masks");
    for key in [&anthropic, &rotated, &openai, &azure] {
        // The whole key, and a run of its secret middle that no mask shows.
        let middle = &key[key.len() - 20..key.len() - 6];
        for (place, text) in [("database", &database), ("log", &log)] {
            assert!(
                !text.contains(key.as_str()) && !text.contains(middle),
                "plaintext key found in the {place}"
            );
        }
        for response in &responses {
            assert!(!response.everything().contains(middle), "plaintext key found in a response");
        }
    }
    app.finish().await;
}

on_both_backends!(rotated_and_removed_versions_are_shredded);

async fn rotated_and_removed_versions_are_shredded(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    app.post(
        "/v1/orgs/acme/keys",
        &owner,
        json!({"provider": "anthropic", "key": keys::anthropic()}),
    )
    .await;
    let first = material_of(&app, "acme", 1).await;
    assert_eq!(verify(&app, "acme").await.status, StatusCode::OK, "version 1 opens");

    app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": keys::anthropic()})).await;
    let second = material_of(&app, "acme", 2).await;
    assert_eq!(sealed_rows(&app, &first).await, 0, "version 1 was destroyed");
    assert_eq!(verify(&app, "acme").await.status, StatusCode::OK, "version 2 opens");
    assert_eq!(app.count("select count(*) from key_material").await, 1);

    app.delete("/v1/orgs/acme/keys/anthropic", &owner).await;
    assert_eq!(sealed_rows(&app, &second).await, 0, "version 2 was destroyed");
    assert_eq!(app.count("select count(*) from key_material").await, 0);
    let changes = "select count(*) from events where aggregate_id = 'acme' \
                   and event_type not in ('KeyVerified', 'KeyVerificationFailed')";
    assert_eq!(
        app.count(changes).await,
        4,
        "the history stays complete: plan, stored, rotated, removed"
    );
    app.finish().await;
}

on_both_backends!(material_copied_to_another_org_or_version_does_not_open);

/// Sealed material is bound to its organization, provider, key and version: a row copied
/// anywhere else does not open, and the test connection says so without sending anything.
async fn material_copied_to_another_org_or_version_does_not_open(backend: Backend) {
    let app = TestApp::start(backend).await;
    for org in ["acme", "beta"] {
        app.set_plan(org, "pro").await;
        let response = app
            .post(
                &format!("/v1/orgs/{org}/keys"),
                &app.owner(org),
                json!({"provider": "anthropic", "key": keys::anthropic()}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED);
    }
    let (acme_m, beta_m) = (material_of(&app, "acme", 1).await, material_of(&app, "beta", 1).await);
    assert_eq!(verify(&app, "beta").await.status, StatusCode::OK);

    // Copy acme's sealed material over beta's row: beta's binding must refuse it.
    copy_material(&app, &acme_m, &beta_m).await;
    assert_does_not_open(&verify(&app, "beta").await, "another org's material opened");

    // Keep acme's version 1 material, rotate, and put the old material in version 2's row.
    let old_copy = uuid::Uuid::new_v4();
    let key_as = if app.backend == Backend::Postgres { "uuid" } else { "text" };
    app.execute_sql(&format!(
        "insert into key_material (material_id, org_id, provider, key_id, version, master_key_id, dek_nonce, wrapped_dek, key_nonce, ciphertext) \
         select cast('{old_copy}' as {key_as}), org_id, provider, key_id, version, master_key_id, dek_nonce, wrapped_dek, key_nonce, ciphertext \
         from key_material where material_id = cast('{acme_m}' as {key_as})"
    ))
    .await;
    app.put("/v1/orgs/acme/keys/anthropic", &app.owner("acme"), json!({"key": keys::anthropic()}))
        .await;
    let rotated = material_of(&app, "acme", 2).await;
    assert_eq!(verify(&app, "acme").await.status, StatusCode::OK);
    copy_material(&app, &old_copy.to_string(), &rotated).await;
    assert_does_not_open(&verify(&app, "acme").await, "version 1 material opened as version 2");
    app.finish().await;
}

/// The test connection of `org`'s Anthropic key: the key is opened and sent only if its
/// material opens.
async fn verify(app: &TestApp, org: &str) -> TestResponse {
    let path = format!("/v1/orgs/{org}/keys/anthropic/verify");
    app.send(Method::POST, &path, Some(&app.owner(org)), None).await
}

#[track_caller]
fn assert_does_not_open(verify: &TestResponse, says: &str) {
    assert_eq!(verify.status, StatusCode::INTERNAL_SERVER_ERROR, "{says}");
    assert_eq!(verify.json()["detail"], "an internal error occurred");
}

/// The id of the sealed material of version `version` of `org`'s key.
async fn material_of(app: &TestApp, org: &str, version: i64) -> String {
    let sql = format!(
        "select cast(material_id as text) from key_material where org_id = '{org}' and version = {version}"
    );
    let ids = app.texts(&sql).await;
    assert_eq!(ids.len(), 1, "one sealed row of {org} v{version}");
    ids.into_iter().next().unwrap_or_default()
}

async fn sealed_rows(app: &TestApp, material_id: &str) -> i64 {
    app.count(&format!(
        "select count(*) from key_material where cast(material_id as text) = '{material_id}'"
    ))
    .await
}

async fn copy_material(app: &TestApp, from: &str, to: &str) {
    let key_as = if app.backend == Backend::Postgres { "uuid" } else { "text" };
    let columns = ["master_key_id", "dek_nonce", "wrapped_dek", "key_nonce", "ciphertext"];
    let set: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = (select {c} from key_material where material_id = cast('{from}' as {key_as}))"))
        .collect();
    let changed = app
        .execute_sql(&format!(
            "update key_material set {} where material_id = cast('{to}' as {key_as})",
            set.join(", ")
        ))
        .await;
    assert_eq!(changed, 1);
}

on_both_backends!(destroyed_material_leaves_no_trace_in_the_database_files);

/// After a rotation and a removal, the sealed bytes of both old versions are gone from the
/// database's files (SQLite: main file and write-ahead log), not merely unlinked.
async fn destroyed_material_leaves_no_trace_in_the_database_files(backend: Backend) {
    let app = TestApp::start(backend).await;
    keys::store_accepted(&app, &["anthropic"]).await;
    let owner = app.owner("acme");
    let mut sealed = material_bytes(&app).await;
    app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": keys::anthropic()})).await;
    sealed.extend(material_bytes(&app).await);
    assert_eq!(sealed.len(), 4, "two versions' wrapped data key and ciphertext");
    app.delete("/v1/orgs/acme/keys/anthropic", &owner).await;
    app.state.keyrings.deps().material.scrubbed().await;
    match backend {
        Backend::Sqlite => {
            let files = app.database_files();
            for bytes in &sealed {
                assert!(
                    !files.windows(bytes.len()).any(|w| w == bytes.as_slice()),
                    "destroyed key material is still in the database files"
                );
            }
        }
        Backend::Postgres => {
            // Dead tuples are vacuumed away (what PostgreSQL's own WAL and backups keep is
            // stated in docs/operations.md).
            let mut vacuumed = 0;
            for _ in 0..100 {
                vacuumed = app
                    .count("select coalesce(vacuum_count, 0) from pg_stat_user_tables where relname = 'key_material'")
                    .await;
                if vacuumed > 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            assert!(vacuumed > 0, "the material table was vacuumed after shredding");
        }
    }
    app.finish().await;
}

/// The sealed bytes of every stored key version (wrapped data key, ciphertext).
async fn material_bytes(app: &TestApp) -> Vec<Vec<u8>> {
    let sql = "select wrapped_dek, ciphertext from key_material";
    let rows: Vec<(Vec<u8>, Vec<u8>)> = match &app.state.db {
        keyledger_store::Database::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        keyledger_store::Database::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
    }
    .expect("material");
    rows.into_iter().flat_map(|(dek, ciphertext)| [dek, ciphertext]).collect()
}
