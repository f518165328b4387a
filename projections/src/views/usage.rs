//! The usage cockpit: calls, tokens and cost per organization × provider × model × day × key
//! source, every call for the recent-calls list, and every organization with usage for the
//! admin's directory.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;

use crate::log::{Fact, LoggedEvent};
use crate::projection::{Projection, ProjectionError, StepFold};
use crate::CallRetention;
use chrono::NaiveDate;
use cqrs_es::Aggregate;
use keyledger_domain::usage::{org_of_ledger, KeySource, UsageLedger};
use keyledger_domain::ProviderId;
use keyledger_store::{Arg, Tx};

/// `usage_daily`, `usage_calls` and `usage_orgs`. Costs are kept in micro-dollars so sums are
/// exact.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageCockpit {
    /// How long `usage_calls` lists a call: one older than that when projected (a rebuild,
    /// a call reported late) is counted in its day and not listed.
    pub retention: Option<CallRetention>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
}

/// Dollars to micro-dollars, rounded; a cost that is no number counts as none (a float cast
/// saturates, so no cost can overflow here).
#[must_use]
pub(crate) fn micros(usd: f64) -> i64 {
    if usd.is_finite() {
        (usd * 1_000_000.0).round() as i64
    } else {
        0
    }
}

/// A token count as the views keep it: every event the log holds fits, the largest ones
/// saturated (counts are bounded at the edge, but older events were not).
fn tokens(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Totals {
    fn add(&mut self, input: i64, output: i64, cost: i64) {
        self.calls = self.calls.saturating_add(1);
        self.input_tokens = self.input_tokens.saturating_add(input);
        self.output_tokens = self.output_tokens.saturating_add(output);
        self.cost_micros = self.cost_micros.saturating_add(cost);
    }
}

/// The columns of a day's sums, as [`CockpitStep::finish`] lists them.
const DAILY_COLUMNS: [&str; 9] = [
    "org_id",
    "provider",
    "model",
    "day",
    "key_source",
    "calls",
    "input_tokens",
    "output_tokens",
    "cost_micros",
];

#[async_trait]
impl Projection for UsageCockpit {
    fn name(&self) -> &'static str {
        "usage"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &[<UsageLedger as Aggregate>::TYPE]
    }

    /// A call carries its own time and organization; the event's metadata says nothing the
    /// cockpit shows, and left out it is a quarter fewer bytes to read in a rebuild.
    fn reads_metadata(&self) -> bool {
        false
    }

    /// Every model call adds a row: projected one transaction a call, a busy gateway's calls
    /// would cost the database more than recording them did.
    fn gather(&self) -> std::time::Duration {
        std::time::Duration::from_millis(5)
    }

    fn tables(&self) -> &'static [&'static str] {
        &["usage_daily", "usage_calls", "usage_orgs"]
    }

    fn bulk_load_indexes(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "usage_calls_recent",
                "create index if not exists usage_calls_recent on usage_calls (org_id, position)",
            ),
            (
                "usage_calls_position",
                "create index if not exists usage_calls_position on usage_calls (position, slot)",
            ),
            ("usage_calls_at", "create index if not exists usage_calls_at on usage_calls (at)"),
            (
                "usage_calls_org_at",
                "create index if not exists usage_calls_org_at on usage_calls (org_id, at)",
            ),
        ]
    }

    async fn apply(&self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        let mut step = self.begin_step();
        step.add(tx, events).await?;
        step.finish(tx).await
    }

    /// Calls are listed batch by batch; the daily sums are folded over the whole step and
    /// written once at its end: a backlog touches the same days batch after batch.
    fn begin_step(&self) -> Box<dyn StepFold + '_> {
        Box::new(CockpitStep {
            listed_from: self.retention.map(|r| r.cutoff(chrono::Utc::now())),
            daily: HashMap::new(),
            orgs: BTreeSet::new(),
        })
    }
}

/// The cockpit's part of one step: each day's sums so far, and the organizations seen.
struct CockpitStep {
    /// Calls made before this are counted in their day and not listed.
    listed_from: Option<chrono::DateTime<chrono::Utc>>,
    daily: HashMap<DayKey, Totals>,
    /// Every organization a usage event of the step belongs to (by its ledger, so one that
    /// only reserved a platform call counts): the directory lists them with the Keyring's.
    orgs: BTreeSet<String>,
}

