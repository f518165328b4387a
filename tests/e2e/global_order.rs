//! The global order under concurrent writers: a catch-up reader sees every event exactly once,
//! in each aggregate's order, even when transactions commit in another order than they wrote.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use keyledger_projections::{Cursor, EventLog, ReadLimit, Selection};
use keyledger_store::Database;
use keyledger_tests::{on_both_backends, Backend, TestApp};

const WRITERS: usize = 8;
const COMMITS_PER_WRITER: i64 = 25;

on_both_backends!(
    a_catch_up_reader_sees_every_event_once_in_aggregate_order_under_concurrent_writers
);

async fn a_catch_up_reader_sees_every_event_once_in_aggregate_order_under_concurrent_writers(
    backend: Backend,
) {
    let app = TestApp::start(backend).await;
    let pool = keyledger_store::Database::connect(&app.database_url).await.expect("connect");
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for sequence in 1..=COMMITS_PER_WRITER {
                    // Hold the transaction open a random while after writing: positions are
                    // taken at insert, commits land in another order.
                    let delay = Duration::from_millis(
                        ((writer as u64 * 7 + sequence as u64 * 13) % 17) + 1,
                    );
                    write_one(&pool, &format!("writer-{writer}"), sequence, delay).await;
                }
            })
        })
        .collect();

    let log = EventLog::new(pool.clone());
    let mut cursor = Cursor::default();
    let mut seen: Vec<(String, i64, i64)> = Vec::new();
    let total = WRITERS as i64 * COMMITS_PER_WRITER;
    // On PostgreSQL the reader sees a commit only once every older transaction on the server
    // has ended (the xmin horizon is cluster-wide, and other tests hold transactions too), so
    // it is given time to see everything rather than stopped when the writers stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (seen.len() as i64) < total && tokio::time::Instant::now() < deadline {
        let batch = log
            .read_after_of(cursor, ReadLimit::events(7), Selection::ALL)
            .await
            .expect("read")
            .events;
        for event in &batch {
            assert!(event.cursor > cursor, "the reader never goes backwards");
            cursor = event.cursor;
            seen.push((
                event.stored.aggregate_id.clone(),
                event.stored.sequence,
                event.cursor.position,
            ));
        }
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    assert!(
        log.read_after_of(cursor, ReadLimit::events(7), Selection::ALL)
            .await
            .expect("read")
            .events
            .is_empty(),
        "nothing past the end"
    );

    assert_eq!(seen.len() as i64, total, "every event read exactly once");
    let distinct: HashSet<i64> = seen.iter().map(|(_, _, position)| *position).collect();
    assert_eq!(distinct.len() as i64, total, "no event read twice");
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (aggregate, sequence, _) in &seen {
        let previous = last.insert(aggregate, *sequence).unwrap_or(0);
        assert_eq!(*sequence, previous + 1, "{aggregate} read in its own order");
    }

    // Read by its key, page by page, an aggregate's events are those the global order gave
    // it, in the same order, and no one else's.
    for writer in 0..WRITERS {
        let aggregate = format!("writer-{writer}");
        let in_global_order: Vec<(i64, i64)> = seen
            .iter()
            .filter(|(a, _, _)| *a == aggregate)
            .map(|(_, sequence, position)| (*sequence, *position))
            .collect();
        let mut by_key: Vec<(i64, i64)> = Vec::new();
        loop {
            let after = by_key.last().map_or(0, |(sequence, _)| *sequence);
            let page =
                log.read_aggregate_after("OrderTest", &aggregate, after, 7).await.expect("read");
            assert!(page.len() <= 7, "a page holds at most its limit");
            if page.is_empty() {
                break;
            }
            for event in &page {
                assert_eq!(event.stored.aggregate_id, aggregate);
                by_key.push((event.stored.sequence, event.cursor.position));
            }
        }
        assert_eq!(by_key, in_global_order, "{aggregate} read by its key");
    }
    app.finish().await;
}

async fn write_one(pool: &Database, aggregate: &str, sequence: i64, hold: Duration) {
    let insert = "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                  values ('OrderTest', $1, $2, 'Happened', '1.0', '{}', '{}')";
    match pool {
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(&insert.replace("'{}', '{}'", "'{}'::json, '{}'::json"))
                .bind(aggregate)
                .bind(sequence)
                .execute(&mut *tx)
                .await
                .expect("insert");
            tokio::time::sleep(hold).await;
            tx.commit().await.expect("commit");
        }
        Database::Sqlite(pool) => {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(insert)
                .bind(aggregate)
                .bind(sequence)
                .execute(&mut *tx)
                .await
                .expect("insert");
            tokio::time::sleep(hold).await;
            tx.commit().await.expect("commit");
        }
    }
}

