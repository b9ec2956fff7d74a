//! The access log: one event per request, written off the request path.
//!
//! A finished request pushes its event into a bounded lock-free queue: a few atomic
//! operations, no lock, no system call, no wake-up. A writer thread drains the queue in
//! batches every [`FLUSH_INTERVAL`] and writes JSON lines to the sink. When the queue is
//! full the event is dropped, never the request slowed, and the drop is counted (exposed on
//! `/metrics` and in `/api/v1/status`). On shutdown the writer drains what is queued.

use super::Text;
use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http::{HeaderValue, Method, Uri};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// How often the writer drains the queue.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Where access events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogSink {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines in a file, rotated when it reaches `max_bytes`: the full file is renamed
    /// `<path>.1` (older ones shift to `.2` ... `.<keep>`) and a new one is started.
    File { path: PathBuf, max_bytes: u64, keep: u32 },
}

/// Settings of the access log.
#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    pub sink: AccessLogSink,
    /// Events that may wait for the writer; more are dropped and counted.
    pub queue: usize,
}

/// One request, as the access log records it. Values are kept as the request path has them
/// (shared buffers, numbers); the writer thread turns them into text.
#[derive(Debug)]
pub struct AccessEvent {
    /// When the request head arrived.
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub trace_id: u128,
    pub client_ip: IpAddr,
    pub method: Method,
    /// The `Host` header (or the authority of an HTTP/2 request), as sent.
    pub host: Option<HeaderValue>,
    /// The request path, without the query (which may carry credentials).
    pub uri: Uri,
    /// The route's path pattern that matched (`/users/{id}`), bounded unlike the path.
    pub path_template: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    /// The upstream target (`host:port`) that answered, after retries.
    pub target: Option<Authority>,
    pub consumer: Option<Arc<str>>,
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
}

impl AccessEvent {
    /// Appends the event as one JSON line.
    fn write_json(&self, out: &mut Vec<u8>, clock: &mut Clock) {
        out.extend_from_slice(b"{\"time\":\"");
        clock.write(self.time, out);
        out.extend_from_slice(b"\",\"request_id\":");
        string(out, self.request_id.as_bytes());
        out.extend_from_slice(b",\"trace_id\":\"");
        let mut hex = [0u8; 32];
        super::trace::hex(&self.trace_id.to_be_bytes(), &mut hex);
        out.extend_from_slice(&hex);
        out.extend_from_slice(b"\",\"client_ip\":\"");
        match self.client_ip {
            IpAddr::V4(ip) => {
                let mut text = Text::default();
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b".");
                    }
                    text.number(u64::from(octet));
                }
                out.extend_from_slice(text.as_bytes());
            }
            IpAddr::V6(ip) => {
                let _ = write!(out, "{ip}");
            }
        }
        out.extend_from_slice(b"\",\"method\":");
        string(out, self.method.as_str().as_bytes());
        out.extend_from_slice(b",\"host\":");
        optional(out, self.host.as_ref().map(HeaderValue::as_bytes));
        out.extend_from_slice(b",\"path\":");
        string(out, self.uri.path().as_bytes());
        out.extend_from_slice(b",\"path_template\":");
        optional(out, self.path_template.as_deref().map(str::as_bytes));
        out.extend_from_slice(b",\"route\":");
        optional(out, self.route.as_deref().map(str::as_bytes));
        out.extend_from_slice(b",\"service\":");
        optional(out, self.service.as_deref().map(str::as_bytes));
        out.extend_from_slice(b",\"target\":");
        optional(out, self.target.as_ref().map(|t| t.as_str().as_bytes()));
        out.extend_from_slice(b",\"consumer\":");
        optional(out, self.consumer.as_deref().map(str::as_bytes));
        let mut numbers = Text::default();
        numbers.push(b",\"status\":");
        numbers.number(u64::from(self.status));
        numbers.push(b",\"bytes_in\":");
        numbers.number(self.bytes_in);
        numbers.push(b",\"bytes_out\":");
        numbers.number(self.bytes_out);
        numbers.push(b",\"duration_ms\":");
        numbers.millis(self.duration);
        out.extend_from_slice(numbers.as_bytes());
        let mut numbers = Text::default();
        numbers.push(b",\"upstream_ms\":");
        match self.upstream {
            Some(upstream) => numbers.millis(upstream),
            None => numbers.push(b"null"),
        }
        numbers.push(b",\"gateway_ms\":");
        numbers.millis(self.gateway);
        numbers.push(b",\"retries\":");
        numbers.number(u64::from(self.retries));
        numbers.push(b",\"error\":");
        out.extend_from_slice(numbers.as_bytes());
        optional(out, self.error.map(str::as_bytes));
        out.extend_from_slice(b"}\n");
    }
}

