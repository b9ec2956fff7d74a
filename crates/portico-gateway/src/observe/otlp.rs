//! Trace export over OTLP/HTTP (protobuf): for each sampled request, a server span for
//! Portico's own work and, when an upstream was called, a client span for that call, with
//! HTTP semantic-convention attributes.
//!
//! Like the access log, finished requests go through a bounded lock-free queue to an
//! exporter thread, which sends them in batches to `<endpoint>/v1/traces`. A full queue drops
//! the trace and counts it.

use super::access_log::AccessEvent;
use super::drainer::Drainer;
use super::http_out::Poster;
use crossbeam_queue::ArrayQueue;
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the exporter sends what has finished.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// Requests whose spans may wait for the exporter.
const QUEUE: usize = 8_192;
/// Spans per request at most (server and client), and requests per export request.
const BATCH: usize = 512;

/// One sampled request, with where its upstream call sat in time.
pub(crate) struct Finished {
    pub event: Box<AccessEvent>,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    pub upstream_span_id: u64,
    /// From the request's start to the first upstream try, and the length of all tries.
    pub upstream: Option<(Duration, Duration)>,
    pub scheme: &'static str,
}

/// The exporter: a queue and the thread that empties it.
pub struct Exporter {
    queue: ArrayQueue<Finished>,
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    thread: Drainer,
}

/// The exporter's counters, in spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExporterReport {
    pub exported: u64,
    pub dropped: u64,
    pub failed: u64,
}

impl Exporter {
    /// Starts exporting to the OTLP/HTTP collector at `endpoint` (`http://host:4318`).
    pub fn start(endpoint: &http::Uri) -> std::io::Result<Arc<Exporter>> {
        let url: http::Uri = format!("{}/v1/traces", endpoint.to_string().trim_end_matches('/'))
            .parse()
            .map_err(std::io::Error::other)?;
        let poster = Poster::new(url, "application/x-protobuf")?;
        let exporter = Arc::new(Exporter {
            queue: ArrayQueue::new(QUEUE),
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            thread: Drainer::default(),
        });
        let worker = exporter.clone();
        exporter.thread.start("portico-traces", EXPORT_INTERVAL, move |_| {
            let mut found = false;
            while worker.send(&poster) {
                found = true;
            }
            found
        })?;
        Ok(exporter)
    }

    pub(crate) fn push(&self, finished: Finished) {
        let spans = 1 + u64::from(finished.upstream.is_some());
        if self.queue.push(finished).is_err() {
            self.dropped.fetch_add(spans, Ordering::Relaxed);
        }
        self.thread.wake_if_idle();
    }

    pub fn report(&self) -> ExporterReport {
        ExporterReport {
            exported: self.exported.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Tells the exporter to send what is queued and end, without waiting for it.
    pub fn request_stop(&self) {
        self.thread.request_stop();
    }

    /// Sends what is queued and stops the exporter.
    pub fn stop(&self) {
        self.thread.stop();
    }

    /// Sends one batch; whether there may be more.
    fn send(&self, poster: &Poster) -> bool {
        let mut spans = Vec::new();
        while spans.len() < BATCH {
            let Some(finished) = self.queue.pop() else { break };
            spans.extend(spans_of(&finished));
        }
        if spans.is_empty() {
            return false;
        }
        let count = spans.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![text("service.name", "portico")] }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "portico".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans,
                }],
            }],
        };
        match poster.post(request.encode_to_vec()) {
            Ok(()) => self.exported.fetch_add(count, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(%error, spans = count, "cannot export traces");
                self.failed.fetch_add(count, Ordering::Relaxed)
            }
        };
        true
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The server span and, when an upstream was called, the client span of one request.
fn spans_of(finished: &Finished) -> Vec<Span> {
    let event = &finished.event;
    let trace_id = event.trace_id.to_be_bytes().to_vec();
    let start = nanos(event.time);
    let route = event.path_template.as_deref();
    let name = match route {
        Some(template) => format!("{} {template}", event.method),
        None => event.method.to_string(),
    };
    let host = event.head.host().and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("");
    let mut attributes = vec![
        text("http.request.method", event.method.as_str()),
        text("url.path", &String::from_utf8_lossy(event.head.path())),
        text("url.scheme", finished.scheme),
        text("server.address", host.rsplit_once(':').map_or(host, |(h, _)| h)),
        text("client.address", &event.client_ip.to_string()),
        int("http.response.status_code", i64::from(event.status)),
    ];
    for (key, value) in [("http.route", route), ("portico.route", event.route.as_deref())] {
        if let Some(value) = value {
            attributes.push(text(key, value));
        }
    }
    for (key, value) in [("portico.service", event.service.as_deref()), ("portico.consumer", event.consumer.as_deref())]
    {
        if let Some(value) = value {
            attributes.push(text(key, value));
        }
    }
    if let Some(error) = event.error {
        attributes.push(text("error.type", error));
    }
    let failed = event.status >= 500 || event.error.is_some_and(|e| e.starts_with("upstream"));
    let status = Status { message: event.error.unwrap_or_default().into(), code: if failed { 2 } else { 0 } };
    let duration = u64::try_from(event.duration.as_nanos()).unwrap_or(u64::MAX);
    let mut spans = vec![Span {
        trace_id: trace_id.clone(),
        span_id: finished.span_id.to_be_bytes().to_vec(),
        parent_span_id: finished.parent_id.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name,
        kind: SPAN_KIND_SERVER,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(duration),
        attributes,
        status: Some(status),
    }];
    if let (Some((offset, length)), Some(target)) = (finished.upstream, &event.target) {
        let begin = start.saturating_add(u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX));
        let mut attributes = vec![
            text("http.request.method", event.method.as_str()),
            text("server.address", target.host()),
            int("http.request.resend_count", i64::from(event.retries)),
        ];
        if let Some(port) = target.port_u16() {
            attributes.push(int("server.port", i64::from(port)));
        }
        let upstream_failed = event.error.is_some_and(|e| e.starts_with("upstream"));
        if upstream_failed {
            attributes.push(text("error.type", event.error.unwrap_or_default()));
        } else {
            attributes.push(int("http.response.status_code", i64::from(event.status)));
        }
        spans.push(Span {
            trace_id,
            span_id: finished.upstream_span_id.to_be_bytes().to_vec(),
            parent_span_id: finished.span_id.to_be_bytes().to_vec(),
            name: event.method.to_string(),
            kind: SPAN_KIND_CLIENT,
            start_time_unix_nano: begin,
            end_time_unix_nano: begin.saturating_add(u64::try_from(length.as_nanos()).unwrap_or(u64::MAX)),
            attributes,
            status: Some(Status { message: String::new(), code: if upstream_failed { 2 } else { 0 } }),
        });
    }
    spans
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

// The messages of OTLP's `trace.proto`, `common.proto` and `resource.proto` (field numbers
// as published by OpenTelemetry) that Portico sends; fields it never sets are left out.

const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;

#[derive(Clone, PartialEq, Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
}

#[derive(Clone, PartialEq, Message)]
struct InstrumentationScope {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    status: Option<Status>,
}

#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(string, tag = "2")]
    message: String,
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    code: i32,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 3")]
    value: Option<any_value::Value>,
}

mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(int64, tag = "3")]
        IntValue(i64),
    }
}
