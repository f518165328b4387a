//! The usage cockpit's reads over a large history: what an organization's owner, an auditor or
//! the platform admin asks of it, through HTTP, with `--calls` model calls in the views.
//!
//! The views are seeded straight by SQL as the usage projection leaves them: `--calls` rows of
//! `usage_calls` spread over `--orgs` organizations, three providers, two models each, both
//! key sources and the last `--days` days, then `usage_daily` summed from them and every
//! organization in `view_orgs`. Seeding loads the rows first and builds the indexes after, as a
//! restore would. Then keyledger serves the database and each read runs `--requests` times, one
//! after another, for organizations picked at random. PostgreSQL only: a hundred million calls
//! is a primary's job. Writes a markdown table to `bench/results/cockpit.md`.
//!
//! `cargo run --release -p keyledger-bench --bin cockpit -- --calls 100000000`

use std::time::{Duration, Instant};

use clap::Parser;

use keyledger_bench::{ms, percentile};
use keyledger_store::{Arg, Database};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Model calls in the views.
    #[arg(long, default_value_t = 100_000_000)]
    calls: i64,
    /// Organizations they belong to.
    #[arg(long, default_value_t = 10_000)]
    orgs: i64,
    /// Days they spread over, ending today.
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// Requests of each read.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    #[arg(long, default_value = "bench/results/cockpit.md")]
    out: std::path::PathBuf,
}

/// Rows one seeding statement writes.
const SEED_CHUNK: i64 = 2_000_000;

/// The indexes of `usage_calls`, built once its rows are in.
const CALL_INDEXES: [&str; 4] =
    ["usage_calls_recent", "usage_calls_position", "usage_calls_at", "usage_calls_org_at"];

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let args_ref = &args;
    let started = chrono::Utc::now();
    let outcome = keyledger_bench::on_backends("postgres", |_, url| async move {
        let db = Database::connect(&url).await.expect("database");
        db.migrate().await.expect("migrations");
        let seeding = Instant::now();
        seed(&db, args_ref).await;
        let seeded = seeding.elapsed();
        eprintln!("seeded in {:.0} s", seeded.as_secs_f64());
        let served = keyledger_bench::serve(&url, &[]).await;
        (seeded, measure(&served, args_ref).await)
    })
    .await;
    let (seeded, reads) = outcome.into_iter().next().expect("one run");
    let mut table = format!(
        "# The usage cockpit over a large history\n\n\
         `cargo run --release -p keyledger-bench --bin cockpit -- --calls {} --orgs {} --days {} --requests {}`, \
         {} UTC, this 2-core machine, PostgreSQL 15; keyledger and the load in one process.\n\n\
         {} model calls in `usage_calls` over {} organizations and {} days, summed into \
         `usage_daily` (seeded in {:.0} s). Each read ran {} times one after another through \
         HTTP, for organizations picked at random.\n\n\
         | read | p50 ms | p99 ms | max ms |\n|---|---|---|---|\n",
        args.calls,
        args.orgs,
        args.days,
        args.requests,
        started.format("%Y-%m-%d %H:%M"),
        args.calls,
        args.orgs,
        args.days,
        seeded.as_secs_f64(),
        args.requests,
    );
    for (name, mut times) in reads {
        times.sort();
        table.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            ms(percentile(&times, 50.0)),
            ms(percentile(&times, 99.0)),
            ms(times.last().copied().unwrap_or_default()),
        ));
    }
    println!("{table}");
    std::fs::write(&args.out, table).expect("results written");
}

