//! Given/when/then: set provider order.

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
