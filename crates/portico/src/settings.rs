//! Process settings: listeners, store, limits.
//!
//! Each setting comes from, in order of precedence: a command-line flag, a `PORTICO_*`
//! environment variable, the settings file (`--settings FILE` or `PORTICO_SETTINGS`), and
//! finally the built-in default. Flags and environment variables are read by clap
//! ([`crate::cli::SettingsArgs`]); this module merges them with the file.

use anyhow::Context;
use portico_gateway::{AccessLogSettings, AccessLogSink, AnalyticsSettings, ProxySettings, TelemetrySettings};
use portico_model::{Interval, MasterKey};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The settings file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub tls_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub workers: Option<usize>,
    pub drain_timeout_secs: Option<u64>,
    pub header_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_header_bytes: Option<usize>,
    /// One sink, or a list of them.
    pub access_log: Option<OneOrMany>,
    pub access_log_max_mb: Option<u64>,
    pub access_log_keep: Option<u32>,
    pub access_log_retention_days: Option<u64>,
    pub trace_sample_ratio: Option<f64>,
    pub otlp_endpoint: Option<String>,
    pub server_timing: Option<bool>,
    pub log_format: Option<crate::logging::LogFormat>,
    pub analytics: Option<bool>,
    pub analytics_flush_ms: Option<u64>,
    pub analytics_minute_retention_days: Option<u64>,
    pub analytics_hour_retention_days: Option<u64>,
    pub analytics_day_retention_days: Option<u64>,
}

/// A settings file value written as one item or as a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Settings after merging every source.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// `sqlite://...` or `postgres://...`.
    pub store: String,
    /// Redis for cluster-wide rate limits, if any.
    pub redis_url: Option<String>,
    /// Seals stored secrets; without it, Portico refuses to store any.
    pub master_key: Option<Arc<MasterKey>>,
    /// The TLS listener's address, if any.
    pub tls_listen: Option<SocketAddr>,
    pub workers: usize,
    pub proxy: ProxySettings,
    /// Access log, trace sampling, `Server-Timing`.
    pub telemetry: TelemetrySettings,
    pub log_format: crate::logging::LogFormat,
    /// How long the `store` access log sink keeps rows.
    pub access_log_retention: Duration,
    /// How long analytics rollups of each interval are kept.
    pub analytics_retention: [(Interval, Duration); 3],
}

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9080";
pub const DEFAULT_DATA_DIR: &str = "portico-data";

impl Settings {
    /// Merges `flags` (flags and environment variables) over the settings file, if any.
    pub fn resolve(flags: &crate::cli::SettingsArgs) -> anyhow::Result<Settings> {
        let file = match &flags.settings {
            Some(path) => read_file(path)?,
            None => SettingsFile::default(),
        };
        let telemetry = telemetry(flags, &file)?;
        let data_dir = flags.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let store = flags
            .store
            .clone()
            .or(file.store)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("portico.db").display()));
        let defaults = ProxySettings::default();
        let days = |flag: Option<u64>, file: Option<u64>, default: u64| {
            Duration::from_secs(flag.or(file).unwrap_or(default).max(1) * 86_400)
        };
        let analytics_retention = [
            (Interval::Minute, days(flags.analytics_minute_retention_days, file.analytics_minute_retention_days, 2)),
            (Interval::Hour, days(flags.analytics_hour_retention_days, file.analytics_hour_retention_days, 35)),
            (Interval::Day, days(flags.analytics_day_retention_days, file.analytics_day_retention_days, 730)),
        ];
        let secs = |flag: Option<u64>, file: Option<u64>, default: Duration| {
            flag.or(file).map(Duration::from_secs).unwrap_or(default)
        };
        Ok(Settings {
            listen: flags.listen.or(file.listen).unwrap_or_else(|| parse_default(DEFAULT_LISTEN)),
            admin_listen: flags
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| parse_default(DEFAULT_ADMIN_LISTEN)),
            store,
            redis_url: flags.redis_url.clone().or(file.redis_url),
            master_key: master_key(flags.master_key_file.clone().or(file.master_key_file))?,
            tls_listen: flags.tls_listen.or(file.tls_listen),
            workers: flags
                .workers
                .or(file.workers)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1),
            proxy: ProxySettings {
                max_header_bytes: flags.max_header_bytes.or(file.max_header_bytes).unwrap_or(defaults.max_header_bytes),
                header_timeout: secs(flags.header_timeout_secs, file.header_timeout_secs, defaults.header_timeout),
                idle_timeout: secs(flags.idle_timeout_secs, file.idle_timeout_secs, defaults.idle_timeout),
                drain_timeout: secs(flags.drain_timeout_secs, file.drain_timeout_secs, defaults.drain_timeout),
                https_port: flags.tls_listen.or(file.tls_listen).map(|a| a.port()),
            },
            telemetry,
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            access_log_retention: days(flags.access_log_retention_days, file.access_log_retention_days, 7),
            analytics_retention,
        })
    }
}

