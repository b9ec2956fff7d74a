//! The command line.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Portico: the front door for microservices.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the admin API.
    Serve {
        /// Serve this YAML file instead of the store's configuration ("file mode"): it is
        /// reloaded when it changes and on SIGHUP, and the admin API is read-only.
        #[arg(long, short = 'c', env = "PORTICO_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a YAML file, show how it differs from the store, and make the store match it
    /// in one transaction.
    Apply {
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Only show the differences.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the store's configuration as YAML that `apply` accepts.
    Export {
        /// Write to this file instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Validate a YAML file and list every problem; exits 1 if there is any.
    Check {
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
    /// Bring the store's schema up to date (also done at every start).
    Migrate,
    /// Manage the admin API.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The master key that seals stored secrets.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print a new random master key (base64), for PORTICO_MASTER_KEY or a key file.
    GenerateKey,
    /// Re-seal every stored secret with a new master key, in one transaction. The current
    /// key comes from the usual settings; afterwards, start Portico with the new one.
    RotateKey {
        /// A file holding the new key.
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Admin API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once.
    Create {
        #[arg(long)]
        name: String,
        /// `admin` (everything), `editor` (read and change the configuration), `viewer`
        /// (read only) or `registry` (only register, heartbeat and deregister service
        /// instances: the token to give services).
        #[arg(long, alias = "scope", default_value = "admin", value_parser = ["admin", "editor", "viewer", "registry"])]
        role: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id, or every token with this name.
    Revoke { id_or_name: String },
}

/// Settings given on the command line or in the environment; see [`crate::settings`].
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// A YAML settings file.
    #[arg(long, global = true, env = "PORTICO_SETTINGS")]
    pub settings: Option<PathBuf>,
    /// Store URL: sqlite://PATH or postgres://USER@HOST:PORT/DB [default: sqlite://DATA_DIR/portico.db].
    #[arg(long, global = true, env = "PORTICO_STORE")]
    pub store: Option<String>,
    /// Folder for the embedded store [default: ./portico-data].
    #[arg(long, global = true, env = "PORTICO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Redis for cluster-wide rate limits (`rate_limit.cluster: true`): redis://HOST:PORT/DB.
    #[arg(long, global = true, env = "PORTICO_REDIS_URL")]
    pub redis_url: Option<String>,
    /// A file holding the master key that seals stored secrets (or set PORTICO_MASTER_KEY
    /// to the key itself).
    #[arg(long, global = true, env = "PORTICO_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// TLS listener address, serving the stored certificates by SNI [default: none].
    #[arg(long, global = true, env = "PORTICO_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// Proxy listener address [default: 0.0.0.0:8080].
    #[arg(long, global = true, env = "PORTICO_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin API listener address [default: 127.0.0.1:9080].
    #[arg(long, global = true, env = "PORTICO_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Proxy worker threads [default: one per core].
    #[arg(long, global = true, env = "PORTICO_WORKERS")]
    pub workers: Option<usize>,
    /// Seconds requests in flight get to finish on shutdown [default: 30].
    #[arg(long, global = true, env = "PORTICO_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request head [default: 15].
    #[arg(long, global = true, env = "PORTICO_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds an idle keep-alive connection stays open [default: 75].
    #[arg(long, global = true, env = "PORTICO_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Largest request head in bytes [default: 32768].
    #[arg(long, global = true, env = "PORTICO_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Access log sinks: `stdout`, `store` (a table in Portico's store), a file, or an
    /// `http(s)://` collector; repeat the flag (or separate with commas) for several
    /// [default: none].
    #[arg(long, global = true, env = "PORTICO_ACCESS_LOG", value_delimiter = ',')]
    pub access_log: Vec<String>,
    /// Rotate the access log file when it reaches this many MiB [default: 100].
    #[arg(long, global = true, env = "PORTICO_ACCESS_LOG_MAX_MB")]
    pub access_log_max_mb: Option<u64>,
    /// Days the `store` access log sink keeps rows [default: 7].
    #[arg(long, global = true, env = "PORTICO_ACCESS_LOG_RETENTION_DAYS")]
    pub access_log_retention_days: Option<u64>,
    /// Rotated access log files to keep [default: 5].
    #[arg(long, global = true, env = "PORTICO_ACCESS_LOG_KEEP")]
    pub access_log_keep: Option<u32>,
    /// Export the spans of sampled requests to this OTLP/HTTP collector, e.g.
    /// `http://127.0.0.1:4318` [default: none].
    #[arg(long, global = true, env = "PORTICO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces marked sampled in `traceparent`, 0 to 1 [default: 0.01].
    #[arg(long, global = true, env = "PORTICO_TRACE_SAMPLE_RATIO")]
    pub trace_sample_ratio: Option<f64>,
    /// Portico's own log on stderr: `text` or `json` lines [default: text].
    #[arg(long, global = true, env = "PORTICO_LOG_FORMAT")]
    pub log_format: Option<crate::logging::LogFormat>,
    /// Send `Server-Timing` (gateway and upstream durations) to clients [default: true].
    #[arg(long, global = true, env = "PORTICO_SERVER_TIMING")]
    pub server_timing: Option<bool>,
    /// Count traffic per minute, hour and day for `/api/v1/analytics` [default: true].
    #[arg(long, global = true, env = "PORTICO_ANALYTICS")]
    pub analytics: Option<bool>,
    /// Milliseconds between writes of the analytics rollups to the store [default: 10000].
    #[arg(long, global = true, env = "PORTICO_ANALYTICS_FLUSH_MS")]
    pub analytics_flush_ms: Option<u64>,
    /// Days per-minute analytics rollups are kept [default: 2].
    #[arg(long, global = true, env = "PORTICO_ANALYTICS_MINUTE_RETENTION_DAYS")]
    pub analytics_minute_retention_days: Option<u64>,
    /// Days per-hour analytics rollups are kept [default: 35].
    #[arg(long, global = true, env = "PORTICO_ANALYTICS_HOUR_RETENTION_DAYS")]
    pub analytics_hour_retention_days: Option<u64>,
    /// Days per-day analytics rollups are kept [default: 730].
    #[arg(long, global = true, env = "PORTICO_ANALYTICS_DAY_RETENTION_DAYS")]
    pub analytics_day_retention_days: Option<u64>,
}
