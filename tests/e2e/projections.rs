//! The projections: durable, rebuildable to the same rows, and fed by usage events too.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::json;

use crate::keys;
use keyledger_domain::usage::{KeySource, ModelCallRecorded, RecordModelCall};
use keyledger_domain::{OrgId, ProviderId};
use keyledger_infra::Actor;
use keyledger_tests::{on_both_backends, Backend, TestApp};

pub(crate) const VIEW_TABLES: [&str; 9] = [
    "view_keys",
    "view_org_status",
    "view_provider_order",
    "view_orgs",
    "audit_log",
    "usage_daily",
    "usage_calls",
    "usage_orgs",
    "projection_checkpoints",
];

/// Every row of every view, in a stable order.
pub(crate) async fn view_rows(app: &TestApp) -> Vec<String> {
    let mut rows = Vec::new();
    for table in &VIEW_TABLES[..8] {
        let mut dump: Vec<String> = app.rows_as_text(table).await;
        dump.sort();
        rows.extend(dump.into_iter().map(|r| format!("{table}: {r}")));
    }
    rows
}

fn call(org: &str, n: u32, source: KeySource, day: u32) -> RecordModelCall {
    let call = ModelCallRecorded {
        org: org.to_owned(),
        request_id: format!("req-{org}-{n}"),
        provider: if n % 2 == 0 { ProviderId::Openai } else { ProviderId::Anthropic },
        model: if n % 2 == 0 { "gpt-4o-mini".to_owned() } else { "claude-3-5-haiku".to_owned() },
        input_tokens: 100 + u64::from(n),
        output_tokens: 10,
        cost_usd: 0.000_25,
        key_source: source,
        key_version: (source == KeySource::Byok).then_some(1),
        at: Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).single().expect("instant"),
        capped: false,
    };
    RecordModelCall { call, limits: None }
}

on_both_backends!(the_usage_cockpit_sums_calls_per_provider_model_day_and_key_source);

async fn the_usage_cockpit_sums_calls_per_provider_model_day_and_key_source(backend: Backend) {
    let app = TestApp::start(backend).await;
    let org = OrgId::parse("acme").expect("org");
    let actor =
        Actor { sub: "worker".to_owned(), role: "service".to_owned(), request_id: String::new() };
    for n in 0..40 {
        let source = if n < 30 { KeySource::Platform } else { KeySource::Byok };
        // Days 20, 21, 20, 21 by tens: platform calls land on both days, BYOK calls on the 21st.
        app.state
            .usage
            .record(&org, call("acme", n, source, 20 + (n / 10) % 2), &actor)
            .await
            .expect("recorded");
    }
    assert!(
        app.state
            .projector
            .wait_until(
                app.state
                    .log
                    .order()
                    .latest_cursor("UsageLedger", "acme/2026-11")
                    .await
                    .expect("cursor")
                    .expect("some"),
                "UsageLedger",
                std::time::Duration::from_secs(5)
            )
            .await
    );
    let groups = app.count("select count(*) from usage_daily where org_id = 'acme'").await;
    assert_eq!(groups, 6, "platform: 2 providers × 2 days; byok: 2 providers × 1 day");
    let byok_openai = app
        .count("select calls from usage_daily where org_id = 'acme' and provider = 'openai' and model = 'gpt-4o-mini' \
                and day = '2026-11-21' and key_source = 'byok'")
        .await;
    assert_eq!(byok_openai, 5);
    let platform_calls = app.count("select cast(sum(calls) as bigint) from usage_daily where org_id = 'acme' and key_source = 'platform'").await;
    assert_eq!(platform_calls, 30);
    let cost = app
        .count("select cast(sum(cost_micros) as bigint) from usage_daily where org_id = 'acme'")
        .await;
    assert_eq!(cost, 40 * 250, "costs are summed exactly in micro-dollars");
    assert_eq!(app.count("select count(*) from usage_calls where org_id = 'acme'").await, 40);

    let auditor = app.token("acme", keyledger_api::Role::Auditor, "carol");
    let report = app
        .get("/v1/orgs/acme/usage?from=2026-11-01&to=2026-11-30&group_by=key_source", &auditor)
        .await;
    assert_eq!(report.status, axum::http::StatusCode::OK, "{}", report.everything());
    let report = report.json();
    assert_eq!(
        report["rows"],
        json!([
            {"key_source": "byok", "calls": 10, "input_tokens": 10 * 100 + (30..40).sum::<u64>(), "output_tokens": 100, "cost_usd": 0.0025},
            {"key_source": "platform", "calls": 30, "input_tokens": 30 * 100 + (0..30).sum::<u64>(), "output_tokens": 300, "cost_usd": 0.0075},
        ])
    );
    assert_eq!(report["totals"]["calls"], 40);
    let by_day = app
        .get("/v1/orgs/acme/usage?from=2026-11-21&to=2026-11-21&group_by=day,provider", &auditor)
        .await
        .json();
    assert_eq!(by_day["totals"]["calls"], 20, "only the 21st: {by_day}");
    let bad = app.get("/v1/orgs/acme/usage?group_by=colour", &auditor).await;
    assert_eq!(bad.code(), "invalid_request");
    let calls = app.get("/v1/orgs/acme/usage/calls?limit=3", &auditor).await.json();
    let ids: Vec<&str> = calls["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["request_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["req-acme-39", "req-acme-38", "req-acme-37"], "newest first");
    let member =
        app.get("/v1/orgs/acme/usage", &app.token("acme", keyledger_api::Role::Member, "m")).await;
    assert_eq!(member.status, axum::http::StatusCode::FORBIDDEN);
    app.finish().await;
}

