//! What each fake provider answers a call it accepts: model lists, chat completions, messages,
//! embeddings, as JSON or as the server-sent events of that provider's stream, with usage
//! figures in the provider's own fields.

use keyledger_domain::ProviderId;
use serde_json::{json, Value};

use super::catalog::models;

/// A successful answer: one JSON body, or the chunks of an event stream.
#[derive(Debug, Clone)]
pub(super) enum Answer {
    Json(Value),
    Events(Vec<String>),
}

const CREATED: u64 = 1_715_367_049;

/// The provider's model list in its own shape.
#[must_use]
pub(super) fn listing(provider: ProviderId, path: &str) -> Value {
    let names = models(provider);
    match provider {
        ProviderId::Anthropic => json!({
            "data": names.iter().map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "2025-05-14T00:00:00Z"})).collect::<Vec<_>>(),
            "has_more": false, "first_id": names.first(), "last_id": names.last(),
        }),
        ProviderId::Google => json!({
            "models": names.iter().map(|m| json!({"name": format!("models/{m}"), "displayName": m, "supportedGenerationMethods": ["generateContent"]})).collect::<Vec<_>>(),
        }),
        ProviderId::Ollama if path == "/api/tags" => json!({
            "models": names.iter().map(|m| json!({"name": m, "model": m, "size": 2_019_393_189_u64})).collect::<Vec<_>>(),
        }),
        ProviderId::AlephAlpha => {
            json!(names.iter().map(|m| json!({"name": m, "description": m})).collect::<Vec<_>>())
        }
        _ => json!({
            "object": "list",
            "data": names.iter().map(|m| json!({"id": m, "object": "model", "created": CREATED, "owned_by": provider.as_str()})).collect::<Vec<_>>(),
        }),
    }
}

/// Whether an OpenAI-shaped stream of `provider` ends with a usage chunk: OpenAI and most of
/// its imitators only when asked with `stream_options.include_usage`; Mistral always; Google's,
/// Aleph Alpha's and LM Studio's compatible endpoints never.
fn streams_usage(provider: ProviderId, asked: bool) -> bool {
    match provider {
        ProviderId::Mistral => true,
        ProviderId::Google | ProviderId::AlephAlpha | ProviderId::Lmstudio => false,
        _ => asked,
    }
}

fn chat_chunk(model: &str, delta: Value, finish: Value) -> String {
    let chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": CREATED, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {chunk}\n\n")
}

/// An OpenAI-shaped chat completion (12 prompt and 7 completion tokens), or its stream (9 and
/// 2, in a last chunk only where the provider sends one), with a `: keep-alive` comment first.
#[must_use]
pub(super) fn chat(provider: ProviderId, model: &str, stream: bool, usage_asked: bool) -> Answer {
    if !stream {
        return Answer::Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        }));
    }
    let mut last = chat_chunk(model, json!({}), json!("stop"));
    if streams_usage(provider, usage_asked) {
        let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": CREATED, "model": model,
                           "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}});
        last.push_str(&format!("data: {usage}\n\n"));
    }
    last.push_str("data: [DONE]\n\n");
    Answer::Events(vec![
        format!(
            ": keep-alive\n\n{}",
            chat_chunk(model, json!({"role": "assistant", "content": "Hel"}), Value::Null)
        ),
        chat_chunk(model, json!({"content": "lo"}), Value::Null),
        last,
    ])
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// An Anthropic Messages answer (30 input, 5 output tokens), or its event stream (25 input at
/// the start, 15 output at the end).
#[must_use]
pub(super) fn messages(model: &str, stream: bool) -> Answer {
    if !stream {
        return Answer::Json(json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 30, "output_tokens": 5},
        }));
    }
    let start = json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}});
    let delta = |text: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}});
    Answer::Events(vec![
        [
            event("message_start", &start),
            event("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            event("ping", &json!({"type": "ping"})),
            event("content_block_delta", &delta("Hel")),
        ]
        .concat(),
        event("content_block_delta", &delta("lo")),
        [
            event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})),
            event("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 15}})),
            event("message_stop", &json!({"type": "message_stop"})),
        ]
        .concat(),
    ])
}

/// Google's generateContent answer (4 prompt, 8 candidate tokens), or its `alt=sse` stream.
#[must_use]
pub(super) fn generate(model: &str, stream: bool) -> Answer {
    let part = |text: &str, usage: Value| {
        json!({
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": model,
        })
    };
    let usage = json!({"promptTokenCount": 4, "candidatesTokenCount": 8, "totalTokenCount": 12});
    if !stream {
        return Answer::Json(part("Hello", usage));
    }
    Answer::Events(vec![
        format!(
            "data: {}\r\n\r\n",
            part("Hel", json!({"promptTokenCount": 4, "totalTokenCount": 4}))
        ),
        format!("data: {}\r\n\r\n", part("lo", usage)),
    ])
}

/// OpenAI-shaped embeddings of each input (8 prompt tokens in all).
#[must_use]
pub(super) fn embeddings(model: &str, inputs: usize) -> Value {
    let data: Vec<Value> = (0..inputs.max(1))
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.0023, -0.0091, 0.0154]}))
        .collect();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 8, "total_tokens": 8}})
}

/// Ollama's native chat and Aleph Alpha's completion, with their own usage fields.
#[must_use]
pub(super) fn native(provider: ProviderId, model: &str) -> Value {
    match provider {
        ProviderId::AlephAlpha => json!({
            "model_version": "2024-01", "completions": [{"completion": "Hello", "finish_reason": "maximum_tokens"}],
            "num_tokens_prompt_total": 10, "num_tokens_generated": 5,
        }),
        _ => json!({
            "model": model, "created_at": "2026-01-01T00:00:00Z", "message": {"role": "assistant", "content": "Hello"},
            "done": true, "prompt_eval_count": 10, "eval_count": 5,
        }),
    }
}
