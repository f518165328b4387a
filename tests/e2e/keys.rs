//! Recognizable test keys: each one unique, so a search for it finds only its own leaks.

use uuid::Uuid;

/// A fresh Anthropic-shaped key with a canary in the middle.
pub(crate) fn anthropic() -> String {
    format!(
        "sk-ant-api03-CANARY{}x{}",
        Uuid::new_v4().simple(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A fresh OpenAI-shaped key.
pub(crate) fn openai() -> String {
    format!(
        "sk-proj-CANARY{}{}",
        Uuid::new_v4().simple(),
        &Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A fresh Google-shaped key (`AIza` + 35).
pub(crate) fn google() -> String {
    format!("AIza{}", &format!("CANARY{}", Uuid::new_v4().simple())[..35])
}

/// The last four characters, as the mask shows them.
pub(crate) fn last4(key: &str) -> &str {
    &key[key.len() - 4..]
}
