//! Reads answered from the views.

use keyledger_domain::{KeyringError, OrgId, ProviderId};
use keyledger_projections::queries;

use crate::error::ApiError;
use crate::state::AppState;
use crate::views::{KeyList, MaskedKey, OrgStatus, ProviderOrder};

fn storage(error: sqlx::Error) -> ApiError {
    ApiError::from_store(&error)
}

/// The masked keys of `org`.
pub(crate) async fn key_list(state: &AppState, org: &OrgId) -> Result<KeyList, ApiError> {
    let mut keys: Vec<MaskedKey> = queries::keys(&state.views, org.as_str())
        .await
        .map_err(storage)?
        .into_iter()
        .map(MaskedKey::from)
        .collect();
    // Registry order, as everywhere else.
    keys.sort_by_key(|k| ProviderId::ALL.iter().position(|p| p.as_str() == k.provider));
    let byok_active = keys.iter().any(|k| k.status == "active");
    Ok(KeyList { keys, byok_active })
}

/// One masked key of `org`.
pub(crate) async fn masked_key(
    state: &AppState,
    org: &OrgId,
    provider: ProviderId,
) -> Result<MaskedKey, ApiError> {
    key_list(state, org)
        .await?
        .keys
        .into_iter()
        .find(|k| k.provider == provider.as_str())
        .ok_or_else(|| KeyringError::KeyNotFound(provider).into())
}

/// The provider order of `org`.
pub(crate) async fn provider_order(
    state: &AppState,
    org: &OrgId,
) -> Result<ProviderOrder, ApiError> {
    Ok(ProviderOrder {
        providers: queries::provider_order(&state.views, org.as_str()).await.map_err(storage)?,
    })
}

/// The status of `org`: its defaults until something changed.
pub(crate) async fn org_status(state: &AppState, org: &OrgId) -> Result<OrgStatus, ApiError> {
    let row = queries::org_status(&state.views, org.as_str()).await.map_err(storage)?;
    let (plan, byok_access, erased_at) = row.map_or_else(
        || ("starter".to_owned(), true, None),
        |r| (r.plan, r.byok_access, r.erased_at),
    );
    let keys = key_list(state, org).await?;
    Ok(OrgStatus {
        org: org.to_string(),
        plan,
        byok_access,
        byok_active: keys.byok_active,
        keys: keys.keys,
        provider_order: provider_order(state, org).await?.providers,
        erased_at,
    })
}
