//! What a call may use before it is made, read from its request body: held against a
//! platform key's cost cap while the call runs, then replaced by what the provider reports.

use serde::Deserialize;

/// Output tokens assumed for a call that sets no limit of its own.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4_096;

/// An upper estimate of a call's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEstimate {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The parts of a request body that bound its output, across the providers' shapes.
#[derive(Deserialize, Default)]
struct Limits {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    #[serde(rename = "generationConfig")]
    generation_config: Option<GenerationConfig>,
    /// OpenAI's number of choices: each is generated in full.
    n: Option<u64>,
}

#[derive(Deserialize)]
struct GenerationConfig {
    #[serde(rename = "maxOutputTokens")]
    max_output_tokens: Option<u64>,
}

impl CallEstimate {
    /// Estimates a call from its request `body`. Input: a token per three bytes of the body,
    /// which is more than any tokenizer makes of text (about four bytes a token for English,
    /// three for most other scripts) and so errs high. Output: the body's own limit times its
    /// choices, else [`DEFAULT_MAX_OUTPUT_TOKENS`]; none when `expects_output` is false
    /// (embeddings).
    #[must_use]
    pub fn of_request(body: &[u8], expects_output: bool) -> Self {
        let input_tokens = (body.len() as u64).div_ceil(3);
        if !expects_output {
            return Self { input_tokens, output_tokens: 0 };
        }
        let limits: Limits = serde_json::from_slice(body).unwrap_or_default();
        let limit = limits
            .max_tokens
            .or(limits.max_completion_tokens)
            .or(limits.max_output_tokens)
            .or(limits.generation_config.and_then(|g| g.max_output_tokens))
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        let choices = limits.n.unwrap_or(1).clamp(1, 128);
        Self { input_tokens, output_tokens: limit.saturating_mul(choices) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bodys_own_limit_bounds_the_output() {
        let body = br#"{"model":"gpt-4o","max_tokens":100,"messages":[]}"#;
        let estimate = CallEstimate::of_request(body, true);
        assert_eq!(estimate.output_tokens, 100);
        assert_eq!(estimate.input_tokens, (body.len() as u64).div_ceil(3));
    }

    #[test]
    fn every_providers_limit_and_the_number_of_choices_count() {
        let cases: [(&[u8], u64); 4] = [
            (br#"{"max_completion_tokens":50,"n":3}"#, 150),
            (br#"{"max_output_tokens":70}"#, 70),
            (br#"{"generationConfig":{"maxOutputTokens":80}}"#, 80),
            (br#"{"messages":[]}"#, DEFAULT_MAX_OUTPUT_TOKENS),
        ];
        for (body, output) in cases {
            assert_eq!(CallEstimate::of_request(body, true).output_tokens, output);
        }
    }

    #[test]
    fn embeddings_have_no_output_and_junk_is_estimated_by_size() {
        assert_eq!(CallEstimate::of_request(br#"{"input":"hello"}"#, false).output_tokens, 0);
        let junk = CallEstimate::of_request(b"not json at all", true);
        assert_eq!(
            junk,
            CallEstimate { input_tokens: 5, output_tokens: DEFAULT_MAX_OUTPUT_TOKENS }
        );
    }
}
