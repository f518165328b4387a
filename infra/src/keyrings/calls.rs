//! The call-key side of the Keyrings: what a model call needs of its organization's Keyring
//! (the current state, and the key opened for this one call), cached and kept true to the log
//! by the replica watch.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use cqrs_es::{Aggregate, EventStore};

use super::cache::CallCache;
use super::contexts::KeptKeyring;
use super::error::CommandError;
use super::watch::{outlast_leases, Watch};
use crate::crypto::{Binding, SealedKey};
use crate::services::ServiceDeps;
use keyledger_domain::keyring::{KeyState, MaterialId};
use keyledger_domain::{ApiKey, Keyring, OrgId, ProviderId};
use keyledger_store::event_store::{EventRepository, Heads, SnapshottingStore};
use keyledger_store::{Database, StorageFailure};

/// The event store of the Keyrings.
pub type KeyringStore = SnapshottingStore<EventRepository, Keyring>;

/// Organizations' Keyrings as model calls use them: states and sealed material cached, never
/// plaintext, and never older than the log once a command has returned.
#[derive(Debug)]
pub struct CallKeys {
    store: Arc<KeyringStore>,
    deps: Arc<ServiceDeps>,
    /// Keyring states and sealed material (see [`CallCache`]).
    cache: Arc<Mutex<CallCache>>,
    /// On a serving PostgreSQL replica: what lets it use its cache without asking the log on
    /// each call (see [`CallKeys::start_watching`]).
    watch: OnceLock<Watch>,
    db: Database,
    /// Where each organization's Keyring stands in the log, asked by a call when the cache
    /// cannot be vouched for.
    heads: Heads,
}

impl CallKeys {
    pub(super) fn new(db: &Database, store: Arc<KeyringStore>, deps: Arc<ServiceDeps>) -> Self {
        Self {
            store,
            deps,
            cache: Arc::new(Mutex::new(CallCache::default())),
            watch: OnceLock::new(),
            db: db.clone(),
            heads: Heads::new(db, Keyring::TYPE),
        }
    }

    /// On PostgreSQL, joins the replicas that commands wait for, so that model calls here can
    /// use cached Keyrings (tasks on the current tokio runtime, ended when this is dropped).
    /// Only a serving replica should: every Keyring command waits for each live one.
    ///
    /// # Panics
    /// On PostgreSQL, outside a tokio runtime.
    pub fn start_watching(&self) {
        if let Database::Postgres(pool) = &self.db {
            self.watch.get_or_init(|| Watch::start(pool, Arc::clone(&self.cache)));
        }
    }

    /// Leaves the replicas that commands wait for (at shutdown).
    pub async fn leave(&self) {
        if let Some(watch) = self.watch.get() {
            watch.leave().await;
        }
    }

    /// After a command that changed what calls use committed at `committed`: returns once no
    /// replica can still call with what it replaced, and this one holds no material it released.
    pub(super) async fn outlast(&self, committed: tokio::time::Instant, released: &[MaterialId]) {
        if !released.is_empty() {
            self.cache().forget_sealed(released);
        }
        match (self.watch.get(), &self.db) {
            (Some(watch), _) => watch.barrier(committed).await,
            (None, Database::Postgres(_)) => outlast_leases(committed).await,
            (None, Database::Sqlite(_)) => {}
        }
    }

    /// Keeps the states of at most `orgs` organizations (`KEYLEDGER_CACHE_ORGS`).
    pub fn bound_cache(&self, orgs: usize) {
        self.cache().bound(orgs);
    }

    /// Organizations whose Keyring states this process holds.
    #[must_use]
    pub fn cached_orgs(&self) -> usize {
        self.cache().len()
    }

    /// `org`'s Keyring as a command here last left it, while the watch vouches for this
    /// replica's caches; and the epoch to keep the next state under (see [`CommandContexts`]).
    ///
    /// [`CommandContexts`]: super::contexts::CommandContexts
    pub(super) fn kept_for_command(&self, org: &OrgId) -> (Option<KeptKeyring>, u64) {
        let trusted = self.trusts_its_cache();
        let mut cache = self.cache();
        let kept = if trusted { cache.commands.get(org.as_str()) } else { None };
        (kept, cache.commands.epoch())
    }

    /// Keeps `kept`, committed by a command that began at `epoch`, for the next command.
    pub(super) fn keep_for_commands(&self, org: &OrgId, kept: KeptKeyring, epoch: u64) {
        self.cache().commands.keep(org.as_str(), kept, epoch);
    }

    /// Drops what commands kept of `org` (one conflicted or failed on it).
    pub(super) fn forget_for_commands(&self, org: &OrgId) {
        self.cache().commands.forget(org.as_str());
    }

