//! Health, readiness and status.

use crate::{AdminState, ConfigSource};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/api/v1/health", tag = "system", security(()), responses((status = 200, body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: a configuration is loaded and being served.
#[utoipa::path(get, path = "/api/v1/ready", tag = "system", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub(crate) async fn ready(State(state): State<AdminState>) -> (StatusCode, Json<Health>) {
    if state.status.is_ready() {
        (StatusCode::OK, Json(Health { status: "ready" }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "starting" }))
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Status {
    /// `store` or `file`.
    mode: &'static str,
    /// The configuration revision the gateway serves.
    serving_revision: i64,
    routes: i64,
    /// The store's newest revision, when it can be reached.
    store_revision: Option<i64>,
    /// Why the newest configuration is not being served, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// Cluster rate limiting, when Redis is configured: whether it is reachable, and how many
    /// requests were counted on this node alone because it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    redis: Option<portico_gateway::RedisReport>,
    /// The access log, when one is configured: events written, dropped because the writer
    /// could not keep up, and lost because the sink failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    access_log: Option<portico_gateway::AccessLogReport>,
    /// Trace export, when an OTLP endpoint is configured: spans exported, dropped because
    /// the exporter could not keep up, and lost because the collector failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    traces: Option<portico_gateway::ExporterReport>,
    /// Traffic analytics, when on: this node's name in the rollups, and rollup rows
    /// written, failed (tried again) and given up.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    analytics: Option<portico_gateway::AnalyticsReport>,
}

/// What the gateway serves, and whether it is up to date.
#[utoipa::path(get, path = "/api/v1/status", tag = "system", responses((status = 200, body = Status)))]
pub(crate) async fn status(State(state): State<AdminState>) -> Json<Status> {
    let mode = match state.source {
        ConfigSource::Store => "store",
        ConfigSource::File(_) => "file",
    };
    let store_revision = match state.source {
        ConfigSource::Store => state.store.revision().await.ok(),
        ConfigSource::File(_) => None,
    };
    Json(Status {
        mode,
        serving_revision: state.status.revision(),
        routes: state.status.routes(),
        store_revision,
        last_error: state.status.last_error(),
        redis: state.status.redis().map(|r| r.report()),
        access_log: state.telemetry.access_log_report(),
        traces: state.telemetry.exporter_report(),
        analytics: state.telemetry.analytics_report(),
    })
}

/// Metrics in the Prometheus text format: requests, latencies and bytes by route; upstream
/// responses, latencies, retries, target health and circuit breakers by service; connections,
/// configuration reloads and the access log.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AdminState>) -> impl axum::response::IntoResponse {
    let text = portico_gateway::render_metrics(&state.snapshots, &state.telemetry);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}
