//! A projection pipeline that panics is not lost with its task: the panic is said (and by
//! `/readyz`), the pipeline runs again, and once it completes a step the panic is cleared.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use keyledger_projections::{LoggedEvent, Projection, ProjectionError, Projector};
use keyledger_store::{Database, Tx};

/// How often the view ran, and what it applied.
#[derive(Debug, Default)]
struct Counts {
    runs: AtomicUsize,
    applied: AtomicUsize,
}

/// A view that panics the first time it is given events, and counts them afterwards.
#[derive(Debug)]
struct PanicsOnce(Arc<Counts>);

#[async_trait]
impl Projection for PanicsOnce {
    fn name(&self) -> &'static str {
        "panics_once"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["Keyring"]
    }

    async fn apply(&self, _tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        if self.0.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a view that cannot take this event");
        }
        self.0.applied.fetch_add(events.len(), Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_that_panics_is_said_and_runs_again() {
    let dir = std::env::temp_dir().join(format!("keyledger-supervision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let db = Database::connect(&url).await.expect("database");
    db.migrate().await.expect("migrations");
    db.execute(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         values ('Keyring', 'acme', 1, 'SomethingNew', '1.0', '{}', '{}')",
        &[],
    )
    .await
    .expect("an event");

    let view = Arc::new(Counts::default());
    let projector = Arc::new(Projector::new(db, vec![Arc::new(PanicsOnce(Arc::clone(&view)))]));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(Arc::clone(&projector).run(stopped));

    let mut said = None;
    for _ in 0..100 {
        said = projector.panicked();
        if said.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let said = said.expect("the panic is said");
    assert!(said.contains("panics_once") && said.contains("cannot take this event"), "{said}");

    for _ in 0..200 {
        if view.applied.load(Ordering::SeqCst) == 1 && projector.panicked().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(view.applied.load(Ordering::SeqCst), 1, "the pipeline ran again and applied it");
    assert_eq!(projector.panicked(), None, "a completed step clears the panic");

    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), running).await.expect("stops").expect("joins");
    let _ = std::fs::remove_dir_all(dir);
}
