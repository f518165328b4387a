//! The org-status view: plan, BYOK access and erasure per organization (BYOK activity comes
//! from keys).

use async_trait::async_trait;

use crate::log::{Fact, LoggedEvent};
use crate::projection::{Projection, ProjectionError};
use cqrs_es::Aggregate;
use keyledger_domain::{Keyring, KeyringEvent as E};
use keyledger_store::{Arg, Tx};

/// `view_org_status`; an organization without a row is on its defaults.
#[derive(Debug, Clone, Copy)]
pub struct OrgStatusView;

#[async_trait]
impl Projection for OrgStatusView {
    fn name(&self) -> &'static str {
        "org_status"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &[<Keyring as Aggregate>::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["view_org_status"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        for event in events {
            let org = Arg::Text(event.stored.aggregate_id.clone());
            match &event.fact {
                Fact::Keyring(E::PlanChanged(e)) => {
                    tx.execute(
                        "insert into view_org_status (org_id, plan, byok_access) values ($1, $2, true) \
                         on conflict (org_id) do update set plan = excluded.plan",
                        &[org, Arg::Text(e.to.to_string())],
                    )
                    .await?;
                }
                Fact::Keyring(E::ByokAccessChanged(e)) => {
                    tx.execute(
                        "insert into view_org_status (org_id, plan, byok_access) values ($1, 'starter', $2) \
                         on conflict (org_id) do update set byok_access = excluded.byok_access",
                        &[org, Arg::Bool(e.enabled)],
                    )
                    .await?;
                }
                Fact::Keyring(E::OrganizationErased(e)) => {
                    tx.execute(
                        "insert into view_org_status (org_id, plan, byok_access, erased_at) \
                         values ($1, 'starter', true, $2) \
                         on conflict (org_id) do update set plan = excluded.plan, \
                         byok_access = excluded.byok_access, erased_at = excluded.erased_at",
                        &[org, Arg::Time(e.at)],
                    )
                    .await?;
                }
                Fact::Keyring(E::OrganizationRestarted(_)) => {
                    tx.execute(
                        "update view_org_status set erased_at = null where org_id = $1",
                        &[org],
                    )
                    .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
