//! The response body, read straight from the upstream connection, and the connection itself
//! once the upstream has switched protocols.

use super::head::ResponseFraming;
use super::{chunked, Connection, Lease};
use crate::proxy::BodyError;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A response body read from an upstream connection.
pub(crate) struct UpstreamBody {
    connection: Option<(Box<Connection>, Lease)>,
    state: State,
    keep_alive: bool,
    /// The response head had a hop-by-hop header.
    hop_by_hop: bool,
}

enum State {
    Length(u64),
    Chunked(chunked::Decoder),
    UntilClose,
    /// The upstream switched protocols: the connection is the tunnel's now.
    Switched,
}

impl UpstreamBody {
    /// The body of a response framed as `framing`, read from `connection`; after a switch of
    /// protocols, the connection itself. A body that is already whole (none at all, say)
    /// gives the connection back at once.
    pub(super) fn new(
        connection: Box<Connection>,
        lease: Lease,
        switched: bool,
        framing: ResponseFraming,
        keep_alive: bool,
        hop_by_hop: bool,
    ) -> UpstreamBody {
        let state = match framing {
            _ if switched => State::Switched,
            ResponseFraming::Length(length) => State::Length(length),
            ResponseFraming::Chunked => State::Chunked(chunked::Decoder::new()),
            ResponseFraming::UntilClose => State::UntilClose,
        };
        let mut body = UpstreamBody { connection: Some((connection, lease)), state, keep_alive, hop_by_hop };
        body.release_if_done();
        body
    }

    /// Whether the response head had a hop-by-hop header, which the proxy must remove.
    pub fn has_hop_by_hop(&self) -> bool {
        self.hop_by_hop
    }

    /// The connection, with the bytes already read from it, after a `101 Switching
    /// Protocols`.
    pub fn into_upgraded(mut self) -> Option<Upgraded> {
        match self.state {
            State::Switched => self.connection.take().map(|(c, _)| {
                let Connection { stream, read, .. } = *c;
                Upgraded { stream, read }
            }),
            _ => None,
        }
    }

    fn is_done(&self) -> bool {
        match &self.state {
            State::Length(left) => *left == 0,
            State::Chunked(decoder) => decoder.is_done(),
            State::UntilClose | State::Switched => false,
        }
    }

    /// Gives the connection back once the body has been read to its end.
    fn release_if_done(&mut self) {
        if self.is_done() {
            if let Some((mut connection, lease)) = self.connection.take() {
                // Bytes after the end of the response mean the two sides disagree on framing:
                // such a connection is not used again.
                if self.keep_alive && connection.read.is_empty() {
                    connection.trim();
                    lease.give_back(connection);
                }
            }
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.connection = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some((connection, _)) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut connection.read;
            let data = match &mut this.state {
                State::Switched => return Poll::Ready(None),
                State::Length(left) if *left > 0 && !buf.is_empty() => {
                    let take = (*left).min(buf.len() as u64);
                    *left -= take;
                    Ok(Some(buf.split_to(take as usize).freeze()))
                }
                State::Chunked(decoder) => decoder.next(buf),
                State::UntilClose if !buf.is_empty() => Ok(Some(buf.split().freeze())),
                State::Length(_) | State::UntilClose => Ok(None),
            };
            match data {
                Ok(Some(data)) => {
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Err(malformed) => return this.fail(BodyError::Upstream(malformed.to_string())),
                Ok(None) if this.is_done() => {
                    this.release_if_done();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            let Some((connection, _)) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(connection.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(BodyError::Upstream("the upstream closed the connection mid-body".into())),
                Ok(_) => {}
                Err(error) => return this.fail(BodyError::Upstream(error.to_string())),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || self.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(left) => SizeHint::with_exact(left),
            _ if self.connection.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A connection that switched protocols, with the bytes that came after the switch and
/// have not been read yet: an upstream's after its `101`, a client's after Portico's (or
/// after HTTP/2's preface, read while looking for an HTTP/1.1 request).
pub(crate) struct Upgraded<S = super::Stream> {
    stream: S,
    read: BytesMut,
}

impl<S> Upgraded<S> {
    pub fn new(stream: S, read: BytesMut) -> Upgraded<S> {
        Upgraded { stream, read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Upgraded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let take = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read.split_to(take));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Upgraded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