    fn cache(&self) -> MutexGuard<'_, CallCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether model calls here use cached Keyring states without asking the log: a PostgreSQL
    /// replica whose watch currently vouches for its cache.
    #[must_use]
    pub fn trusts_its_cache(&self) -> bool {
        self.watch.get().is_some_and(super::watch::Watch::trusted)
    }

    /// The current state of `org`'s Keyring for a model call. A rotation or removal committed
    /// by any replica is seen by the next call:
    ///
    /// - on a PostgreSQL replica whose watch vouches for its cache, the cached state (the
    ///   watch drops what any replica changes before that change's command returns);
    /// - otherwise the cached state if the log (one index probe, shared with concurrent
    ///   calls: see [`keyledger_store::event_store::Heads`]) shows nothing newer.
    ///
    /// Anything else is loaded afresh.
    ///
    /// # Errors
    /// [`CommandError::Storage`] when the store cannot be read.
    pub async fn current(&self, org: &OrgId) -> Result<Arc<Keyring>, CommandError> {
        let (generation, cached) = {
            let mut cache = self.cache();
            (cache.generation(), cache.state(org.as_str()))
        };
        if self.trusts_its_cache() {
            // Trust that began since the lookup began with clearing the cache: the entry read
            // before may be one that trust no longer vouches for.
            if let Some((state, _)) = cached.filter(|_| self.cache().generation() == generation) {
                return Ok(state);
            }
        } else {
            let latest = self.heads.latest(org.as_str()).await.map_err(CommandError::Storage)?;
            if let Some((state, _)) = cached.filter(|(_, at)| *at == latest) {
                return Ok(state);
            }
        }
        let context = self.store.load_aggregate(org.as_str()).await?;
        let (state, at) = (Arc::new(context.aggregate), context.current_sequence);
        self.cache().put_state(org.as_str(), Arc::clone(&state), at, generation);
        Ok(state)
    }

    /// The Keyring of `org` read from the log, past the cache: what a call reads after the
    /// material of the state it had was shredded under it (a rotation or re-seal committed).
    ///
    /// # Errors
    /// [`CommandError::Storage`] when the store cannot be read.
    pub async fn reread(&self, org: &OrgId) -> Result<Arc<Keyring>, CommandError> {
        let generation = self.cache().generation();
        let context = self.store.load_aggregate(org.as_str()).await?;
        let (state, at) = (Arc::new(context.aggregate), context.current_sequence);
        self.cache().put_state(org.as_str(), Arc::clone(&state), at, generation);
        Ok(state)
    }

    /// Opens the sealed material of `key` for one use. `None` for keyless providers.
    ///
    /// # Errors
    /// [`CommandError::Conflict`] when the material was shredded by a concurrent rotation;
    /// [`CommandError::Storage`] when it cannot be read or does not open.
    pub async fn open(
        &self,
        org: &OrgId,
        provider: ProviderId,
        key: &KeyState,
    ) -> Result<Option<ApiKey>, CommandError> {
        let Some(material_id) = key.material_id else {
            return Ok(None);
        };
        let sealed = self.fetch_sealed(material_id).await?;
        self.open_sealed(org, provider, key, &sealed).map(Some)
    }

    /// [`CallKeys::open`] for a model call: the sealed material of versions in use is kept in
    /// memory (ciphertext only), so a call reads no material from storage; opening it stays
    /// per call.
    ///
    /// # Errors
    /// As [`CallKeys::open`].
    pub async fn open_for_call(
        &self,
        org: &OrgId,
        provider: ProviderId,
        key: &KeyState,
    ) -> Result<Option<ApiKey>, CommandError> {
        let Some(material_id) = key.material_id else {
            return Ok(None);
        };
        let (generation, cached) = {
            let cache = self.cache();
            (cache.generation(), cache.sealed(material_id))
        };
        let sealed = match cached {
            Some(sealed) => sealed,
            None => {
                let sealed = self.fetch_sealed(material_id).await?;
                self.cache().put_sealed(org.as_str(), material_id, sealed.clone(), generation);
                sealed
            }
        };
        self.open_sealed(org, provider, key, &sealed).map(Some)
    }

    /// The sealed material `id`; a conflict if a concurrent rotation or removal shredded it.
    async fn fetch_sealed(&self, id: MaterialId) -> Result<SealedKey, CommandError> {
        self.deps
            .material
            .get(id.0)
            .await
            .map_err(|e| CommandError::Storage(StorageFailure::of(&e)))?
            .ok_or(CommandError::Conflict)
    }

    /// Opens `sealed` as version `key.version` of `org`'s `provider` key.
    fn open_sealed(
        &self,
        org: &OrgId,
        provider: ProviderId,
        key: &KeyState,
        sealed: &SealedKey,
    ) -> Result<ApiKey, CommandError> {
        let binding = Binding { org, provider, key_id: key.key_id, version: key.version };
        self.deps.envelope.open(binding, sealed).map_err(CommandError::Crypto)
    }
}
