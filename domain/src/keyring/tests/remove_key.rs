//! Given/when/then: remove key.

use super::*;

#[test]
fn removing_a_key_releases_its_sealed_material() {
    given(on("pro", vec![stored(Anthropic, 1)])).when(remove(Anthropic)).then_expect_events(vec![
        KeyringEvent::KeyRemoved(KeyRemoved {
            provider: Anthropic,
            key_id: 1,
            version: 1,
            material_id: Some(MaterialId(Uuid::from_u128(1_001))),
            reason: RemovalReason::Removed,
            at: NOW,
        }),
    ]);
}

#[test]
fn removing_a_rotated_key_releases_its_current_material() {
    given(on("pro", vec![stored(Anthropic, 1), rotated(Anthropic, 1, 2)]))
        .when(remove(Anthropic))
        .then_expect_events(vec![removed(Anthropic, 1, 2, RemovalReason::Removed)]);
}

#[test]
fn removing_a_key_that_is_not_there_is_refused() {
    given(on("pro", vec![stored(Anthropic, 1)]))
        .when(remove(Openai))
        .then_expect_error(KeyringError::KeyNotFound(Openai));
}
