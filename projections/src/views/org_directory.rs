//! The organization directory: every organization the log has an event of, Keyring or usage,
//! so a platform admin can list them (an organization that only ever called on the platform's
//! key has no Keyring events, yet is a customer).

use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::log::LoggedEvent;
use crate::projection::{Projection, ProjectionError};
use cqrs_es::Aggregate;
use keyledger_domain::usage::{org_of_ledger, UsageLedger};
use keyledger_domain::Keyring;
use keyledger_store::{Arg, Tx};

/// `view_orgs`: one row per organization.
#[derive(Debug, Clone, Copy)]
pub struct OrgDirectory;

/// The organization an event belongs to, from its aggregate alone: a Keyring's id is its
/// organization; a usage ledger's id is its organization and month.
fn org_of(event: &LoggedEvent) -> Option<String> {
    let (kind, id) = (event.stored.aggregate_type.as_str(), event.stored.aggregate_id.as_str());
    if kind == <Keyring as Aggregate>::TYPE {
        Some(id.to_owned())
    } else if kind == <UsageLedger as Aggregate>::TYPE {
        org_of_ledger(id).map(|org| org.as_str().to_owned())
    } else {
        None
    }
}

#[async_trait]
impl Projection for OrgDirectory {
    fn name(&self) -> &'static str {
        "org_directory"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &[<Keyring as Aggregate>::TYPE, <UsageLedger as Aggregate>::TYPE]
    }

    /// The organization is in the aggregate's id: a model call's payload need not be decoded
    /// a second time for it (the usage cockpit decodes it in its own pipeline). Not none:
    /// reading none would mean reading all.
    fn reads_payloads_of(&self) -> &'static [&'static str] {
        &[<Keyring as Aggregate>::TYPE]
    }

    /// Usage arrives a call at a time; a batch names few organizations many times over.
    fn gather(&self) -> std::time::Duration {
        std::time::Duration::from_millis(5)
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
