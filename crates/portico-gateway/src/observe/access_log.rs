//! The access log: one event per request, written off the request path.
//!
//! A finished request pushes its event into a bounded lock-free queue: a few atomic
//! operations, no lock, no system call, no wake-up. A writer thread drains the queue in
//! batches every [`FLUSH_INTERVAL`] and writes JSON lines to the sink. When the queue is
//! full the event is dropped, never the request slowed, and the drop is counted (exposed on
//! `/metrics` and in `/api/v1/status`). On shutdown the writer drains what is queued.

use crossbeam_queue::ArrayQueue;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
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

/// One request, as the access log records it.
#[derive(Debug, Serialize)]
pub struct AccessEvent {
    /// When the request head arrived (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: String,
    pub trace_id: String,
    pub client_ip: String,
    pub method: String,
    pub host: String,
    pub path: String,
    /// The route's path pattern that matched (`/users/{id}`), bounded unlike `path`.
    pub path_template: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    /// The upstream target (`host:port`) that answered, after retries.
    pub target: Option<String>,
    pub consumer: Option<Arc<str>>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// From the request head to the last byte of the response.
    pub duration_ms: f64,
    /// Waiting for upstream response heads, over all tries.
    pub upstream_ms: Option<f64>,
    /// Portico's own time before the response head: `duration` to the head minus `upstream`.
    pub gateway_ms: f64,
    pub retries: u32,
    /// Why Portico answered itself with an error (`upstream_timeout`, `rate_limited`, ...).
    pub error: Option<&'static str>,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    let at = time::OffsetDateTime::from(*time);
    let millis = at.millisecond();
    let at = at.replace_nanosecond(u32::from(millis) * 1_000_000).unwrap_or(at);
    let text = at.format(&time::format_description::well_known::Rfc3339).map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
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
        let handle = std::thread::Builder::new().name("portico-access-log".into()).spawn(move || loop {
            let stopping = writer.stopping.load(Ordering::Acquire);
            writer.drain(&mut sink);
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

    fn drain(&self, sink: &mut Sink) {
        let mut line = Vec::with_capacity(512);
        let (mut written, mut failed) = (0, 0);
        while let Some(event) = self.queue.pop() {
            line.clear();
            if serde_json::to_writer(&mut line, &*event).is_err() {
                failed += 1;
                continue;
            }
            line.push(b'\n');
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
            request_id: "r1".into(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            client_ip: "127.0.0.1".into(),
            method: "GET".into(),
            host: "api.test".into(),
            path: path.into(),
            path_template: Some("/users/{id}".into()),
            route: Some("users".into()),
            service: Some("users".into()),
            target: Some("127.0.0.1:9001".into()),
            consumer: None,
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration_ms: 1.5,
            upstream_ms: Some(1.0),
            gateway_ms: 0.25,
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
        // Each line is about 400 bytes: two per file, the oldest rotated away.
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
