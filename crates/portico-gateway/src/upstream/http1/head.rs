//! Message heads: the request head Portico writes, and the response head it reads.
//!
//! Framing is Portico's own business on each hop: the request's length headers are
//! written from its body, never copied from the client, and the response's are read
//! strictly (RFC 9112 §6.3), since two parties that frame one message differently are
//! how requests are smuggled.

use crate::proxy::ConnectionTokens;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{request, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use std::mem::MaybeUninit;

/// The most headers a response head may have.
const MAX_HEADERS: usize = 100;
/// Headers policies may add to a response, room made for them in its map: a map that
/// grows rehashes.
const ROOM_TO_ADD: usize = 4;

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body and no length header (GET and the like).
    None,
    Length(u64),
    Chunked,
}

impl RequestFraming {
    /// The framing for a body that is empty (`Some(0)`), of a known length, or of an
    /// unknown one (`None`). An empty body of a method that usually has one still gets
    /// `Content-Length: 0`: some servers refuse a POST without a length.
    pub fn for_body(method: &Method, exact_length: Option<u64>) -> RequestFraming {
        match exact_length {
            Some(0)
                if matches!(*method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE) =>
            {
                RequestFraming::None
            }
            Some(length) => RequestFraming::Length(length),
            None => RequestFraming::Chunked,
        }
    }
}

/// Headers Portico sets on a request (`Host`, `X-Request-Id`, ...) or takes off it (`None`: a
/// credential the upstream must not see): written with the head in place of any of the same
/// name in the request's header map, which saves a hash and an insert or removal in that map
/// for each.
pub(crate) type SetHeaders<'a> = [(&'a HeaderName, Option<&'a HeaderValue>)];

/// Writes the request head into `out`: the request line, the headers in `set`, the request's
/// headers but those `set` replaces and those that frame the body, and the framing header
/// for `framing`.
pub(crate) fn write_request_head(out: &mut Vec<u8>, head: &request::Parts, framing: RequestFraming, set: &SetHeaders) {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in set {
        if let Some(value) = value {
            write_header(out, name, value);
        }
    }
    for (name, value) in &head.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || set.iter().any(|(set, _)| *set == name) {
            continue;
        }
        write_header(out, name, value);
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn write_header(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    // Names and values were checked when they were made (`http` refuses CR and LF in both),
    // so nothing here can end a header early.
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFraming {
    Length(u64),
    Chunked,
    /// The body ends when the upstream closes the connection.
    UntilClose,
}

/// A response head read off the wire.
pub(crate) struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: ResponseFraming,
    /// The connection can carry another request after this response.
    pub keep_alive: bool,
    /// A hop-by-hop header is among `headers`, for the proxy to remove.
    pub hop_by_hop: bool,
}

/// Why a response head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    #[error("the response head is not valid HTTP/1.x: {0}")]
    Syntax(httparse::Error),
    #[error("the response status is not a number from 100 to 999")]
    Status,
    #[error("the response has a header name that is not valid")]
    HeaderName,
    #[error("the response has a header value that is not valid")]
    HeaderValue,
    #[error("the response head is larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("the response has a Content-Length that is not one number")]
    Length,
    #[error("the response is chunked but not last")]
    Coding,
    #[error("the chunked response body is not valid")]
    Chunk,
    #[error("the upstream switched protocols without being asked to")]
    UnaskedSwitch,
}

