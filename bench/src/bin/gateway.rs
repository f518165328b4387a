//! Gateway benchmark, side by side in one run against one fake provider on loopback: the
//! latency keyledger adds to a model call routed by its model name (p50/p99 against calling the
//! fake directly), routed and pass-through gateway calls per second, key resolutions per second,
//! and usage recordings per second. Writes a markdown table to `bench/results/gateway.md`.
//!
//! `cargo run --release -p keyledger-bench --bin gateway -- --seconds 10`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use serde_json::json;

use keyledger_bench::{ms, percentile};
use keyledger_domain::resolution::resolve;
use keyledger_domain::usage::{KeySource, ModelCallRecorded, RecordModelCall};
use keyledger_domain::{OrgId, ProviderId};
use keyledger_infra::Actor;

/// The allocator the `keyledger` binary runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of each throughput phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Calls each connection makes in the latency phases.
    #[arg(long, default_value_t = 2_000)]
    calls: usize,
    /// Connections of the latency phases, each calling one call after another.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    latency_connections: Vec<usize>,
    /// Concurrent callers in the throughput phases.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// postgres, sqlite, or both.
    #[arg(long, default_value = "both")]
    backend: String,
    #[arg(long, default_value = "bench/results/gateway.md")]
    out: std::path::PathBuf,
}

const ORGS: usize = 50;
const ANSWER: &str = r#"{"object":"chat.completion","model":"gpt-4o-mini","choices":[{"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#;

/// What the fake lists for any GET: Anthropic's models, which the routing consults.
const LISTING: &str = r#"{"data":[{"type":"model","id":"claude-3-5-haiku-latest"},{"type":"model","id":"claude-sonnet-4"}]}"#;

/// p50, p90 and p99 of calls at one number of connections, straight to the fake and through
/// keyledger.
#[derive(Debug)]
struct Latency {
    connections: usize,
    direct: [Duration; 3],
    routed: [Duration; 3],
}

#[derive(Debug)]
struct Outcome {
    backend: &'static str,
    latencies: Vec<Latency>,
    routed: Throughput,
    pass_through: Throughput,
    resolutions: f64,
    recordings: f64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let fake = fake_provider().await;
    let outcomes = keyledger_bench::on_backends(&args.backend, |backend, url| {
        let args = &args;
        let fake = &fake;
        async move { run(backend, &url, fake, args).await }
    })
    .await;
    let report = report(&outcomes, &args);
    println!("{report}");
    std::fs::write(&args.out, report).expect("write results");
}

async fn fake_provider() -> String {
    let json = [("content-type", "application/json")];
    let app = axum::Router::new().fallback(
        axum::routing::post(move || async move { (json, ANSWER) })
            .get(move || async move { (json, LISTING) }),
    );
    keyledger_bench::fake_provider(app).await
}

