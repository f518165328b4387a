//! What the gateway counts for `GET /metrics`: model calls providers answered, by provider,
//! key source and status. Never an organization, a model name or a key.

use std::collections::BTreeMap;
use std::sync::Mutex;

use keyledger_domain::usage::KeySource;
use keyledger_domain::ProviderId;

/// Model calls providers answered since the process started.
#[derive(Debug, Default)]
pub struct CallCounts {
    answered: Mutex<BTreeMap<(ProviderId, KeySource, u16), u64>>,
}

impl CallCounts {
    pub(crate) fn answered(&self, provider: ProviderId, source: KeySource, status: u16) {
        let mut answered = self.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *answered.entry((provider, source, status)).or_default() += 1;
    }

    /// Every count so far, ordered by provider, key source and status.
    #[must_use]
    pub fn snapshot(&self) -> Vec<((ProviderId, KeySource, u16), u64)> {
        let answered = self.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        answered.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
