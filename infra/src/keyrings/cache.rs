//! What model calls reuse between them: organizations' Keyring states and the sealed material
//! of the key versions those states use (ciphertext only; opening stays per call).
//!
//! An entry is only ever as new as the log was when its load began: every invalidation moves a
//! generation on, and a load that began under an older generation is not kept, so a state read
//! just before a rotation can never land after the rotation's invalidation.
//!
//! It holds at most a bound of organizations (`KEYLEDGER_CACHE_ORGS`): past that, the one
//! least recently used leaves with its material, and its next call loads it again. Memory
//! stays flat however many organizations a platform has.

use std::collections::HashMap;
use std::sync::Arc;

use hashlink::LruCache;

use super::contexts::CommandContexts;
use crate::crypto::SealedKey;
use keyledger_domain::keyring::MaterialId;
use keyledger_domain::Keyring;

/// Keyring states by organization, with the sequence each is at, and sealed material by id.
#[derive(Debug)]
pub(super) struct CallCache {
    /// Shared, not copied, with the calls that use them: a call takes a reference where a
    /// copy of the state (its keys' masks, hints, descriptions) cost dozens of allocations.
    states: LruCache<String, (Arc<Keyring>, usize)>,
    /// Only material a held state uses: it leaves with that state.
    sealed: HashMap<MaterialId, SealedKey>,
    generation: u64,
    /// Keyrings as this replica's commands left them: dropped by the same notifications.
    pub(super) commands: CommandContexts,
}

impl Default for CallCache {
    fn default() -> Self {
        Self::holding(crate::config::DEFAULT_CACHE_ORGS)
    }
}

impl CallCache {
    /// A cache of at most `orgs` organizations' states.
    pub(super) fn holding(orgs: usize) -> Self {
        Self {
            states: LruCache::new(orgs.max(1)),
            sealed: HashMap::new(),
            generation: 0,
            commands: CommandContexts::holding(orgs),
        }
    }

    /// Organizations whose states are held.
    pub(super) fn len(&self) -> usize {
        self.states.len()
    }

    /// Holds at most `orgs` organizations from now on, the least recently used leaving first.
    pub(super) fn bound(&mut self, orgs: usize) {
        let orgs = orgs.max(1);
        while self.states.len() > orgs {
            self.evict_least_recent();
        }
        self.states.set_capacity(orgs);
        self.commands.bound(orgs);
    }

    fn evict_least_recent(&mut self) {
        if let Some((_, (evicted, _))) = self.states.remove_lru() {
            for id in material_of(&evicted) {
                self.sealed.remove(&id);
            }
        }
    }

    /// Moves on with every invalidation: loads begun before it are not kept.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// `org`'s state, now the most recently used.
    pub(super) fn state(&mut self, org: &str) -> Option<(Arc<Keyring>, usize)> {
        self.states.get(org).cloned()
    }

    /// Keeps `state` (at `sequence`) for `org` if nothing was invalidated since `generation`;
    /// material the previous state used and this one does not leaves with it.
    pub(super) fn put_state(
        &mut self,
        org: &str,
        state: Arc<Keyring>,
        sequence: usize,
        generation: u64,
    ) {
        if generation != self.generation {
            return;
        }
        if let Some((old, _)) = self.states.peek(org) {
            let in_use: Vec<MaterialId> = material_of(&state).collect();
            let released: Vec<MaterialId> =
                material_of(old).filter(|id| !in_use.contains(id)).collect();
            for id in released {
                self.sealed.remove(&id);
            }
        } else if self.states.len() >= self.states.capacity() {
            self.evict_least_recent();
        }
        self.states.insert(org.to_owned(), (state, sequence));
    }

    /// Drops `org`'s state and the material it used: the log has moved on for `org`, to
    /// `sequence` when the notification said.
    pub(super) fn invalidate(&mut self, org: &str, sequence: Option<usize>) {
        self.commands.heard(org, sequence);
        self.generation += 1;
        if let Some((old, _)) = self.states.remove(org) {
            for id in material_of(&old) {
                self.sealed.remove(&id);
            }
        }
    }

    /// Drops everything: this process can no longer tell what the log did.
    pub(super) fn clear(&mut self) {
        self.commands.clear();
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
            self.states.peek(org).is_some_and(|(state, _)| material_of(state).any(|m| m == id));
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
        cache.invalidate("acme", None);
        cache.put_state("acme", Arc::default(), 3, began);
        assert!(cache.state("acme").is_none(), "the state may predate the change");

        cache.put_state("acme", Arc::default(), 4, cache.generation());
        assert_eq!(cache.state("acme").map(|(_, at)| at), Some(4));
    }

    /// A Keyring whose OpenAI key is sealed as material `n`.
    fn using_material(n: u128) -> (Keyring, MaterialId) {
        use cqrs_es::Aggregate as _;
        use keyledger_domain::keyring::{KeyStored, KeyringEvent};
        let id = MaterialId(uuid::Uuid::from_u128(n));
        let mut keyring = Keyring::default();
        keyring.apply(KeyringEvent::KeyStored(KeyStored {
            provider: keyledger_domain::ProviderId::Openai,
            key_id: 1,
            version: 1,
            material_id: Some(id),
            fingerprint: None,
            masked: "sk-proj-••••abcd".to_owned(),
            hint: "abcd".to_owned(),
            description: None,
            default_model: None,
            endpoint: None,
            at: chrono::Utc::now(),
        }));
        (keyring, id)
    }

    fn sealed() -> SealedKey {
        SealedKey {
            master_key_id: "k1".to_owned(),
            dek_nonce: vec![1; 12],
            wrapped_dek: vec![2; 48],
            key_nonce: vec![3; 12],
            ciphertext: vec![4; 64],
        }
    }

    #[test]
    fn past_its_bound_the_least_recently_used_organization_leaves_with_its_material() {
        let mut cache = CallCache::holding(2);
        for (n, org) in [(1, "a"), (2, "b")] {
            let (state, material) = using_material(n);
            cache.put_state(org, Arc::new(state), 1, cache.generation());
            cache.put_sealed(org, material, sealed(), cache.generation());
        }
        assert!(cache.state("a").is_some(), "a is used again: b is now the least recent");
        let (state, _) = using_material(3);
        cache.put_state("c", Arc::new(state), 1, cache.generation());

        assert_eq!(cache.len(), 2, "never more than the bound");
        assert!(cache.state("b").is_none(), "the least recently used left");
        assert!(cache.sealed(using_material(2).1).is_none(), "with its material");
        assert!(cache.state("a").is_some() && cache.state("c").is_some());
        assert!(cache.sealed(using_material(1).1).is_some(), "what stays keeps its material");
    }

    #[test]
    fn clearing_drops_every_state() {
        let mut cache = CallCache::default();
        cache.put_state("acme", Arc::default(), 1, cache.generation());
        cache.put_state("other", Arc::default(), 1, cache.generation());
        cache.clear();
        assert!(cache.state("acme").is_none() && cache.state("other").is_none());
    }
}
