//! Key material comes and goes in the transaction of the events that name it: a command that
//! does not commit leaves no material behind, and released material is gone when its event is
//! there.

use std::collections::HashMap;

use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{AggregateError, EventStore};
use keyledger_domain::keyring::ProviderOrderSet;
use keyledger_domain::{Keyring, KeyringEvent, ProviderId};
use keyledger_store::event_store::{EventRepository, SnapshottingStore};
use keyledger_store::material::{MaterialChanges, MaterialRow, SealedKey};
use keyledger_store::Database;
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(
    material_is_written_and_destroyed_with_its_events_or_not_at_all,
    commands_committing_together_each_get_their_own_answer
);

async fn material_is_written_and_destroyed_with_its_events_or_not_at_all(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = Database::connect(&app.database_url).await.expect("connect");
    let store = SnapshottingStore::<_, Keyring>::new(EventRepository::new(&db));
    let metadata = HashMap::new();
    let stale = store.load_aggregate("acme").await.expect("load");

    let first = sealed_row(1);
    let kept = MaterialChanges { kept: vec![first.clone()], destroyed: Vec::new() };
    store
        .commit_with_material(&db, vec![order_set()], &stale, &metadata, &kept)
        .await
        .expect("commit");
    assert_eq!(app.count("select count(*) from key_material").await, 1);

    // A second writer that loaded the same state loses the sequence: neither its event nor
    // the material it sealed is written.
    let losing = MaterialChanges { kept: vec![sealed_row(2)], destroyed: vec![first.id] };
    let lost = store.commit_with_material(&db, vec![order_set()], &stale, &metadata, &losing).await;
    assert!(matches!(lost, Err(AggregateError::AggregateConflict)), "{lost:?}");
    assert_eq!(app.count("select count(*) from events where aggregate_id = 'acme'").await, 1);
    assert_eq!(
        app.count("select count(*) from key_material").await,
        1,
        "the losing command's material was never written, and what it released is still there"
    );

    let current = store.load_aggregate("acme").await.expect("load");
    let destroyed = MaterialChanges { kept: Vec::new(), destroyed: vec![first.id] };
    store
        .commit_with_material(&db, vec![order_set()], &current, &metadata, &destroyed)
        .await
        .expect("commit");
    assert_eq!(app.count("select count(*) from key_material").await, 0, "destroyed with its event");
    app.finish().await;
}

/// Commands committing at once (on PostgreSQL, in groups of one statement) each get their own
/// answer: one that lost its sequences to an earlier commit is refused alone, with nothing of
/// it written, and every other one is committed with its material.
async fn commands_committing_together_each_get_their_own_answer(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = Database::connect(&app.database_url).await.expect("connect");
    let store =
        std::sync::Arc::new(SnapshottingStore::<_, Keyring>::new(EventRepository::new(&db)));
    let metadata = HashMap::new();
    let stale = store.load_aggregate("acme").await.expect("load");
    let nothing = MaterialChanges::default();
    store
        .commit_with_material(&db, vec![order_set()], &stale, &metadata, &nothing)
        .await
        .expect("commit");

    let mut commits = tokio::task::JoinSet::new();
    for round in 0..3 {
        for n in 0..20 {
            let (store, db, metadata) =
                (std::sync::Arc::clone(&store), db.clone(), metadata.clone());
            let org = format!("org{n:02}");
            commits.spawn(async move {
                let context = store.load_aggregate(&org).await.expect("load");
                let material = MaterialChanges {
                    kept: vec![sealed_row_of(&org, round)],
                    destroyed: Vec::new(),
                };
                let events = vec![order_set()];
                let committed =
                    store.commit_with_material(&db, events, &context, &metadata, &material).await;
                (org, committed.map(|c| c.events.len()))
            });
        }
        // The one that loaded `acme` before its first commit, among them.
        let (store, db, metadata) = (std::sync::Arc::clone(&store), db.clone(), metadata.clone());
        commits.spawn(async move {
            let stale = EventStoreAggregateContext {
                aggregate_id: "acme".to_owned(),
                aggregate: Keyring::default(),
                current_sequence: 0,
                current_snapshot: None,
            };
            let material =
                MaterialChanges { kept: vec![sealed_row_of("acme", round)], destroyed: Vec::new() };
            let committed = store
                .commit_with_material(&db, vec![order_set()], &stale, &metadata, &material)
                .await;
            ("acme".to_owned(), committed.map(|c| c.events.len()))
        });
        let mut answers = Vec::new();
        while let Some(answer) = commits.join_next().await {
            answers.push(answer.expect("a commit"));
        }
        for (org, answer) in &answers {
            if org == "acme" {
                assert!(matches!(answer, Err(AggregateError::AggregateConflict)), "{answer:?}");
            } else {
                assert!(matches!(answer, Ok(1)), "{org}: {answer:?}");
            }
        }
    }
    for n in 0..20 {
        let org = format!("org{n:02}");
        let events =
            app.count(&format!("select count(*) from events where aggregate_id = '{org}'")).await;
        assert_eq!(events, 3, "{org}: one event a round");
        let rows =
            app.count(&format!("select count(*) from key_material where org_id = '{org}'")).await;
        assert_eq!(rows, 3, "{org}: its material with each event");
    }
    assert_eq!(app.count("select count(*) from events where aggregate_id = 'acme'").await, 1);
    assert_eq!(
        app.count("select count(*) from key_material where org_id = 'acme'").await,
        0,
        "the refused commands' material was never written"
    );
    app.finish().await;
}

fn sealed_row_of(org: &str, version: u32) -> MaterialRow {
    MaterialRow { org: org.to_owned(), ..sealed_row(version + 1) }
}

fn order_set() -> KeyringEvent {
    KeyringEvent::ProviderOrderSet(ProviderOrderSet {
        providers: vec![ProviderId::Anthropic],
        at: chrono::Utc::now(),
    })
}

fn sealed_row(version: u32) -> MaterialRow {
    MaterialRow {
        id: uuid::Uuid::new_v4(),
        org: "acme".to_owned(),
        provider: "anthropic",
        key_id: 1,
        version,
        sealed: SealedKey {
            master_key_id: "k1".to_owned(),
            dek_nonce: vec![1; 12],
            wrapped_dek: vec![2; 48],
            key_nonce: vec![3; 12],
            ciphertext: vec![4; 64],
        },
    }
}
