//! Portico's HTTP/1.1 client for upstream connections.
//!
//! A request is written and its answer read by the request's own task, on a connection it
//! borrows from the pool: no task per connection and no channel between the two, which is
//! where a general-purpose client spends much of its time on a proxy's short exchanges. The
//! response body reads straight from the connection, and hands it back to the pool with its
//! last byte.
//!
//! - [`head`]: the request head written and the response head read (and how each is framed);
//! - [`body`]: the response body, and the connection after a switch of protocols;
//! - [`chunked`]: the chunked coding of response bodies;
//! - [`stream`]: TCP or TLS under a connection.

mod body;
pub(crate) mod chunked;
mod head;
mod stream;

pub(crate) use body::{Upgraded, UpstreamBody};
pub(crate) use head::{Malformed, SetHeaders};
pub(crate) use stream::{connect, tls_connector, Stream};

use super::pool::Lease;
use crate::proxy::{BodyError, RequestBody};
use bytes::{Bytes, BytesMut};
use head::{RequestFraming, ResponseHead};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::AsyncWrite;

/// Reads start with room for this many bytes; the room grows for bodies that fill it.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;
/// A pooled connection keeps a write buffer up to this size (request heads fit in it).
const MAX_KEPT_WRITE: usize = 64 * 1024;
/// Body bytes gathered behind what waits to be written before it is written.
const GATHER_WRITE: usize = 64 * 1024;

/// One connection to an upstream, with what has been read from it and not used yet.
pub(crate) struct Connection {
    stream: Stream,
    read: BytesMut,
    /// The room the next read gets.
    read_size: usize,
    /// Bytes to write: a request head, and request body pieces with their framing.
    write: Vec<u8>,
    /// How much of `write` has been written.
    written: usize,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection before it answered")]
    Closed,
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// A failed exchange, and whether the request can go again as it is: the upstream took
/// none of it, as when it had closed a pooled connection just before it was reused.
#[derive(Debug)]
pub(crate) struct ExchangeError {
    pub failure: Failure,
    pub untouched: bool,
}

impl Connection {
    /// A connection over `stream`. Boxed: it moves with every request that borrows it, from
    /// the pool into the response body and back.
    pub fn new(stream: Stream) -> Box<Connection> {
        Box::new(Connection { stream, read: BytesMut::new(), read_size: MIN_READ, write: Vec::new(), written: 0 })
    }

    /// Whether an idle connection can carry a request: it has nothing to read, and the
    /// upstream has not closed it. Costs no system call when the runtime has seen nothing
    /// happen on the connection.
    pub fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.read.is_empty() && self.poll_fill(&mut cx).is_pending()
    }

    /// Lets go of buffers a large body grew, before the connection waits in the pool: a
    /// thousand idle connections must not each keep a body's worth of memory.
    fn trim(&mut self) {
        if self.read.capacity() > 2 * MIN_READ {
            self.read = BytesMut::new();
        }
        self.read_size = MIN_READ;
        if self.write.capacity() > MAX_KEPT_WRITE {
            self.write = Vec::new();
        }
    }

    /// Reads more bytes into the read buffer; `Ok(0)` when the upstream has closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.read_size / 2 {
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let read = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read))?;
        // A read that fills the room suggests a larger body: give the next one more.
        if read == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(read))
    }

    async fn write_pending(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(&self.write).await?;
        self.write.clear();
        self.stream.flush().await
    }

    /// Sends `request` and reads the response head. The body goes up as the client sends
    /// it; if the upstream answers before the body is all sent, the rest is not sent and
    /// the connection is not used again.
    async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        body: &mut RequestBody,
        set: &SetHeaders<'_>,
    ) -> Result<ResponseHead, ExchangeError> {
        let exact = if body.is_end_stream() { Some(0) } else { body.size_hint().exact() };
        let framing = RequestFraming::for_body(&parts.method, exact);
        head::write_request_head(&mut self.write, parts, framing, set);
        let bodiless = matches!(framing, RequestFraming::None | RequestFraming::Length(0));
        let body_done = if bodiless {
            // A write to a pooled connection the upstream had closed fails here, before
            // anything was taken: such a request may always go again.
            if let Err(error) = self.write_pending().await {
                let untouched = matches!(error.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset);
                return Err(ExchangeError { failure: error.into(), untouched });
            }
            true
        } else {
            let mut sender = BodySender { framing, sent: 0, ended: false };
            poll_fn(|cx| self.poll_send_body(cx, &parts.method, Pin::new(&mut *body), &mut sender))
                .await
                .map_err(|failure| ExchangeError { failure, untouched: false })?
        };
        let mut head = self.read_head(&parts.method, !body_done).await.map_err(|mut error| {
            // Nothing came back, but the request went out: it may go again only if it had no
            // body (a sent one is gone) and doing it twice is harmless.
            error.untouched &= bodiless && parts.method.is_idempotent();
            error
        })?;
        if head.status == StatusCode::SWITCHING_PROTOCOLS && !parts.headers.contains_key(http::header::UPGRADE) {
            return Err(ExchangeError { failure: Malformed::UnaskedSwitch.into(), untouched: false });
        }
        if !body_done {
            head.keep_alive = false;
        }
        Ok(head)
    }

    /// Reads response heads until a final one (or a `101`); informational ones are passed over.
    async fn read_head(&mut self, method: &Method, answered_early: bool) -> Result<ResponseHead, ExchangeError> {
        let mut received = answered_early;
        loop {
            match head::read_response_head(&mut self.read, method) {
                Ok(Some(head)) if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS => {
                    received = true;
                    continue;
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(error) => return Err(ExchangeError { failure: error.into(), untouched: false }),
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) => {
                    let untouched = !received && self.read.is_empty();
                    return Err(ExchangeError { failure: Failure::Closed, untouched });
                }
                Ok(_) => received = true,
                Err(error) => {
                    let untouched = !received && error.kind() == io::ErrorKind::ConnectionReset;
                    return Err(ExchangeError { failure: error.into(), untouched });
                }
            }
        }
    }

    /// Sends the request head and body; ready with `true` once all is sent, or with `false`
    /// as soon as a response has begun to arrive (the upstream answered early).
    fn poll_send_body(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
        mut body: Pin<&mut RequestBody>,
        sender: &mut BodySender,
    ) -> Poll<Result<bool, Failure>> {
        loop {
            // An answer before the body is all sent stops the sending, unless it is an
            // interim one (a `100 Continue` to a forwarded `Expect`), which is passed over;
            // a head still arriving may be either, so the body goes on meanwhile.
            while !self.read.is_empty() {
                match head::starts_with_interim_head(&self.read) {
                    Some(true) => {
                        head::read_response_head(&mut self.read, method)?;
                    }
                    Some(false) => return Poll::Ready(Ok(false)),
                    None => break,
                }
            }
            match self.poll_fill(cx)? {
                Poll::Ready(0) => return Poll::Ready(Err(Failure::Closed)),
                Poll::Ready(_) => continue,
                Poll::Pending => {}
            }
            // What the body has ready joins what waits to be written, so that a head and a
            // body already at hand (most bodies are) leave in one write, not two.
            if !sender.ended && self.write.len() - self.written < GATHER_WRITE {
                match body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            sender.frame(&mut self.write, data)?;
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.into())),
                    Poll::Ready(None) => {
                        sender.end(&mut self.write)?;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if self.written < self.write.len() {
                let written = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.write[self.written..]))?;
                if written == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.written += written;
                if self.written == self.write.len() {
                    self.write.clear();
                    self.written = 0;
                }
                continue;
            }
            if sender.ended {
                ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
                return Poll::Ready(Ok(true));
            }
            // Nothing to write, and the body has nothing yet: it wakes this task.
            return Poll::Pending;
        }
    }
}

