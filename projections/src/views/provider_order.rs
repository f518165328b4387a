//! The provider-order view: the ordered providers per organization.

use async_trait::async_trait;

use crate::log::{Fact, LoggedEvent};
use crate::projection::{Projection, ProjectionError};
use cqrs_es::Aggregate;
use keyledger_domain::{Keyring, KeyringEvent as E};
use keyledger_store::{Arg, Tx};

/// `view_provider_order`; `providers` is a JSON array of provider ids.
#[derive(Debug, Clone, Copy)]
pub struct ProviderOrderView;

#[async_trait]
impl Projection for ProviderOrderView {
    fn name(&self) -> &'static str {
        "provider_order"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &[<Keyring as Aggregate>::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["view_provider_order"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        for event in events {
            let org = Arg::Text(event.stored.aggregate_id.clone());
            match &event.fact {
                Fact::Keyring(E::ProviderOrderSet(e)) => {
                    let providers =
                        serde_json::to_string(&e.providers).unwrap_or_else(|_| "[]".to_owned());
                    tx.execute(
                        "insert into view_provider_order (org_id, providers) values ($1, $2) \
                         on conflict (org_id) do update set providers = excluded.providers",
                        &[org, Arg::Text(providers)],
                    )
                    .await?;
                }
                Fact::Keyring(E::OrganizationErased(_)) => {
                    tx.execute("delete from view_provider_order where org_id = $1", &[org]).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
