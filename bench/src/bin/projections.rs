//! Projection benchmark: rebuild rate over a seeded log, and catch-up lag while commands are
//! written at a steady rate. Writes a markdown table to `bench/results/projections.md`.
//!
//! `cargo run --release -p keyledger-bench --bin projections -- --events 1000000`

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use clap::Parser;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use keyledger_bench::{ms, percentile};
use keyledger_domain::keyring::{KeyRotated, KeyStored, KeyVerificationRecorded, PlanChanged};
use keyledger_domain::usage::{KeySource, ModelCallRecorded, RecordModelCall, UsageEvent};
use keyledger_domain::{KeyringEvent, OrgId, PlanId, ProviderId, VerificationOutcome};
use keyledger_infra::crypto::MasterKeyRing;
use keyledger_infra::{Actor, Config, Recorded};
use keyledger_projections::log::Fact;
use keyledger_projections::projector::BATCH;
use keyledger_projections::{Cursor, EventLog, Selection};
use keyledger_store::Database;

/// The allocator the `keyledger` binary runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Events to seed before the rebuild.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Commands per second during the lag measurement.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds of the lag measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// postgres, sqlite, or both.
    #[arg(long, default_value = "both")]
    backend: String,
    /// Where to write the results table.
    #[arg(long, default_value = "bench/results/projections.md")]
    out: std::path::PathBuf,
}

#[derive(Debug)]
struct Outcome {
    backend: &'static str,
    events: u64,
    seed: Duration,
    rebuild: Duration,
    /// Events replayed into memory, and how long it took.
    replayed: (u64, Duration),
    commands: usize,
    achieved_rate: f64,
    lag_p50: Duration,
    lag_p99: Duration,
    lag_max: Duration,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let outcomes = keyledger_bench::on_backends(&args.backend, |backend, url| {
        let args = &args;

        async move { run(backend, &url, args).await }
    })
    .await;
    let report = report(&outcomes, &args);
    println!("{report}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).expect("results dir");
    }
    std::fs::write(&args.out, report).expect("write results");
}

async fn run(backend: &'static str, url: &str, args: &Args) -> Outcome {
    let env: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", url.to_owned()),
        ("KEYLEDGER_MASTER_KEY", MasterKeyRing::generate_encoded().to_string()),
        ("KEYLEDGER_JWT_SECRET", "bench".to_owned()),
    ]);
    let config = Config::from_lookup(|name| env.get(name).cloned()).expect("config");
    let state = keyledger_api::build_state(config).await.expect("state");

    eprintln!("[{backend}] seeding {} events", args.events);
    let started = Instant::now();
    seed(&state.db, args.events).await;
    let seed_time = started.elapsed();

    eprintln!("[{backend}] rebuilding all projections");
    let started = Instant::now();
    let events = state.projector.rebuild(None).await.expect("rebuild");
    let rebuild = started.elapsed();
    eprintln!("[{backend}] {events} events in {:.2}s", rebuild.as_secs_f64());

    eprintln!("[{backend}] replaying the log into memory");
    let replayed = replay_into_memory(&state.db).await;
    eprintln!("[{backend}] {} events in {:.2}s", replayed.0, replayed.1.as_secs_f64());

    eprintln!("[{backend}] {} commands/s for {}s", args.rate, args.seconds);
    let _stop = keyledger_api::start_serving(&state);
    let (lags, commands, achieved_rate) =
        measure_lag(&state, args.rate, Duration::from_secs(args.seconds)).await;
    Outcome {
        backend,
        events,
        seed: seed_time,
        rebuild,
        replayed,
        commands,
        achieved_rate,
        lag_p50: percentile(&lags, 50.0),
        lag_p99: percentile(&lags, 99.0),
        lag_max: lags.last().copied().unwrap_or_default(),
    }
}

