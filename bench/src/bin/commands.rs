//! Durable key commands per second on PostgreSQL, side by side in one run:
//!
//! - **keyledger**: rotate, rotate, remove, store, in that cycle, through HTTP with a token per
//!   organization, each answered once committed (events and sealed material in one
//!   transaction) and past the replica barrier; the views follow, and reads wait for them
//!   (read-your-writes): the phase reports how long after its end they showed every command,
//!   and a last phase reads the masked keys;
//! - **stock cqrs-es**: the same Keyring aggregate and the same commands, already prepared
//!   (no sealing, no material table), executed by `CqrsFramework` over
//!   `PostgresEventRepository` on tables of its own: the path a cqrs-es service takes when it
//!   adds nothing.
//!
//! Each caller owns its organizations, so no command waits on another's. Writes a markdown
//! table to `bench/results/commands.md`.
//!
//! `cargo run --release -p keyledger-bench --bin commands -- --seconds 10`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::CqrsFramework;
use postgres_es::PostgresEventRepository;
use secrecy::SecretString;
use serde_json::json;

use keyledger_bench::{ms, percentile};
use keyledger_domain::keyring::{MaterialId, Prepared, PreparedCommand, RotateKey, StoreKey};
use keyledger_domain::plan::PlanId;
use keyledger_domain::{ApiKey, Keyring, KeyringCommand, KeyringContext, OrgId, ProviderId};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent callers, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,32")]
    callers: Vec<usize>,
    #[arg(long, default_value = "bench/results/commands.md")]
    out: std::path::PathBuf,
}

/// Organizations each caller cycles through.
const ORGS_PER_CALLER: usize = 8;

/// What one phase measured.
#[derive(Debug, Clone, Copy)]
struct Phase {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// keyledger: how long after the phase's last answer the views showed every command.
    views_behind: Duration,
}

/// A command of the cycle: rotate, rotate, remove, store.
#[derive(Debug, Clone, Copy)]
enum Step {
    Rotate,
    Remove,
    Store,
}

fn step(n: u64) -> Step {
    match n % 4 {
        0 | 1 => Step::Rotate,
        2 => Step::Remove,
        _ => Step::Store,
    }
}

fn key(n: u64, caller: usize) -> String {
    format!("sk-proj-bench{caller:03}x{n:09}{}", "k".repeat(40))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let most = args.callers.iter().copied().max().unwrap_or(1);
    let outcomes = keyledger_bench::on_backends("postgres", |_, url| {
        let args = &args;
        async move { run(&url, most, args).await }
    })
    .await;
    let (ours, stock, reads) = outcomes.into_iter().next().expect("postgres ran");
    let report = report(&args, &ours, &stock, &reads);
    println!("{report}");
    std::fs::write(&args.out, report).expect("write results");
}

