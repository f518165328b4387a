//! The usage cockpit: what an organization's model calls used and cost.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{Datelike, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{parse_provider, Json, OrgParam};
use crate::openapi::OrgPath;
use crate::openapi::ProviderName;
use crate::state::AppState;
use keyledger_domain::usage::{check_reported_at, ModelCallRecorded, MAX_TOKENS_PER_CALL};
use keyledger_infra::gateway::ReportedCall;
use keyledger_infra::Recorded;
use keyledger_projections::queries::{self, CallRow, USAGE_DIMENSIONS};

/// Query of `GET …/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    /// First day, `YYYY-MM-DD` (default: the first of this month).
    #[param(value_type = Option<chrono::NaiveDate>)]
    from: Option<String>,
    /// Last day, inclusive (default: today).
    #[param(value_type = Option<chrono::NaiveDate>)]
    to: Option<String>,
    /// Comma-separated subset of provider, model, day, key_source (default: all four).
    #[param(pattern = r"^(provider|model|day|key_source)(,(provider|model|day|key_source))*$")]
    group_by: Option<String>,
}

/// Usage rows and their totals.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsageReport {
    #[schema(value_type = Vec<Object>)]
    rows: Vec<Value>,
    #[schema(value_type = Object)]
    totals: Value,
}

/// Query of `GET …/usage/calls`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallsQuery {
    /// At most this many calls (1 to 1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// One recorded call.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CallView {
    request_id: String,
    provider: String,
    model: String,
    key_source: String,
    key_version: Option<i64>,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    at: chrono::DateTime<Utc>,
}

/// The most recent calls.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CallList {
    calls: Vec<CallView>,
}

pub(super) fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

fn day(text: Option<String>, default: NaiveDate, name: &str) -> Result<String, ApiError> {
    match text {
        None => Ok(default.format("%Y-%m-%d").to_string()),
        Some(t) => NaiveDate::parse_from_str(&t, "%Y-%m-%d")
            .map(|d| d.format("%Y-%m-%d").to_string())
            .map_err(|_| ApiError::invalid_request(format!("{name} must be a day, YYYY-MM-DD"))),
    }
}

/// Calls, tokens and cost, grouped by provider, model, day and key source.
#[utoipa::path(get, path = "/v1/orgs/{org}/usage", tag = "usage",
    params(OrgPath, UsageQuery),
    responses((status = 200, body = UsageReport), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    params: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<UsageReport>, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    let Query(params) =
        params.map_err(|_| ApiError::invalid_request("unknown or malformed query parameter"))?;
    let today = Utc::now().date_naive();
    let first = today.with_day(1).unwrap_or(today);
    let (from, to) = (day(params.from, first, "from")?, day(params.to, today, "to")?);
    let group_by: Vec<&str> = match params.group_by.as_deref() {
        None => USAGE_DIMENSIONS.to_vec(),
        Some(list) => list.split(',').collect(),
    };
    if group_by.iter().any(|d| !USAGE_DIMENSIONS.contains(d)) {
        return Err(ApiError::invalid_request(
            "cannot group by that; use provider, model, day, key_source",
        ));
    }
    state.settle_usage_reads(Some(&org)).await;
    let rows = queries::usage(&state.views, org.as_str(), &from, &to, &group_by)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    let mut totals = (0, 0, 0, 0);
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            totals = (
                totals.0 + r.calls,
                totals.1 + r.input_tokens,
                totals.2 + r.output_tokens,
                totals.3 + r.cost_micros,
            );
            let mut row = Map::new();
            for (name, value) in [
                ("provider", r.provider),
                ("model", r.model),
                ("day", r.day),
                ("key_source", r.key_source),
            ] {
                if group_by.contains(&name) {
                    row.insert(name.to_owned(), value.map_or(Value::Null, Value::String));
                }
            }
            row.insert("calls".to_owned(), r.calls.into());
            row.insert("input_tokens".to_owned(), r.input_tokens.into());
            row.insert("output_tokens".to_owned(), r.output_tokens.into());
            row.insert("cost_usd".to_owned(), usd(r.cost_micros).into());
            Value::Object(row)
        })
        .filter(|row| row["calls"].as_i64().unwrap_or(0) > 0)
        .collect();
    let totals = serde_json::json!({
        "calls": totals.0, "input_tokens": totals.1, "output_tokens": totals.2, "cost_usd": usd(totals.3),
    });
    Ok(axum::Json(UsageReport { rows, totals }))
}

