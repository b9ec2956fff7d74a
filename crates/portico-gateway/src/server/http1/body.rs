//! The request body, as the client sends it: read straight from the connection by whoever
//! polls it (the upstream exchange, say), without a task or a channel in between.

use super::{lock, SharedWire};
use crate::proxy::BodyError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// A client's request body, over HTTP/1.1 (Portico's own engine) or HTTP/2 (hyper's).
pub struct ClientBody(Kind);

enum Kind {
    Empty,
    Http1 {
        wire: SharedWire,
        /// Which request of the connection this body belongs to: a body kept past the end
        /// of its request reads nothing of the next one.
        request: u64,
        /// What is left to read of a body of known length.
        left: Option<u64>,
        done: bool,
    },
    Http2(hyper::body::Incoming),
}

impl ClientBody {
    pub(crate) fn empty() -> ClientBody {
        ClientBody(Kind::Empty)
    }

    pub(super) fn http1(wire: SharedWire, request: u64, length: Option<u64>) -> ClientBody {
        ClientBody(Kind::Http1 { wire, request, left: length, done: false })
    }

    pub(crate) fn http2(body: hyper::body::Incoming) -> ClientBody {
        ClientBody(Kind::Http2(body))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            Kind::Empty => Poll::Ready(None),
            Kind::Http1 { done: true, .. } => Poll::Ready(None),
            Kind::Http1 { wire, request, left, done } => {
                let mut wire = lock(wire);
                if wire.request != *request {
                    *done = true;
                    return Poll::Ready(Some(Err(BodyError::Client("the request is over".into()))));
                }
                let polled = ready!(wire.poll_body(cx));
                drop(wire);
                match polled {
                    Some(Ok(data)) => {
                        if let Some(left) = left {
                            *left -= data.len() as u64;
                            *done = *left == 0;
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Some(Err(error)) => {
                        *done = true;
                        Poll::Ready(Some(Err(error)))
                    }
                    None => {
                        *done = true;
                        Poll::Ready(None)
                    }
                }
            }
            Kind::Http2(body) => match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
                Some(Err(error)) => Poll::Ready(Some(Err(BodyError::Client(error.to_string())))),
                None => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Http1 { done, .. } => *done,
            Kind::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Http1 { left: Some(left), .. } => SizeHint::with_exact(*left),
            Kind::Http1 { done: true, .. } => SizeHint::with_exact(0),
            Kind::Http1 { .. } => SizeHint::default(),
            Kind::Http2(body) => body.size_hint(),
        }
    }
}
