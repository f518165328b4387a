//! Loading a usage ledger: from its snapshot plus the events after it, whatever the month's
//! length.
//!
//! For each size, one ledger is seeded straight into the log with that many one-call events
//! (what a month of calls recorded one at a time leaves) and a snapshot where the writer would
//! have left it at worst: the most events after it a snapshot interval allows (a batch's
//! grouped calls are always followed by a snapshot, so the events after one are single calls).
//! Then the ledger is loaded `--loads` times as the usage writer loads one it does not hold, and
//! checked to count every call. For the smaller sizes it is also replayed from its first event,
//! which is what loading would cost without snapshots.
//! Writes a markdown table to `bench/results/ledger.md`.
//!
//! `cargo run --release -p keyledger-bench --bin ledger -- --sizes 1000,100000,10000000`

use std::time::{Duration, Instant};

use clap::Parser;
use cqrs_es::EventStore;
use serde_json::json;

use keyledger_bench::{ms, percentile};
use keyledger_domain::usage::UsageLedger;
use keyledger_store::event_store::{EventRepository, SnapshottingStore, SNAPSHOT_EVERY};
use keyledger_store::{Arg, Database};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Events in each ledger measured.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,10000000")]
    sizes: Vec<u64>,
    /// Loads measured per ledger.
    #[arg(long, default_value_t = 1000)]
    loads: usize,
    /// `postgres`, `sqlite` or `both`.
    #[arg(long, default_value = "postgres")]
    backend: String,
    /// Ledgers up to this many events are also replayed from their first event.
    #[arg(long, default_value_t = 100_000)]
    replay_up_to: u64,
    /// Months of usage partitions the log holds before the measured month, on PostgreSQL (a
    /// load that does not name its month looks into each).
    #[arg(long, default_value_t = 12)]
    months_kept: u32,
    #[arg(long, default_value = "bench/results/ledger.md")]
    out: std::path::PathBuf,
}

/// Rows one seeding statement writes.
const SEED_CHUNK: u64 = 500_000;

#[derive(Debug)]
struct Measured {
    backend: &'static str,
    events: u64,
    p50: Duration,
    p99: Duration,
    replay: Option<Duration>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let started = chrono::Utc::now();
    let args_ref = &args;
    let outcomes = keyledger_bench::on_backends(&args.backend, |backend, url| async move {
        let db = Database::connect(&url).await.expect("database");
        db.migrate().await.expect("migrations");
        if db.is_postgres() && args_ref.months_kept > 0 {
            // The measured ledgers are of 2026-12; the months before it have partitions of
            // their own, as a year of history kept would.
            let first = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).expect("date")
                - chrono::Months::new(args_ref.months_kept);
            db.execute(
                &format!("select keyledger_create_log_months('{first}', '2026-12-01')"),
                &[],
            )
            .await
            .expect("past months' partitions");
        }
        let mut measured = Vec::new();
        for &size in &args_ref.sizes {
            measured.push(measure(&db, backend, size, args_ref).await);
        }
        measured
    })
    .await;
    let mut table = format!(
        "# Loading a usage ledger\n\n\
         `cargo run --release -p keyledger-bench --bin ledger -- --sizes {} --loads {} --backend {} --months-kept {}`, \
         {} UTC, this 2-core machine.\n\n\
         One organization's ledger for a month, seeded with that many one-call events, its \
         snapshot followed by {} of them (the most a snapshot interval leaves). On PostgreSQL \
         the log is partitioned by month for usage and holds partitions for the {} months \
         before the ledger's and those made ahead of today. Each load reads \
         the snapshot and the events after it and is checked to count every call. Replay: the \
         same ledger folded from its first event, as without snapshots.\n\n\
         | backend | events in the ledger | load p50 ms | load p99 ms | replay from the first event |\n\
         |---|---|---|---|---|\n",
        args.sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        args.loads,
        args.backend,
        args.months_kept,
        started.format("%Y-%m-%d %H:%M"),
        SNAPSHOT_EVERY - 1,
        args.months_kept,
    );
    for m in outcomes.into_iter().flatten() {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            m.backend,
            m.events,
            ms(m.p50),
            ms(m.p99),
            m.replay.map_or("—".to_owned(), |d| format!("{} ms", ms(d))),
        ));
    }
    println!("{table}");
    std::fs::write(&args.out, table).expect("results written");
}