/// A JSON string; bytes that are not UTF-8 become U+FFFD.
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Names, paths and ids are plain ASCII nearly always: copied as they are.
    if bytes.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'"' && *b != b'\\') {
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

fn optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => string(out, bytes),
        None => out.extend_from_slice(b"null"),
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
    /// Events dropped because the queue was full.
    dropped: AtomicU64,
    /// Events written to the sink.
    written: AtomicU64,
    /// Events lost because the sink failed (a full disk, a closed stdout).
    failed: AtomicU64,
    stopping: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The access log's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AccessLogReport {
    pub written: u64,
    pub dropped: u64,
    pub failed: u64,
}

impl AccessLog {
    /// Opens the sink and starts the writer thread.
    pub fn start(settings: &AccessLogSettings) -> io::Result<Arc<AccessLog>> {
        let mut sink = Sink::open(&settings.sink)?;
        let log = Arc::new(AccessLog {
            queue: ArrayQueue::new(settings.queue.max(1)),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        let writer = log.clone();
        let mut clock = Clock::default();
        let handle = std::thread::Builder::new().name("portico-access-log".into()).spawn(move || loop {
            let stopping = writer.stopping.load(Ordering::Acquire);
            writer.drain(&mut sink, &mut clock);
            if stopping {
                return;
            }
            std::thread::park_timeout(FLUSH_INTERVAL);
        })?;
        *log.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(log)
    }

    /// Queues `event`, or counts it as dropped when the queue is full.
    pub fn push(&self, event: Box<AccessEvent>) {
        if self.queue.push(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn report(&self) -> AccessLogReport {
        AccessLogReport {
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued and stops the writer.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }

    fn drain(&self, sink: &mut Sink, clock: &mut Clock) {
        let mut line = Vec::with_capacity(512);
        let (mut written, mut failed) = (0, 0);
        while let Some(event) = self.queue.pop() {
            line.clear();
            event.write_json(&mut line, clock);
            match sink.write(&line) {
                Ok(()) => written += 1,
                Err(_) => failed += 1,
            }
        }
        if let Err(error) = sink.flush() {
            tracing::warn!(%error, "cannot write the access log");
        }
        self.written.fetch_add(written, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
    }
}

/// An open sink.
enum Sink {
    Stdout(io::Stdout),
    File { out: BufWriter<File>, path: PathBuf, size: u64, max_bytes: u64, keep: u32 },
}

impl Sink {
    fn open(sink: &AccessLogSink) -> io::Result<Sink> {
        Ok(match sink {
            AccessLogSink::Stdout => Sink::Stdout(io::stdout()),
            AccessLogSink::File { path, max_bytes, keep } => {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                let size = file.metadata()?.len();
                Sink::File { out: BufWriter::new(file), path: path.clone(), size, max_bytes: *max_bytes, keep: *keep }
            }
        })
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.lock().write_all(line),
            Sink::File { out, path, size, max_bytes, keep } => {
                if *size > 0 && *size + line.len() as u64 > *max_bytes {
                    out.flush()?;
                    rotate(path, *keep)?;
                    *out = BufWriter::new(OpenOptions::new().create(true).append(true).open(&*path)?);
                    *size = 0;
                }
                out.write_all(line)?;
                *size += line.len() as u64;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.lock().flush(),
            Sink::File { out, .. } => out.flush(),
        }
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

    fn event(path: &str) -> Box<AccessEvent> {
        Box::new(AccessEvent {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123),
            request_id: HeaderValue::from_static("r1"),
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            method: Method::GET,
            host: Some(HeaderValue::from_static("api.test")),
            uri: path.parse().expect("path"),
            path_template: Some("/users/{id}".into()),
            route: Some("users".into()),
            service: Some("users".into()),
            target: Some(Authority::from_static("127.0.0.1:9001")),
            consumer: None,
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration: Duration::from_micros(1_500),
            upstream: Some(Duration::from_millis(1)),
            gateway: Duration::from_micros(250),
            retries: 0,
            error: None,
        })
    }

    #[test]
    fn events_are_written_as_json_lines_and_files_rotate() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("access.log");
        let sink = AccessLogSink::File { path: path.clone(), max_bytes: 1_000, keep: 2 };
        let log = AccessLog::start(&AccessLogSettings { sink, queue: 100 }).expect("start");
        for i in 0..12 {
            log.push(event(&format!("/users/{i}")));
        }
        log.stop();
        assert_eq!(log.report().written, 12);
        let current = std::fs::read_to_string(&path).expect("current file");
        let first: serde_json::Value = serde_json::from_str(current.lines().next().expect("a line")).expect("JSON");
        assert_eq!(first["path_template"], "/users/{id}");
        assert_eq!(first["time"], "2025-11-24T16:00:00.123Z");
        assert_eq!(first["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!((first["duration_ms"].as_f64(), first["upstream_ms"].as_f64()), (Some(1.5), Some(1.0)));
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
        let log = AccessLog::start(&AccessLogSettings { sink, queue: 4 }).expect("start");
        // Faster than the writer drains (it sleeps between batches).
        for _ in 0..1_000 {
            log.push(event("/"));
        }
        log.stop();
        let report = log.report();
        assert_eq!(report.written + report.dropped, 1_000, "{report:?}");
        assert!(report.dropped > 0, "{report:?}");
    }
}
