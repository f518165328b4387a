//! The masked-key view: one row per organization and provider, as `MaskedKey` shows it.

use async_trait::async_trait;

use crate::log::{Fact, LoggedEvent};
use crate::projection::{Projection, ProjectionError};
use cqrs_es::Aggregate;
use keyledger_domain::{Keyring, KeyringEvent as E};
use keyledger_store::{Arg, Tx};

/// `view_keys`.
#[derive(Debug, Clone, Copy)]
pub struct KeysView;

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
        for event in events {
            let Fact::Keyring(fact) = &event.fact else { continue };
            let org = Arg::Text(event.stored.aggregate_id.clone());
            let provider = |p: keyledger_domain::ProviderId| Arg::Text(p.as_str().to_owned());
            let (sql, args): (&str, Vec<Arg>) = match fact {
                E::KeyStored(e) => (
                    "insert into view_keys (org_id, provider, masked, hint, version, status, description, \
                     default_model, endpoint, created_at, rotated_at, verification_outcome, verified_at) \
                     values ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, null, null, null) \
                     on conflict (org_id, provider) do update set masked = excluded.masked, hint = excluded.hint, \
                     version = excluded.version, status = 'active', description = excluded.description, \
                     default_model = excluded.default_model, endpoint = excluded.endpoint, \
                     created_at = excluded.created_at, rotated_at = null, verification_outcome = null, verified_at = null",
                    vec![
                        org,
                        provider(e.provider),
                        Arg::Text(e.masked.clone()),
                        Arg::Text(e.hint.clone()),
                        Arg::Int(e.version.into()),
                        Arg::OptText(e.description.clone()),
                        Arg::OptText(e.default_model.clone()),
                        Arg::OptText(e.endpoint.clone()),
                        Arg::Time(e.at),
                    ],
                ),
                E::KeyRotated(e) => (
                    "update view_keys set masked = $3, hint = $4, version = $5, rotated_at = $6, \
                     verification_outcome = null, verified_at = null where org_id = $1 and provider = $2",
                    vec![org, provider(e.provider), Arg::Text(e.masked.clone()), Arg::Text(e.hint.clone()), Arg::Int(e.version.into()), Arg::Time(e.at)],
                ),
                E::KeyDetailsChanged(e) => (
                    "update view_keys set description = $3, default_model = $4 where org_id = $1 and provider = $2",
                    vec![org, provider(e.provider), Arg::OptText(e.description.clone()), Arg::OptText(e.default_model.clone())],
                ),
                E::KeyRemoved(e) => ("delete from view_keys where org_id = $1 and provider = $2", vec![org, provider(e.provider)]),
                E::KeyVerified(e) | E::KeyVerificationFailed(e) => (
                    "update view_keys set verification_outcome = $3, verified_at = $4 where org_id = $1 and provider = $2",
                    vec![org, provider(e.provider), Arg::Text(e.outcome.as_str().to_owned()), Arg::Time(e.at)],
                ),
                E::KeySuspended(e) => (
                    "update view_keys set status = 'suspended' where org_id = $1 and provider = $2",
                    vec![org, provider(e.provider)],
                ),
                E::KeyReinstated(e) => (
                    "update view_keys set status = 'active' where org_id = $1 and provider = $2",
                    vec![org, provider(e.provider)],
                ),
                E::OrganizationErased(_) => ("delete from view_keys where org_id = $1", vec![org]),
                E::ProviderOrderSet(_)
                | E::PlanChanged(_)
                | E::ByokAccessChanged(_)
                | E::OrganizationRestarted(_)
                | E::KeyMaterialResealed(_) => continue,
            };
            tx.execute(sql, &args).await?;
        }
        Ok(())
    }
}
