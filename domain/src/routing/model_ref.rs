//! A model as a caller names it: `provider/model` for one provider, or a bare model name.

use std::fmt;

use crate::provider::ProviderId;

/// A model name from a request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The provider the caller named (`openai/gpt-4o`), if any.
    pub provider: Option<ProviderId>,
    /// The provider's own name for the model, without the prefix.
    pub name: String,
}

/// Why a model name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelRefError {
    #[error("the model name is empty")]
    Empty,
    #[error("the model name is longer than {max} characters")]
    TooLong { max: usize },
}

/// Longer names are not model names; they would only bloat logs and usage rows.
const MAX_LEN: usize = 256;

impl ModelRef {
    /// Parses `raw`. A prefix before the first `/` that is a registry id names the provider;
    /// anything else is a bare name, slashes included (`meta-llama/Llama-3.3-70B-Instruct`
    /// is a bare name a vLLM server may serve).
    ///
    /// # Errors
    /// [`ModelRefError`] for an empty or overlong name.
    pub fn parse(raw: &str) -> Result<Self, ModelRefError> {
        let raw = raw.trim();
        if raw.chars().count() > MAX_LEN {
            return Err(ModelRefError::TooLong { max: MAX_LEN });
        }
        let (provider, name) = match raw.split_once('/') {
            Some((prefix, rest)) => match prefix.parse::<ProviderId>() {
                Ok(provider) => (Some(provider), rest),
                Err(_) => (None, raw),
            },
            None => (None, raw),
        };
        if name.is_empty() {
            return Err(ModelRefError::Empty);
        }
        Ok(Self { provider, name: name.to_owned() })
    }

    /// Whether the caller left the provider to keyledger.
    #[must_use]
    pub fn is_bare(&self) -> bool {
        self.provider.is_none()
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.provider {
            Some(provider) => write!(f, "{provider}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_prefix_names_the_provider_and_is_stripped() {
        let parsed = ModelRef::parse("groq/llama-3.3-70b-versatile").expect("valid");
        assert_eq!(parsed.provider, Some(ProviderId::Groq));
        assert_eq!(parsed.name, "llama-3.3-70b-versatile");
        assert_eq!(parsed.to_string(), "groq/llama-3.3-70b-versatile");
    }

    #[test]
    fn only_the_first_segment_is_a_prefix() {
        let parsed = ModelRef::parse("vllm/meta-llama/Llama-3.3-70B-Instruct").expect("valid");
        assert_eq!(parsed.provider, Some(ProviderId::Vllm));
        assert_eq!(parsed.name, "meta-llama/Llama-3.3-70B-Instruct");
    }

    #[test]
    fn a_prefix_that_is_no_registry_id_is_part_of_a_bare_name() {
        let parsed = ModelRef::parse("meta-llama/Llama-3.3-70B-Instruct").expect("valid");
        assert!(parsed.is_bare());
        assert_eq!(parsed.name, "meta-llama/Llama-3.3-70B-Instruct");
        assert!(ModelRef::parse("gpt-4o-mini").expect("valid").is_bare());
    }

    #[test]
    fn empty_and_overlong_names_are_refused() {
        assert_eq!(ModelRef::parse(""), Err(ModelRefError::Empty));
        assert_eq!(ModelRef::parse("openai/"), Err(ModelRefError::Empty));
        assert_eq!(ModelRef::parse(&"m".repeat(300)), Err(ModelRefError::TooLong { max: 256 }));
    }
}