/// Where the access log goes, how traces are sampled, and whether `Server-Timing` is sent.
fn telemetry(flags: &crate::cli::SettingsArgs, file: &SettingsFile) -> anyhow::Result<TelemetrySettings> {
    let defaults = TelemetrySettings::default();
    let ratio = flags.trace_sample_ratio.or(file.trace_sample_ratio).unwrap_or(defaults.trace_sample_ratio);
    if !(0.0..=1.0).contains(&ratio) {
        anyhow::bail!("the trace sample ratio must be between 0 and 1 (got {ratio})");
    }
    let max_bytes = flags.access_log_max_mb.or(file.access_log_max_mb).unwrap_or(100).max(1) * 1024 * 1024;
    let keep = flags.access_log_keep.or(file.access_log_keep).unwrap_or(5);
    let named = match (&flags.access_log, &file.access_log) {
        (flags, _) if !flags.is_empty() => flags.clone(),
        (_, Some(OneOrMany::One(name))) => vec![name.clone()],
        (_, Some(OneOrMany::Many(names))) => names.clone(),
        (_, None) => Vec::new(),
    };
    let mut sinks = Vec::new();
    for name in named.iter().map(|n| n.trim()).filter(|n| !n.is_empty() && *n != "off") {
        sinks.push(match name {
            "stdout" => AccessLogSink::Stdout,
            "store" => AccessLogSink::Store,
            url if url.starts_with("http://") || url.starts_with("https://") => AccessLogSink::Http {
                url: url.parse().with_context(|| format!("the access log URL `{url}` is not valid"))?,
            },
            path => AccessLogSink::File { path: PathBuf::from(path), max_bytes, keep },
        });
    }
    let otlp_endpoint = match flags.otlp_endpoint.clone().or(file.otlp_endpoint.clone()).filter(|e| !e.is_empty()) {
        Some(url) => {
            let parsed: axum::http::Uri =
                url.parse().with_context(|| format!("the OTLP endpoint `{url}` is not a URL"))?;
            if !matches!(parsed.scheme_str(), Some("http" | "https")) {
                anyhow::bail!("the OTLP endpoint `{url}` must be an http(s) URL");
            }
            Some(parsed)
        }
        None => None,
    };
    let analytics = flags.analytics.or(file.analytics).unwrap_or(true).then(|| AnalyticsSettings {
        flush_interval: Duration::from_millis(
            flags.analytics_flush_ms.or(file.analytics_flush_ms).unwrap_or(10_000).max(10),
        ),
    });
    Ok(TelemetrySettings {
        analytics,
        otlp_endpoint,
        server_timing: flags.server_timing.or(file.server_timing).unwrap_or(defaults.server_timing),
        trace_sample_ratio: ratio,
        access_log: (!sinks.is_empty()).then_some(AccessLogSettings { sinks, queue: portico_gateway::DEFAULT_QUEUE }),
    })
}

/// The master key: `PORTICO_MASTER_KEY` holds the key itself; otherwise a key file.
fn master_key(file: Option<PathBuf>) -> anyhow::Result<Option<Arc<MasterKey>>> {
    let text = match (std::env::var("PORTICO_MASTER_KEY").ok().filter(|k| !k.is_empty()), file) {
        (Some(key), _) => key,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the master key file {}", path.display()))?,
        (None, None) => return Ok(None),
    };
    MasterKey::parse(&text)
        .map(|key| Some(Arc::new(key)))
        .map_err(|e| anyhow::anyhow!("the master key is not valid: {e}"))
}

fn parse_default(addr: &str) -> SocketAddr {
    addr.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn read_file(path: &Path) -> anyhow::Result<SettingsFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read settings file {}", path.display()))?;
    yaml_serde::from_str(&text).with_context(|| format!("invalid settings file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(args: &[&str]) -> anyhow::Result<Settings> {
        let cli = crate::cli::Cli::try_parse_from(args.iter().copied().chain(["migrate"]))?;
        Settings::resolve(&cli.settings)
    }

    #[test]
    fn access_log_sinks_come_from_flags_or_the_settings_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("settings.yaml");
        std::fs::write(&file, "access_log: [stdout, 'https://logs.example.com/in?key=x', access.log]\n")
            .expect("write");
        let settings = resolve(&["portico", "--settings", file.to_str().unwrap_or_default()]).expect("settings");
        let sinks = settings.telemetry.access_log.expect("an access log").sinks;
        let names: Vec<String> = sinks.iter().map(AccessLogSink::name).collect();
        assert_eq!(names, ["stdout", "https://logs.example.com/in", "access.log"]);

        std::fs::write(&file, "access_log: stdout\n").expect("write");
        let settings = resolve(&["portico", "--settings", file.to_str().unwrap_or_default()]).expect("settings");
        assert_eq!(settings.telemetry.access_log.map(|l| l.sinks), Some(vec![AccessLogSink::Stdout]));
        // Flags win over the file, and may name several sinks.
        let settings =
            resolve(&["portico", "--settings", file.to_str().unwrap_or_default(), "--access-log", "a.log,b.log"])
                .expect("settings");
        assert_eq!(settings.telemetry.access_log.map(|l| l.sinks.len()), Some(2));
        assert!(resolve(&["portico", "--trace-sample-ratio", "1.5"]).is_err());
        assert!(resolve(&["portico"]).expect("defaults").telemetry.access_log.is_none());
    }

    #[test]
    fn analytics_is_on_by_default_and_its_retention_is_set_per_interval() {
        let defaults = resolve(&["portico"]).expect("defaults");
        let analytics = defaults.telemetry.analytics.expect("analytics on by default");
        assert_eq!(analytics.flush_interval, Duration::from_secs(10));
        let days: Vec<u64> = defaults.analytics_retention.iter().map(|(_, d)| d.as_secs() / 86_400).collect();
        assert_eq!(days, [2, 35, 730]);

        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("settings.yaml");
        std::fs::write(&file, "analytics_flush_ms: 500\nanalytics_hour_retention_days: 90\n").expect("write");
        let settings = resolve(&["portico", "--settings", file.to_str().unwrap_or_default()]).expect("settings");
        assert_eq!(settings.telemetry.analytics.map(|a| a.flush_interval), Some(Duration::from_millis(500)));
        assert_eq!(settings.analytics_retention[1], (Interval::Hour, Duration::from_secs(90 * 86_400)));
        let off = resolve(&["portico", "--analytics", "false"]).expect("settings");
        assert!(off.telemetry.analytics.is_none());
    }
}
