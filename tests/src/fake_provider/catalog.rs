//! What each fake provider is: the models it serves, where it reads a key, the paths it
//! answers, and its own error bodies, as the real provider's API reference has them.

use keyledger_domain::ProviderId;
use serde_json::{json, Value};

/// The models a provider serves, as its model list names them.
#[must_use]
pub fn models(provider: ProviderId) -> &'static [&'static str] {
    use ProviderId as P;
    match provider {
        P::Anthropic => &[
            "claude-3-5-haiku-latest",
            "claude-3-5-sonnet-latest",
            "claude-haiku-4",
            "claude-sonnet-4",
        ],
        P::Openai => &[
            "gpt-4o",
            "gpt-4o-mini",
            "o3-mini",
            "text-embedding-3-small",
            "text-embedding-3-large",
        ],
        P::Google => &["gemini-1.5-flash", "gemini-2.0-flash", "text-embedding-004"],
        P::Mistral => {
            &["mistral-small-latest", "mistral-large-latest", "codestral-latest", "mistral-embed"]
        }
        P::Groq => &["llama-3.3-70b-versatile", "llama-3.1-8b-instant", "gemma2-9b-it"],
        P::AzureOpenai => &["gpt-4o", "gpt4o", "mine", "text-embedding-3-small"],
        P::AlephAlpha => &["luminous-base", "pharia-1-llm-7b-control"],
        P::Ollama => &["llama3.2:latest", "nomic-embed-text:latest"],
        P::Lmstudio => &["qwen2.5-7b-instruct"],
        P::Vllm => &["meta-llama/Llama-3.3-70B-Instruct"],
    }
}

/// Whether `provider` serves `model` (Ollama also answers to a name without `:latest`).
#[must_use]
pub fn serves(provider: ProviderId, model: &str) -> bool {
    models(provider).iter().any(|m| *m == model || m.strip_suffix(":latest") == Some(model))
}

/// Local servers run without keys; the cloud providers refuse a call without an accepted one.
#[must_use]
pub(super) fn checks_keys(provider: ProviderId) -> bool {
    !matches!(provider, ProviderId::Ollama | ProviderId::Lmstudio | ProviderId::Vllm)
}

/// The header a provider reads its key from on `path` (its OpenAI-compatible endpoints take a
/// bearer token, except Azure's).
#[must_use]
pub(super) fn key_header(provider: ProviderId, path: &str) -> &'static str {
    use ProviderId as P;
    match provider {
        P::Anthropic if !path.ends_with("/chat/completions") => "x-api-key",
        P::Google if !path.starts_with("/v1beta/openai/") => "x-goog-api-key",
        P::AzureOpenai => "api-key",
        _ => "authorization",
    }
}

/// What a request to a provider asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// The model list (any GET of the provider's listing path).
    Models,
    /// Anthropic's native Messages API.
    Messages,
    /// Google's native generateContent, with the model from the path.
    Generate {
        model: String,
        stream: bool,
    },
    /// An OpenAI-shaped chat completions endpoint (Azure's deployments name the model).
    Chat {
        deployment: Option<String>,
    },
    /// An OpenAI-shaped embeddings endpoint.
    Embeddings {
        deployment: Option<String>,
    },
    /// Ollama's native chat, Aleph Alpha's completions: answered OpenAI-shaped enough.
    Native,
    /// OpenAI's organization admin API, which a project key may not use.
    Admin,
    Unknown,
}