/// The organization's most recent model calls, newest first.
#[utoipa::path(get, path = "/v1/orgs/{org}/usage/calls", tag = "usage",
    params(OrgPath, CallsQuery),
    responses((status = 200, body = CallList), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn recent_calls(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    params: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<CallList>, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    let Query(params) =
        params.map_err(|_| ApiError::invalid_request("unknown or malformed query parameter"))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_request("limit is 1 to 1000"));
    }
    state.settle_usage_reads(Some(&org)).await;
    let calls = queries::recent_calls(&state.views, org.as_str(), limit)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    Ok(axum::Json(CallList { calls: calls.into_iter().map(call_view).collect() }))
}

pub(super) fn call_view(c: CallRow) -> CallView {
    CallView {
        request_id: c.request_id,
        provider: c.provider,
        model: c.model,
        key_source: c.key_source,
        key_version: c.key_version,
        input_tokens: c.input_tokens,
        output_tokens: c.output_tokens,
        cost_usd: usd(c.cost_micros),
        at: c.at,
    }
}

/// Body of `POST …/usage`: a model call made elsewhere.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordUsageRequest {
    /// The caller's id of the call; sending it again records nothing new.
    #[schema(min_length = 1, max_length = 200)]
    request_id: String,
    #[schema(value_type = ProviderName, example = "openai")]
    provider: String,
    #[schema(example = "gpt-4o-mini", min_length = 1, max_length = 200)]
    model: String,
    #[serde(deserialize_with = "whole_number")]
    #[schema(value_type = u64, minimum = 0, maximum = 1_000_000_000)]
    input_tokens: u64,
    #[serde(deserialize_with = "whole_number")]
    #[schema(value_type = u64, minimum = 0, maximum = 1_000_000_000)]
    output_tokens: u64,
    /// When the call was made (default: now).
    at: Option<chrono::DateTime<Utc>>,
}

/// The body as the call it reports, its figures checked against their bounds.
impl TryFrom<RecordUsageRequest> for ReportedCall {
    type Error = ApiError;

    fn try_from(body: RecordUsageRequest) -> Result<Self, ApiError> {
        let provider = parse_provider(&body.provider)?;
        for (field, value) in [("request_id", &body.request_id), ("model", &body.model)] {
            if value.is_empty() || value.chars().count() > 200 {
                return Err(ApiError::invalid_request(format!("{field} is 1 to 200 characters")));
            }
        }
        for (field, tokens) in
            [("input_tokens", body.input_tokens), ("output_tokens", body.output_tokens)]
        {
            if tokens > MAX_TOKENS_PER_CALL {
                return Err(ApiError::invalid_request(format!(
                    "{field} is at most {MAX_TOKENS_PER_CALL} for one call"
                )));
            }
        }
        let now = Utc::now();
        let at = body.at.unwrap_or(now).trunc_subsecs(6);
        check_reported_at(at, now).map_err(|e| ApiError::invalid_request(e.to_string()))?;
        Ok(Self {
            provider,
            request_id: body.request_id,
            model: body.model,
            input_tokens: body.input_tokens,
            output_tokens: body.output_tokens,
            at,
        })
    }
}

/// A count as JSON may write it: `12`, or `12.0` (JSON Schema counts both as integers).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(d)?;
    if let Some(n) = number.as_u64() {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(f as u64),
        _ => Err(serde::de::Error::custom("a whole number of 0 or more")),
    }
}

/// What a recorded call cost and whose key paid.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct UsageRecorded {
    cost_usd: f64,
    #[schema(example = "platform")]
    key_source: String,
}

impl From<&ModelCallRecorded> for UsageRecorded {
    fn from(call: &ModelCallRecorded) -> Self {
        Self { cost_usd: call.cost_usd, key_source: call.key_source.as_str().to_owned() }
    }
}

