//! Key material comes and goes in the transaction of the events that name it: a command that
//! does not commit leaves no material behind, and released material is gone when its event is
//! there.

use std::collections::HashMap;

use cqrs_es::{AggregateError, EventStore};
use keyledger_domain::keyring::ProviderOrderSet;
use keyledger_domain::{Keyring, KeyringEvent, ProviderId};
use keyledger_store::event_store::{EventRepository, SnapshottingStore};
use keyledger_store::material::{MaterialChanges, MaterialRow, SealedKey};
use keyledger_store::Database;
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(material_is_written_and_destroyed_with_its_events_or_not_at_all);

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
