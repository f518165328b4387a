//! Keyrings as this replica's own commands left them, so that the next command on an
//! organization is decided without loading its Keyring from the log.
//!
//! Loading was a round trip and the replay of up to 50 events after the snapshot, and at 32
//! callers it was about two fifths of a command's time. A kept state is used only while the
//! replica watch vouches for this replica's caches (see `watch`), and it is kept only as long as
//! nothing says the log moved past it:
//!
//! - every commit of commands announces each organization's last sequence to the watch, and a
//!   kept state older than that is dropped (a change by any other writer, announced without a
//!   sequence, drops it whatever it is); a state committed here is not kept if a later
//!   sequence was heard first;
//! - when the watch can no longer vouch for what it heard, everything is dropped, and a command
//!   that began before that keeps nothing.
//!
//! A state that is stale all the same (a change heard too late) cannot commit anything: its next
//! sequence is taken, the command is refused as a conflict, and the state is dropped.

use hashlink::LruCache;

use keyledger_domain::Keyring;

/// A Keyring as a command left it: its state, its last sequence and its last snapshot's number.
#[derive(Debug, Clone)]
pub(super) struct KeptKeyring {
    pub(super) keyring: Keyring,
    pub(super) sequence: usize,
    pub(super) snapshot: Option<usize>,
}

/// What is known of one organization: the latest sequence heard of, and its kept state.
#[derive(Debug)]
struct Known {
    heard: usize,
    kept: Option<KeptKeyring>,
}

/// Kept Keyrings of at most a bound of organizations, the least recently used leaving first.
#[derive(Debug)]
pub(super) struct CommandContexts {
    known: LruCache<String, Known>,
    /// Moves on each time everything is dropped: a command that began before keeps nothing.
    epoch: u64,
}

impl CommandContexts {
    pub(super) fn holding(orgs: usize) -> Self {
        Self { known: LruCache::new(orgs.max(1)), epoch: 0 }
    }

    pub(super) fn bound(&mut self, orgs: usize) {
        let orgs = orgs.max(1);
        while self.known.len() > orgs {
            self.known.remove_lru();
        }
        self.known.set_capacity(orgs);
    }

    /// What a command beginning now compares with when it keeps its state.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// `org`'s kept Keyring.
    pub(super) fn get(&mut self, org: &str) -> Option<KeptKeyring> {
        self.known.get(org).and_then(|known| known.kept.clone())
    }

    /// Keeps `kept` for `org`, committed by a command that began at `epoch`, unless everything
    /// was dropped since, a later sequence was heard of, or a later state is kept.
    pub(super) fn keep(&mut self, org: &str, kept: KeptKeyring, epoch: u64) {
        if epoch != self.epoch {
            return;
        }
        match self.known.get_mut(org) {
            Some(known) => {
                let newer = known.kept.as_ref().is_none_or(|k| k.sequence < kept.sequence);
                if known.heard <= kept.sequence && newer {
                    known.kept = Some(kept);
                }
            }
            None => {
                let heard = kept.sequence;
                self.known.insert(org.to_owned(), Known { heard, kept: Some(kept) });
            }
        }
    }

    /// `org`'s Keyring was committed up to `sequence` (`None`: somewhere unknown).
    pub(super) fn heard(&mut self, org: &str, sequence: Option<usize>) {
        let Some(sequence) = sequence else {
            self.forget(org);
            return;
        };
        match self.known.get_mut(org) {
            Some(known) => {
                known.heard = known.heard.max(sequence);
                if known.kept.as_ref().is_some_and(|k| k.sequence < sequence) {
                    known.kept = None;
                }
            }
            None => {
                self.known.insert(org.to_owned(), Known { heard: sequence, kept: None });
            }
        }
    }

    /// Drops `org`'s kept Keyring (a command on it conflicted or failed).
    pub(super) fn forget(&mut self, org: &str) {
        if let Some(known) = self.known.get_mut(org) {
            known.kept = None;
        }
    }

    /// Drops everything: nothing heard so far can be vouched for.
    pub(super) fn clear(&mut self) {
        self.epoch += 1;
        self.known.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sequence: usize) -> KeptKeyring {
        KeptKeyring { keyring: Keyring::default(), sequence, snapshot: None }
    }

    fn sequence_of(contexts: &mut CommandContexts, org: &str) -> Option<usize> {
        contexts.get(org).map(|k| k.sequence)
    }

    #[test]
    fn a_later_commit_heard_of_drops_the_kept_state_and_an_own_commit_does_not() {
        let mut contexts = CommandContexts::holding(8);
        contexts.keep("acme", at(4), contexts.epoch());
        contexts.heard("acme", Some(4)); // this replica's own commit, heard back
        assert_eq!(sequence_of(&mut contexts, "acme"), Some(4));
        contexts.heard("acme", Some(5)); // another replica's
        assert_eq!(sequence_of(&mut contexts, "acme"), None);
    }

    #[test]
    fn a_state_older_than_what_was_heard_or_kept_is_not_kept() {
        let mut contexts = CommandContexts::holding(8);
        contexts.heard("acme", Some(7));
        contexts.keep("acme", at(6), contexts.epoch());
        assert_eq!(sequence_of(&mut contexts, "acme"), None, "heard of 7 before 6 was kept");
        contexts.keep("acme", at(8), contexts.epoch());
        contexts.keep("acme", at(7), contexts.epoch());
        assert_eq!(sequence_of(&mut contexts, "acme"), Some(8), "a slower command's 7 after 8");
    }

    #[test]
    fn a_notification_without_a_sequence_drops_the_state() {
        let mut contexts = CommandContexts::holding(8);
        contexts.keep("acme", at(3), contexts.epoch());
        contexts.heard("acme", None);
        assert_eq!(sequence_of(&mut contexts, "acme"), None);
    }

    #[test]
    fn a_command_that_began_before_everything_was_dropped_keeps_nothing() {
        let mut contexts = CommandContexts::holding(8);
        let began = contexts.epoch();
        contexts.clear();
        contexts.keep("acme", at(3), began);
        assert_eq!(sequence_of(&mut contexts, "acme"), None);
        contexts.keep("acme", at(3), contexts.epoch());
        assert_eq!(sequence_of(&mut contexts, "acme"), Some(3));
    }

    #[test]
    fn past_its_bound_the_least_recently_used_organization_leaves() {
        let mut contexts = CommandContexts::holding(2);
        contexts.keep("a", at(1), contexts.epoch());
        contexts.keep("b", at(1), contexts.epoch());
        assert!(contexts.get("a").is_some(), "a is used again: b is now the least recent");
        contexts.keep("c", at(1), contexts.epoch());
        assert!(contexts.get("b").is_none());
        assert!(contexts.get("a").is_some() && contexts.get("c").is_some());
        contexts.bound(1);
        assert!(contexts.get("a").is_none(), "bound lowered: a was the least recent");
    }
}
