//! Logs to stderr, filtered by `RUST_LOG`; and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, traces over OTLP/HTTP: a span per request and
//! per model call, configured by the standard `OTEL_*` variables.
//!
//! Spans carry what the logs carry: method, path, route, status, org, provider, model, key
//! source and token counts; never a header, a body or a key. Only keyledger's own spans are
//! exported, not those of the libraries under it.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// An answer from the collector larger than this is not read (they are a few bytes).
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

/// What was installed, to be shut down as the process ends.
#[derive(Debug)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

/// Traces were asked for but cannot be sent as configured.
#[derive(Debug, thiserror::Error)]
#[error("OTLP traces: {0}")]
pub struct TelemetryError(String);

impl Telemetry {
    /// Whether spans are exported.
    #[must_use]
    pub fn exports_traces(&self) -> bool {
        self.traces.is_some()
    }

    /// Sends the spans still queued, waiting at most the exporter's timeout.
    pub async fn shutdown(self) {
        if let Some(provider) = self.traces {
            // The provider's shutdown blocks until its export thread has flushed.
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = flushed {
                eprintln!("keyledger: OTLP traces not all sent: {error}");
            }
        }
    }
}

/// Installs the global subscriber: logs (JSON lines when `KEYLEDGER_LOG_FORMAT=json`) and,
/// where configured, the OTLP exporter. Call it inside the Tokio runtime.
///
/// # Errors
/// When traces are asked for with settings that cannot work (say the gRPC protocol, which this
/// build does not speak).
pub fn init() -> Result<Telemetry, TelemetryError> {
    let traces = if traces_wanted(|name| std::env::var(name).ok()) {
        Some(tracer_provider()?)
    } else {
        None
    };
    // PostgreSQL's notices ("relation … already exists, skipping" at every start, from the
    // migrations' `if not exists`) are not news: only its warnings are logged.
    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // Colour codes only where a person reads them: not into files, pipes or log collectors.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        if std::env::var("KEYLEDGER_LOG_FORMAT").is_ok_and(|f| f == "json") {
            vec![logs.json().with_filter(log_filter).boxed()]
        } else {
            vec![logs.with_filter(log_filter).boxed()]
        };
    if let Some(provider) = &traces {
        let ours = Targets::new()
            .with_target("keyledger_api", Level::INFO)
            .with_target("keyledger_infra", Level::INFO);
        let spans = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("keyledger"))
            .with_filter(ours);
        layers.push(spans.boxed());
    }
    // Already installed (tests): keep the first one.
    drop(tracing_subscriber::registry().with(layers).try_init());
    Ok(Telemetry { traces })
}

/// Names a span that was opened before its name was known (a request, once routed). A span is
/// exported under the name it has when it ends; without traces this does nothing.
pub(crate) fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    span.context().span().update_name(name);
}

/// An OTLP endpoint is set, and the SDK and the trace exporter are not turned off.
fn traces_wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    let endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    endpoint && !disabled && !no_exporter
}

/// The OTLP protocol asked for is the one this build speaks: http/protobuf. (The exporter
/// would fall back to it silently, sending to a gRPC port that never answers.)
fn check_protocol(var: impl Fn(&str) -> Option<String>) -> Result<(), TelemetryError> {
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        match var(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "http/protobuf") => {}
            Some(other) => {
                return Err(TelemetryError(format!(
                    "{name}={other}: keyledger sends http/protobuf (a collector's port 4318)"
                )))
            }
        }
    }
    Ok(())
}

fn tracer_provider() -> Result<SdkTracerProvider, TelemetryError> {
    check_protocol(|name| std::env::var(name).ok())?;
    let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .ok()
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let client = OnTheRuntime::new(timeout)?;
    // Endpoint, headers, protocol and timeout come from the OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("keyledger");
    }
    // The batch processor's queue is bounded (OTEL_BSP_MAX_QUEUE_SIZE, 2048 by default): when
    // the collector cannot keep up, spans are dropped, never requests slowed.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The exporter's HTTP client: the service's reqwest, on the service's Tokio runtime. The batch
/// processor exports from a thread of its own, where an async client has no runtime to run on.
#[derive(Debug)]
struct OnTheRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl OnTheRuntime {
    fn new(timeout: Duration) -> Result<Self, TelemetryError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| TelemetryError("started outside the Tokio runtime".to_owned()))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        Ok(Self { client, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for OnTheRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let client = self.client.clone();
        let (status, headers, body) = self
            .runtime
            .spawn(async move {
                let mut response = client.execute(request).await?;
                let (status, headers) = (response.status(), response.headers().clone());
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if body.len() + chunk.len() > MAX_COLLECTOR_ANSWER {
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await??;
        let mut response = Response::builder().status(status).body(Bytes::from(body))?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_sent_only_where_an_endpoint_is_set_and_nothing_turns_them_off() {
        let wanted = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> =
                vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            traces_wanted(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        assert!(!wanted(&[]));
        assert!(wanted(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]));
        assert!(wanted(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]));
        assert!(!wanted(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]));
        assert!(!wanted(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_SDK_DISABLED", "TRUE")
        ]));
        assert!(!wanted(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_TRACES_EXPORTER", "none")
        ]));
    }

    #[test]
    fn only_http_protobuf_is_accepted_as_the_protocol() {
        let check = |name: &'static str, value: &'static str| {
            check_protocol(|asked| (asked == name).then(|| value.to_owned()))
        };
        assert!(check("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").is_ok());
        assert!(check("OTEL_EXPORTER_OTLP_PROTOCOL", "").is_ok());
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ] {
            let error = check(name, value).expect_err(value).to_string();
            assert!(error.contains(name) && error.contains("http/protobuf"), "{error}");
        }
    }
}
