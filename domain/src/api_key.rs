//! The plaintext of a provider key, and the format check that makes holding one mean "looks
//! like that provider's key".
//!
//! This module and the infra crypto / provider-call modules are the only places that look at
//! the plaintext; everything else handles an [`ApiKey`] as an opaque value.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::mask::Mask;
use crate::provider::ProviderId;

/// A provider API key. Zeroized on drop; its `Debug` is redacted; it is neither `Serialize` nor
/// `Clone`, so it cannot leak into an event, a view or a log by accident.
pub struct ApiKey {
    provider: ProviderId,
    secret: SecretString,
}

/// Why a key does not look like a key of its provider. Never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key is empty")]
    Empty,
    #[error("the key contains whitespace")]
    Whitespace,
    #[error("the key is longer than {max} characters")]
    TooLong { max: usize },
    #[error("the key contains characters {} never has", .0.a_key())]
    Characters(ProviderId),
    #[error("{} starts with {expected}", provider.a_key())]
    Prefix { provider: ProviderId, expected: &'static str },
    #[error("{} is {expected}", provider.a_key())]
    Length { provider: ProviderId, expected: &'static str },
    #[error("this looks like {}, not {}", other.a_key(), provider.a_key())]
    OtherProvider { provider: ProviderId, other: ProviderId },
}

const MAX_KEY_LEN: usize = 1024;

impl ApiKey {
    /// Checks that `raw` looks like a key of `provider` and wraps it.
    ///
    /// # Errors
    /// A [`KeyFormatError`] naming what is wrong (never quoting the key).
    pub fn parse(provider: ProviderId, raw: SecretString) -> Result<Self, KeyFormatError> {
        check_format(provider, raw.expose_secret())?;
        Ok(Self { provider, secret: raw })
    }

    /// Wraps a key that passed [`ApiKey::parse`] when it was stored, as it comes back out of
    /// sealed storage; formats may have been tightened since, and that must not lock it out.
    #[must_use]
    pub fn from_storage(provider: ProviderId, secret: SecretString) -> Self {
        Self { provider, secret }
    }

    /// The provider this key belongs to.
    #[must_use]
    pub fn provider(&self) -> ProviderId {
        self.provider
    }

    /// The mask shown in place of the key.
    #[must_use]
    pub fn mask(&self) -> Mask {
        Mask::of(self.provider, self.secret.expose_secret())
    }

    /// The plaintext, for sealing it or putting it into one provider request. Callers must not
    /// copy it anywhere that outlives that use.
    #[must_use]
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}, [REDACTED])", self.provider)
    }
}

fn check_format(provider: ProviderId, key: &str) -> Result<(), KeyFormatError> {
    use KeyFormatError as E;
    use ProviderId as P;
    if key.is_empty() {
        return Err(E::Empty);
    }
    if key.chars().any(char::is_whitespace) {
        return Err(E::Whitespace);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(E::TooLong { max: MAX_KEY_LEN });
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(E::Characters(provider));
    }
    let token_chars =
        |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let alnum = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric());
    let length = |expected| E::Length { provider, expected };
    let prefix = |expected| E::Prefix { provider, expected };
    match provider {
        P::Anthropic => {
            let body = key.strip_prefix("sk-ant-").ok_or(prefix("sk-ant-"))?;
            require(token_chars(body), E::Characters(provider))?;
            require(
                (32..=250).contains(&body.len()),
                length("sk-ant- and at least 32 more characters"),
            )
        }
        P::Openai => {
            if key.starts_with("sk-ant-") {
                return Err(E::OtherProvider { provider, other: P::Anthropic });
            }
            let body = key.strip_prefix("sk-").ok_or(prefix("sk-"))?;
            require(token_chars(body), E::Characters(provider))?;
            require((20..=400).contains(&body.len()), length("sk- and at least 20 more characters"))
        }
        P::Google => {
            let body = key.strip_prefix("AIza").ok_or(prefix("AIza"))?;
            require(token_chars(body), E::Characters(provider))?;
            require(body.len() == 35, length("AIza and 35 more characters"))
        }
        P::Mistral => {
            require(alnum(key), E::Characters(provider))?;
            require(key.len() == 32, length("32 letters and digits"))
        }
        P::Groq => {
            let body = key.strip_prefix("gsk_").ok_or(prefix("gsk_"))?;
            require(alnum(body), E::Characters(provider))?;
            require(
                (20..=200).contains(&body.len()),
                length("gsk_ and at least 20 more characters"),
            )
        }
        P::AzureOpenai => {
            require(alnum(key), E::Characters(provider))?;
            require((32..=128).contains(&key.len()), length("32 to 128 letters and digits"))
        }
        P::AlephAlpha => {
            let ok = key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            require(ok, E::Characters(provider))?;
            require(key.len() >= 32, length("at least 32 characters"))
        }
        // Local servers take whatever token their operator configured.
        P::Ollama | P::Lmstudio | P::Vllm => Ok(()),
    }
}