on_both_backends!(a_rebuild_from_position_zero_gives_the_same_rows);

async fn a_rebuild_from_position_zero_gives_the_same_rows(backend: Backend) {
    let app = TestApp::start(backend).await;
    let owner = app.owner("acme");
    app.set_plan("acme", "pro").await;
    for provider_key in [("anthropic", keys::anthropic()), ("openai", keys::openai())] {
        app.post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": provider_key.0, "key": provider_key.1, "description": "d"}),
        )
        .await;
    }
    app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": keys::anthropic()})).await;
    app.put("/v1/orgs/acme/provider-order", &owner, json!({"providers": ["openai", "anthropic"]}))
        .await;
    app.set_plan("acme", "private").await;
    app.put("/v1/orgs/acme/byok-access", &app.platform_admin(), json!({"enabled": false})).await;
    let org = OrgId::parse("acme").expect("org");
    let actor =
        Actor { sub: "worker".to_owned(), role: "service".to_owned(), request_id: String::new() };
    for n in 0..10 {
        app.state
            .usage
            .record(&org, call("acme", n, KeySource::Platform, 21), &actor)
            .await
            .expect("recorded");
    }
    app.state.projector.catch_up().await.expect("caught up");
    let before = view_rows(&app).await;
    assert!(before.iter().any(|r| r.starts_with("view_keys")), "the views have rows");

    // Rows the log does not say: only a rebuild that really replays the log puts them right.
    // (The running projector may replay part of the log itself once the rebuild has emptied
    // the tables; either way, the rows that result must be the log's.)
    app.execute_sql("update view_keys set description = 'tampered'").await;
    app.execute_sql("delete from usage_calls").await;
    app.state.projector.rebuild(None).await.expect("rebuild");
    assert_eq!(view_rows(&app).await, before, "a rebuild gives the same rows");
    app.execute_sql("update audit_log set summary = 'tampered'").await;
    app.state.projector.rebuild(Some("audit")).await.expect("rebuild one");
    assert_eq!(view_rows(&app).await, before, "and so does rebuilding one projection");
    assert!(app.state.projector.rebuild(Some("nope")).await.is_err());
    app.finish().await;
}

on_both_backends!(once_a_read_shows_a_command_the_views_say_they_are_caught_up);

async fn once_a_read_shows_a_command_the_views_say_they_are_caught_up(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &app.owner("acme"),
            json!({"provider": "anthropic", "key": keys::anthropic()}),
        )
        .await;
    assert_eq!(stored.status, axum::http::StatusCode::CREATED, "{}", stored.everything());
    // The read waits for the views to show the organization's latest event (the command
    // answered without waiting for them).
    let listed = app.get("/v1/orgs/acme/keys", &app.owner("acme")).await;
    assert_eq!(listed.json()["keys"][0]["provider"], "anthropic", "{}", listed.everything());
    // The usage cockpit shows no Keyring event: it is not behind for not having read them.
    let ready = app.send(axum::http::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.json()["projection_lag"], 0, "{}", ready.everything());
    assert_eq!(ready.status, axum::http::StatusCode::OK);
    app.finish().await;
}

