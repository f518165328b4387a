//! Given/when/then: erase an organization (the right to erasure).

use super::*;

fn erase() -> KeyringCommand {
    KeyringCommand::EraseOrganization
}

fn erased(providers: &[ProviderId], material_ids: Vec<MaterialId>) -> KeyringEvent {
    KeyringEvent::OrganizationErased(OrganizationErased {
        providers: providers.to_vec(),
        material_ids,
        at: NOW,
    })
}

fn restarted() -> KeyringEvent {
    KeyringEvent::OrganizationRestarted(OrganizationRestarted { erased_at: NOW, at: NOW })
}

/// A pro organization with a rotated Anthropic key and a suspended OpenAI key, in an order.
fn keyed_org() -> Vec<KeyringEvent> {
    on(
        "pro",
        vec![
            stored(Anthropic, 1),
            rotated(Anthropic, 1, 2),
            stored(Openai, 2),
            suspended(Openai, 2, SuspensionReason::ByokAccessWithdrawn),
            order_set(&[Openai, Anthropic]),
        ],
    )
}

#[test]
fn erasing_destroys_the_material_of_every_key_active_or_suspended() {
    given(keyed_org()).when(erase()).then_expect_events(vec![erased(
        &[Anthropic, Openai],
        vec![material(1, 2), material(2, 1)],
    )]);
}

#[test]
fn an_erased_organization_has_no_keys_no_order_the_default_plan_and_no_key_for_calls() {
    let Given { state, world } =
        given([keyed_org(), vec![erased(&[Anthropic, Openai], vec![])]].concat());
    assert!(state.keys().is_empty());
    assert!(state.provider_order().is_empty());
    assert_eq!(state.plan(), &PlanId::starter());
    assert_eq!(state.erased_at(), Some(NOW));
    assert_eq!(
        crate::resolution::resolve(&state, &world.plans, Anthropic, true),
        crate::resolution::Resolution::Erased,
        "not even the platform's key"
    );
}

#[test]
fn erasing_an_erased_organization_changes_nothing() {
    given([keyed_org(), vec![erased(&[Anthropic, Openai], vec![])]].concat())
        .when(erase())
        .then_expect_events(vec![]);
}

#[test]
fn an_organization_without_keys_is_erased_too() {
    given(vec![]).when(erase()).then_expect_events(vec![erased(&[], vec![])]);
}

#[test]
fn the_first_change_after_an_erasure_starts_the_organization_afresh() {
    given([keyed_org(), vec![erased(&[Anthropic, Openai], vec![])]].concat())
        .when(change_plan("pro"))
        .then_expect_events(vec![restarted(), plan_changed("starter", "pro")]);
}

#[test]
fn a_refused_change_after_an_erasure_records_nothing() {
    given([keyed_org(), vec![erased(&[Anthropic, Openai], vec![])]].concat())
        .when(store(Anthropic))
        .then_expect_error(KeyringError::ByokNotAllowed);
}

#[test]
fn a_key_stored_after_a_restart_gets_a_new_key_id() {
    let history = [
        keyed_org(),
        vec![erased(&[Anthropic, Openai], vec![]), restarted(), plan_changed("starter", "pro")],
    ]
    .concat();
    given(history).when(store(Anthropic)).then_expect_events(vec![stored(Anthropic, 3)]);
}
