//! The unified, OpenAI-shaped surface: a chat or embeddings call routed by its model to the
//! providers that serve it, moving on past those that fail it; and the models an organization
//! can call now.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::attempt::{Tried, Try};
use super::error::Unanswered;
use super::listings::{Listing, ListingKey};
use super::{Answer, Gateway, GatewayError};
use crate::providers::ProviderSpec;
use keyledger_domain::resolution::{callable_providers, resolve, Resolution};
use keyledger_domain::routing::{
    route, unlisted, Failure, ModelRef, RouteRequest, RoutingError, Serving, Surface,
};
use keyledger_domain::{Keyring, OrgId, ProviderId};
use keyledger_store::metadata::Actor;

/// A call on the OpenAI-shaped surface.
#[derive(Debug)]
pub struct UnifiedCall<'a> {
    pub org: &'a OrgId,
    pub actor: &'a Actor,
    pub surface: Surface,
    /// The caller's headers (its credentials are never passed on).
    pub headers: &'a HeaderMap,
    /// An OpenAI-shaped body; `model` may be `provider/model`, `models` a fallback chain,
    /// `provider` forces one provider.
    pub body: Bytes,
}

/// A model the organization can call now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// `provider/model`.
    pub id: String,
    pub owned_by: ProviderId,
    /// When the provider says the model was created (Unix seconds); 0 when it does not say.
    pub created: u64,
}

impl Gateway {
    /// Routes `call` by its model and tries each provider that serves it in turn.
    ///
    /// # Errors
    /// [`GatewayError`]: a body that does not route, a refused BYOK key, a timeout, or every
    /// provider failing (`model_not_routable` when none of them knew the model).
    pub async fn unified(&self, call: UnifiedCall<'_>) -> Result<Answer, GatewayError> {
        let deadline = Instant::now() + self.timeouts.call;
        let mut body: Map<String, Value> = serde_json::from_slice(&call.body)
            .map_err(|_| GatewayError::InvalidRequest("the body is not a JSON object"))?;
        let request = route_request(&mut body)?;
        let keyring = self.calls.current(call.org).await?;
        let (callable, defaults) = self.callable(&keyring);
        let mut listings = BTreeMap::new();
        let serving =
            Serving { families: &self.families, default_models: &defaults, listings: &listings };
        let needed = unlisted(&request, call.surface, &callable, serving);
        let fetched = futures::future::join_all(
            needed.into_iter().map(|p| self.listing(call.org, &keyring, p)),
        )
        .await;
        for (provider, listing) in fetched {
            let models = listing.map(|l| l.iter().map(|m| m.id.clone()).collect());
            listings.insert(provider, models.unwrap_or_default());
        }
        let serving =
            Serving { families: &self.families, default_models: &defaults, listings: &listings };
        let targets = route(&request, call.surface, &callable, serving)?;

        let call_id = uuid::Uuid::new_v4();
        let mut failures: Vec<(ProviderId, Failure)> = Vec::new();
        let mut declined = None;
        for target in targets {
            // `route` sends a surface only to providers that offer it, and the registry has a
            // path for every surface a provider offers.
            let path = ProviderSpec::of(target.provider).path_for(call.surface).ok_or(
                RoutingError::NotOffered {
                    provider: target.provider,
                    surface: call.surface.name(),
                },
            )?;
            body.insert("model".to_owned(), Value::String(target.model.clone()));
            let sent = serde_json::to_vec(&body)
                .map_err(|_| GatewayError::InvalidRequest("the body cannot be sent on as JSON"))?;
            let tried = self
                .try_at(Try {
                    org: call.org,
                    keyring: &keyring,
                    actor: call.actor,
                    attempt_id: format!("{call_id}:{}", target.provider),
                    provider: target.provider,
                    method: Method::POST,
                    path_and_query: path,
                    headers: call.headers,
                    body: Bytes::from(sent),
                    model: Some(target.model.clone()),
                    bare: target.bare,
                    openai_compatible: true,
                    model_call: true,
                    expects_output: call.surface == Surface::Chat,
                    may_move_on: true,
                    deadline,
                })
                .await;
            match tried {
                Ok(Tried::Answered(answer)) => return Ok(answer),
                Ok(Tried::Failed(failure)) => {
                    tracing::info!(provider = %target.provider, failure = %failure.describe(), "trying the next provider");
                    failures.push((target.provider, failure));
                }
                // No key or no quota here: another provider may have them.
                Err(error) if error.leaves_others_open() => declined = Some(error),
                Err(error) => return Err(error),
            }
        }
        // No key or no quota says more than "not found" elsewhere; a provider that failed says
        // more than either.
        let only_unknown = failures.iter().all(|(_, f)| *f == Failure::ModelNotFound);
        Err(match declined {
            Some(declined) if only_unknown => declined,
            None if !failures.is_empty() && only_unknown => {
                let model = request.models.first().map(|m| m.name.clone()).unwrap_or_default();
                GatewayError::Routing(RoutingError::NotRoutable { model })
            }
            _ => GatewayError::Unreachable(Unanswered(failures)),
        })
    }

