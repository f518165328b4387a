//! Given/when/then tests of the Keyring aggregate: every command's success and each of its
//! refusals, against a fake world with a fixed clock and deterministic sealing.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::Aggregate;
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
    sealing_works: bool,
}

#[async_trait]
impl KeyringServices for FakeWorld {
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

    async fn verify(
        &self,
        _provider: ProviderId,
        _endpoint: Option<&str>,
        _key: Option<&ApiKey>,
    ) -> VerificationOutcome {
        self.provider_says
    }

    async fn seal(
        &self,
        binding: MaterialBinding,
        _key: &ApiKey,
    ) -> Result<MaterialId, ServiceError> {
        if !self.sealing_works {
            return Err(ServiceError("the key-material store is unavailable".to_owned()));
        }
        Ok(material(binding.key_id, binding.version))
    }
}

fn world() -> FakeWorld {
    FakeWorld { plans: PlanCatalogue::default(), provider_says: Valid, sealing_works: true }
}

fn given(events: Vec<KeyringEvent>) -> AggregateTestExecutor<Keyring> {
    given_in(world(), events)
}

fn given_in(world: FakeWorld, events: Vec<KeyringEvent>) -> AggregateTestExecutor<Keyring> {
    TestFramework::<Keyring>::with(Arc::new(world)).given(events)
}

