//! Streamed answers on their way to the client: each upstream chunk is read as server-sent
//! events and what it completes is sent on at once, translated when the client speaks
//! another format, byte for byte when it speaks the provider's.

use crate::proxy::{BodyError, ResponseBody};
use bytes::Bytes;
use http_body::{Body, Frame};
use portico_ai::{AiError, Dialect, ErrorKind, Format, SseEvent, SseParser, StreamEvent, StreamReader, StreamWriter};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// What becomes of the provider's events.
pub(crate) enum Mode {
    /// The client speaks the provider's format: bytes pass unchanged.
    Pass,
    /// The client speaks another format.
    Translate(StreamWriter),
}

pub(crate) struct AiStream {
    upstream: ResponseBody,
    client: Format,
    mode: Mode,
    parser: SseParser,
    reader: StreamReader,
    events: Vec<SseEvent>,
    steps: Vec<StreamEvent>,
    /// The provider's stream reached its end (`[DONE]`, `message_stop`) or an error.
    complete: bool,
    done: bool,
}

impl AiStream {
    pub fn new(upstream: ResponseBody, provider: Dialect, client: Format, mode: Mode) -> AiStream {
        AiStream {
            upstream,
            client,
            mode,
            parser: SseParser::default(),
            reader: provider.stream_reader(),
            events: Vec::new(),
            steps: Vec::new(),
            complete: false,
            done: false,
        }
    }

    /// Reads `chunk` and returns what goes to the client for it.
    fn take(&mut self, chunk: Bytes) -> Bytes {
        self.events.clear();
        if self.parser.push(&chunk, &mut self.events).is_err() {
            return self.fail("the provider's stream is not an event stream");
        }
        let out = self.translate(false);
        match self.mode {
            Mode::Pass => chunk,
            Mode::Translate(_) => out,
        }
    }

    /// Runs the events read so far through the reader (and the writer, when translating);
    /// at the end of the body, the reader's last word too.
    fn translate(&mut self, ended: bool) -> Bytes {
        let mut out = Vec::new();
        for event in self.events.iter().map(Some).chain(ended.then_some(None)) {
            self.steps.clear();
            match event {
                // Passed through, an event only needs reading when it may end the stream.
                Some(event) if matches!(self.mode, Mode::Pass) && !may_end(event) => {}
                Some(event) => self.reader.read(event, &mut self.steps),
                None => self.reader.finish(&mut self.steps),
            }
            for step in &self.steps {
                if matches!(step, StreamEvent::End | StreamEvent::Error(_)) {
                    self.complete = true;
                }
                if let Mode::Translate(writer) = &mut self.mode {
                    writer.write(step, &mut out);
                }
            }
        }
        out.into()
    }

    /// Ends the stream with an error event in the client's format.
    fn fail(&mut self, message: &str) -> Bytes {
        self.done = true;
        self.complete = true;
        Bytes::from(self.client.stream_error(&AiError::new(ErrorKind::Api, message)))
    }
}

/// Whether an event may end a stream or report an error (`[DONE]`, `message_stop`, an
/// `error` event or object); a cheap look that spares parsing every other event's JSON.
fn may_end(event: &SseEvent) -> bool {
    event.data == "[DONE]"
        || matches!(event.event.as_deref(), Some("message_stop" | "error"))
        || event.data.contains("\"error\"")
        || event.data.contains("message_stop")
}

impl Body for AiStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.upstream).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(chunk) = frame.into_data() else { continue };
                    let out = this.take(chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Some(Err(error)) => {
                    let message = match error {
                        BodyError::ReadTimeout => "the provider stopped sending in the middle of the answer",
                        _ => "the provider's stream broke off",
                    };
                    let out = this.fail(message);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                None => {
                    this.done = true;
                    this.events.clear();
                    this.parser.finish(&mut this.events);
                    let mut out = this.translate(true).to_vec();
                    if !this.complete {
                        out.extend_from_slice(&this.fail("the provider's stream ended before the answer was complete"));
                    }
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                }
            }
        }
    }
}
