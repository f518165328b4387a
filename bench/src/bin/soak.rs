//! Memory over a long run: the `keyledger` binary, a process of its own, takes model calls at a
//! steady rate spread over many organizations, and its resident set size is sampled from
//! `/proc` as it goes. Flat means the caches are bounded and nothing else grows with time.
//!
//! Every organization is on `pro` with an OpenAI key of its own; the calls go round all of
//! them (`POST …/gateway/openai/v1/chat/completions` to a fake provider in this process), so
//! every organization's Keyring and usage ledger is in use throughout. Writes a markdown table
//! to `bench/results/soak.md`.
//!
//! `cargo build --release -p keyledger-api --bin keyledger`, then
//! `cargo run --release -p keyledger-bench --bin soak -- --minutes 30 --rate 2000 --orgs 10000`

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use secrecy::SecretString;
use serde_json::json;

use keyledger_api::{Role, TokenKeys};
use keyledger_infra::crypto::MasterKeyRing;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Minutes of calls at the steady rate.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Model calls per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Organizations the calls go round.
    #[arg(long, default_value_t = 10_000)]
    orgs: usize,
    /// Seconds between samples of the process's memory.
    #[arg(long, default_value_t = 30)]
    sample_seconds: u64,
    /// The first minutes are warm-up: every organization loaded, pools and buffers grown.
    #[arg(long, default_value_t = 3)]
    warm_up_minutes: u64,
    /// `postgres` or `sqlite`.
    #[arg(long, default_value = "postgres")]
    backend: String,
    /// The binary under test.
    #[arg(long, default_value = "target/release/keyledger")]
    binary: std::path::PathBuf,
    #[arg(long, default_value = "bench/results/soak.md")]
    out: std::path::PathBuf,
}

const ANSWER: &str = r#"{"object":"chat.completion","model":"gpt-4o-mini","choices":[{"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#;
const SECRET: &str = "soak-benchmark-shared-secret-of-some-length";
/// Callers at once; each keeps to its share of the rate.
const CALLERS: u64 = 64;

/// One look at the process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    /// Of it, transparent huge pages (`AnonHugePages`): 2 MiB resident for any page in use.
    huge_kib: u64,
    /// The process's threads: a heap the allocator keeps per thread lives as long as it.
    threads: u64,
    calls: u64,
    failed: u64,
    /// Model calls answered but not yet recorded (`keyledger_usage_backlog`): each holds its
    /// record in memory until the writer commits it.
    backlog: u64,
    /// Events the furthest-behind view has yet to apply (`keyledger_projection_lag_events`).
    lag: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(args.binary.exists(), "{} is missing: build it first", args.binary.display());
    let fake = fake_provider().await;
    let outcomes = keyledger_bench::on_backends(&args.backend, |backend, url| {
        let (args, fake) = (&args, &fake);
        async move { (backend, run(&url, fake, args).await) }
    })
    .await;
    let report = report(&args, &outcomes);
    println!("{report}");
    std::fs::write(&args.out, report).expect("write results");
}

async fn fake_provider() -> String {
    let json = [("content-type", "application/json")];
    let app =
        axum::Router::new().fallback(axum::routing::post(move || async move { (json, ANSWER) }));
    keyledger_bench::fake_provider(app).await
}

/// The binary, serving on a free loopback port.
fn start(binary: &std::path::Path, url: &str, fake: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let env: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", url.to_owned()),
        ("KEYLEDGER_MASTER_KEY", MasterKeyRing::generate_encoded().to_string()),
        ("KEYLEDGER_JWT_SECRET", SECRET.to_owned()),
        ("KEYLEDGER_LISTEN", format!("127.0.0.1:{port}")),
        ("KEYLEDGER_PROVIDER_OPENAI_BASE_URL", fake.to_owned()),
        ("KEYLEDGER_ACCESS_LOG", "off".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ]);
    // The allocator's own settings (`MIMALLOC_PURGE_DELAY=0`, …) reach the binary, so a run can
    // tell memory in use from memory the allocator keeps.
    let allocator = std::env::vars().filter(|(name, _)| name.starts_with("MIMALLOC_"));
    let child = Command::new(binary)
        .arg("serve")
        .env_clear()
        .envs(env)
        .envs(allocator)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the binary");
    (child, format!("http://127.0.0.1:{port}"))
}

