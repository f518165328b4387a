//! A projector step of many Keyring events: the masked-key view folds them in memory and writes
//! what changed, the audit trail writes their entries in one statement. What people read must
//! be what each Keyring holds, whatever the events a step carries and however they interleave.

use std::time::Duration;

use secrecy::SecretString;

use crate::keys;
use keyledger_domain::keyring::{RotateKey, StoreKey, UpdateKeyDetails};
use keyledger_domain::plan::PlanId;
use keyledger_domain::{ApiKey, KeyringCommand, OrgId, ProviderId, VerificationOutcome};
use keyledger_infra::Actor;
use keyledger_projections::queries::{self, KeyRow};
use keyledger_projections::{audit_tree, views};
use keyledger_tests::postgres::prepared_plan;
use keyledger_tests::{on_both_backends, Backend, TestApp};

/// Every projection that shows Keyring events, as one step takes them.
const KEYRING_VIEWS: [&str; 5] = ["keys", "provider_order", "org_status", "org_directory", "audit"];

struct Commands<'a> {
    app: &'a TestApp,
    actor: Actor,
}

impl Commands<'_> {
    async fn run(&self, org: &str, command: KeyringCommand) {
        let org = OrgId::parse(org).expect("an organization id");
        if let Err(error) = self.app.state.keyrings.execute(&org, command, &self.actor).await {
            panic!("{org}: {error}");
        }
    }

    async fn plan(&self, org: &str, plan: &str) {
        self.run(org, KeyringCommand::ChangePlan { plan: PlanId::new(plan) }).await;
    }

    async fn store(&self, org: &str, provider: ProviderId, description: Option<&str>) {
        let store = StoreKey {
            provider,
            key: Some(key(provider)),
            description: description.map(str::to_owned),
            default_model: Some(format!("{}-model", provider.as_str())),
            endpoint: None,
            verify: false,
            replace: false,
        };
        self.run(org, KeyringCommand::StoreKey(store)).await;
    }

    async fn rotate(&self, org: &str, provider: ProviderId) {
        let rotate = RotateKey { provider, key: key(provider), verify: false };
        self.run(org, KeyringCommand::RotateKey(rotate)).await;
    }

    async fn verified(&self, org: &str, provider: ProviderId, outcome: VerificationOutcome) {
        let id = OrgId::parse(org).expect("an organization id");
        let state = self.app.state.keyrings.load(&id).await.expect("a Keyring");
        let stored = state.key(provider).expect("a key to verify");
        let (key_id, version) = (stored.key_id, stored.version);
        let command = KeyringCommand::RecordVerification { provider, key_id, version, outcome };
        self.run(org, command).await;
    }
}

fn key(provider: ProviderId) -> ApiKey {
    let raw = match provider {
        ProviderId::Anthropic => keys::anthropic(),
        ProviderId::Openai => keys::openai(),
        _ => keys::google(),
    };
    ApiKey::parse(provider, SecretString::from(raw)).expect("a well-formed key")
}

on_both_backends!(a_step_of_every_kind_of_key_event_shows_each_keyring_as_it_stands);

