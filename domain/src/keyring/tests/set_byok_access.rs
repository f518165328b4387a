//! Given/when/then: set byok access.

use super::*;

fn with_two_keys(plan: &str) -> Vec<KeyringEvent> {
    on(plan, vec![stored(Anthropic, 1), stored(Openai, 2)])
}

fn withdrawn() -> Vec<KeyringEvent> {
    vec![
        byok_access_changed(false),
        suspended(Anthropic, 1, SuspensionReason::ByokAccessWithdrawn),
        suspended(Openai, 2, SuspensionReason::ByokAccessWithdrawn),
    ]
}

#[test]
fn withdrawing_byok_access_suspends_every_key() {
    given(with_two_keys("pro")).when(set_byok_access(false)).then_expect_events(withdrawn());
}

#[test]
fn granting_byok_access_again_reinstates_the_keys() {
    given([with_two_keys("pro"), withdrawn()].concat())
        .when(set_byok_access(true))
        .then_expect_events(vec![
            byok_access_changed(true),
            reinstated(Anthropic, 1),
            reinstated(Openai, 2),
        ]);
}

#[test]
fn granting_byok_access_on_private_reinstates_only_one_key() {
    let downgraded_then_withdrawn = vec![
        plan_changed("pro", "private"),
        suspended(Openai, 2, SuspensionReason::PlanProviderLimit),
        byok_access_changed(false),
        suspended(Anthropic, 1, SuspensionReason::ByokAccessWithdrawn),
    ];
    given([with_two_keys("pro"), downgraded_then_withdrawn].concat())
        .when(set_byok_access(true))
        .then_expect_events(vec![byok_access_changed(true), reinstated(Anthropic, 1)]);
}

#[test]
fn granting_byok_access_on_starter_reinstates_nothing() {
    let history = vec![
        plan_changed("pro", "starter"),
        suspended(Anthropic, 1, SuspensionReason::PlanWithoutByok),
        suspended(Openai, 2, SuspensionReason::PlanWithoutByok),
        byok_access_changed(false),
    ];
    given([with_two_keys("pro"), history].concat())
        .when(set_byok_access(true))
        .then_expect_events(vec![byok_access_changed(true)]);
}

#[test]
fn granting_byok_access_that_is_already_granted_records_nothing() {
    given(with_two_keys("pro")).when(set_byok_access(true)).then_expect_events(vec![]);
}
