//! Given/when/then tests of the Keyring aggregate: every command's success and each of its
//! refusals. A command runs through both pure phases with a fake world between them, as
//! `infra` runs it with the real one: a fixed clock, a provider that answers as told, and
//! deterministic material ids.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::*;
use crate::api_key::ApiKey;
use crate::plan::{PlanCatalogue, PlanId, PlanRules};
use crate::provider::ProviderId::{self, Anthropic, AzureOpenai, Google, Ollama, Openai};
use crate::verification::VerificationOutcome::{self, InvalidKey, RateLimited, Unreachable, Valid};

const NOW: DateTime<Utc> = DateTime::from_timestamp(1_767_225_600, 0).expect("a valid instant");

/// The world as the Keyring sees it in these tests: nothing in it changes between calls.
#[derive(Debug)]
struct FakeWorld {
    plans: PlanCatalogue,
    provider_says: VerificationOutcome,
}

impl KeyringContext for FakeWorld {
    fn plans(&self) -> &PlanCatalogue {
        &self.plans
    }

    fn now(&self) -> DateTime<Utc> {
        NOW
    }

    fn fingerprint(&self, key: &ApiKey) -> Fingerprint {
        fingerprint_of(key.expose())
    }

    fn is_same_key(&self, key: &ApiKey, fingerprint: &Fingerprint) -> bool {
        self.fingerprint(key) == *fingerprint
    }
}

impl FakeWorld {
    /// What `infra` does for a preparation: asks the provider, seals the key.
    fn carry_out(&self, preparation: &Preparation) -> Prepared {
        Prepared {
            check: preparation.check.as_ref().map(|_| self.provider_says),
            sealed: preparation.seal.map(|binding| material(binding.key_id, binding.version)),
            // Everything here is sealed under the one master key there is.
            resealed: Vec::new(),
        }
    }
}

fn world() -> FakeWorld {
    FakeWorld { plans: PlanCatalogue::default(), provider_says: Valid }
}

/// A Keyring that has seen `events`, in `world`.
struct Given {
    world: FakeWorld,
    state: Keyring,
}

/// What a command came to.
struct Then(Result<Vec<KeyringEvent>, KeyringError>);

impl Given {
    /// Runs `command` through both phases. Whatever phase one refuses, phase two must refuse
    /// too (the state may move between them), so a refusal is checked in both.
    fn when(self, command: KeyringCommand) -> Then {
        let decided = match self.state.prepare(&command, &self.world) {
            Ok(preparation) => {
                let prepared = self.world.carry_out(&preparation);
                self.state.decide(command, prepared, &self.world)
            }
            Err(refusal) => {
                let decided = self.state.decide(command, Prepared::default(), &self.world);
                assert_eq!(decided, Err(refusal.clone()), "phase two refuses what one did");
                Err(refusal)
            }
        };
        Then(decided)
    }
}

impl Then {
    #[track_caller]
    fn then_expect_events(self, expected: Vec<KeyringEvent>) {
        assert_eq!(self.0, Ok(expected));
    }

    #[track_caller]
    fn then_expect_error(self, expected: KeyringError) {
        assert_eq!(self.0, Err(expected));
    }
}

fn given(events: Vec<KeyringEvent>) -> Given {
    given_in(world(), events)
}

fn given_in(world: FakeWorld, events: Vec<KeyringEvent>) -> Given {
    let mut state = Keyring::default();
    for event in events {
        state.apply_event(event);
    }
    Given { world, state }
}

fn given_provider_says(outcome: VerificationOutcome, events: Vec<KeyringEvent>) -> Given {
    given_in(FakeWorld { provider_says: outcome, ..world() }, events)
}

