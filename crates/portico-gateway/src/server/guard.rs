//! A watch on each HTTP/1 connection while it waits for a request head.
//!
//! hyper can time out a slow request head, but it then closes the connection without a
//! word. Portico instead answers `408` with a JSON body, like the other errors a client can
//! act on, and closes idle keep-alive connections quietly. This wrapper around the socket
//! sees every read, so it knows when a head has started arriving; the service tells it when a
//! request is being handled (an [`InFlight`] lives as long as the response body).

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

const TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: 78\r\nconnection: close\r\n\r\n{\"error\":\"client_timeout\",\"message\":\"the request head did not arrive in time\"}";

/// Shared between the connection's socket wrapper and its service.
#[derive(Default)]
pub struct ConnState {
    in_request: AtomicBool,
    /// The reader waiting while a request is handled; woken when it ends so that the idle
    /// timer starts even if no byte arrives.
    reader: AtomicWaker,
}

/// Marks a request as being handled until dropped.
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    pub fn start(state: &Arc<ConnState>) -> InFlight {
        state.in_request.store(true, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_request.store(false, Ordering::Relaxed);
        self.0.reader.wake();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Between requests: nothing received yet.
    Idle,
    /// Part of a request head has arrived.
    Head,
}

/// A client connection (plain TCP, or TLS over it) under the header and idle timeouts.
pub struct GuardedIo<S = TcpStream> {
    io: S,
    state: Arc<ConnState>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// What the connection waits for, when it waits for a request head.
    waiting: Option<(Waiting, Instant)>,
    timer: Pin<Box<Sleep>>,
    /// Unset until the first read; HTTP/2 connections are left alone.
    http2: Option<bool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> GuardedIo<S> {
    pub fn new(io: S, state: Arc<ConnState>, header_timeout: Duration, idle_timeout: Duration) -> GuardedIo<S> {
        let now = Instant::now();
        GuardedIo {
            io,
            state,
            header_timeout,
            idle_timeout,
            waiting: Some((Waiting::Head, now + header_timeout)),
            timer: Box::pin(tokio::time::sleep_until(now + header_timeout)),
            http2: None,
        }
    }

    fn expire(&mut self, cx: &mut Context<'_>, waiting: Waiting) -> Poll<io::Result<()>> {
        match waiting {
            // A quiet keep-alive connection just ends, as an EOF.
            Waiting::Idle => Poll::Ready(Ok(())),
            Waiting::Head => {
                // Best effort: the response is small enough for the socket buffer.
                let _ = Pin::new(&mut self.io).poll_write(cx, TIMEOUT_RESPONSE);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head timeout")))
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.http2 == Some(true) {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        if this.state.in_request.load(Ordering::Relaxed) {
            this.waiting = None;
            this.state.reader.register(cx.waker());
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let received = &buf.filled()[before..];
                if this.http2.is_none() && !received.is_empty() {
                    this.http2 = Some(received.starts_with(b"PRI * HTTP/2.0"));
                }
                if !received.is_empty() && !matches!(this.waiting, Some((Waiting::Head, _))) {
                    this.waiting = Some((Waiting::Head, Instant::now() + this.header_timeout));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (waiting, deadline) =
                    *this.waiting.get_or_insert_with(|| (Waiting::Idle, Instant::now() + this.idle_timeout));
                // The timer is only moved when it would fire too late; firing early costs a
                // wake-up and a re-arm, which is cheaper than re-arming on every request.
                if this.timer.deadline() > deadline {
                    this.timer.as_mut().reset(deadline);
                }
                loop {
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if Instant::now() >= deadline {
                        return this.expire(cx, waiting);
                    }
                    this.timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_timeout_response_declares_its_length() {
        let text = std::str::from_utf8(super::TIMEOUT_RESPONSE).unwrap_or_default();
        let (_, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
