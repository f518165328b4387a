//! Usage ingestion: model calls made elsewhere, recorded through HTTP, durable when answered.
//!
//! - **single**: `POST /v1/orgs/{org}/usage`, one call per request, each caller waiting for
//!   its answer (given once the record is committed);
//! - **batch**: `POST /v1/orgs/{org}/usage/batch` with `--batch` calls per request, the same
//!   rules per call.
//!
//! Organizations are on `pro` with an OpenAI key of their own, so every call is a BYOK record
//! (no quota in the way); each caller cycles over organizations of its own. The run fails if
//! the recorder's count of committed records differs from the calls answered. Writes a
//! markdown table to `bench/results/usage.md`.
//!
//! `cargo run --release -p keyledger-bench --bin usage -- --seconds 10`

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};

use keyledger_bench::{ms, percentile};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// `postgres`, `sqlite` or `both`.
    #[arg(long, default_value = "postgres")]
    backend: String,
    /// Concurrent callers of single records.
    #[arg(long, default_value_t = 32)]
    single_callers: usize,
    /// Concurrent callers of batches, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    batch_callers: Vec<usize>,
    /// Calls per batch (1 to 1,000).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Organizations the callers spread over.
    #[arg(long, default_value_t = 256)]
    orgs: usize,
    #[arg(long, default_value = "bench/results/usage.md")]
    out: std::path::PathBuf,
}

/// What one phase measured: records per second and the latency of each request.
#[derive(Debug, Clone)]
struct Phase {
    name: String,
    callers: usize,
    records: u64,
    rate: f64,
    p50: Duration,
    p99: Duration,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!((1..=1000).contains(&args.batch), "--batch is 1 to 1,000");
    let outcomes = keyledger_bench::on_backends(&args.backend, |backend, url| {
        let args = &args;
        async move { (backend, run(&url, args).await) }
    })
    .await;
    let report = report(&args, &outcomes);
    println!("{report}");
    std::fs::write(&args.out, report).expect("write results");
}