async fn run(backend: &'static str, url: &str, fake: &str, args: &Args) -> Outcome {
    let extra = [
        ("KEYLEDGER_PROVIDER_OPENAI_BASE_URL", fake.to_owned()),
        ("KEYLEDGER_PROVIDER_ANTHROPIC_BASE_URL", fake.to_owned()),
    ];
    let served = keyledger_bench::serve(url, &extra).await;
    let (state, base) = (served.state.clone(), served.base.clone());

    // Every organization on pro with its own Anthropic and OpenAI keys, Anthropic first: a call
    // for `gpt-4o-mini` is routed past Anthropic (its cached model list lacks the name) to
    // OpenAI (whose family it is).
    let client = reqwest::Client::new();
    let admin = state
        .tokens
        .issue("*", keyledger_api::Role::PlatformAdmin, "bench", Duration::from_secs(3600))
        .expect("token");
    for org in 0..ORGS {
        let owner = state
            .tokens
            .issue(
                &format!("org{org}"),
                keyledger_api::Role::Owner,
                "bench",
                Duration::from_secs(3600),
            )
            .expect("token");
        client
            .put(format!("{base}/v1/orgs/org{org}/plan"))
            .bearer_auth(&admin)
            .json(&json!({"plan": "pro"}))
            .send()
            .await
            .expect("plan");
        for (provider, key) in [
            ("openai", format!("sk-proj-bench{org:04}{}", "k".repeat(40))),
            ("anthropic", format!("sk-ant-api03-bench{org:04}{}", "k".repeat(40))),
        ] {
            let stored = client
                .post(format!("{base}/v1/orgs/org{org}/keys"))
                .bearer_auth(&owner)
                .json(&json!({"provider": provider, "key": key}))
                .send()
                .await
                .expect("store");
            assert!(stored.status().is_success());
        }
        let ordered = client
            .put(format!("{base}/v1/orgs/org{org}/provider-order"))
            .bearer_auth(&owner)
            .json(&json!({"providers": ["anthropic", "openai"]}))
            .send()
            .await
            .expect("order");
        assert!(ordered.status().is_success());
    }
    let service = state
        .tokens
        .issue("*", keyledger_api::Role::Service, "bench", Duration::from_secs(3600))
        .expect("token");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();

    let direct_url = format!("{fake}/v1/chat/completions");
    let direct = {
        let (client, url, body) = (client.clone(), direct_url.clone(), body.clone());
        move |_| client.post(&url).header("content-type", "application/json").body(body.clone())
    };
    let routed = {
        let (client, base, service, body) =
            (client.clone(), base.clone(), service.clone(), body.clone());
        move |n| {
            client
                .post(format!("{base}/v1/orgs/org{}/chat/completions", n % ORGS))
                .bearer_auth(&service)
                .header("content-type", "application/json")
                .body(body.clone())
        }
    };
    // Warm: connections open, each organization's Keyring loaded and Anthropic's model list
    // fetched once (a cold load is a start-up cost, not what a call adds).
    let most = args.latency_connections.iter().copied().max().unwrap_or(1);
    latencies(most, ORGS, direct.clone()).await;
    latencies(most, ORGS, routed.clone()).await;
    let mut measured = Vec::new();
    for &connections in &args.latency_connections {
        eprintln!("[{backend}] latency: {connections} connections, {} calls each", args.calls);
        // Direct and routed in turns of a fifth each, so a slow spell of the machine falls
        // on both alike.
        let (mut direct_times, mut routed_times) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let calls = args.calls.div_ceil(5);
            direct_times.extend(latencies(connections, calls, direct.clone()).await);
            routed_times.extend(latencies(connections, calls, routed.clone()).await);
            assert!(state.usage.settle(Duration::from_secs(30)).await, "latency calls unrecorded");
        }
        measured.push(Latency {
            connections,
            direct: quantiles(direct_times),
            routed: quantiles(routed_times),
        });
    }

    eprintln!("[{backend}] routed throughput: {} callers for {}s", args.concurrency, args.seconds);
    let routed = throughput(
        &state,
        &client,
        &service,
        &body,
        args,
        |base, org| format!("{base}/v1/orgs/org{org}/chat/completions"),
        &base,
    )
    .await;
    eprintln!(
        "[{backend}] pass-through throughput: {} callers for {}s",
        args.concurrency, args.seconds
    );
    let pass_through = throughput(
        &state,
        &client,
        &service,
        &body,
        args,
        |base, org| format!("{base}/v1/orgs/org{org}/gateway/openai/v1/chat/completions"),
        &base,
    )
    .await;

    eprintln!("[{backend}] resolutions and recordings for {}s each", args.seconds);
    let shared = state.clone();
    let resolutions = rate(args.concurrency, args.seconds, move |n| {
        let state = shared.clone();
        async move {
            let org = OrgId::parse(&format!("org{}", n % ORGS)).expect("org");
            let keyring = state.keyrings.calls().current(&org).await.expect("load");
            if let keyledger_domain::resolution::Resolution::Byok(key) =
                resolve(&keyring, &state.keyrings.deps().plans, ProviderId::Openai, false)
            {
                state
                    .keyrings
                    .calls()
                    .open_for_call(&org, ProviderId::Openai, &key)
                    .await
                    .expect("open");
            }
        }
    })
    .await;
    let shared = state.clone();
    let recordings = rate(args.concurrency, args.seconds, move |n| {
        let state = shared.clone();
        async move {
            let org = OrgId::parse(&format!("rec{}", n % 500)).expect("org");
            let call = ModelCallRecorded {
                org: org.to_string(),
                request_id: format!(
                    "rec-{n}-{}",
                    Utc::now().timestamp_nanos_opt().unwrap_or_default()
                ),
                provider: ProviderId::Openai,
                model: "gpt-4o-mini".to_owned(),
                input_tokens: 12,
                output_tokens: 3,
                cost_usd: 0.00001,
                key_source: KeySource::Byok,
                key_version: Some(1),
                at: Utc::now(),
                capped: false,
            };
            let actor = Actor {
                sub: "bench".to_owned(),
                role: "service".to_owned(),
                request_id: String::new(),
            };
            state
                .usage
                .record(&org, RecordModelCall { call, limits: None }, &actor)
                .await
                .expect("recorded");
        }
    })
    .await;

    Outcome { backend, latencies: measured, routed, pass_through, resolutions, recordings }
}

