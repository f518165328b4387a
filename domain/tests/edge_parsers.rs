//! Every parser that reads what arrives from outside (a caller's body, a provider's answer)
//! takes any input without panicking, and what it accepts keeps its promises.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use secrecy::SecretString;

use keyledger_domain::routing::{judge, ModelRef};
use keyledger_domain::usage::{check_reported_at, CallEstimate};
use keyledger_domain::{ApiKey, OrgId, ProviderId};

#[path = "support/provider_answers.rs"]
mod provider_answers;
use provider_answers::answer;

/// Text as it might arrive: printable, control characters, unicode, quotes and escapes.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[ -~]{0,300}",
        r#"(sk-ant-|sk-proj-|AIza|gsk_)?[A-Za-z0-9_\-\.]{0,120}"#,
        prop::collection::vec(any::<char>(), 0..80).prop_map(|c| c.into_iter().collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn key_formats_take_anything(raw in text(), provider in 0usize..ProviderId::ALL.len()) {
        let provider = ProviderId::ALL[provider];
        if let Ok(key) = ApiKey::parse(provider, SecretString::from(raw.clone())) {
            prop_assert!(!raw.chars().any(char::is_whitespace));
            prop_assert!(!key.mask().masked.contains(&raw) || raw.len() < 8);
        } else if let Err(refused) = ApiKey::parse(provider, SecretString::from(raw.clone())) {
            // A refusal never repeats the key: nothing past the public prefix its provider's
            // keys begin with, which a refusal may name ("… starts with sk-ant-").
            let secret = ["sk-ant-", "sk-proj-", "sk-", "AIza", "gsk_"]
                .iter()
                .find_map(|prefix| raw.strip_prefix(prefix))
                .unwrap_or(&raw);
            prop_assert!(secret.len() < 6 || !refused.to_string().contains(secret));
        }
    }

    #[test]
    fn org_ids_take_anything(raw in text()) {
        if let Ok(org) = OrgId::parse(&raw) {
            prop_assert!(org.as_str().len() <= 64);
            prop_assert!(org.as_str().chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        }
    }

    #[test]
    fn model_names_take_anything(raw in text()) {
        if let Ok(model) = ModelRef::parse(&raw) {
            prop_assert!(!model.name.is_empty() && model.name.chars().count() <= 256);
        }
    }

    #[test]
    fn estimates_and_verdicts_take_anything(body in answer(), status in 0u16..1000, bare: bool) {
        let _ = CallEstimate::of_request(&body, bare);
        let _ = judge(status, &body, bare, keyledger_domain::usage::KeySource::Byok);
    }

    #[test]
    fn reported_times_take_any_instant(at in any::<i64>(), now in 0i64..4_102_444_800) {
        let (Some(at), Some(now)) = (DateTime::<Utc>::from_timestamp(at / 1000, 0), DateTime::<Utc>::from_timestamp(now, 0)) else {
            return Ok(());
        };
        let _ = check_reported_at(at, now);
    }
}