async fn run(url: &str, args: &Args) -> Vec<Phase> {
    let served = keyledger_bench::serve(url, &[("KEYLEDGER_ACCESS_LOG", "off".to_owned())]).await;
    let (state, base) = (&served.state, served.base.clone());

    let client = reqwest::Client::new();
    let token = |org: &str, role| {
        state.tokens.issue(org, role, "bench", Duration::from_secs(3600)).expect("token")
    };
    let admin = token("*", keyledger_api::Role::PlatformAdmin);
    let service = Arc::new(token("*", keyledger_api::Role::Service));
    let orgs: Arc<Vec<String>> = Arc::new((0..args.orgs).map(|i| format!("org{i:04}")).collect());
    eprintln!("seeding {} organizations", orgs.len());
    for (i, org) in orgs.iter().enumerate() {
        let plan = client.put(format!("{base}/v1/orgs/{org}/plan")).bearer_auth(&admin);
        let answer = plan.json(&json!({"plan": "pro"})).send().await.expect("plan");
        assert!(answer.status().is_success());
        let owner = token(org, keyledger_api::Role::Owner);
        let key = format!("sk-proj-usagebench{i:05}{}", "k".repeat(40));
        let store = client.post(format!("{base}/v1/orgs/{org}/keys")).bearer_auth(&owner);
        let answer =
            store.json(&json!({"provider": "openai", "key": key})).send().await.expect("store");
        assert!(answer.status().is_success());
    }

    let mut phases = Vec::new();
    let recorded_before = state.usage.recorded_total();
    let callers = args.single_callers;
    eprintln!("single records: {callers} callers for {}s", args.seconds);
    let (c, b, o, s) = (client.clone(), base.clone(), Arc::clone(&orgs), Arc::clone(&service));
    let (latencies, elapsed) = keyledger_bench::drive(callers, args.seconds, move |caller, n| {
        let (client, base, orgs, service) = (c.clone(), b.clone(), Arc::clone(&o), Arc::clone(&s));
        async move {
            let org = &orgs[(caller + n as usize * callers) % orgs.len()];
            let answer = client
                .post(format!("{base}/v1/orgs/{org}/usage"))
                .bearer_auth(service.as_str())
                .json(&call(&format!("s-{caller}-{n}")))
                .send()
                .await
                .expect("record");
            assert_eq!(answer.status(), reqwest::StatusCode::CREATED, "a new record");
            1
        }
    })
    .await;
    phases.push(phase("single", callers, &latencies, elapsed, latencies.len() as u64));

    for &callers in &args.batch_callers {
        eprintln!("batches of {}: {callers} callers for {}s", args.batch, args.seconds);
        let size = args.batch;
        let (c, b, o, s) = (client.clone(), base.clone(), Arc::clone(&orgs), Arc::clone(&service));
        let (latencies, elapsed) =
            keyledger_bench::drive(callers, args.seconds, move |caller, n| {
                let (client, base, orgs, service) =
                    (c.clone(), b.clone(), Arc::clone(&o), Arc::clone(&s));
                async move {
                    let org = &orgs[(caller + n as usize * callers) % orgs.len()];
                    let calls: Vec<Value> =
                        (0..size).map(|i| call(&format!("b{callers}-{caller}-{n}-{i}"))).collect();
                    let answer = client
                        .post(format!("{base}/v1/orgs/{org}/usage/batch"))
                        .bearer_auth(service.as_str())
                        .json(&json!({"calls": calls}))
                        .send()
                        .await
                        .expect("batch");
                    assert!(answer.status().is_success(), "batch: {}", answer.status());
                    let body: Value = answer.json().await.expect("json");
                    assert_eq!(body["recorded"], size, "every call of the batch recorded: {body}");
                    size as u64
                }
            })
            .await;
        let records = latencies.len() as u64 * size as u64;
        phases.push(phase(&format!("batch of {size}"), callers, &latencies, elapsed, records));
    }
    let answered: u64 = phases.iter().map(|phase| phase.records).sum();
    assert_eq!(
        state.usage.recorded_total() - recorded_before,
        answered,
        "every answered record committed"
    );
    phases
}

fn call(request_id: &str) -> Value {
    json!({"request_id": request_id, "provider": "openai", "model": "gpt-4o-mini",
           "input_tokens": 1200, "output_tokens": 300})
}

fn phase(
    name: &str,
    callers: usize,
    latencies: &[Duration],
    elapsed: Duration,
    records: u64,
) -> Phase {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    Phase {
        name: name.to_owned(),
        callers,
        records,
        rate: records as f64 / elapsed.as_secs_f64(),
        p50: percentile(&sorted, 50.0),
        p99: percentile(&sorted, 99.0),
    }
}

fn report(args: &Args, outcomes: &[(&str, Vec<Phase>)]) -> String {
    let mut out = format!(
        "# Usage ingestion\n\n\
         `cargo run --release -p keyledger-bench --bin usage -- --seconds {} --backend {}`, {} UTC, \
         this 2-core machine, keyledger and the load in one process.\n\n\
         Calls made elsewhere, recorded through HTTP over {} organizations on `pro` with a key of\n\
         their own; each request is answered once its records are committed (the views follow\n\
         on their own). Records/s counts committed records (checked against the recorder's count).\n\n\
         | backend | requests | callers | records/s | p50 ms per request | p99 ms per request |\n\
         |---|---|---|---|---|---|\n",
        args.seconds,
        args.backend,
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        args.orgs,
    );
    for (backend, phases) in outcomes {
        for phase in phases {
            out.push_str(&format!(
                "| {backend} | {} | {} | {:.0} | {} | {} |\n",
                phase.name,
                phase.callers,
                phase.rate,
                ms(phase.p50),
                ms(phase.p99),
            ));
        }
    }
    out
}
