//! The organization directory: every organization the log has an event of, Keyring or usage,
//! so a platform admin can list them (an organization that only ever called on the platform's
//! key has no Keyring events, yet is a customer).

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::values_placeholders;
use crate::log::{Fact, LoggedEvent};
use crate::projection::{Projection, ProjectionError};
use cqrs_es::Aggregate;
use keyledger_domain::usage::UsageLedger;
use keyledger_domain::Keyring;
use keyledger_store::{Arg, Tx};

/// `view_orgs`: one row per organization.
#[derive(Debug, Clone, Copy)]
pub struct OrgDirectory;

const ROWS_PER_STATEMENT: usize = 500;

/// The organization an event belongs to: a Keyring's id is its organization; a usage event
/// names its organization.
fn org_of(event: &LoggedEvent) -> Option<&str> {
    match &event.fact {
        Fact::Keyring(_) => Some(&event.stored.aggregate_id),
        Fact::Usage(usage) => usage.org(),
        Fact::Unknown => None,
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

    /// Usage arrives a call at a time; a batch names few organizations many times over.
    fn gather(&self) -> std::time::Duration {
        std::time::Duration::from_millis(5)
    }

    fn tables(&self) -> &'static [&'static str] {
        &["view_orgs"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        // Each organization once per batch.
        let orgs: BTreeSet<&str> = events.iter().filter_map(|e| org_of(e)).collect();
        let orgs: Vec<&str> = orgs.into_iter().collect();
        for chunk in orgs.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "insert into view_orgs (org_id) values {} on conflict (org_id) do nothing",
                values_placeholders(chunk.len(), 1)
            );
            let args: Vec<Arg> = chunk.iter().map(|org| Arg::Text((*org).to_owned())).collect();
            tx.execute_built(&sql, &args).await?;
        }
        Ok(())
    }
}
