//! The HTTP client that presents a key to its provider.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder};

use super::endpoint::{EndpointError, EndpointPolicy};
use super::listing::{parse_listing, ListedModel};
use super::registry::{default_base_url, Auth, ProviderSpec};
use super::resolver::{GuardedResolver, Reach};
use keyledger_domain::{ApiKey, ProviderId, VerificationOutcome};

/// A caller's request on its way to a provider.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub method: Method,
    pub provider: ProviderId,
    /// The organization's stored endpoint, for providers that live where it says.
    pub endpoint: Option<&'a str>,
    pub path_and_query: &'a str,
    /// The caller's headers; its credentials and hop-by-hop headers are dropped.
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub key: Option<&'a ApiKey>,
    /// Present the key as the provider's OpenAI-compatible endpoint wants it.
    pub openai_compatible: bool,
}

/// Calls providers with a key. Never follows redirects: a redirect would carry the key to
/// wherever the provider (or an attacker in its place) points. Calls to an organization's
/// own endpoint go through a client whose resolver connects only to addresses the endpoint
/// policy allows (see the `resolver` module); the operator's base URLs are trusted.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    trusted: reqwest::Client,
    /// One client per reach, for organizations' endpoints.
    guarded: [(Reach, reqwest::Client); 3],
    base_urls: BTreeMap<ProviderId, String>,
    policy: EndpointPolicy,
}

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing was sent: the endpoint is one this server does not send keys to.
    #[error(transparent)]
    Refused(#[from] EndpointError),
    /// The provider could not be reached, or the exchange broke.
    #[error(transparent)]
    Transport(reqwest::Error),
}

impl From<reqwest::Error> for SendError {
    fn from(error: reqwest::Error) -> Self {
        if super::resolver::was_refused(&error) {
            Self::Refused(EndpointError::PrivateAddress)
        } else {
            Self::Transport(error)
        }
    }
}

/// A provider has this long to accept a connection; past it, the call moves on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Verifying a key or listing models is a small call: it gets this long in all.
const SMALL_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// More of an error or listing body than this is not read.
const SMALL_BODY_LIMIT: usize = 1024 * 1024;

