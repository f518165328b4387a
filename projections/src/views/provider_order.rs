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
            if let Fact::Keyring(E::ProviderOrderSet(e)) = &event.fact {
                let providers =
                    serde_json::to_string(&e.providers).unwrap_or_else(|_| "[]".to_owned());
                tx.execute(
                    "insert into view_provider_order (org_id, providers) values ($1, $2) \
                     on conflict (org_id) do update set providers = excluded.providers",
                    &[Arg::Text(event.stored.aggregate_id.clone()), Arg::Text(providers)],
                )
                .await?;
            }
        }
        Ok(())
    }
}
