//! Reading the views.

use chrono::{DateTime, Utc};

use keyledger_domain::{KeyState, ProviderId};
use keyledger_store::{Arg, Database};

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

impl KeyRow {
    /// The row the masked-key view holds for `key`, the key of `provider`: what a command's
    /// answer and a point-in-time read show, so that they say what a read of the view says.
    #[must_use]
    pub fn of(provider: ProviderId, key: &KeyState) -> Self {
        Self {
            provider: provider.as_str().to_owned(),
            masked: key.mask.masked.clone(),
            hint: key.mask.hint.clone(),
            version: i64::from(key.version),
            status: key.status.as_str().to_owned(),
            description: key.description.clone(),
            default_model: key.default_model.clone(),
            endpoint: key.endpoint.clone(),
            created_at: key.created_at,
            rotated_at: key.rotated_at,
            verification_outcome: key
                .last_verification
                .as_ref()
                .map(|v| v.outcome.as_str().to_owned()),
            verified_at: key.last_verification.as_ref().map(|v| v.checked_at),
        }
    }
}

/// An organization's plan and BYOK access.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrgRow {
    pub plan: String,
    pub byok_access: bool,
    /// When the organization was erased, until it starts afresh.
    pub erased_at: Option<DateTime<Utc>>,
}

/// The keys of `org`, by provider id.
///
/// # Errors
/// The database's error.
pub async fn keys(pool: &Database, org: &str) -> Result<Vec<KeyRow>, sqlx::Error> {
    pool.fetch_all(
        "select provider, masked, hint, version, status, description, default_model, endpoint, \
         created_at, rotated_at, verification_outcome, verified_at from view_keys \
         where org_id = $1 order by provider",
        &[Arg::Text(org.to_owned())],
    )
    .await
}

/// A row of the masked-key view (all null when the view holds no key of the organization),
/// with what the same statement saw of the log and of the views' checkpoints.
#[derive(sqlx::FromRow)]
struct KeyRowAsSeen {
    provider: Option<String>,
    masked: Option<String>,
    hint: Option<String>,
    version: Option<i64>,
    status: Option<String>,
    description: Option<String>,
    default_model: Option<String>,
    endpoint: Option<String>,
    created_at: Option<DateTime<Utc>>,
    rotated_at: Option<DateTime<Utc>>,
    verification_outcome: Option<String>,
    verified_at: Option<DateTime<Utc>>,
    latest_txid: Option<i64>,
    latest_position: Option<i64>,
    shown_txid: Option<i64>,
    shown_position: Option<i64>,
}

impl KeyRowAsSeen {
    /// Whether the view, as this statement saw it, shows the organization's latest event (or
    /// the organization has none).
    fn shows_latest(&self) -> bool {
        let cursor = |txid: Option<i64>, position: Option<i64>| {
            Some(crate::Cursor { txid: txid?, position: position? })
        };
        match (
            cursor(self.latest_txid, self.latest_position),
            cursor(self.shown_txid, self.shown_position),
        ) {
            (None, _) => true,
            (Some(latest), Some(shown)) => shown >= latest,
            (Some(_), None) => false,
        }
    }

    fn key(self) -> Option<KeyRow> {
        Some(KeyRow {
            provider: self.provider?,
            masked: self.masked?,
            hint: self.hint?,
            version: self.version?,
            status: self.status?,
            description: self.description,
            default_model: self.default_model,
            endpoint: self.endpoint,
            created_at: self.created_at?,
            rotated_at: self.rotated_at,
            verification_outcome: self.verification_outcome,
            verified_at: self.verified_at,
        })
    }
}