/// A well-formed key of `provider`; its last four characters name its version (`Ver1`).
fn raw_key(provider: ProviderId, version: u32) -> String {
    let tail = format!("Ver{version}");
    match provider {
        Anthropic => format!("sk-ant-api03-{}{tail}", "a".repeat(40)),
        Openai => format!("sk-proj-{}{tail}", "b".repeat(40)),
        Google => format!("AIza{}{tail}", "c".repeat(31)),
        _ => format!("{}{tail}", "d".repeat(28)),
    }
}

fn api_key(provider: ProviderId, version: u32) -> ApiKey {
    ApiKey::parse(provider, SecretString::from(raw_key(provider, version)))
        .expect("the sample key is well formed")
}

fn fingerprint_of(raw: &str) -> Fingerprint {
    Fingerprint(format!("fp:{}:{}", raw.len(), &raw[raw.len().saturating_sub(8)..]))
}

fn material(key_id: u32, version: u32) -> MaterialId {
    MaterialId(Uuid::from_u128(u128::from(key_id) * 1_000 + u128::from(version)))
}

fn endpoint_of(provider: ProviderId) -> Option<String> {
    provider.needs_endpoint().then(|| "https://llm.example.com".to_owned())
}

fn plan(id: &str) -> PlanId {
    PlanId::new(id)
}

fn store_key(provider: ProviderId) -> StoreKey {
    StoreKey {
        provider,
        key: Some(api_key(provider, 1)),
        description: None,
        default_model: None,
        endpoint: endpoint_of(provider),
        verify: false,
        replace: false,
    }
}

fn store(provider: ProviderId) -> KeyringCommand {
    KeyringCommand::StoreKey(store_key(provider))
}

fn rotate(provider: ProviderId, to_version: u32) -> KeyringCommand {
    KeyringCommand::RotateKey(RotateKey {
        provider,
        key: api_key(provider, to_version),
        verify: false,
    })
}

fn rotate_verified(provider: ProviderId, to_version: u32) -> KeyringCommand {
    KeyringCommand::RotateKey(RotateKey {
        provider,
        key: api_key(provider, to_version),
        verify: true,
    })
}

fn update_details(
    provider: ProviderId,
    description: Option<Option<&str>>,
    default_model: Option<Option<&str>>,
) -> KeyringCommand {
    let owned = |field: Option<Option<&str>>| field.map(|value| value.map(str::to_owned));
    KeyringCommand::UpdateKeyDetails(UpdateKeyDetails {
        provider,
        description: owned(description),
        default_model: owned(default_model),
    })
}

fn remove(provider: ProviderId) -> KeyringCommand {
    KeyringCommand::RemoveKey { provider }
}

/// A check of version `version` of the organization's first key.
fn record(provider: ProviderId, version: u32, outcome: VerificationOutcome) -> KeyringCommand {
    KeyringCommand::RecordVerification { provider, key_id: 1, version, outcome }
}

fn set_order(providers: &[ProviderId]) -> KeyringCommand {
    KeyringCommand::SetProviderOrder { providers: providers.to_vec() }
}

fn change_plan(to: &str) -> KeyringCommand {
    KeyringCommand::ChangePlan { plan: plan(to) }
}

fn set_byok_access(enabled: bool) -> KeyringCommand {
    KeyringCommand::SetByokAccess { enabled }
}

fn plan_changed(from: &str, to: &str) -> KeyringEvent {
    KeyringEvent::PlanChanged(PlanChanged { from: plan(from), to: plan(to), at: NOW })
}

/// The history of an organization that moved from `starter` to `to`.
fn on_plan(to: &str) -> Vec<KeyringEvent> {
    vec![plan_changed("starter", to)]
}

/// What storing `store_key(provider)` as key `key_id` records.
fn storage(provider: ProviderId, key_id: u32) -> KeyStored {
    let mask = api_key(provider, 1).mask();
    KeyStored {
        provider,
        key_id,
        version: 1,
        material_id: Some(material(key_id, 1)),
        fingerprint: Some(fingerprint_of(&raw_key(provider, 1))),
        masked: mask.masked,
        hint: mask.hint,
        description: None,
        default_model: None,
        endpoint: endpoint_of(provider),
        at: NOW,
    }
}

