//! The provider registry: which AI providers exist and what their keys look like.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::routing::Surface;

/// An AI provider keyledger knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderId {
    Anthropic,
    Openai,
    Google,
    Mistral,
    Groq,
    AzureOpenai,
    AlephAlpha,
    Ollama,
    Lmstudio,
    Vllm,
}

/// A provider id that is not in the registry. What was sent is not repeated (it could be
/// anything, a key pasted in the wrong place included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider; the registry has anthropic, openai, google, mistral, groq, azure_openai, aleph_alpha, ollama, lmstudio and vllm")]
pub struct UnknownProvider;

impl ProviderId {
    /// Every provider of the registry, in a stable order.
    pub const ALL: [Self; 10] = [
        Self::Anthropic,
        Self::Openai,
        Self::Google,
        Self::Mistral,
        Self::Groq,
        Self::AzureOpenai,
        Self::AlephAlpha,
        Self::Ollama,
        Self::Lmstudio,
        Self::Vllm,
    ];

    /// The registry id, as used in paths and JSON.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
            Self::Google => "google",
            Self::Mistral => "mistral",
            Self::Groq => "groq",
            Self::AzureOpenai => "azure_openai",
            Self::AlephAlpha => "aleph_alpha",
            Self::Ollama => "ollama",
            Self::Lmstudio => "lmstudio",
            Self::Vllm => "vllm",
        }
    }

    /// The provider's name as people write it (`OpenAI`, `LM Studio`).
    #[must_use]
    pub const fn display_name(self) -> &'static str {
        match self {
            Self::Anthropic => "Anthropic",
            Self::Openai => "OpenAI",
            Self::Google => "Google",
            Self::Mistral => "Mistral",
            Self::Groq => "Groq",
            Self::AzureOpenai => "Azure OpenAI",
            Self::AlephAlpha => "Aleph Alpha",
            Self::Ollama => "Ollama",
            Self::Lmstudio => "LM Studio",
            Self::Vllm => "vLLM",
        }
    }

    /// "an OpenAI key", "a Groq key": for messages about a key of this provider.
    #[must_use]
    pub fn a_key(self) -> String {
        // By how the name sounds: "an LM Studio key", "a vLLM key".
        let article = match self {
            Self::Anthropic
            | Self::Openai
            | Self::AzureOpenai
            | Self::AlephAlpha
            | Self::Ollama
            | Self::Lmstudio => "an",
            Self::Google | Self::Mistral | Self::Groq | Self::Vllm => "a",
        };
        format!("{article} {} key", self.display_name())
    }

    /// Whether a stored key must say where the provider lives (`endpoint`).
    #[must_use]
    pub const fn needs_endpoint(self) -> bool {
        matches!(self, Self::AzureOpenai | Self::Ollama | Self::Lmstudio | Self::Vllm)
    }

    /// Whether the key itself may be omitted (local servers often have none).
    #[must_use]
    pub const fn key_is_optional(self) -> bool {
        matches!(self, Self::Ollama | Self::Lmstudio | Self::Vllm)
    }

    /// Whether keyledger can route calls of `surface` to this provider's OpenAI-compatible
    /// endpoints. Anthropic, Groq and Aleph Alpha have no OpenAI-compatible embeddings.
    #[must_use]
    pub const fn offers(self, surface: Surface) -> bool {
        match surface {
            Surface::Chat => true,
            Surface::Embeddings => !matches!(self, Self::Anthropic | Self::Groq | Self::AlephAlpha),
        }
    }

    /// Public prefixes a key of this provider starts with, longest first. They are not secret
    /// and are shown in the mask.
    #[must_use]
    pub const fn public_prefixes(self) -> &'static [&'static str] {
        match self {
            Self::Anthropic => &["sk-ant-"],
            Self::Openai => &["sk-svcacct-", "sk-admin-", "sk-proj-", "sk-"],
            Self::Google => &["AIza"],
            Self::Groq => &["gsk_"],
            _ => &[],
        }
    }
}

impl FromStr for ProviderId {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or(UnknownProvider)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registry_id_round_trips() {
        for p in ProviderId::ALL {
            assert_eq!(p.as_str().parse::<ProviderId>(), Ok(p));
            assert_eq!(serde_json::to_value(p).ok(), Some(serde_json::json!(p.as_str())));
        }
    }

    #[test]
    fn a_key_of_each_provider_reads_right() {
        assert_eq!(ProviderId::Openai.a_key(), "an OpenAI key");
        assert_eq!(ProviderId::Anthropic.a_key(), "an Anthropic key");
        assert_eq!(ProviderId::Groq.a_key(), "a Groq key");
        assert_eq!(ProviderId::Vllm.a_key(), "a vLLM key");
        assert_eq!(ProviderId::Lmstudio.a_key(), "an LM Studio key");
    }

    #[test]
    fn unknown_ids_are_refused() {
        assert!("openai2".parse::<ProviderId>().is_err());
        assert!("".parse::<ProviderId>().is_err());
    }
}
