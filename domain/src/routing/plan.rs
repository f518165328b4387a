//! The route of one call on the OpenAI-shaped surface: the providers to try, in order, each
//! with the model name to send it.

use std::collections::{BTreeMap, BTreeSet};

use super::families::ModelFamilies;
use super::model_ref::ModelRef;
use crate::provider::ProviderId;

/// What a call on the OpenAI-shaped surface asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `POST …/chat/completions`
    Chat,
    /// `POST …/embeddings`
    Embeddings,
}

/// The routing part of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRequest {
    /// `"provider"` in the body: only this provider.
    pub forced: Option<ProviderId>,
    /// `"model"`, or the `"models"` fallback chain, in the caller's order.
    pub models: Vec<ModelRef>,
}

/// What is known, for one organization now, of which provider serves which model.
#[derive(Debug, Clone, Copy)]
pub struct Serving<'a> {
    pub families: &'a ModelFamilies,
    /// The `default_model` of each provider's active key.
    pub default_models: &'a BTreeMap<ProviderId, String>,
    /// The model lists providers returned; a provider absent here has none known.
    pub listings: &'a BTreeMap<ProviderId, BTreeSet<String>>,
}

impl Serving<'_> {
    /// Whether `provider` serves the bare name `model` without asking its model list.
    fn claims(&self, provider: ProviderId, model: &str) -> bool {
        self.families.provider_of(model) == Some(provider)
            || self.default_models.get(&provider).is_some_and(|m| m == model)
    }

    fn serves(&self, provider: ProviderId, model: &str) -> bool {
        self.claims(provider, model)
            || self.listings.get(&provider).is_some_and(|models| models.contains(model))
    }
}

/// One provider to try, with the model name it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub provider: ProviderId,
    /// The provider's own name for the model (any `provider/` prefix stripped).
    pub model: String,
    /// Routed from a bare name: a provider that does not know the model is passed over.
    pub bare: bool,
}

/// Why a call cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("the body names no model: send \"model\" (or a \"models\" fallback list)")]
    NoModel,
    #[error(
        "no provider this organization can call serves '{model}'; name one as \
         'provider/model' (for example 'openai/{model}'), or give its key a default_model"
    )]
    NotRoutable { model: String },
    #[error("\"provider\" says {forced} but the model '{model}' names {named}")]
    ProviderMismatch { forced: ProviderId, named: ProviderId, model: String },
    #[error("{provider} offers no {surface} endpoint keyledger can route to")]
    NotOffered { provider: ProviderId, surface: &'static str },
}

impl Surface {
    /// What the surface is called, for messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat completions",
            Self::Embeddings => "embeddings",
        }
    }
}

/// The providers to try for `request`, in order. `callable` holds the providers the
/// organization can call now (a BYOK key, or the platform's within plan), in its order.
///
/// - `provider/model` goes to that provider only, callable or not (it then answers why not).
/// - A bare name goes to every callable provider that serves it, in `callable`'s order.
/// - `"models"` is a chain: each entry routed so, one after the other, without repeats.
/// - `"provider"` in the body forces every entry to that provider.
///
/// # Errors
/// [`RoutingError`] when nothing can be tried.
pub fn route(
    request: &RouteRequest,
    surface: Surface,
    callable: &[ProviderId],
    serving: Serving<'_>,
) -> Result<Vec<Target>, RoutingError> {
    if request.models.is_empty() {
        return Err(RoutingError::NoModel);
    }
    let not_offered =
        |provider: ProviderId| RoutingError::NotOffered { provider, surface: surface.name() };
    let mut targets: Vec<Target> = Vec::new();
    let mut push = |target: Target| {
        if !targets.iter().any(|t| t.provider == target.provider && t.model == target.model) {
            targets.push(target);
        }
    };
    for model in &request.models {
        match (request.forced, model.provider) {
            (Some(forced), Some(named)) if forced != named => {
                return Err(RoutingError::ProviderMismatch {
                    forced,
                    named,
                    model: model.to_string(),
                });
            }
            (Some(provider), _) | (None, Some(provider)) => {
                if !provider.offers(surface) {
                    return Err(not_offered(provider));
                }
                // The caller placed the model at this provider: its "not found" is the answer.
                push(Target { provider, model: model.name.clone(), bare: false });
            }
            (None, None) => {
                for provider in callable.iter().copied().filter(|p| p.offers(surface)) {
                    if serving.serves(provider, &model.name) {
                        push(Target { provider, model: model.name.clone(), bare: true });
                    }
                }
            }
        }
    }
    if targets.is_empty() {
        let model = request.models.first().map(|m| m.name.clone()).unwrap_or_default();
        return Err(RoutingError::NotRoutable { model });
    }
    Ok(targets)
}

