//! Portico's own log: human-readable or JSON lines on stderr, filtered by `PORTICO_LOG`
//! (default `info`), with a filter the admin API can change while Portico runs
//! (`PUT /api/v1/logging`).

use std::sync::{Arc, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields.
    Json,
}

/// The filter of the installed log, once [`init`] has run.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the process's log. Only the binary calls it; Portico started as a library (in
/// tests) logs wherever its host says.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PORTICO_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// The installed log's filter, for the admin API; `None` when Portico did not install one.
pub fn filter() -> Option<Arc<dyn portico_admin::LogFilter>> {
    FILTER.get().map(|_| Arc::new(Installed) as Arc<dyn portico_admin::LogFilter>)
}

struct Installed;

impl portico_admin::LogFilter for Installed {
    fn current(&self) -> String {
        FILTER.get().and_then(|handle| handle.with_current(|filter| filter.to_string()).ok()).unwrap_or_default()
    }

    fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::builder().parse(directives).map_err(|e| format!("not a log filter: {e}"))?;
        let handle = FILTER.get().ok_or("Portico's log is not installed")?;
        handle.reload(filter).map_err(|e| e.to_string())?;
        tracing::info!(filter = directives, "log filter changed");
        Ok(())
    }
}