/// Statements built for one batch's size (a row of placeholders per row, as the usage cockpit
/// writes) are not kept prepared on the connection: kept, one per size seen and each holding
/// the types of its thousands of parameters, they held about 12 MiB of a long run's memory.
#[tokio::test]
async fn statements_built_for_a_batch_are_not_kept_prepared() {
    let url = keyledger_tests::postgres::fresh_database().await;
    let db = keyledger_store::Database::connect(&url).await.expect("connect");
    let mut tx = db.begin().await.expect("begin");
    tx.execute("create temporary table batch_rows (n bigint)", &[]).await.expect("table");
    let kept = "select count(*) from pg_prepared_statements where statement like 'insert into batch_rows%'";
    let insert = |rows: usize| {
        let values: Vec<String> = (1..=rows).map(|i| format!("(${i})")).collect();
        let args: Vec<keyledger_store::Arg> =
            (1..=rows).map(|i| keyledger_store::Arg::Int(i as i64)).collect();
        (format!("insert into batch_rows values {}", values.join(", ")), args)
    };
    for rows in 1..=5 {
        let (sql, args) = insert(rows);
        assert_eq!(tx.execute_built(&sql, &args).await.expect("insert"), rows as u64);
    }
    let (count,): (i64,) = tx.fetch_all(kept, &[]).await.expect("count").remove(0);
    assert_eq!(count, 0, "a statement built for a batch stayed prepared");

    // An ordinary statement is kept, which is what makes the count above mean something.
    let (sql, args) = insert(2);
    tx.execute(&sql, &args).await.expect("insert");
    let (count,): (i64,) = tx.fetch_all(kept, &[]).await.expect("count").remove(0);
    assert_eq!(count, 1);
    tx.commit().await.expect("commit");
    drop(db);
    keyledger_tests::postgres::drop_database(&url).await;
}

/// Rows appended in bulk (a binary `COPY` on PostgreSQL) read back as they were given: every
/// type a view loads that way, NULLs, text a CSV would have had to quote, and instants before
/// PostgreSQL's epoch and below the microsecond.
#[tokio::test]
async fn rows_appended_in_bulk_read_back_as_given() {
    use chrono::TimeZone;
    use keyledger_store::Arg;

    let url = keyledger_tests::postgres::fresh_database().await;
    let db = keyledger_store::Database::connect(&url).await.expect("connect");
    let mut tx = db.begin().await.expect("begin");
    tx.execute(
        "create temporary table bulk_rows (n bigint, maybe bigint, t text, maybe_t text, \
         b boolean, at timestamptz, maybe_at timestamptz, bytes bytea, id uuid)",
        &[],
    )
    .await
    .expect("table");
    let at = chrono::Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 59).unwrap()
        + chrono::Duration::nanoseconds(123_456_789);
    let early = chrono::Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 1).unwrap();
    let id = uuid::Uuid::new_v4();
    let text = "a \"quoted\", comma\nline — ünïcode \\N";
    let rows = vec![
        vec![
            Arg::Int(i64::MIN),
            Arg::OptInt(None),
            Arg::Text(text.to_owned()),
            Arg::OptText(None),
            Arg::Bool(true),
            Arg::Time(at),
            Arg::OptTime(None),
            Arg::Bytes(vec![0, 255, 7]),
            Arg::Uuid(id),
        ],
        vec![
            Arg::Int(i64::MAX),
            Arg::OptInt(Some(-3)),
            Arg::Text(String::new()),
            Arg::OptText(Some("x".to_owned())),
            Arg::Bool(false),
            Arg::Time(early),
            Arg::OptTime(Some(early)),
            Arg::Bytes(Vec::new()),
            Arg::Uuid(uuid::Uuid::nil()),
        ],
    ];
    let columns = ["n", "maybe", "t", "maybe_t", "b", "at", "maybe_at", "bytes", "id"];
    tx.insert_rows("bulk_rows", &columns, &rows).await.expect("appended");
    type Row = (
        i64,
        Option<i64>,
        String,
        Option<String>,
        bool,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
        Vec<u8>,
        uuid::Uuid,
    );
    let read: Vec<Row> = tx
        .fetch_all(&format!("select {} from bulk_rows order by n", columns.join(", ")), &[])
        .await
        .expect("read");
    let to_micros = chrono::Utc.timestamp_micros(at.timestamp_micros()).unwrap();
    assert_eq!(
        read,
        vec![
            (i64::MIN, None, text.to_owned(), None, true, to_micros, None, vec![0, 255, 7], id),
            (
                i64::MAX,
                Some(-3),
                String::new(),
                Some("x".to_owned()),
                false,
                early,
                Some(early),
                Vec::new(),
                uuid::Uuid::nil()
            ),
        ]
    );
    let short = vec![vec![Arg::Int(1)]];
    assert!(tx.insert_rows("bulk_rows", &columns, &short).await.is_err(), "a short row is refused");
    drop(tx);
    drop(db);
    keyledger_tests::postgres::drop_database(&url).await;
}