async fn measure(db: &Database, backend: &'static str, size: u64, args: &Args) -> Measured {
    let tail = SNAPSHOT_EVERY as u64 - 1;
    let id = format!("bench{size}/2026-12");
    let before = size - tail;
    eprintln!("[{backend}] seeding {id}: {size} events");
    let seeding = Instant::now();
    seed(db, &id, 1, before).await;
    let snapshot = json!({"calls": before, "platform_calls": 0, "platform_cost_usd": 0.0});
    let cast = if db.is_postgres() { "::json" } else { "" };
    db.execute(
        &format!(
            "insert into snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
             values ('UsageLedger', $1, $2, $3, $4{cast})"
        ),
        &[
            Arg::Text(id.clone()),
            Arg::Int(i64::try_from(before).expect("fits")),
            Arg::Int(i64::try_from(before / SNAPSHOT_EVERY as u64).expect("fits")),
            Arg::Text(snapshot.to_string()),
        ],
    )
    .await
    .expect("snapshot");
    seed(db, &id, before + 1, tail).await;
    eprintln!("[{backend}] seeded in {:.1}s", seeding.elapsed().as_secs_f64());
    let expected = size;

    let store = SnapshottingStore::<_, UsageLedger>::new(EventRepository::new(db));
    let mut loads = Vec::with_capacity(args.loads);
    for _ in 0..args.loads {
        let start = Instant::now();
        let context = store.load_aggregate(&id).await.expect("loaded");
        loads.push(start.elapsed());
        let state = serde_json::to_value(&context.aggregate).expect("state");
        assert_eq!(state["calls"], expected, "the loaded ledger counts every call");
    }
    loads.sort();
    let replay = if size <= args.replay_up_to {
        let start = Instant::now();
        let replayed = store.replay_from_events(&id).await.expect("replayed");
        let elapsed = start.elapsed();
        let state = serde_json::to_value(&replayed).expect("state");
        assert_eq!(state["calls"], expected, "the replayed ledger counts every call");
        Some(elapsed)
    } else {
        None
    };
    Measured {
        backend,
        events: size,
        p50: percentile(&loads, 50.0),
        p99: percentile(&loads, 99.0),
        replay,
    }
}

/// Events `from..from + count` of ledger `id`, one call each, written by SQL in statements of
/// [`SEED_CHUNK`] rows.
async fn seed(db: &Database, id: &str, from: u64, count: u64) {
    let postgres = db.is_postgres();
    // On PostgreSQL each row names its log month, as keyledger's writer does, so it goes
    // straight to the month's partition.
    let (object, metadata, series, series_prefix, month) = if postgres {
        (
            "json_build_object",
            "'{}'::json",
            "generate_series($2::bigint, $3::bigint) i",
            "",
            ("log_month, ", "keyledger_log_month($1), "),
        )
    } else {
        (
            "json_object",
            "'{}'",
            "s",
            "with recursive s(i) as (select $2 union all select i + 1 from s where i < $3)",
            ("", ""),
        )
    };
    // Request ids unique in the organization: the ledger's id and the event's sequence.
    let sql = format!(
        "{series_prefix} insert into events ({}aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload, metadata) \
         select {}'UsageLedger', $1, i, 'ModelCallRecorded', '1.0', {object}('ModelCallRecorded', \
         {object}('org', 'bench', 'request_id', $1 || ':' || i, 'provider', 'openai', \
         'model', 'gpt-4o-mini', 'input_tokens', 100, 'output_tokens', 20, 'cost_usd', 0.0001, \
         'key_source', 'byok', 'key_version', 1, 'at', '2026-12-01T00:00:00Z')), {metadata} \
         from {series}",
        month.0,
        month.1
    );
    let mut start = from;
    let end = from + count;
    while start < end {
        let stop = (start + SEED_CHUNK).min(end);
        let range = [Arg::Text(id.to_owned()), Arg::Int(start as i64), Arg::Int(stop as i64 - 1)];
        db.execute(&sql, &range).await.unwrap_or_else(|e| panic!("seeding {id}: {e}"));
        start = stop;
    }
}
