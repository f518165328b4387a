//! The mask shown in place of a key: public prefix, `••••`, last four characters.

use serde::{Deserialize, Serialize};

use crate::provider::ProviderId;

/// How a key is shown: `masked` (e.g. `sk-ant-••••xK7q`) and `hint` (the last four characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mask {
    pub masked: String,
    pub hint: String,
}

const BULLETS: &str = "••••";
const HINT_LEN: usize = 4;
/// Fewer hidden characters than this and the last four would give too much away.
const MIN_HIDDEN_FOR_HINT: usize = 12;

impl Mask {
    /// The mask of `key`, a key of `provider`.
    #[must_use]
    pub fn of(provider: ProviderId, key: &str) -> Self {
        let prefix = provider
            .public_prefixes()
            .iter()
            .find(|p| key.starts_with(**p) && key.len() > p.len())
            .copied()
            .unwrap_or("");
        let body = &key[prefix.len()..];
        let body_chars = body.chars().count();
        let hint: String = if body_chars >= HINT_LEN + MIN_HIDDEN_FOR_HINT {
            body.chars().skip(body_chars - HINT_LEN).collect()
        } else {
            String::new()
        };
        Self { masked: format!("{prefix}{BULLETS}{hint}"), hint }
    }

    /// The mask of a provider entry stored without a key (local servers).
    #[must_use]
    pub fn keyless() -> Self {
        Self { masked: "(no key)".to_owned(), hint: String::new() }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn anthropic_mask_matches_the_documented_example() {
        let key = format!("sk-ant-api03-{}xK7q", "a".repeat(80));
        let mask = Mask::of(ProviderId::Anthropic, &key);
        assert_eq!(mask.masked, "sk-ant-••••xK7q");
        assert_eq!(mask.hint, "xK7q");
    }

    #[test]
    fn openai_shows_its_longest_public_prefix() {
        let key = format!("sk-proj-{}WXYZ", "a".repeat(60));
        assert_eq!(Mask::of(ProviderId::Openai, &key).masked, "sk-proj-••••WXYZ");
    }

    #[test]
    fn a_short_key_reveals_nothing() {
        let mask = Mask::of(ProviderId::Ollama, "short-token");
        assert_eq!(mask.masked, "••••");
        assert_eq!(mask.hint, "");
    }

    fn provider() -> impl Strategy<Value = ProviderId> {
        prop::sample::select(ProviderId::ALL.to_vec())
    }

    proptest! {
        /// Whatever the key, the mask is a public prefix, bullets and at most the last four
        /// characters, and those four only when enough stays hidden.
        #[test]
        fn a_mask_never_reveals_more_than_prefix_and_last_four(
            provider in provider(),
            use_prefix in any::<bool>(),
            body in "[A-Za-z0-9_.-]{0,120}",
        ) {
            let prefix = if use_prefix {
                provider.public_prefixes().first().copied().unwrap_or("")
            } else {
                ""
            };
            let key = format!("{prefix}{body}");
            let mask = Mask::of(provider, &key);
            let (shown_prefix, rest) = mask.masked.split_once(BULLETS).expect("bullets present");
            prop_assert!(provider.public_prefixes().contains(&shown_prefix) || shown_prefix.is_empty());
            prop_assert!(key.starts_with(shown_prefix));
            prop_assert_eq!(rest, mask.hint.as_str());
            prop_assert!(mask.hint.len() <= HINT_LEN);
            prop_assert!(key.ends_with(&mask.hint));
            let hidden = key.len() - shown_prefix.len() - mask.hint.len();
            prop_assert!(mask.hint.is_empty() || hidden >= MIN_HIDDEN_FOR_HINT);
        }
    }
}