/// Writes request body pieces with the framing the head announced, and checks that a
/// body of announced length keeps to it.
struct BodySender {
    framing: RequestFraming,
    sent: u64,
    ended: bool,
}

impl BodySender {
    fn frame(&mut self, out: &mut Vec<u8>, data: &Bytes) -> Result<(), Failure> {
        if data.is_empty() {
            return Ok(());
        }
        self.sent += data.len() as u64;
        match self.framing {
            RequestFraming::Length(length) if self.sent > length => return Err(length_mismatch()),
            RequestFraming::Chunked => {
                // Writing to a `Vec` cannot fail.
                let _ = write!(out, "{:x}\r\n", data.len());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            _ => out.extend_from_slice(data),
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), Failure> {
        match self.framing {
            RequestFraming::Length(length) if self.sent != length => return Err(length_mismatch()),
            RequestFraming::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            _ => {}
        }
        self.ended = true;
        Ok(())
    }
}

fn length_mismatch() -> Failure {
    Failure::Io(io::Error::new(io::ErrorKind::InvalidData, "the request body does not have the length it announced"))
}

/// Sends `request` on `connection`, with the headers in `set` in place of its own of those
/// names, and returns the response. Its body reads from the connection and gives it back
/// through `lease` when it ends, if the connection can carry another request. On failure
/// the request comes back if nothing of it was taken, so that it can go on another one.
pub(crate) async fn send(
    mut connection: Box<Connection>,
    request: Request<RequestBody>,
    set: &SetHeaders<'_>,
    lease: Lease,
) -> Result<Response<UpstreamBody>, (ExchangeError, Option<Request<RequestBody>>)> {
    let (parts, mut body) = request.into_parts();
    match connection.exchange(&parts, &mut body, set).await {
        Ok(head) => {
            // The request's head is written: its map can serve the next head read.
            crate::proxy::recycle_map(parts.headers);
            let ResponseHead { status, version, headers, framing, keep_alive, hop_by_hop } = head;
            let switched = status == StatusCode::SWITCHING_PROTOCOLS;
            let body = UpstreamBody::new(connection, lease, switched, framing, keep_alive, hop_by_hop);
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.version_mut() = version;
            *response.headers_mut() = headers;
            Ok(response)
        }
        Err(error) => {
            let unsent = error.untouched.then(|| Request::from_parts(parts, body));
            Err((error, unsent))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_going_back_to_the_pool_lets_go_of_what_a_large_body_grew() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let mut connection = Connection::new(Stream::Plain(tcp));
        connection.read.reserve(MAX_READ);
        connection.read_size = MAX_READ;
        connection.write.reserve(1 << 20);
        connection.trim();
        assert!(connection.read.capacity() <= 2 * MIN_READ);
        assert!(connection.write.capacity() <= MAX_KEPT_WRITE);
        assert_eq!(connection.read_size, MIN_READ);

        // Small buffers stay: the next request would only allocate them again.
        connection.read.reserve(MIN_READ);
        connection.write.reserve(1024);
        let (read, write) = (connection.read.capacity(), connection.write.capacity());
        connection.trim();
        assert_eq!((connection.read.capacity(), connection.write.capacity()), (read, write));
    }
}
