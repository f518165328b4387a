//! Auditors' endpoints: the audit trail, its verification, and the raw event history.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{parse_provider, OrgParam};
use crate::openapi::{AuditAction, OrgPath, ProviderName};
use crate::state::AppState;
use keyledger_projections::audit::{self, AuditEntry, ChainReport};
use keyledger_projections::EventLog;

/// Query of `GET …/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Entries after this sequence number.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many entries (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only entries of this action (`key.stored`, `key.rotated`, …).
    #[param(value_type = Option<AuditAction>)]
    action: Option<String>,
    /// Only entries about this provider.
    #[param(value_type = Option<ProviderName>)]
    provider: Option<String>,
}

/// A page of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; `null` at the end.
    next: Option<i64>,
}

/// The result of verifying the trail.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditVerification {
    ok: bool,
    entries: u64,
    head: String,
    first_bad_seq: Option<i64>,
}

impl From<ChainReport> for AuditVerification {
    fn from(r: ChainReport) -> Self {
        Self { ok: r.ok, entries: r.entries, head: r.head, first_bad_seq: r.first_bad_seq }
    }
}

/// Query of `GET …/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Events after this global position (0 or absent: from the start).
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// `after` as given (0 when absent); a negative one is refused, as the document says.
fn not_negative(after: Option<i64>) -> Result<i64, ApiError> {
    match after {
        Some(after) if after < 0 => Err(ApiError::invalid_request("after is 0 or more")),
        after => Ok(after.unwrap_or(0)),
    }
}

/// The query of a request, or a problem saying it is malformed.
pub(crate) fn query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| ApiError::invalid_request("unknown or malformed query parameter"))
}

/// The organization's audit trail, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit", tag = "audit",
    params(OrgPath, AuditQuery),
    responses((status = 200, body = AuditPage), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn audit_page(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    params: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    let params = query(params)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_request("limit is 1 to 1000"));
    }
    let after = not_negative(params.after)?;
    if params.action.as_deref().is_some_and(|a| !audit::ACTIONS.contains(&a)) {
        return Err(ApiError::invalid_request(format!(
            "action is one of {}",
            audit::ACTIONS.join(", ")
        )));
    }
    let provider = params.provider.as_deref().map(parse_provider).transpose()?;
    let filter = audit::EntryFilter {
        action: params.action,
        provider: provider.map(|p| p.as_str().to_owned()),
    };
    state.settle(&org).await;
    let entries = audit::page(&state.views, org.as_str(), after, limit, &filter)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.seq)).flatten();
    Ok(axum::Json(AuditPage { entries, next }))
}

/// Checks the organization's audit trail: the hash chain, and the trail against the log.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit/verify", tag = "audit",
    params(OrgPath),
    responses((status = 200, body = AuditVerification), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn audit_verify(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
) -> Result<axum::Json<AuditVerification>, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    state.settle(&org).await;
    let report =
        audit::verify(&state.views, org.as_str()).await.map_err(|e| ApiError::from_store(&e))?;
    Ok(axum::Json(report.into()))
}

const EVENTS_PAGE: i64 = 1_000;

/// The organization's raw event history as NDJSON, one event a line, with global positions.
/// Events hold masks, fingerprints and material references, never key material.
#[utoipa::path(get, path = "/v1/orgs/{org}/events", tag = "audit",
    params(OrgPath, EventsQuery),
    responses((status = 200, content_type = "application/x-ndjson", description = "one event a line"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    params: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    let after = not_negative(query(params)?.after)?;
    // The log is read in global order up to where no transaction still open could come
    // before: once the views show the organization's latest events, so can this.
    state.settle(&org).await;
    state.settle_usage_reads(Some(&org)).await;
    let log: EventLog = state.log.clone();
    let org = org.to_string();
    // Page through the log as the client reads, never holding the whole history.
    let lines = stream::unfold(Some(after), move |cursor| {
        let (log, org) = (log.clone(), org.clone());
        async move {
            let after = cursor?;
            match log.read_org_after(&org, after, EVENTS_PAGE).await {
                Ok(events) if events.is_empty() => None,
                Ok(events) => {
                    let next = events.last().map(|e| e.cursor.position);
                    let mut chunk = String::new();
                    for e in &events {
                        let line = json!({
                            "position": e.cursor.position,
                            "aggregate_id": e.stored.aggregate_id,
                            "sequence": e.stored.sequence,
                            "event_type": e.stored.event_type,
                            "event_version": e.stored.event_version,
                            "payload": e.payload_json(),
                            "metadata": e.metadata_json(),
                        });
                        chunk.push_str(&line.to_string());
                        chunk.push('\n');
                    }
                    let more = (events.len() as i64 == EVENTS_PAGE).then_some(next).flatten();
                    Some((Ok::<_, std::io::Error>(chunk), more))
                }
                Err(error) => {
                    tracing::error!(%error, "reading the event history failed mid-stream");
                    Some((Err(std::io::Error::other("event history unavailable")), None))
                }
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}
