//! Given/when/then: set provider order.

use super::*;

#[test]
fn pro_may_set_a_provider_order() {
    given(on_plan("pro"))
        .when(set_order(&[Ollama, Anthropic]))
        .then_expect_events(vec![order_set(&[Ollama, Anthropic])]);
}

#[test]
fn private_may_not_set_a_provider_order() {
    given(on_plan("private"))
        .when(set_order(&[Ollama, Anthropic]))
        .then_expect_error(KeyringError::ProviderOrderNotAllowed);
}

#[test]
fn a_provider_named_twice_in_the_order_is_refused() {
    given(on_plan("pro"))
        .when(set_order(&[Anthropic, Openai, Anthropic]))
        .then_expect_error(KeyringError::DuplicateProvider(Anthropic));
}

#[test]
fn setting_the_same_order_again_records_nothing() {
    given(on("pro", vec![order_set(&[Openai, Anthropic])]))
        .when(set_order(&[Openai, Anthropic]))
        .then_expect_events(vec![]);
}
