//! keyledger beside LiteLLM's proxy, in front of the same fake provider, in one run.
//!
//! LiteLLM is installed on demand into a virtualenv under `target/` (pinned, below) and started
//! as its proxy with one worker, a master key and no database, routing `gpt-4o-mini` to the fake with a fixed
//! key; keyledger serves one organization on `pro` with an OpenAI key of its own, on PostgreSQL,
//! and routes the same bare model name. Each phase runs the three targets one after another:
//!
//! - **1 connection**: sequential calls, p50 and p99; the fake called directly is the floor,
//!   and what a gateway adds is its figure minus the floor's;
//! - **16 connections**: the same under concurrency;
//! - **64 connections**: calls per second; keyledger's count waits until every call's usage
//!   record is committed (LiteLLM, without a database, commits none).
//!
//! Writes a markdown table to `bench/results/litellm.md`.
//!
//! `cargo run --release -p keyledger-bench --bin litellm -- --seconds 10`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use keyledger_bench::{drive, ms, percentile};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The LiteLLM release compared with.
const LITELLM: &str = "litellm[proxy]==1.108.0";

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of each concurrent phase, per target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Sequential calls of the 1-connection phase, per target.
    #[arg(long, default_value_t = 1_000)]
    calls: usize,
    /// Where LiteLLM's virtualenv is kept between runs.
    #[arg(long, default_value = "target/litellm-venv")]
    venv: PathBuf,
    #[arg(long, default_value = "bench/results/litellm.md")]
    out: PathBuf,
}

/// A chat completion as OpenAI answers one.
const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1767225600,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;

const KEY: &str = "sk-proj-benchlitellmkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";

/// LiteLLM's master key: it refuses to start without one, and callers present it, as callers
/// of keyledger present their tokens.
const MASTER_KEY: &str = "sk-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// One target: where its chat completions go and how they are authorized.
#[derive(Debug, Clone)]
struct Target {
    name: &'static str,
    url: String,
    bearer: Option<String>,
}

/// What one target measured.
#[derive(Debug, Default, Clone)]
struct Figures {
    one: (Duration, Duration),
    sixteen: (Duration, Duration),
    rate: f64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let litellm_bin = install(&args.venv);
    let fake = keyledger_bench::fake_provider(axum::Router::new().fallback(axum::routing::post(
        || async { ([("content-type", "application/json")], ANSWER) },
    )))
    .await;
    let proxy = LiteLlm::start(&litellm_bin, &fake).await;

    let outcomes = keyledger_bench::on_backends("postgres", |_, url| {
        let (fake, args, proxy) = (&fake, &args, &proxy);
        async move {
            let extra = [("KEYLEDGER_PROVIDER_OPENAI_BASE_URL", fake.clone())];
            let served = keyledger_bench::serve(&url, &extra).await;
            let service = setup(&served).await;
            let targets = [
                Target {
                    name: "the fake provider, directly",
                    url: format!("{fake}/v1/chat/completions"),
                    bearer: Some(KEY.to_owned()),
                },
                Target {
                    name: "keyledger",
                    url: format!("{}/v1/orgs/acme/chat/completions", served.base),
                    bearer: Some(service),
                },
                Target {
                    name: "LiteLLM",
                    url: format!("{}/v1/chat/completions", proxy.base),
                    bearer: Some(MASTER_KEY.to_owned()),
                },
            ];
            let mut figures = vec![Figures::default(); targets.len()];
            let client = reqwest::Client::builder().no_proxy().build().expect("client");
            for (target, figures) in targets.iter().zip(&mut figures) {
                eprintln!("{}: 1 connection", target.name);
                figures.one = sequential(&client, target, args.calls).await;
            }
            for (target, figures) in targets.iter().zip(&mut figures) {
                eprintln!("{}: 16 connections", target.name);
                let (mut latencies, _) = concurrent(&client, target, 16, args.seconds).await;
                latencies.sort();
                figures.sixteen = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
            }
            for (target, figures) in targets.iter().zip(&mut figures) {
                eprintln!("{}: 64 connections", target.name);
                let recorded_before = served.state.usage.recorded_total();
                let started = Instant::now();
                let (latencies, _) = concurrent(&client, target, 64, args.seconds).await;
                if target.name == "keyledger" {
                    let settled = served.state.usage.settle(Duration::from_secs(60)).await;
                    assert!(settled, "keyledger's usage records never committed");
                    let recorded = served.state.usage.recorded_total() - recorded_before;
                    assert_eq!(recorded, latencies.len() as u64, "every call recorded");
                }
                figures.rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
            }
            (targets.map(|t| t.name), figures)
        }
    })
    .await;
    drop(proxy);
    let (names, figures) = outcomes.into_iter().next().expect("one run");
    let report = report(&names, &figures, &args);
    println!("{report}");
    std::fs::write(&args.out, report).expect("results written");
}

/// LiteLLM's `litellm` command in the virtualenv at `venv`, installed there first if missing.
fn install(venv: &Path) -> PathBuf {
    let litellm = venv.join("bin/litellm");
    let marker = venv.join(format!(".installed-{LITELLM}"));
    if litellm.exists() && marker.exists() {
        return litellm;
    }
    eprintln!("installing {LITELLM} into {}", venv.display());
    let run = |command: &mut Command| {
        let status = command.status().expect("runs");
        assert!(status.success(), "{command:?} failed");
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(venv));
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", LITELLM]));
    std::fs::write(&marker, "").expect("marker");
    litellm
}

/// LiteLLM's proxy as a child process, stopped when dropped.
struct LiteLlm {
    child: Child,
    base: String,
    _config: TempConfig,
}

