//! Reading what a call used from the provider's own answer: OpenAI-shaped and Anthropic-shaped
//! bodies, Google's `usageMetadata`, and their server-sent-event streams.

use serde_json::Value;

use keyledger_domain::usage::capped;

/// Tokens a call used, and the model that answered, as the provider reported them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFigures {
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The provider reported more than [`keyledger_domain::usage::MAX_TOKENS_PER_CALL`]; the figures are capped
    /// there. The call was made: it is recorded, never refused after the fact.
    pub capped: bool,
}

impl UsageFigures {
    /// Reads the figures from a whole answer body, JSON or an SSE stream (`data: …` lines).
    /// Later reports win, as streams send running totals.
    #[must_use]
    pub fn from_body(body: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        let mut figures = Self::default();
        let found = match serde_json::from_str::<Value>(text) {
            Ok(json) => figures.absorb(&json),
            Err(_) => {
                let mut found = false;
                for line in text.lines() {
                    let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
                    if let Ok(json) = serde_json::from_str::<Value>(data) {
                        found |= figures.absorb(&json);
                    }
                }
                found
            }
        };
        found.then(|| figures.within_bounds())
    }

    /// The figures capped at [`keyledger_domain::usage::MAX_TOKENS_PER_CALL`], flagged if they were over.
    #[must_use]
    pub fn within_bounds(self) -> Self {
        let (input_tokens, input_capped) = capped(self.input_tokens);
        let (output_tokens, output_capped) = capped(self.output_tokens);
        Self { input_tokens, output_tokens, capped: input_capped || output_capped, ..self }
    }

    /// Takes what `json` says; whether it said anything about usage.
    fn absorb(&mut self, json: &Value) -> bool {
        if self.model.is_none() {
            let model = json.get("model").or_else(|| json.pointer("/message/model"));
            self.model = model.and_then(Value::as_str).map(str::to_owned);
        }
        let number = |v: Option<&Value>| v.and_then(Value::as_u64);
        let mut found = false;
        // OpenAI and its imitators: usage.prompt_tokens / completion_tokens.
        // Anthropic: usage.input_tokens / output_tokens, in message_start.message.usage and
        // message_delta.usage when streamed.
        for usage in [json.get("usage"), json.pointer("/message/usage")].into_iter().flatten() {
            if let Some(n) =
                number(usage.get("prompt_tokens")).or(number(usage.get("input_tokens")))
            {
                self.input_tokens = n;
                found = true;
            }
            if let Some(n) =
                number(usage.get("completion_tokens")).or(number(usage.get("output_tokens")))
            {
                self.output_tokens = n;
                found = true;
            }
        }
        // Ollama's native API: prompt_eval_count / eval_count; Aleph Alpha's:
        // num_tokens_prompt_total / num_tokens_generated.
        for (input, output) in [
            ("prompt_eval_count", "eval_count"),
            ("num_tokens_prompt_total", "num_tokens_generated"),
        ] {
            if let (Some(i), Some(o)) = (number(json.get(input)), number(json.get(output))) {
                (self.input_tokens, self.output_tokens) = (i, o);
                found = true;
            }
        }
        // Google: usageMetadata.promptTokenCount / candidatesTokenCount.
        if let Some(meta) = json.get("usageMetadata") {
            if let Some(n) = number(meta.get("promptTokenCount")) {
                self.input_tokens = n;
                found = true;
            }
            if let Some(n) = number(meta.get("candidatesTokenCount")) {
                self.output_tokens = n;
                found = true;
            }
            if self.model.is_none() {
                self.model = json.get("modelVersion").and_then(Value::as_str).map(str::to_owned);
            }
        }
        found
    }
}

#[cfg(test)]
#[path = "../../../../domain/tests/support/provider_answers.rs"]
mod provider_answers;

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_domain::usage::MAX_TOKENS_PER_CALL;

    fn figures(model: &str, input: u64, output: u64) -> Option<UsageFigures> {
        Some(UsageFigures {
            model: Some(model.to_owned()),
            input_tokens: input,
            output_tokens: output,
            capped: false,
        })
    }

    #[test]
    fn a_provider_reporting_beyond_the_bound_is_capped_and_flagged() {
        let body =
            br#"{"model":"m","usage":{"prompt_tokens":5000000000000000000,"completion_tokens":7}}"#;
        let read = UsageFigures::from_body(body).expect("figures");
        assert_eq!((read.input_tokens, read.output_tokens, read.capped), (1_000_000_000, 7, true));
    }

    #[test]
    fn an_openai_answer() {
        let body = br#"{"id":"c","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
        assert_eq!(UsageFigures::from_body(body), figures("gpt-4o-mini", 12, 7));
    }

    #[test]
    fn an_anthropic_answer() {
        let body = br#"{"type":"message","model":"claude-3-5-haiku-latest","usage":{"input_tokens":30,"output_tokens":5}}"#;
        assert_eq!(UsageFigures::from_body(body), figures("claude-3-5-haiku-latest", 30, 5));
    }

    #[test]
    fn an_openai_stream_reports_usage_in_its_last_chunk() {
        let body = b"data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
                     data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n\
                     data: [DONE]\n\n";
        assert_eq!(UsageFigures::from_body(body), figures("gpt-4o", 9, 2));
    }

    #[test]
    fn an_anthropic_stream_reports_input_at_the_start_and_output_at_the_end() {
        let body = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-3-5-sonnet-latest\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
                     event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hello\"}}\n\n\
                     event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        assert_eq!(UsageFigures::from_body(body), figures("claude-3-5-sonnet-latest", 25, 15));
    }

    #[test]
    fn a_google_answer() {
        let body = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":8},"modelVersion":"gemini-1.5-flash"}"#;
        assert_eq!(UsageFigures::from_body(body), figures("gemini-1.5-flash", 4, 8));
    }

    #[test]
    fn ollama_and_aleph_alpha_native_answers() {
        let ollama = br#"{"model":"llama3.2","message":{"role":"assistant","content":"Hi"},"done":true,"prompt_eval_count":10,"eval_count":5}"#;
        assert_eq!(UsageFigures::from_body(ollama), figures("llama3.2", 10, 5));
        let aleph = br#"{"model_version":"2024-01","completions":[],"num_tokens_prompt_total":11,"num_tokens_generated":6}"#;
        let read = UsageFigures::from_body(aleph).expect("figures");
        assert_eq!((read.input_tokens, read.output_tokens), (11, 6));
    }

    #[test]
    fn an_answer_without_usage_says_so() {
        assert_eq!(UsageFigures::from_body(br#"{"data":[]}"#), None);
        assert_eq!(UsageFigures::from_body(b"not json"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn usage_figures_stay_in_bounds_whatever_a_provider_answers(body in super::provider_answers::answer()) {
            if let Some(figures) = UsageFigures::from_body(&body) {
                proptest::prop_assert!(figures.input_tokens <= MAX_TOKENS_PER_CALL);
                proptest::prop_assert!(figures.output_tokens <= MAX_TOKENS_PER_CALL);
            }
        }
    }
}