on_both_backends!(a_read_stops_at_its_bytes_of_json_and_the_first_event_always_comes);

/// Bytes of JSON in each event [`write_sized`] writes, about (PostgreSQL spaces its text).
const EVENT_JSON: i64 = 1_000;

async fn a_read_stops_at_its_bytes_of_json_and_the_first_event_always_comes(backend: Backend) {
    let app = TestApp::start(backend).await;
    let pool = keyledger_store::Database::connect(&app.database_url).await.expect("connect");
    let total = 10;
    for sequence in 1..=total {
        write_sized(&pool, "sized", sequence).await;
    }
    let log = EventLog::new(pool.clone());
    // On PostgreSQL other tests' transactions may hold the horizon back for a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let everything = ReadLimit::events(100);
    let settled = || async {
        log.read_after_of(Cursor::default(), everything, Selection::ALL).await.expect("read")
    };
    while (settled().await.events.len() as i64) < total {
        assert!(tokio::time::Instant::now() < deadline, "the writes settle");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!settled().await.full, "a read that reached the end of the log says so");

    // Under two and a half events' worth of JSON: the third crosses the bound and is the last.
    let limit = ReadLimit { events: 100, json_bytes: EVENT_JSON * 5 / 2 };
    let batch = log.read_after_of(Cursor::default(), limit, Selection::ALL).await.expect("read");
    assert_eq!(batch.events.len(), 3, "the read ends with the event that crosses the bound");
    assert!(batch.full, "a read cut short says more may wait");

    // An event larger than the bound still comes, alone: a reader always moves on.
    let tiny = ReadLimit { events: 100, json_bytes: 10 };
    let one = log.read_after_of(Cursor::default(), tiny, Selection::ALL).await.expect("read");
    assert_eq!(one.events.len(), 1);
    assert!(one.full);

    // Read to the end under the bound: every event once, in order, and the last read says the
    // log ended rather than the bound.
    let mut cursor = Cursor::default();
    let mut sequences = Vec::new();
    loop {
        let batch = log.read_after_of(cursor, limit, Selection::ALL).await.expect("read");
        sequences.extend(batch.events.iter().map(|e| e.stored.sequence));
        let Some(last) = batch.events.last() else { break };
        cursor = last.cursor;
        if !batch.full {
            break;
        }
    }
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>(), "every event read once, in order");
    assert!(log
        .read_after_of(cursor, limit, Selection::ALL)
        .await
        .expect("read")
        .events
        .is_empty());

    // JSON a reader does not ask for is not read, so it does not count against the bound.
    let others = log
        .read_after_of(Cursor::default(), limit, Selection::json_of(&["SomeOtherType"]))
        .await
        .expect("read");
    assert_eq!(others.events.len() as i64, total);
    assert!(!others.full);

    // A reader that never asks who caused an event or when reads no metadata, and the same
    // events and payloads.
    let without_metadata = Selection { without_metadata: true, ..Selection::ALL };
    let bare = log.read_after_of(Cursor::default(), everything, without_metadata).await;
    let (bare, full) = (bare.expect("read").events, settled().await.events);
    assert_eq!(bare.len(), full.len());
    for (bare, full) in bare.iter().zip(&full) {
        assert_eq!(full.actor(), "alice");
        assert_eq!((bare.cursor, &bare.stored.payload), (full.cursor, &full.stored.payload));
        assert_eq!((bare.stored.metadata.as_str(), bare.actor()), ("null", "system"));
    }
    app.finish().await;
}

/// Writes an event of `aggregate` whose payload holds about [`EVENT_JSON`] bytes, caused by
/// `alice`.
async fn write_sized(pool: &Database, aggregate: &str, sequence: i64) {
    let padding = "x".repeat(usize::try_from(EVENT_JSON).expect("size") - 12);
    let payload = format!(r#"{{"padding":"{padding}"}}"#);
    let metadata = r#"{"actor":"alice"}"#;
    let insert = "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                  values ('OrderTest', $1, $2, 'Happened', '1.0', $3, $4)";
    match pool {
        Database::Postgres(pool) => {
            sqlx::query(&insert.replace("$3, $4", "$3::json, $4::json"))
                .bind(aggregate)
                .bind(sequence)
                .bind(payload)
                .bind(metadata)
                .execute(pool)
                .await
                .expect("insert");
        }
        Database::Sqlite(pool) => {
            sqlx::query(insert)
                .bind(aggregate)
                .bind(sequence)
                .bind(payload)
                .bind(metadata)
                .execute(pool)
                .await
                .expect("insert");
        }
    }
}
