//! Response heads written for the client, and how their bodies are framed.
//!
//! Portico frames every body itself, from what it knows of the body, and never copies a
//! `Content-Length` or `Transfer-Encoding` it did not make (the upstream's framing was for
//! the upstream's connection): a body of known length gets `Content-Length`, one made as it
//! goes is chunked for HTTP/1.1 clients and ends with the connection for HTTP/1.0 ones.

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{response, HeaderName, Method, StatusCode, Version};
use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: the answer to a HEAD, `1xx`, `204`, `304`.
    None,
    Length(u64),
    Chunked,
    /// The body ends when the connection closes (a body of unknown length to HTTP/1.0).
    UntilClose,
}

impl Framing {
    /// The framing of a response with `status` to a request with `method` from a client
    /// speaking `version`, whose body has `length` if it is known.
    pub fn choose(status: StatusCode, method: &Method, version: Version, length: Option<u64>) -> Framing {
        let bodiless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        match length {
            _ if bodiless => Framing::None,
            Some(length) => Framing::Length(length),
            None if version == Version::HTTP_11 => Framing::Chunked,
            None => Framing::UntilClose,
        }
    }
}

/// What the head says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Persistence {
    /// HTTP/1.1's default: nothing to say.
    KeepAlive,
    /// An HTTP/1.0 client that asked to keep the connection is told it may.
    KeepAlive10,
    Close,
}

/// Header lines a response carries outside its header map, written into its head after the
/// map's headers (see `proxy::stamp` for why).
pub trait HeadLines {
    /// Whether these lines set header `name`: the map's header of that name is left out.
    fn replaces(&self, name: &HeaderName) -> bool;
    fn write_lines(&self, out: &mut Vec<u8>);
}

/// A response without lines of its own.
pub(crate) struct NoLines;

impl HeadLines for NoLines {
    fn replaces(&self, _: &HeaderName) -> bool {
        false
    }

    fn write_lines(&self, _: &mut Vec<u8>) {}
}