/// A number from `/proc/PID/status` (`VmRSS:` in KiB, `Threads:`), 0 once the process is gone.
fn status_field(pid: u32, field: &str) -> u64 {
    proc_field(&format!("/proc/{pid}/status"), field)
}

/// The process's transparent huge pages in KiB (`AnonHugePages:` of `/proc/PID/smaps_rollup`).
fn huge_pages_kib(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/smaps_rollup"), "AnonHugePages:")
}

/// The number after `field` in a `/proc` file of `name: value [kB]` lines, 0 if none.
fn proc_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix(field)?.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

async fn run(url: &str, fake: &str, args: &Args) -> Vec<Sample> {
    let (mut child, base) = start(&args.binary, url, fake);
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("client");
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tokens = TokenKeys::new(&SecretString::from(SECRET.to_owned()));
    let token = |org: &str, role| {
        tokens.issue(org, role, "soak", Duration::from_secs(86_400)).expect("token")
    };
    let admin = token("*", Role::PlatformAdmin);
    let service = Arc::new(token("*", Role::Service));

    eprintln!("seeding {} organizations", args.orgs);
    let next = Arc::new(AtomicU64::new(0));
    let seeders: Vec<_> = (0..16)
        .map(|_| {
            let (client, base, admin, next) =
                (client.clone(), base.clone(), admin.clone(), Arc::clone(&next));
            let (orgs, tokens) =
                (args.orgs as u64, TokenKeys::new(&SecretString::from(SECRET.to_owned())));
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= orgs {
                        return;
                    }
                    let org = format!("org{n:05}");
                    let owner = tokens
                        .issue(&org, Role::Owner, "soak", Duration::from_secs(3600))
                        .expect("token");
                    let plan = client.put(format!("{base}/v1/orgs/{org}/plan")).bearer_auth(&admin);
                    let answer = plan.json(&json!({"plan": "pro"})).send().await.expect("plan");
                    assert!(answer.status().is_success(), "plan: {}", answer.status());
                    let key = format!("sk-proj-soak{n:06}{}", "k".repeat(40));
                    let store =
                        client.post(format!("{base}/v1/orgs/{org}/keys")).bearer_auth(&owner);
                    let body = json!({"provider": "openai", "key": key});
                    let answer = store.json(&body).send().await.expect("store");
                    assert!(answer.status().is_success(), "store: {}", answer.status());
                }
            })
        })
        .collect();
    for seeder in seeders {
        seeder.await.expect("seeder");
    }

    let pid = child.id();
    eprintln!("calls: {}/s over {} organizations for {} min", args.rate, args.orgs, args.minutes);
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let until = started + Duration::from_secs(args.minutes * 60);
    let interval = Duration::from_secs_f64(CALLERS as f64 / args.rate as f64);
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (client, base, service, body) =
                (client.clone(), base.clone(), Arc::clone(&service), body.clone());
            let (calls, failed, orgs) = (Arc::clone(&calls), Arc::clone(&failed), args.orgs as u64);
            tokio::spawn(async move {
                // Each caller's calls fall on its own ticks, spread over the interval.
                let first = tokio::time::Instant::from_std(started)
                    + interval.mul_f64(caller as f64 / CALLERS as f64);
                let mut ticks = tokio::time::interval_at(first, interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = caller;
                while Instant::now() < until {
                    ticks.tick().await;
                    let org = format!("org{:05}", n % orgs);
                    n += CALLERS;
                    let sent = client
                        .post(format!("{base}/v1/orgs/{org}/gateway/openai/v1/chat/completions"))
                        .bearer_auth(service.as_str())
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(answer) if answer.status().is_success() => {
                            let _ = answer.bytes().await;
                            calls.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let mut samples = Vec::new();
    let mut next_sample = started;
    while Instant::now() < until {
        next_sample += Duration::from_secs(args.sample_seconds);
        tokio::time::sleep_until(tokio::time::Instant::from_std(next_sample.min(until))).await;
        let gauges = gauges(&client, &base).await;
        let gauge = |name: &str| gauges.get(name).copied().unwrap_or(0.0).max(0.0) as u64;
        let sample = Sample {
            backlog: gauge("keyledger_usage_backlog"),
            lag: gauge("keyledger_projection_lag_events"),
            at: started.elapsed(),
            rss_kib: status_field(pid, "VmRSS:"),
            huge_kib: huge_pages_kib(pid),
            threads: status_field(pid, "Threads:"),
            calls: calls.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
        };
        eprintln!(
            "{:>5.0}s rss {:>7} KiB huge {:>6} KiB threads {} backlog {} lag {} calls {} failed {}",
            sample.at.as_secs_f64(),
            sample.rss_kib,
            sample.huge_kib,
            sample.threads,
            sample.backlog,
            sample.lag,
            sample.calls,
            sample.failed
        );
        samples.push(sample);
    }
    for caller in callers {
        let _ = caller.await;
    }
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    samples
}

/// The process's gauges from `GET /metrics`, empty when it does not answer.
async fn gauges(client: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let Ok(answer) = client.get(format!("{base}/metrics")).send().await else {
        return HashMap::new();
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn report(args: &Args, outcomes: &[(&str, Vec<Sample>)]) -> String {
    let mut out = format!(
        "# Memory over a long run\n\n\
         `cargo run --release -p keyledger-bench --bin soak -- --minutes {} --rate {} --orgs {} --backend {}`, \
         {} UTC, this 2-core machine.\n\n\
         The `keyledger` binary as a process of its own (access log off, default \
         `KEYLEDGER_CACHE_ORGS`), its resident set size read from `/proc` every {} s while \
         {} callers send {} model calls a second round {} organizations (each on `pro` with an \
         OpenAI key of its own) to a fake provider. The first {} minutes are warm-up; the \
         figures after it are the steady state.\n\n\
         | backend | calls answered | calls/s | failed | RSS after warm-up | RSS min | RSS max | RSS mean | around the mean | RSS at the end | spread (max − min) / min |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        args.minutes,
        args.rate,
        args.orgs,
        args.backend,
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        args.sample_seconds,
        CALLERS,
        args.rate,
        args.orgs,
        args.warm_up_minutes,
    );
    let warm = Duration::from_secs(args.warm_up_minutes * 60);
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    for (backend, samples) in outcomes {
        let steady: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm).collect();
        let (Some(first), Some(last)) = (steady.first(), samples.last()) else {
            continue;
        };
        let min = steady.iter().map(|s| s.rss_kib).min().unwrap_or(0);
        let max = steady.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        // Flat is judged as within ± 10 % of the mean, so the report gives both sides of it.
        let mean = steady.iter().map(|s| s.rss_kib as f64).sum::<f64>() / steady.len() as f64;
        let off = |kib: u64| (kib as f64 - mean) * 100.0 / mean;
        out.push_str(&format!(
            "| {backend} | {} | {:.0} | {} | {} | {} | {} | {} | {:+.1} % / {:+.1} % | {} | {:.1} % |\n",
            last.calls,
            last.calls as f64 / last.at.as_secs_f64(),
            last.failed,
            mib(first.rss_kib),
            mib(min),
            mib(max),
            mib(mean as u64),
            off(max),
            off(min),
            mib(last.rss_kib),
            (max - min) as f64 * 100.0 / min.max(1) as f64,
        ));
    }
    for (backend, samples) in outcomes {
        out.push_str(&format!(
            "\n## {backend}: every sample\n\n| s | RSS | of it huge pages | threads | usage backlog | view lag | calls | failed |\n|---|---|---|---|---|---|---|---|\n"
        ));
        for sample in samples {
            out.push_str(&format!(
                "| {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
                sample.at.as_secs_f64(),
                mib(sample.rss_kib),
                mib(sample.huge_kib),
                sample.threads,
                sample.backlog,
                sample.lag,
                sample.calls,
                sample.failed
            ));
        }
    }
    out
}
