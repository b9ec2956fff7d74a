//! Portico's HTTP/1.1 engine for client connections.
//!
//! A connection's own task reads each request head, calls the handler, and writes the
//! response, all in one loop: no task per request and no channel for the request body, which
//! the handler reads straight from the connection ([`ClientBody`]). Heads are read strictly
//! (`request`): whatever could be read two ways is refused, as request smuggling starts there.
//!
//! - Keep-alive and pipelining: bytes after a request stay in the read buffer for the next.
//! - A head must arrive within the header timeout once its first byte has (else `408`); a
//!   quiet keep-alive connection closes after the idle timeout, without a word.
//! - `Expect: 100-continue` is answered when the body is first read; a handler that answers
//!   without reading the body gets its answer sent, and the connection closed.
//! - A body left unread is read and dropped, up to [`MAX_DRAIN`], so that the connection can
//!   carry the next request; past that, the connection closes.
//! - A `101` answer to a request that asked to switch protocols hands the connection, with
//!   any bytes already read, to whoever holds the request's [`ClientUpgrade`].
//! - A connection that opens with HTTP/2's preface is handed back to the caller (h2c with
//!   prior knowledge).

mod body;
mod request;
mod response;

pub use body::ClientBody;
pub use response::HeadLines;

use crate::proxy::BodyError;
use crate::upstream::{chunked, Upgraded};
use bytes::{Buf, Bytes, BytesMut};
use http::header::CONNECTION;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use request::{Framing as RequestFraming, Refusal, RequestHead};
use response::{Framing, NoLines, Persistence};
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep};

/// Reads start with room for this many bytes; the room grows for bodies that fill it.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;
/// Body pieces at least this large are written from where they are, not copied.
const COPY_BELOW: usize = 16 * 1024;
/// An unread request body up to this size is read and dropped to keep the connection.
const MAX_DRAIN: u64 = 256 * 1024;
/// HTTP/2's connection preface (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client connection's byte stream: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The connection as the engine and the request body share it.
pub(crate) type SharedWire = Arc<Mutex<Wire>>;

fn lock(wire: &SharedWire) -> MutexGuard<'_, Wire> {
    // A panic while the lock was held leaves nothing half-done that matters here.
    wire.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What answers the requests of a connection.