/// Writes the head of `response`, and `lines`, for a request with `method`. `length` is the
/// body's length when known: the answer to a HEAD announces it, unless the response
/// already says.
pub(super) fn write_head(
    out: &mut Vec<u8>,
    response: &response::Parts,
    lines: &impl HeadLines,
    method: &Method,
    framing: Framing,
    length: Option<u64>,
    persistence: Persistence,
) {
    let status = response.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A switch of protocols keeps its `Connection: upgrade`; a HEAD or `304` answer keeps
    // the length the full answer would have.
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let keeps_length = *method == Method::HEAD || status == StatusCode::NOT_MODIFIED;
    let (mut has_length, mut has_date) = (false, false);
    for (name, value) in response.headers.iter() {
        if *name == CONTENT_LENGTH {
            if !keeps_length {
                continue;
            }
            has_length = true;
        } else if *name == TRANSFER_ENCODING || (*name == CONNECTION && !switching) || lines.replaces(name) {
            continue;
        }
        has_date |= *name == DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    lines.write_lines(out);
    match framing {
        Framing::Length(length) => write_length(out, length),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None if *method == Method::HEAD && !has_length => {
            if let Some(length) = length.filter(|&l| l > 0) {
                write_length(out, length);
            }
        }
        Framing::None | Framing::UntilClose => {}
    }
    match persistence {
        Persistence::KeepAlive => {}
        Persistence::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persistence::Close if !switching => out.extend_from_slice(b"connection: close\r\n"),
        Persistence::Close => {}
    }
    if !has_date {
        write_date(out);
    }
    out.extend_from_slice(b"\r\n");
}

fn write_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The start of a chunk of `size` bytes.
pub(super) fn write_chunk_size(out: &mut Vec<u8>, size: usize) {
    // Writing to a `Vec` cannot fail.
    let _ = write!(out, "{size:x}\r\n");
}

thread_local! {
    /// `date: ...\r\n` for the current second, made once a second per thread.
    static DATE_LINE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// The `Date` header (RFC 9110 §6.6.1) for responses that do not carry the upstream's.
fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_LINE.with_borrow_mut(|(made, line)| {
        if *made != second {
            line.clear();
            line.extend_from_slice(b"date: ");
            line.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            line.extend_from_slice(b"\r\n");
            *made = second;
        }
        out.extend_from_slice(line);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Response};

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        method: Method,
        framing: Framing,
        persistence: Persistence,
    ) -> String {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).expect("name");
            response.headers_mut().append(name, HeaderValue::from_str(value).expect("value"));
        }
        response.headers_mut().insert(DATE, HeaderValue::from_static("then"));
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        write_head(&mut out, &parts, &NoLines, &method, framing, Some(12), persistence);
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn bodies_are_framed_from_what_portico_knows_of_them() {
        let choose = |status, method: &Method, version, length| {
            Framing::choose(StatusCode::from_u16(status).expect("status"), method, version, length)
        };
        assert_eq!(choose(200, &Method::GET, Version::HTTP_11, Some(5)), Framing::Length(5));
        assert_eq!(choose(200, &Method::GET, Version::HTTP_11, None), Framing::Chunked);
        assert_eq!(choose(200, &Method::GET, Version::HTTP_10, None), Framing::UntilClose);
        assert_eq!(choose(200, &Method::HEAD, Version::HTTP_11, None), Framing::None);
        for status in [101, 204, 304] {
            assert_eq!(choose(status, &Method::GET, Version::HTTP_11, Some(5)), Framing::None);
        }
    }

    #[test]
    fn heads_carry_portico_s_framing_not_the_upstream_s() {
        let upstream = [("content-length", "99"), ("transfer-encoding", "chunked"), ("connection", "x"), ("x-a", "1")];
        let text = head(200, &upstream, Method::GET, Framing::Length(12), Persistence::KeepAlive);
        assert_eq!(text, "HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: then\r\ncontent-length: 12\r\n\r\n");
        let text = head(200, &upstream, Method::GET, Framing::Chunked, Persistence::Close);
        assert!(
            text.ends_with("x-a: 1\r\ndate: then\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        let text = head(200, &[], Method::GET, Framing::UntilClose, Persistence::KeepAlive10);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ndate: then\r\nconnection: keep-alive\r\n\r\n");
    }

    #[test]
    fn heads_without_bodies_keep_or_announce_the_length() {
        let text = head(200, &[("content-length", "99")], Method::HEAD, Framing::None, Persistence::KeepAlive);
        assert!(text.contains("content-length: 99\r\n") && !text.contains(": 12"), "{text}");
        let text = head(200, &[], Method::HEAD, Framing::None, Persistence::KeepAlive);
        assert!(text.contains("content-length: 12\r\n"), "{text}");
        let text = head(204, &[("content-length", "0")], Method::GET, Framing::None, Persistence::KeepAlive);
        assert!(!text.contains("content-length"), "{text}");
        let upgrade = [("connection", "upgrade"), ("upgrade", "websocket")];
        let text = head(101, &upgrade, Method::GET, Framing::None, Persistence::Close);
        assert!(text.contains("connection: upgrade\r\nupgrade: websocket\r\n") && !text.contains("close"), "{text}");
    }

    #[test]
    fn a_date_is_added_when_the_response_has_none() {
        let mut out = Vec::new();
        let (parts, ()) = Response::new(()).into_parts();
        write_head(&mut out, &parts, &NoLines, &Method::GET, Framing::Length(0), None, Persistence::KeepAlive);
        let text = String::from_utf8(out).expect("text");
        let date = text.lines().find_map(|l| l.strip_prefix("date: ")).expect("a date");
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    }

    /// Lines that set `x-request-id`.
    struct RequestId;

    impl HeadLines for RequestId {
        fn replaces(&self, name: &HeaderName) -> bool {
            name == "x-request-id"
        }

        fn write_lines(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"x-request-id: portico\r\n");
        }
    }

    #[test]
    fn lines_beside_the_map_replace_its_headers_of_the_same_names() {
        let mut response = Response::new(());
        for (name, value) in [("x-request-id", "upstream"), ("x-a", "1"), ("date", "then")] {
            response.headers_mut().append(name, HeaderValue::from_static(value));
        }
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        write_head(&mut out, &parts, &RequestId, &Method::GET, Framing::Length(0), None, Persistence::KeepAlive);
        let text = String::from_utf8(out).expect("text");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: then\r\nx-request-id: portico\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
