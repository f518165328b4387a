//! Per-provider facts: default base URL, how the key is presented, the verify call.
//! Sources: shared/PROVIDERS.md, checked against each provider's API reference.

use keyledger_domain::routing::Surface;
use keyledger_domain::ProviderId;

/// How a provider expects the key in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer KEY`.
    Bearer,
    /// A header of its own holding the bare key, plus fixed extra headers.
    Header { name: &'static str, extra: &'static [(&'static str, &'static str)] },
}

/// What keyledger knows about talking to one provider.
#[derive(Debug, Clone, Copy)]
pub struct ProviderSpec {
    pub auth: Auth,
    /// Path (and query) of the cheapest authenticated call, such as listing models.
    pub verify_path: &'static str,
    /// Path (and query) of its whole model list (the verify call asks for one page).
    pub listing_path: &'static str,
    /// Path of its OpenAI-compatible chat completions.
    pub chat_path: &'static str,
    /// Path of its OpenAI-compatible embeddings, where it has them (see
    /// `ProviderId::offers`).
    pub embeddings_path: Option<&'static str>,
    /// How that OpenAI-compatible endpoint takes the key.
    pub chat_auth: Auth,
    /// Its OpenAI-shaped chat endpoints report usage in a stream only when asked with
    /// `stream_options.include_usage`, and accept that option.
    pub reports_stream_usage_when_asked: bool,
}

/// The provider's public base URL, or `None` where the organization says where it lives.
#[must_use]
pub fn default_base_url(provider: ProviderId) -> Option<&'static str> {
    use ProviderId as P;
    match provider {
        P::Anthropic => Some("https://api.anthropic.com"),
        P::Openai => Some("https://api.openai.com"),
        P::Google => Some("https://generativelanguage.googleapis.com"),
        P::Mistral => Some("https://api.mistral.ai"),
        P::Groq => Some("https://api.groq.com"),
        P::AlephAlpha => Some("https://api.aleph-alpha.com"),
        P::AzureOpenai | P::Ollama | P::Lmstudio | P::Vllm => None,
    }
}

impl ProviderSpec {
    /// The spec of `provider`.
    #[must_use]
    pub fn of(provider: ProviderId) -> Self {
        use ProviderId as P;
        let (auth, verify_path) = match provider {
            P::Anthropic => (
                Auth::Header { name: "x-api-key", extra: &[("anthropic-version", "2023-06-01")] },
                "/v1/models",
            ),
            P::Openai | P::Mistral => (Auth::Bearer, "/v1/models"),
            P::Google => (Auth::Header { name: "x-goog-api-key", extra: &[] }, "/v1beta/models"),
            P::Groq => (Auth::Bearer, "/openai/v1/models"),
            P::AzureOpenai => (
                Auth::Header { name: "api-key", extra: &[] },
                "/openai/models?api-version=2024-10-21",
            ),
            P::AlephAlpha => (Auth::Bearer, "/models_available"),
            P::Ollama => (Auth::Bearer, "/api/tags"),
            P::Lmstudio | P::Vllm => (Auth::Bearer, "/v1/models"),
        };
        let chat_path = match provider {
            P::Google => "/v1beta/openai/chat/completions",
            P::Groq => "/openai/v1/chat/completions",
            P::AzureOpenai => "/openai/v1/chat/completions",
            P::AlephAlpha => "/chat/completions",
            P::Anthropic | P::Openai | P::Mistral | P::Ollama | P::Lmstudio | P::Vllm => {
                "/v1/chat/completions"
            }
        };
        let listing_path = match provider {
            P::Anthropic => "/v1/models?limit=1000",
            P::Google => "/v1beta/models?pageSize=1000",
            _ => verify_path,
        };
        let embeddings_path = match provider {
            P::Google => Some("/v1beta/openai/embeddings"),
            P::AzureOpenai => Some("/openai/v1/embeddings"),
            P::Openai | P::Mistral | P::Ollama | P::Lmstudio | P::Vllm => Some("/v1/embeddings"),
            P::Anthropic | P::Groq | P::AlephAlpha => None,
        };
        let chat_auth = match provider {
            P::AzureOpenai => auth,
            _ => Auth::Bearer,
        };
        // Mistral reports usage unasked and refuses unknown options; for Google, Aleph Alpha
        // and LM Studio the option is not documented.
        let reports_stream_usage_when_asked = matches!(
            provider,
            P::Openai | P::AzureOpenai | P::Groq | P::Anthropic | P::Ollama | P::Vllm
        );
        Self {
            auth,
            verify_path,
            listing_path,
            chat_path,
            embeddings_path,
            chat_auth,
            reports_stream_usage_when_asked,
        }
    }

    /// The path of its OpenAI-compatible endpoint for `surface`.
    #[must_use]
    pub fn path_for(&self, surface: Surface) -> Option<&'static str> {
        match surface {
            Surface::Chat => Some(self.chat_path),
            Surface::Embeddings => self.embeddings_path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_has_a_path_for_every_surface_a_provider_offers() {
        for provider in ProviderId::ALL {
            for surface in [Surface::Chat, Surface::Embeddings] {
                assert_eq!(
                    ProviderSpec::of(provider).path_for(surface).is_some(),
                    provider.offers(surface),
                    "{provider} {surface:?}"
                );
            }
        }
    }
}