pub trait Handler {
    type Body: Body<Data = Bytes, Error = BodyError> + HeadLines + Unpin;
    fn handle(&self, request: Request<ClientBody>) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// The limits a connection is served with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// How a connection ended.
pub enum Ended {
    Closed,
    /// The client opened with HTTP/2's preface: the connection, with what was read of it.
    Http2(SwitchedClient),
}

/// The client's side of a switch of protocols, once the `101` has been written.
#[derive(Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<oneshot::Receiver<SwitchedClient>>>>);

/// A client connection that switched protocols.
pub type SwitchedClient = Upgraded<Box<dyn Io>>;

impl ClientUpgrade {
    /// Waits for the connection; `None` if the `101` was never written.
    pub async fn connection(self) -> Option<SwitchedClient> {
        let receiver = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()?;
        receiver.await.ok()
    }
}

/// The connection, with what has been read from it and what is to be written.
pub(crate) struct Wire {
    io: Box<dyn Io>,
    read: BytesMut,
    /// The room the next read gets.
    read_size: usize,
    write: Vec<u8>,
    written: usize,
    /// Counts the requests read; a body reads only while its own request is current.
    request: u64,
    body: Reading,
    /// `100 Continue` is owed to the client before its body is read.
    continue_owed: bool,
}

/// Where reading the current request's body has got.
enum Reading {
    Length(u64),
    Chunked(chunked::Decoder),
    Done,
    Broken,
}

impl Wire {
    /// Reads more bytes into the read buffer; `Ok(0)` when the client has closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.read_size / 2 {
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let read = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read))?;
        if read == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(read))
    }

    /// Writes the write buffer, then `big`, and flushes.
    fn poll_write_out(&mut self, cx: &mut Context<'_>, big: &mut Bytes) -> Poll<io::Result<()>> {
        loop {
            let buffered = &self.write[self.written..];
            let written = match (buffered.is_empty(), big.is_empty()) {
                (true, true) => break,
                (false, true) => ready!(Pin::new(&mut self.io).poll_write(cx, buffered))?,
                (true, false) => ready!(Pin::new(&mut self.io).poll_write(cx, big))?,
                (false, false) => {
                    let slices = [IoSlice::new(buffered), IoSlice::new(big)];
                    ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices))?
                }
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_buffer = written.min(buffered.len());
            self.written += from_buffer;
            big.advance(written - from_buffer);
        }
        self.write.clear();
        self.written = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// The next piece of the current request's body.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if self.continue_owed {
            self.continue_owed = false;
            self.write.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        if !self.write.is_empty() {
            if let Err(error) = ready!(self.poll_write_out(cx, &mut Bytes::new())) {
                self.body = Reading::Broken;
                return Poll::Ready(Some(Err(BodyError::Client(error.to_string()))));
            }
        }
        loop {
            match &mut self.body {
                Reading::Done => return Poll::Ready(None),
                Reading::Broken => {
                    return Poll::Ready(Some(Err(BodyError::Client("the request body broke off".into()))))
                }
                Reading::Length(left) if !self.read.is_empty() => {
                    let take = (*left).min(self.read.len() as u64);
                    let data = self.read.split_to(take as usize).freeze();
                    *left -= take;
                    if *left == 0 {
                        self.body = Reading::Done;
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Reading::Length(_) => {}
                Reading::Chunked(decoder) => match decoder.next(&mut self.read) {
                    Ok(Some(data)) => {
                        if decoder.is_done() {
                            self.body = Reading::Done;
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Ok(None) if decoder.is_done() => {
                        self.body = Reading::Done;
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(_) => {
                        self.body = Reading::Broken;
                        let message = "the chunked request body is not valid";
                        return Poll::Ready(Some(Err(BodyError::Client(message.into()))));
                    }
                },
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.body = Reading::Broken;
                    let message = "the client closed the connection before the body ended";
                    return Poll::Ready(Some(Err(BodyError::Client(message.into()))));
                }
                Ok(_) => {}
                Err(error) => {
                    self.body = Reading::Broken;
                    return Poll::Ready(Some(Err(BodyError::Client(error.to_string()))));
                }
            }
        }
    }
}

/// What waiting for a request head came to.
#[allow(clippy::large_enum_variant, reason = "a head moves once per request; boxing would allocate")]
enum Waited {
    Head(RequestHead),
    Refused(Refusal),
    Http2,
    Closed,
}

/// Serves HTTP/1.1 on `io` until the connection closes, or until `shutdown` turns true
/// between requests.
pub async fn serve<H: Handler>(
    io: Box<dyn Io>,
    handler: &H,
    limits: Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let wire = Arc::new(Mutex::new(Wire {
        io,
        read: BytesMut::new(),
        read_size: MIN_READ,
        write: Vec::new(),
        written: 0,
        request: 0,
        body: Reading::Done,
        continue_owed: false,
    }));
    // One timer for the connection's life, moved only when it would fire too late: firing
    // early costs a wake-up, which is cheaper than moving it for every request.
    let mut timer = Box::pin(tokio::time::sleep(limits.header_timeout));
    // One wait for shutdown for the connection's life: a wait registers with the signal
    // when first polled and unregisters when dropped, which per request would be two
    // locked list operations.
    let mut signal = shutdown.clone();
    let mut closing = Closing { closed: shutdown.has_changed().unwrap_or(true), signal: pin!(signal.changed()) };
    let mut first = true;
    loop {
        let head = match next_head(&wire, &limits, &mut timer, &mut closing, first).await {
            Waited::Head(head) => head,
            Waited::Refused(refusal) => {
                refuse(&wire, refusal).await;
                return Ended::Closed;
            }
            Waited::Http2 => {
                let mut wire = lock(&wire);
                let io = std::mem::replace(&mut wire.io, Box::new(tokio::io::empty()));
                return Ended::Http2(Upgraded::new(io, std::mem::take(&mut wire.read)));
            }
            Waited::Closed => return Ended::Closed,
        };
        first = false;
        let RequestHead { request, framing, keep_alive, expect_continue, upgrade } = head;
        let number = {
            let mut wire = lock(&wire);
            wire.request += 1;
            wire.body = match framing {
                None => Reading::Done,
                Some(RequestFraming::Length(length)) => Reading::Length(length),
                Some(RequestFraming::Chunked) => Reading::Chunked(chunked::Decoder::new()),
            };
            wire.continue_owed = expect_continue;
            wire.request
        };
        let body = match framing {
            None => ClientBody::empty(),
            Some(RequestFraming::Length(length)) => ClientBody::http1(wire.clone(), number, Some(length)),
            Some(RequestFraming::Chunked) => ClientBody::http1(wire.clone(), number, None),
        };
        let mut request = request.map(|()| body);
        let switch = upgrade.then(|| {
            let (sender, receiver) = oneshot::channel();
            request.extensions_mut().insert(ClientUpgrade(Arc::new(Mutex::new(Some(receiver)))));
            sender
        });
        let (method, version) = (request.method().clone(), request.version());

        let response = handler.handle(request).await;

        let (parts, mut body) = response.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS && switch.is_some();
        let mut close = !keep_alive
            || shutdown.has_changed().unwrap_or(true)
            || parts.headers.get_all(CONNECTION).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        {
            // A client that waits for `100 Continue` before it sends its body may send it
            // or not, now that it has an answer: the connection cannot be read on safely.
            let mut wire = lock(&wire);
            if wire.continue_owed && !matches!(wire.body, Reading::Done) {
                close = true;
            }
            wire.continue_owed = false;
        }
        let length = body.size_hint().exact();
        let framing = match parts.status {
            StatusCode::SWITCHING_PROTOCOLS if !switching => {
                // A `101` the client did not ask for cannot be passed on.
                close = true;
                Framing::None
            }
            status => Framing::choose(status, &method, version, length),
        };
        close |= framing == Framing::UntilClose;
        let persistence = match (close, version) {
            (true, _) => Persistence::Close,
            (false, Version::HTTP_11) => Persistence::KeepAlive,
            (false, _) => Persistence::KeepAlive10,
        };
        response::write_head(&mut lock(&wire).write, &parts, &body, &method, framing, length, persistence);
        crate::proxy::recycle_map(parts.headers);
        let sent = send_body(&wire, &mut body, framing).await;
        // The body is dropped once it is all written: that ends the request's access log
        // line, and for a switch of protocols starts the tunnel.
        drop(body);
        if let (true, Some(sender), Ok(())) = (switching, switch, &sent) {
            let mut wire = lock(&wire);
            let io = std::mem::replace(&mut wire.io, Box::new(tokio::io::empty()));
            let _ = sender.send(Upgraded::new(io, std::mem::take(&mut wire.read)));
            return Ended::Closed;
        }
        if sent.is_err() || switching {
            return Ended::Closed;
        }
        if close {
            linger(&wire).await;
            return Ended::Closed;
        }
        if !drain_body(&wire, limits.header_timeout).await {
            linger(&wire).await;
            return Ended::Closed;
        }
    }
}

/// Waits for the next request head: first for its first byte (up to the idle timeout, or
/// until shutdown), then for the rest (up to the header timeout).
async fn next_head(
    wire: &SharedWire,
    limits: &Limits,
    timer: &mut Pin<Box<Sleep>>,
    closing: &mut Closing<'_, impl Future>,
    first: bool,
) -> Waited {
    let mut deadline = None;
    let idle_deadline = Instant::now() + limits.idle_timeout;
    if first {
        deadline = Some(Instant::now() + limits.header_timeout);
    }
    poll_fn(|cx| {
        let mut wire = lock(wire);
        loop {
            if !wire.read.is_empty() {
                if first && HTTP2_PREFACE.starts_with(&wire.read[..wire.read.len().min(HTTP2_PREFACE.len())]) {
                    if wire.read.len() >= HTTP2_PREFACE.len() {
                        return Poll::Ready(Waited::Http2);
                    }
                } else {
                    match request::read_request_head(&mut wire.read, limits.max_header_bytes) {
                        Ok(Some(head)) => return Poll::Ready(Waited::Head(head)),
                        Ok(None) => {}
                        Err(refusal) => return Poll::Ready(Waited::Refused(refusal)),
                    }
                }
                if deadline.is_none() && !wire.read.is_empty() {
                    deadline = Some(Instant::now() + limits.header_timeout);
                }
            }
            match wire.poll_fill(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Waited::Closed),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => break,
            }
        }
        // Nothing more to read for now. A connection with no request begun closes on
        // shutdown, or quietly once idle too long; a slow head gets a 408.
        if deadline.is_none() && closing.poll(cx) {
            return Poll::Ready(Waited::Closed);
        }
        let until = deadline.unwrap_or(idle_deadline);
        if timer.deadline() > until {
            timer.as_mut().reset(until);
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= until {
                return Poll::Ready(match deadline {
                    Some(_) => Waited::Refused(Refusal::TimedOut),
                    None => Waited::Closed,
                });
            }
            timer.as_mut().reset(until);
        }
    })
    .await
}

/// Whether the server is shutting down, as a connection waits for it.
struct Closing<'a, F> {
    signal: Pin<&'a mut F>,
    closed: bool,
}