/// The route of `method path` at `provider`.
#[must_use]
pub(super) fn route(provider: ProviderId, method: &str, path: &str) -> Route {
    use ProviderId as P;
    let get = method == "GET";
    let listing = match provider {
        P::Anthropic | P::Openai | P::Mistral | P::Lmstudio | P::Vllm => "/v1/models",
        P::Google => "/v1beta/models",
        P::Groq => "/openai/v1/models",
        P::AzureOpenai => "/openai/models",
        P::AlephAlpha => "/models_available",
        P::Ollama => "/api/tags",
    };
    if get && (path == listing || (provider == P::Ollama && path == "/v1/models")) {
        return Route::Models;
    }
    if provider == P::Openai && path.starts_with("/v1/organization/") {
        return Route::Admin;
    }
    if get || method != "POST" {
        return Route::Unknown;
    }
    if let Some(rest) =
        path.strip_prefix("/openai/deployments/").filter(|_| provider == P::AzureOpenai)
    {
        let (deployment, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let deployment = Some(deployment.to_owned());
        return match tail {
            "chat/completions" => Route::Chat { deployment },
            "embeddings" => Route::Embeddings { deployment },
            _ => Route::Unknown,
        };
    }
    if provider == P::Google {
        if let Some(rest) = path.strip_prefix("/v1beta/models/") {
            return match rest.split_once(':') {
                Some((model, "generateContent")) => {
                    Route::Generate { model: model.to_owned(), stream: false }
                }
                Some((model, "streamGenerateContent")) => {
                    Route::Generate { model: model.to_owned(), stream: true }
                }
                _ => Route::Unknown,
            };
        }
    }
    let chat = match provider {
        P::Google => "/v1beta/openai/chat/completions",
        P::Groq => "/openai/v1/chat/completions",
        P::AzureOpenai => "/openai/v1/chat/completions",
        P::AlephAlpha => "/chat/completions",
        _ => "/v1/chat/completions",
    };
    let embeddings = match provider {
        P::Google => Some("/v1beta/openai/embeddings"),
        P::AzureOpenai => Some("/openai/v1/embeddings"),
        P::Openai | P::Mistral | P::Ollama | P::Lmstudio | P::Vllm => Some("/v1/embeddings"),
        P::Anthropic | P::Groq | P::AlephAlpha => None,
    };
    match path {
        p if p == chat => Route::Chat { deployment: None },
        p if Some(p) == embeddings => Route::Embeddings { deployment: None },
        "/v1/messages" if provider == P::Anthropic => Route::Messages,
        "/api/chat" if provider == P::Ollama => Route::Native,
        "/complete" if provider == P::AlephAlpha => Route::Native,
        _ => Route::Unknown,
    }
}

/// What went wrong, for a provider to say in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Problem<'a> {
    BadKey {
        presented: &'a str,
    },
    UnknownModel(&'a str),
    MissingField(&'static str),
    NoSuchPath,
    Failing(u16),
    /// A valid key without the scope a path needs.
    MissingScope,
}

/// The status and body `provider` answers `problem` with.
#[must_use]
pub(super) fn error(provider: ProviderId, problem: Problem<'_>) -> (u16, Value) {
    use Problem as E;
    use ProviderId as P;
    let openai = |status: u16, message: String, kind: &str, code: Value| {
        (status, json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
    };
    match (provider, problem) {
        (P::Anthropic, _) => {
            let (status, kind, message) = match problem {
                E::BadKey { .. } => (401, "authentication_error", "invalid x-api-key".to_owned()),
                E::UnknownModel(model) => (404, "not_found_error", format!("model: {model}")),
                E::MissingField(field) => (400, "invalid_request_error", format!("{field}: Field required")),
                E::NoSuchPath => (404, "not_found_error", "Not found".to_owned()),
                E::MissingScope => (403, "permission_error", "Your API key does not have permission to use the specified resource.".to_owned()),
                E::Failing(429) => (429, "rate_limit_error", "Number of requests has exceeded your rate limit".to_owned()),
                E::Failing(status) => (status, "overloaded_error", "Overloaded".to_owned()),
            };
            (status, json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}))
        }
        (P::Google, _) => {
            let (status, state, message, reason) = match problem {
                E::BadKey { .. } => (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.".to_owned(), Some("API_KEY_INVALID")),
                E::UnknownModel(model) => (404, "NOT_FOUND", format!("models/{model} is not found for API version v1beta, or is not supported for generateContent."), None),
                E::MissingField(field) => (400, "INVALID_ARGUMENT", format!("* GenerateContentRequest.{field}: contents is not specified"), None),
                E::NoSuchPath => (404, "NOT_FOUND", "Method not found.".to_owned(), None),
                E::MissingScope => (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.".to_owned(), None),
                E::Failing(429) => (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).".to_owned(), None),
                E::Failing(status) => (status, "UNAVAILABLE", "The model is overloaded. Please try again later.".to_owned(), None),
            };
            let details: Vec<Value> = reason
                .map(|r| json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r, "domain": "googleapis.com"}))
                .into_iter()
                .collect();
            (status, json!({"error": {"code": status, "message": message, "status": state, "details": details}}))
        }
        (P::Mistral, E::BadKey { .. }) => (401, json!({"message": "Unauthorized", "request_id": "fake"})),
        (P::Mistral, E::UnknownModel(model)) => (
            400,
            json!({"object": "error", "message": format!("Invalid model: {model}"), "type": "invalid_model", "param": null, "code": "1500"}),
        ),
        (P::AzureOpenai, E::BadKey { .. }) => (401, json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}})),
        (P::AzureOpenai, E::UnknownModel(_)) => (404, json!({"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}})),
        (P::Ollama, E::UnknownModel(model)) => (404, json!({"error": {"message": format!("model \"{model}\" not found, try pulling it first"), "type": "api_error", "param": null, "code": null}})),
        (P::Vllm | P::Lmstudio, E::UnknownModel(model)) => (
            404,
            json!({"object": "error", "message": format!("The model `{model}` does not exist."), "type": "NotFoundError", "param": null, "code": 404}),
        ),
        (P::AlephAlpha, E::BadKey { .. }) => (401, json!({"error": "Unauthorized", "code": "UNAUTHENTICATED"})),
        (P::Openai, E::BadKey { presented }) => {
            // OpenAI names the refused key, masked: the start and the last four.
            let tail: String = presented.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            let start: String = presented.chars().take(8).collect();
            openai(401, format!("Incorrect API key provided: {start}****{tail}. You can find your API key at https://platform.openai.com/account/api-keys."), "invalid_request_error", json!("invalid_api_key"))
        }
        (_, E::BadKey { .. }) => openai(401, "Invalid API Key".to_owned(), "invalid_request_error", json!("invalid_api_key")),
        (_, E::MissingScope) => openai(401, "You have insufficient permissions for this operation. Missing scopes: api.management.read.".to_owned(), "invalid_request_error", Value::Null),
        (_, E::UnknownModel(model)) => openai(404, format!("The model `{model}` does not exist or you do not have access to it."), "invalid_request_error", json!("model_not_found")),
        (_, E::MissingField(field)) => openai(400, format!("Missing required parameter: '{field}'."), "invalid_request_error", json!("missing_required_parameter")),
        (_, E::NoSuchPath) => openai(404, "Invalid URL".to_owned(), "invalid_request_error", Value::Null),
        (_, E::Failing(429)) => openai(429, "Rate limit reached for requests".to_owned(), "requests", json!("rate_limit_exceeded")),
        (_, E::Failing(status)) => openai(status, "The server had an error while processing your request. Sorry about that!".to_owned(), "server_error", Value::Null),
    }
}
