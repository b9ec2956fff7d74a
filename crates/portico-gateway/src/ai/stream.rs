//! Streamed answers on their way to the client: each upstream chunk is read as server-sent
//! events and what it completes is sent on at once, translated when the client speaks
//! another format, byte for byte when it speaks the provider's. Passed through, the events
//! that may end the stream or carry usage are read, and the others only looked at for the
//! length of their text, which an estimate needs when a provider reports no usage.

use super::{Billing, Meter};
use crate::proxy::{BodyError, ResponseBody};
use bytes::Bytes;
use http_body::{Body, Frame};
use memchr::memmem::Finder;
use portico_ai::{
    write_event, AiError, Dialect, ErrorKind, Format, SseEvent, SseParser, StreamEvent, StreamReader, StreamWriter,
    Usage,
};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
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
    /// Which of `events` were left out (usage chunks the client did not ask for).
    left_out: Vec<usize>,
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
            left_out: Vec::new(),
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
        // A chunk of whole events, none of them left out, goes on as it came.
        let starts_whole = self.parser.at_boundary();
        if self.parser.push(&chunk, &mut self.events).is_err() {
            return self.fail("the provider's stream is not an event stream");
        }
        let whole = starts_whole && self.parser.at_boundary();
        let translated = self.translate(false);
        match self.mode {
            Mode::Pass => chunk,
            Mode::PassWithoutUsage if whole && self.left_out.is_empty() => chunk,
            Mode::PassWithoutUsage => self.kept_events(),
            Mode::Translate(_) => translated,
        }
    }

    /// The events read last but those left out, written anew (passed through without usage,
    /// when the chunk was not whole events or one was left out).
    fn kept_events(&self) -> Bytes {
        let mut out = Vec::new();
        let kept = self.events.iter().enumerate().filter(|(i, _)| !self.left_out.contains(i));
        for (_, event) in kept {
            write_event(&mut out, event.event.as_deref(), event.data.as_bytes());
        }
        out.into()
    }

    /// Runs the events read so far through the reader (and the writer, when translating);
    /// at the end of the body, the reader's last word too. Passed through without usage,
    /// the events to leave out are noted in `left_out`.
    fn translate(&mut self, ended: bool) -> Bytes {
        let mut out = Vec::new();
        let passing = !matches!(self.mode, Mode::Translate(_));
        self.left_out.clear();
        let events = self.events.iter().map(Some).chain(ended.then_some(None));
        for (i, event) in events.enumerate() {
            self.steps.clear();
            match event {
                // Passed through, most events only add to the text an estimate would count:
                // a look at their bytes spares parsing them.
                Some(event) if passing && !worth_reading(event) => {
                    self.written += written_hint(event.data.as_bytes());
                    continue;
                }
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
            if let (Mode::PassWithoutUsage, Some(_)) = (&self.mode, event) {
                // (The reader may also see the stream start here: the events before were
                // not read.)
                let usage_only = self.steps.iter().any(|s| matches!(s, StreamEvent::Usage(_)))
                    && self.steps.iter().all(|s| matches!(s, StreamEvent::Usage(_) | StreamEvent::Start { .. }));
                if usage_only {
                    self.left_out.push(i);
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

/// Byte patterns searched in every passed-through event, each built once: building a
/// searcher costs more than a search through one event.
struct Needles {
    error: Finder<'static>,
    message_stop: Finder<'static>,
    usage: Finder<'static>,
    /// `":"`, between a key and a string value.
    string_value: Finder<'static>,
}

static NEEDLES: LazyLock<Needles> = LazyLock::new(|| Needles {
    error: Finder::new(b"\"error\""),
    message_stop: Finder::new(b"message_stop"),
    usage: Finder::new(b"\"usage\""),
    string_value: Finder::new(b"\":\""),
});

/// Whether a passed-through event must be read: it may end the stream, report an error or
/// carry usage (`[DONE]`, `message_stop`, an `error`, a `"usage"` object, not `null`).
fn worth_reading(event: &SseEvent) -> bool {
    let data = event.data.as_bytes();
    event.data == "[DONE]"
        || matches!(event.event.as_deref(), Some("message_stop" | "message_start" | "message_delta" | "error"))
        || NEEDLES.error.find(data).is_some()
        || NEEDLES.message_stop.find(data).is_some()
        || has_usage_object(data)
}

/// Whether `data` holds `"usage":` followed by an object (streams asked for usage carry
/// `"usage":null` in every chunk but the last).
fn has_usage_object(data: &[u8]) -> bool {
    NEEDLES.usage.find_iter(data).any(|at| {
        let rest = data[at + 7..].trim_ascii_start();
        rest.strip_prefix(b":").is_some_and(|value| value.trim_ascii_start().starts_with(b"{"))
    })
}

/// About how many bytes of text an event carries, without parsing it: the lengths of its
/// `content`, `text`, `thinking`, `arguments` and `partial_json` strings, found in one pass
/// over the event. Only an estimate made when a provider reports no usage reads it.
fn written_hint(data: &[u8]) -> usize {
    const KEYS: [&[u8]; 6] =
        [b"\"content", b"\"text", b"\"thinking", b"\"arguments", b"\"partial_json", b"\"reasoning_content"];
    NEEDLES
        .string_value
        .find_iter(data)
        .filter(|&at| KEYS.iter().any(|key| data[..at].ends_with(key)))
        .map(|at| {
            // To the closing quote; an escaped one does not close.
            let start = at + 3;
            let mut end = start;
            while end < data.len() && data[end] != b'"' {
                end += if data[end] == b'\\' { 2 } else { 1 };
            }
            end.min(data.len()) - start
        })
        .sum()
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
                    let translated = this.translate(true);
                    let out = match this.mode {
                        Mode::PassWithoutUsage => this.kept_events(),
                        _ => translated,
                    };
                    let mut out = out.to_vec();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: name.map(str::to_owned), data: data.to_owned() }
    }

    #[test]
    fn chunks_of_whole_events_pass_as_they_came_and_usage_chunks_nobody_asked_for_are_left_out() {
        let upstream = ResponseBody::full(Bytes::new());
        let mut stream = AiStream::new(upstream, Dialect::OpenAi, Format::OpenAi, Mode::PassWithoutUsage, None);
        let first = r#"data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#;
        let last = r#"data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#;
        let usage = r#"data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;

        // Whole events: the very bytes that came (no copy).
        let chunk = Bytes::from(format!("{first}\n\n"));
        let out = stream.take(chunk.clone());
        assert_eq!((out.as_ptr(), out.len()), (chunk.as_ptr(), chunk.len()));

        // An event cut in two goes out whole once its end has come, as an event.
        let split = format!("{last}\n\n");
        assert!(stream.take(Bytes::copy_from_slice(&split.as_bytes()[..20])).is_empty());
        assert_eq!(stream.take(Bytes::copy_from_slice(&split.as_bytes()[20..])), split);

        // The usage chunk Portico asked for is left out, the events around it are kept.
        let out = stream.take(Bytes::from(format!("{usage}\n\ndata: [DONE]\n\n")));
        assert_eq!(out, "data: [DONE]\n\n");
        assert_eq!(stream.usage.map(|u| u.completion_tokens), Some(1));
        assert!(stream.complete);
    }

    #[test]
    fn only_events_that_may_end_a_stream_or_carry_usage_are_parsed_when_passed_through() {
        let content = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hel\"lo"}}],"usage":null}"#;
        assert!(!worth_reading(&event(None, content)));
        assert_eq!(written_hint(content.as_bytes()), r#"Hel\"lo"#.len());
        let usage = r#"{"id":"c","choices":[],"usage": {"prompt_tokens":1}}"#;
        assert!(worth_reading(&event(None, usage)));
        let groq = r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"x_groq":{"usage":{"prompt_tokens":1}}}"#;
        assert!(worth_reading(&event(None, groq)));
        assert!(worth_reading(&event(None, "[DONE]")));
        assert!(worth_reading(&event(None, r#"{"error":{"message":"overloaded"}}"#)));
        assert!(worth_reading(&event(Some("message_delta"), r#"{"type":"message_delta"}"#)));
        let delta = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi there"}}"#;
        assert!(!worth_reading(&event(Some("content_block_delta"), delta)));
        assert_eq!(written_hint(delta.as_bytes()), 8);
        let tool = r#"{"delta":{"content":"a\":\"b","tool_calls":[{"function":{"arguments":"{\"x\":1}"}}]}}"#;
        assert_eq!(written_hint(tool.as_bytes()), r#"a\":\"b"#.len() + r#"{\"x\":1}"#.len());
    }
}