/// Calls of a throughput phase: completed per second, and how many were turned away.
#[derive(Debug)]
struct Throughput {
    rate: f64,
    pushed_back: u64,
}

/// Model calls per second through `url` (of the base URL and an organization number), by
/// `args.concurrency` callers for `args.seconds`. A call counts once its usage record is
/// committed too: the writer must keep up, not leave a backlog behind the measured window.
/// A call turned away because the usage backlog is full (503) is not counted, and its caller
/// waits the `retry-after` it was given, as the providers' SDKs do.
async fn throughput(
    state: &keyledger_api::AppState,
    client: &reqwest::Client,
    service: &str,
    body: &str,
    args: &Args,
    url: fn(&str, usize) -> String,
    base: &str,
) -> Throughput {
    let recorded_before = state.usage.recorded_total();
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let pushed_back = Arc::new(AtomicU64::new(0));
    let deadline = started + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (client, base, service, body, done, pushed_back) = (
                client.clone(),
                base.to_owned(),
                service.to_owned(),
                body.to_owned(),
                done.clone(),
                pushed_back.clone(),
            );
            tokio::spawn(async move {
                let mut n = w;
                while Instant::now() < deadline {
                    let response = client
                        .post(url(&base, n % ORGS))
                        .bearer_auth(&service)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("call");
                    if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        pushed_back.fetch_add(1, Ordering::Relaxed);
                        let wait = response
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .unwrap_or(1);
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                        continue;
                    }
                    assert!(response.status().is_success(), "{}", response.status());
                    response.bytes().await.expect("answer");
                    done.fetch_add(1, Ordering::Relaxed);
                    // Each caller walks over the organizations rather than hammering one.
                    n += 7;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    assert!(state.usage.settle(Duration::from_secs(60)).await, "gateway calls unrecorded");
    let calls = done.load(Ordering::Relaxed);
    assert_eq!(state.usage.recorded_total() - recorded_before, calls, "every call recorded");
    Throughput {
        rate: calls as f64 / started.elapsed().as_secs_f64(),
        pushed_back: pushed_back.load(Ordering::Relaxed),
    }
}

/// The times of `calls` requests on each of `connections` connections, each connection's
/// requests one after another.
async fn latencies<R>(connections: usize, calls: usize, request: R) -> Vec<Duration>
where
    R: Fn(usize) -> reqwest::RequestBuilder + Clone + Send + 'static,
{
    let callers: Vec<_> = (0..connections)
        .map(|c| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(calls);
                for n in 0..calls {
                    let started = Instant::now();
                    let response = request(c + n * connections).send().await.expect("call");
                    assert!(response.status().is_success(), "{}", response.status());
                    response.bytes().await.expect("answer");
                    times.push(started.elapsed());
                }
                times
            })
        })
        .collect();
    let mut times = Vec::with_capacity(connections * calls);
    for caller in callers {
        times.extend(caller.await.expect("caller"));
    }
    times
}

