//! The organization directory: every organization with a Keyring, so a platform admin can
//! list them. An organization that only ever called on the platform's key has no Keyring
//! events, yet is a customer: the usage cockpit keeps those (`usage_orgs`), and the directory's
//! query lists both. Kept apart, the Keyring views read no model call: their projector reads
//! only Keyring events, and a busy gateway's calls never wake it.

use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::log::LoggedEvent;
use crate::projection::{Projection, ProjectionError};
use cqrs_es::Aggregate;
use keyledger_domain::Keyring;
use keyledger_store::{Arg, Tx};

/// `view_orgs`: one row per organization with a Keyring.
#[derive(Debug, Clone, Copy)]
pub struct OrgDirectory;

/// The organization of a Keyring event: the Keyring's id.
fn org_of(event: &LoggedEvent) -> Option<String> {
    let (kind, id) = (event.stored.aggregate_type.as_str(), event.stored.aggregate_id.as_str());
    (kind == <Keyring as Aggregate>::TYPE).then(|| id.to_owned())
}

#[async_trait]
impl Projection for OrgDirectory {
    fn name(&self) -> &'static str {
        "org_directory"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &[<Keyring as Aggregate>::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["view_orgs"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        // Each organization once per batch.
        let orgs: BTreeSet<String> = events.iter().filter_map(|e| org_of(e)).collect();
        let rows: Vec<Vec<Arg>> = orgs.into_iter().map(|org| vec![Arg::Text(org)]).collect();
        tx.upsert_rows("view_orgs", &["org_id"], &rows, "on conflict (org_id) do nothing").await?;
        Ok(())
    }
}
