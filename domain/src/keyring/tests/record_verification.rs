//! Given/when/then: record verification.

use super::*;

#[test]
fn a_valid_check_is_recorded_as_key_verified() {
    given(on("pro", vec![stored(Anthropic, 1)]))
        .when(record(Anthropic, 1, Valid))
        .then_expect_events(vec![verified(Anthropic, 1, 1)]);
}

#[test]
fn a_failing_check_is_recorded_as_key_verification_failed() {
    given(on("pro", vec![stored(Anthropic, 1)]))
        .when(record(Anthropic, 1, RateLimited))
        .then_expect_events(vec![verification_failed(Anthropic, 1, 1, RateLimited)]);
}

#[test]
fn a_check_of_a_version_that_was_rotated_away_is_refused_as_stale() {
    given(on("pro", vec![stored(Anthropic, 1), rotated(Anthropic, 1, 2)]))
        .when(record(Anthropic, 1, Valid))
        .then_expect_error(KeyringError::StaleVerification);
}

#[test]
fn a_check_of_a_key_that_was_removed_and_stored_again_is_refused_as_stale() {
    let history = vec![
        stored(Anthropic, 1),
        removed(Anthropic, 1, 1, RemovalReason::Removed),
        stored(Anthropic, 2),
    ];
    given(on("pro", history))
        .when(record(Anthropic, 1, Valid))
        .then_expect_error(KeyringError::StaleVerification);
}

#[test]
fn a_check_of_a_provider_without_a_key_is_refused() {
    given(on("pro", vec![stored(Anthropic, 1)]))
        .when(record(Openai, 1, Valid))
        .then_expect_error(KeyringError::KeyNotFound(Openai));
}

#[test]
fn a_recorded_check_changes_nothing_a_model_call_uses_and_a_rotation_does() {
    for event in [verified(Anthropic, 1, 1), verification_failed(Anthropic, 1, 1, RateLimited)] {
        assert!(!event.changes_what_calls_use(), "{event:?}");
    }
    for event in [stored(Anthropic, 1), rotated(Anthropic, 1, 2)] {
        assert!(event.changes_what_calls_use(), "{event:?}");
    }
}
