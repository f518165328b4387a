//! What a model call used: reading it from the provider's answer ([`UsageFigures`]), and
//! making sure the answer says it.
//!
//! OpenAI-shaped chat endpoints report usage in a streamed answer only when the request asks
//! for it (`stream_options.include_usage`). A call streamed without it would be recorded as
//! using nothing, and platform-key calls would slip past the cost cap. Where the provider
//! accepts the option, keyledger asks for it; the caller's stream then ends with one more
//! chunk, `choices: []` and the usage, as the OpenAI API defines it.

mod figures;

pub use figures::UsageFigures;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::registry::ProviderSpec;
use keyledger_domain::ProviderId;

/// The body to send instead of `body` so that the streamed answer of an OpenAI-shaped chat
/// call to `path` reports its usage; `None` when `body` is fine as it is.
#[must_use]
pub fn asking_for_stream_usage(provider: ProviderId, path: &str, body: &Bytes) -> Option<Bytes> {
    let path = path.split('?').next().unwrap_or_default();
    if !ProviderSpec::of(provider).reports_stream_usage_when_asked
        || !path.ends_with("/chat/completions")
        // Most calls do not stream: spare them parsing the prompt.
        || !body.windows(8).any(|w| w == b"\"stream\"")
    {
        return None;
    }
    let mut request: Map<String, Value> = serde_json::from_slice(body).ok()?;
    if request.get("stream") != Some(&Value::Bool(true)) {
        return None;
    }
    let options = request.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
    let options = options.as_object_mut()?;
    if options.get("include_usage") == Some(&Value::Bool(true)) {
        return None;
    }
    options.insert("include_usage".to_owned(), Value::Bool(true));
    serde_json::to_vec(&request).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn asked(provider: ProviderId, path: &str, body: Value) -> Option<Value> {
        asking_for_stream_usage(provider, path, &Bytes::from(body.to_string()))
            .map(|b| serde_json::from_slice(&b).expect("json"))
    }

    #[test]
    fn a_streamed_chat_call_asks_for_its_usage_and_keeps_everything_else() {
        let sent = asked(
            ProviderId::Openai,
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "stream": true, "stream_options": {"other": 1}}),
        );
        assert_eq!(
            sent,
            Some(json!({"model": "gpt-4o", "stream": true,
                        "stream_options": {"other": 1, "include_usage": true}}))
        );
    }

    #[test]
    fn calls_that_report_usage_anyway_go_as_they_are() {
        let streamed = json!({"model": "m", "stream": true});
        assert_eq!(asked(ProviderId::Openai, "/v1/chat/completions", json!({"model": "m"})), None);
        assert_eq!(asked(ProviderId::Openai, "/v1/embeddings", streamed.clone()), None);
        assert_eq!(asked(ProviderId::Anthropic, "/v1/messages", streamed.clone()), None);
        // Mistral always reports usage in the last chunk, and refuses options it does not know.
        assert_eq!(asked(ProviderId::Mistral, "/v1/chat/completions", streamed), None);
        let already = json!({"stream": true, "stream_options": {"include_usage": true}});
        assert_eq!(asked(ProviderId::Openai, "/v1/chat/completions", already), None);
    }
}