/// p50, p90 and p99.
fn quantiles(mut times: Vec<Duration>) -> [Duration; 3] {
    times.sort();
    [percentile(&times, 50.0), percentile(&times, 90.0), percentile(&times, 99.0)]
}

/// Operations per second of `op`, run by `concurrency` tasks for `seconds`.
async fn rate<F, Fut>(concurrency: usize, seconds: u64, op: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = w;
                while Instant::now() < deadline {
                    op(n).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    n += concurrency;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

fn report(outcomes: &[Outcome], args: &Args) -> String {
    let mut out = String::from("# Gateway benchmark\n\n");
    let connections: Vec<String> =
        args.latency_connections.iter().map(ToString::to_string).collect();
    out.push_str(&format!(
        "Command: `cargo run --release -p keyledger-bench --bin gateway -- --seconds {} --calls {} --latency-connections {} --concurrency {}`  \n",
        args.seconds, args.calls, connections.join(","), args.concurrency
    ));
    out.push_str(&format!("Run: {} on this 2-core machine, keyledger, the fake provider and the load in one process.\n\n", Utc::now().format("%Y-%m-%d %H:%M UTC")));
    out.push_str("## Latency keyledger adds\n\n");
    out.push_str("| backend | connections | direct p50 / p90 / p99 (ms) | routed p50 / p90 / p99 (ms) | added p50 (ms) | added p99 (ms) |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for o in outcomes {
        for l in &o.latencies {
            let [d50, d90, d99] = l.direct;
            let [r50, r90, r99] = l.routed;
            out.push_str(&format!(
                "| {} | {} | {} / {} / {} | {} / {} / {} | {} | {} |\n",
                o.backend,
                l.connections,
                ms(d50),
                ms(d90),
                ms(d99),
                ms(r50),
                ms(r90),
                ms(r99),
                ms(r50.saturating_sub(d50)),
                ms(r99.saturating_sub(d99)),
            ));
        }
    }
    out.push_str(&format!("\n## Throughput, {} connections\n\n", args.concurrency));
    out.push_str("| backend | routed calls/s | pass-through calls/s | turned away (503), routed / pass-through | resolutions/s | usage recordings/s |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {} / {} | {:.0} | {:.0} |\n",
            o.backend,
            o.routed.rate,
            o.pass_through.rate,
            o.routed.pushed_back,
            o.pass_through.pushed_back,
            o.resolutions,
            o.recordings,
        ));
    }
    out.push_str(&format!(
        "\nA routed call: `POST /v1/orgs/{{org}}/chat/completions` for the bare model `gpt-4o-mini`, routed by the domain's rules past Anthropic (first in the organization's order; its model list, fetched once and cached, lacks the name) to OpenAI (whose family it is); then BYOK resolution (the organization's Keyring from this replica's cache, vouched for by the Keyring watch on PostgreSQL and checked against the log's head on SQLite; the key opened for that call only), forwarding, the answer streamed back, usage recorded. A pass-through call: `POST …/gateway/openai/v1/chat/completions`, the same without routing. Added latency: a percentile of routed calls minus the same percentile of calls straight to the fake at the same number of connections, the two measured in alternating turns. The caller does not wait for the usage record; calls/s counts until every call's record is committed. A call turned away because the usage backlog is full (503 with `retry-after`) is not counted, and its caller waits as told before the next. Usage recordings/s: `UsageRecorder::record`, each caller waiting for its commit, as `POST /usage` does. {ORGS} organizations on pro with Anthropic and OpenAI keys; usage recordings spread over 500 organizations.\n"
    ));
    out
}