impl LiteLlm {
    async fn start(litellm: &Path, fake: &str) -> Self {
        let port = free_port();
        let config = TempConfig::write(&format!(
            "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      \
             api_base: {fake}/v1\n      api_key: {KEY}\nlitellm_settings:\n  telemetry: false\n"
        ));
        // No database: LiteLLM would take keyledger's DATABASE_URL for its own.
        let child = Command::new(litellm)
            .args(["--config"])
            .arg(config.path())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", "1"])
            .env_remove("DATABASE_URL")
            .env("LITELLM_MASTER_KEY", MASTER_KEY)
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_TELEMETRY", "False")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("LiteLLM starts");
        let base = format!("http://127.0.0.1:{port}");
        let ready = format!("{base}/health/liveliness");
        let deadline = Instant::now() + Duration::from_secs(120);
        let client = reqwest::Client::new();
        while !client.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "LiteLLM did not come up at {base}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Self { child, base, _config: config }
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A config file in the temp dir, removed when dropped.
struct TempConfig(PathBuf);

impl TempConfig {
    fn write(text: &str) -> Self {
        let name = format!("keyledger-litellm-{}.yaml", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("config written");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// acme on `pro` with an OpenAI key of its own; a service token for its calls.
async fn setup(served: &keyledger_bench::Served) -> String {
    let issue = |org: &str, role| {
        served.state.tokens.issue(org, role, "bench", Duration::from_secs(3600)).expect("token")
    };
    let client = reqwest::Client::new();
    let admin = issue("*", keyledger_api::Role::PlatformAdmin);
    let owner = issue("acme", keyledger_api::Role::Owner);
    let plan = client
        .put(format!("{}/v1/orgs/acme/plan", served.base))
        .bearer_auth(&admin)
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .expect("plan");
    assert!(plan.status().is_success(), "{}", plan.status());
    let stored = client
        .post(format!("{}/v1/orgs/acme/keys", served.base))
        .bearer_auth(&owner)
        .json(&json!({"provider": "openai", "key": KEY}))
        .send()
        .await
        .expect("store");
    assert!(stored.status().is_success(), "{}", stored.status());
    issue("acme", keyledger_api::Role::Service)
}

fn request(client: &reqwest::Client, target: &Target) -> reqwest::RequestBuilder {
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}]}"#;
    let request = client.post(&target.url).header("content-type", "application/json").body(body);
    match &target.bearer {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

async fn call(client: &reqwest::Client, target: &Target) {
    let answer = request(client, target).send().await.expect("call");
    let status = answer.status();
    let body = answer.bytes().await.expect("answer");
    assert!(status.is_success(), "{}: {status} {}", target.name, String::from_utf8_lossy(&body));
}

/// p50 and p99 of `count` calls one after another (after a warm-up).
async fn sequential(
    client: &reqwest::Client,
    target: &Target,
    count: usize,
) -> (Duration, Duration) {
    for _ in 0..20 {
        call(client, target).await;
    }
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        call(client, target).await;
        times.push(started.elapsed());
    }
    times.sort();
    (percentile(&times, 50.0), percentile(&times, 99.0))
}

/// Every call's latency over `seconds` of `callers` concurrent loops.
async fn concurrent(
    client: &reqwest::Client,
    target: &Target,
    callers: usize,
    seconds: u64,
) -> (Vec<Duration>, Duration) {
    let (client, target) = (Arc::new(client.clone()), Arc::new(target.clone()));
    drive(callers, seconds, move |_, _| {
        let (client, target) = (Arc::clone(&client), Arc::clone(&target));
        async move { call(&client, &target).await }
    })
    .await
}

fn report(names: &[&'static str; 3], figures: &[Figures], args: &Args) -> String {
    let floor = &figures[0];
    let added = |(a, b): (Duration, Duration), (fa, fb): (Duration, Duration)| {
        (a.saturating_sub(fa), b.saturating_sub(fb))
    };
    let mut out = format!(
        "# keyledger beside LiteLLM\n\n\
         `cargo run --release -p keyledger-bench --bin litellm -- --seconds {} --calls {}`, {} UTC, \
         this 2-core machine; {LITELLM} (one worker, a master key, no database) as a process of its own, \
         keyledger on PostgreSQL with the fake provider and the load in this process.\n\n\
         | target | 1 connection p50 / p99 ms | added p50 / p99 ms | 16 connections p50 / p99 ms | added p50 / p99 ms | calls/s at 64 connections |\n\
         |---|---|---|---|---|---|\n",
        args.seconds,
        args.calls,
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
    );
    for (name, f) in names.iter().zip(figures) {
        let one = added(f.one, floor.one);
        let sixteen = added(f.sixteen, floor.sixteen);
        out.push_str(&format!(
            "| {name} | {} / {} | {} / {} | {} / {} | {} / {} | {:.0} |\n",
            ms(f.one.0),
            ms(f.one.1),
            ms(one.0),
            ms(one.1),
            ms(f.sixteen.0),
            ms(f.sixteen.1),
            ms(sixteen.0),
            ms(sixteen.1),
            f.rate,
        ));
    }
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-6);
    let (k, l) = (&figures[1], &figures[2]);
    out.push_str(&format!(
        "\nLiteLLM adds {:.0}× keyledger's p50 at 1 connection and {:.0}× at 16; keyledger serves {:.0}× LiteLLM's calls/s at 64 connections, each of its calls' usage committed.\n",
        ratio(k.one.0.saturating_sub(floor.one.0), l.one.0.saturating_sub(floor.one.0)),
        ratio(k.sixteen.0.saturating_sub(floor.sixteen.0), l.sixteen.0.saturating_sub(floor.sixteen.0)),
        k.rate / l.rate.max(1e-6),
    ));
    out
}