on_both_backends!(a_rebuild_over_more_json_than_one_batch_holds_gives_the_same_rows);

/// The projector reads the log in batches bounded by bytes of JSON as well as by events (a
/// usage event holds up to a hundred calls): a log of many such events is projected over
/// several batches, each call once.
async fn a_rebuild_over_more_json_than_one_batch_holds_gives_the_same_rows(backend: Backend) {
    use keyledger_projections::projector::BATCH;

    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &app.owner("acme"),
            json!({"provider": "anthropic", "key": keys::anthropic()}),
        )
        .await;
    assert!(stored.status.is_success(), "{}", stored.everything());
    let service = app.token("acme", keyledger_api::Role::Service, "worker");
    // More than one batch's JSON: each call holds more than 170 bytes of it.
    let batches = BATCH.json_bytes / (1_000 * 160) + 1;
    for batch in 0..batches {
        let calls: Vec<serde_json::Value> = (0..1_000)
            .map(|n| {
                json!({"request_id": format!("r-{batch}-{n}"), "provider": "anthropic",
                       "model": "claude-3-5-haiku-latest", "input_tokens": 10, "output_tokens": 5})
            })
            .collect();
        let recorded =
            app.post("/v1/orgs/acme/usage/batch", &service, json!({"calls": calls})).await;
        assert!(recorded.status.is_success(), "{}", recorded.everything());
    }
    let json = app
        .count("select cast(sum(length(cast(payload as text))) as bigint) from events where aggregate_type = 'UsageLedger'")
        .await;
    assert!(json > BATCH.json_bytes, "more JSON than one batch reads ({json} bytes)");
    app.state.projector.catch_up().await.expect("caught up");
    let before = view_rows(&app).await;

    app.execute_sql("delete from usage_calls").await;
    app.execute_sql("delete from usage_daily").await;
    app.state.projector.rebuild(Some("usage")).await.expect("rebuild");
    assert_eq!(view_rows(&app).await, before, "a rebuild in bounded batches gives the same rows");
    let calls =
        app.count("select cast(sum(calls) as bigint) from usage_daily where org_id = 'acme'").await;
    assert_eq!(calls, batches * 1_000, "each call counted once");
    app.finish().await;
}

on_both_backends!(a_backlog_is_applied_a_few_batches_a_step_each_call_once);

