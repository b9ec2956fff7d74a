//! The access log: one event per request, written off the request path.
//!
//! A finished request pushes its event into a bounded lock-free queue: a few atomic
//! operations, no lock, no system call, no wake-up. A writer thread drains the queue in
//! batches every [`FLUSH_INTERVAL`] and writes them as JSON lines to each sink: standard
//! output, a file (rotated by size), or an HTTP collector (one POST per batch, retried). When
//! the queue is full the event is dropped, never the request slowed, and the drop is counted
//! (exposed on `/metrics` and in `/api/v1/status`), as are events a sink failed to take. On
//! shutdown the writer drains what is queued. The same writer feeds traffic analytics
//! (see [`super::analytics`]), which is why the queue exists even with no sink.
//!
//! The writer hands written events back through a second queue, blanked but with their
//! text buffer, and the request path takes its next event from there: under load a request
//! allocates nothing for its event, and the writer frees nothing another thread allocated.

use super::analytics::Counter;
use super::drainer::Drainer;
use super::http_out::Poster;
use crate::ai::AiUsage;
use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http::Method;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Events that may wait for the writer, by default (about 0.7 s of traffic at 100k
/// requests/s, 1 MiB of slots); more are dropped and counted.
pub const DEFAULT_QUEUE: usize = 65_536;

/// Written events kept for reuse, at most. A batch at 60,000 requests/s is about 1,200
/// events; each kept one holds about 400 bytes.
const SPARE_EVENTS: usize = 1024;

/// A kept event's text buffer may be this large; one that grew past it (a long path) is
/// freed rather than kept.
const KEPT_HEAD_BYTES: usize = 512;

/// How often the writer drains the queue. Short, so that each batch is small work: the
/// writer shares the machine with the proxy, and a large batch shows as latency.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// Where access events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogSink {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines in a file, rotated when it reaches `max_bytes`: the full file is renamed
    /// `<path>.1` (older ones shift to `.2` ... `.<keep>`) and a new one is started.
    File { path: PathBuf, max_bytes: u64, keep: u32 },
    /// Batches of JSON lines POSTed to an HTTP(S) collector (`application/x-ndjson`); a batch
    /// is tried again after a connection failure, a 429 or a 5xx.
    Http { url: http::Uri },
    /// Rows in Portico's store (SQLite or PostgreSQL), written through the [`EventSink`] the
    /// program running the gateway provides.
    Store,
}

/// A sink the program running the gateway provides, such as its store.
pub trait EventSink: Send {
    /// Writes a batch of events; an error loses the batch, and it is counted as failed.
    fn write(&mut self, events: &[Box<AccessEvent>]) -> io::Result<()>;
}

impl AccessLogSink {
    /// How the sink is named in reports: `stdout`, the file's path, or the URL without
    /// credentials or query.
    pub fn name(&self) -> String {
        match self {
            AccessLogSink::Stdout => "stdout".into(),
            AccessLogSink::Store => "store".into(),
            AccessLogSink::File { path, .. } => path.display().to_string(),
            AccessLogSink::Http { url } => {
                let host = url.authority().map_or("", |a| a.as_str().rsplit('@').next().unwrap_or(""));
                format!("{}://{host}{}", url.scheme_str().unwrap_or("http"), url.path())
            }
        }
    }
}

/// Settings of the access log.
#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    pub sinks: Vec<AccessLogSink>,
    /// Events that may wait for the writer; more are dropped and counted.
    pub queue: usize,
}

/// One request, as the access log records it. Values are kept as the request path has them
/// (shared names, numbers); the writer thread turns them into text. What comes from the
/// request head is copied (see [`HeadText`]).
#[derive(Debug, Clone)]
pub struct AccessEvent {
    /// When the request head arrived.
    pub time: SystemTime,
    pub trace_id: u128,
    pub client_ip: IpAddr,
    pub method: Method,
    /// The request id, the host and the path.
    pub head: HeadText,
    /// The route's path pattern that matched (`/users/{id}`), bounded unlike the path.
    pub path_template: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    /// The upstream target (`host:port`) that answered, after retries.
    pub target: Option<Authority>,
    pub consumer: Option<Arc<str>>,
    /// The team that owns the consumer.
    pub team: Option<Arc<str>>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// From the request head to the last byte of the response.
    pub duration: Duration,
    /// Waiting for upstream response heads, over all tries.
    pub upstream: Option<Duration>,
    /// Portico's own time before the response head: the time to the head minus `upstream`.
    pub gateway: Duration,
    pub retries: u32,
    /// Why Portico answered itself with an error (`upstream_timeout`, `rate_limited`, ...).
    pub error: Option<&'static str>,
    /// What an AI call used and cost.
    pub ai: Option<Box<AiUsage>>,
}

