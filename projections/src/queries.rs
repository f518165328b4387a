//! Reading the views.

use chrono::{DateTime, Utc};

use crate::db::{Arg, Pool};

/// A row of the masked-key view.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyRow {
    pub provider: String,
    pub masked: String,
    pub hint: String,
    pub version: i64,
    pub status: String,
    pub description: Option<String>,
    pub default_model: Option<String>,
    pub endpoint: Option<String>,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub verification_outcome: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
}

/// An organization's plan and BYOK access.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrgRow {
    pub plan: String,
    pub byok_access: bool,
}

/// The keys of `org`, by provider id.
///
/// # Errors
/// The database's error.
pub async fn keys(pool: &Pool, org: &str) -> Result<Vec<KeyRow>, sqlx::Error> {
    pool.fetch_all(
        "select provider, masked, hint, version, status, description, default_model, endpoint, \
         created_at, rotated_at, verification_outcome, verified_at from view_keys \
         where org_id = $1 order by provider",
        &[Arg::Text(org.to_owned())],
    )
    .await
}

/// The plan and BYOK access of `org` (`None`: never changed, on its defaults).
///
/// # Errors
/// The database's error.
pub async fn org_status(pool: &Pool, org: &str) -> Result<Option<OrgRow>, sqlx::Error> {
    Ok(pool
        .fetch_all(
            "select plan, byok_access from view_org_status where org_id = $1",
            &[Arg::Text(org.to_owned())],
        )
        .await?
        .into_iter()
        .next())
}

/// The provider order of `org` (empty if never set).
///
/// # Errors
/// The database's error.
pub async fn provider_order(pool: &Pool, org: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = pool
        .fetch_all(
            "select providers from view_provider_order where org_id = $1",
            &[Arg::Text(org.to_owned())],
        )
        .await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|(json,)| serde_json::from_str(&json).ok())
        .unwrap_or_default())
}