/// The largest response head accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Reads one response head from the front of `buf`, if a whole one is there: `Ok(None)` asks
/// for more bytes. The head's bytes are taken from `buf`, and the header values share them.
/// `method` is the request's: the answer to a HEAD has no body, whatever its headers say.
pub(crate) fn read_response_head(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, Malformed> {
    let Some(length) = head_length(buf) else {
        return match buf.len() >= MAX_HEAD_BYTES {
            true => Err(Malformed::TooLarge),
            false => Ok(None),
        };
    };
    if length > MAX_HEAD_BYTES {
        return Err(Malformed::TooLarge);
    }
    // The head is taken off the buffer before it is parsed, so that the header values can
    // be cut from it without a copy; the slots for the parser need no initialising.
    let head: Bytes = buf.split_to(length).freeze();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    match config.parse_response_with_uninit_headers(&mut parsed, &head, &mut slots) {
        Ok(httparse::Status::Complete(parsed_length)) if parsed_length == length => {}
        Ok(_) => return Err(Malformed::Syntax(httparse::Error::NewLine)),
        Err(httparse::Error::TooManyHeaders) => return Err(Malformed::TooLarge),
        Err(error) => return Err(Malformed::Syntax(error)),
    }
    let status = parsed.code.and_then(|code| StatusCode::from_u16(code).ok()).ok_or(Malformed::Status)?;
    let version = if parsed.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let mut headers = crate::proxy::empty_map(parsed.headers.len() + ROOM_TO_ADD);
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut chunked = false;
    let mut coded = false;
    let mut content_length: Option<u64> = None;
    let mut hop_by_hop = false;
    for header in parsed.headers.iter() {
        let name = crate::proxy::name_from_wire(header.name.as_bytes()).map_err(|_| Malformed::HeaderName)?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(header.value)).map_err(|_| Malformed::HeaderValue)?;
        if name == CONTENT_LENGTH {
            let this = parse_content_length(value.as_bytes())?;
            if content_length.is_some_and(|seen| seen != this) {
                return Err(Malformed::Length);
            }
            content_length = Some(this);
        } else if name == TRANSFER_ENCODING {
            // Only the last coding tells the framing; any earlier `chunked` is an error.
            for coding in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if chunked {
                    return Err(Malformed::Coding);
                }
                coded = true;
                chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name == http::header::CONNECTION {
            let says = ConnectionTokens::read(value.as_bytes());
            connection_close |= says.close;
            connection_keep_alive |= says.keep_alive;
            // Said of this connection alone, and now read: not kept for the hop-by-hop pass
            // to look up and remove again. One naming other headers or `upgrade` is kept.
            if says.only_persistence {
                continue;
            }
        }
        hop_by_hop = hop_by_hop || crate::proxy::is_hop_by_hop(&name);
        headers.append(name, value);
    }
    let mut keep_alive = match version {
        Version::HTTP_11 => !connection_close,
        _ => connection_keep_alive && !connection_close,
    };
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        ResponseFraming::Length(0)
    } else if coded {
        // A length beside a coding is ignored, and the connection is not trusted with
        // another message (RFC 9112 §6.3, point 3). So is an HTTP/1.0 message with a coding.
        if content_length.is_some() || version == Version::HTTP_10 {
            keep_alive = false;
        }
        if chunked && version == Version::HTTP_11 {
            ResponseFraming::Chunked
        } else {
            keep_alive = false;
            ResponseFraming::UntilClose
        }
    } else if let Some(length) = content_length {
        ResponseFraming::Length(length)
    } else {
        keep_alive = false;
        ResponseFraming::UntilClose
    };
    Ok(Some(ResponseHead { status, version, headers, framing, keep_alive, hop_by_hop }))
}

/// Whether `buf` starts with a whole informational head (`100 Continue`, `103 Early Hints`;
/// not `101`, which ends HTTP/1.1 on the connection): `None` while the head is not whole.
pub(crate) fn starts_with_interim_head(buf: &[u8]) -> Option<bool> {
    head_length(buf)?;
    let status = buf.get(9..12)?;
    Some(buf.starts_with(b"HTTP/1.") && status[0] == b'1' && status != b"101")
}

/// The length of the head at the front of `buf`, up to and with the empty line that ends it
/// (CRLF CRLF, or the bare LFs some servers send), if that line has arrived.
fn head_length(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|at| match &buf[at + 1..] {
        [b'\n', ..] => Some(at + 2),
        [b'\r', b'\n', ..] => Some(at + 3),
        _ => None,
    })
}

