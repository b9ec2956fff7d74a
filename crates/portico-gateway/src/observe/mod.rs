//! What Portico tells about the traffic it carries: metrics, the access log, trace context
//! and `Server-Timing`.
//!
//! Each request carries a [`Trail`] through the pipeline, filled in as the phases learn
//! things (route, consumer, target, upstream time). It is finished when the response body
//! has gone out or was abandoned: then the route's counters are updated and, when the access
//! log or analytics is on, an event is queued for it. Nothing here waits or locks on the
//! request path.

mod access_log;
mod analytics;
mod drainer;
mod exposition;
mod http_out;
pub(crate) mod metrics;
mod otlp;
pub(crate) mod trace;

pub use access_log::{
    AccessEvent, AccessLog, AccessLogReport, AccessLogSettings, AccessLogSink, EventSink, HeadText, DEFAULT_QUEUE,
};
pub use analytics::{AnalyticsReport, AnalyticsSettings, RollupSink};
pub(crate) use exposition::render;
pub(crate) use metrics::{RouteCounters, ServiceCounters};
pub use otlp::{Exporter, ExporterReport};
pub(crate) use trace::{TraceContext, TRACEPARENT};

use crate::proxy::Progress;
use http::uri::Authority;
use http::{HeaderName, HeaderValue};
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub(crate) static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Settings of what Portico reports about requests.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Add `Server-Timing: gateway;dur=…, upstream;dur=…` to responses.
    pub server_timing: bool,
    /// The share of new traces (those a client did not start) that are marked sampled.
    pub trace_sample_ratio: f64,
    pub access_log: Option<AccessLogSettings>,
    /// Export the spans of sampled requests to this OTLP/HTTP collector (`http://host:4318`).
    pub otlp_endpoint: Option<http::Uri>,
    /// Count traffic into rollups for analytics (written through [`StoreSinks::rollups`]).
    pub analytics: Option<AnalyticsSettings>,
}

impl Default for TelemetrySettings {
    fn default() -> TelemetrySettings {
        TelemetrySettings {
            server_timing: true,
            trace_sample_ratio: 0.01,
            access_log: None,
            otlp_endpoint: None,
            analytics: None,
        }
    }
}

/// What the program running the gateway writes to its store: the access log's `store`
/// sink and the analytics rollups.
#[derive(Default)]
pub struct StoreSinks {
    pub events: Option<Box<dyn EventSink>>,
    pub rollups: Option<Box<dyn RollupSink>>,
}

