//! Telemetry setup, in one place: logs (text for terminals, JSON lines for collectors, always
//! on stderr so commands that print JSON keep stdout clean, filtered by `RUST_LOG`, default
//! `info`) and, when `ER_OTLP_ENDPOINT` is set, OpenTelemetry traces exported over OTLP/gRPC
//! with W3C `traceparent` propagation. Returns a guard that flushes traces on drop.

use crate::config::LogFormat;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes telemetry when dropped (at the very end of `main`).
#[must_use = "telemetry is flushed when the guard drops"]
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.0.take().map(|p| p.shutdown()) {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber (and trace exporter). Call once per process.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = otlp_endpoint.and_then(|endpoint| {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build();
        match exporter {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("eventrelay")
                            .build(),
                    )
                    .build(),
            ),
            Err(e) => {
                eprintln!("OTLP exporter for {endpoint} could not be built, tracing off: {e}");
                None
            }
        }
    });
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // RUST_LOG filters log lines only; traces keep info-level spans whatever the log level.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("eventrelay"))
            .with_filter(LevelFilter::INFO)
    });
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(otel)
        .with(logs)
        .try_init();
    if let Err(e) = result {
        eprintln!("telemetry already initialised: {e}");
    }
    TelemetryGuard(provider)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one incoming gRPC call, continuing the caller's trace when it sent a
/// `traceparent` header.
pub fn grpc_span(req: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("grpc", path = %req.uri().path());
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

struct HeaderInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// Trace headers (`traceparent`, `tracestate`) for the current span, to pass on to outgoing
/// requests such as webhook deliveries. Empty when tracing is off.
pub fn trace_headers() -> Vec<(String, String)> {
    let cx = tracing::Span::current().context();
    let mut headers = Vec::new();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(&mut headers))
    });
    headers
}
