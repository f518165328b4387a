//! An organization's history as an auditor reads it (`GET /v1/orgs/{org}/events`, NDJSON),
//! over a log of many organizations and several months. Writes a markdown table to
//! `bench/results/history.md`.
//!
//! `cargo run --release -p keyledger-bench --bin history -- --events 1000000`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{Months, TimeZone, Utc};
use clap::Parser;
use serde_json::json;

use keyledger_bench::{ms, on_backends, percentile, serve, SeedEvent};
use keyledger_domain::keyring::{KeyStored, PlanChanged};
use keyledger_domain::usage::{KeySource, ModelCallRecorded, UsageEvent};
use keyledger_domain::{KeyringEvent, PlanId, ProviderId};
use keyledger_store::Database;

/// The allocator the `keyledger` binary runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Model-call events to seed.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Organizations; the first makes a fifth of the calls, the others share the rest.
    #[arg(long, default_value_t = 1_000)]
    orgs: usize,
    /// Months the calls are spread over, from September 2026 on, in the order they were made.
    #[arg(long, default_value_t = 3)]
    months: u32,
    /// Requests per kind of organization.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// postgres, sqlite, or both.
    #[arg(long, default_value = "both")]
    backend: String,
    /// Where to write the results table.
    #[arg(long, default_value = "bench/results/history.md")]
    out: std::path::PathBuf,
}

/// What one kind of request measured: how many events each history held, the time to its
/// first line and to its last.
#[derive(Debug)]
struct Measured {
    what: String,
    events: usize,
    first_line: Vec<Duration>,
    whole: Vec<Duration>,
}

#[derive(Debug)]
struct Outcome {
    backend: &'static str,
    events: usize,
    seed: Duration,
    measured: Vec<Measured>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let outcomes = on_backends(&args.backend, |backend, url| run(backend, url, &args)).await;
    let report = report(&outcomes, &args);
    print!("{report}");
    std::fs::write(&args.out, report).expect("write the results");
}

async fn run(backend: &'static str, url: String, args: &Args) -> Outcome {
    let served = serve(&url, &[]).await;
    eprintln!("[{backend}] seeding {} events over {} months", args.events, args.months);
    let started = Instant::now();
    let (events, held) = seed(&served.state.db, args).await;
    let seed = started.elapsed();
    // A read of the history waits for the views to show the organization's latest events:
    // measured once they have caught up with the seeded log, as a reader would find them.
    eprintln!("[{backend}] waiting for the views");
    while served.state.projector.lag(1).await.expect("lag").events > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let big = "org0";
    let of = |org: &str| held.get(org).copied().unwrap_or(0);
    let history = |org: &str, after: i64| {
        let token = served
            .state
            .tokens
            .issue(org, keyledger_api::Role::Auditor, "bench", Duration::from_secs(3600))
            .expect("token");
        read_history(served.base.clone(), org.to_owned(), token, after)
    };
    let mut measured = Vec::new();

    eprintln!("[{backend}] small organizations");
    let mut small = Measured::named("one of the other organizations, whole history", of("org1"));
    for n in 0..args.samples {
        let org = format!("org{}", 1 + n * (args.orgs - 1) / args.samples);
        small.add(history(&org, 0).await, of(&org));
    }
    measured.push(small);

    eprintln!("[{backend}] an organization without history");
    let mut none = Measured::named("an organization without history", 0);
    for _ in 0..args.samples {
        none.add(history("nohistory", 0).await, 0);
    }
    measured.push(none);

    eprintln!("[{backend}] the big organization");
    let repeats = args.samples.div_ceil(10);
    let mut whole =
        Measured::named("the organization with a fifth of the calls, whole history", of(big));
    for _ in 0..repeats {
        whole.add(history(big, 0).await, of(big));
    }
    measured.push(whole);
    // From nine tenths of the log on: the last tenth of its history.
    let deep = (events as f64 * 0.9) as i64;
    let (_, _, from_deep) = history(big, deep).await;
    let mut tail =
        Measured::named("the same, after the position nine tenths into the log", from_deep);
    for _ in 0..args.samples {
        tail.add(history(big, deep).await, from_deep);
    }
    measured.push(tail);
    Outcome { backend, events, seed, measured }
}

impl Measured {
    fn named(what: &str, events: usize) -> Self {
        Self { what: what.to_owned(), events, first_line: Vec::new(), whole: Vec::new() }
    }

    /// One request's timings; its history must hold the events the seed gave it.
    fn add(&mut self, (first_line, whole, lines): (Duration, Duration, usize), expected: usize) {
        assert_eq!(
            lines, expected,
            "{}: the history holds every event of the organization",
            self.what
        );
        self.first_line.push(first_line);
        self.whole.push(whole);
    }
}

