//! Given/when/then: re-seal material under the active master key (master-key rotation).

use super::*;

fn reseal() -> KeyringCommand {
    KeyringCommand::ResealMaterial
}

fn resealed_event(provider: ProviderId, key_id: u32, version: u32) -> KeyringEvent {
    KeyringEvent::KeyMaterialResealed(KeyMaterialResealed {
        provider,
        key_id,
        version,
        material_id: resealed_id(key_id, version),
        previous_material_id: material(key_id, version),
        master_key_id: "k2".to_owned(),
        at: NOW,
    })
}

/// The id the fake world re-seals `material(key_id, version)` under.
fn resealed_id(key_id: u32, version: u32) -> MaterialId {
    MaterialId(Uuid::from_u128(u128::from(key_id) * 1_000_000 + u128::from(version)))
}

/// A world whose master key `k2` is active and that holds everything sealed under `k1`.
fn resealing(state: &Keyring, only: &[ProviderId]) -> Prepared {
    let preparation = state.prepare(&reseal(), &world()).expect("re-sealing is never refused");
    Prepared {
        resealed: preparation
            .reseal
            .iter()
            .filter(|(binding, _)| only.contains(&binding.provider))
            .map(|(binding, previous)| Resealed {
                previous: *previous,
                material_id: resealed_id(binding.key_id, binding.version),
                master_key_id: "k2".to_owned(),
            })
            .collect(),
        ..Prepared::default()
    }
}

fn state_of(events: Vec<KeyringEvent>) -> Keyring {
    given(events).state
}

#[test]
fn every_key_version_with_material_is_offered_for_re_sealing_keyless_ones_are_not() {
    let state = state_of(on(
        "pro",
        vec![stored(Anthropic, 1), rotated(Anthropic, 1, 2), stored_keyless(Ollama, 2)],
    ));
    let preparation = state.prepare(&reseal(), &world()).expect("prepared");
    assert_eq!(
        preparation.reseal,
        vec![(MaterialBinding { provider: Anthropic, key_id: 1, version: 2 }, material(1, 2))]
    );
    assert_eq!((preparation.check, preparation.seal), (None, None), "no check, no new key");
}

#[test]
fn re_sealed_material_replaces_the_old_and_releases_it() {
    let state = state_of(on("pro", vec![stored(Anthropic, 1), stored(Openai, 2)]));
    let prepared = resealing(&state, &[Anthropic, Openai]);
    let events = state.decide(reseal(), prepared, &world()).expect("decided");
    assert_eq!(events, vec![resealed_event(Anthropic, 1, 1), resealed_event(Openai, 2, 1)]);
    assert_eq!(events[0].released_material(), vec![material(1, 1)]);

    let mut after = state;
    for event in events {
        after.apply_event(event);
    }
    assert_eq!(after.key(Anthropic).and_then(|k| k.material_id), Some(resealed_id(1, 1)));
    assert_eq!(after.key(Anthropic).map(|k| k.version), Some(1), "the same key version");
}

#[test]
fn material_already_under_the_active_master_key_records_nothing() {
    let state = state_of(on("pro", vec![stored(Anthropic, 1)]));
    let prepared = resealing(&state, &[]);
    assert_eq!(state.decide(reseal(), prepared, &world()), Ok(vec![]));
}

#[test]
fn material_the_state_no_longer_names_is_refused() {
    let before = state_of(on("pro", vec![stored(Anthropic, 1)]));
    let prepared = resealing(&before, &[Anthropic]);
    let rotated_since = state_of(on("pro", vec![stored(Anthropic, 1), rotated(Anthropic, 1, 2)]));
    assert_eq!(
        rotated_since.decide(reseal(), prepared, &world()),
        Err(KeyringError::StaleMaterial)
    );
}