fn require(condition: bool, error: KeyFormatError) -> Result<(), KeyFormatError> {
    if condition {
        Ok(())
    } else {
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(provider: ProviderId, raw: &str) -> Result<ApiKey, KeyFormatError> {
        ApiKey::parse(provider, SecretString::from(raw.to_owned()))
    }

    #[test]
    fn accepts_keys_shaped_like_each_providers() {
        let samples = [
            (ProviderId::Anthropic, format!("sk-ant-api03-{}", "a".repeat(80))),
            (ProviderId::Openai, format!("sk-proj-{}", "b".repeat(60))),
            (ProviderId::Openai, format!("sk-{}", "c".repeat(48))),
            (ProviderId::Google, format!("AIza{}", "d".repeat(35))),
            (ProviderId::Mistral, "e".repeat(32)),
            (ProviderId::Groq, format!("gsk_{}", "f".repeat(52))),
            (ProviderId::AzureOpenai, "0123456789abcdef".repeat(2)),
            (ProviderId::AlephAlpha, "eyJhbGciOi.JIUzI1NiJ9.abcdefghijklmnop".to_owned()),
            (ProviderId::Ollama, "local-token".to_owned()),
        ];
        for (provider, raw) in samples {
            assert!(parse(provider, &raw).is_ok(), "{provider}");
        }
    }

    #[test]
    fn whitespace_anywhere_is_refused() {
        let raw = format!("sk-ant-api03-{} ", "a".repeat(80));
        assert_eq!(parse(ProviderId::Anthropic, &raw).err(), Some(KeyFormatError::Whitespace));
        assert_eq!(parse(ProviderId::Ollama, "a\tb").err(), Some(KeyFormatError::Whitespace));
    }

    #[test]
    fn wrong_prefix_and_length_are_named() {
        let err = parse(ProviderId::Anthropic, &format!("sk-{}", "a".repeat(80))).err();
        assert!(matches!(err, Some(KeyFormatError::Prefix { .. })));
        let err = parse(ProviderId::Google, "AIzashort").err();
        assert!(matches!(err, Some(KeyFormatError::Length { .. })));
        let err = parse(ProviderId::Openai, &format!("sk-ant-{}", "a".repeat(80))).err();
        assert!(matches!(err, Some(KeyFormatError::OtherProvider { .. })));
    }

    #[test]
    fn each_message_says_what_is_wrong_with_that_key() {
        let message = |provider, raw: &str| parse(provider, raw).err().map(|e| e.to_string());
        assert_eq!(
            message(ProviderId::Anthropic, "sk-proj-abc"),
            Some("an Anthropic key starts with sk-ant-".to_owned())
        );
        assert_eq!(
            message(ProviderId::Openai, &format!("sk-ant-api03-{}", "a".repeat(80))),
            Some("this looks like an Anthropic key, not an OpenAI key".to_owned())
        );
        assert_eq!(
            message(ProviderId::Openai, &format!("sk-{}", "a".repeat(2000))),
            Some("the key is longer than 1024 characters".to_owned())
        );
        assert_eq!(
            message(ProviderId::Google, "AIza!!"),
            Some("the key contains characters a Google key never has".to_owned())
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let raw = format!("sk-ant-api03-{}", "Z".repeat(80));
        let key = parse(ProviderId::Anthropic, &raw).expect("valid");
        assert!(!format!("{key:?}").contains("ZZZZ"));
    }
}
