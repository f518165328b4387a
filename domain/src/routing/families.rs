//! Model families: which provider a bare model name belongs to by its prefix (`claude-` is
//! Anthropic's). The built-in table covers each provider's own model lines; an operator adds
//! to it (`KEYLEDGER_MODEL_FAMILIES_FILE`), and the longest matching prefix wins.

use std::collections::BTreeMap;

use crate::provider::ProviderId;

/// The built-in families, by provider. Open-weight models (Llama, Qwen, Gemma, …) are absent
/// on purpose: many providers serve them, and their own model lists say which.
const BUILT_IN: &[(&str, ProviderId)] = &[
    ("gpt-", ProviderId::Openai),
    ("o1", ProviderId::Openai),
    ("o3", ProviderId::Openai),
    ("o4", ProviderId::Openai),
    ("chatgpt-", ProviderId::Openai),
    ("codex-", ProviderId::Openai),
    ("text-embedding-3", ProviderId::Openai),
    ("text-embedding-ada", ProviderId::Openai),
    ("omni-moderation", ProviderId::Openai),
    ("dall-e-", ProviderId::Openai),
    ("whisper-", ProviderId::Openai),
    ("tts-", ProviderId::Openai),
    ("claude-", ProviderId::Anthropic),
    ("gemini-", ProviderId::Google),
    ("text-embedding-004", ProviderId::Google),
    ("text-embedding-005", ProviderId::Google),
    ("imagen-", ProviderId::Google),
    ("mistral-", ProviderId::Mistral),
    ("open-mistral-", ProviderId::Mistral),
    ("open-mixtral-", ProviderId::Mistral),
    ("codestral", ProviderId::Mistral),
    ("pixtral", ProviderId::Mistral),
    ("ministral", ProviderId::Mistral),
    ("magistral", ProviderId::Mistral),
    ("devstral", ProviderId::Mistral),
    ("luminous-", ProviderId::AlephAlpha),
    ("pharia-", ProviderId::AlephAlpha),
];

/// A families file names a provider that is not in the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the family '{prefix}' names '{provider}', which is not a registry provider")]
pub struct UnknownFamilyProvider {
    pub prefix: String,
    pub provider: String,
}

/// Prefixes of bare model names and the provider each belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFamilies {
    /// Lower-case prefixes, longest first, so the first match is the most specific.
    prefixes: Vec<(String, ProviderId)>,
}

impl Default for ModelFamilies {
    fn default() -> Self {
        Self::from_pairs(
            BUILT_IN.iter().map(|(prefix, provider)| ((*prefix).to_owned(), *provider)),
        )
    }
}

impl ModelFamilies {
    fn from_pairs(pairs: impl IntoIterator<Item = (String, ProviderId)>) -> Self {
        let mut by_prefix: BTreeMap<String, ProviderId> = BTreeMap::new();
        for (prefix, provider) in pairs {
            by_prefix.insert(prefix.to_ascii_lowercase(), provider);
        }
        let mut prefixes: Vec<_> = by_prefix.into_iter().collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self { prefixes }
    }

    /// The built-in table with `extra` (prefix → registry id) added; an extra prefix that is
    /// also built in replaces it.
    ///
    /// # Errors
    /// [`UnknownFamilyProvider`] when an entry names no registry provider.
    pub fn with_extra(extra: &BTreeMap<String, String>) -> Result<Self, UnknownFamilyProvider> {
        let mut pairs: Vec<(String, ProviderId)> =
            BUILT_IN.iter().map(|(prefix, provider)| ((*prefix).to_owned(), *provider)).collect();
        for (prefix, provider) in extra {
            let id = provider.parse::<ProviderId>().map_err(|_| UnknownFamilyProvider {
                prefix: prefix.clone(),
                provider: provider.clone(),
            })?;
            pairs.push((prefix.clone(), id));
        }
        Ok(Self::from_pairs(pairs))
    }

    /// The provider whose family `model` belongs to, by its longest matching prefix.
    #[must_use]
    pub fn provider_of(&self, model: &str) -> Option<ProviderId> {
        let lower = model.to_ascii_lowercase();
        self.prefixes.iter().find(|(prefix, _)| lower.starts_with(prefix.as_str())).map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_providers_own_lines_belong_to_it() {
        let families = ModelFamilies::default();
        for (model, provider) in [
            ("gpt-4o-mini", ProviderId::Openai),
            ("o3-mini", ProviderId::Openai),
            ("chatgpt-4o-latest", ProviderId::Openai),
            ("text-embedding-3-small", ProviderId::Openai),
            ("claude-3-5-haiku-latest", ProviderId::Anthropic),
            ("gemini-2.0-flash", ProviderId::Google),
            ("text-embedding-004", ProviderId::Google),
            ("mistral-small-latest", ProviderId::Mistral),
            ("codestral-latest", ProviderId::Mistral),
            ("Pixtral-12B", ProviderId::Mistral),
        ] {
            assert_eq!(families.provider_of(model), Some(provider), "{model}");
        }
    }

    #[test]
    fn open_weight_models_belong_to_no_family() {
        let families = ModelFamilies::default();
        for model in ["llama-3.3-70b-versatile", "qwen2.5:7b", "gemma2-9b-it", "fake-model"] {
            assert_eq!(families.provider_of(model), None, "{model}");
        }
    }

    #[test]
    fn an_operators_families_add_to_the_table_and_the_longest_prefix_wins() {
        let extra = BTreeMap::from([
            ("llama-".to_owned(), "groq".to_owned()),
            ("gpt-oss-".to_owned(), "groq".to_owned()),
        ]);
        let families = ModelFamilies::with_extra(&extra).expect("known providers");
        assert_eq!(families.provider_of("llama-3.1-8b-instant"), Some(ProviderId::Groq));
        assert_eq!(families.provider_of("gpt-oss-120b"), Some(ProviderId::Groq));
        assert_eq!(families.provider_of("gpt-4o"), Some(ProviderId::Openai));
    }

    #[test]
    fn a_family_of_an_unknown_provider_is_refused() {
        let extra = BTreeMap::from([("x-".to_owned(), "nobody".to_owned())]);
        assert!(ModelFamilies::with_extra(&extra).is_err());
    }
}