/// The process-wide state behind metrics and the access log, shared by every worker and
/// kept across reloads.
pub struct Telemetry {
    pub(crate) settings: TelemetrySettings,
    pub(crate) access_log: Option<Arc<AccessLog>>,
    pub(crate) exporter: Option<Arc<Exporter>>,
    /// This node's name in the rollups, and the analytics counters.
    analytics: Option<(String, Arc<analytics::AnalyticsCounts>)>,
    /// Counters of each route by name, so that a reload keeps them.
    routes: Mutex<FxHashMap<Box<str>, Arc<RouteCounters>>>,
    /// Client connections open now.
    pub(crate) connections: AtomicI64,
    /// Compiling and swapping in the last configuration took this long (µs).
    reload_micros: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl Telemetry {
    /// Starts the access log writer (which also counts analytics) and the trace exporter
    /// when they are configured.
    pub fn start(settings: TelemetrySettings, store: StoreSinks) -> std::io::Result<Arc<Telemetry>> {
        let (counts, counter) = match (&settings.analytics, store.rollups) {
            (Some(wanted), Some(sink)) => {
                let node = format!("{:012x}", fastrand::u64(..) >> 16);
                let counts = Arc::new(analytics::AnalyticsCounts::default());
                let counter = analytics::Counter::new(node.clone(), wanted, sink, counts.clone());
                (Some((node, counts)), Some(counter))
            }
            (Some(_), None) => return Err(std::io::Error::other("analytics needs Portico's store")),
            (None, _) => (None, None),
        };
        let no_sinks = AccessLogSettings { sinks: Vec::new(), queue: DEFAULT_QUEUE };
        let access_log = match (&settings.access_log, counter) {
            (None, None) => None,
            (log, counter) => Some(AccessLog::start(log.as_ref().unwrap_or(&no_sinks), store.events, counter)?),
        };
        let exporter = settings.otlp_endpoint.as_ref().map(Exporter::start).transpose()?;
        Ok(Arc::new(Telemetry {
            settings,
            access_log,
            exporter,
            analytics: counts,
            routes: Mutex::default(),
            connections: AtomicI64::new(0),
            reload_micros: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    /// Telemetry with the defaults and no access log, for tests and tools.
    pub fn disabled() -> Arc<Telemetry> {
        Telemetry::start(TelemetrySettings::default(), StoreSinks::default())
            .unwrap_or_else(|_| unreachable!("no file to open"))
    }

    /// The counters of route `name`, the same ones across reloads.
    pub(crate) fn route(&self, name: &str) -> Arc<RouteCounters> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.entry(name.into()).or_default().clone()
    }

    /// Forgets the counters of routes that are gone.
    pub(crate) fn retain_routes(&self, live: impl Fn(&str) -> bool) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).retain(|name, _| live(name));
    }

    /// Records how a configuration change went.
    pub fn record_reload(&self, took: Duration, ok: bool) {
        if ok {
            self.reloads.fetch_add(1, Ordering::Relaxed);
            self.reload_micros.store(took.as_micros() as u64, Ordering::Relaxed);
        } else {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters of the event queue and the access log's sinks (none when only
    /// analytics reads the events).
    pub fn access_log_report(&self) -> Option<AccessLogReport> {
        self.access_log.as_ref().map(|log| log.report())
    }

    pub fn analytics_report(&self) -> Option<AnalyticsReport> {
        self.analytics.as_ref().map(|(node, counts)| counts.report(node))
    }

    pub fn exporter_report(&self) -> Option<ExporterReport> {
        self.exporter.as_ref().map(|exporter| exporter.report())
    }

    /// Writes what the access log has queued, exports the spans waiting, and stops both.
    pub fn stop(&self) {
        if let Some(log) = &self.access_log {
            log.stop();
        }
        if let Some(exporter) = &self.exporter {
            exporter.stop();
        }
    }
}

impl Drop for Telemetry {
    /// Asks the writer and exporter threads to finish on their own, without waiting: the
    /// last owner may be a runtime thread that a sink needs (`stop` is the orderly way).
    fn drop(&mut self) {
        if let Some(log) = &self.access_log {
            log.request_stop();
        }
        if let Some(exporter) = &self.exporter {
            exporter.request_stop();
        }
    }
}

/// What one request leaves behind, filled in phase by phase.
pub(crate) struct Trail {
    started: Instant,
    pub trace: TraceContext,
    pub route: Option<Arc<RouteCounters>>,
    /// Time waiting for upstream response heads, over all tries.
    pub upstream: Option<Duration>,
    /// When the response head was ready, after `started`.
    head: Duration,
    status: u16,
    pub bytes_in: Option<Arc<Progress>>,
    /// The first upstream try's start and the last one's end.
    upstream_span: Option<(Instant, Instant)>,
    https: bool,
    /// The request's record, begun at the start when the access log is on or the trace is
    /// exported; it goes to both when both want it.
    event: Option<Box<AccessEvent>>,
    /// What an AI call used, left there by the AI exchange or its stream.
    pub ai: Option<Arc<crate::ai::Meter>>,
    log: Option<Arc<AccessLog>>,
    exporter: Option<Arc<Exporter>>,
}

/// How often a thread reads the wall clock again for [`wall_clock`], so that it follows
/// changes made to the system time.
const WALL_CLOCK_READ_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// A reading of both clocks at once, for [`wall_clock`].
    static WALL_ANCHOR: std::cell::Cell<Option<(Instant, SystemTime)>> = const { std::cell::Cell::new(None) };
}

/// The wall-clock time at `now`, derived from the thread's last reading of both clocks while
/// that is under a second old. A logged request needs its wall-clock time as well as the
/// monotonic start it is timed from, and each clock read costs about 25 ns here.
fn wall_clock(now: Instant) -> SystemTime {
    if let Some((instant, system)) = WALL_ANCHOR.get() {
        let since = now.saturating_duration_since(instant);
        if since < WALL_CLOCK_READ_EVERY {
            return system + since;
        }
    }
    let system = SystemTime::now();
    WALL_ANCHOR.set(Some((now, system)));
    system
}

impl Trail {
    /// Starts the trail of a request that came with `traceparent` (if it did).
    pub fn start(telemetry: &Telemetry, traceparent: Option<&HeaderValue>, https: bool) -> Trail {
        let started = Instant::now();
        let trace = TraceContext::from_request(traceparent, telemetry.settings.trace_sample_ratio);
        let exporter = if trace.sampled { telemetry.exporter.clone() } else { None };
        let log = telemetry.access_log.clone();
        let event = match (&log, &exporter) {
            (Some(log), _) => Some(log.event(wall_clock(started), trace.trace_id)),
            (None, Some(_)) => Some(Box::new(AccessEvent::new(wall_clock(started), trace.trace_id))),
            (None, None) => None,
        };
        Trail {
            started,
            trace,
            route: None,
            upstream: None,
            head: Duration::ZERO,
            status: 0,
            bytes_in: None,
            upstream_span: None,
            https,
            event,
            ai: None,
            log,
            exporter,
        }
    }

    /// The wall-clock time the request arrived at.
    pub fn arrived(&self) -> SystemTime {
        wall_clock(self.started)
    }

    /// The request's record being filled in, when the access log or the trace wants it.
    pub fn event(&mut self) -> Option<&mut AccessEvent> {
        self.event.as_deref_mut()
    }

    /// One upstream try, begun at `started`, took `took`.
    pub fn record_try(&mut self, started: Instant, took: Duration) {
        *self.upstream.get_or_insert(Duration::ZERO) += took;
        let first = self.upstream_span.map_or(started, |(first, _)| first);
        self.upstream_span = Some((first, started + took));
    }

    pub fn set_target(&mut self, target: &Authority) {
        if let Some(event) = self.event() {
            event.target = Some(target.clone());
        }
    }

    /// The response head is ready with `status`: returns the `Server-Timing` value when
    /// wanted.
    pub fn head_ready(&mut self, status: u16, server_timing: bool) -> Option<Text> {
        self.head = self.started.elapsed();
        self.status = status;
        if !server_timing {
            return None;
        }
        let upstream = self.upstream.unwrap_or_default();
        let gateway = self.head.saturating_sub(upstream);
        // Written by hand into a stack buffer: this runs on every response.
        let mut text = Text::default();
        text.push(b"gateway;dur=");
        text.millis(gateway);
        if self.upstream.is_some() {
            text.push(b", upstream;dur=");
            text.millis(upstream);
        }
        Some(text)
    }

    /// The response is done (sent or abandoned) after `bytes_out` body bytes.
    pub fn finish(self, bytes_out: u64) {
        let duration = self.started.elapsed();
        let bytes_in = self.bytes_in.as_ref().map_or(0, |p| p.received());
        if let Some(route) = &self.route {
            route.requests.count(self.status);
            route.duration.observe(duration);
            route.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
            route.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        }
        let Some(mut event) = self.event else { return };
        event.status = self.status;
        event.bytes_in = bytes_in;
        event.bytes_out = bytes_out;
        event.duration = duration;
        event.upstream = self.upstream;
        event.gateway = self.head.saturating_sub(self.upstream.unwrap_or_default());
        event.ai = self.ai.as_ref().and_then(|meter| meter.take()).map(Box::new);
        if let Some(exporter) = &self.exporter {
            let upstream = self.upstream_span.map(|(first, last)| {
                (first.saturating_duration_since(self.started), last.saturating_duration_since(first))
            });
            let event = if self.log.is_some() { Box::new((*event).clone()) } else { event.clone() };
            exporter.push(otlp::Finished {
                event,
                span_id: self.trace.span_id,
                parent_id: self.trace.parent_id,
                upstream_span_id: self.trace.upstream_span_id,
                upstream,
                scheme: if self.https { "https" } else { "http" },
            });
        }
        if let Some(log) = &self.log {
            log.push(event);
        }
    }
}

/// A duration in milliseconds with three decimals (`12.034`), written into the end of
/// `digits`: right to left, three decimals, the point, then the whole milliseconds (at least
/// one digit). This runs several times per request.
pub(crate) fn millis(duration: Duration, digits: &mut [u8; 24]) -> &[u8] {
    let mut micros = duration.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(duration.subsec_micros()));
    let mut at = digits.len();
    for place in 0.. {
        at -= 1;
        if place == 3 {
            digits[at] = b'.';
            continue;
        }
        digits[at] = b'0' + (micros % 10) as u8;
        micros /= 10;
        if place > 3 && micros == 0 {
            break;
        }
    }
    &digits[at..]
}

/// A short text built without allocating.
pub(crate) struct Text {
    bytes: [u8; 64],
    len: usize,
}

impl Default for Text {
    fn default() -> Text {
        Text { bytes: [0; 64], len: 0 }
    }
}

impl Text {
    /// Appends `more`, or as much of it as fits.
    pub fn push(&mut self, more: &[u8]) {
        let n = more.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&more[..n]);
        self.len += n;
    }

    /// Appends a duration in milliseconds with three decimals (`12.034`).
    pub fn millis(&mut self, duration: Duration) {
        self.push(millis(duration, &mut [0; 24]));
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_is_derived_from_the_last_reading_of_both_clocks() {
        let close = |a: SystemTime, b: SystemTime| {
            let gap = a.duration_since(b).or_else(|_| b.duration_since(a)).unwrap_or_default();
            assert!(gap < Duration::from_millis(50), "{gap:?}");
        };
        let first = Instant::now();
        close(wall_clock(first), SystemTime::now());
        // Within the second, the time moves on with the monotonic clock from that reading.
        let later = first + Duration::from_millis(300);
        assert_eq!(wall_clock(later), wall_clock(first) + Duration::from_millis(300));
        // After it, the wall clock is read again.
        let much_later = first + Duration::from_secs(5);
        close(wall_clock(much_later), SystemTime::now());
    }

    #[test]
    fn durations_are_written_as_milliseconds() {
        for (micros, text) in
            [(0, "0.000"), (7, "0.007"), (1_234, "1.234"), (12_345_678, "12345.678"), (1_000, "1.000")]
        {
            let mut out = Text::default();
            out.millis(Duration::from_micros(micros));
            assert_eq!(out.as_bytes(), text.as_bytes());
        }
        let mut out = Text::default();
        out.millis(Duration::MAX);
        assert_eq!(out.as_bytes(), b"18446744073709551.615", "saturated, not wrapped");
    }
}