/// A `Content-Length` value: digits, or a list of equal numbers (RFC 9110 §8.6).
fn parse_content_length(value: &[u8]) -> Result<u64, Malformed> {
    let mut length = None;
    for part in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(Malformed::Length);
        }
        let this = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|seen| seen != this) {
            return Err(Malformed::Length);
        }
        length = Some(this);
    }
    length.ok_or(Malformed::Length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(wire: &str, method: Method) -> Result<Option<ResponseHead>, Malformed> {
        read_response_head(&mut BytesMut::from(wire), &method)
    }

    fn framing(wire: &str) -> (ResponseFraming, bool) {
        let head = read(wire, Method::GET).expect("valid").expect("whole");
        (head.framing, head.keep_alive)
    }

    #[test]
    fn request_heads_carry_portico_s_framing_not_the_client_s() {
        let mut request = http::Request::post("/upload?x=1").body(()).expect("request");
        request.headers_mut().insert("content-length", HeaderValue::from_static("999"));
        request.headers_mut().insert("x-kept", HeaderValue::from_static("yes"));
        let (parts, ()) = request.into_parts();
        let mut out = Vec::new();
        write_request_head(&mut out, &parts, RequestFraming::Length(5), &[]);
        assert_eq!(out, b"POST /upload?x=1 HTTP/1.1\r\nx-kept: yes\r\ncontent-length: 5\r\n\r\n");
        write_request_head(&mut out, &parts, RequestFraming::Chunked, &[]);
        assert_eq!(out, b"POST /upload?x=1 HTTP/1.1\r\nx-kept: yes\r\ntransfer-encoding: chunked\r\n\r\n");
    }

    #[test]
    fn headers_portico_sets_replace_the_client_s_and_those_it_clears_are_left_out() {
        let mut request = http::Request::get("/").body(()).expect("request");
        request.headers_mut().insert("host", HeaderValue::from_static("client.example"));
        request.headers_mut().insert("x-request-id", HeaderValue::from_static("from-client"));
        request.headers_mut().insert("accept", HeaderValue::from_static("*/*"));
        let (parts, ()) = request.into_parts();
        let (host, id) = (HeaderValue::from_static("upstream:80"), HeaderValue::from_static("abc"));
        let request_id = HeaderName::from_static("x-request-id");
        let mut out = Vec::new();
        let set = [(&http::header::HOST, Some(&host)), (&request_id, Some(&id)), (&http::header::ACCEPT, None)];
        write_request_head(&mut out, &parts, RequestFraming::None, &set);
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: upstream:80\r\nx-request-id: abc\r\n\r\n");
    }

    #[test]
    fn empty_bodies_get_a_length_only_where_a_body_is_usual() {
        assert_eq!(RequestFraming::for_body(&Method::GET, Some(0)), RequestFraming::None);
        assert_eq!(RequestFraming::for_body(&Method::POST, Some(0)), RequestFraming::Length(0));
        assert_eq!(RequestFraming::for_body(&Method::PUT, Some(7)), RequestFraming::Length(7));
        assert_eq!(RequestFraming::for_body(&Method::POST, None), RequestFraming::Chunked);
    }

    #[test]
    fn a_head_is_read_once_whole_and_leaves_the_body_behind() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello");
        let head = read_response_head(&mut buf, &Method::GET).expect("valid").expect("whole");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!((head.framing, head.keep_alive), (ResponseFraming::Length(5), true));
        assert_eq!(&buf[..], b"hello");
        assert!(read("HTTP/1.1 200 OK\r\nContent-Len", Method::GET).expect("valid").is_none());
    }

    #[test]
    fn a_connection_header_that_only_says_keep_alive_or_close_is_read_and_dropped() {
        let connection = |value: &str| {
            let mut buf =
                BytesMut::from(&format!("HTTP/1.1 200 OK\r\nConnection: {value}\r\nContent-Length: 0\r\n\r\n")[..]);
            let head = read_response_head(&mut buf, &Method::GET).expect("valid").expect("whole");
            (head.headers.get("connection").map(|v| v.to_str().unwrap_or("").to_owned()), head.keep_alive)
        };
        assert_eq!(connection("keep-alive"), (None, true));
        assert_eq!(connection("Close"), (None, false));
        // Headers it names are hop-by-hop too, and an upgrade needs it: left for later passes.
        assert_eq!(connection("keep-alive, x-trace"), (Some("keep-alive, x-trace".into()), true));
        assert_eq!(connection("upgrade"), (Some("upgrade".into()), true));
    }

    #[test]
    fn the_head_says_whether_it_has_headers_the_proxy_must_remove() {
        let hop_by_hop = |headers: &str| {
            let mut buf = BytesMut::from(&format!("HTTP/1.1 200 OK\r\n{headers}Content-Length: 0\r\n\r\n")[..]);
            read_response_head(&mut buf, &Method::GET).expect("valid").expect("whole").hop_by_hop
        };
        assert!(!hop_by_hop(""));
        assert!(!hop_by_hop("Connection: keep-alive\r\nServer: x\r\n"), "read and dropped already");
        for header in ["Connection: x-trace", "Keep-Alive: timeout=5", "Upgrade: h2c", "Trailer: x", "TE: gzip"] {
            assert!(hop_by_hop(&format!("{header}\r\n")), "{header}");
        }
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(read_response_head(&mut buf, &Method::GET).expect("valid").expect("whole").hop_by_hop);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), (ResponseFraming::Chunked, true));
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), (ResponseFraming::UntilClose, false));
        assert!(!framing("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n").1);
        assert_eq!(framing("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n"), (ResponseFraming::Length(2), false));
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"),
            (ResponseFraming::Length(2), true)
        );
        assert_eq!(framing("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"), (ResponseFraming::Length(0), true));
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\n\r\n"), (ResponseFraming::Length(0), true));
        let head = read("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD).expect("valid").expect("whole");
        assert_eq!(head.framing, ResponseFraming::Length(0));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n"), (ResponseFraming::Length(3), true));
    }

    #[test]
    fn a_length_beside_a_coding_loses_and_the_connection_is_not_reused() {
        let wire = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(framing(wire), (ResponseFraming::Chunked, false));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), (ResponseFraming::UntilClose, false));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            (ResponseFraming::Chunked, true)
        );
    }

    #[test]
    fn ambiguous_or_broken_heads_are_refused() {
        for (wire, expected) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", Malformed::Length),
            ("HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n", Malformed::Length),
            ("HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", Malformed::Length),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", Malformed::Length),
            ("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", Malformed::Length),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Malformed::Coding),
        ] {
            assert_eq!(read(wire, Method::GET).err(), Some(expected), "{wire:?}");
        }
        assert!(matches!(read("HTTP/1.1 2OO OK\r\n\r\n", Method::GET), Err(Malformed::Syntax(_))));
        assert!(matches!(read("HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", Method::GET), Err(Malformed::Syntax(_))));
        let huge = format!("HTTP/1.1 200 OK\r\nX-Big: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(read(&huge, Method::GET).err(), Some(Malformed::TooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(read(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), Method::GET).err(), Some(Malformed::TooLarge));
    }
}