/// Record a model call made elsewhere: priced from the price table, paid by the organization's
/// key if it has an active one for the provider, else by the platform's under the plan's
/// monthly quota and cost cap. Idempotent on `request_id`.
#[utoipa::path(post, path = "/v1/orgs/{org}/usage", tag = "usage",
    params(OrgPath),
    request_body = RecordUsageRequest,
    responses((status = 201, body = UsageRecorded), (status = 200, body = UsageRecorded, description = "the request id was recorded before"),
              (status = 429, body = Problem, content_type = "application/problem+json"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn record_usage(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    Json(body): Json<RecordUsageRequest>,
) -> Result<(StatusCode, axum::Json<UsageRecorded>), ApiError> {
    caller.authorize(&org, Access::RecordUsage)?;
    let reported = ReportedCall::try_from(body)?;
    match state.gateway.record_reported(&org, reported, &caller.actor()).await {
        // Committed: the caller's next read of its usage waits for the views to show it.
        Ok(Recorded::New { call, .. }) => Ok((StatusCode::CREATED, axum::Json((&call).into()))),
        Ok(Recorded::Duplicate(first)) => Ok((StatusCode::OK, axum::Json((&first).into()))),
        Err(error) => Err(error.into()),
    }
}

/// The most calls one `POST …/usage/batch` carries.
pub(crate) const MAX_BATCH_CALLS: usize = 1_000;

/// Body of `POST …/usage/batch`: model calls made elsewhere.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordUsageBatch {
    /// 1 to 1,000 calls, decided in this order.
    #[schema(min_items = 1, max_items = 1000)]
    calls: Vec<RecordUsageRequest>,
}

/// What became of one call of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchEntry {
    request_id: String,
    /// `recorded`; `duplicate` (its request id was recorded before: the first record's cost
    /// and key source are shown); or `refused` (over the plan's platform quota or cost cap).
    #[schema(example = "recorded")]
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "platform")]
    key_source: Option<String>,
    /// A refused call's problem code (`quota_exceeded`, `cost_cap_reached`).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The outcome of a batch: counts, and an entry per call in the batch's order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchRecorded {
    recorded: usize,
    duplicates: usize,
    refused: usize,
    calls: Vec<BatchEntry>,
}

/// Record up to 1,000 model calls made elsewhere in one request, each by the rules of
/// `POST …/usage`: idempotent on its `request_id`, priced, attributed, and decided against the
/// quota and cost cap one by one in the batch's order. A malformed call refuses the whole batch
/// (400, or 422 for an unknown provider, naming `calls[i]`) and records nothing; a refusal over the limits is that call's entry. On a storage
/// failure (503) some calls may be recorded: sending the batch again records only the rest.
#[utoipa::path(post, path = "/v1/orgs/{org}/usage/batch", tag = "usage",
    params(OrgPath),
    request_body = RecordUsageBatch,
    responses((status = 200, body = BatchRecorded),
              (status = "4XX", body = Problem, content_type = "application/problem+json"),
              (status = "5XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn record_usage_batch(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    Json(body): Json<RecordUsageBatch>,
) -> Result<axum::Json<BatchRecorded>, ApiError> {
    caller.authorize(&org, Access::RecordUsage)?;
    if body.calls.is_empty() || body.calls.len() > MAX_BATCH_CALLS {
        return Err(ApiError::invalid_request(format!("calls holds 1 to {MAX_BATCH_CALLS} calls")));
    }
    let batch = body
        .calls
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            ReportedCall::try_from(call)
                .map_err(|e| ApiError::new(e.code(), format!("calls[{i}]: {}", e.detail())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<String> = batch.iter().map(|call| call.request_id.clone()).collect();
    // Accepted: it runs to its end even if the caller goes away.
    let (gateway, actor, in_org) = (std::sync::Arc::clone(&state.gateway), caller.actor(), org);
    let outcomes =
        tokio::spawn(async move { gateway.record_reported_batch(&in_org, batch, &actor).await })
            .await
            .map_err(|e| ApiError::internal(&e))??;

    let mut answer = BatchRecorded { recorded: 0, duplicates: 0, refused: 0, calls: Vec::new() };
    for (outcome, request_id) in outcomes.into_iter().zip(ids) {
        let entry = match outcome {
            Ok(Recorded::New { call, .. }) => {
                answer.recorded += 1;
                entry(&call, "recorded")
            }
            Ok(Recorded::Duplicate(first)) => {
                answer.duplicates += 1;
                entry(&first, "duplicate")
            }
            Err(error) => {
                let error = ApiError::from(error);
                if error.code().status() != StatusCode::TOO_MANY_REQUESTS {
                    return Err(error);
                }
                answer.refused += 1;
                BatchEntry {
                    request_id,
                    outcome: "refused",
                    cost_usd: None,
                    key_source: None,
                    code: Some(error.code().as_str().into_owned()),
                    detail: Some(error.detail().to_owned()),
                }
            }
        };
        answer.calls.push(entry);
    }
    Ok(axum::Json(answer))
}

fn entry(call: &ModelCallRecorded, outcome: &'static str) -> BatchEntry {
    BatchEntry {
        request_id: call.request_id.clone(),
        outcome,
        cost_usd: Some(call.cost_usd),
        key_source: Some(call.key_source.as_str().to_owned()),
        code: None,
        detail: None,
    }
}
