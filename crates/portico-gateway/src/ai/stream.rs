//! Streamed answers on their way to the client: each upstream chunk is read as server-sent
//! events and what it completes is sent on at once, translated when the client speaks
//! another format, byte for byte when it speaks the provider's. Every event is read, for
//! the usage the stream reports (or the text an estimate is made from).

use super::{Billing, Meter};
use crate::proxy::{BodyError, ResponseBody};
use bytes::Bytes;
use http_body::{Body, Frame};
use portico_ai::{
    AiError, Dialect, ErrorKind, Format, SseEvent, SseParser, StreamEvent, StreamReader, StreamWriter, Usage,
};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// What becomes of the provider's events.
pub(crate) enum Mode {
    /// The client speaks the provider's format: bytes pass unchanged.
    Pass,
    /// The client speaks the provider's format but did not ask for the usage chunk
    /// Portico asked for: events pass unchanged but for that chunk, which is left out (its
    /// empty `choices` would surprise a client that never asked for it).
    PassWithoutUsage,
    /// The client speaks another format.
    Translate(StreamWriter),
}

/// What the stream has used so far, recorded in the meter when it ends, however it ends.
pub(crate) struct StreamUsage {
    pub meter: Arc<Meter>,
    pub billing: Billing,
    /// The size of the request, for an estimate.
    pub request_bytes: usize,
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
    metered: Option<StreamUsage>,
    /// The last usage the provider reported.
    usage: Option<Usage>,
    /// The bytes the model wrote, for an estimate when the provider reports no usage.
    written: usize,
}

impl AiStream {
    pub fn new(
        upstream: ResponseBody,
        provider: Dialect,
        client: Format,
        mode: Mode,
        metered: Option<StreamUsage>,
    ) -> AiStream {
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
            metered,
            usage: None,
            written: 0,
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
            Mode::PassWithoutUsage | Mode::Translate(_) => out,
        }
    }

    /// Runs the events read so far through the reader (and the writer, when translating);
    /// at the end of the body, the reader's last word too.
    fn translate(&mut self, ended: bool) -> Bytes {
        let mut out = Vec::new();
        for event in self.events.iter().map(Some).chain(ended.then_some(None)) {
            self.steps.clear();
            match event {
                Some(event) => self.reader.read(event, &mut self.steps),
                None => self.reader.finish(&mut self.steps),
            }
            for step in &self.steps {
                match step {
                    StreamEvent::End | StreamEvent::Error(_) => self.complete = true,
                    StreamEvent::Usage(usage) => self.usage = Some(*usage),
                    step => self.written += step.written_bytes(),
                }
                if let Mode::Translate(writer) = &mut self.mode {
                    writer.write(step, &mut out);
                }
            }
            if let (Mode::PassWithoutUsage, Some(event)) = (&self.mode, event) {
                let usage_only =
                    !self.steps.is_empty() && self.steps.iter().all(|s| matches!(s, StreamEvent::Usage(_)));
                if !usage_only {
                    write_event(&mut out, event);
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

    /// Records what the stream used, once: when it ends, or when the client leaves first.
    fn settle(&mut self) {
        let Some(metered) = self.metered.take() else { return };
        let (request_bytes, written) = (metered.request_bytes, self.written);
        let record = metered.billing.usage(self.usage, || Usage::estimate(request_bytes, written));
        super::meter::spawn(metered.meter.record(record));
    }
}

impl Drop for AiStream {
    fn drop(&mut self) {
        self.settle();
    }
}

/// Writes `event` as an event stream carries it.
fn write_event(out: &mut Vec<u8>, event: &SseEvent) {
    if let Some(name) = &event.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in event.data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
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
                    this.settle();
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                }
            }
        }
    }
}
