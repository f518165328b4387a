//! Response bodies: what clients see of an organization and its keys. Never a secret.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use keyledger_domain::{KeyState, Keyring, OrgId, ProviderId, Verification};
use keyledger_projections::queries::KeyRow;

/// A key as shown: masked, never the key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MaskedKey {
    #[schema(example = "anthropic")]
    pub provider: String,
    #[schema(example = "sk-ant-••••xK7q")]
    pub masked: String,
    #[schema(example = "xK7q")]
    pub hint: String,
    pub version: u32,
    #[schema(example = "active")]
    pub status: String,
    pub description: Option<String>,
    pub default_model: Option<String>,
    pub endpoint: Option<String>,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub last_verification: Option<VerificationView>,
}

/// The outcome of a provider check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct VerificationView {
    pub ok: bool,
    #[schema(example = "valid")]
    pub outcome: String,
    pub checked_at: DateTime<Utc>,
}

/// An organization's plan, BYOK state, keys and provider order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct OrgStatus {
    pub org: String,
    pub plan: String,
    pub byok_access: bool,
    pub byok_active: bool,
    pub keys: Vec<MaskedKey>,
    pub provider_order: Vec<String>,
    /// When the organization was erased (its keys destroyed), until its next change starts
    /// it afresh; `null` otherwise.
    pub erased_at: Option<DateTime<Utc>>,
}

/// The keys of an organization.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct KeyList {
    pub keys: Vec<MaskedKey>,
    pub byok_active: bool,
}

/// An organization's provider order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ProviderOrder {
    pub providers: Vec<String>,
}

impl From<&Verification> for VerificationView {
    fn from(v: &Verification) -> Self {
        Self {
            ok: v.outcome.is_ok(),
            outcome: v.outcome.as_str().to_owned(),
            checked_at: v.checked_at,
        }
    }
}

/// The one mapping of a key to what the API shows: reads of the view, command answers and
/// point-in-time reads all go through it.
impl From<KeyRow> for MaskedKey {
    fn from(row: KeyRow) -> Self {
        let last_verification = match (row.verification_outcome, row.verified_at) {
            (Some(outcome), Some(checked_at)) => {
                Some(VerificationView { ok: outcome == "valid", outcome, checked_at })
            }
            _ => None,
        };
        Self {
            provider: row.provider,
            masked: row.masked,
            hint: row.hint,
            version: u32::try_from(row.version).unwrap_or_default(),
            status: row.status,
            description: row.description,
            default_model: row.default_model,
            endpoint: row.endpoint,
            created_at: row.created_at,
            rotated_at: row.rotated_at,
            last_verification,
        }
    }
}

impl MaskedKey {
    /// The view of `key`, the key of `provider`, mapped as a row of the view is.
    #[must_use]
    pub(crate) fn of(provider: ProviderId, key: &KeyState) -> Self {
        Self::from(KeyRow::of(provider, key))
    }
}

impl KeyList {
    /// The keys of `keyring`, by provider id.
    #[must_use]
    pub(crate) fn of(keyring: &Keyring) -> Self {
        Self {
            keys: keyring.keys().iter().map(|(p, k)| MaskedKey::of(*p, k)).collect(),
            byok_active: keyring.byok_active(),
        }
    }
}

impl OrgStatus {
    /// The status of `org` whose Keyring is `keyring`.
    #[must_use]
    pub(crate) fn of(org: &OrgId, keyring: &Keyring) -> Self {
        Self {
            org: org.to_string(),
            plan: keyring.plan().to_string(),
            byok_access: keyring.byok_access(),
            byok_active: keyring.byok_active(),
            keys: KeyList::of(keyring).keys,
            provider_order: ProviderOrder::of(keyring).providers,
            erased_at: keyring.erased_at(),
        }
    }
}

impl ProviderOrder {
    /// The provider order of `keyring`.
    #[must_use]
    pub(crate) fn of(keyring: &Keyring) -> Self {
        Self { providers: keyring.provider_order().iter().map(|p| p.as_str().to_owned()).collect() }
    }
}