/// A log: per organization a plan change and a key stored, rotated and verified; everything
/// else model calls spread over 400 hours of the organizations' November ledgers, five models
/// and both key sources, so that every batch a projector reads touches every day (about 4,000
/// of the cockpit's daily sums per 10,000 calls: harder than a log written as calls happen).
async fn seed(db: &Database, total: usize) {
    const ORGS: usize = 1_000;
    let at = Utc.with_ymd_and_hms(2026, 11, 10, 9, 0, 0).single().expect("instant");
    let mut rows: Vec<keyledger_bench::SeedEvent> = Vec::with_capacity(10_000);
    let mut sequences: HashMap<String, i64> = HashMap::new();
    let mut written = 0;
    let metadata = |when: chrono::DateTime<Utc>| json!({"actor": "seed", "role": "owner", "request_id": "", "occurred_at": when.to_rfc3339()});
    for n in 0..total {
        let org = format!("org{}", n % ORGS);
        let round = n / ORGS;
        let (aggregate_type, aggregate_id, payload) = if round < 4 {
            let event = match round {
                0 => KeyringEvent::PlanChanged(PlanChanged {
                    from: PlanId::starter(),
                    to: PlanId::new("pro"),
                    at,
                }),
                1 => KeyringEvent::KeyStored(KeyStored {
                    provider: ProviderId::Anthropic,
                    key_id: 1,
                    version: 1,
                    material_id: None,
                    fingerprint: None,
                    masked: "sk-ant-••••abcd".to_owned(),
                    hint: "abcd".to_owned(),
                    description: Some("prod".to_owned()),
                    default_model: None,
                    endpoint: None,
                    at,
                }),
                2 => KeyringEvent::KeyRotated(KeyRotated {
                    provider: ProviderId::Anthropic,
                    key_id: 1,
                    version: 2,
                    material_id: keyledger_domain::keyring::MaterialId(Default::default()),
                    previous_material_id: None,
                    fingerprint: keyledger_domain::keyring::Fingerprint("fp".to_owned()),
                    masked: "sk-ant-••••wxyz".to_owned(),
                    hint: "wxyz".to_owned(),
                    at,
                }),
                _ => KeyringEvent::KeyVerified(KeyVerificationRecorded {
                    provider: ProviderId::Anthropic,
                    key_id: 1,
                    version: 2,
                    outcome: VerificationOutcome::Valid,
                    at,
                }),
            };
            ("Keyring", org.clone(), serde_json::to_value(event).expect("json"))
        } else {
            let call = UsageEvent::ModelCallRecorded(ModelCallRecorded {
                org: org.clone(),
                request_id: format!("seed-{n}"),
                provider: ProviderId::Openai,
                model: format!("model-{}", n % 5),
                input_tokens: 100,
                output_tokens: 20,
                cost_usd: 0.0003,
                key_source: if n % 3 == 0 { KeySource::Byok } else { KeySource::Platform },
                key_version: None,
                at: at + chrono::Duration::hours((n % 400) as i64),
                capped: false,
            });
            ("UsageLedger", format!("{org}/2026-11"), serde_json::to_value(call).expect("json"))
        };
        let sequence = sequences.entry(aggregate_id.clone()).or_insert(0);
        *sequence += 1;
        let event_type =
            payload.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default();
        rows.push((
            aggregate_type.to_owned(),
            aggregate_id,
            *sequence,
            event_type,
            payload,
            metadata(at),
        ));
        if rows.len() == 10_000 || n + 1 == total {
            keyledger_bench::insert_events(db, &rows).await;
            written += rows.len();
            rows.clear();
            if written % 200_000 == 0 {
                eprintln!("  seeded {written}");
            }
        }
    }
}

/// The whole log read in global order in the projector's batches, decoded, and folded into
/// memory: calls, tokens and cost per organization × model × day, and Keyring events per
/// organization. What a projector reaches with no table to write. The next batch is asked for
/// as soon as a batch's rows are in, before they are decoded: the database reads while this
/// process decodes and folds.
async fn replay_into_memory(db: &Database) -> (u64, Duration) {
    #[derive(Default)]
    struct Sums {
        calls: u64,
        tokens: u64,
        cost_usd: f64,
    }
    let log = EventLog::new(db.clone());
    let read = |log: EventLog, after: Cursor| {
        tokio::spawn(async move {
            log.order().read_after_of(after, BATCH, Selection::ALL).await.expect("read")
        })
    };
    let started = Instant::now();
    let mut daily: HashMap<(String, String, NaiveDate), Sums> = HashMap::new();
    let mut keyring_events: HashMap<String, u64> = HashMap::new();
    let mut events = 0u64;
    let mut next = Some(read(log.clone(), Cursor::default()));
    while let Some(reading) = next.take() {
        let rows = reading.await.expect("reader");
        let Some(last) = rows.events.last().map(|e| e.cursor()) else { break };
        if rows.full {
            next = Some(read(log.clone(), last));
        }
        let batch = keyledger_projections::Batch::from(rows);
        events += batch.events.len() as u64;
        for event in &batch.events {
            match &event.fact {
                Fact::Usage(usage) => {
                    for call in usage.calls() {
                        let key = (call.org.clone(), call.model.clone(), call.at.date_naive());
                        let sums = daily.entry(key).or_default();
                        sums.calls += 1;
                        sums.tokens = sums
                            .tokens
                            .saturating_add(call.input_tokens)
                            .saturating_add(call.output_tokens);
                        sums.cost_usd += call.cost_usd;
                    }
                }
                Fact::Keyring(_) => {
                    *keyring_events.entry(event.stored.aggregate_id.clone()).or_default() += 1;
                }
                Fact::Unknown => {}
            }
        }
    }
    let took = started.elapsed();
    let calls: u64 = daily.values().map(|s| s.calls).sum();
    let keyring: u64 = keyring_events.values().sum();
    assert_eq!(calls + keyring, events, "every event folded");
    (events, took)
}

