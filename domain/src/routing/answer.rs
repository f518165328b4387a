//! What a provider's answer means for the call that got it: back to the caller, on to the next
//! provider, or a refused key that stops the call.

use crate::usage::KeySource;
use crate::verification::{contains, VerificationOutcome};

/// Why an attempt at one provider gave way to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection within the connect timeout, or it broke before an answer.
    Unreachable,
    /// A 5xx answer.
    ServerError(u16),
    /// 429: the provider is throttling.
    Throttled,
    /// The provider does not know the model a bare name was sent to it as.
    ModelNotFound,
    /// The provider refused the platform's own key: the operator's problem, not the caller's.
    PlatformKeyRefused(u16),
    /// keyledger would not send the key there (the stored endpoint is refused now).
    EndpointRefused,
}

impl Failure {
    /// A short account for the caller, such as `answered 503`.
    #[must_use]
    pub fn describe(self) -> String {
        match self {
            Self::Unreachable => "did not answer".to_owned(),
            Self::ServerError(status) => format!("answered {status}"),
            Self::Throttled => "answered 429 (rate limited)".to_owned(),
            Self::ModelNotFound => "does not serve that model".to_owned(),
            Self::PlatformKeyRefused(status) => format!("refused the platform's key ({status})"),
            Self::EndpointRefused => "has a stored endpoint this server refuses".to_owned(),
        }
    }
}

/// What becomes of one provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It goes back to the caller as it is: a success, or a 4xx about the request itself.
    Deliver,
    /// The call may move on to the next provider; this answer is not shown.
    MoveOn(Failure),
    /// The organization's own key was refused. The call stops here: no other provider, and
    /// never the platform's key in its place.
    KeyRefused(VerificationOutcome),
}

/// Judges an answer with `status` and `body` to a call that went out with a key from
/// `source`; `bare` says the model was routed from a bare name (so a provider that does not
/// know it is passed over rather than believed).
#[must_use]
pub fn judge(status: u16, body: &[u8], bare: bool, source: KeySource) -> Verdict {
    if (200..400).contains(&status) {
        return Verdict::Deliver;
    }
    let about_the_key = VerificationOutcome::of_answer(status, body);
    if about_the_key.is_refusal() {
        return match source {
            KeySource::Byok => Verdict::KeyRefused(about_the_key),
            KeySource::Platform => Verdict::MoveOn(Failure::PlatformKeyRefused(status)),
        };
    }
    if status == 429 {
        return Verdict::MoveOn(Failure::Throttled);
    }
    if status >= 500 {
        return Verdict::MoveOn(Failure::ServerError(status));
    }
    if bare && is_model_not_found(status, body) {
        return Verdict::MoveOn(Failure::ModelNotFound);
    }
    Verdict::Deliver
}

/// A provider saying it does not know the model: 404 on a model-call path (OpenAI, Anthropic,
/// Groq, Google, Ollama, vLLM), or 400 with `model_not_found` / `invalid_model` (Mistral).
fn is_model_not_found(status: u16, body: &[u8]) -> bool {
    status == 404
        || (status == 400
            && (contains(body, b"model_not_found") || contains(body, b"invalid_model")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI_404: &[u8] = br#"{"error":{"message":"The model `claude-x` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
    const MISTRAL_400: &[u8] = br#"{"object":"error","message":"Invalid model: gpt-4o","type":"invalid_model","param":null,"code":"1500"}"#;
    const GOOGLE_BAD_KEY: &[u8] = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;

    #[test]
    fn a_success_goes_back_to_the_caller() {
        assert_eq!(judge(200, b"{}", true, KeySource::Byok), Verdict::Deliver);
    }

    #[test]
    fn a_refused_byok_key_stops_the_call() {
        assert_eq!(
            judge(401, b"{}", true, KeySource::Byok),
            Verdict::KeyRefused(VerificationOutcome::InvalidKey)
        );
        assert_eq!(
            judge(403, b"{}", false, KeySource::Byok),
            Verdict::KeyRefused(VerificationOutcome::InsufficientPermissions)
        );
        assert_eq!(
            judge(400, GOOGLE_BAD_KEY, true, KeySource::Byok),
            Verdict::KeyRefused(VerificationOutcome::InvalidKey),
            "Google refuses a key with 400 API_KEY_INVALID"
        );
    }

    #[test]
    fn a_refused_platform_key_moves_on() {
        assert_eq!(
            judge(401, b"{}", true, KeySource::Platform),
            Verdict::MoveOn(Failure::PlatformKeyRefused(401))
        );
    }

    #[test]
    fn throttling_and_server_errors_move_on() {
        assert_eq!(judge(429, b"{}", false, KeySource::Byok), Verdict::MoveOn(Failure::Throttled));
        assert_eq!(
            judge(503, b"{}", false, KeySource::Platform),
            Verdict::MoveOn(Failure::ServerError(503))
        );
    }

    #[test]
    fn an_unknown_model_moves_on_only_for_a_bare_name() {
        assert_eq!(
            judge(404, OPENAI_404, true, KeySource::Byok),
            Verdict::MoveOn(Failure::ModelNotFound)
        );
        assert_eq!(
            judge(400, MISTRAL_400, true, KeySource::Byok),
            Verdict::MoveOn(Failure::ModelNotFound)
        );
        assert_eq!(
            judge(404, OPENAI_404, false, KeySource::Byok),
            Verdict::Deliver,
            "a model the caller placed at a provider itself: the provider's word goes back"
        );
    }

    #[test]
    fn other_client_errors_go_back_unchanged() {
        let bad = br#"{"error":{"message":"messages is required","type":"invalid_request_error"}}"#;
        assert_eq!(judge(400, bad, true, KeySource::Byok), Verdict::Deliver);
        assert_eq!(judge(422, b"{}", true, KeySource::Platform), Verdict::Deliver);
    }
}