/// Headers a caller may not pass on: its own credentials (keyledger presents the key), and
/// hop-by-hop headers that describe the caller's connection, not the provider's.
const NOT_FORWARDED: [&str; 14] = [
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

fn forwardable(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| !NOT_FORWARDED.contains(&name.as_str()))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// Puts `key` where `provider` expects it, and the provider's fixed headers unless the caller
/// chose its own (such as a newer `anthropic-version`).
fn put_key(headers: &mut HeaderMap, auth: Auth, key: Option<&ApiKey>) {
    if let Auth::Header { extra, .. } = auth {
        for (name, value) in extra {
            if !headers.contains_key(*name) {
                headers.insert(*name, HeaderValue::from_static(value));
            }
        }
    }
    let Some(key) = key else { return };
    // The header's text is a copy of the key: wiped as soon as the header holds it. (The
    // header value itself lives until the request is sent; it is marked sensitive.)
    let (name, value) = match auth {
        Auth::Bearer => {
            let bearer = zeroize::Zeroizing::new(format!("Bearer {}", key.expose()));
            (AUTHORIZATION, HeaderValue::from_str(&bearer))
        }
        Auth::Header { name, .. } => {
            (HeaderName::from_static(name), HeaderValue::from_str(key.expose()))
        }
    };
    if let Ok(mut value) = value {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
}

impl ProviderClient {
    /// A client using `overrides` (from `KEYLEDGER_PROVIDER_<ID>_BASE_URL`) over the public
    /// URLs, and sending keys to organizations' endpoints only where `policy` allows.
    ///
    /// # Errors
    /// When the TLS backend cannot be set up.
    pub fn new(
        overrides: BTreeMap<ProviderId, String>,
        policy: EndpointPolicy,
    ) -> Result<Self, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(concat!("keyledger/", env!("CARGO_PKG_VERSION")))
        };
        let guarded = |reach| {
            builder().dns_resolver(Arc::new(GuardedResolver(reach))).build().map(|c| (reach, c))
        };
        Ok(Self {
            trusted: builder().build()?,
            guarded: [guarded(Reach::Public)?, guarded(Reach::Internal)?, guarded(Reach::Any)?],
            base_urls: overrides,
            policy,
        })
    }

    /// The client for a call to `endpoint` (an organization's), or the trusted one.
    fn http(&self, endpoint: Option<&str>) -> Result<&reqwest::Client, EndpointError> {
        let Some(endpoint) = endpoint else { return Ok(&self.trusted) };
        let reach = self.policy.reach_of(endpoint)?;
        self.guarded
            .iter()
            .find(|(r, _)| *r == reach)
            .map(|(_, client)| client)
            .ok_or(EndpointError::NotAUrl)
    }

    /// Where requests for `provider` go: the organization's stored endpoint, else the
    /// operator's override, else the public URL.
    #[must_use]
    pub fn base_url(&self, provider: ProviderId, endpoint: Option<&str>) -> Option<String> {
        endpoint
            .map(str::to_owned)
            .or_else(|| self.base_urls.get(&provider).cloned())
            .or_else(|| default_base_url(provider).map(str::to_owned))
            .map(|url| url.trim_end_matches('/').to_owned())
    }

    /// Presents `key` to `provider` the way that provider expects.
    pub fn authorize(
        request: RequestBuilder,
        provider: ProviderId,
        key: Option<&ApiKey>,
    ) -> RequestBuilder {
        let mut headers = HeaderMap::new();
        put_key(&mut headers, ProviderSpec::of(provider).auth, key);
        request.headers(headers)
    }

    /// Forwards a caller's request to its provider with the resolved key in place of whatever
    /// credentials the caller sent, asking a streamed chat answer for its usage (see
    /// [`super::asking_for_stream_usage`]). Resolves when the answer's head has arrived; its
    /// body streams on. The caller bounds how long that may take.
    ///
    /// # Errors
    /// [`SendError`]: the endpoint refused before anything is sent, or the transport error.
    pub async fn forward(&self, out: Outgoing<'_>) -> Result<reqwest::Response, SendError> {
        let http = self.http(out.endpoint)?;
        let base = self.base_url(out.provider, out.endpoint).unwrap_or_default();
        let mut headers = forwardable(out.headers);
        let spec = ProviderSpec::of(out.provider);
        put_key(
            &mut headers,
            if out.openai_compatible { spec.chat_auth } else { spec.auth },
            out.key,
        );
        let body = super::asking_for_stream_usage(out.provider, out.path_and_query, &out.body)
            .unwrap_or(out.body);
        Ok(http
            .request(out.method, format!("{base}{}", out.path_and_query))
            .headers(headers)
            .body(body)
            .send()
            .await?)
    }

    /// Makes the provider's cheapest authenticated call with `key` and says what it answered.
    #[tracing::instrument(skip_all, fields(provider = %provider))]
    pub async fn verify(
        &self,
        provider: ProviderId,
        endpoint: Option<&str>,
        key: Option<&ApiKey>,
    ) -> VerificationOutcome {
        let outcome = match self
            .small_call(provider, endpoint, key, ProviderSpec::of(provider).verify_path)
            .await
        {
            Ok((status, body)) => VerificationOutcome::of_answer(status, &body),
            Err(outcome) => outcome,
        };
        tracing::info!(outcome = outcome.as_str(), "provider verification");
        outcome
    }

    /// The models `provider` lists for `key`.
    ///
    /// # Errors
    /// What the provider's answer says of the key when it lists nothing (refused,
    /// unreachable, not a model list: `ProviderError`).
    pub async fn list_models(
        &self,
        provider: ProviderId,
        endpoint: Option<&str>,
        key: Option<&ApiKey>,
    ) -> Result<Vec<ListedModel>, VerificationOutcome> {
        let path = ProviderSpec::of(provider).listing_path;
        let (status, body) = self.small_call(provider, endpoint, key, path).await?;
        match VerificationOutcome::of_answer(status, &body) {
            VerificationOutcome::Valid => {
                parse_listing(&body).ok_or(VerificationOutcome::ProviderError)
            }
            refused => Err(refused),
        }
    }

    /// A GET of `path` with `key`: the status and (the first MiB of) the body.
    async fn small_call(
        &self,
        provider: ProviderId,
        endpoint: Option<&str>,
        key: Option<&ApiKey>,
        path: &str,
    ) -> Result<(u16, Bytes), VerificationOutcome> {
        let base = self.base_url(provider, endpoint).ok_or(VerificationOutcome::Unreachable)?;
        // An endpoint this server does not send keys to is not asked: nothing goes out.
        let http = self.http(endpoint).map_err(|_| VerificationOutcome::Unreachable)?;
        let request = Self::authorize(http.get(format!("{base}{path}")), provider, key);
        let answered = tokio::time::timeout(SMALL_CALL_TIMEOUT, async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, read_bounded(response, SMALL_BODY_LIMIT).await))
        })
        .await;
        match answered {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) if !error.is_connect() && !error.is_timeout() => {
                Err(VerificationOutcome::ProviderError)
            }
            Ok(Err(_)) | Err(_) => Err(VerificationOutcome::Unreachable),
        }
    }
}

/// Up to `limit` bytes of `response`'s body; a body that breaks off gives what came.
pub async fn read_bounded(response: reqwest::Response, limit: usize) -> Bytes {
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Bytes::from(body)
}