fn stored(provider: ProviderId, key_id: u32) -> KeyringEvent {
    KeyringEvent::KeyStored(storage(provider, key_id))
}

fn stored_keyless(provider: ProviderId, key_id: u32) -> KeyringEvent {
    KeyringEvent::KeyStored(KeyStored {
        material_id: None,
        fingerprint: None,
        masked: "(no key)".to_owned(),
        hint: String::new(),
        ..storage(provider, key_id)
    })
}

/// What rotating key `key_id` of `provider` to `api_key(provider, version)` records.
fn rotation(provider: ProviderId, key_id: u32, version: u32) -> KeyRotated {
    let mask = api_key(provider, version).mask();
    KeyRotated {
        provider,
        key_id,
        version,
        material_id: material(key_id, version),
        previous_material_id: Some(material(key_id, version - 1)),
        fingerprint: fingerprint_of(&raw_key(provider, version)),
        masked: mask.masked,
        hint: mask.hint,
        at: NOW,
    }
}

fn rotated(provider: ProviderId, key_id: u32, version: u32) -> KeyringEvent {
    KeyringEvent::KeyRotated(rotation(provider, key_id, version))
}

fn details_changed(
    provider: ProviderId,
    key_id: u32,
    description: Option<&str>,
    default_model: Option<&str>,
) -> KeyringEvent {
    KeyringEvent::KeyDetailsChanged(KeyDetailsChanged {
        provider,
        key_id,
        description: description.map(str::to_owned),
        default_model: default_model.map(str::to_owned),
        at: NOW,
    })
}

fn removed(provider: ProviderId, key_id: u32, version: u32, reason: RemovalReason) -> KeyringEvent {
    KeyringEvent::KeyRemoved(KeyRemoved {
        provider,
        key_id,
        version,
        material_id: Some(material(key_id, version)),
        reason,
        at: NOW,
    })
}

fn check(
    provider: ProviderId,
    key_id: u32,
    version: u32,
    outcome: VerificationOutcome,
) -> KeyVerificationRecorded {
    KeyVerificationRecorded { provider, key_id, version, outcome, at: NOW }
}

fn verified(provider: ProviderId, key_id: u32, version: u32) -> KeyringEvent {
    KeyringEvent::KeyVerified(check(provider, key_id, version, Valid))
}

fn verification_failed(
    provider: ProviderId,
    key_id: u32,
    version: u32,
    outcome: VerificationOutcome,
) -> KeyringEvent {
    KeyringEvent::KeyVerificationFailed(check(provider, key_id, version, outcome))
}

fn order_set(providers: &[ProviderId]) -> KeyringEvent {
    KeyringEvent::ProviderOrderSet(ProviderOrderSet { providers: providers.to_vec(), at: NOW })
}

fn suspended(provider: ProviderId, key_id: u32, reason: SuspensionReason) -> KeyringEvent {
    KeyringEvent::KeySuspended(KeySuspended { provider, key_id, reason, at: NOW })
}

fn reinstated(provider: ProviderId, key_id: u32) -> KeyringEvent {
    KeyringEvent::KeyReinstated(KeyReinstated { provider, key_id, at: NOW })
}

fn byok_access_changed(enabled: bool) -> KeyringEvent {
    KeyringEvent::ByokAccessChanged(ByokAccessChanged { enabled, at: NOW })
}

/// The history of an organization that moved to `plan` and then saw `events`.
fn on(plan: &str, events: Vec<KeyringEvent>) -> Vec<KeyringEvent> {
    [on_plan(plan), events].concat()
}

mod applied_events;
mod change_plan;
mod erase_organization;
mod record_verification;
mod remove_key;
mod reseal_material;
mod rotate_key;
mod set_byok_access;
mod set_provider_order;
mod store_key;
mod update_key_details;
