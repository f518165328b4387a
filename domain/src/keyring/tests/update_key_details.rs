//! Given/when/then: update key details.

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

#[test]
fn setting_the_description_keeps_the_default_model() {
    given(with_details())
        .when(update_details(Anthropic, Some(Some("staging")), None))
        .then_expect_events(vec![details_changed(
            Anthropic,
            1,
            Some("staging"),
            Some("claude-sonnet"),
        )]);
}

#[test]
fn clearing_the_description_records_it_as_absent() {
    given(with_details())
        .when(update_details(Anthropic, Some(None), None))
        .then_expect_events(vec![details_changed(Anthropic, 1, None, Some("claude-sonnet"))]);
}

#[test]
fn a_description_over_500_characters_is_refused() {
    let too_long = "x".repeat(501);
    given(with_details())
        .when(update_details(Anthropic, Some(Some(&too_long)), None))
        .then_expect_error(KeyringError::DetailTooLong { field: "description", max: 500 });
}

#[test]
fn a_default_model_over_200_characters_is_refused() {
    let too_long = "m".repeat(201);
    given(with_details())
        .when(update_details(Anthropic, None, Some(Some(&too_long))))
        .then_expect_error(KeyringError::DetailTooLong { field: "default_model", max: 200 });
}

#[test]
fn a_description_of_exactly_500_characters_is_accepted() {
    let longest = "x".repeat(500);
    given(with_details())
        .when(update_details(Anthropic, Some(Some(&longest)), None))
        .then_expect_events(vec![details_changed(
            Anthropic,
            1,
            Some(&longest),
            Some("claude-sonnet"),
        )]);
}

#[test]
fn updating_details_to_what_they_already_are_records_nothing() {
    given(with_details())
        .when(update_details(Anthropic, Some(Some("production")), None))
        .then_expect_events(vec![]);
}

#[test]
fn updating_details_of_a_provider_without_a_key_is_refused() {
    given(with_details())
        .when(update_details(Openai, Some(Some("staging")), None))
        .then_expect_error(KeyringError::KeyNotFound(Openai));
}