/// Issues `rate` usage commands a second for `duration` and measures, for each, the time from
/// its commit to every projection that shows it having applied it.
async fn measure_lag(
    state: &keyledger_api::AppState,
    rate: u64,
    duration: Duration,
) -> (Vec<Duration>, usize, f64) {
    let (committed_tx, mut committed) = mpsc::unbounded_channel::<(Cursor, Instant)>();
    let projector = state.projector.clone();
    // The views that show a usage command; the others step over it when they next wake.
    let showing = projector.consumers_of("UsageLedger");
    let observer = tokio::spawn(async move {
        let mut pending: BTreeMap<Cursor, Vec<Instant>> = BTreeMap::new();
        let mut lags = Vec::new();
        let mut open = true;
        while open || !pending.is_empty() {
            while let Ok((cursor, at)) = committed.try_recv() {
                pending.entry(cursor).or_default().push(at);
            }
            if open && committed.is_closed() && committed.is_empty() {
                open = false;
            }
            let checkpoints = projector.checkpoints().await.expect("checkpoints");
            let slowest = checkpoints
                .iter()
                .filter(|(name, _)| showing.contains(&name.as_str()))
                .map(|(_, c)| *c)
                .min()
                .unwrap_or_default();
            let now = Instant::now();
            let done: Vec<Cursor> = pending.range(..=slowest).map(|(c, _)| *c).collect();
            for cursor in done {
                for at in pending.remove(&cursor).unwrap_or_default() {
                    lags.push(now.duration_since(at));
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lags
    });

    let permits = std::sync::Arc::new(Semaphore::new(64));
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut issued = 0usize;
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        ticker.tick().await;
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let (state, log, sender) = (state.clone(), state.log.clone(), committed_tx.clone());
        let n = issued;
        tasks.push(tokio::spawn(async move {
            let org = OrgId::parse(&format!("lag{}", n % 200)).expect("org");
            let call = RecordModelCall {
                call: ModelCallRecorded {
                    org: org.to_string(),
                    request_id: format!("lag-{n}"),
                    provider: ProviderId::Anthropic,
                    model: "claude".to_owned(),
                    input_tokens: 10,
                    output_tokens: 5,
                    cost_usd: 0.0001,
                    key_source: KeySource::Byok,
                    key_version: Some(1),
                    at: Utc::now(),
                    capped: false,
                },
                limits: None,
            };
            let actor = Actor {
                sub: "bench".to_owned(),
                role: "service".to_owned(),
                request_id: String::new(),
            };
            let recorded = state.usage.record(&org, call, &actor).await.expect("recorded");
            let committed_at = Instant::now();
            let Recorded::New { ledger_id, sequence, .. } = recorded else {
                panic!("request ids are unique")
            };
            let cursor = log
                .order()
                .cursor_of("UsageLedger", &ledger_id, sequence as i64)
                .await
                .expect("cursor")
                .expect("exists");
            let _ = sender.send((cursor, committed_at));
            drop(permit);
        }));
        issued += 1;
    }
    for task in tasks {
        task.await.expect("command");
    }
    let achieved = issued as f64 / started.elapsed().as_secs_f64();
    drop(committed_tx);
    let mut lags = observer.await.expect("observer");
    lags.sort();
    (lags, issued, achieved)
}

fn report(outcomes: &[Outcome], args: &Args) -> String {
    let mut out = String::from("# Projection benchmark\n\n");
    out.push_str(&format!(
        "Command: `cargo run --release -p keyledger-bench --bin projections -- --events {} --rate {} --seconds {}`  \n",
        args.events, args.rate, args.seconds
    ));
    out.push_str(&format!(
        "Run: {} on this 2-core machine.\n\n",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    ));
    out.push_str("| backend | events rebuilt | rebuild time | rebuild rate (events/s) | replay into memory (events/s) | commands issued | command rate (/s) | catch-up lag p50 (ms) | p99 (ms) | max (ms) |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} | {:.2} s | {:.0} | {:.0} | {} | {:.0} | {} | {} | {} |\n",
            o.backend,
            o.events,
            o.rebuild.as_secs_f64(),
            o.events as f64 / o.rebuild.as_secs_f64(),
            o.replayed.0 as f64 / o.replayed.1.as_secs_f64(),
            o.commands,
            o.achieved_rate,
            ms(o.lag_p50),
            ms(o.lag_p99),
            ms(o.lag_max),
        ));
    }
    out.push_str("\nRebuild: all six projections (keys, provider_order, org_status, org_directory, audit, usage) from position 0 over a log of ");
    out.push_str(
        "4 Keyring events per organization (1,000 organizations) and model calls for the rest, spread over 400 hours so that every batch touches every day. ",
    );
    out.push_str("Replay into memory: the same log read in global order in the projector's batches, decoded and folded into per-organization × model × day sums held in memory, no table written. ");
    out.push_str("Lag: time from a usage command's commit to every projection that shows it (the usage cockpit) having applied it, with the projector running in-process. ");
    out.push_str(&format!(
        "Seeding took {}.\n",
        outcomes
            .iter()
            .map(|o| format!("{:.0} s on {}", o.seed.as_secs_f64(), o.backend))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out
}
