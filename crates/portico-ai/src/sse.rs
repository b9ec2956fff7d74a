//! Server-sent events, read incrementally as bytes arrive (the WHATWG event-stream rules:
//! `\n`, `\r\n` or `\r` end lines, a blank line ends an event, `:` starts a comment, data
//! lines join with `\n`).

/// One event: its `event:` name, if any, and its data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Reads events out of a byte stream cut anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The incomplete line carried over from the last chunk.
    line: Vec<u8>,
    /// The last chunk ended with `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

/// The longest line kept while waiting for its end; a provider that sends more without a
/// line break is not speaking SSE.
pub const MAX_LINE: usize = 16 << 20;

impl SseParser {
    /// Reads `chunk`, appending the events it completes to `out`. Fails when a line grows
    /// past [`MAX_LINE`].
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), &'static str> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
            let line = &rest[..end];
            if self.line.is_empty() {
                self.take_line(line, out);
            } else {
                let mut whole = std::mem::take(&mut self.line);
                whole.extend_from_slice(line);
                self.take_line(&whole, out);
            }
            let crlf = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if crlf {
                match rest {
                    [b'\n', tail @ ..] => rest = tail,
                    [] => self.after_cr = true,
                    _ => {}
                }
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE {
            return Err("an event-stream line is longer than 16 MiB");
        }
        Ok(())
    }

    /// Whether everything read so far has been given out as whole events: no line, event
    /// or line break is waiting for the next chunk.
    pub fn at_boundary(&self) -> bool {
        self.line.is_empty() && !self.has_data && self.event.is_none() && !self.after_cr
    }

    /// Ends the stream: an event the stream did not close with a blank line still counts
    /// (some providers end without one).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.take_line(&line, out);
        }
        self.take_line(b"", out);
    }

    fn take_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent { event: self.event.take(), data: std::mem::take(&mut self.data) });
            }
            self.event = None;
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        // Valid UTF-8 (nearly always) is checked by the fast path of `from_utf8`.
        let value = match std::str::from_utf8(value) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(value),
        };
        match field {
            b"event" => self.event = Some(value.into_owned()),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

/// Appends one SSE event to `out`; data of several lines takes a `data:` line each.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    for line in data.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out).expect("push");
        }
        parser.finish(&mut out);
        out
    }

    fn event(name: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: name.map(str::to_owned), data: data.to_owned() }
    }

    #[test]
    fn events_are_read_however_the_bytes_are_cut() {
        let stream =
            b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: one\ndata:two\r\n\r\ndata: [DONE]\n\n";
        let whole = events(&[stream]);
        assert_eq!(
            whole,
            vec![event(Some("message_start"), "{\"a\":1}"), event(None, "one\ntwo"), event(None, "[DONE]")]
        );
        // Every split point, including between `\r` and `\n`.
        for cut in 1..stream.len() {
            assert_eq!(events(&[&stream[..cut], &stream[cut..]]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytes), whole);
    }

    #[test]
    fn lone_carriage_returns_end_lines_and_a_last_event_needs_no_blank_line() {
        assert_eq!(events(&[b"data: a\r\rdata: b\r\r"]), vec![event(None, "a"), event(None, "b")]);
        assert_eq!(events(&[b"data: {\"done\":true}"]), vec![event(None, "{\"done\":true}")]);
        assert_eq!(events(&[b"event: ping\n\n"]), vec![], "an event without data is not dispatched");
    }

    #[test]
    fn endless_lines_are_refused() {
        let mut parser = SseParser::default();
        let chunk = vec![b'x'; MAX_LINE + 1];
        assert!(parser.push(&chunk, &mut Vec::new()).is_err());
    }
}
