//! The run-time state of a service's targets: health, ejections, load and latency.

use crate::problem::ApiError;
use crate::AdminState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub(crate) struct ServiceHealth {
    service: String,
    /// Whether every target is out, in which case traffic goes to all of them anyway
    /// (failing open) instead of failing every request.
    failing_open: bool,
    /// The circuit breaker's state, `closed`, `open` or `half_open`; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit: Option<&'static str>,
    /// Requests holding a place in the bulkhead; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    bulkhead_in_flight: Option<usize>,
    targets: Vec<TargetHealth>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TargetHealth {
    address: String,
    weight: u32,
    /// Whether the target gets traffic now: its active checks pass and it is not ejected.
    available: bool,
    active: ActiveState,
    passive: PassiveState,
    /// Requests in flight (counted only by the `least_requests` and `peak_ewma` balancers).
    outstanding: u32,
    /// Peak-EWMA response latency in milliseconds (measured only by `peak_ewma`).
    latency_ms: f64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ActiveState {
    /// The probes' verdict; `true` for targets without active checks.
    healthy: bool,
    consecutive_successes: u32,
    consecutive_failures: u32,
    /// Why the last probe failed, while probes fail.
    last_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PassiveState {
    ejected: bool,
    /// Time left in the current ejection.
    ejected_for_ms: u64,
    /// Ejections in a row; each one doubles the ejection time, up to the maximum.
    ejections: u32,
    consecutive_failures: u32,
}

/// What the gateway knows about each target of a service right now.
#[utoipa::path(get, path = "/api/v1/services/{name}/health", tag = "services",
    params(("name" = String, Path, description = "Service name")),
    responses((status = 200, body = ServiceHealth), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn service_health(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceHealth>, ApiError> {
    let report = state.snapshots.load().service_health(&name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", "Not found", format!("no service `{name}` is being served"))
    })?;
    let targets: Vec<TargetHealth> = report
        .targets
        .into_iter()
        .map(|(address, weight, r)| TargetHealth {
            address,
            weight,
            available: r.available,
            active: ActiveState {
                healthy: r.probe_healthy,
                consecutive_successes: r.probe_successes,
                consecutive_failures: r.probe_failures,
                last_error: r.last_probe_error,
            },
            passive: PassiveState {
                ejected: r.ejected_for_ms > 0,
                ejected_for_ms: r.ejected_for_ms,
                ejections: r.ejections,
                consecutive_failures: r.consecutive_failures,
            },
            outstanding: r.outstanding,
            latency_ms: (r.latency_ms * 1000.0).round() / 1000.0,
        })
        .collect();
    let failing_open = targets.iter().filter(|t| t.weight > 0).all(|t| !t.available);
    Ok(Json(ServiceHealth {
        service: name,
        failing_open,
        circuit: report.circuit,
        bulkhead_in_flight: report.bulkhead_in_flight,
        targets,
    }))
}
