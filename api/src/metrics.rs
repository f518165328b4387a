//! Prometheus metrics, rendered as text at `GET /metrics`. Labels are route templates,
//! providers, key sources and status codes: never an organization, a token or a key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ErrorCode;
use keyledger_domain::usage::KeySource;
use keyledger_domain::ProviderId;

/// What this process has counted since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered, by (method, route template, status).
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Problems answered, by their contract code (a fixed, small set).
    errors: Mutex<BTreeMap<String, u64>>,
}

/// Model calls providers answered, by (provider, key source, status).
pub(crate) type CallCounts = [((ProviderId, KeySource, u16), u64)];

impl Metrics {
    fn request_answered(&self, method: &str, route: &str, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((method.to_owned(), route.to_owned(), status)).or_default() += 1;
        }
    }

    fn problem_answered(&self, code: ErrorCode) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(code.as_str().into_owned()).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of everything counted, with the model `calls` answered
    /// and `recorded` so far, and `gauges` and the key versions sealed under each master key
    /// (`material`: id, count, whether it is the active one) read just now.
    #[must_use]
    pub fn render(
        &self,
        calls: &CallCounts,
        recorded: u64,
        gauges: &[(&str, &str, f64)],
        material: &[(String, i64, bool)],
    ) -> String {
        let mut out = String::new();
        header(&mut out, "keyledger_http_requests_total", "HTTP requests answered.", "counter");
        if let Ok(requests) = self.requests.lock() {
            for ((method, route, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "keyledger_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        header(&mut out, "keyledger_errors_total", "Problems answered, by code.", "counter");
        if let Ok(errors) = self.errors.lock() {
            for (code, n) in errors.iter() {
                let _ = writeln!(out, "keyledger_errors_total{{code=\"{}\"}} {n}", escape(code));
            }
        }
        header(
            &mut out,
            "keyledger_model_calls_total",
            "Model calls providers answered.",
            "counter",
        );
        for ((provider, source, status), n) in calls {
            let _ = writeln!(
                out,
                "keyledger_model_calls_total{{provider=\"{provider}\",key_source=\"{}\",status=\"{status}\"}} {n}",
                source.as_str()
            );
        }
        header(&mut out, "keyledger_usage_recorded_total", "Model calls recorded.", "counter");
        let _ = writeln!(out, "keyledger_usage_recorded_total {recorded}");
        for (name, help, value) in gauges {
            header(&mut out, name, help, "gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            &mut out,
            "keyledger_key_material_versions",
            "Key versions sealed under each master key id; a retired id may be dropped from the ring at 0.",
            "gauge",
        );
        for (id, count, active) in material {
            let _ = writeln!(
                out,
                "keyledger_key_material_versions{{master_key_id=\"{}\",active=\"{active}\"}} {count}",
                escape(id)
            );
        }
        out
    }
}

/// A counter of its own, `name`, at `value`.
pub(crate) fn render_counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

/// `keyledger_info`: which version runs on which backend, for dashboards and for alerts that
/// apply to PostgreSQL replicas only.
pub(crate) fn render_info(out: &mut String, backend: &str) {
    header(out, "keyledger_info", "The running version and its database backend.", "gauge");
    let version = env!("CARGO_PKG_VERSION");
    let _ = writeln!(out, "keyledger_info{{version=\"{version}\",backend=\"{backend}\"}} 1");
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Counts every answered request under its route template (unmatched ones as `unmatched`).
pub(crate) async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::Span::current();
    span.record("http.route", route.as_str());
    crate::telemetry::rename(&span, format!("{method} {route}"));
    if route.starts_with("/v1/orgs/{org}") {
        let org = request.uri().path().split('/').nth(3);
        if let Some(org) = org.filter(|org| keyledger_domain::OrgId::parse(org).is_ok()) {
            span.record("org", org);
        }
    }
    let response = next.run(request).await;
    metrics.request_answered(&method, &route, response.status().as_u16());
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        metrics.problem_answered(*code);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.request_answered("GET", "/v1/orgs/{org}", 200);
        metrics.request_answered("GET", "/v1/orgs/{org}", 200);
        let calls = [((ProviderId::Openai, KeySource::Byok, 200), 1)];
        let material = [("k1".to_owned(), 2, false), ("k2".to_owned(), 5, true)];
        let text = metrics.render(
            &calls,
            1,
            &[("keyledger_projection_lag_events", "Lag.", 3.0)],
            &material,
        );
        assert!(text
            .contains(r#"keyledger_key_material_versions{master_key_id="k1",active="false"} 2"#));
        assert!(text.contains(
            "keyledger_http_requests_total{method=\"GET\",route=\"/v1/orgs/{org}\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "keyledger_model_calls_total{provider=\"openai\",key_source=\"byok\",status=\"200\"} 1"
        ));
        assert!(text.contains("keyledger_usage_recorded_total 1"));
        assert!(text.contains(
            "# TYPE keyledger_projection_lag_events gauge\nkeyledger_projection_lag_events 3"
        ));
    }
}