/// [`keys`] of `org` if the view, as read, already shows the organization's latest Keyring
/// event: one statement reads the rows, where that event stands in the log and where the
/// checkpoints of `showing` (the projections that show Keyring events) stand, all in one
/// snapshot. `None` when the view is behind: the caller then waits for the views and reads
/// again.
///
/// # Errors
/// The database's error.
pub async fn keys_if_shown(
    pool: &Database,
    org: &str,
    showing: &[&str],
) -> Result<Option<Vec<KeyRow>>, sqlx::Error> {
    let keyring = <keyledger_domain::Keyring as cqrs_es::Aggregate>::TYPE;
    let latest = keyledger_store::event_store::GlobalOrder::new(pool.clone())
        .latest_cursor_table(keyring, "$1");
    let (names, named) = keyledger_store::in_list(2, showing);
    // A row even for an organization without keys: it carries what was seen. (Joined
    // tables, not scalar subqueries: two lookups instead of four.)
    let sql = format!(
        "select k.provider, k.masked, k.hint, k.version, k.status, k.description, \
         k.default_model, k.endpoint, k.created_at, k.rotated_at, k.verification_outcome, \
         k.verified_at, latest.txid as latest_txid, latest.position as latest_position, \
         shown.transaction_id as shown_txid, shown.position as shown_position \
         from (select 1 as seen) as statement \
         left join {latest} as latest on 1 = 1 \
         left join (select transaction_id, position from projection_checkpoints \
                    where name in ({names}) order by transaction_id, position limit 1) as shown \
           on 1 = 1 \
         left join view_keys k on k.org_id = $1 \
         order by k.provider"
    );
    let mut args = vec![Arg::Text(org.to_owned())];
    args.extend(named);
    let rows: Vec<KeyRowAsSeen> = pool.fetch_all(&sql, &args).await?;
    if !rows.first().is_some_and(KeyRowAsSeen::shows_latest) {
        return Ok(None);
    }
    Ok(Some(rows.into_iter().filter_map(KeyRowAsSeen::key).collect()))
}

