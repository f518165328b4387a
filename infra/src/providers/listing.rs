//! Reading a provider's model list, whatever its shape: OpenAI's `data[].id` (also Anthropic,
//! Groq, Mistral, Azure, vLLM, LM Studio), Google's `models[].name` (`models/…`), Ollama's
//! `models[].name`, Aleph Alpha's top-level `[].name`.

use serde_json::Value;

/// One model a provider lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedModel {
    /// The name a call gives the provider for this model.
    pub id: String,
    /// When the provider says it was created (Unix seconds), if it says.
    pub created: Option<u64>,
}

/// The models in a listing `body`; `None` when it is no model list.
#[must_use]
pub fn parse_listing(body: &[u8]) -> Option<Vec<ListedModel>> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let entries = json.get("data").or_else(|| json.get("models")).unwrap_or(&json).as_array()?;
    let mut models = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(name) = ["id", "name", "model"]
            .iter()
            .find_map(|field| entry.get(*field).and_then(Value::as_str))
        else {
            continue;
        };
        // Google names models `models/gemini-…`; calls name them without the collection.
        let id = name.strip_prefix("models/").unwrap_or(name).to_owned();
        let created = entry.get("created").and_then(Value::as_u64);
        // Ollama tags a model `llama3.2:latest`; callers also say `llama3.2`.
        if let Some(untagged) = id.strip_suffix(":latest") {
            models.push(ListedModel { id: untagged.to_owned(), created });
        }
        models.push(ListedModel { id, created });
    }
    Some(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(body: &str) -> Vec<String> {
        parse_listing(body.as_bytes()).expect("a list").into_iter().map(|m| m.id).collect()
    }

    #[test]
    fn every_providers_list_shape_is_read() {
        assert_eq!(
            ids(
                r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}]}"#
            ),
            ["gpt-4o"]
        );
        assert_eq!(
            ids(
                r#"{"data":[{"type":"model","id":"claude-sonnet-4","display_name":"Claude Sonnet 4","created_at":"2025-05-14T00:00:00Z"}],"has_more":false}"#
            ),
            ["claude-sonnet-4"]
        );
        assert_eq!(
            ids(r#"{"models":[{"name":"models/gemini-2.0-flash","version":"2.0"}]}"#),
            ["gemini-2.0-flash"]
        );
        assert_eq!(
            ids(r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest"}]}"#),
            ["llama3.2", "llama3.2:latest"]
        );
        assert_eq!(
            ids(r#"[{"name":"luminous-base"},{"name":"pharia-1-llm-7b-control"}]"#),
            ["luminous-base", "pharia-1-llm-7b-control"]
        );
    }

    proptest::proptest! {
        #[test]
        fn any_answer_is_read_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_listing(&body);
        }
    }

    #[test]
    fn what_is_no_list_says_so() {
        assert_eq!(parse_listing(b"<html>"), None);
        assert_eq!(parse_listing(br#"{"error":{"message":"nope"}}"#), None);
    }
}
