//! `/metrics`: the counters of the snapshot being served and of the process, in the
//! Prometheus text format.

use super::metrics::{by_status, Exposition};
use super::Telemetry;
use crate::snapshot::{Action, Snapshot};
use std::sync::atomic::Ordering;

/// The metrics of `snapshot` and `telemetry`, as text.
pub(crate) fn render(snapshot: &Snapshot, telemetry: &Telemetry) -> String {
    let mut out = Exposition::new();
    let routes: Vec<_> = snapshot
        .routes
        .iter()
        .map(|route| {
            let service = match &route.action {
                Action::Forward(upstream) => &*upstream.name,
                Action::Ai(ai) => &*ai.endpoint.service,
                Action::Mock(_) => "",
            };
            (vec![("route", &*route.name), ("service", service)], &*route.counters)
        })
        .collect();
    out.counters(
        "portico_http_requests_total",
        "Requests by route, the route's service and status class.",
        routes.iter().flat_map(|(labels, c)| by_status(labels, &c.requests)),
    );
    out.histograms(
        "portico_http_request_duration_seconds",
        "Time from the request head to the last byte of the response, by route.",
        routes.iter().map(|(labels, c)| (labels.clone(), &c.duration)),
    );
    out.counters(
        "portico_http_request_body_bytes_total",
        "Request body bytes received, by route.",
        routes.iter().map(|(labels, c)| (labels.clone(), c.bytes_in.load(Ordering::Relaxed))),
    );
    out.counters(
        "portico_http_response_body_bytes_total",
        "Response body bytes sent, by route.",
        routes.iter().map(|(labels, c)| (labels.clone(), c.bytes_out.load(Ordering::Relaxed))),
    );
    out.counters(
        "portico_rate_limit_rejections_total",
        "Requests refused by a rate limit (429), by route.",
        routes.iter().map(|(labels, c)| (labels.clone(), c.rate_limited.load(Ordering::Relaxed))),
    );

    let services: Vec<_> =
        snapshot.upstreams.iter().map(|u| (vec![("service", &*u.name)], &u.state.counters, u)).collect();
    out.counters(
        "portico_upstream_responses_total",
        "Response heads from upstreams by service and status class, after retries.",
        services.iter().flat_map(|(labels, c, _)| by_status(labels, &c.responses)),
    );
    out.counters(
        "portico_upstream_failures_total",
        "Upstream exchanges that got no response (refused, reset, timed out), by service.",
        services.iter().map(|(labels, c, _)| (labels.clone(), c.failures.load(Ordering::Relaxed))),
    );
    out.histograms(
        "portico_upstream_duration_seconds",
        "Time from sending a request upstream to its response head, per try, by service.",
        services.iter().map(|(labels, c, _)| (labels.clone(), &c.duration)),
    );
    out.counters(
        "portico_upstream_retries_total",
        "Retries sent to upstreams, by service.",
        services.iter().map(|(labels, c, _)| (labels.clone(), c.retries.load(Ordering::Relaxed))),
    );
    let members: Vec<_> = snapshot.upstreams.iter().map(|u| (u, u.members())).collect();
    out.gauges(
        "portico_upstream_target_available",
        "Whether a target takes requests (1) or is unhealthy or ejected (0).",
        members.iter().flat_map(|(upstream, set)| {
            set.targets.iter().map(|t| {
                (
                    vec![("service", &*upstream.name), ("target", t.authority.as_str())],
                    i64::from(t.state.is_available()),
                )
            })
        }),
    );
    out.gauges(
        "portico_circuit_breaker_state",
        "The state of each service's circuit breaker: 1 for the current state, 0 for the others.",
        services.iter().filter(|(_, _, u)| u.breaker.is_some()).flat_map(|(_, _, upstream)| {
            let now = upstream.state.breaker.state_name();
            ["closed", "open", "half_open"]
                .map(|state| (vec![("service", &*upstream.name), ("state", state)], i64::from(state == now)))
        }),
    );

    out.gauges(
        "portico_connections_active",
        "Client connections open now.",
        [(Vec::new(), telemetry.connections.load(Ordering::Relaxed))],
    );
    out.gauges(
        "portico_config_revision",
        "The configuration revision being served.",
        [(Vec::new(), snapshot.revision)],
    );
    out.gauges(
        "portico_config_reload_duration_seconds",
        "How long compiling and swapping in the last configuration took.",
        [(Vec::new(), telemetry.reload_micros.load(Ordering::Relaxed) as f64 / 1e6)],
    );
    out.counters(
        "portico_config_reloads_total",
        "Configurations compiled and swapped in.",
        [(Vec::new(), telemetry.reloads.load(Ordering::Relaxed))],
    );
    out.counters(
        "portico_config_reload_failures_total",
        "Configurations that could not be compiled; the previous one stayed in service.",
        [(Vec::new(), telemetry.reload_failures.load(Ordering::Relaxed))],
    );
    if let Some(report) = telemetry.access_log_report() {
        out.counters(
            "portico_access_log_events_written_total",
            "Access log events written, by sink.",
            report.sinks.iter().map(|s| (vec![("sink", s.sink.as_str())], s.written)),
        );
        out.counters(
            "portico_access_log_events_failed_total",
            "Access log events a sink failed to take (after retries), by sink.",
            report.sinks.iter().map(|s| (vec![("sink", s.sink.as_str())], s.failed)),
        );
        out.counters(
            "portico_access_log_events_dropped_total",
            "Access log events dropped because the writer could not keep up.",
            [(Vec::new(), report.dropped)],
        );
    }
    if let Some(report) = telemetry.analytics_report() {
        out.counters(
            "portico_analytics_rollups_written_total",
            "Analytics rollup rows written to the store.",
            [(Vec::new(), report.written)],
        );
        out.counters(
            "portico_analytics_rollups_failed_total",
            "Analytics rollup rows the store did not take (tried again at the next flush).",
            [(Vec::new(), report.failed)],
        );
    }
    if let Some(report) = telemetry.exporter_report() {
        out.counters(
            "portico_trace_spans_exported_total",
            "Spans sent to the OTLP collector.",
            [(Vec::new(), report.exported)],
        );
        out.counters(
            "portico_trace_spans_dropped_total",
            "Spans dropped because the exporter could not keep up.",
            [(Vec::new(), report.dropped)],
        );
        out.counters(
            "portico_trace_spans_failed_total",
            "Spans lost because the collector failed to take them (after retries).",
            [(Vec::new(), report.failed)],
        );
    }
    out.into_text()
}
