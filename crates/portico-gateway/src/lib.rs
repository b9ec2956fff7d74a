//! Portico's data plane.
//!
//! A [`Snapshot`] is the compiled, immutable form of a configuration: the router and the
//! upstream services. The control plane compiles a new one whenever the configuration
//! changes and swaps it into a [`SnapshotCell`]; every request loads the current snapshot
//! once and keeps it to the end, so a swap never disturbs requests in flight and the request
//! path never waits on the store.
//!
//! - [`router`]: host, path, method and header matching with a deterministic precedence.
//! - [`access`]: client IP rules, CORS, authentication, authorization and rate limits.
//! - [`proxy`]: the request pipeline, phase by phase.
//! - [`server`]: listeners, one single-threaded runtime per worker, connection limits, drain.
//! - [`observe`]: metrics, the access log, trace context and `Server-Timing`.
//! - [`ai`]: AI services: the OpenAI and Anthropic APIs over configured model providers.

mod access;
mod ai;
mod observe;
mod router;
mod snapshot;
mod upstream;

mod proxy;
mod server;

pub use access::{AccessStates, RedisLimits, RedisReport};
pub use ai::{AiUsage, BudgetReport, KeyReport};
pub use observe::{
    AccessEvent, AccessLogReport, AccessLogSettings, AccessLogSink, AnalyticsReport, AnalyticsSettings, EventSink,
    ExporterReport, HeadText, RollupSink, StoreSinks, Telemetry, TelemetrySettings, DEFAULT_QUEUE,
};
pub use server::{bind_listeners, Gateway, GatewayHandle, ProxySettings};
pub use snapshot::{compile, ServiceReport, Snapshot, SnapshotCell};
pub use upstream::dns::run_dns_discovery;
pub use upstream::health::run_health_checks;
pub use upstream::{Discovered, TargetReport, UpstreamStates};

/// The Prometheus exposition of the snapshot being served and of the process.
pub fn render_metrics(snapshots: &SnapshotCell, telemetry: &Telemetry) -> String {
    observe::render(&snapshots.load(), telemetry)
}