    /// The models the organization can call now, `provider/model`, from each provider it has
    /// a key for (its own, or the platform's within plan), in the order calls try them. A
    /// provider that lists nothing shows its key's default model, if it has one.
    ///
    /// # Errors
    /// [`GatewayError::Keyring`] when the organization's Keyring cannot be read.
    pub async fn models(&self, org: &OrgId) -> Result<Vec<ModelEntry>, GatewayError> {
        let keyring = self.calls.current(org).await?;
        let (callable, defaults) = self.callable(&keyring);
        let listed =
            futures::future::join_all(callable.iter().map(|p| self.listing(org, &keyring, *p)))
                .await;
        let mut entries = Vec::new();
        for (provider, listing) in listed {
            let mut seen = BTreeSet::new();
            let models: Vec<(String, u64)> = match listing {
                Some(list) => list.iter().map(|m| (m.id.clone(), m.created.unwrap_or(0))).collect(),
                None => defaults.get(&provider).map(|m| (m.clone(), 0)).into_iter().collect(),
            };
            for (model, created) in models {
                if seen.insert(model.clone()) {
                    entries.push(ModelEntry {
                        id: format!("{provider}/{model}"),
                        owned_by: provider,
                        created,
                    });
                }
            }
        }
        Ok(entries)
    }

    /// The providers the organization can call now, in the order calls try them, and the
    /// default model of each one's own key.
    fn callable(&self, keyring: &Keyring) -> (Vec<ProviderId>, BTreeMap<ProviderId, String>) {
        let callable =
            callable_providers(keyring, self.plans(), |p| self.platform_keys.contains_key(&p));
        let defaults = default_models(keyring, &callable);
        (callable, defaults)
    }

    /// `provider`'s model list as the key a call would use sees it (cached; see
    /// [`super::listings`]); `None` without a key or a list.
    async fn listing(
        &self,
        org: &OrgId,
        keyring: &Keyring,
        provider: ProviderId,
    ) -> (ProviderId, Listing) {
        let has_platform_key = self.platform_keys.contains_key(&provider);
        let listing = match resolve(keyring, self.plans(), provider, has_platform_key) {
            Resolution::Byok(key) => {
                let cache_key = ListingKey::Byok {
                    org: org.to_string(),
                    provider,
                    key_id: key.key_id,
                    version: key.version,
                };
                let fetch = async {
                    let opened = self.calls.open_for_call(org, provider, &key).await.ok()?;
                    let providers = self.providers();
                    let list =
                        providers.list_models(provider, key.endpoint.as_deref(), opened.as_ref());
                    list.await.ok().map(Arc::new)
                };
                self.listings.get(cache_key, fetch).await
            }
            Resolution::Platform(_) => {
                let fetch = async {
                    let key = self.platform_key(provider)?;
                    let list = self.providers().list_models(provider, None, Some(&key));
                    list.await.ok().map(Arc::new)
                };
                self.listings.get(ListingKey::Platform { provider }, fetch).await
            }
            Resolution::NoKey | Resolution::Erased => None,
        };
        (provider, listing)
    }
}

/// The routing fields of an OpenAI-shaped body, taken out of it: `provider` and `models` are
/// keyledger's, not the provider's; `model` is set per provider tried.
fn route_request(body: &mut Map<String, Value>) -> Result<RouteRequest, GatewayError> {
    let invalid = GatewayError::InvalidRequest;
    let forced = match body.remove("provider") {
        Some(Value::String(id)) => Some(id.parse::<ProviderId>()?),
        Some(Value::Null) | None => None,
        Some(_) => return Err(invalid("\"provider\" is a provider id")),
    };
    let mut names = Vec::new();
    match body.remove("model") {
        Some(Value::String(model)) => names.push(model),
        Some(Value::Null) | None => {}
        Some(_) => return Err(invalid("\"model\" is a model name")),
    }
    match body.remove("models") {
        Some(Value::Array(models)) => {
            for model in models {
                let Value::String(model) = model else {
                    return Err(invalid("\"models\" is a list of model names"));
                };
                names.push(model);
            }
        }
        Some(Value::Null) | None => {}
        Some(_) => return Err(invalid("\"models\" is a list of model names")),
    }
    let models = names
        .iter()
        .map(|name| ModelRef::parse(name).map_err(GatewayError::from))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteRequest { forced, models })
}

/// The default model of each callable provider's own key.
fn default_models(keyring: &Keyring, callable: &[ProviderId]) -> BTreeMap<ProviderId, String> {
    callable
        .iter()
        .filter_map(|p| {
            let model = keyring.active_key(*p)?.default_model.clone()?;
            Some((*p, model))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parsed(body: Value) -> Result<RouteRequest, GatewayError> {
        let Value::Object(mut map) = body else { panic!("an object") };
        route_request(&mut map)
    }

    #[test]
    fn routing_fields_are_read_and_a_chain_follows_the_model() {
        let request = parsed(json!({"model": "gpt-4o", "models": ["anthropic/claude-haiku-4"], "provider": "openai"}))
            .expect("valid");
        assert_eq!(request.forced, Some(ProviderId::Openai));
        let names: Vec<String> = request.models.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["gpt-4o", "anthropic/claude-haiku-4"]);
    }

    #[test]
    fn malformed_routing_fields_are_refused() {
        assert!(matches!(parsed(json!({"model": 4})), Err(GatewayError::InvalidRequest(_))));
        assert!(matches!(
            parsed(json!({"models": "gpt-4o"})),
            Err(GatewayError::InvalidRequest(_))
        ));
        assert!(matches!(
            parsed(json!({"model": "m", "provider": "nope"})),
            Err(GatewayError::UnknownProvider(_))
        ));
    }
}
