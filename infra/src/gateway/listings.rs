//! Providers' model lists, fetched with the key a call would use and kept a few minutes per
//! organization, provider and key version (the platform's key: once for everyone). A failed
//! fetch is remembered for a shorter while, so a provider that does not answer slows a call
//! down at most once in that while. Concurrent calls that need the same list share one fetch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::providers::ListedModel;
use keyledger_domain::ProviderId;

/// How long a fetched list is used.
const FRESH_FOR: Duration = Duration::from_secs(300);
/// How long a failed fetch stands before the list is asked for again.
const FAILED_FOR: Duration = Duration::from_secs(30);
/// Lists kept at most; past this, stale ones go, then all.
const CAPACITY: usize = 10_000;

/// Whose list: the key it was fetched with decides what a provider lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ListingKey {
    Byok { org: String, provider: ProviderId, key_id: u32, version: u32 },
    Platform { provider: ProviderId },
}

/// A list, or `None` when the provider gave none.
pub(crate) type Listing = Option<Arc<Vec<ListedModel>>>;

struct Slot {
    since: Instant,
    list: Arc<OnceCell<Listing>>,
}

impl Slot {
    fn is_fresh(&self, now: Instant) -> bool {
        let lasts = match self.list.get() {
            Some(Some(_)) => FRESH_FOR,
            Some(None) => FAILED_FOR,
            // Still being fetched: share that fetch.
            None => return true,
        };
        now.duration_since(self.since) < lasts
    }
}

/// The model lists known to this process.
#[derive(Default)]
pub(crate) struct ModelListings {
    slots: Mutex<HashMap<ListingKey, Slot>>,
}

impl std::fmt::Debug for ModelListings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelListings").finish_non_exhaustive()
    }
}

impl ModelListings {
    /// The list under `key`, from memory while fresh, else from `fetch`.
    pub(crate) async fn get(
        &self,
        key: ListingKey,
        fetch: impl Future<Output = Listing>,
    ) -> Listing {
        let list = {
            let now = Instant::now();
            let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match slots.get(&key) {
                Some(slot) if slot.is_fresh(now) => Arc::clone(&slot.list),
                _ => {
                    if slots.len() >= CAPACITY {
                        slots.retain(|_, slot| slot.is_fresh(now));
                        if slots.len() >= CAPACITY {
                            slots.clear();
                        }
                    }
                    let list = Arc::new(OnceCell::new());
                    slots.insert(key, Slot { since: now, list: Arc::clone(&list) });
                    list
                }
            }
        };
        list.get_or_init(|| fetch).await.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn key() -> ListingKey {
        ListingKey::Platform { provider: ProviderId::Groq }
    }

    fn list() -> Listing {
        Some(Arc::new(vec![ListedModel { id: "llama".to_owned(), created: None }]))
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_is_fetched_once_while_fresh_and_again_once_stale() {
        let listings = ModelListings::default();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            list()
        };
        listings.get(key(), fetch()).await;
        listings.get(key(), fetch()).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(FRESH_FOR + Duration::from_secs(1)).await;
        listings.get(key(), fetch()).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_is_retried_sooner() {
        let listings = ModelListings::default();
        assert!(listings.get(key(), async { None }).await.is_none());
        assert!(listings.get(key(), async { list() }).await.is_none(), "remembered a while");
        tokio::time::advance(FAILED_FOR + Duration::from_secs(1)).await;
        assert!(listings.get(key(), async { list() }).await.is_some());
    }
}