/// The callable providers whose model lists [`route`] needs to place `request`'s bare names:
/// those that neither a family nor a key's default model already names for one of them.
#[must_use]
pub fn unlisted(
    request: &RouteRequest,
    surface: Surface,
    callable: &[ProviderId],
    serving: Serving<'_>,
) -> Vec<ProviderId> {
    if request.forced.is_some() {
        return Vec::new();
    }
    callable
        .iter()
        .copied()
        .filter(|p| p.offers(surface) && !serving.listings.contains_key(p))
        .filter(|p| request.models.iter().any(|m| m.is_bare() && !serving.claims(*p, &m.name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: [ProviderId; 3] = [ProviderId::Anthropic, ProviderId::Groq, ProviderId::Openai];

    fn request(models: &[&str]) -> RouteRequest {
        RouteRequest {
            forced: None,
            models: models.iter().map(|m| ModelRef::parse(m).expect("valid")).collect(),
        }
    }

    fn targets(found: &[Target]) -> Vec<(ProviderId, &str)> {
        found.iter().map(|t| (t.provider, t.model.as_str())).collect()
    }

    struct World {
        families: ModelFamilies,
        defaults: BTreeMap<ProviderId, String>,
        listings: BTreeMap<ProviderId, BTreeSet<String>>,
    }

    impl World {
        fn new() -> Self {
            Self {
                families: ModelFamilies::default(),
                defaults: BTreeMap::new(),
                listings: BTreeMap::new(),
            }
        }

        fn serving(&self) -> Serving<'_> {
            Serving {
                families: &self.families,
                default_models: &self.defaults,
                listings: &self.listings,
            }
        }

        fn listing(mut self, provider: ProviderId, models: &[&str]) -> Self {
            self.listings.insert(provider, models.iter().map(|m| (*m).to_owned()).collect());
            self
        }
    }

    #[test]
    fn a_bare_name_goes_to_the_provider_that_serves_it_whatever_the_order_says_first() {
        let world = World::new();
        let route = route(&request(&["gpt-4o-mini"]), Surface::Chat, &ORDER, world.serving());
        assert_eq!(targets(&route.expect("routable")), [(ProviderId::Openai, "gpt-4o-mini")]);
    }

    #[test]
    fn a_provider_prefix_picks_that_provider_and_is_stripped() {
        let world = World::new();
        let found = route(
            &request(&["groq/llama-3.3-70b-versatile"]),
            Surface::Chat,
            &ORDER,
            world.serving(),
        )
        .expect("routable");
        assert_eq!(targets(&found), [(ProviderId::Groq, "llama-3.3-70b-versatile")]);
        assert!(!found[0].bare);
    }

    #[test]
    fn providers_that_list_a_bare_name_serve_it_in_the_organizations_order() {
        let world = World::new()
            .listing(ProviderId::Groq, &["llama-3.3-70b-versatile"])
            .listing(ProviderId::Anthropic, &["claude-sonnet-4"])
            .listing(ProviderId::Openai, &["llama-3.3-70b-versatile", "gpt-4o"]);
        let found =
            route(&request(&["llama-3.3-70b-versatile"]), Surface::Chat, &ORDER, world.serving())
                .expect("routable");
        assert_eq!(
            targets(&found),
            [
                (ProviderId::Groq, "llama-3.3-70b-versatile"),
                (ProviderId::Openai, "llama-3.3-70b-versatile")
            ]
        );
    }

    #[test]
    fn a_keys_default_model_says_its_provider_serves_it() {
        let mut world = World::new();
        world.defaults.insert(ProviderId::Groq, "my-finetune".to_owned());
        let found = route(&request(&["my-finetune"]), Surface::Chat, &ORDER, world.serving())
            .expect("routable");
        assert_eq!(targets(&found), [(ProviderId::Groq, "my-finetune")]);
    }

    #[test]
    fn a_name_nobody_serves_is_not_routable_and_says_how_to_name_a_provider() {
        let world = World::new().listing(ProviderId::Groq, &["llama-3.3-70b-versatile"]);
        let error = route(&request(&["mystery-model"]), Surface::Chat, &ORDER, world.serving())
            .expect_err("nobody serves it");
        assert_eq!(error, RoutingError::NotRoutable { model: "mystery-model".to_owned() });
        assert!(error.to_string().contains("'provider/model'"));
    }

    #[test]
    fn a_family_of_a_provider_the_organization_cannot_call_routes_nowhere() {
        let world = World::new();
        let only_anthropic = [ProviderId::Anthropic];
        let error = route(&request(&["gpt-4o"]), Surface::Chat, &only_anthropic, world.serving());
        assert!(matches!(error, Err(RoutingError::NotRoutable { .. })));
    }

    #[test]
    fn a_models_chain_tries_each_entry_at_its_own_provider_in_the_callers_order() {
        let world = World::new();
        let found = route(
            &request(&["openai/gpt-4o", "anthropic/claude-haiku-4", "openai/gpt-4o"]),
            Surface::Chat,
            &ORDER,
            world.serving(),
        )
        .expect("routable");
        assert_eq!(
            targets(&found),
            [(ProviderId::Openai, "gpt-4o"), (ProviderId::Anthropic, "claude-haiku-4")]
        );
    }

    #[test]
    fn a_forced_provider_takes_every_entry_and_refuses_another_prefix() {
        let world = World::new();
        let forced = RouteRequest {
            forced: Some(ProviderId::Anthropic),
            models: vec![ModelRef::parse("anthropic/claude-haiku-4").expect("valid")],
        };
        let found = route(&forced, Surface::Chat, &ORDER, world.serving()).expect("routable");
        assert_eq!(targets(&found), [(ProviderId::Anthropic, "claude-haiku-4")]);
        let bare_but_placed = RouteRequest {
            forced: Some(ProviderId::Openai),
            models: vec![ModelRef::parse("gpt-9").expect("valid")],
        };
        let found =
            route(&bare_but_placed, Surface::Chat, &ORDER, world.serving()).expect("routable");
        assert!(!found[0].bare, "the provider's own answer about it goes back");
        let mismatch = RouteRequest {
            forced: Some(ProviderId::Anthropic),
            models: vec![ModelRef::parse("openai/gpt-4o").expect("valid")],
        };
        assert!(matches!(
            route(&mismatch, Surface::Chat, &ORDER, world.serving()),
            Err(RoutingError::ProviderMismatch { .. })
        ));
    }

    #[test]
    fn embeddings_go_only_to_providers_that_offer_them() {
        let world = World::new().listing(ProviderId::Groq, &["nomic-embed-text"]);
        let error =
            route(&request(&["nomic-embed-text"]), Surface::Embeddings, &ORDER, world.serving());
        assert!(matches!(error, Err(RoutingError::NotRoutable { .. })), "groq has no embeddings");
        let error = route(
            &request(&["anthropic/claude-haiku-4"]),
            Surface::Embeddings,
            &ORDER,
            world.serving(),
        );
        assert!(matches!(error, Err(RoutingError::NotOffered { .. })));
        let found = route(
            &request(&["text-embedding-3-small"]),
            Surface::Embeddings,
            &ORDER,
            world.serving(),
        )
        .expect("routable");
        assert_eq!(targets(&found), [(ProviderId::Openai, "text-embedding-3-small")]);
    }

    #[test]
    fn only_lists_that_could_change_the_route_are_asked_for() {
        let world = World::new();
        assert_eq!(
            unlisted(&request(&["gpt-4o-mini"]), Surface::Chat, &ORDER, world.serving()),
            [ProviderId::Anthropic, ProviderId::Groq],
            "openai's family already says it serves the name"
        );
        assert!(unlisted(&request(&["openai/gpt-4o"]), Surface::Chat, &ORDER, world.serving())
            .is_empty());
        let world = world.listing(ProviderId::Anthropic, &[]);
        assert_eq!(
            unlisted(&request(&["gpt-4o-mini"]), Surface::Chat, &ORDER, world.serving()),
            [ProviderId::Groq],
            "a list already known is not asked for again"
        );
    }
}