/// Reads `org`'s whole history after `after` as it streams: the time to its first line, to
/// its end, and its number of lines.
async fn read_history(
    base: String,
    org: String,
    token: String,
    after: i64,
) -> (Duration, Duration, usize) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut response = client
        .get(format!("{base}/v1/orgs/{org}/events?after={after}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    assert!(response.status().is_success(), "{org}: {}", response.status());
    let mut first_line = None;
    let mut lines = 0;
    while let Some(chunk) = response.chunk().await.expect("body") {
        if !chunk.is_empty() && first_line.is_none() {
            first_line = Some(started.elapsed());
        }
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let whole = started.elapsed();
    (first_line.unwrap_or(whole), whole, lines)
}

/// A log of `args.orgs` organizations, each with a plan change and a stored key, and
/// `args.events` model calls, a fifth of them `org0`'s and the rest round the others, made
/// month after month; each month has its partition on PostgreSQL. The number of events, and
/// how many each organization has.
async fn seed(db: &Database, args: &Args) -> (usize, HashMap<String, usize>) {
    let start = Utc.with_ymd_and_hms(2026, 9, 1, 9, 0, 0).single().expect("instant");
    if let Database::Postgres(pool) = db {
        let last = start + Months::new(args.months - 1);
        sqlx::query("select keyledger_create_log_months($1, $2)")
            .bind(start.date_naive())
            .bind(last.date_naive())
            .execute(pool)
            .await
            .expect("partitions");
    }
    let metadata = json!({"actor": "seed", "role": "owner", "request_id": "", "occurred_at": start.to_rfc3339()});
    let mut rows: Vec<SeedEvent> = Vec::with_capacity(10_000);
    let mut written = 0;
    for n in 0..args.orgs {
        let org = format!("org{n}");
        for (sequence, event) in [
            KeyringEvent::PlanChanged(PlanChanged {
                from: PlanId::starter(),
                to: PlanId::new("pro"),
                at: start,
            }),
            KeyringEvent::KeyStored(KeyStored {
                provider: ProviderId::Anthropic,
                key_id: 1,
                version: 1,
                material_id: None,
                fingerprint: None,
                masked: "sk-ant-••••abcd".to_owned(),
                hint: "abcd".to_owned(),
                description: None,
                default_model: None,
                endpoint: None,
                at: start,
            }),
        ]
        .into_iter()
        .enumerate()
        {
            let payload = serde_json::to_value(event).expect("json");
            let event_type = first_key(&payload);
            rows.push((
                "Keyring".to_owned(),
                org.clone(),
                sequence as i64 + 1,
                event_type,
                payload,
                metadata.clone(),
            ));
        }
    }
    let mut held: HashMap<String, usize> = (0..args.orgs).map(|n| (format!("org{n}"), 2)).collect();
    let mut sequences = HashMap::<String, i64>::new();
    let per_month = args.events.div_ceil(args.months as usize);
    for n in 0..args.events {
        // Every fifth call is org0's; the others go round the rest.
        let org = if n % 5 == 0 {
            "org0".to_owned()
        } else {
            format!("org{}", 1 + (n / 5 * 4 + n % 5 - 1) % (args.orgs - 1))
        };
        let at = start
            + Months::new((n / per_month) as u32)
            + chrono::Duration::seconds((n % per_month) as i64 % 86_400);
        let ledger = format!("{org}/{}", at.format("%Y-%m"));
        *held.entry(org.clone()).or_default() += 1;
        let sequence = sequences.entry(ledger.clone()).or_insert(0);
        *sequence += 1;
        let call = UsageEvent::ModelCallRecorded(ModelCallRecorded {
            org,
            request_id: format!("seed-{n}"),
            provider: ProviderId::Openai,
            model: "gpt-4o-mini".to_owned(),
            input_tokens: 100,
            output_tokens: 20,
            cost_usd: 0.0003,
            key_source: KeySource::Byok,
            key_version: None,
            at,
            capped: false,
        });
        let payload = serde_json::to_value(call).expect("json");
        let event_type = first_key(&payload);
        rows.push((
            "UsageLedger".to_owned(),
            ledger,
            *sequence,
            event_type,
            payload,
            metadata.clone(),
        ));
        if rows.len() >= 10_000 || n + 1 == args.events {
            keyledger_bench::insert_events(db, &rows).await;
            written += rows.len();
            rows.clear();
            if written % 200_000 < 10_000 {
                eprintln!("  seeded {written}");
            }
        }
    }
    if let Database::Postgres(pool) = db {
        sqlx::query("analyze events").execute(pool).await.expect("analyze");
    }
    (args.orgs * 2 + args.events, held)
}

fn first_key(payload: &serde_json::Value) -> String {
    payload.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default()
}

fn report(outcomes: &[Outcome], args: &Args) -> String {
    let mut out = String::from("# An organization's history\n\n");
    out.push_str(&format!(
        "`cargo run --release -p keyledger-bench --bin history -- --events {} --orgs {} --months {} --samples {}`, {} UTC, this 2-core machine, keyledger and the reader in one process.\n\n",
        args.events,
        args.orgs,
        args.months,
        args.samples,
        Utc::now().format("%Y-%m-%d %H:%M"),
    ));
    out.push_str("`GET /v1/orgs/{org}/events` as an auditor, the whole answer read as it streams (NDJSON, 1,000 events a page inside it). The log: every organization's plan change and stored key, then the model calls, one event each, made month after month; a fifth of them are `org0`'s, the rest go round the other organizations.\n\n");
    out.push_str("| backend | log events | seeded in | history read | events in it | requests | first line p50 / p99 ms | whole p50 / p99 ms | events/s |\n|---|---|---|---|---|---|---|---|---|\n");
    for outcome in outcomes {
        for m in &outcome.measured {
            let (mut first, mut whole) = (m.first_line.clone(), m.whole.clone());
            first.sort();
            whole.sort();
            let median = percentile(&whole, 50.0);
            let rate = if m.events == 0 {
                "—".to_owned()
            } else {
                format!("{:.0}", m.events as f64 / median.as_secs_f64())
            };
            out.push_str(&format!(
                "| {} | {} | {:.1} s | {} | {} | {} | {} / {} | {} / {} | {} |\n",
                outcome.backend,
                outcome.events,
                outcome.seed.as_secs_f64(),
                m.what,
                m.events,
                whole.len(),
                ms(percentile(&first, 50.0)),
                ms(percentile(&first, 99.0)),
                ms(median),
                ms(percentile(&whole, 99.0)),
                rate,
            ));
        }
    }
    out
}