fn given_provider_says(
    outcome: VerificationOutcome,
    events: Vec<KeyringEvent>,
) -> AggregateTestExecutor<Keyring> {
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

mod store_key {
    use super::*;

    #[tokio::test]
    async fn storing_a_key_on_pro_records_its_mask_version_one_and_sealed_material() {
        given(on_plan("pro")).when_async(store(Anthropic)).await.then_expect_events(vec![
            KeyringEvent::KeyStored(KeyStored {
                provider: Anthropic,
                key_id: 1,
                version: 1,
                material_id: Some(MaterialId(Uuid::from_u128(1_001))),
                fingerprint: Some(fingerprint_of(&raw_key(Anthropic, 1))),
                masked: "sk-ant-••••Ver1".to_owned(),
                hint: "Ver1".to_owned(),
                description: None,
                default_model: None,
                endpoint: None,
                at: NOW,
            }),
        ]);
    }

    #[tokio::test]
    async fn a_stored_key_keeps_its_description_default_model_and_endpoint() {
        let command = StoreKey {
            description: Some("production".to_owned()),
            default_model: Some("gpt-4o".to_owned()),
            ..store_key(AzureOpenai)
        };
        given(on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_events(vec![KeyringEvent::KeyStored(KeyStored {
                description: Some("production".to_owned()),
                default_model: Some("gpt-4o".to_owned()),
                endpoint: Some("https://llm.example.com".to_owned()),
                masked: "••••Ver1".to_owned(),
                ..storage(AzureOpenai, 1)
            })]);
    }

    #[tokio::test]
    async fn storing_a_key_on_starter_is_refused_because_the_plan_has_no_byok() {
        given(vec![])
            .when_async(store(Anthropic))
            .await
            .then_expect_error(KeyringError::ByokNotAllowed);
    }

    #[tokio::test]
    async fn storing_a_key_after_byok_access_was_withdrawn_is_refused() {
        given(on("pro", vec![byok_access_changed(false)]))
            .when_async(store(Anthropic))
            .await
            .then_expect_error(KeyringError::ByokNotAllowed);
    }

    #[tokio::test]
    async fn storing_a_second_key_for_the_same_provider_is_refused() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(store(Anthropic))
            .await
            .then_expect_error(KeyringError::KeyExists(Anthropic));
    }

    #[tokio::test]
    async fn storing_a_second_provider_on_private_is_refused_at_one_provider() {
        given(on("private", vec![stored(Anthropic, 1)]))
            .when_async(store(Openai))
            .await
            .then_expect_error(KeyringError::ProviderLimitReached { max: 1 });
    }

    #[tokio::test]
    async fn storing_a_second_provider_on_private_with_replace_removes_the_first_key() {
        let command = StoreKey { replace: true, ..store_key(Openai) };
        given(on("private", vec![stored(Anthropic, 1)]))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_events(vec![
                removed(Anthropic, 1, 1, RemovalReason::Replaced),
                stored(Openai, 2),
            ]);
    }

    #[tokio::test]
    async fn replace_does_not_lift_a_limit_of_more_than_one_provider() {
        let duo = PlanRules {
            byok: true,
            max_providers: Some(2),
            provider_order: false,
            monthly_platform_queries: 0,
            monthly_platform_cost_cap_usd: 0.0,
        };
        let plans = PlanCatalogue::new(BTreeMap::from([(plan("duo"), duo)]));
        let command = StoreKey { replace: true, ..store_key(Google) };
        given_in(
            FakeWorld { plans, ..world() },
            on("duo", vec![stored(Anthropic, 1), stored(Openai, 2)]),
        )
        .when_async(KeyringCommand::StoreKey(command))
        .await
        .then_expect_error(KeyringError::ProviderLimitReached { max: 2 });
    }

    #[tokio::test]
    async fn storing_azure_openai_without_an_endpoint_is_refused() {
        let command = StoreKey { endpoint: None, ..store_key(AzureOpenai) };
        given(on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_error(KeyringError::EndpointRequired(AzureOpenai));
    }

    #[tokio::test]
    async fn storing_anthropic_with_an_endpoint_is_refused() {
        let command = StoreKey {
            endpoint: Some("https://llm.example.com".to_owned()),
            ..store_key(Anthropic)
        };
        given(on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_error(KeyringError::EndpointNotAccepted(Anthropic));
    }

    #[tokio::test]
    async fn storing_ollama_without_a_key_records_a_keyless_entry() {
        let command = StoreKey { key: None, ..store_key(Ollama) };
        given(on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_events(vec![stored_keyless(Ollama, 1)]);
    }

    #[tokio::test]
    async fn storing_anthropic_without_a_key_is_refused() {
        let command = StoreKey { key: None, ..store_key(Anthropic) };
        given(on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_error(KeyringError::KeyRequired(Anthropic));
    }

    #[tokio::test]
    async fn storing_a_description_over_500_characters_is_refused() {
        let command = StoreKey { description: Some("é".repeat(501)), ..store_key(Anthropic) };
        given(on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_error(KeyringError::DetailTooLong { field: "description", max: 500 });
    }

    #[tokio::test]
    async fn storing_with_verify_records_the_key_and_its_successful_check() {
        let command = StoreKey { verify: true, ..store_key(Anthropic) };
        given(on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_events(vec![stored(Anthropic, 1), verified(Anthropic, 1, 1)]);
    }

    #[tokio::test]
    async fn storing_with_verify_a_key_the_provider_rejects_stores_nothing() {
        let command = StoreKey { verify: true, ..store_key(Anthropic) };
        given_provider_says(InvalidKey, on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_error(KeyringError::VerificationFailed(InvalidKey));
    }

    #[tokio::test]
    async fn storing_with_verify_when_the_provider_cannot_be_reached_stores_nothing() {
        let command = StoreKey { verify: true, ..store_key(Anthropic) };
        given_provider_says(Unreachable, on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_error(KeyringError::ProviderUnreachable);
    }

    #[tokio::test]
    async fn storing_with_verify_while_the_provider_rate_limits_is_not_called_a_refusal() {
        let command = StoreKey { verify: true, ..store_key(Anthropic) };
        given_provider_says(RateLimited, on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_error(KeyringError::ProviderUnreachable);
    }

    #[tokio::test]
    async fn storing_a_key_parsed_for_another_provider_is_refused() {
        let mut command = store_key(Openai);
        command.key = store_key(Anthropic).key;
        given(on_plan("pro"))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_error(KeyringError::KeyOfAnotherProvider(Openai));
    }

    #[tokio::test]
    async fn a_refused_check_during_replace_keeps_the_old_key() {
        let command = StoreKey { verify: true, replace: true, ..store_key(Openai) };
        given_provider_says(InvalidKey, on("private", vec![stored(Anthropic, 1)]))
            .when_async(KeyringCommand::StoreKey(command))
            .await
            .then_expect_error(KeyringError::VerificationFailed(InvalidKey));
    }

    #[tokio::test]
    async fn storing_a_key_that_cannot_be_sealed_is_refused_with_the_service_error() {
        given_in(FakeWorld { sealing_works: false, ..world() }, on_plan("pro"))
            .when_async(store(Anthropic))
            .await
            .then_expect_error(KeyringError::Service(
                "the key-material store is unavailable".to_owned(),
            ));
    }

    #[tokio::test]
    async fn a_key_stored_after_a_removal_gets_a_new_key_id() {
        let history = vec![stored(Anthropic, 1), removed(Anthropic, 1, 1, RemovalReason::Removed)];
        given(on("pro", history))
            .when_async(store(Anthropic))
            .await
            .then_expect_events(vec![stored(Anthropic, 2)]);
    }
}

mod rotate_key {
    use super::*;

    #[tokio::test]
    async fn rotating_a_key_bumps_its_version_and_releases_the_previous_material() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(rotate(Anthropic, 2))
            .await
            .then_expect_events(vec![KeyringEvent::KeyRotated(KeyRotated {
                provider: Anthropic,
                key_id: 1,
                version: 2,
                material_id: material(1, 2),
                previous_material_id: Some(material(1, 1)),
                fingerprint: fingerprint_of(&raw_key(Anthropic, 2)),
                masked: "sk-ant-••••Ver2".to_owned(),
                hint: "Ver2".to_owned(),
                at: NOW,
            })]);
    }

    #[tokio::test]
    async fn rotating_to_the_key_that_is_already_active_is_refused() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(rotate(Anthropic, 1))
            .await
            .then_expect_error(KeyringError::SameKey);
    }

    #[tokio::test]
    async fn rotating_a_provider_without_a_key_is_refused() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(rotate(Openai, 2))
            .await
            .then_expect_error(KeyringError::KeyNotFound(Openai));
    }

    #[tokio::test]
    async fn rotating_a_removed_key_is_rejected() {
        let history = vec![stored(Anthropic, 1), removed(Anthropic, 1, 1, RemovalReason::Removed)];
        given(on("pro", history))
            .when_async(rotate(Anthropic, 2))
            .await
            .then_expect_error(KeyringError::KeyNotFound(Anthropic));
    }

    #[tokio::test]
    async fn rotating_a_suspended_key_is_refused() {
        let history = vec![
            stored(Anthropic, 1),
            plan_changed("pro", "starter"),
            suspended(Anthropic, 1, SuspensionReason::PlanWithoutByok),
        ];
        given(on("pro", history))
            .when_async(rotate(Anthropic, 2))
            .await
            .then_expect_error(KeyringError::KeyNotFound(Anthropic));
    }

    #[tokio::test]
    async fn rotating_with_verify_records_the_successful_check_of_the_new_version() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(rotate_verified(Anthropic, 2))
            .await
            .then_expect_events(vec![rotated(Anthropic, 1, 2), verified(Anthropic, 1, 2)]);
    }

    #[tokio::test]
    async fn rotating_with_verify_to_a_key_the_provider_rejects_changes_nothing() {
        given_provider_says(InvalidKey, on("pro", vec![stored(Anthropic, 1)]))
            .when_async(rotate_verified(Anthropic, 2))
            .await
            .then_expect_error(KeyringError::VerificationFailed(InvalidKey));
    }

    #[tokio::test]
    async fn rotating_with_verify_when_the_provider_cannot_be_reached_changes_nothing() {
        given_provider_says(Unreachable, on("pro", vec![stored(Anthropic, 1)]))
            .when_async(rotate_verified(Anthropic, 2))
            .await
            .then_expect_error(KeyringError::ProviderUnreachable);
    }

    #[tokio::test]
    async fn a_second_rotation_releases_the_material_of_the_first() {
        given(on("pro", vec![stored(Anthropic, 1), rotated(Anthropic, 1, 2)]))
            .when_async(rotate(Anthropic, 3))
            .await
            .then_expect_events(vec![rotated(Anthropic, 1, 3)]);
    }

    #[tokio::test]
    async fn rotating_a_keyless_entry_to_a_key_releases_no_material() {
        given(on("pro", vec![stored_keyless(Ollama, 1)]))
            .when_async(rotate(Ollama, 2))
            .await
            .then_expect_events(vec![KeyringEvent::KeyRotated(KeyRotated {
                previous_material_id: None,
                ..rotation(Ollama, 1, 2)
            })]);
    }
}

mod update_key_details {
    use super::*;

    fn with_details() -> Vec<KeyringEvent> {
        on(
            "pro",
            vec![KeyringEvent::KeyStored(KeyStored {
                description: Some("production".to_owned()),
                default_model: Some("claude-sonnet".to_owned()),
                ..storage(Anthropic, 1)
            })],
        )
    }

    #[tokio::test]
    async fn setting_the_description_keeps_the_default_model() {
        given(with_details())
            .when_async(update_details(Anthropic, Some(Some("staging")), None))
            .await
            .then_expect_events(vec![details_changed(
                Anthropic,
                1,
                Some("staging"),
                Some("claude-sonnet"),
            )]);
    }

    #[tokio::test]
    async fn clearing_the_description_records_it_as_absent() {
        given(with_details())
            .when_async(update_details(Anthropic, Some(None), None))
            .await
            .then_expect_events(vec![details_changed(Anthropic, 1, None, Some("claude-sonnet"))]);
    }

    #[tokio::test]
    async fn a_description_over_500_characters_is_refused() {
        let too_long = "x".repeat(501);
        given(with_details())
            .when_async(update_details(Anthropic, Some(Some(&too_long)), None))
            .await
            .then_expect_error(KeyringError::DetailTooLong { field: "description", max: 500 });
    }

    #[tokio::test]
    async fn a_default_model_over_200_characters_is_refused() {
        let too_long = "m".repeat(201);
        given(with_details())
            .when_async(update_details(Anthropic, None, Some(Some(&too_long))))
            .await
            .then_expect_error(KeyringError::DetailTooLong { field: "default_model", max: 200 });
    }

    #[tokio::test]
    async fn a_description_of_exactly_500_characters_is_accepted() {
        let longest = "x".repeat(500);
        given(with_details())
            .when_async(update_details(Anthropic, Some(Some(&longest)), None))
            .await
            .then_expect_events(vec![details_changed(
                Anthropic,
                1,
                Some(&longest),
                Some("claude-sonnet"),
            )]);
    }

    #[tokio::test]
    async fn updating_details_to_what_they_already_are_records_nothing() {
        given(with_details())
            .when_async(update_details(Anthropic, Some(Some("production")), None))
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn updating_details_of_a_provider_without_a_key_is_refused() {
        given(with_details())
            .when_async(update_details(Openai, Some(Some("staging")), None))
            .await
            .then_expect_error(KeyringError::KeyNotFound(Openai));
    }
}

mod remove_key {
    use super::*;

    #[tokio::test]
    async fn removing_a_key_releases_its_sealed_material() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(remove(Anthropic))
            .await
            .then_expect_events(vec![KeyringEvent::KeyRemoved(KeyRemoved {
                provider: Anthropic,
                key_id: 1,
                version: 1,
                material_id: Some(MaterialId(Uuid::from_u128(1_001))),
                reason: RemovalReason::Removed,
                at: NOW,
            })]);
    }

    #[tokio::test]
    async fn removing_a_rotated_key_releases_its_current_material() {
        given(on("pro", vec![stored(Anthropic, 1), rotated(Anthropic, 1, 2)]))
            .when_async(remove(Anthropic))
            .await
            .then_expect_events(vec![removed(Anthropic, 1, 2, RemovalReason::Removed)]);
    }

    #[tokio::test]
    async fn removing_a_key_that_is_not_there_is_refused() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(remove(Openai))
            .await
            .then_expect_error(KeyringError::KeyNotFound(Openai));
    }
}

mod record_verification {
    use super::*;

    #[tokio::test]
    async fn a_valid_check_is_recorded_as_key_verified() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(record(Anthropic, 1, Valid))
            .await
            .then_expect_events(vec![verified(Anthropic, 1, 1)]);
    }

    #[tokio::test]
    async fn a_failing_check_is_recorded_as_key_verification_failed() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(record(Anthropic, 1, RateLimited))
            .await
            .then_expect_events(vec![verification_failed(Anthropic, 1, 1, RateLimited)]);
    }

    #[tokio::test]
    async fn a_check_of_a_version_that_was_rotated_away_is_refused_as_stale() {
        given(on("pro", vec![stored(Anthropic, 1), rotated(Anthropic, 1, 2)]))
            .when_async(record(Anthropic, 1, Valid))
            .await
            .then_expect_error(KeyringError::StaleVerification);
    }

    #[tokio::test]
    async fn a_check_of_a_key_that_was_removed_and_stored_again_is_refused_as_stale() {
        let history = vec![
            stored(Anthropic, 1),
            removed(Anthropic, 1, 1, RemovalReason::Removed),
            stored(Anthropic, 2),
        ];
        given(on("pro", history))
            .when_async(record(Anthropic, 1, Valid))
            .await
            .then_expect_error(KeyringError::StaleVerification);
    }

    #[tokio::test]
    async fn a_check_of_a_provider_without_a_key_is_refused() {
        given(on("pro", vec![stored(Anthropic, 1)]))
            .when_async(record(Openai, 1, Valid))
            .await
            .then_expect_error(KeyringError::KeyNotFound(Openai));
    }
}

mod set_provider_order {
    use super::*;

    #[tokio::test]
    async fn pro_may_set_a_provider_order() {
        given(on_plan("pro"))
            .when_async(set_order(&[Ollama, Anthropic]))
            .await
            .then_expect_events(vec![order_set(&[Ollama, Anthropic])]);
    }

    #[tokio::test]
    async fn private_may_not_set_a_provider_order() {
        given(on_plan("private"))
            .when_async(set_order(&[Ollama, Anthropic]))
            .await
            .then_expect_error(KeyringError::ProviderOrderNotAllowed);
    }

    #[tokio::test]
    async fn a_provider_named_twice_in_the_order_is_refused() {
        given(on_plan("pro"))
            .when_async(set_order(&[Anthropic, Openai, Anthropic]))
            .await
            .then_expect_error(KeyringError::DuplicateProvider(Anthropic));
    }

    #[tokio::test]
    async fn setting_the_same_order_again_records_nothing() {
        given(on("pro", vec![order_set(&[Openai, Anthropic])]))
            .when_async(set_order(&[Openai, Anthropic]))
            .await
            .then_expect_events(vec![]);
    }
}

mod change_plan {
    use super::*;

    fn pro_with_two_keys() -> Vec<KeyringEvent> {
        on("pro", vec![stored(Anthropic, 1), stored(Openai, 2)])
    }

    #[tokio::test]
    async fn changing_to_a_plan_not_in_the_catalogue_is_refused() {
        given(on_plan("pro"))
            .when_async(change_plan("platinum"))
            .await
            .then_expect_error(KeyringError::UnknownPlan(plan("platinum")));
    }

    #[tokio::test]
    async fn downgrading_to_private_suspends_all_but_the_first_provider_in_the_order() {
        given([pro_with_two_keys(), vec![order_set(&[Openai, Anthropic])]].concat())
            .when_async(change_plan("private"))
            .await
            .then_expect_events(vec![
                plan_changed("pro", "private"),
                suspended(Anthropic, 1, SuspensionReason::PlanProviderLimit),
            ]);
    }

    #[tokio::test]
    async fn downgrading_to_private_without_a_provider_order_keeps_the_oldest_key() {
        given(pro_with_two_keys()).when_async(change_plan("private")).await.then_expect_events(
            vec![
                plan_changed("pro", "private"),
                suspended(Openai, 2, SuspensionReason::PlanProviderLimit),
            ],
        );
    }

    #[tokio::test]
    async fn upgrading_private_to_pro_reinstates_the_suspended_keys() {
        let downgraded = vec![
            plan_changed("pro", "private"),
            suspended(Openai, 2, SuspensionReason::PlanProviderLimit),
        ];
        given([pro_with_two_keys(), downgraded].concat())
            .when_async(change_plan("pro"))
            .await
            .then_expect_events(vec![plan_changed("private", "pro"), reinstated(Openai, 2)]);
    }

    #[tokio::test]
    async fn downgrading_to_starter_suspends_every_key() {
        given(pro_with_two_keys()).when_async(change_plan("starter")).await.then_expect_events(
            vec![
                plan_changed("pro", "starter"),
                suspended(Anthropic, 1, SuspensionReason::PlanWithoutByok),
                suspended(Openai, 2, SuspensionReason::PlanWithoutByok),
            ],
        );
    }

    #[tokio::test]
    async fn changing_to_the_current_plan_records_nothing() {
        given(pro_with_two_keys()).when_async(change_plan("pro")).await.then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn changing_plan_while_byok_access_is_withdrawn_reinstates_nothing() {
        let withdrawn = vec![
            byok_access_changed(false),
            suspended(Anthropic, 1, SuspensionReason::ByokAccessWithdrawn),
            suspended(Openai, 2, SuspensionReason::ByokAccessWithdrawn),
        ];
        given([pro_with_two_keys(), withdrawn].concat())
            .when_async(change_plan("business"))
            .await
            .then_expect_events(vec![plan_changed("pro", "business")]);
    }
}

mod set_byok_access {
    use super::*;

    fn with_two_keys(plan: &str) -> Vec<KeyringEvent> {
        on(plan, vec![stored(Anthropic, 1), stored(Openai, 2)])
    }

    fn withdrawn() -> Vec<KeyringEvent> {
        vec![
            byok_access_changed(false),
            suspended(Anthropic, 1, SuspensionReason::ByokAccessWithdrawn),
            suspended(Openai, 2, SuspensionReason::ByokAccessWithdrawn),
        ]
    }

    #[tokio::test]
    async fn withdrawing_byok_access_suspends_every_key() {
        given(with_two_keys("pro"))
            .when_async(set_byok_access(false))
            .await
            .then_expect_events(withdrawn());
    }

    #[tokio::test]
    async fn granting_byok_access_again_reinstates_the_keys() {
        given([with_two_keys("pro"), withdrawn()].concat())
            .when_async(set_byok_access(true))
            .await
            .then_expect_events(vec![
                byok_access_changed(true),
                reinstated(Anthropic, 1),
                reinstated(Openai, 2),
            ]);
    }

    #[tokio::test]
    async fn granting_byok_access_on_private_reinstates_only_one_key() {
        let downgraded_then_withdrawn = vec![
            plan_changed("pro", "private"),
            suspended(Openai, 2, SuspensionReason::PlanProviderLimit),
            byok_access_changed(false),
            suspended(Anthropic, 1, SuspensionReason::ByokAccessWithdrawn),
        ];
        given([with_two_keys("pro"), downgraded_then_withdrawn].concat())
            .when_async(set_byok_access(true))
            .await
            .then_expect_events(vec![byok_access_changed(true), reinstated(Anthropic, 1)]);
    }

    #[tokio::test]
    async fn granting_byok_access_on_starter_reinstates_nothing() {
        let history = vec![
            plan_changed("pro", "starter"),
            suspended(Anthropic, 1, SuspensionReason::PlanWithoutByok),
            suspended(Openai, 2, SuspensionReason::PlanWithoutByok),
            byok_access_changed(false),
        ];
        given([with_two_keys("pro"), history].concat())
            .when_async(set_byok_access(true))
            .await
            .then_expect_events(vec![byok_access_changed(true)]);
    }

    #[tokio::test]
    async fn granting_byok_access_that_is_already_granted_records_nothing() {
        given(with_two_keys("pro"))
            .when_async(set_byok_access(true))
            .await
            .then_expect_events(vec![]);
    }
}

mod applied_events {
    use super::*;

    fn after(events: Vec<KeyringEvent>) -> Keyring {
        let mut keyring = Keyring::default();
        for event in events {
            keyring.apply(event);
        }
        keyring
    }

    #[test]
    fn a_new_organization_is_on_starter_with_byok_access_and_no_active_key() {
        let keyring = Keyring::default();
        assert_eq!(keyring.plan, PlanId::starter());
        assert!(keyring.byok_access);
        assert!(!keyring.byok_active());
    }

    #[test]
    fn byok_is_active_only_while_some_key_is_active() {
        let mut history = on("pro", vec![stored(Anthropic, 1)]);
        assert!(after(history.clone()).byok_active());

        history.push(byok_access_changed(false));
        history.push(suspended(Anthropic, 1, SuspensionReason::ByokAccessWithdrawn));
        let withdrawn = after(history.clone());
        assert!(!withdrawn.byok_active());
        assert_eq!(withdrawn.keys[&Anthropic].status, KeyStatus::Suspended);

        history.push(byok_access_changed(true));
        history.push(reinstated(Anthropic, 1));
        assert!(after(history.clone()).byok_active());

        history.push(removed(Anthropic, 1, 1, RemovalReason::Removed));
        let emptied = after(history);
        assert!(!emptied.byok_active());
        assert_eq!(emptied.keys_issued, 1);
    }

    #[test]
    fn a_rotation_forgets_the_last_check_of_the_previous_version() {
        let checked = on("pro", vec![stored(Anthropic, 1), verified(Anthropic, 1, 1)]);
        let key = &after(checked.clone()).keys[&Anthropic];
        assert_eq!(key.last_verification.as_ref().map(|v| v.outcome), Some(Valid));

        let rotated_state = after([checked, vec![rotated(Anthropic, 1, 2)]].concat());
        let key = &rotated_state.keys[&Anthropic];
        assert_eq!((key.version, key.last_verification.as_ref()), (2, None));
        assert_eq!(key.mask.masked, "sk-ant-••••Ver2");
    }
}