impl<F: Future> Closing<'_, F> {
    /// Whether shutdown began; if not, `cx` is woken when it does. The signal turns true
    /// once, so any change means shutdown.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && self.signal.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }
}

/// Writes the response body with the head already in the write buffer. Fails when the
/// connection broke, or when the body did (the client then sees a body cut short, since
/// the connection closes).
async fn send_body<B>(wire: &SharedWire, body: &mut B, framing: Framing) -> Result<(), ()>
where
    B: Body<Data = Bytes, Error = BodyError> + Unpin,
{
    let mut big = Bytes::new();
    let mut crlf_owed = false;
    let mut sent = 0u64;
    let mut ended = matches!(framing, Framing::None) || body.is_end_stream();
    if ended && framing == Framing::Chunked {
        lock(wire).write.extend_from_slice(b"0\r\n\r\n");
    }
    poll_fn(|cx| {
        let mut wire = lock(wire);
        loop {
            // What is waiting to go out goes first, so that a slow client holds the body back.
            if !big.is_empty() || ended || wire.write.len() >= COPY_BELOW {
                ready!(wire.poll_write_out(cx, &mut big)).map_err(|_| ())?;
                if crlf_owed {
                    crlf_owed = false;
                    wire.write.extend_from_slice(b"\r\n");
                }
                if ended {
                    if !wire.write.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
            }
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Nothing more for now: what there is goes out meanwhile.
                    ready!(wire.poll_write_out(cx, &mut big)).map_err(|_| ())?;
                    if crlf_owed {
                        crlf_owed = false;
                        wire.write.extend_from_slice(b"\r\n");
                        continue;
                    }
                    return Poll::Pending;
                }
            };
            let data = match frame {
                None => {
                    ended = true;
                    match framing {
                        Framing::Length(length) if sent != length => return Poll::Ready(Err(())),
                        Framing::Chunked => wire.write.extend_from_slice(b"0\r\n\r\n"),
                        _ => {}
                    }
                    continue;
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "a response body broke off");
                    return Poll::Ready(Err(()));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            };
            sent += data.len() as u64;
            match framing {
                Framing::Length(length) if sent > length => return Poll::Ready(Err(())),
                Framing::Chunked => {
                    response::write_chunk_size(&mut wire.write, data.len());
                    crlf_owed = true;
                }
                _ => {}
            }
            if data.len() >= COPY_BELOW {
                big = data;
            } else {
                wire.write.extend_from_slice(&data);
                if crlf_owed {
                    crlf_owed = false;
                    wire.write.extend_from_slice(b"\r\n");
                }
            }
            if let Framing::Length(length) = framing {
                ended |= sent == length;
            }
        }
    })
    .await
}