async fn run(url: &str, most: usize, args: &Args) -> (Vec<Phase>, Vec<Phase>, Phase) {
    // A line per request would measure the terminal.
    let served = keyledger_bench::serve(url, &[("KEYLEDGER_ACCESS_LOG", "off".to_owned())]).await;
    let (state, base) = (&served.state, served.base.clone());

    let client = reqwest::Client::new();
    let token = |org: &str, role| {
        state.tokens.issue(org, role, "bench", Duration::from_secs(3600)).expect("token")
    };
    let admin = token("*", keyledger_api::Role::PlatformAdmin);
    let orgs: Vec<(String, String)> = (0..most * ORGS_PER_CALLER)
        .map(|i| {
            let org = format!("org{i:04}");
            let owner = token(&org, keyledger_api::Role::Owner);
            (org, owner)
        })
        .collect();
    eprintln!("seeding {} organizations", orgs.len());
    for (i, (org, owner)) in orgs.iter().enumerate() {
        let plan = client.put(format!("{base}/v1/orgs/{org}/plan")).bearer_auth(&admin);
        assert!(plan
            .json(&json!({"plan": "pro"}))
            .send()
            .await
            .expect("plan")
            .status()
            .is_success());
        let store = client.post(format!("{base}/v1/orgs/{org}/keys")).bearer_auth(owner);
        let body = json!({"provider": "openai", "key": key(0, i)});
        assert!(store.json(&body).send().await.expect("store").status().is_success());
    }
    let orgs = Arc::new(orgs);
    // Where each organization is in its cycle, across phases: seeding left one key stored.
    let rounds: Arc<Vec<AtomicU64>> =
        Arc::new((0..orgs.len()).map(|_| AtomicU64::new(0)).collect());

    let mut ours = Vec::new();
    for &callers in &args.callers {
        eprintln!("keyledger: {callers} callers for {}s", args.seconds);
        let (client, base, orgs, rounds) =
            (client.clone(), base.clone(), Arc::clone(&orgs), Arc::clone(&rounds));
        ours.push(
            drive(callers, args.seconds, move |caller, n| {
                let (client, base, orgs) = (client.clone(), base.clone(), Arc::clone(&orgs));
                let rounds = Arc::clone(&rounds);
                async move {
                    let index = caller * ORGS_PER_CALLER + (n as usize % ORGS_PER_CALLER);
                    let (org, owner) = &orgs[index];
                    let round = rounds[index].fetch_add(1, Ordering::Relaxed);
                    let sent = match step(round) {
                        Step::Rotate => client
                            .put(format!("{base}/v1/orgs/{org}/keys/openai"))
                            .json(&json!({"key": key(round + 1, index)})),
                        Step::Remove => client.delete(format!("{base}/v1/orgs/{org}/keys/openai")),
                        Step::Store => client
                            .post(format!("{base}/v1/orgs/{org}/keys"))
                            .json(&json!({"provider": "openai", "key": key(round + 1, index)})),
                    };
                    let answer = sent.bearer_auth(owner).send().await.expect("command");
                    assert!(answer.status().is_success(), "{:?}: {}", step(round), answer.status());
                }
            })
            .await,
        );
        // Commands answer before the views show them: the phase is not over for the views
        // until they do.
        let keyring = <Keyring as cqrs_es::Aggregate>::TYPE;
        let phase_over = std::time::Instant::now();
        let latest = state.log.order().latest_cursor_of_type(keyring).await.expect("latest");
        if let Some(latest) = latest {
            let shown = state.projector.wait_until(latest, keyring, Duration::from_secs(60)).await;
            assert!(shown, "the views did not catch up within a minute");
        }
        ours.last_mut().expect("a phase").views_behind = phase_over.elapsed();
    }

    eprintln!("keyledger: reads of the masked keys, {most} callers for {}s", args.seconds);
    let reads = {
        let (client, base, orgs) = (client.clone(), base.clone(), Arc::clone(&orgs));
        drive(most, args.seconds, move |caller, n| {
            let (client, base, orgs) = (client.clone(), base.clone(), Arc::clone(&orgs));
            async move {
                let (org, owner) = &orgs[caller * ORGS_PER_CALLER + (n as usize % ORGS_PER_CALLER)];
                let answer = client
                    .get(format!("{base}/v1/orgs/{org}/keys"))
                    .bearer_auth(owner)
                    .send()
                    .await
                    .expect("read");
                assert!(answer.status().is_success(), "read: {}", answer.status());
                answer.bytes().await.expect("body");
            }
        })
        .await
    };

    eprintln!("stock cqrs-es: tables, seeding");
    let pool = sqlx::PgPool::connect(url).await.expect("pool");
    for ddl in [
        "create table stock_events (aggregate_type text not null, aggregate_id text not null, \
         sequence bigint check (sequence >= 0) not null, event_type text not null, \
         event_version text not null, payload json not null, metadata json not null, \
         primary key (aggregate_type, aggregate_id, sequence))",
        "create table stock_snapshots (aggregate_type text not null, aggregate_id text not null, \
         last_sequence bigint check (last_sequence >= 0) not null, current_snapshot bigint \
         check (current_snapshot >= 0) not null, payload json not null, \
         primary key (aggregate_type, aggregate_id, last_sequence))",
    ] {
        sqlx::query(ddl).execute(&pool).await.expect("stock tables");
    }
    let repository =
        PostgresEventRepository::new(pool).with_tables("stock_events", "stock_snapshots");
    // One services value for every command, as a stock CqrsFramework has.
    let context: Arc<dyn KeyringContext> = Arc::new(keyledger_infra::services::OrgContext::new(
        OrgId::parse("stock").expect("org"),
        Arc::clone(state.keyrings.deps()),
    ));
    let cqrs: Arc<CqrsFramework<Keyring, _>> = Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(repository),
        vec![],
        context,
    ));
    for index in 0..most * ORGS_PER_CALLER {
        let id = format!("org{index:04}");
        let plan = KeyringCommand::ChangePlan { plan: PlanId::new("pro") };
        cqrs.execute(&id, prepared(plan, false)).await.expect("stock plan");
        cqrs.execute(&id, prepared(store(0, index), true)).await.expect("stock store");
    }
    let rounds: Arc<Vec<AtomicU64>> =
        Arc::new((0..most * ORGS_PER_CALLER).map(|_| AtomicU64::new(0)).collect());
    let mut stock = Vec::new();
    for &callers in &args.callers {
        eprintln!("stock cqrs-es: {callers} callers for {}s", args.seconds);
        let (cqrs, rounds) = (Arc::clone(&cqrs), Arc::clone(&rounds));
        stock.push(
            drive(callers, args.seconds, move |caller, n| {
                let (cqrs, rounds) = (Arc::clone(&cqrs), Arc::clone(&rounds));
                async move {
                    let index = caller * ORGS_PER_CALLER + (n as usize % ORGS_PER_CALLER);
                    let round = rounds[index].fetch_add(1, Ordering::Relaxed);
                    let (command, sealed) = match step(round) {
                        Step::Rotate => (
                            KeyringCommand::RotateKey(RotateKey {
                                provider: ProviderId::Openai,
                                key: api_key(round + 1, index),
                                verify: false,
                            }),
                            true,
                        ),
                        Step::Remove => {
                            (KeyringCommand::RemoveKey { provider: ProviderId::Openai }, false)
                        }
                        Step::Store => (store(round + 1, index), true),
                    };
                    let id = format!("org{index:04}");
                    cqrs.execute(&id, prepared(command, sealed)).await.expect("stock command");
                }
            })
            .await,
        );
    }
    (ours, stock, reads)
}