async fn seed(db: &Database, args: &Args) {
    let exec = |sql: String, args: Vec<Arg>| async move {
        db.execute(&sql, &args).await.unwrap_or_else(|e| panic!("seeding: {e}\n{sql}"));
    };
    for index in CALL_INDEXES {
        exec(format!("drop index if exists {index}"), vec![]).await;
    }
    // Call i: organization i mod orgs, provider and model from i, made i seconds (mod the
    // span) before now, so every organization has calls on every day.
    let span = args.days * 86_400;
    let mut start = 0;
    while start < args.calls {
        let stop = (start + SEED_CHUNK).min(args.calls);
        eprintln!("usage_calls: {start}..{stop}");
        exec(
            "insert into usage_calls (org_id, position, slot, request_id, provider, model, key_source, \
             key_version, input_tokens, output_tokens, cost_micros, at) \
             select 'org' || (i % $3), i, 0, 'r' || i, \
               (array['openai', 'anthropic', 'mistral'])[1 + i % 3], \
               (array['gpt-4o-mini', 'claude-3-5-haiku-latest', 'mistral-small-latest', \
                      'gpt-4o', 'claude-sonnet-4', 'mistral-large-latest'])[1 + i % 6], \
               case when i % 5 = 0 then 'platform' else 'byok' end, 1, \
               100 + i % 1000, 20 + i % 200, 50 + i % 5000, \
               now() - make_interval(secs => (i % $4)::double precision) \
             from generate_series($1::bigint, $2::bigint) i"
                .to_owned(),
            vec![Arg::Int(start), Arg::Int(stop - 1), Arg::Int(args.orgs), Arg::Int(span)],
        )
        .await;
        start = stop;
    }
    eprintln!("indexes");
    exec("create index usage_calls_recent on usage_calls (org_id, position)".to_owned(), vec![])
        .await;
    exec("create index usage_calls_position on usage_calls (position, slot)".to_owned(), vec![])
        .await;
    exec("create index usage_calls_at on usage_calls (at)".to_owned(), vec![]).await;
    exec("create index usage_calls_org_at on usage_calls (org_id, at)".to_owned(), vec![]).await;
    eprintln!("usage_daily");
    exec(
        "insert into usage_daily (org_id, provider, model, day, key_source, calls, input_tokens, \
         output_tokens, cost_micros) \
         select org_id, provider, model, to_char(at at time zone 'UTC', 'YYYY-MM-DD'), key_source, \
           count(*), sum(input_tokens), sum(output_tokens), sum(cost_micros) \
         from usage_calls group by 1, 2, 3, 4, 5"
            .to_owned(),
        vec![],
    )
    .await;
    exec(
        "insert into view_orgs (org_id) select 'org' || i from generate_series(0, $1::bigint - 1) i"
            .to_owned(),
        vec![Arg::Int(args.orgs)],
    )
    .await;
    exec("analyze".to_owned(), vec![]).await;
}

/// A read's path for an organization.
type PathOf = Box<dyn Fn(&str) -> String>;

/// Each read's latencies.
async fn measure(
    served: &keyledger_bench::Served,
    args: &Args,
) -> Vec<(&'static str, Vec<Duration>)> {
    let client = reqwest::Client::new();
    let admin = served
        .state
        .tokens
        .issue("*", keyledger_api::Role::PlatformAdmin, "bench", Duration::from_secs(3600))
        .expect("token");
    let today = chrono::Utc::now().date_naive();
    let quarter = today - chrono::Days::new(u64::try_from(args.days - 1).unwrap_or(0));
    let reads: [(&'static str, PathOf); 6] = [
        ("`GET …/usage` (this month, totals)", Box::new(|org| format!("/v1/orgs/{org}/usage"))),
        (
            "`GET …/usage` (the whole span by provider, model, day)",
            Box::new(move |org| {
                format!(
                    "/v1/orgs/{org}/usage?from={quarter}&to={today}&group_by=provider,model,day"
                )
            }),
        ),
        (
            "`GET …/usage/calls?limit=50`",
            Box::new(|org| format!("/v1/orgs/{org}/usage/calls?limit=50")),
        ),
        (
            "`GET …/usage/export` (today, NDJSON)",
            Box::new(move |org| {
                format!("/v1/orgs/{org}/usage/export?from={today}&to={today}&format=ndjson")
            }),
        ),
        ("`GET /v1/orgs?limit=50` (platform admin)", Box::new(|_| "/v1/orgs?limit=50".to_owned())),
        (
            "`GET /v1/orgs?limit=50&after=` (a later page)",
            Box::new(|org| format!("/v1/orgs?limit=50&after={org}")),
        ),
    ];
    let mut measured = Vec::new();
    let mut pick = 0x2545_f491_4f6c_dd1d_u64;
    for (name, path) in reads {
        eprintln!("{name}");
        let mut times = Vec::with_capacity(args.requests);
        for _ in 0..args.requests {
            // xorshift: a different organization each time, the same sequence each run.
            pick ^= pick << 13;
            pick ^= pick >> 7;
            pick ^= pick << 17;
            let org = format!("org{}", pick % u64::try_from(args.orgs).unwrap_or(1));
            let token = if path("x").starts_with("/v1/orgs?") {
                admin.clone()
            } else {
                served
                    .state
                    .tokens
                    .issue(&org, keyledger_api::Role::Owner, "bench", Duration::from_secs(3600))
                    .expect("token")
            };
            let sent = Instant::now();
            let answer = client
                .get(format!("{}{}", served.base, path(&org)))
                .bearer_auth(token)
                .send()
                .await
                .expect("read");
            let status = answer.status();
            let body = answer.bytes().await.expect("body");
            times.push(sent.elapsed());
            assert!(status.is_success(), "{name}: {status} {}", String::from_utf8_lossy(&body));
            assert!(
                body.len() > 20,
                "{name} answered with data: {}",
                String::from_utf8_lossy(&body)
            );
        }
        measured.push((name, times));
    }
    measured
}
