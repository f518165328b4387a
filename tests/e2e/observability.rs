//! The dashboard and alerts shipped in `deploy/` read only what `GET /metrics` serves: every
//! metric they name, and every label they select or group by, is in a live scrape.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};

use crate::{gateway, keys};
use keyledger_tests::{Backend, TestApp};

const DASHBOARD: &str = include_str!("../../deploy/grafana/keyledger.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yml");

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// The PromQL expressions of the alerting rules: `expr:` values, on one line or as a `|` block.
fn alert_expressions(rules: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else { continue };
        if value.trim() != "|" {
            exprs.push(value.trim().to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while let Some(next) = lines.next_if(|l| l.len() - l.trim_start().len() > indent) {
            block.push_str(next.trim());
            block.push(' ');
        }
        exprs.push(block);
    }
    exprs
}

fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().expect("targets").iter())
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect()
}

/// Every identifier of an expression, with the text that follows it.
fn identifiers(expr: &str) -> Vec<(String, &str)> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_')
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if !starts {
            i += 1;
            continue;
        }
        let end = expr[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| i + n);
        found.push((expr[i..end].to_owned(), &expr[end..]));
        i = end;
    }
    found
}

/// The metrics an expression reads, and the labels it selects, groups or joins on.
fn metrics_and_labels(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    // Strip quoted strings first, so `"5.."` or a legend is not read as a name.
    let unquoted: String =
        expr.split('"').enumerate().filter(|(n, _)| n % 2 == 0).map(|(_, s)| s).collect();
    for (word, rest) in identifiers(&unquoted) {
        if word.starts_with("keyledger_") {
            metrics.insert(word.clone());
            if let Some(selector) = rest.strip_prefix('{') {
                let inside = &selector[..selector.find('}').expect("a closed selector")];
                for matcher in inside.split(',').filter(|m| !m.trim().is_empty()) {
                    let name = matcher.split(['=', '!', '~']).next().expect("a label");
                    labels.insert(name.trim().to_owned());
                }
            }
        } else if ["by", "on", "without", "ignoring", "group_left", "group_right"]
            .contains(&word.as_str())
        {
            if let Some(list) = rest.trim_start().strip_prefix('(') {
                let list = &list[..list.find(')').expect("a closed label list")];
                labels
                    .extend(list.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
            }
        }
    }
    (metrics, labels)
}

/// The label names each metric carries in a scrape.
fn scraped(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).expect("a sample");
        let labels = series.entry(line[..name_end].to_owned()).or_default();
        // name="value" pairs; a value may hold braces and escaped quotes (`/v1/orgs/{org}`).
        let mut rest = line[name_end..].strip_prefix('{').unwrap_or_default();
        while let Some((name, after)) = rest.split_once("=\"") {
            labels.insert(name.trim_start_matches(',').trim().to_owned());
            let mut escaped = false;
            let close = after
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map(|(n, _)| n)
                .expect("a closed value");
            rest = &after[close + 1..];
            if rest.starts_with('}') {
                break;
            }
        }
    }
    series
}

#[test]
fn the_expression_reader_finds_metrics_and_labels() {
    let (metrics, labels) = metrics_and_labels(
        r#"sum by (provider, key_source) (rate(keyledger_model_calls_total{status!~"2.."}[5m])) and on (instance) keyledger_info{backend="postgres"}"#,
    );
    assert_eq!(
        metrics,
        BTreeSet::from(["keyledger_info".into(), "keyledger_model_calls_total".into()])
    );
    let expected = ["backend", "instance", "key_source", "provider", "status"];
    assert_eq!(labels, expected.iter().map(|s| (*s).to_owned()).collect());
    let rules = "      - alert: A\n        expr: |\n          sum(x)\n            / y\n        for: 5m\n      - alert: B\n        expr: z > 1\n";
    assert_eq!(alert_expressions(rules), ["sum(x) / y ", "z > 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboard_and_alerts_use_is_served() {
    let app = TestApp::start(Backend::Postgres).await;
    // Traffic that gives every labelled series a sample: a stored key, a model call, a refusal.
    keys::store_accepted(&app, &["anthropic"]).await;
    let call = gateway::call(&app, "anthropic", "v1/messages", gateway::claude()).await;
    assert_eq!(call.status, StatusCode::OK, "{}", call.everything());
    let refused = app.get("/v1/orgs/acme/keys", "not-a-token").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let scrape = app.send(Method::GET, "/metrics", None, None).await;
    let series = scraped(&String::from_utf8_lossy(&scrape.body));
    assert!(series.contains_key("keyledger_errors_total"), "{series:?}");

    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let exprs: Vec<(String, String)> = dashboard_expressions(&dashboard)
        .into_iter()
        .map(|e| ("deploy/grafana/keyledger.json".to_owned(), e))
        .chain(
            alert_expressions(ALERTS)
                .into_iter()
                .map(|e| ("deploy/prometheus/alerts.yml".to_owned(), e)),
        )
        .collect();
    assert!(exprs.len() >= 15, "both files were read: {exprs:?}");
    let mut used = BTreeSet::new();
    for (file, expr) in &exprs {
        let (metrics, labels) = metrics_and_labels(expr);
        assert!(!metrics.is_empty(), "{file}: {expr} reads no keyledger metric");
        for metric in &metrics {
            assert!(series.contains_key(metric), "{file}: {metric} is not in /metrics");
        }
        for label in labels.iter().filter(|l| !TARGET_LABELS.contains(&l.as_str())) {
            let carried = metrics.iter().any(|m| series[m].contains(label));
            assert!(carried, "{file}: no metric of `{expr}` carries the label {label}");
        }
        used.extend(metrics);
    }
    // And the dashboard shows every metric keyledger serves.
    for metric in series.keys() {
        assert!(used.contains(metric), "{metric} is served but neither charted nor alerted on");
    }
    app.finish().await;
}