fn api_key(n: u64, index: usize) -> ApiKey {
    ApiKey::parse(ProviderId::Openai, SecretString::from(key(n, index))).expect("a key")
}

fn store(n: u64, index: usize) -> KeyringCommand {
    KeyringCommand::StoreKey(StoreKey {
        provider: ProviderId::Openai,
        key: Some(api_key(n, index)),
        description: None,
        default_model: None,
        endpoint: None,
        verify: false,
        replace: false,
    })
}

/// A command as keyledger's preparation would leave it: a new material id where a key is sealed.
fn prepared(command: KeyringCommand, sealed: bool) -> PreparedCommand {
    let sealed = sealed.then(|| MaterialId(uuid::Uuid::new_v4()));
    PreparedCommand { command, prepared: Prepared { sealed, ..Prepared::default() } }
}

/// Runs `callers` loops of `command(caller, n)` for `seconds`; the commands per second and
/// their latency.
async fn drive<F, Fut>(callers: usize, seconds: u64, command: F) -> Phase
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (mut latencies, elapsed) = keyledger_bench::drive(callers, seconds, command).await;
    latencies.sort();
    Phase {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        views_behind: Duration::ZERO,
    }
}

fn report(args: &Args, ours: &[Phase], stock: &[Phase], reads: &Phase) -> String {
    let mut out = format!(
        "# Durable key commands per second (PostgreSQL)\n\n\
         `cargo run --release -p keyledger-bench --bin commands -- --seconds {}`, {}.\n\n\
         Rotate, rotate, remove, store, in that cycle, over {} organizations per caller.\n\
         keyledger: through HTTP, each answered after its commit and the replica barrier; reads\n\
         wait for the views to show the organization's latest change (read-your-writes), and\n\
         \"views behind\" is how long after a phase's last answer they showed every command.\n\
         Stock cqrs-es: `CqrsFramework` over `PostgresEventRepository`, the same Keyring\n\
         aggregate and commands, already prepared (no sealing, no material, no views).\n\n\
         | callers | keyledger commands/s | p50 ms | p99 ms | views behind ms | stock cqrs-es commands/s | p50 ms | p99 ms | keyledger / stock |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        args.seconds,
        chrono::Utc::now().format("%Y-%m-%d"),
        ORGS_PER_CALLER,
    );
    for ((callers, ours), stock) in args.callers.iter().zip(ours).zip(stock) {
        out.push_str(&format!(
            "| {callers} | {:.0} | {} | {} | {} | {:.0} | {} | {} | {:.2} |\n",
            ours.rate,
            ms(ours.p50),
            ms(ours.p99),
            ms(ours.views_behind),
            stock.rate,
            ms(stock.p50),
            ms(stock.p99),
            ours.rate / stock.rate,
        ));
    }
    out.push_str(&format!(
        "\nReads of the masked keys (`GET /v1/orgs/{{org}}/keys`) after the commands, {} callers: \
         {:.0}/s, p50 {} ms, p99 {} ms.\n",
        args.callers.iter().copied().max().unwrap_or(1),
        reads.rate,
        ms(reads.p50),
        ms(reads.p99),
    ));
    out
}