/// The texts an event copies from the request head, in one buffer: the request id, the
/// `Host` header (or the authority of an HTTP/2 request) as sent, and the path without the
/// query (which may carry credentials). Copied, not shared: the head shares its
/// connection's read buffer, and an event holding on to it while queued would make the
/// connection allocate a new buffer for the next request.
#[derive(Debug, Clone, Default)]
pub struct HeadText {
    bytes: Vec<u8>,
    /// Where the host starts (it follows the request id), when there is one.
    host_at: Option<usize>,
    path_at: usize,
}

impl HeadText {
    pub fn new(request_id: &[u8], host: Option<&[u8]>, path: &str) -> HeadText {
        let mut text = HeadText::default();
        text.set(request_id, host, path);
        text
    }

    /// Replaces the texts, in the buffer already there.
    pub fn set(&mut self, request_id: &[u8], host: Option<&[u8]>, path: &str) {
        self.bytes.clear();
        self.bytes.extend_from_slice(request_id);
        self.host_at = host.map(|host| {
            let at = self.bytes.len();
            self.bytes.extend_from_slice(host);
            at
        });
        self.path_at = self.bytes.len();
        self.bytes.extend_from_slice(path.as_bytes());
    }

    pub fn request_id(&self) -> &[u8] {
        &self.bytes[..self.host_at.unwrap_or(self.path_at)]
    }

    pub fn host(&self) -> Option<&[u8]> {
        self.host_at.map(|at| &self.bytes[at..self.path_at])
    }

    /// The path; it was a `str` when set, but is read as bytes like the others.
    pub fn path(&self) -> &[u8] {
        &self.bytes[self.path_at..]
    }
}

impl AccessEvent {
    /// A blank event for a request whose head arrived at `time`.
    pub fn new(time: SystemTime, trace_id: u128) -> AccessEvent {
        AccessEvent {
            time,
            trace_id,
            client_ip: IpAddr::from([0, 0, 0, 0]),
            method: Method::GET,
            head: HeadText::default(),
            path_template: None,
            route: None,
            service: None,
            target: None,
            consumer: None,
            team: None,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            upstream: None,
            gateway: Duration::ZERO,
            retries: 0,
            error: None,
            ai: None,
        }
    }

    /// The names the event shares with other requests, in the order of [`NAME_KEYS`].
    fn names(&self) -> [Option<&str>; 6] {
        [
            self.path_template.as_deref(),
            self.route.as_deref(),
            self.service.as_deref(),
            self.target.as_ref().map(Authority::as_str),
            self.consumer.as_deref(),
            self.team.as_deref(),
        ]
    }

    /// Blanks a written event for reuse, keeping its text buffer; false when that buffer is
    /// too large to keep.
    fn blank(&mut self) -> bool {
        if self.head.bytes.capacity() > KEPT_HEAD_BYTES {
            return false;
        }
        let mut head = std::mem::take(&mut self.head);
        head.set(b"", None, "");
        *self = AccessEvent::new(SystemTime::UNIX_EPOCH, 0);
        self.head = head;
        true
    }

