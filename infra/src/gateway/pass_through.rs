//! The gateway's pass-through: a caller's request to one provider's own API, with the
//! resolved key put in, confined under the provider's base URL.

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use reqwest::header::HeaderMap;
use reqwest::Method;
use tokio::time::Instant;

use super::attempt::{Tried, Try};
use super::{Answer, Gateway, GatewayError};
use keyledger_domain::{OrgId, ProviderId};
use keyledger_store::metadata::Actor;

/// A request for one provider's own API.
#[derive(Debug)]
pub struct PassThrough<'a> {
    pub org: &'a OrgId,
    pub actor: &'a Actor,
    pub provider: ProviderId,
    pub method: Method,
    /// The provider's path as the caller sent it (still percent-encoded), without the
    /// leading `/`.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// What a pass-through body says of itself (the rest is passed over unread).
#[derive(serde::Deserialize)]
struct Requested {
    model: Option<String>,
}

impl Gateway {
    /// Forwards `call` to its provider with the resolved key. A POST is a model call: metered
    /// and, on the platform's key, counted in the quota. Other methods (listing models,
    /// polling a batch, fetching a file) need the organization's own key.
    ///
    /// # Errors
    /// [`GatewayError`]: a path that would leave the provider's base path, no key, no quota,
    /// a refused BYOK key, an unreachable provider, a timeout.
    pub async fn pass_through(&self, call: PassThrough<'_>) -> Result<Answer, GatewayError> {
        confined(call.path)?;
        let deadline = Instant::now() + self.timeouts.call;
        let path_and_query = match call.query {
            Some(query) => format!("/{}?{query}", call.path),
            None => format!("/{}", call.path),
        };
        let model_call = call.method == Method::POST;
        let model = model_call
            .then(|| {
                serde_json::from_slice::<Requested>(&call.body)
                    .ok()
                    .and_then(|r| r.model)
                    .or_else(|| model_in_path(call.path))
            })
            .flatten();
        let keyring = self.calls.current(call.org).await?;
        let tried = self
            .try_at(Try {
                org: call.org,
                keyring: &keyring,
                actor: call.actor,
                attempt_id: format!("{}:{}", uuid::Uuid::new_v4(), call.provider),
                provider: call.provider,
                method: call.method,
                path_and_query: &path_and_query,
                headers: call.headers,
                body: call.body,
                model,
                bare: false,
                openai_compatible: false,
                model_call,
                expects_output: !is_embedding(call.path),
                may_move_on: false,
                deadline,
            })
            .await?;
        match tried {
            Tried::Answered(answer) => Ok(answer),
            Tried::Failed(failure) => {
                Err(GatewayError::ProviderFailed { provider: call.provider, failure })
            }
        }
    }
}

/// Refuses a path that could leave the provider's base path once a URL parser or the provider
/// normalizes it: a `.` or `..` segment, percent-encoded or not (even twice), or a segment that
/// decodes to a slash or backslash.
fn confined(path: &str) -> Result<(), GatewayError> {
    for segment in path.split('/') {
        let mut decoded = segment.to_owned();
        // Decoding until nothing changes (four rounds at most) catches `%2e%2e` and
        // `%252e%252e` alike.
        for _ in 0..4 {
            let next = percent_decode_str(&decoded).decode_utf8_lossy().into_owned();
            if next == decoded {
                break;
            }
            decoded = next;
        }
        if decoded == "." || decoded == ".." {
            return Err(GatewayError::InvalidRequest(
                "the provider path may not contain '.' or '..' segments",
            ));
        }
        if decoded != segment && (decoded.contains('/') || decoded.contains('\\')) {
            return Err(GatewayError::InvalidRequest(
                "the provider path may not contain encoded slashes",
            ));
        }
        if segment.contains('\\') {
            return Err(GatewayError::InvalidRequest(
                "the provider path may not contain backslashes",
            ));
        }
    }
    Ok(())
}

/// Google names the model in the path: `v1beta/models/gemini-2.0-flash:generateContent`.
fn model_in_path(path: &str) -> Option<String> {
    let after = path.split("models/").nth(1)?;
    let model = after.split([':', '/']).next()?;
    (!model.is_empty()).then(|| model.to_owned())
}

fn is_embedding(path: &str) -> bool {
    path.ends_with("embeddings")
        || path.ends_with(":embedContent")
        || path.ends_with(":batchEmbedContents")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_however_they_are_written() {
        for path in [
            "openai/deployments/mine/../../x",
            "openai/deployments/mine/%2e%2e/x",
            "openai/deployments/mine/%2E%2e/x",
            "openai/deployments/mine/.%2e/x",
            "openai/deployments/mine/%252e%252e/x",
            "./v1/messages",
            "v1/models/.",
            "v1/..%2fmodels",
            "v1/%2F..",
            "v1\\..\\x",
        ] {
            assert!(confined(path).is_err(), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for path in [
            "v1/messages",
            "openai/deployments/gpt-4o/chat/completions",
            "v1beta/models/gemini-2.0-flash:generateContent",
            "v1/files/file-abc123/content",
            "v1/models/ft:gpt-4o-mini:acme::abc",
            "v1/some...name",
        ] {
            assert!(confined(path).is_ok(), "{path}");
        }
    }

    /// Paths a caller could send, dot segments and encodings included.
    fn paths() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let part = prop_oneof![
            Just("."),
            Just(".."),
            Just("%2e"),
            Just("%2E%2e"),
            Just(".%2e"),
            Just("%252e%252e"),
            Just("%2f"),
            Just("%5c"),
            Just("v1"),
            Just("a"),
            Just(""),
        ];
        prop_oneof![
            proptest::collection::vec(part, 0..8).prop_map(|parts| parts.join("/")),
            "[a-z0-9./%2eEfF5cC-]{0,40}".prop_map(|s| s),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Whatever path passes stays under the provider's base path once a URL parser (the
        /// HTTP client's) has normalized it.
        #[test]
        fn a_path_that_passes_never_leaves_the_base_path(path in paths()) {
            if confined(&path).is_ok() {
                let url = url::Url::parse(&format!("https://provider.example/base/deployments/mine/{path}"));
                if let Ok(url) = url {
                    proptest::prop_assert!(
                        url.path().starts_with("/base/deployments/mine/"),
                        "{} reached {}", path, url.path()
                    );
                }
            }
        }
    }

    #[test]
    fn googles_model_is_read_from_the_path() {
        assert_eq!(
            model_in_path("v1beta/models/gemini-2.0-flash:generateContent").as_deref(),
            Some("gemini-2.0-flash")
        );
        assert_eq!(model_in_path("v1/messages"), None);
    }
}
