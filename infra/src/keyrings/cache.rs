//! What model calls reuse between them: organizations' Keyring states and the sealed material
//! of the key versions those states use (ciphertext only; opening stays per call).
//!
//! An entry is only ever as new as the log was when its load began: every invalidation moves a
//! generation on, and a load that began under an older generation is not kept, so a state read
//! just before a rotation can never land after the rotation's invalidation.

use std::collections::HashMap;

use crate::crypto::SealedKey;
use keyledger_domain::keyring::MaterialId;
use keyledger_domain::Keyring;

/// Keyring states by organization, with the sequence each is at, and sealed material by id.
#[derive(Debug, Default)]
pub(super) struct CallCache {
    states: HashMap<String, (Keyring, usize)>,
    sealed: HashMap<MaterialId, SealedKey>,
    generation: u64,
}

impl CallCache {
    /// Moves on with every invalidation: loads begun before it are not kept.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn state(&self, org: &str) -> Option<(Keyring, usize)> {
        self.states.get(org).cloned()
    }

    /// Keeps `state` (at `sequence`) for `org` if nothing was invalidated since `generation`;
    /// material the previous state used and this one does not leaves with it.
    pub(super) fn put_state(
        &mut self,
        org: &str,
        state: Keyring,
        sequence: usize,
        generation: u64,
    ) {
        if generation != self.generation {
            return;
        }
        if let Some((old, _)) = self.states.get(org) {
            let in_use: Vec<MaterialId> = material_of(&state).collect();
            let released: Vec<MaterialId> =
                material_of(old).filter(|id| !in_use.contains(id)).collect();
            for id in released {
                self.sealed.remove(&id);
            }
        }
        self.states.insert(org.to_owned(), (state, sequence));
    }

    /// Drops `org`'s state and the material it used: the log has moved on for `org`.
    pub(super) fn invalidate(&mut self, org: &str) {
        self.generation += 1;
        if let Some((old, _)) = self.states.remove(org) {
            for id in material_of(&old) {
                self.sealed.remove(&id);
            }
        }
    }

    /// Drops everything: this process can no longer tell what the log did.
    pub(super) fn clear(&mut self) {
        self.generation += 1;
        self.states.clear();
        self.sealed.clear();
    }

    pub(super) fn sealed(&self, id: MaterialId) -> Option<SealedKey> {
        self.sealed.get(&id).cloned()
    }

    /// Keeps `sealed` if nothing was invalidated since `generation` and `org`'s cached state
    /// still uses it: material of a version a change just released is never kept.
    pub(super) fn put_sealed(
        &mut self,
        org: &str,
        id: MaterialId,
        sealed: SealedKey,
        generation: u64,
    ) {
        let in_use =
            self.states.get(org).is_some_and(|(state, _)| material_of(state).any(|m| m == id));
        if generation == self.generation && in_use {
            self.sealed.insert(id, sealed);
        }
    }

    pub(super) fn forget_sealed(&mut self, ids: &[MaterialId]) {
        for id in ids {
            self.sealed.remove(id);
        }
    }
}

fn material_of(state: &Keyring) -> impl Iterator<Item = MaterialId> + '_ {
    state.keys().values().filter_map(|k| k.material_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_that_began_before_an_invalidation_is_not_kept() {
        let mut cache = CallCache::default();
        let began = cache.generation();
        cache.invalidate("acme");
        cache.put_state("acme", Keyring::default(), 3, began);
        assert!(cache.state("acme").is_none(), "the state may predate the change");

        cache.put_state("acme", Keyring::default(), 4, cache.generation());
        assert_eq!(cache.state("acme").map(|(_, at)| at), Some(4));
    }

    #[test]
    fn clearing_drops_every_state() {
        let mut cache = CallCache::default();
        cache.put_state("acme", Keyring::default(), 1, cache.generation());
        cache.put_state("other", Keyring::default(), 1, cache.generation());
        cache.clear();
        assert!(cache.state("acme").is_none() && cache.state("other").is_none());
    }
}