/// The plan and BYOK access of `org` (`None`: never changed, on its defaults).
///
/// # Errors
/// The database's error.
pub async fn org_status(pool: &Database, org: &str) -> Result<Option<OrgRow>, sqlx::Error> {
    Ok(pool
        .fetch_all(
            "select plan, byok_access, erased_at from view_org_status where org_id = $1",
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
pub async fn provider_order(pool: &Database, org: &str) -> Result<Vec<String>, sqlx::Error> {
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

/// A row of the usage cockpit, grouped by the chosen dimensions (the others are `None`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRow {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub day: Option<String>,
    pub key_source: Option<String>,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

/// The dimensions usage can be grouped by.
pub const USAGE_DIMENSIONS: [&str; 4] = ["provider", "model", "day", "key_source"];

/// Usage of `org` between the days `from` and `to` (inclusive, `YYYY-MM-DD`), summed per
/// combination of `group_by` (a subset of [`USAGE_DIMENSIONS`]).
///
/// # Errors
/// The database's error.
pub async fn usage(
    pool: &Database,
    org: &str,
    from: &str,
    to: &str,
    group_by: &[&str],
) -> Result<Vec<UsageRow>, sqlx::Error> {
    // Only the known column names reach the SQL.
    let chosen: Vec<&str> =
        USAGE_DIMENSIONS.iter().copied().filter(|d| group_by.contains(d)).collect();
    let select: Vec<String> = USAGE_DIMENSIONS
        .iter()
        .map(|d| {
            if chosen.contains(d) {
                (*d).to_owned()
            } else {
                format!("cast(null as text) as {d}")
            }
        })
        .collect();
    let group = if chosen.is_empty() {
        String::new()
    } else {
        format!("group by {0} order by {0}", chosen.join(", "))
    };
    let sum = |column: &str| format!("{} as {column}", pool.capped_sum(column));
    let sql = format!(
        "select {}, {}, {}, {}, {} \
         from usage_daily where org_id = $1 and day >= $2 and day <= $3 {group}",
        select.join(", "),
        sum("calls"),
        sum("input_tokens"),
        sum("output_tokens"),
        sum("cost_micros"),
    );
    pool.fetch_all(
        &sql,
        &[Arg::Text(org.to_owned()), Arg::Text(from.to_owned()), Arg::Text(to.to_owned())],
    )
    .await
}

/// One recorded model call.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CallRow {
    pub request_id: String,
    pub provider: String,
    pub model: String,
    pub key_source: String,
    pub key_version: Option<i64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub at: DateTime<Utc>,
}

/// The `limit` most recent calls of `org`, newest first.
///
/// # Errors
/// The database's error.
pub async fn recent_calls(
    pool: &Database,
    org: &str,
    limit: i64,
) -> Result<Vec<CallRow>, sqlx::Error> {
    pool.fetch_all(
        "select request_id, provider, model, key_source, key_version, input_tokens, output_tokens, cost_micros, at \
         from usage_calls where org_id = $1 order by position desc, slot desc limit $2",
        &[Arg::Text(org.to_owned()), Arg::Int(limit)],
    )
    .await
}

/// One organization in the platform admin's list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrgListRow {
    pub org_id: String,
    pub plan: Option<String>,
    pub byok_access: Option<bool>,
    pub keys: i64,
    pub active_keys: i64,
    pub calls: i64,
    pub cost_micros: i64,
}

/// Up to `limit` organizations after `after` in id order whose id contains `query` (any, if
/// empty), with their plan and BYOK access (`None`: on the defaults), key counts, and calls and
/// cost from `month_start` (`YYYY-MM-DD`) on.
///
/// # Errors
/// The database's error.
pub async fn org_list(
    pool: &Database,
    after: &str,
    query: &str,
    limit: i64,
    month_start: &str,
) -> Result<Vec<OrgListRow>, sqlx::Error> {
    let contains = pool.contains("org_id", "$2");
    // The directory is the organizations with a Keyring and those with usage, each kept by
    // its own projection; both are walked in id order by their keys and merged, a page at a
    // time.
    let sql = format!(
        "select o.org_id, s.plan, s.byok_access, \
           (select count(*) from view_keys k where k.org_id = o.org_id) as keys, \
           (select count(*) from view_keys k where k.org_id = o.org_id and k.status = 'active') as active_keys, \
           (select {calls} from usage_daily u where u.org_id = o.org_id and u.day >= $4) as calls, \
           (select {cost} from usage_daily u where u.org_id = o.org_id and u.day >= $4) as cost_micros \
         from (select org_id from (\
                 select org_id from view_orgs where org_id > $1 and ($2 = '' or {contains}) \
                 union all \
                 select org_id from usage_orgs where org_id > $1 and ($2 = '' or {contains})\
               ) listed group by org_id order by org_id limit $3) o \
         left join view_org_status s on s.org_id = o.org_id \
         order by o.org_id",
        calls = pool.capped_sum("calls"),
        cost = pool.capped_sum("cost_micros"),
    );
    pool.fetch_all(
        &sql,
        &[
            Arg::Text(after.to_owned()),
            Arg::Text(query.to_owned()),
            Arg::Int(limit),
            Arg::Text(month_start.to_owned()),
        ],
    )
    .await
}

/// One call as an export writes it: the call, whose it is, and where it stands in the log.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExportRow {
    pub position: i64,
    /// The call's place among the calls its event recorded.
    pub slot: i64,
    pub org_id: String,
    #[sqlx(flatten)]
    pub call: CallRow,
}

/// Up to `limit` calls made in `[from, until)` after `after` (a log position and a slot within
/// its event), in log order: of
/// `org`, or of every organization. An export pages through them, so it holds one page at a
/// time however many there are.
///
/// # Errors
/// The database's error.
pub async fn calls_page(
    pool: &Database,
    org: Option<&str>,
    (from, until): (DateTime<Utc>, DateTime<Utc>),
    (after, after_slot): (i64, i64),
    limit: i64,
) -> Result<Vec<ExportRow>, sqlx::Error> {
    let columns = "position, slot, org_id, request_id, provider, model, key_source, key_version, \
                   input_tokens, output_tokens, cost_micros, at";
    let range =
        [Arg::Int(after), Arg::Time(from), Arg::Time(until), Arg::Int(limit), Arg::Int(after_slot)];
    match org {
        Some(org) => {
            let sql = format!(
                "select {columns} from usage_calls where org_id = $6 and (position, slot) > ($1, $5) \
                 and at >= $2 and at < $3 order by position, slot limit $4"
            );
            let args: Vec<Arg> = range.into_iter().chain([Arg::Text(org.to_owned())]).collect();
            pool.fetch_all(&sql, &args).await
        }
        None => {
            let sql = format!(
                "select {columns} from usage_calls where (position, slot) > ($1, $5) \
                 and at >= $2 and at < $3 order by position, slot limit $4"
            );
            pool.fetch_all(&sql, &range).await
        }
    }
}