/// Three organizations' histories, interleaved, with every kind of Keyring event: stored,
/// rotated, details changed, verified and failed, suspended and reinstated (by plan and by
/// BYOK access), removed and stored again, erased and started afresh. With the projector
/// stopped they pile up, and steps apply them many at a time. Each organization's masked keys must
/// then be its Keyring's keys, and its audit trail a chain the log agrees with, an entry an
/// event.
async fn a_step_of_every_kind_of_key_event_shows_each_keyring_as_it_stands(backend: Backend) {
    use ProviderId::{Anthropic, Google, Openai};

    let app = TestApp::start(backend).await;
    app.stop_projecting();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let actor =
        Actor { sub: "owner".to_owned(), role: "owner".to_owned(), request_id: String::new() };
    let c = Commands { app: &app, actor };
    for org in ["alpha", "beta", "gamma"] {
        c.plan(org, "pro").await;
    }
    c.store("alpha", Anthropic, Some("first")).await;
    c.store("beta", Anthropic, None).await;
    c.store("alpha", Openai, None).await;
    c.store("gamma", Google, Some("g")).await;
    c.rotate("alpha", Anthropic).await;
    c.rotate("beta", Anthropic).await;
    c.verified("alpha", Anthropic, VerificationOutcome::Valid).await;
    let details = UpdateKeyDetails {
        provider: Openai,
        description: Some(Some("second".to_owned())),
        default_model: Some(None),
    };
    c.run("alpha", KeyringCommand::UpdateKeyDetails(details)).await;
    c.run("beta", KeyringCommand::EraseOrganization).await;
    c.plan("alpha", "private").await; // one provider: the other key is suspended
    c.run("gamma", KeyringCommand::SetByokAccess { enabled: false }).await;
    c.plan("beta", "pro").await; // the first change after the erasure starts it afresh
    c.plan("alpha", "pro").await;
    c.store("beta", Openai, Some("after the erasure")).await;
    c.run("gamma", KeyringCommand::SetByokAccess { enabled: true }).await;
    c.run("alpha", KeyringCommand::SetProviderOrder { providers: vec![Openai, Anthropic] }).await;
    c.run("alpha", KeyringCommand::RemoveKey { provider: Openai }).await;
    c.store("alpha", Openai, Some("again")).await;
    c.verified("alpha", Openai, VerificationOutcome::InvalidKey).await;
    c.rotate("gamma", Google).await;
    c.run("gamma", KeyringCommand::RemoveKey { provider: Google }).await;

    // A step reads only what no transaction still open could come before (on PostgreSQL any
    // transaction of the server, another test's included), so the events may take more than
    // one step; a step that takes several folds them together all the same.
    let events = app.count("select count(*) from events where aggregate_type = 'Keyring'").await;
    let (mut steps, mut read) = (Vec::new(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read < events && std::time::Instant::now() < deadline {
        let stepped = app.state.projector.step(&KEYRING_VIEWS).await.expect("a step");
        if stepped > 0 {
            steps.push(stepped);
        }
        read += i64::try_from(stepped).expect("a count");
    }
    assert_eq!(read, events, "every event applied, in steps of {steps:?}");
    assert!(steps.iter().any(|&n| n > 1), "a step of several events: {steps:?}");

    let db = &app.state.db;
    for (org, keys) in [("alpha", 2), ("beta", 1), ("gamma", 0)] {
        let state =
            app.state.keyrings.load(&OrgId::parse(org).expect("an id")).await.expect("a Keyring");
        let held: Vec<KeyRow> = state.keys().iter().map(|(p, k)| KeyRow::of(*p, k)).collect();
        let shown = queries::keys(db, org).await.expect("the view");
        assert_eq!(shown, held, "{org}: the view shows the Keyring's keys");
        assert_eq!(shown.len(), keys, "{org}: {shown:?}");
        let trail = keyledger_projections::audit::verify(db, org).await.expect("a trail");
        let own = app
            .count(&format!(
                "select count(*) from events where aggregate_type = 'Keyring' and aggregate_id = '{org}'"
            ))
            .await;
        assert!(trail.ok, "{org}: {trail:?}");
        assert_eq!(i64::try_from(trail.entries).expect("a count"), own, "{org}: an entry an event");
    }
    app.finish().await;
}

/// What a step reads by key (the audit tree's frontier subtrees, the masked keys of the
/// organizations in the step) is planned to probe the key even when planned over empty tables.
/// A prepared statement's generic plan outlives the tables' growth until they are next
/// analyzed: written as a join, the frontier read hashed its keys and scanned the whole audit
/// tree on every step, 6,000 rows a step on average within a benchmark's first 20 seconds and
/// growing with every entry.
#[tokio::test]
async fn what_a_step_reads_by_key_probes_the_key_even_in_a_plan_made_over_empty_tables() {
    let app = TestApp::start(Backend::Postgres).await;
    let keyledger_store::Database::Postgres(pool) = &app.state.db else { unreachable!() };
    let mut connection = pool.acquire().await.expect("a connection");
    sqlx::query("set plan_cache_mode = force_generic_plan")
        .execute(&mut *connection)
        .await
        .expect("generic plans");
    let reads = [
        (
            "audit_tree",
            audit_tree::FRONTIERS_ON_POSTGRES.to_owned(),
            r#"[{"o":"acme","l":0,"i":0}]"#,
        ),
        ("view_keys", views::rows_of_orgs(true), r#"["acme"]"#),
    ];
    for (table, sql, asked) in reads {
        assert_eq!(
            app.count(&format!("select count(*) from {table}")).await,
            0,
            "{table} is empty"
        );
        let plan = prepared_plan(&mut connection, "(json)", &sql, &format!("'{asked}'")).await;
        assert!(!plan.contains(&format!("Seq Scan on {table}")), "{table} scanned whole:\n{plan}");
        assert!(plan.contains(&format!("{table}_pkey")), "{table} probed by its key:\n{plan}");
    }
    drop(connection);
    app.finish().await;
}
