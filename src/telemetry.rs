//! Logging setup, in one place: text for terminals, JSON lines for collectors, filtered by
//! `RUST_LOG` (default `info`), always on stderr so commands that print JSON keep stdout clean.
//! Returns a guard that flushes on drop.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes telemetry when dropped (at the very end of `main`).
#[must_use = "telemetry is flushed when the guard drops"]
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        // Logs are written synchronously; exporters added later flush here.
    }
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("telemetry already initialised: {e}");
    }
    Guard(())
}
