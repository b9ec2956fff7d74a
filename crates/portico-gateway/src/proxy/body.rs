//! Bodies in both directions. Both stream frame by frame: nothing is buffered whole.
//!
//! [`RequestBody`] carries the client's body upstream, enforcing the route's size limit and
//! recording progress for the write timeout. [`ResponseBody`] is either a small body Portico
//! made (errors, mocks) or the upstream's body with a read-idle timeout.

use super::stamp::Stamp;
use super::tunnel::Tunnel;
use crate::observe::Trail;
use crate::server::{ClientBody, HeadLines};
use crate::upstream::{InFlightRequest, UpstreamBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// Why a body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than allowed")]
    TooLarge,
    #[error("the upstream stopped sending the response body")]
    ReadTimeout,
    /// The upstream broke off the response body or sent one that is not valid.
    #[error("{0}")]
    Upstream(String),
    /// The client broke off the request body or sent one that is not valid.
    #[error("{0}")]
    Client(String),
}

/// How far the request body has got, shared between the body (which records it) and the
/// proxy (which decides from it whether the upstream is late).
pub struct Progress {
    start: Instant,
    /// Milliseconds after `start` when the last chunk went through.
    last_chunk_ms: AtomicU64,
    done: AtomicBool,
    /// The body is waiting for the client, not for the upstream to take more.
    waiting_on_client: AtomicBool,
    too_large: AtomicBool,
    /// Body bytes read from the client so far.
    received: AtomicU64,
    /// A copy of the body for a retry, while it stays under the replay limit.
    kept: Option<Mutex<Kept>>,
}

struct Kept {
    chunks: Vec<Bytes>,
    size: u64,
    limit: u64,
    overflowed: bool,
}

impl Progress {
    fn new(keep: Option<u64>) -> Progress {
        Progress {
            start: Instant::now(),
            last_chunk_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
            waiting_on_client: AtomicBool::new(false),
            too_large: AtomicBool::new(false),
            received: AtomicU64::new(0),
            kept: keep.map(|limit| Mutex::new(Kept { chunks: Vec::new(), size: 0, limit, overflowed: false })),
        }
    }

    fn keep(&self, data: &Bytes) {
        let Some(kept) = &self.kept else { return };
        let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.overflowed {
            return;
        }
        kept.size += data.len() as u64;
        if kept.size > kept.limit {
            kept.overflowed = true;
            kept.chunks = Vec::new();
        } else {
            kept.chunks.push(data.clone());
        }
    }

    /// The whole body again, if it was read to the end and kept.
    pub fn replay(&self) -> Option<Vec<Bytes>> {
        if !self.done.load(Ordering::Relaxed) {
            return None;
        }
        let kept = self.kept.as_ref()?.lock().unwrap_or_else(|p| p.into_inner());
        (!kept.overflowed).then(|| kept.chunks.clone())
    }

