//! Usage for analytics: every call in a range, as CSV or NDJSON, streamed a page at a time so
//! an export of millions of calls holds one page in memory.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::usage::{call_view, usd, CallView};
use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::OrgParam;
use crate::openapi::OrgPath;
use crate::state::AppState;
use keyledger_projections::queries::{self, ExportRow};
use keyledger_store::Database;

/// Calls read from the views at a time.
const PAGE: i64 = 1_000;

const CSV_HEADER: &str =
    "at,org,request_id,provider,model,key_source,key_version,input_tokens,output_tokens,cost_usd\n";

/// Query of the usage exports.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    /// First day, `YYYY-MM-DD` (UTC; default: the first of this month).
    #[param(value_type = Option<chrono::NaiveDate>)]
    from: Option<String>,
    /// Last day, inclusive (default: today).
    #[param(value_type = Option<chrono::NaiveDate>)]
    to: Option<String>,
    /// `csv` (default) or `ndjson`.
    #[param(pattern = "^(csv|ndjson)$")]
    format: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Csv,
    Ndjson,
}

/// What one export asks for, checked.
struct Export {
    range: (DateTime<Utc>, DateTime<Utc>),
    format: Format,
}

impl Export {
    fn of(
        params: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
    ) -> Result<Self, ApiError> {
        let Query(params) = params
            .map_err(|_| ApiError::invalid_request("unknown or malformed query parameter"))?;
        let day = |text: Option<&str>, default: NaiveDate, name: &str| match text {
            None => Ok(default),
            Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                ApiError::invalid_request(format!("{name} must be a day, YYYY-MM-DD"))
            }),
        };
        let today = Utc::now().date_naive();
        let first = today.with_day(1).unwrap_or(today);
        let from = day(params.from.as_deref(), first, "from")?;
        let to = day(params.to.as_deref(), today, "to")?;
        // `to` before `from` is an empty range, as for the cockpit's reports.
        let until = to.checked_add_days(Days::new(1)).unwrap_or(to);
        let format = match params.format.as_deref() {
            None | Some("csv") => Format::Csv,
            Some("ndjson") => Format::Ndjson,
            Some(_) => return Err(ApiError::invalid_request("format is csv or ndjson")),
        };
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        Ok(Self { range: (midnight(from), midnight(until)), format })
    }

    /// The answer: the calls of `org` (or every organization's), streamed page by page.
    fn stream(self, views: Database, org: Option<String>) -> Response {
        let (format, range) = (self.format, self.range);
        let head = match format {
            Format::Csv => Some(Bytes::from_static(CSV_HEADER.as_bytes())),
            Format::Ndjson => None,
        };
        let pages = futures::stream::unfold(Some((-1_i64, 0_i64)), move |after| {
            let (views, org) = (views.clone(), org.clone());
            async move {
                let after = after?;
                match queries::calls_page(&views, org.as_deref(), range, after, PAGE).await {
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        // A short page is the last one.
                        let full = rows.len() as i64 == PAGE;
                        let next = rows.last().map(|r| (r.position, r.slot)).filter(|_| full);
                        Some((Ok(Bytes::from(render(format, rows))), next))
                    }
                    Err(error) => {
                        // The status is sent: breaking the body off is how the client learns.
                        tracing::warn!(%error, "a usage export stopped: the views could not be read");
                        Some((Err(std::io::Error::other("the views could not be read")), None))
                    }
                }
            }
        });
        let body = futures::StreamExt::chain(
            futures::stream::iter(head.map(Ok::<_, std::io::Error>)),
            pages,
        );
        let (content_type, extension) = match format {
            Format::Csv => ("text/csv; charset=utf-8", "csv"),
            Format::Ndjson => ("application/x-ndjson", "ndjson"),
        };
        (
            [
                (header::CONTENT_TYPE, content_type.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"usage.{extension}\""),
                ),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }
}

/// An NDJSON line: whose call it is, then the call as `…/usage/calls` shows it.
#[derive(Serialize)]
struct ExportLine {
    org: String,
    #[serde(flatten)]
    call: CallView,
}

fn render(format: Format, rows: Vec<ExportRow>) -> String {
    let mut out = String::with_capacity(rows.len() * 160);
    for ExportRow { org_id, call, .. } in rows {
        match format {
            Format::Csv => {
                let at = call.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let version = call.key_version.map(|v| v.to_string()).unwrap_or_default();
                let cells = [
                    at.as_str(),
                    &org_id,
                    &call.request_id,
                    &call.provider,
                    &call.model,
                    &call.key_source,
                    &version,
                    &call.input_tokens.to_string(),
                    &call.output_tokens.to_string(),
                    &usd(call.cost_micros).to_string(),
                ];
                let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                out.push_str(&line.join(","));
                out.push('\n');
            }
            Format::Ndjson => {
                let line = ExportLine { org: org_id, call: call_view(call) };
                out.push_str(&serde_json::to_string(&line).unwrap_or_default());
                out.push('\n');
            }
        }
    }
    out
}

/// A CSV cell (RFC 4180): quoted when it holds a comma, quote or line break. A cell a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first; request ids and model names
/// come from callers) is made text with a leading `'`.
fn csv_cell(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '@'])
        || (value.starts_with('-') && value.parse::<f64>().is_err())
    {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Every model call of the organization from `from` to `to` (inclusive, UTC days), in log
/// order, as CSV or NDJSON; streamed.
#[utoipa::path(get, path = "/v1/orgs/{org}/usage/export", tag = "usage",
    params(OrgPath, ExportQuery),
    responses((status = 200, description = "One call a line",
                content((String = "text/csv"), (String = "application/x-ndjson"))),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn org_export(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    params: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    let export = Export::of(params)?;
    state.settle_usage_reads(Some(&org)).await;
    Ok(export.stream(state.views.clone(), Some(org.to_string())))
}

/// Every organization's model calls from `from` to `to`, in log order (platform admin with
/// `org: "*"`).
#[utoipa::path(get, path = "/v1/usage/export", tag = "usage",
    params(ExportQuery),
    responses((status = 200, description = "One call a line",
                content((String = "text/csv"), (String = "application/x-ndjson"))),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn export_all(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.authorize_platform(Access::ManagePlan)?;
    let export = Export::of(params)?;
    state.settle_usage_reads(None).await;
    Ok(export.stream(state.views.clone(), None))
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn cells_are_quoted_and_formulas_made_text() {
        assert_eq!(csv_cell("gpt-4o"), "gpt-4o");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("@sum"), "'@sum");
        assert_eq!(csv_cell("-1.5"), "-1.5", "a negative number stays a number");
        assert_eq!(csv_cell("-cmd"), "'-cmd");
    }
}