/// Reads and drops what the handler left unread of the request body, so that the
/// connection can carry the next request: `false` if that cannot be done (too much left,
/// a broken body, or a client too slow to send it).
async fn drain_body(wire: &SharedWire, timeout: Duration) -> bool {
    match &lock(wire).body {
        Reading::Done => return true,
        Reading::Broken => return false,
        Reading::Length(left) if *left > MAX_DRAIN => return false,
        _ => {}
    }
    let mut budget = MAX_DRAIN;
    let drained = poll_fn(|cx| {
        let mut wire = lock(wire);
        loop {
            match ready!(wire.poll_body(cx)) {
                None => return Poll::Ready(true),
                Some(Ok(data)) if (data.len() as u64) <= budget => budget -= data.len() as u64,
                Some(_) => return Poll::Ready(false),
            }
        }
    });
    tokio::time::timeout(timeout, drained).await.unwrap_or(false)
}

/// Answers a head that was refused, and closes the connection.
async fn refuse(wire: &SharedWire, refusal: Refusal) {
    let (status, code, message) = refusal.parts();
    let id = crate::proxy::new_request_id();
    let id = id.to_str().unwrap_or_default();
    let body = serde_json::json!({ "error": code, "message": message, "request_id": id }).to_string();
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    if let Ok(id) = http::HeaderValue::from_str(id) {
        headers.insert(crate::proxy::X_REQUEST_ID.clone(), id);
    }
    let (parts, ()) = response.into_parts();
    {
        let mut wire = lock(wire);
        let length = Some(body.len() as u64);
        response::write_head(
            &mut wire.write,
            &parts,
            &NoLines,
            &Method::GET,
            Framing::Length(body.len() as u64),
            length,
            Persistence::Close,
        );
        wire.write.extend_from_slice(body.as_bytes());
        wire.body = Reading::Broken;
    }
    let written = poll_fn(|cx| lock(wire).poll_write_out(cx, &mut Bytes::new())).await;
    if written.is_ok() {
        linger(wire).await;
    }
}

/// Closes the connection gracefully: shuts down the sending side, then reads and drops what
/// the client still sends for a moment, so that the kernel does not answer it with a reset
/// that could destroy the response before the client has read it.
async fn linger(wire: &SharedWire) {
    if poll_fn(|cx| lock(wire).poll_write_out(cx, &mut Bytes::new())).await.is_err() {
        return;
    }
    let mut io = {
        let mut wire = lock(wire);
        std::mem::replace(&mut wire.io, Box::new(tokio::io::empty()))
    };
    if io.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut left = MAX_DRAIN as usize;
    let _ = tokio::time::timeout(LINGER, async {
        use tokio::io::AsyncReadExt;
        while left > 0 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(read) => left = left.saturating_sub(read),
            }
        }
    })
    .await;
}

/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_millis(500);
