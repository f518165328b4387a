//! Master-key rotation: every key version sealed under a master key that is no longer the
//! active one is sealed anew under the active one, an organization at a time, each as a
//! `ResealMaterial` command. Its events name the new material, which is written, and release
//! the old, which is destroyed, in one transaction: a re-seal that dies half way has moved some
//! organizations whole and left the others as they were, so running it again finishes the job.
//! A rotation that commits first makes the command conflict; it is decided again on the new
//! state.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::error::CommandError;
use super::store::Keyrings;
use crate::crypto::Binding;
use crate::services::ServiceDeps;
use keyledger_domain::keyring::{MaterialBinding, MaterialId, Resealed};
use keyledger_domain::{KeyringCommand, KeyringEvent, OrgId};
use keyledger_store::material::MaterialRow;
use keyledger_store::metadata::Actor;
use keyledger_store::StorageFailure;

/// Organizations looked up at a time.
const BATCH: i64 = 100;
/// How often one organization's re-seal is decided again after losing to another command.
const CONFLICT_RETRIES: usize = 10;

/// What a re-seal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Key versions sealed anew under the active master key.
    pub resealed: u64,
    /// Key versions that already were.
    pub already_current: u64,
    /// Organizations whose material was sealed anew.
    pub organizations: u64,
    pub took: Duration,
}

/// Re-seals `binding`'s material `previous` under the active master key: the row to keep and
/// what it replaces, or `None` if it already is under the active key (or is gone).
pub(super) async fn reseal_one(
    deps: &ServiceDeps,
    org: &OrgId,
    binding: MaterialBinding,
    previous: MaterialId,
) -> Result<Option<(MaterialRow, Resealed)>, CommandError> {
    let Some(sealed) = deps.material.get(previous.0).await.map_err(storage)? else {
        return Ok(None);
    };
    let bound = Binding {
        org,
        provider: binding.provider,
        key_id: binding.key_id,
        version: binding.version,
    };
    let Some(resealed) = deps.envelope.rewrap(bound, &sealed).map_err(CommandError::Crypto)? else {
        return Ok(None);
    };
    let id = Uuid::new_v4();
    let master_key_id = resealed.master_key_id.clone();
    let row = MaterialRow {
        id,
        org: org.as_str().to_owned(),
        provider: binding.provider.as_str(),
        key_id: binding.key_id,
        version: binding.version,
        sealed: resealed,
    };
    Ok(Some((row, Resealed { previous, material_id: MaterialId(id), master_key_id })))
}

impl Keyrings {
    /// How many key versions are sealed under each master key id, whether that id is the
    /// active one: (id, versions, active).
    ///
    /// # Errors
    /// [`CommandError::Storage`] when the material cannot be counted.
    pub async fn material_versions(&self) -> Result<Vec<(String, i64, bool)>, CommandError> {
        let deps = self.deps();
        let active = deps.envelope.active_master_key_id();
        let counts = deps.material.versions_by_master_key().await.map_err(storage)?;
        Ok(counts.into_iter().map(|(id, n)| (id.clone(), n, id == active)).collect())
    }

    /// The master key ids material is sealed under that the ring lacks: that material cannot
    /// be opened, so a process must not start without them.
    ///
    /// # Errors
    /// [`CommandError::Storage`] when the material cannot be counted.
    pub async fn missing_master_keys(&self) -> Result<Vec<String>, CommandError> {
        let deps = self.deps();
        let counts = deps.material.versions_by_master_key().await.map_err(storage)?;
        Ok(counts.into_iter().map(|(id, _)| id).filter(|id| !deps.envelope.holds(id)).collect())
    }

    /// Re-seals every key version not under the active master key, organization by
    /// organization; `progress` hears the running totals after each organization.
    ///
    /// # Errors
    /// The first organization that could not be re-sealed (its material does not open, the
    /// store failed, or it kept losing to other commands); what was re-sealed before stays.
    pub async fn reseal_all(
        &self,
        actor: &Actor,
        mut progress: impl FnMut(&ResealReport),
    ) -> Result<ResealReport, CommandError> {
        let started = Instant::now();
        let deps = self.deps();
        let active = deps.envelope.active_master_key_id().to_owned();
        let before = deps.material.versions_by_master_key().await.map_err(storage)?;
        let mut report = ResealReport {
            already_current: before
                .iter()
                .filter(|(id, _)| *id == active)
                .map(|(_, n)| n.unsigned_abs())
                .sum(),
            ..ResealReport::default()
        };
        let mut after = String::new();
        loop {
            let orgs = deps
                .material
                .orgs_sealed_elsewhere(&active, &after, BATCH)
                .await
                .map_err(storage)?;
            let Some(last) = orgs.last() else { break };
            after.clone_from(last);
            for org in orgs {
                let org = OrgId::parse(&org).map_err(|e| {
                    CommandError::Storage(StorageFailure::other(format!("key material row: {e}")))
                })?;
                let resealed = self.reseal_org(&org, actor).await?;
                if resealed > 0 {
                    report.resealed += resealed;
                    report.organizations += 1;
                }
                report.took = started.elapsed();
                progress(&report);
            }
        }
        report.took = started.elapsed();
        Ok(report)
    }

    /// Re-seals one organization's material; how many key versions it moved.
    async fn reseal_org(&self, org: &OrgId, actor: &Actor) -> Result<u64, CommandError> {
        for _ in 0..CONFLICT_RETRIES {
            match self.execute(org, KeyringCommand::ResealMaterial, actor).await {
                Ok(committed) => {
                    let moved = committed
                        .events
                        .iter()
                        .filter(|e| matches!(e.payload, KeyringEvent::KeyMaterialResealed(_)))
                        .count();
                    return Ok(moved as u64);
                }
                Err(CommandError::Conflict) => {}
                Err(CommandError::Rejected(keyledger_domain::KeyringError::StaleMaterial)) => {}
                Err(other) => return Err(other),
            }
        }
        Err(CommandError::Conflict)
    }
}

fn storage(error: keyledger_store::material::MaterialError) -> CommandError {
    CommandError::Storage(StorageFailure::of(&error))
}