/// A backlog (a rebuild, a projector that was down) is applied several batches to a
/// transaction on PostgreSQL, so writes made once a transaction, such as the cockpit's daily
/// sums, are spread over more calls; but never more than CATCH_UP_BATCHES of them, so a step's
/// memory stays bounded. Past that bound the next step takes over where this one stopped (in a
/// rebuild, with the batch read ahead at the bound). SQLite, whose one writer the steps hold,
/// takes a batch a step. Every call is counted once either way.
async fn a_backlog_is_applied_a_few_batches_a_step_each_call_once(backend: Backend) {
    use keyledger_projections::projector::{BATCH, CATCH_UP_BATCHES};

    let app = TestApp::start(backend).await;
    app.stop_projecting();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let batch = usize::try_from(BATCH.events).expect("a batch's size");
    let step = CATCH_UP_BATCHES * batch;
    let backlog = step + 1_000;
    app.write_calls_by_hand("acme/2026-12", backlog, |i| {
        json!({"org": "acme", "request_id": format!("r-{i}"), "provider": "openai",
               "model": "gpt-4o-mini", "input_tokens": 3, "output_tokens": 2, "cost_usd": 0.0,
               "key_source": "byok", "key_version": 1,
               "at": format!("2026-12-{:02}T00:00:00Z", 1 + i % 28)})
    })
    .await;
    let mut steps = Vec::new();
    loop {
        let read = app.state.projector.step(&["usage"]).await.expect("a step");
        if read == 0 {
            break;
        }
        steps.push(read);
    }
    let expected = match backend {
        Backend::Postgres => vec![step, 1_000],
        Backend::Sqlite => [vec![batch; CATCH_UP_BATCHES], vec![1_000]].concat(),
    };
    assert_eq!(steps, expected, "events read by each step on {backend:?}");
    let calls = app.count("select cast(sum(calls) as bigint) from usage_daily").await;
    assert_eq!(calls, i64::try_from(backlog).expect("a count"), "each call counted once");
    let days = app.count("select count(*) from usage_daily").await;
    assert_eq!(days, 28, "one row a day, however many steps added to it");
    let listed = app.count("select count(*) from usage_calls").await;
    assert_eq!(listed, i64::try_from(backlog).expect("a count"), "each call listed once");
    let projected = view_rows(&app).await;
    app.state.projector.rebuild(Some("usage")).await.expect("a rebuild");
    assert_eq!(view_rows(&app).await, projected, "a rebuild, read ahead across steps, agrees");
    app.finish().await;
}

/// Every commit notifies the projectors, hundreds a second on a busy gateway, and they must
/// read the notifications as fast as they come. Left on the socket, they block the server's
/// backend that sends them, and while blocked it holds a snapshot: vacuum can remove no row
/// deleted since, in any table of the database. A rotated key's sealed material among them:
/// its row would stay in the table's pages however often it is vacuumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_commit_notifications_is_read_and_holds_back_no_vacuum() {
    let app = TestApp::start(Backend::Postgres).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let first = keys::anthropic();
    app.provider.accept(&first);
    let stored = app
        .post("/v1/orgs/acme/keys", &owner, json!({"provider": "anthropic", "key": first}))
        .await;
    assert!(stored.status.is_success(), "{}", stored.everything());

    // About 40 MB of notifications, more than the sockets between the server and keyledger
    // hold; payloads differ because PostgreSQL folds equal ones of a transaction into one.
    app.execute_sql(
        "select count(pg_notify('keyledger_events.UsageLedger', repeat('x', 150) || i)) \
         from generate_series(1, 250000) i",
    )
    .await;
    let second = keys::anthropic();
    app.provider.accept(&second);
    let rotated = app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": second})).await;
    assert!(rotated.status.is_success(), "{}", rotated.everything());

    let holding = "select count(*) from pg_stat_activity \
                   where datname = current_database() and state = 'idle' and backend_xmin is not null";
    // Sending 40 MB takes the server a moment, and a snapshot may be held briefly while it
    // writes: what must hold is that none stays held.
    let (started, mut clear_since) = (Instant::now(), None);
    while started.elapsed() < Duration::from_secs(30) {
        if app.count(holding).await > 0 {
            clear_since = None;
        } else if clear_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cleared = clear_since.is_some_and(|since| since.elapsed() > Duration::from_secs(3));
    assert!(cleared, "an idle session held a snapshot for 30 s: notifications left unread");

    // What an operator's vacuum (or keyledger's own, at the next removal) then does: the first
    // key's material is gone from the table, not kept as a dead row vacuum may not remove.
    app.execute_sql("vacuum key_material").await;
    let dead = app
        .count("select n_dead_tup from pg_stat_user_tables where relname = 'key_material'")
        .await;
    assert_eq!(dead, 0, "vacuum left the destroyed material's row in the table");
    assert_eq!(app.count("select count(*) from key_material").await, 1, "only the current key's");
    app.finish().await;
}

