//! Given/when/then: store key.

use super::*;

#[test]
fn storing_a_key_on_pro_records_its_mask_version_one_and_sealed_material() {
    given(on_plan("pro")).when(store(Anthropic)).then_expect_events(vec![KeyringEvent::KeyStored(
        KeyStored {
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
        },
    )]);
}

#[test]
fn a_stored_key_keeps_its_description_default_model_and_endpoint() {
    let command = StoreKey {
        description: Some("production".to_owned()),
        default_model: Some("gpt-4o".to_owned()),
        ..store_key(AzureOpenai)
    };
    given(on_plan("pro")).when(KeyringCommand::StoreKey(command)).then_expect_events(vec![
        KeyringEvent::KeyStored(KeyStored {
            description: Some("production".to_owned()),
            default_model: Some("gpt-4o".to_owned()),
            endpoint: Some("https://llm.example.com".to_owned()),
            masked: "••••Ver1".to_owned(),
            ..storage(AzureOpenai, 1)
        }),
    ]);
}

#[test]
fn storing_a_key_on_starter_is_refused_because_the_plan_has_no_byok() {
    given(vec![]).when(store(Anthropic)).then_expect_error(KeyringError::ByokNotAllowed);
}

#[test]
fn storing_a_key_after_byok_access_was_withdrawn_is_refused() {
    given(on("pro", vec![byok_access_changed(false)]))
        .when(store(Anthropic))
        .then_expect_error(KeyringError::ByokNotAllowed);
}

#[test]
fn storing_a_second_key_for_the_same_provider_is_refused() {
    given(on("pro", vec![stored(Anthropic, 1)]))
        .when(store(Anthropic))
        .then_expect_error(KeyringError::KeyExists(Anthropic));
}

#[test]
fn storing_a_second_provider_on_private_is_refused_at_one_provider() {
    given(on("private", vec![stored(Anthropic, 1)]))
        .when(store(Openai))
        .then_expect_error(KeyringError::ProviderLimitReached { max: 1 });
}

#[test]
fn storing_a_second_provider_on_private_with_replace_removes_the_first_key() {
    let command = StoreKey { replace: true, ..store_key(Openai) };
    given(on("private", vec![stored(Anthropic, 1)]))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_events(vec![
            removed(Anthropic, 1, 1, RemovalReason::Replaced),
            stored(Openai, 2),
        ]);
}

#[test]
fn replace_does_not_lift_a_limit_of_more_than_one_provider() {
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
    .when(KeyringCommand::StoreKey(command))
    .then_expect_error(KeyringError::ProviderLimitReached { max: 2 });
}

#[test]
fn storing_azure_openai_without_an_endpoint_is_refused() {
    let command = StoreKey { endpoint: None, ..store_key(AzureOpenai) };
    given(on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_error(KeyringError::EndpointRequired(AzureOpenai));
}

#[test]
fn storing_anthropic_with_an_endpoint_is_refused() {
    let command =
        StoreKey { endpoint: Some("https://llm.example.com".to_owned()), ..store_key(Anthropic) };
    given(on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_error(KeyringError::EndpointNotAccepted(Anthropic));
}

#[test]
fn storing_ollama_without_a_key_records_a_keyless_entry() {
    let command = StoreKey { key: None, ..store_key(Ollama) };
    given(on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_events(vec![stored_keyless(Ollama, 1)]);
}

#[test]
fn storing_anthropic_without_a_key_is_refused() {
    let command = StoreKey { key: None, ..store_key(Anthropic) };
    given(on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_error(KeyringError::KeyRequired(Anthropic));
}

#[test]
fn storing_a_description_over_500_characters_is_refused() {
    let command = StoreKey { description: Some("é".repeat(501)), ..store_key(Anthropic) };
    given(on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_error(KeyringError::DetailTooLong { field: "description", max: 500 });
}

#[test]
fn storing_with_verify_records_the_key_and_its_successful_check() {
    let command = StoreKey { verify: true, ..store_key(Anthropic) };
    given(on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_events(vec![stored(Anthropic, 1), verified(Anthropic, 1, 1)]);
}

#[test]
fn storing_with_verify_a_key_the_provider_rejects_stores_nothing() {
    let command = StoreKey { verify: true, ..store_key(Anthropic) };
    given_provider_says(InvalidKey, on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_error(KeyringError::VerificationFailed(InvalidKey));
}

#[test]
fn storing_with_verify_when_the_provider_cannot_be_reached_stores_nothing() {
    let command = StoreKey { verify: true, ..store_key(Anthropic) };
    given_provider_says(Unreachable, on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_error(KeyringError::ProviderUnreachable);
}

#[test]
fn storing_with_verify_while_the_provider_rate_limits_is_not_called_a_refusal() {
    let command = StoreKey { verify: true, ..store_key(Anthropic) };
    given_provider_says(RateLimited, on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_error(KeyringError::ProviderUnreachable);
}

#[test]
fn storing_a_key_parsed_for_another_provider_is_refused() {
    let mut command = store_key(Openai);
    command.key = store_key(Anthropic).key;
    given(on_plan("pro"))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_error(KeyringError::KeyOfAnotherProvider(Openai));
}

#[test]
fn a_refused_check_during_replace_keeps_the_old_key() {
    let command = StoreKey { verify: true, replace: true, ..store_key(Openai) };
    given_provider_says(InvalidKey, on("private", vec![stored(Anthropic, 1)]))
        .when(KeyringCommand::StoreKey(command))
        .then_expect_error(KeyringError::VerificationFailed(InvalidKey));
}

#[test]
fn storing_asks_for_a_check_and_for_sealing_bound_to_the_next_key_id() {
    let history =
        on("pro", vec![stored(Anthropic, 1), removed(Anthropic, 1, 1, RemovalReason::Removed)]);
    let Given { world, state } = given(history);
    let command = KeyringCommand::StoreKey(StoreKey { verify: true, ..store_key(Anthropic) });
    assert_eq!(
        state.prepare(&command, &world),
        Ok(Preparation {
            check: Some(ProviderCheck { provider: Anthropic, endpoint: None }),
            seal: Some(MaterialBinding { provider: Anthropic, key_id: 2, version: 1 }),
            reseal: Vec::new(),
        })
    );
}

#[test]
fn a_keyless_store_without_verify_needs_nothing_of_the_world() {
    let Given { world, state } = given(on_plan("pro"));
    let command = KeyringCommand::StoreKey(StoreKey { key: None, ..store_key(Ollama) });
    assert_eq!(state.prepare(&command, &world), Ok(Preparation::default()));
}

#[test]
fn a_store_decided_without_its_sealed_material_is_refused_and_records_nothing() {
    let Given { world, state } = given(on_plan("pro"));
    let unsealed = Prepared::default();
    assert_eq!(state.decide(store(Anthropic), unsealed, &world), Err(KeyringError::Unprepared));
}

#[test]
fn a_key_stored_after_a_removal_gets_a_new_key_id() {
    let history = vec![stored(Anthropic, 1), removed(Anthropic, 1, 1, RemovalReason::Removed)];
    given(on("pro", history)).when(store(Anthropic)).then_expect_events(vec![stored(Anthropic, 2)]);
}
