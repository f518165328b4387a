//! Reads answered from the views, once they show the organization's latest change (a client
//! reads its own writes: commands answer without waiting for the views).

use keyledger_domain::{KeyringError, OrgId, ProviderId};
use keyledger_projections::queries;

use crate::error::ApiError;
use crate::state::{AppState, KEYRING};
use crate::views::{KeyList, MaskedKey, OrgStatus, ProviderOrder};

fn storage(error: sqlx::Error) -> ApiError {
    ApiError::from_store(&error)
}

/// The masked keys of `org`, once the views show its latest change. The read of the keys
/// itself says whether they do (see [`queries::keys_if_shown`]): most reads make one round
/// trip; the others wait for the views and read again.
pub(crate) async fn key_list(state: &AppState, org: &OrgId) -> Result<KeyList, ApiError> {
    let showing = state.projector.consumers_of(KEYRING);
    let read = queries::keys_if_shown(&state.views, org.as_str(), &showing).await;
    if let Some(rows) = read.map_err(storage)? {
        return Ok(list_of(rows));
    }
    state.settle(org).await;
    keys_shown(state, org).await
}

/// The masked keys of `org` as the views show them now (the caller has settled).
async fn keys_shown(state: &AppState, org: &OrgId) -> Result<KeyList, ApiError> {
    Ok(list_of(queries::keys(&state.views, org.as_str()).await.map_err(storage)?))
}

fn list_of(rows: Vec<queries::KeyRow>) -> KeyList {
    let mut keys: Vec<MaskedKey> = rows.into_iter().map(MaskedKey::from).collect();
    // Registry order, as everywhere else.
    keys.sort_by_key(|k| ProviderId::ALL.iter().position(|p| p.as_str() == k.provider));
    let byok_active = keys.iter().any(|k| k.status == "active");
    KeyList { keys, byok_active }
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
    state.settle(org).await;
    order_shown(state, org).await
}

async fn order_shown(state: &AppState, org: &OrgId) -> Result<ProviderOrder, ApiError> {
    Ok(ProviderOrder {
        providers: queries::provider_order(&state.views, org.as_str()).await.map_err(storage)?,
    })
}

/// The status of `org`: its defaults until something changed.
pub(crate) async fn org_status(state: &AppState, org: &OrgId) -> Result<OrgStatus, ApiError> {
    // The keys first: once they are read the views show the latest change, and the status
    // and order read after them are at least as new.
    let keys = key_list(state, org).await?;
    let row = queries::org_status(&state.views, org.as_str()).await.map_err(storage)?;
    let (plan, byok_access, erased_at) = row.map_or_else(
        || ("starter".to_owned(), true, None),
        |r| (r.plan, r.byok_access, r.erased_at),
    );
    Ok(OrgStatus {
        org: org.to_string(),
        plan,
        byok_access,
        byok_active: keys.byok_active,
        keys: keys.keys,
        provider_order: order_shown(state, org).await?.providers,
        erased_at,
    })
}
