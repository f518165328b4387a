//! The masked-key view: one row per organization and provider, as `MaskedKey` shows it.
//!
//! A batch is applied in three statements whatever its length: the rows of the organizations
//! it touches are read, its events are folded into them in memory ([`fold`]), and what changed
//! is written back (rows gone deleted, rows new or changed upserted). A statement an event
//! cost 150–170 µs of a projector step on a busy machine, and commands wait for that step
//! before they answer (read-your-writes).

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::log::{Fact, LoggedEvent};
use crate::projection::{Projection, ProjectionError};
use crate::queries::KeyRow;
use cqrs_es::Aggregate;
use keyledger_domain::{Keyring, KeyringEvent as E, ProviderId};
use keyledger_store::{Arg, Tx};

/// `view_keys`.
#[derive(Debug, Clone, Copy)]
pub struct KeysView;

/// The view's rows of some organizations, by organization and provider.
type Rows = BTreeMap<(String, String), KeyRow>;

const COLUMNS: [&str; 13] = [
    "org_id",
    "provider",
    "masked",
    "hint",
    "version",
    "status",
    "description",
    "default_model",
    "endpoint",
    "created_at",
    "rotated_at",
    "verification_outcome",
    "verified_at",
];

const ON_CONFLICT: &str = "on conflict (org_id, provider) do update set masked = excluded.masked, \
    hint = excluded.hint, version = excluded.version, status = excluded.status, \
    description = excluded.description, default_model = excluded.default_model, \
    endpoint = excluded.endpoint, created_at = excluded.created_at, \
    rotated_at = excluded.rotated_at, verification_outcome = excluded.verification_outcome, \
    verified_at = excluded.verified_at";