impl CockpitStep {
    /// Notes the organization of `event`'s usage ledger, once a step: a batch names few
    /// organizations many times over.
    fn note_org(&mut self, event: &LoggedEvent) {
        if event.stored.aggregate_type != <UsageLedger as Aggregate>::TYPE {
            return;
        }
        let id = event.stored.aggregate_id.as_str();
        if let Some(org) = org_of_ledger(id) {
            if !self.orgs.contains(org.as_str()) {
                self.orgs.insert(org.as_str().to_owned());
            }
        }
    }
}

/// Organization, provider, model, day and key source: typed while a step folds (hashed, with
/// the day a date), spelled out once per sum when the step writes it. Spelled out for every
/// call and kept in order, the keys took a fifth of the rebuild's folding in formatting dates
/// and comparing strings.
type DayKey = (String, ProviderId, String, NaiveDate, KeySource);

/// The columns of a listed call, as [`CockpitStep::add`] lists them.
const CALL_COLUMNS: [&str; 12] = [
    "org_id",
    "position",
    "slot",
    "request_id",
    "provider",
    "model",
    "key_source",
    "key_version",
    "input_tokens",
    "output_tokens",
    "cost_micros",
    "at",
];

#[async_trait]
impl StepFold for CockpitStep {
    async fn add(&mut self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        let mut calls: Vec<Vec<Arg>> = Vec::new();
        for event in events {
            self.note_org(event);
            let Fact::Usage(usage) = &event.fact else { continue };
            for (slot, call) in usage.calls().iter().enumerate() {
                let (input, output) = (tokens(call.input_tokens), tokens(call.output_tokens));
                let cost = micros(call.cost_usd);
                let key = (
                    call.org.clone(),
                    call.provider,
                    call.model.clone(),
                    call.at.date_naive(),
                    call.key_source,
                );
                self.daily.entry(key).or_default().add(input, output, cost);
                if self.listed_from.is_some_and(|from| call.at < from) {
                    continue;
                }
                calls.push(vec![
                    Arg::Text(call.org.clone()),
                    Arg::Int(event.cursor.position),
                    Arg::Int(i64::try_from(slot).unwrap_or(i64::MAX)),
                    Arg::Text(call.request_id.clone()),
                    Arg::Text(call.provider.as_str().to_owned()),
                    Arg::Text(call.model.clone()),
                    Arg::Text(call.key_source.as_str().to_owned()),
                    Arg::OptInt(call.key_version.map(i64::from)),
                    Arg::Int(input),
                    Arg::Int(output),
                    Arg::Int(cost),
                    Arg::Time(call.at),
                ]);
            }
        }
        tx.insert_rows("usage_calls", &CALL_COLUMNS, &calls).await?;
        Ok(())
    }

    async fn finish(self: Box<Self>, tx: &mut Tx) -> Result<(), ProjectionError> {
        let orgs: Vec<Vec<Arg>> =
            self.orgs.iter().map(|org| vec![Arg::Text(org.clone())]).collect();
        tx.upsert_rows("usage_orgs", &["org_id"], &orgs, "on conflict (org_id) do nothing").await?;
        // In key order, as every step writes them: two writers of the same sums would lock
        // them in one order.
        let mut sums: Vec<(DayKey, Totals)> = self.daily.into_iter().collect();
        sums.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        let daily: Vec<Vec<Arg>> = sums
            .into_iter()
            .map(|((org, provider, model, day, source), t)| {
                vec![
                    Arg::Text(org),
                    Arg::Text(provider.as_str().to_owned()),
                    Arg::Text(model),
                    Arg::Text(day.format("%Y-%m-%d").to_string()),
                    Arg::Text(source.as_str().to_owned()),
                    Arg::Int(t.calls),
                    Arg::Int(t.input_tokens),
                    Arg::Int(t.output_tokens),
                    Arg::Int(t.cost_micros),
                ]
            })
            .collect();
        // Running sums stop at the largest bigint rather than fail: a projection never stalls
        // on an event (see the projector's rule).
        let add = |column: &str| {
            if tx.is_postgres() {
                format!("{column} = least(usage_daily.{column}::numeric + excluded.{column}, {})::bigint", i64::MAX)
            } else {
                format!("{column} = min(usage_daily.{column} + excluded.{column}, {})", i64::MAX)
            }
        };
        let update = ["calls", "input_tokens", "output_tokens", "cost_micros"].map(add).join(", ");
        tx.upsert_rows(
            "usage_daily",
            &DAILY_COLUMNS,
            &daily,
            &format!(
                "on conflict (org_id, provider, model, day, key_source) do update set {update}"
            ),
        )
        .await?;
        Ok(())
    }
}
