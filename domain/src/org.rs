//! Organization identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An organization id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`. Holding one means it is valid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgId(String);

/// Why a string is not an organization id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an org id is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit")]
pub struct OrgIdError;

impl OrgId {
    /// Parses an org id.
    ///
    /// # Errors
    /// [`OrgIdError`] when the string does not match the org id pattern.
    pub fn parse(raw: &str) -> Result<Self, OrgIdError> {
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if first_ok && rest_ok && raw.len() <= 64 {
            Ok(Self(raw.to_owned()))
        } else {
            Err(OrgIdError)
        }
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OrgId {
    type Error = OrgIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<OrgId> for String {
    fn from(value: OrgId) -> Self {
        value.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_shapes() {
        for ok in ["a", "acme", "Acme-1.eu_west", &"x".repeat(64)] {
            assert!(OrgId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", "-acme", ".acme", "ac me", "acme/1", "ac%me", &"x".repeat(65), "é"] {
            assert_eq!(OrgId::parse(bad), Err(OrgIdError), "{bad}");
        }
    }
}
