//! Given/when/then: rotate key.

use super::*;

#[test]
fn rotating_a_key_bumps_its_version_and_releases_the_previous_material() {
    given(on("pro", vec![stored(Anthropic, 1)])).when(rotate(Anthropic, 2)).then_expect_events(
        vec![KeyringEvent::KeyRotated(KeyRotated {
            provider: Anthropic,
            key_id: 1,
            version: 2,
            material_id: material(1, 2),
            previous_material_id: Some(material(1, 1)),
            fingerprint: fingerprint_of(&raw_key(Anthropic, 2)),
            masked: "sk-ant-••••Ver2".to_owned(),
            hint: "Ver2".to_owned(),
            at: NOW,
        })],
    );
}

#[test]
fn rotating_to_the_key_that_is_already_active_is_refused() {
    given(on("pro", vec![stored(Anthropic, 1)]))
        .when(rotate(Anthropic, 1))
        .then_expect_error(KeyringError::SameKey);
}

#[test]
fn rotating_a_provider_without_a_key_is_refused() {
    given(on("pro", vec![stored(Anthropic, 1)]))
        .when(rotate(Openai, 2))
        .then_expect_error(KeyringError::KeyNotFound(Openai));
}

#[test]
fn rotating_a_removed_key_is_rejected() {
    let history = vec![stored(Anthropic, 1), removed(Anthropic, 1, 1, RemovalReason::Removed)];
    given(on("pro", history))
        .when(rotate(Anthropic, 2))
        .then_expect_error(KeyringError::KeyNotFound(Anthropic));
}

#[test]
fn rotating_a_suspended_key_is_refused() {
    let history = vec![
        stored(Anthropic, 1),
        plan_changed("pro", "starter"),
        suspended(Anthropic, 1, SuspensionReason::PlanWithoutByok),
    ];
    given(on("pro", history))
        .when(rotate(Anthropic, 2))
        .then_expect_error(KeyringError::KeyNotFound(Anthropic));
}

#[test]
fn rotating_with_verify_records_the_successful_check_of_the_new_version() {
    given(on("pro", vec![stored(Anthropic, 1)]))
        .when(rotate_verified(Anthropic, 2))
        .then_expect_events(vec![rotated(Anthropic, 1, 2), verified(Anthropic, 1, 2)]);
}

#[test]
fn rotating_with_verify_to_a_key_the_provider_rejects_changes_nothing() {
    given_provider_says(InvalidKey, on("pro", vec![stored(Anthropic, 1)]))
        .when(rotate_verified(Anthropic, 2))
        .then_expect_error(KeyringError::VerificationFailed(InvalidKey));
}

#[test]
fn rotating_with_verify_when_the_provider_cannot_be_reached_changes_nothing() {
    given_provider_says(Unreachable, on("pro", vec![stored(Anthropic, 1)]))
        .when(rotate_verified(Anthropic, 2))
        .then_expect_error(KeyringError::ProviderUnreachable);
}

#[test]
fn a_second_rotation_releases_the_material_of_the_first() {
    given(on("pro", vec![stored(Anthropic, 1), rotated(Anthropic, 1, 2)]))
        .when(rotate(Anthropic, 3))
        .then_expect_events(vec![rotated(Anthropic, 1, 3)]);
}

#[test]
fn rotating_a_keyless_entry_to_a_key_releases_no_material() {
    given(on("pro", vec![stored_keyless(Ollama, 1)])).when(rotate(Ollama, 2)).then_expect_events(
        vec![KeyringEvent::KeyRotated(KeyRotated {
            previous_material_id: None,
            ..rotation(Ollama, 1, 2)
        })],
    );
}