/// `/metrics` and `/readyz` ask how far the views trail the log. The count must read the events
/// committed since a view's checkpoint, not every event of its types in the month: a platform
/// making 10,000 calls a second adds 864 million usage events a day, and the probes ask every
/// few seconds. Before, PostgreSQL intersected with the primary key's `aggregate_type` prefix
/// and read every usage event of the month (647,073 index entries in a soak at 5 minutes) where
/// the partition had no statistics yet.
#[tokio::test]
async fn the_views_lag_is_counted_from_the_checkpoint_not_over_the_month() {
    use keyledger_store::event_store::{count_after_sql, Cursor, GlobalOrder, COUNT_AFTER_PLAN};

    let app = TestApp::start(Backend::Postgres).await;
    // Organizations' events of other types, before the usage.
    for org in ["acme", "globex", "initech"] {
        app.set_plan(org, "pro").await;
    }
    app.stop_projecting();
    // A busy hour's usage events of this month, as its partition stands before it is first
    // analyzed (a new month, or a server with autovacuum off): PostgreSQL guesses. Nothing
    // projects them here, and their type of event claims no request, so their payloads are
    // never read.
    app.execute_sql(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, log_month) \
         select 'UsageLedger', 'org-' || (i % 1000) || '/' || to_char(now(), 'YYYY-MM'), i / 1000, \
                'Seeded', '1', '{}', '{}', date_trunc('month', now())::date \
         from generate_series(1, 200000) i",
    )
    .await;
    let rows = app
        .texts(
            "select transaction_id::text || ' ' || global_position from events \
             where aggregate_type = 'UsageLedger' order by global_position desc offset 100 limit 1",
        )
        .await;
    let (txid, position) = rows[0].split_once(' ').expect("a cursor");
    let reader =
        Cursor { txid: txid.parse().expect("txid"), position: position.parse().expect("position") };

    let order = GlobalOrder::new(app.state.db.clone());
    // The Keyring views stand at the last Keyring event, before the whole hour of usage.
    let keyring = order.latest_cursor_of_type("Keyring").await.expect("read").expect("plans");
    assert_eq!(order.count_after(keyring, &["Keyring"], 10_000).await.expect("count"), 0);
    assert_eq!(order.count_after(reader, &["UsageLedger"], 10_000).await.expect("count"), 100);
    assert_eq!(
        order.count_after(reader, &["Keyring", "UsageLedger"], 10_000).await.expect("count"),
        100
    );
    assert_eq!(order.count_after(reader, &["UsageLedger"], 40).await.expect("count"), 40);

    // What PostgreSQL reads to answer: before the partition is analyzed and after, as a fresh
    // statement plans it and as a prepared one (sqlx's) does after its fifth run.
    let keyledger_store::Database::Postgres(pool) = &app.state.db else { unreachable!() };
    let counts = [(reader, "UsageLedger", 100.0), (keyring, "Keyring", 0.0)];
    for (analyzed, (at, of, behind)) in
        [false, true].into_iter().flat_map(|a| counts.map(|c| (a, c)))
    {
        if analyzed {
            app.execute_sql("analyze events").await;
        }
        for mode in ["force_custom_plan", "force_generic_plan"] {
            let mut tx = pool.begin().await.expect("a transaction");
            // Workers as cheap as the planner judges them for a month many times this size.
            sqlx::query(
                "select set_config('parallel_setup_cost', '0', true), \
                 set_config('parallel_tuple_cost', '0', true), \
                 set_config('min_parallel_table_scan_size', '0', true), \
                 set_config('min_parallel_index_scan_size', '0', true)",
            )
            .execute(&mut *tx)
            .await
            .expect("a larger month's costs");
            sqlx::query(COUNT_AFTER_PLAN).execute(&mut *tx).await.expect("planner settings");
            sqlx::query(&format!("set local plan_cache_mode = {mode}"))
                .execute(&mut *tx)
                .await
                .expect("plan mode");
            let plan: serde_json::Value = sqlx::query_scalar(&format!(
                "explain (analyze, format json) {}",
                count_after_sql(true, &[of])
            ))
            .bind(10_000_i64)
            .bind(at.txid)
            .bind(at.position)
            .bind(of)
            .fetch_one(&mut *tx)
            .await
            .expect("plan");
            let read = rows_read(&plan[0]["Plan"]);
            assert!(
                read <= 1_000.0,
                "analyzed {analyzed}, {mode}: {read} rows read to count {behind} {of} events: {plan}"
            );
            // Starting workers costs more than the few rows a lag takes to count.
            assert!(
                !plan.to_string().contains("Gather"),
                "analyzed {analyzed}, {mode}: parallel workers started to count: {plan}"
            );
        }
    }
    app.finish().await;
}

