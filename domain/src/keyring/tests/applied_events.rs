//! Given/when/then: applied events.

use super::*;
use cqrs_es::Aggregate;

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