#[async_trait]
impl Projection for KeysView {
    fn name(&self) -> &'static str {
        "keys"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &[<Keyring as Aggregate>::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["view_keys"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        let facts: Vec<(&str, &E)> = events
            .iter()
            .filter_map(|e| match &e.fact {
                Fact::Keyring(fact) => Some((e.stored.aggregate_id.as_str(), fact)),
                _ => None,
            })
            .collect();
        if facts.is_empty() {
            return Ok(());
        }
        let before = rows_of(tx, facts.iter().map(|(org, _)| *org)).await?;
        let mut after = before.clone();
        for (org, fact) in facts {
            fold(&mut after, org, fact);
        }
        write_changes(tx, &before, &after).await
    }
}

/// `rows` after `event` of `org`'s Keyring: what the view shows once the event has happened.
fn fold(rows: &mut Rows, org: &str, event: &E) {
    let at = |provider: ProviderId| (org.to_owned(), provider.as_str().to_owned());
    match event {
        E::KeyStored(e) => {
            let row = KeyRow {
                provider: e.provider.as_str().to_owned(),
                masked: e.masked.clone(),
                hint: e.hint.clone(),
                version: e.version.into(),
                status: "active".to_owned(),
                description: e.description.clone(),
                default_model: e.default_model.clone(),
                endpoint: e.endpoint.clone(),
                created_at: e.at,
                rotated_at: None,
                verification_outcome: None,
                verified_at: None,
            };
            rows.insert(at(e.provider), row);
        }
        E::KeyRotated(e) => {
            if let Some(row) = rows.get_mut(&at(e.provider)) {
                row.masked.clone_from(&e.masked);
                row.hint.clone_from(&e.hint);
                row.version = e.version.into();
                row.rotated_at = Some(e.at);
                row.verification_outcome = None;
                row.verified_at = None;
            }
        }
        E::KeyDetailsChanged(e) => {
            if let Some(row) = rows.get_mut(&at(e.provider)) {
                row.description.clone_from(&e.description);
                row.default_model.clone_from(&e.default_model);
            }
        }
        E::KeyRemoved(e) => {
            rows.remove(&at(e.provider));
        }
        E::KeyVerified(e) | E::KeyVerificationFailed(e) => {
            if let Some(row) = rows.get_mut(&at(e.provider)) {
                row.verification_outcome = Some(e.outcome.as_str().to_owned());
                row.verified_at = Some(e.at);
            }
        }
        E::KeySuspended(e) => {
            if let Some(row) = rows.get_mut(&at(e.provider)) {
                "suspended".clone_into(&mut row.status);
            }
        }
        E::KeyReinstated(e) => {
            if let Some(row) = rows.get_mut(&at(e.provider)) {
                "active".clone_into(&mut row.status);
            }
        }
        E::OrganizationErased(_) => rows.retain(|(of, _), _| of != org),
        E::ProviderOrderSet(_)
        | E::PlanChanged(_)
        | E::ByokAccessChanged(_)
        | E::OrganizationRestarted(_)
        | E::KeyMaterialResealed(_) => {}
    }
}

/// The statement reading the rows of the organizations asked for (a JSON array of names). On
/// PostgreSQL each organization is looked up by the key, at most a row per provider: as a join
/// (`in`, or `= any` of the names), a plan made while the view was small (a prepared statement's
/// generic plan, which outlives the view's growth until it is next analyzed) scans the whole
/// view on every step from then on.
#[must_use]
pub fn rows_of_orgs(postgres: bool) -> String {
    let columns = COLUMNS.join(", ");
    if postgres {
        format!(
            "select {columns} from json_array_elements_text($1::json) as asked(org) \
             cross join lateral (select {columns} from view_keys where org_id = asked.org \
             limit {}) as k",
            ProviderId::ALL.len()
        )
    } else {
        format!("select {columns} from view_keys where org_id in (select value from json_each($1))")
    }
}

/// The view's rows of `orgs`, in one statement that is the same whatever their number (their
/// names go as one JSON array), so it is prepared once.
async fn rows_of(tx: &mut Tx, orgs: impl Iterator<Item = &str>) -> Result<Rows, ProjectionError> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        org_id: String,
        #[sqlx(flatten)]
        key: KeyRow,
    }
    let mut orgs: Vec<&str> = orgs.collect();
    orgs.sort_unstable();
    orgs.dedup();
    let sql = rows_of_orgs(tx.is_postgres());
    let names = serde_json::to_string(&orgs).unwrap_or_else(|_| "[]".to_owned());
    let stored: Vec<Stored> = tx.fetch_all(&sql, &[Arg::Text(names)]).await?;
    Ok(stored.into_iter().map(|s| ((s.org_id, s.key.provider.clone()), s.key)).collect())
}

/// Deletes the rows of `before` that `after` lacks and upserts those `after` has new or changed:
/// a statement each, when there is any.
async fn write_changes(tx: &mut Tx, before: &Rows, after: &Rows) -> Result<(), ProjectionError> {
    let gone: Vec<&(String, String)> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    if !gone.is_empty() {
        let pairs = crate::views::values_placeholders(gone.len(), 2);
        let args: Vec<Arg> = gone
            .iter()
            .flat_map(|(org, provider)| [Arg::Text(org.clone()), Arg::Text(provider.clone())])
            .collect();
        let sql = format!("delete from view_keys where (org_id, provider) in (values {pairs})");
        tx.execute_built(&sql, &args).await?;
    }
    let changed: Vec<Vec<Arg>> = after
        .iter()
        .filter(|(k, row)| before.get(*k) != Some(*row))
        .map(|((org, _), row)| {
            vec![
                Arg::Text(org.clone()),
                Arg::Text(row.provider.clone()),
                Arg::Text(row.masked.clone()),
                Arg::Text(row.hint.clone()),
                Arg::Int(row.version),
                Arg::Text(row.status.clone()),
                Arg::OptText(row.description.clone()),
                Arg::OptText(row.default_model.clone()),
                Arg::OptText(row.endpoint.clone()),
                Arg::Time(row.created_at),
                Arg::OptTime(row.rotated_at),
                Arg::OptText(row.verification_outcome.clone()),
                Arg::OptTime(row.verified_at),
            ]
        })
        .collect();
    tx.upsert_rows("view_keys", &COLUMNS, &changed, ON_CONFLICT).await?;
    Ok(())
}
