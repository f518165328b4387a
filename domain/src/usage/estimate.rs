//! What a call may use before it is made, read from its request body: held against a
//! platform key's cost cap while the call runs, then replaced by what the provider reports.

use serde_json::Value;

/// Output tokens assumed for a call that sets no limit of its own.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4_096;

/// Input tokens allowed for each binary payload (an image, a sound) sent as base64: more than
/// the providers bill for one image (Anthropic at most about 1,600, OpenAI about 1,100 at high
/// detail, Google 258), where counting its bytes as text would make it thousands.
pub const BINARY_PAYLOAD_TOKENS: u64 = 2_000;

/// A string this long made only of base64 characters is a payload, not text.
const BINARY_PAYLOAD_MIN_LEN: usize = 1_024;

/// An upper estimate of a call's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEstimate {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl CallEstimate {
    /// Estimates a call from its request `body`. Input: a token per three bytes of text, which
    /// is more than any tokenizer makes of it (about four bytes a token for English, three for
    /// most other scripts), and [`BINARY_PAYLOAD_TOKENS`] for each base64 payload. Output: the
    /// body's own limit (`max_tokens`, `max_completion_tokens`, `max_output_tokens`, Google's
    /// `generationConfig.maxOutputTokens`) times its choices (`n`), else
    /// [`DEFAULT_MAX_OUTPUT_TOKENS`]; none when `expects_output` is false (embeddings).
    #[must_use]
    pub fn of_request(body: &[u8], expects_output: bool) -> Self {
        let Ok(json) = serde_json::from_slice::<Value>(body) else {
            let output_tokens = if expects_output { DEFAULT_MAX_OUTPUT_TOKENS } else { 0 };
            return Self { input_tokens: text_tokens(body.len()), output_tokens };
        };
        let (text_bytes, payloads) = measure(&json);
        let input_tokens =
            text_tokens(text_bytes).saturating_add(payloads.saturating_mul(BINARY_PAYLOAD_TOKENS));
        if !expects_output {
            return Self { input_tokens, output_tokens: 0 };
        }
        let number = |pointer: &str| json.pointer(pointer).and_then(Value::as_u64);
        let limit = number("/max_tokens")
            .or_else(|| number("/max_completion_tokens"))
            .or_else(|| number("/max_output_tokens"))
            .or_else(|| number("/generationConfig/maxOutputTokens"))
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        let choices = number("/n").unwrap_or(1).clamp(1, 128);
        Self { input_tokens, output_tokens: limit.saturating_mul(choices) }
    }
}

fn text_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(3)
}

/// The bytes of text in `value` (its strings and keys, plus a few for each other value), and
/// how many of its strings are base64 payloads.
fn measure(value: &Value) -> (usize, u64) {
    match value {
        Value::String(text) if is_binary_payload(text) => (0, 1),
        Value::String(text) => (text.len() + 2, 0),
        Value::Array(items) => items.iter().map(measure).fold((2, 0), add),
        Value::Object(fields) => fields
            .iter()
            .map(|(key, value)| add((key.len() + 3, 0), measure(value)))
            .fold((2, 0), add),
        Value::Null | Value::Bool(_) | Value::Number(_) => (5, 0),
    }
}

fn add(a: (usize, u64), b: (usize, u64)) -> (usize, u64) {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}

/// A `data:…;base64,…` URL, or a long run of nothing but base64 characters (Anthropic's and
/// Google's inline `data`).
fn is_binary_payload(text: &str) -> bool {
    if text.len() < BINARY_PAYLOAD_MIN_LEN {
        return false;
    }
    let data = match text.strip_prefix("data:") {
        Some(url) => match url.split_once(";base64,") {
            Some((_, data)) => data,
            None => return false,
        },
        None => text,
    };
    data.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bodys_own_limit_bounds_the_output() {
        let body = br#"{"model":"gpt-4o","max_tokens":100,"messages":[]}"#;
        let estimate = CallEstimate::of_request(body, true);
        assert_eq!(estimate.output_tokens, 100);
        assert!(estimate.input_tokens >= (body.len() as u64) / 4, "{estimate:?}");
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
    fn text_is_counted_by_its_bytes() {
        let text = "word ".repeat(3_000);
        let body = serde_json::json!({"messages": [{"role": "user", "content": text}]}).to_string();
        let estimate = CallEstimate::of_request(body.as_bytes(), true);
        assert!(estimate.input_tokens >= 5_000 && estimate.input_tokens <= 5_100, "{estimate:?}");
    }

    #[test]
    fn an_image_costs_an_allowance_not_its_bytes() {
        let image = "iVBORw0KGgo".repeat(200_000);
        for body in [
            serde_json::json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{image}")}}]}]}),
            serde_json::json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}}]}], "max_tokens": 10}),
        ] {
            let estimate = CallEstimate::of_request(body.to_string().as_bytes(), true);
            assert!(
                estimate.input_tokens > BINARY_PAYLOAD_TOKENS
                    && estimate.input_tokens < BINARY_PAYLOAD_TOKENS + 100,
                "{estimate:?}"
            );
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