/// Rows a plan's scans read, over all their loops: index entries and table rows, those they
/// returned and those their filter removed.
fn rows_read(node: &serde_json::Value) -> f64 {
    let number = |field: &str| node[field].as_f64().unwrap_or(0.0);
    let own = match node["Node Type"].as_str() {
        Some(kind) if kind.contains("Scan") && !kind.contains("Bitmap Heap") => {
            (number("Actual Rows") + number("Rows Removed by Filter"))
                * node["Actual Loops"].as_f64().unwrap_or(1.0)
        }
        _ => 0.0,
    };
    let children = node["Plans"].as_array().map_or(0.0, |plans| plans.iter().map(rows_read).sum());
    own + children
}

on_both_backends!(rows_upserted_in_one_call_keep_every_type_and_add_up_on_conflict);

/// `Tx::upsert_rows` (how views write their sums): rows of every value type the views bind go
/// in, absent values as nulls, and a row offered again for a key meets the conflict clause.
async fn rows_upserted_in_one_call_keep_every_type_and_add_up_on_conflict(backend: Backend) {
    use keyledger_store::Arg;
    let app = TestApp::start(backend).await;
    let db = keyledger_store::Database::connect(&app.database_url).await.expect("connect");
    let mut tx = db.begin().await.expect("begin");
    let table = if tx.is_postgres() {
        "create temporary table sums (k text primary key, n bigint not null, flag boolean, \
         at timestamptz, bytes bytea, id uuid, note text)"
    } else {
        "create temporary table sums (k text primary key, n integer not null, flag boolean, \
         at text, bytes blob, id text, note text)"
    };
    tx.execute(table, &[]).await.expect("table");
    let columns = ["k", "n", "flag", "at", "bytes", "id", "note"];
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 5, 30, 0).single().expect("instant");
    let id = uuid::Uuid::new_v4();
    let row = |k: &str, n: i64, note: Option<&str>| {
        vec![
            Arg::Text(k.to_owned()),
            Arg::Int(n),
            Arg::Bool(n % 2 == 1),
            Arg::Time(at),
            Arg::Bytes(vec![0, 1, 255]),
            Arg::Uuid(id),
            Arg::OptText(note.map(str::to_owned)),
        ]
    };
    let on_conflict = "on conflict (k) do update set n = sums.n + excluded.n, \
                       note = coalesce(excluded.note, sums.note)";
    // More rows than SQLite takes in one statement, so it writes several.
    let first: Vec<Vec<Arg>> =
        (0..1_200).map(|i| row(&format!("k{i}"), i, Some("first"))).collect();
    tx.upsert_rows("sums", &columns, &first, on_conflict).await.expect("first");
    let again = vec![row("k1", 10, None), row("k2", 20, Some("again")), row("new", 5, None)];
    tx.upsert_rows("sums", &columns, &again, on_conflict).await.expect("again");

    let read: Vec<(String, i64, Option<String>)> = tx
        .fetch_all("select k, n, note from sums where k in ('k1', 'k2', 'new') order by k", &[])
        .await
        .expect("read");
    let expected = [("k1", 11, Some("first")), ("k2", 22, Some("again")), ("new", 5, None)]
        .map(|(k, n, note)| (k.to_owned(), n, note.map(str::to_owned)));
    assert_eq!(read, expected, "a conflict adds, and an absent value is a null");
    let (count,): (i64,) =
        tx.fetch_all("select count(*) from sums", &[]).await.expect("count").remove(0);
    assert_eq!(count, 1_201);
    // Each value reads back as what was bound.
    let (same,): (i64,) = tx
        .fetch_all(
            "select count(*) from sums where flag = $1 and at = $2 and bytes = $3 and id = $4",
            &[Arg::Bool(true), Arg::Time(at), Arg::Bytes(vec![0, 1, 255]), Arg::Uuid(id)],
        )
        .await
        .expect("compare")
        .remove(0);
    assert_eq!(same, 601, "the rows with an odd n (600 first, and `new`)");
    tx.commit().await.expect("commit");
    app.finish().await;
}