    /// Appends the event as one JSON line.
    fn write_json(&self, out: &mut Vec<u8>, memo: &mut Memo) {
        out.extend_from_slice(b"{\"time\":\"");
        memo.clock.write(self.time, out);
        out.extend_from_slice(b"\",\"request_id\":");
        string(out, self.head.request_id());
        out.extend_from_slice(b",\"trace_id\":\"");
        let mut hex = [0u8; 32];
        super::trace::hex(&self.trace_id.to_be_bytes(), &mut hex);
        out.extend_from_slice(&hex);
        out.extend_from_slice(b"\",\"client_ip\":\"");
        match self.client_ip {
            IpAddr::V4(ip) => ipv4(out, ip.octets()),
            IpAddr::V6(ip) => {
                let _ = write!(out, "{ip}");
            }
        }
        out.extend_from_slice(b"\",\"method\":");
        string(out, self.method.as_str().as_bytes());
        out.extend_from_slice(b",\"host\":");
        optional(out, self.head.host());
        out.extend_from_slice(b",\"path\":");
        string(out, self.head.path());
        memo.names.write(self, out);
        // Each piece goes straight into `out`: a fixed-size piece is copied inline, where a
        // piece of a small text built first would cost a call to `memcpy`.
        out.extend_from_slice(b",\"status\":");
        status(out, self.status);
        out.extend_from_slice(b",\"bytes_in\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.bytes_in).as_bytes());
        out.extend_from_slice(b",\"bytes_out\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.bytes_out).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        out.extend_from_slice(super::millis(self.duration, &mut [0; 24]));
        out.extend_from_slice(b",\"upstream_ms\":");
        match self.upstream {
            Some(upstream) => out.extend_from_slice(super::millis(upstream, &mut [0; 24])),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"gateway_ms\":");
        out.extend_from_slice(super::millis(self.gateway, &mut [0; 24]));
        out.extend_from_slice(b",\"retries\":");
        match self.retries {
            retries @ 0..=9 => out.push(b'0' + retries as u8),
            retries => out.extend_from_slice(itoa::Buffer::new().format(retries).as_bytes()),
        }
        out.extend_from_slice(b",\"error\":");
        optional(out, self.error.map(str::as_bytes));
        if let Some(ai) = &self.ai {
            write_ai(out, ai);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// An HTTP status: three digits, written as such.
fn status(out: &mut Vec<u8>, status: u16) {
    if (100..1000).contains(&status) {
        let digit = |n: u16| b'0' + (n % 10) as u8;
        out.extend_from_slice(&[digit(status / 100), digit(status / 10), digit(status)]);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    }
}

/// An IPv4 address in dotted decimal, built in place and appended at once.
fn ipv4(out: &mut Vec<u8>, octets: [u8; 4]) {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    out.extend_from_slice(&text[..len]);
}

/// An AI call's usage: `input_tokens` counts every input token, those read from and
/// written to a prompt cache included (each also counted apart); `output_tokens` counts
/// the reasoning tokens too.
fn write_ai(out: &mut Vec<u8>, ai: &AiUsage) {
    out.extend_from_slice(b",\"ai\":{\"provider\":");
    string(out, ai.provider.as_bytes());
    out.extend_from_slice(b",\"model\":");
    string(out, ai.model.as_bytes());
    let usage = &ai.usage;
    let _ = write!(
        out,
        ",\"input_tokens\":{},\"output_tokens\":{},\"cached_read_tokens\":{},\"cache_write_tokens\":{},\
         \"reasoning_tokens\":{},\"estimated\":{},\"cost_usd\":",
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
        ai.estimated,
    );
    match ai.cost {
        Some(cost) => {
            let _ = write!(out, "{cost}");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// A JSON string; bytes that are not UTF-8 become U+FFFD.
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Names, paths and ids are plain ASCII nearly always: copied as they are.
    if is_plain(bytes) {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Whether `bytes` is printable ASCII without `"` or `\\`: a JSON string as it is. Looks at
/// eight bytes at a time (this runs for every field of every event).
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `word - n * ONES` borrows (its high bit is set where the word's was not)
    // exactly when it was below `n`: the usual test for a zero or small byte.
    let below = |word: u64, n: u64| word.wrapping_sub(n * ONES) & !word & HIGHS;
    let special = |word: u64| {
        below(word, 0x20)
            | below(word ^ (u64::from(b'"') * ONES), 1)
            | below(word ^ (u64::from(b'\\') * ONES), 1)
            | (word & HIGHS)
            | below(word ^ (0x7f * ONES), 1)
    };
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        if special(word) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| (0x20..0x7f).contains(b) && *b != b'"' && *b != b'\\')
}

fn optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => string(out, bytes),
        None => out.extend_from_slice(b"null"),
    }
}

/// What the writer keeps from one event to the next to write the next one faster.
#[derive(Default)]
struct Memo {
    clock: Clock,
    names: Names,
}

/// The JSON keys of the names an event shares with other requests, in the order of
/// [`AccessEvent::names`].
const NAME_KEYS: [&[u8]; 6] =
    [b",\"path_template\":", b",\"route\":", b",\"service\":", b",\"target\":", b",\"consumer\":", b",\"team\":"];

/// The names an event shares with the requests before it, as the JSON text of the last event
/// that had them. Consecutive events mostly share all of them, and telling so takes a few
/// pointer comparisons.
#[derive(Default)]
struct Names {
    /// An event with clones of the names `text` was written from: held, so that an address
    /// seen again cannot be a new name at a reused address.
    of: Option<AccessEvent>,
    text: Vec<u8>,
}

impl Names {
    /// Appends `"path_template":...` to `"team":...` of `event`, each preceded by a comma.
    fn write(&mut self, event: &AccessEvent, out: &mut Vec<u8>) {
        let names = event.names();
        let same = |held: &AccessEvent| {
            held.names().iter().zip(&names).all(|pair| match pair {
                (Some(held), Some(name)) => std::ptr::eq(*held, *name),
                (held, name) => held.is_none() && name.is_none(),
            })
        };
        if !self.of.as_ref().is_some_and(same) {
            self.text.clear();
            for (key, name) in NAME_KEYS.iter().zip(names) {
                self.text.extend_from_slice(key);
                optional(&mut self.text, name.map(str::as_bytes));
            }
            self.of = Some(AccessEvent {
                path_template: event.path_template.clone(),
                route: event.route.clone(),
                service: event.service.clone(),
                target: event.target.clone(),
                consumer: event.consumer.clone(),
                team: event.team.clone(),
                ..AccessEvent::new(SystemTime::UNIX_EPOCH, 0)
            });
        }
        out.extend_from_slice(&self.text);
    }
}

/// Formats timestamps as RFC 3339 (UTC, milliseconds), reusing the text of the current
/// second: most events of a batch share it.
#[derive(Default)]
struct Clock {
    second: u64,
    /// `2026-11-26T17:20:00`
    prefix: Vec<u8>,
}

impl Clock {
    fn write(&mut self, time: SystemTime, out: &mut Vec<u8>) {
        let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        if self.prefix.is_empty() || since.as_secs() != self.second {
            self.second = since.as_secs();
            let at = time::OffsetDateTime::from(SystemTime::UNIX_EPOCH + Duration::from_secs(self.second));
            let (date, clock) = (at.date(), at.time());
            self.prefix.clear();
            let _ = write!(
                self.prefix,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                date.year(),
                u8::from(date.month()),
                date.day(),
                clock.hour(),
                clock.minute(),
                clock.second()
            );
        }
        out.extend_from_slice(&self.prefix);
        let millis = since.subsec_millis();
        out.extend_from_slice(&[
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ]);
    }
}

/// The queue between the request path and the writer, with its counters.
pub struct AccessLog {
    queue: ArrayQueue<Box<AccessEvent>>,
    /// Written events, blanked, for the request path to fill again.
    spare: ArrayQueue<Box<AccessEvent>>,
    /// Events dropped because the queue was full.
    dropped: AtomicU64,
    /// Per sink, in the order configured: events written, and events lost because the sink
    /// failed (a full disk, a collector that kept failing).
    counts: Box<[(String, AtomicU64, AtomicU64)]>,
    writer: Drainer,
}

/// The access log's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccessLogReport {
    /// Events dropped because the writer could not keep up.
    pub dropped: u64,
    pub sinks: Vec<SinkReport>,
}

/// What one sink took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SinkReport {
    pub sink: String,
    pub written: u64,
    pub failed: u64,
}

impl AccessLog {
    /// Opens the sinks and starts the writer thread. `store` writes the `store` sink;
    /// `analytics` counts every event too.
    pub(crate) fn start(
        settings: &AccessLogSettings,
        store: Option<Box<dyn EventSink>>,
        analytics: Option<Counter>,
    ) -> io::Result<Arc<AccessLog>> {
        let mut store = store;
        let mut sinks = Vec::new();
        for sink in &settings.sinks {
            sinks.push(match sink {
                AccessLogSink::Store => Sink::Events(
                    store
                        .take()
                        .ok_or_else(|| io::Error::other("the `store` access log sink needs Portico's store"))?,
                ),
                other => Sink::open(other)?,
            });
        }
        let log = Arc::new(AccessLog {
            queue: ArrayQueue::new(settings.queue.max(1)),
            spare: ArrayQueue::new(SPARE_EVENTS.min(settings.queue.max(1))),
            dropped: AtomicU64::new(0),
            counts: settings.sinks.iter().map(|s| (s.name(), AtomicU64::new(0), AtomicU64::new(0))).collect(),
            writer: Drainer::default(),
        });
        let (writer, mut memo, mut analytics) = (log.clone(), Memo::default(), analytics);
        // One batch for the writer's life: its buffers keep their size from drain to drain.
        let mut batch = Batch::default();
        log.writer.start("portico-access-log", FLUSH_INTERVAL, move |last| {
            let found = writer.drain(&mut batch, &mut sinks, &mut memo, analytics.as_mut());
            if let Some(analytics) = &mut analytics {
                analytics.tick(last);
            }
            found
        })?;
        Ok(log)
    }

    /// A blank event for a request whose head arrived at `time`: one the writer is done
    /// with, or a new one.
    pub fn event(&self, time: SystemTime, trace_id: u128) -> Box<AccessEvent> {
        match self.spare.pop() {
            Some(mut event) => {
                (event.time, event.trace_id) = (time, trace_id);
                event
            }
            None => Box::new(AccessEvent::new(time, trace_id)),
        }
    }

    /// Keeps a written event for reuse (while there is room).
    fn recycle(&self, mut event: Box<AccessEvent>) {
        if event.blank() {
            let _ = self.spare.push(event);
        }
    }

    /// Queues `event`, or counts it as dropped when the queue is full.
    pub fn push(&self, event: Box<AccessEvent>) {
        if self.queue.push(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.writer.wake_if_idle();
    }

    pub fn report(&self) -> AccessLogReport {
        AccessLogReport {
            dropped: self.dropped.load(Ordering::Relaxed),
            sinks: self
                .counts
                .iter()
                .map(|(sink, written, failed)| SinkReport {
                    sink: sink.clone(),
                    written: written.load(Ordering::Relaxed),
                    failed: failed.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Tells the writer to write what is queued and end, without waiting for it.
    pub fn request_stop(&self) {
        self.writer.request_stop();
    }

    /// Writes what is queued and stops the writer.
    pub fn stop(&self) {
        self.writer.stop();
    }

    /// Writes what is queued to every sink, as one batch of JSON lines (and the events
    /// themselves for sinks that want them). Returns whether anything was queued.
    fn drain(
        &self,
        batch: &mut Batch,
        sinks: &mut [Sink],
        memo: &mut Memo,
        mut analytics: Option<&mut Counter>,
    ) -> bool {
        let mut found = false;
        batch.clear();
        let wants_text = sinks.iter().any(|s| !matches!(s, Sink::Events(_)));
        let wants_events = sinks.iter().any(|s| matches!(s, Sink::Events(_)));
        while let Some(event) = self.queue.pop() {
            found = true;
            if let Some(analytics) = analytics.as_deref_mut() {
                analytics.count(&event);
            }
            if sinks.is_empty() {
                self.recycle(event);
                continue;
            }
            if wants_text {
                event.write_json(&mut batch.text, memo);
            }
            batch.ends.push(batch.text.len());
            if wants_events {
                batch.events.push(event);
            } else {
                self.recycle(event);
            }
        }
        if batch.ends.is_empty() {
            return found;
        }
        for (sink, (name, written, failed)) in sinks.iter_mut().zip(self.counts.iter()) {
            let (ok, lost) = sink.write(batch);
            if lost > 0 {
                tracing::warn!(sink = %name, lost, "the access log sink failed; events were lost");
            }
            written.fetch_add(ok, Ordering::Relaxed);
            failed.fetch_add(lost, Ordering::Relaxed);
        }
        for event in batch.events.drain(..) {
            self.recycle(event);
        }
        true
    }
}

/// Events as JSON lines, one after the other, with where each ends; and the events.
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    ends: Vec<usize>,
    /// Boxed as they came: the boxes go back to the request path for reuse.
    #[allow(clippy::vec_box)]
    events: Vec<Box<AccessEvent>>,
}

impl Batch {
    /// Empties the batch, keeping its buffers unless a burst made them large.
    fn clear(&mut self) {
        const KEPT_BYTES: usize = 1 << 20;
        const KEPT_EVENTS: usize = 4096;
        if self.text.capacity() > KEPT_BYTES {
            *self = Batch::default();
        }
        self.text.clear();
        self.ends.clear();
        self.events.clear();
        self.events.shrink_to(KEPT_EVENTS);
    }

    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| &self.text[start..end])
    }

    fn len(&self) -> u64 {
        self.ends.len() as u64
    }
}

/// An open sink.
enum Sink {
    Stdout(io::Stdout),
    File(FileSink),
    Http(Box<Poster>),
    Events(Box<dyn EventSink>),
}

impl Sink {
    fn open(sink: &AccessLogSink) -> io::Result<Sink> {
        Ok(match sink {
            AccessLogSink::Stdout => Sink::Stdout(io::stdout()),
            AccessLogSink::File { path, max_bytes, keep } => Sink::File(FileSink::open(path, *max_bytes, *keep)?),
            AccessLogSink::Http { url } => Sink::Http(Box::new(Poster::new(url.clone(), "application/x-ndjson")?)),
            AccessLogSink::Store => return Err(io::Error::other("the `store` sink is opened by its provider")),
        })
    }

    /// Writes `batch`: returns how many events were written and how many were lost.
    fn write(&mut self, batch: &Batch) -> (u64, u64) {
        let result = match self {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(&batch.text).and_then(|()| out.flush())
            }
            Sink::File(file) => return file.write(batch),
            Sink::Http(http) => http.post(batch.text.clone()),
            Sink::Events(sink) => sink.write(&batch.events),
        };
        match result {
            Ok(()) => (batch.len(), 0),
            Err(error) => {
                tracing::debug!(%error, "access log sink error");
                (0, batch.len())
            }
        }
    }
}

/// A file, rotated when it would grow past `max_bytes`.
struct FileSink {
    out: BufWriter<File>,
    path: PathBuf,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl FileSink {
    fn open(path: &std::path::Path, max_bytes: u64, keep: u32) -> io::Result<FileSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(FileSink { out: BufWriter::with_capacity(64 * 1024, file), path: path.to_owned(), size, max_bytes, keep })
    }

    fn write(&mut self, batch: &Batch) -> (u64, u64) {
        let (mut written, mut lost) = (0, 0);
        if self.size + batch.text.len() as u64 <= self.max_bytes {
            // No rotation within the batch: it goes in one write, past the buffer.
            let result = self.out.write_all(&batch.text).and_then(|()| self.out.flush());
            if result.is_err() {
                return (0, batch.len());
            }
            self.size += batch.text.len() as u64;
            return (batch.len(), 0);
        }
        for line in batch.lines() {
            match self.write_line(line) {
                Ok(()) => written += 1,
                Err(_) => lost += 1,
            }
        }
        if self.out.flush().is_err() {
            // What sat in the buffer is gone with the error; count the batch as lost.
            return (0, batch.len());
        }
        (written, lost)
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.out.flush()?;
            rotate(&self.path, self.keep)?;
            let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.out = BufWriter::with_capacity(64 * 1024, file);
            self.size = 0;
        }
        self.out.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// Shifts `path.1` ... to `path.2` ..., dropping the oldest beyond `keep`, and renames the
/// current file to `path.1`. With `keep` 0 the full file is simply removed.
fn rotate(path: &std::path::Path, keep: u32) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn event(path: &str) -> Box<AccessEvent> {
        Box::new(AccessEvent {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123),
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            method: Method::GET,
            head: HeadText::new(b"r1", Some(b"api.test"), path),
            path_template: Some("/users/{id}".into()),
            route: Some("users".into()),
            service: Some("users".into()),
            target: Some(Authority::from_static("127.0.0.1:9001")),
            consumer: None,
            team: None,
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration: Duration::from_micros(1_500),
            upstream: Some(Duration::from_millis(1)),
            gateway: Duration::from_micros(250),
            retries: 0,
            error: None,
            ai: None,
        })
    }

    /// An access log writing to `access.log` in a new folder, rotated past `max_bytes`.
    fn file_log(max_bytes: u64, keep: u32) -> (tempfile::TempDir, PathBuf, Arc<AccessLog>) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("access.log");
        let sink = AccessLogSink::File { path: path.clone(), max_bytes, keep };
        let log = AccessLog::start(&AccessLogSettings { sinks: vec![sink], queue: 100 }, None, None).expect("start");
        (dir, path, log)
    }

    #[test]
    fn events_are_written_as_json_lines_and_files_rotate() {
        let (dir, path, log) = file_log(1_000, 2);
        for i in 0..12 {
            log.push(event(&format!("/users/{i}")));
        }
        log.stop();
        assert_eq!(log.report().sinks[0].written, 12);
        let current = std::fs::read_to_string(&path).expect("current file");
        let first: serde_json::Value = serde_json::from_str(current.lines().next().expect("a line")).expect("JSON");
        assert_eq!(first["path_template"], "/users/{id}");
        assert_eq!(first["time"], "2025-11-24T16:00:00.123Z");
        assert_eq!(first["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!((first["duration_ms"].as_f64(), first["upstream_ms"].as_f64()), (Some(1.5), Some(1.0)));
        assert_eq!((first["gateway_ms"].as_f64(), first["retries"].as_u64()), (Some(0.25), Some(0)));
        assert_eq!((first["client_ip"].as_str(), first["method"].as_str()), (Some("127.0.0.1"), Some("GET")));
        assert_eq!(
            (first["status"].as_u64(), first["bytes_in"].as_u64(), first["bytes_out"].as_u64()),
            (Some(200), Some(0), Some(12))
        );
        assert_eq!(
            (first["consumer"].clone(), first["error"].clone()),
            (serde_json::Value::Null, serde_json::Value::Null)
        );
        // Each line is about 380 bytes: two per file, the oldest rotated away.
        let rotated = |n| dir.path().join(format!("access.log.{n}"));
        assert!(rotated(1).exists() && rotated(2).exists() && !rotated(3).exists());
        for file in [path, rotated(1), rotated(2)] {
            let size = std::fs::metadata(&file).expect("file").len();
            assert!(size <= 1_000, "{} is {size} bytes", file.display());
        }
        let last = current.lines().last().expect("a line");
        assert!(last.contains("\"/users/11\""), "{last}");
    }

    #[test]
    fn batch_after_batch_each_event_is_written_once_in_order() {
        let (_dir, path, log) = file_log(1 << 20, 1);
        for i in 0..3 {
            log.push(event(&format!("/users/{i}")));
        }
        // The writer drains these before the next ones come: two batches.
        std::thread::sleep(FLUSH_INTERVAL * 5);
        assert_eq!(log.report().sinks[0].written, 3);
        for i in 3..5 {
            log.push(event(&format!("/users/{i}")));
        }
        log.stop();
        let text = std::fs::read_to_string(&path).expect("file");
        let paths: Vec<String> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON")["path"].to_string())
            .collect();
        assert_eq!(paths, (0..5).map(|i| format!("\"/users/{i}\"")).collect::<Vec<_>>());
        assert_eq!(log.report().sinks[0].written, 5);
    }

    #[test]
    fn each_line_has_its_own_events_names() {
        let (_dir, path, log) = file_log(1 << 20, 1);
        let (acme, orders): (Arc<str>, Arc<str>) = ("acme".into(), "orders".into());
        let named = |consumer: Option<&Arc<str>>, route: Option<&Arc<str>>| {
            let mut event = event("/x");
            (event.consumer, event.route) = (consumer.cloned(), route.cloned());
            event
        };
        let expected =
            [(None, None), (Some(&acme), None), (Some(&acme), None), (Some(&acme), Some(&orders)), (None, None)];
        for (consumer, route) in expected {
            log.push(named(consumer, route));
        }
        log.stop();
        let text = std::fs::read_to_string(&path).expect("the log");
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
        let seen: Vec<_> = lines.iter().map(|l| (l["consumer"].as_str(), l["route"].as_str())).collect();
        let expected: Vec<_> = expected.iter().map(|(c, r)| (c.map(|c| &**c), r.map(|r| &**r))).collect();
        assert_eq!(seen, expected);
        assert!(lines.iter().all(|l| l["service"] == "users" && l["team"].is_null()));
    }

    #[test]
    fn written_events_come_back_blank_for_the_next_requests() {
        let log = AccessLog::start(&AccessLogSettings { sinks: vec![], queue: 100 }, None, None).expect("start");
        let mut used = event("/users/1");
        (used.consumer, used.error, used.retries) = (Some("acme".into()), Some("upstream_timeout"), 2);
        log.push(used);
        log.push(event(&format!("/{}", "x".repeat(KEPT_HEAD_BYTES))));
        log.stop();

        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        let reused = log.event(at, 7);
        assert!(reused.head.bytes.capacity() > 0, "the first event's buffer is kept");
        assert_eq!(format!("{reused:?}"), format!("{:?}", AccessEvent::new(at, 7)), "nothing of the last request");
        assert_eq!(log.event(at, 8).head.bytes.capacity(), 0, "a buffer grown by a long path is not kept");
    }

    #[test]
    fn addresses_and_statuses_are_written_in_full() {
        for (octets, text) in
            [([0, 0, 0, 0], "0.0.0.0"), ([255, 255, 255, 255], "255.255.255.255"), ([10, 0, 100, 9], "10.0.100.9")]
        {
            let mut out = b"x".to_vec();
            ipv4(&mut out, octets);
            assert_eq!(out, [b"x", text.as_bytes()].concat());
        }
        for (code, text) in [(200, "200"), (101, "101"), (999, "999"), (0, "0"), (42, "42"), (1000, "1000")] {
            let mut out = Vec::new();
            status(&mut out, code);
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn plain_strings_are_told_apart_from_those_that_need_escaping() {
        // Each kind of byte that needs care, at every place of an eight-byte word and in
        // the remainder after the words.
        for special in [b'"', b'\\', b'\n', 0x00, 0x1f, 0x7f, 0x80, 0xff] {
            for at in 0..19 {
                let mut bytes = b"abcdefghijklmnopqrs".to_vec();
                bytes[at] = special;
                assert!(!is_plain(&bytes), "{special:#x} at {at}");
            }
        }
        for plain in [&b""[..], b"GET", b"/users/{id}", b" !#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~ 0123456789"] {
            assert!(is_plain(plain), "{}", String::from_utf8_lossy(plain));
        }
    }

    #[test]
    fn strings_are_escaped_and_made_valid_utf8() {
        let mut out = Vec::new();
        string(&mut out, b"a\"b\\c\n\x01d\xffe");
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(text, "\"a\\\"b\\\\c\\u000a\\u0001d\u{fffd}e\"");
        assert_eq!(serde_json::from_str::<String>(&text).ok().as_deref(), Some("a\"b\\c\n\u{1}d\u{fffd}e"));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().expect("dir");
        let sink = AccessLogSink::File { path: dir.path().join("a.log"), max_bytes: u64::MAX, keep: 1 };
        let log = AccessLog::start(&AccessLogSettings { sinks: vec![sink], queue: 4 }, None, None).expect("start");
        // Faster than the writer drains (it sleeps between batches).
        for _ in 0..1_000 {
            log.push(event("/"));
        }
        log.stop();
        let report = log.report();
        assert_eq!(report.sinks[0].written + report.dropped, 1_000, "{report:?}");
        assert!(report.dropped > 0, "{report:?}");
    }

    /// A collector that answers the first POST with 503 and takes the rest.
    async fn collector() -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicU64>) {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/ingest", listener.local_addr().expect("address"));
        let (received, posts) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicU64::new(0)));
        let (kept, counted) = (received.clone(), posts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (kept, counted) = (kept.clone(), counted.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let (kept, counted) = (kept.clone(), counted.clone());
                        async move {
                            let kind = request.headers().get("content-type").cloned();
                            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let status = if counted.fetch_add(1, Ordering::SeqCst) == 0 { 503 } else { 200 };
                            if status == 200 && kind.as_ref().is_some_and(|k| k == "application/x-ndjson") {
                                kept.lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(String::from_utf8_lossy(&body).into_owned());
                            }
                            let response = http::Response::builder()
                                .status(status)
                                .body(http_body_util::Empty::<bytes::Bytes>::new());
                            Ok::<_, std::convert::Infallible>(response.unwrap_or_default())
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        (url, received, posts)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_are_posted_to_a_collector_and_retried() {
        let (url, received, posts) = collector().await;
        let sink = AccessLogSink::Http { url: url.parse().expect("URL") };
        assert_eq!(sink.name(), url);
        let log = AccessLog::start(&AccessLogSettings { sinks: vec![sink], queue: 100 }, None, None).expect("start");
        for i in 0..5 {
            log.push(event(&format!("/users/{i}")));
        }
        let stopping = log.clone();
        tokio::task::spawn_blocking(move || stopping.stop()).await.expect("stop");
        let bodies = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let lines: Vec<serde_json::Value> =
            bodies.iter().flat_map(|b| b.lines()).map(|l| serde_json::from_str(l).expect("JSON line")).collect();
        let paths: Vec<&str> = lines.iter().filter_map(|l| l["path"].as_str()).collect();
        assert_eq!(paths, ["/users/0", "/users/1", "/users/2", "/users/3", "/users/4"], "each event once, in order");
        assert!(posts.load(Ordering::SeqCst) >= 2, "the refused batch was sent again");
        assert_eq!((log.report().sinks[0].written, log.report().sinks[0].failed), (5, 0));
    }

    #[test]
    fn a_collector_that_keeps_failing_loses_the_batch_and_says_so() {
        // Nothing listens on port 9 (discard) here: every try is refused.
        let sink = AccessLogSink::Http { url: "http://127.0.0.1:9/ingest".parse().expect("URL") };
        let log = AccessLog::start(&AccessLogSettings { sinks: vec![sink], queue: 100 }, None, None).expect("start");
        log.push(event("/"));
        log.stop();
        assert_eq!((log.report().sinks[0].written, log.report().sinks[0].failed), (0, 1));
    }
}