    fn touch(&self) {
        self.last_chunk_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When the request stops being on time: `write` after the last chunk while the body is
    /// flowing, `read` after its end once it is complete.
    pub fn deadline(&self, write: Duration, read: Duration) -> Instant {
        let last = self.start + Duration::from_millis(self.last_chunk_ms.load(Ordering::Relaxed));
        if self.done.load(Ordering::Relaxed) {
            last + read
        } else {
            last + write
        }
    }

    pub fn waiting_on_client(&self) -> bool {
        !self.done.load(Ordering::Relaxed) && self.waiting_on_client.load(Ordering::Relaxed)
    }

    pub fn too_large(&self) -> bool {
        self.too_large.load(Ordering::Relaxed)
    }

    /// Body bytes read from the client so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Counts bytes the client sent after the body, through a tunnel.
    pub(crate) fn add_received(&self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The client's request body on its way upstream (or a kept copy of it, for a retry).
pub struct RequestBody {
    inner: Option<ClientBody>,
    /// A replayed body's chunks, last first.
    replay: Vec<Bytes>,
    limit: u64,
    received: u64,
    progress: Option<Arc<Progress>>,
}

impl RequestBody {
    /// Wraps a body; `None` for `limit` means no limit. With `keep`, a body up to that size
    /// is kept for a retry. Bodies that are known to be empty get no progress tracking, which
    /// saves an allocation on most GETs.
    pub fn new(body: ClientBody, limit: Option<u64>, keep: Option<u64>) -> (RequestBody, Option<Arc<Progress>>) {
        if body.is_end_stream() {
            return (RequestBody::replayed(Vec::new()), None);
        }
        let progress = Arc::new(Progress::new(keep));
        let body = RequestBody {
            inner: Some(body),
            replay: Vec::new(),
            limit: limit.unwrap_or(u64::MAX),
            received: 0,
            progress: Some(progress.clone()),
        };
        (body, Some(progress))
    }

    /// A body made of kept chunks.
    pub fn replayed(mut chunks: Vec<Bytes>) -> RequestBody {
        chunks.reverse();
        RequestBody { inner: None, replay: chunks, limit: u64::MAX, received: 0, progress: None }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(this.replay.pop().map(|c| Ok(Frame::data(c))));
        };
        let progress = this.progress.as_deref();
        let polled = Pin::new(inner).poll_frame(cx);
        if let Some(p) = progress {
            p.waiting_on_client.store(polled.is_pending(), Ordering::Relaxed);
        }
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.limit {
                        if let Some(p) = progress {
                            p.too_large.store(true, Ordering::Relaxed);
                        }
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                if let Some(p) = progress {
                    if let Some(data) = frame.data_ref() {
                        p.received.store(this.received, Ordering::Relaxed);
                        p.keep(data);
                    }
                    p.touch();
                    // A body of known length ends with its last byte; the sender may not ask
                    // for more after it.
                    if this.inner.as_ref().is_some_and(Body::is_end_stream) {
                        p.done.store(true, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                if let Some(p) = progress {
                    p.touch();
                    p.done.store(true, Ordering::Relaxed);
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().map_or(self.replay.is_empty(), |b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(body) => body.size_hint(),
            None => SizeHint::with_exact(self.replay.iter().map(|c| c.len() as u64).sum()),
        }
    }
}

/// A response body for the client.
pub struct ResponseBody {
    kind: Kind,
    /// What the request leaves behind, finished when the body is dropped, and the headers
    /// to stamp on the head.
    ending: Option<Box<Ending>>,
    /// Body bytes sent so far.
    sent: u64,
    /// The request's place in its service's bulkhead, freed with the body.
    permit: Option<OwnedSemaphorePermit>,
}

enum Kind {
    Full(Option<Bytes>),
    /// A body Portico makes as it goes (a translated AI stream).
    Boxed(Pin<Box<dyn Body<Data = Bytes, Error = BodyError> + Send>>),
    /// The upstream's body; it gives its connection back to the pool when it ends.
    Upstream {
        inner: UpstreamBody,
        idle: Duration,
        /// Made the first time the upstream makes the body wait, with when the last frame
        /// arrived (from then on); the timer is moved on only when it fires.
        timer: Option<(Pin<Box<Sleep>>, Instant)>,
        /// Counts the request against its target until the body is done with.
        _in_flight: Option<InFlightRequest>,
    },
    /// The empty body of a `101 Switching Protocols`; once it is dropped (the answer has
    /// been written), the tunnel runs on a task of its own.
    Tunnel {
        tunnel: Option<Tunnel>,
        in_flight: Option<InFlightRequest>,
    },
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody { kind: Kind::Full(Some(bytes).filter(|b| !b.is_empty())), ending: None, sent: 0, permit: None }
    }

    /// The whole body, when it is one piece made by Portico.
    pub(crate) fn full_bytes(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Full(bytes) => bytes.as_ref(),
            _ => None,
        }
    }

    /// A body made as it goes.
    pub(crate) fn boxed(body: impl Body<Data = Bytes, Error = BodyError> + Send + 'static) -> ResponseBody {
        ResponseBody { kind: Kind::Boxed(Box::pin(body)), ending: None, sent: 0, permit: None }
    }

    /// The upstream's body; it fails if no data arrives for `idle`.
    pub(crate) fn upstream(inner: UpstreamBody, idle: Duration, in_flight: Option<InFlightRequest>) -> ResponseBody {
        ResponseBody {
            kind: Kind::Upstream { inner, idle, timer: None, _in_flight: in_flight },
            ending: None,
            sent: 0,
            permit: None,
        }
    }

    /// The body of a `101 Switching Protocols` answer, which opens `tunnel`.
    pub(crate) fn tunnel(tunnel: Tunnel, in_flight: Option<InFlightRequest>) -> ResponseBody {
        ResponseBody { kind: Kind::Tunnel { tunnel: Some(tunnel), in_flight }, ending: None, sent: 0, permit: None }
    }

    /// Keeps the request's bulkhead place until the body is dropped.
    pub(crate) fn hold(&mut self, permit: OwnedSemaphorePermit) {
        self.permit = Some(permit);
    }

    /// Finishes `trail` when the body is done with, and carries `stamp` to the head.
    pub(crate) fn finish_with(&mut self, trail: Trail, stamp: Stamp) {
        self.ending = Some(Box::new(Ending { trail, stamp: Some(stamp) }));
    }

    /// The headers to stamp on the head, for a response that is not written by Portico's
    /// own HTTP/1.1 engine (which writes them from here, see [`HeadLines`]).
    pub(crate) fn take_stamp(&mut self) -> Option<Stamp> {
        self.ending.as_mut().and_then(|ending| ending.stamp.take())
    }

    fn stamp(&self) -> Option<&Stamp> {
        self.ending.as_ref().and_then(|ending| ending.stamp.as_ref())
    }
}

/// What a response carries from the pipeline that made it.
struct Ending {
    trail: Trail,
    stamp: Option<Stamp>,
}

impl HeadLines for ResponseBody {
    fn replaces(&self, name: &http::HeaderName) -> bool {
        self.stamp().is_some_and(|stamp| stamp.replaces(name))
    }

    fn write_lines(&self, out: &mut Vec<u8>) {
        if let Some(stamp) = self.stamp() {
            stamp.write_lines(out);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Kind::Tunnel { tunnel, in_flight } = &mut self.kind {
            if let (Some(tunnel), Ok(runtime)) = (tunnel.take(), tokio::runtime::Handle::try_current()) {
                // What the request holds (its place in flight on the target, its bulkhead
                // place, its trail) is held by the tunnel until it closes.
                let held = (in_flight.take(), self.permit.take());
                let mut trail = self.ending.take().map(|ending| ending.trail);
                // A handshake has no body, so nothing counts the client's bytes yet.
                let from_client =
                    trail.as_mut().map(|t| t.bytes_in.get_or_insert_with(|| Arc::new(Progress::new(None))).clone());
                runtime.spawn(async move {
                    let sent = tunnel.run(from_client).await;
                    drop(held);
                    if let Some(trail) = trail {
                        trail.finish(sent);
                    }
                });
                return;
            }
        }
        if let Some(ending) = self.ending.take() {
            // The body goes first: a body made as it goes may still have to leave what
            // it learned in the trail (an AI stream's usage).
            self.kind = Kind::Full(None);
            ending.trail.finish(self.sent);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.as_mut().poll_inner(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            self.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Tunnel { .. } => true,
            Kind::Boxed(body) => body.is_end_stream(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Tunnel { .. } => SizeHint::with_exact(0),
            Kind::Boxed(body) => body.size_hint(),
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl ResponseBody {
    fn poll_inner(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Tunnel { .. } => Poll::Ready(None),
            Kind::Boxed(body) => body.as_mut().poll_frame(cx),
            Kind::Upstream { inner, idle, timer, .. } => {
                match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        if let Some((_, last_frame)) = timer {
                            *last_frame = Instant::now();
                        }
                        Poll::Ready(frame)
                    }
                    Poll::Pending => {
                        // The timer is made only when the upstream makes us wait, so bodies that
                        // arrive in one go never pay for it; and it is not moved with every frame
                        // (a stream has many) but only when it fires before its time.
                        let (timer, last_frame) = timer.get_or_insert_with(|| {
                            let now = Instant::now();
                            (Box::pin(tokio::time::sleep_until(now + *idle)), now)
                        });
                        loop {
                            ready!(timer.as_mut().poll(cx));
                            let deadline = *last_frame + *idle;
                            if deadline <= Instant::now() {
                                return Poll::Ready(Some(Err(BodyError::ReadTimeout)));
                            }
                            timer.as_mut().reset(deadline);
                        }
                    }
                }
            }
        }
    }
}
