//! Given/when/then: change plan.

use super::*;

fn pro_with_two_keys() -> Vec<KeyringEvent> {
    on("pro", vec![stored(Anthropic, 1), stored(Openai, 2)])
}

#[test]
fn changing_to_a_plan_not_in_the_catalogue_is_refused() {
    given(on_plan("pro"))
        .when(change_plan("platinum"))
        .then_expect_error(KeyringError::UnknownPlan(plan("platinum")));
}

#[test]
fn downgrading_to_private_suspends_all_but_the_first_provider_in_the_order() {
    given([pro_with_two_keys(), vec![order_set(&[Openai, Anthropic])]].concat())
        .when(change_plan("private"))
        .then_expect_events(vec![
            plan_changed("pro", "private"),
            suspended(Anthropic, 1, SuspensionReason::PlanProviderLimit),
        ]);
}

#[test]
fn downgrading_to_private_without_a_provider_order_keeps_the_oldest_key() {
    given(pro_with_two_keys()).when(change_plan("private")).then_expect_events(vec![
        plan_changed("pro", "private"),
        suspended(Openai, 2, SuspensionReason::PlanProviderLimit),
    ]);
}

#[test]
fn upgrading_private_to_pro_reinstates_the_suspended_keys() {
    let downgraded = vec![
        plan_changed("pro", "private"),
        suspended(Openai, 2, SuspensionReason::PlanProviderLimit),
    ];
    given([pro_with_two_keys(), downgraded].concat())
        .when(change_plan("pro"))
        .then_expect_events(vec![plan_changed("private", "pro"), reinstated(Openai, 2)]);
}

#[test]
fn downgrading_to_starter_suspends_every_key() {
    given(pro_with_two_keys()).when(change_plan("starter")).then_expect_events(vec![
        plan_changed("pro", "starter"),
        suspended(Anthropic, 1, SuspensionReason::PlanWithoutByok),
        suspended(Openai, 2, SuspensionReason::PlanWithoutByok),
    ]);
}

#[test]
fn changing_to_the_current_plan_records_nothing() {
    given(pro_with_two_keys()).when(change_plan("pro")).then_expect_events(vec![]);
}

#[test]
fn changing_plan_while_byok_access_is_withdrawn_reinstates_nothing() {
    let withdrawn = vec![
        byok_access_changed(false),
        suspended(Anthropic, 1, SuspensionReason::ByokAccessWithdrawn),
        suspended(Openai, 2, SuspensionReason::ByokAccessWithdrawn),
    ];
    given([pro_with_two_keys(), withdrawn].concat())
        .when(change_plan("business"))
        .then_expect_events(vec![plan_changed("pro", "business")]);
}
