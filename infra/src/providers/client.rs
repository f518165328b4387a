//! The HTTP client that presents a key to its provider.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};

use super::registry::{default_base_url, Auth, ProviderSpec};
use keyledger_domain::{ApiKey, ProviderId, VerificationOutcome};

/// Calls providers with a key. Never follows redirects: a redirect would carry the key to
/// wherever the provider (or an attacker in its place) points.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    base_urls: BTreeMap<ProviderId, String>,
}

const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl ProviderClient {
    /// A client using `overrides` (from `KEYLEDGER_PROVIDER_<ID>_BASE_URL`) over the public URLs.
    ///
    /// # Errors
    /// When the TLS backend cannot be set up.
    pub fn new(overrides: BTreeMap<ProviderId, String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("keyledger/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base_urls: overrides })
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
        let Some(key) = key else {
            return request;
        };
        match ProviderSpec::of(provider).auth {
            Auth::Bearer => request.bearer_auth(key.expose()),
            Auth::Header { name, extra } => {
                let mut value = reqwest::header::HeaderValue::from_str(key.expose())
                    .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
                value.set_sensitive(true);
                extra.iter().fold(request.header(name, value), |r, (n, v)| r.header(*n, *v))
            }
        }
    }

    /// Makes the provider's cheapest authenticated call with `key` and says what it answered.
    #[tracing::instrument(skip_all, fields(provider = %provider))]
    pub async fn verify(
        &self,
        provider: ProviderId,
        endpoint: Option<&str>,
        key: Option<&ApiKey>,
    ) -> VerificationOutcome {
        let Some(base) = self.base_url(provider, endpoint) else {
            return VerificationOutcome::Unreachable;
        };
        let url = format!("{base}{}", ProviderSpec::of(provider).verify_path);
        let request = Self::authorize(self.http.get(url).timeout(VERIFY_TIMEOUT), provider, key);
        let outcome = match request.send().await {
            Ok(response) => outcome_of(response.status()),
            Err(error) if error.is_connect() || error.is_timeout() => {
                VerificationOutcome::Unreachable
            }
            Err(_) => VerificationOutcome::ProviderError,
        };
        tracing::info!(outcome = outcome.as_str(), "provider verification");
        outcome
    }
}

fn outcome_of(status: StatusCode) -> VerificationOutcome {
    match status.as_u16() {
        200..=299 => VerificationOutcome::Valid,
        401 => VerificationOutcome::InvalidKey,
        403 => VerificationOutcome::InsufficientPermissions,
        429 => VerificationOutcome::RateLimited,
        _ => VerificationOutcome::ProviderError,
    }
}
