//! Request heads read off the wire, strictly: one way to read each message, or a refusal
//! (RFC 9112 §6.3, §3.2). A front door that reads a request one way while the service behind
//! it reads it another lets a request be smuggled inside another; so whatever could be read
//! two ways is refused, and Portico writes its own framing upstream.

use crate::proxy::ConnectionTokens;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderValue, Method, Request, StatusCode, Uri, Version};
use std::mem::MaybeUninit;

/// At most this many header lines; more get 431, like a head that is too large.
const MAX_HEADERS: usize = 100;
/// Headers the proxy may add to a request on its way upstream.
const ROOM_TO_ADD: usize = 4;

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
}

/// A request head, and what it says about the connection.
pub(super) struct RequestHead {
    pub request: Request<()>,
    /// `None`: the request has no body.
    pub framing: Option<Framing>,
    /// The connection can carry another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Connection: upgrade` with `Upgrade`).
    pub upgrade: bool,
}

/// Why a request head was refused; each becomes a JSON error, after which the connection
/// closes (what follows on it cannot be trusted to start a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Syntax,
    Method,
    Uri,
    UriTooLong,
    TooLarge,
    NoHost,
    TwoHosts,
    Length,
    LengthAndCoding,
    ChunkedNotLast,
    UnknownCoding,
    CodingInHttp10,
    TimedOut,
}

impl Refusal {
    /// The status, the error code and the message of the answer.
    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        use Refusal::*;
        let bad = StatusCode::BAD_REQUEST;
        match self {
            Syntax => (bad, "bad_request", "the request head is not valid HTTP/1.1"),
            Method => (bad, "bad_request", "the request method is not a valid token"),
            Uri => (bad, "bad_request", "the request target is not a valid URI"),
            UriTooLong => (StatusCode::URI_TOO_LONG, "uri_too_long", "the request line is longer than allowed"),
            TooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request headers are larger than allowed",
            ),
            NoHost => (bad, "bad_request", "an HTTP/1.1 request must have a Host header"),
            TwoHosts => (bad, "bad_request", "the request has more than one Host header"),
            Length => (bad, "bad_request", "the request has a Content-Length that is not one number"),
            LengthAndCoding => (bad, "bad_request", "the request has both Content-Length and Transfer-Encoding"),
            ChunkedNotLast => (bad, "bad_request", "the request's Transfer-Encoding does not end with chunked"),
            UnknownCoding => (
                StatusCode::NOT_IMPLEMENTED,
                "unsupported_transfer_coding",
                "the request uses a transfer coding other than chunked",
            ),
            CodingInHttp10 => (bad, "bad_request", "an HTTP/1.0 request cannot have a Transfer-Encoding"),
            TimedOut => (StatusCode::REQUEST_TIMEOUT, "client_timeout", "the request head did not arrive in time"),
        }
    }
}

/// Reads one request head from the front of `buf`, if a whole one is there: `Ok(None)` asks
/// for more bytes. Its bytes are taken from `buf`, and the header values share them.
pub(super) fn read_request_head(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<RequestHead>, Refusal> {
    // Empty lines before a request are allowed (RFC 9112 §2.2), as some clients send a CRLF
    // after a body.
    let blank = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    if blank > 0 {
        let _ = buf.split_to(blank);
    }
    let Some(length) = head_length(buf) else {
        return match buf.len() >= max_bytes {
            true if memchr::memchr(b'\n', buf).is_none() => Err(Refusal::UriTooLong),
            true => Err(Refusal::TooLarge),
            false => Ok(None),
        };
    };
    if length > max_bytes {
        return Err(Refusal::TooLarge);
    }
    let head: Bytes = buf.split_to(length).freeze();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, &head, &mut slots) {
        Ok(httparse::Status::Complete(parsed_length)) if parsed_length == length => {}
        Ok(_) => return Err(Refusal::Syntax),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Syntax),
    }
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()).map_err(|_| Refusal::Method)?;
    let target = parsed.path.unwrap_or_default();
    let uri = Uri::from_maybe_shared(head.slice_ref(target.as_bytes())).map_err(|_| Refusal::Uri)?;
    let version = if parsed.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };

    // Room for the headers the proxy adds (`X-Forwarded-For`, `X-Consumer`, ...) without
    // growing the map, which would rehash it.
    let mut headers = crate::proxy::empty_map(parsed.headers.len() + ROOM_TO_ADD);
    let (mut hosts, mut close, mut keep_alive, mut upgrade, mut expect_continue) = (0, false, false, false, false);
    let (mut content_length, mut coded, mut chunked) = (None::<u64>, false, false);
    for header in parsed.headers.iter() {
        let name = crate::proxy::name_from_wire(header.name.as_bytes()).map_err(|_| Refusal::Syntax)?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(header.value)).map_err(|_| Refusal::Syntax)?;
        if name == HOST {
            hosts += 1;
        } else if name == CONTENT_LENGTH {
            let this = parse_content_length(value.as_bytes())?;
            if content_length.is_some_and(|seen| seen != this) {
                return Err(Refusal::Length);
            }
            content_length = Some(this);
        } else if name == TRANSFER_ENCODING {
            for coding in tokens(value.as_bytes()) {
                if chunked {
                    return Err(Refusal::ChunkedNotLast);
                }
                coded = true;
                chunked = coding.eq_ignore_ascii_case(b"chunked");
                if !chunked && !coding.is_empty() {
                    // Only `chunked` can be read here: another coding would have to be
                    // passed on as it is, which Portico's own framing upstream cannot do.
                    return Err(Refusal::UnknownCoding);
                }
            }
        } else if name == CONNECTION {
            let says = ConnectionTokens::read(value.as_bytes());
            (close, keep_alive, upgrade) = (close | says.close, keep_alive | says.keep_alive, upgrade | says.upgrade);
            // Said of this connection alone, and now read: not kept for the hop-by-hop pass
            // to look up and remove again. One naming other headers or `upgrade` is kept.
            if says.only_persistence {
                continue;
            }
        } else if name == EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    if hosts > 1 {
        return Err(Refusal::TwoHosts);
    }
    if hosts == 0 && version == Version::HTTP_11 && uri.authority().is_none() {
        return Err(Refusal::NoHost);
    }
    let framing = match (coded, content_length) {
        (true, Some(_)) => return Err(Refusal::LengthAndCoding),
        (true, None) if version == Version::HTTP_10 => return Err(Refusal::CodingInHttp10),
        (true, None) if chunked => Some(Framing::Chunked),
        (true, None) => return Err(Refusal::ChunkedNotLast),
        (false, Some(0) | None) => None,
        (false, Some(length)) => Some(Framing::Length(length)),
    };
    let keep_alive = match version {
        Version::HTTP_11 => !close,
        _ => keep_alive && !close,
    };
    let upgrade = upgrade && version == Version::HTTP_11 && headers.contains_key(UPGRADE);

    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let expect_continue = expect_continue && version == Version::HTTP_11 && framing.is_some();
    Ok(Some(RequestHead { request, framing, keep_alive, expect_continue, upgrade }))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// The length of the head at the front of `buf`, up to and with the empty line that ends it
/// (CRLF CRLF, or bare LFs), if that line has arrived.
fn head_length(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|at| match &buf[at + 1..] {
        [b'\n', ..] => Some(at + 2),
        [b'\r', b'\n', ..] => Some(at + 3),
        _ => None,
    })
}

/// A `Content-Length` value: digits, or a list of equal numbers (RFC 9110 §8.6).
fn parse_content_length(value: &[u8]) -> Result<u64, Refusal> {
    let mut length = None;
    for part in tokens(value) {
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(Refusal::Length);
        }
        let this = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|seen| seen != this) {
            return Err(Refusal::Length);
        }
        length = Some(this);
    }
    length.ok_or(Refusal::Length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(wire: &str) -> Result<Option<RequestHead>, Refusal> {
        read_request_head(&mut BytesMut::from(wire), 32 * 1024)
    }

    fn framing(wire: &str) -> Result<Option<Framing>, Refusal> {
        read(wire).map(|head| head.expect("a whole head").framing)
    }

    #[test]
    fn a_head_is_read_once_whole_and_leaves_the_body_behind() {
        let mut buf = BytesMut::from("\r\nPOST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET");
        let head = read_request_head(&mut buf, 1024).expect("valid").expect("whole");
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri().path_and_query().map(|p| p.as_str()), Some("/a?b=1"));
        assert_eq!(head.request.headers()["host"], "x");
        assert_eq!(head.framing, Some(Framing::Length(2)));
        assert!(head.keep_alive && !head.expect_continue && !head.upgrade);
        assert_eq!(&buf[..], b"hiGET");
        assert!(read("GET / HTTP/1.1\r\nHost: x\r\n").expect("valid so far").is_none());
    }

    #[test]
    fn framing_is_read_one_way_or_refused() {
        assert_eq!(framing("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(None));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"), Ok(None));
        assert_eq!(framing("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n"), Ok(Some(Framing::Length(5))));
        let chunked = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(framing(chunked), Ok(Some(Framing::Chunked)));
        let refused = [
            ("Content-Length: 5\r\nContent-Length: 6", Refusal::Length),
            ("Content-Length: 5, 6", Refusal::Length),
            ("Content-Length: -1", Refusal::Length),
            ("Content-Length: +5", Refusal::Length),
            ("Content-Length: 0x10", Refusal::Length),
            ("Content-Length: 5 5", Refusal::Length),
            ("Content-Length: 99999999999999999999", Refusal::Length),
            ("Content-Length: 5\r\nTransfer-Encoding: chunked", Refusal::LengthAndCoding),
            ("Transfer-Encoding: chunked\r\nContent-Length: 5", Refusal::LengthAndCoding),
            ("Transfer-Encoding: chunked, chunked", Refusal::ChunkedNotLast),
            ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", Refusal::ChunkedNotLast),
            ("Transfer-Encoding: gzip, chunked", Refusal::UnknownCoding),
            ("Transfer-Encoding: xchunked", Refusal::UnknownCoding),
            ("Transfer-Encoding: ,", Refusal::ChunkedNotLast),
        ];
        for (headers, refusal) in refused {
            assert_eq!(framing(&format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n")), Err(refusal), "{headers}");
        }
        assert_eq!(framing("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(Refusal::CodingInHttp10));
    }

    #[test]
    fn a_connection_header_that_only_says_keep_alive_or_close_is_read_and_dropped() {
        let connection = |value: &str| {
            let head = read(&format!("GET / HTTP/1.0\r\nConnection: {value}\r\n\r\n")).expect("valid").expect("whole");
            (head.request.headers().get("connection").map(|v| v.to_str().unwrap_or("").to_owned()), head.keep_alive)
        };
        assert_eq!(connection("Keep-Alive"), (None, true));
        assert_eq!(connection("close"), (None, false));
        assert_eq!(connection("keep-alive, x-trace"), (Some("keep-alive, x-trace".into()), true));
        assert_eq!(connection("Upgrade"), (Some("Upgrade".into()), false));
    }

    #[test]
    fn hosts_obs_folds_and_broken_lines_are_refused() {
        assert_eq!(read("GET / HTTP/1.1\r\n\r\n").err(), Some(Refusal::NoHost));
        assert!(read("GET http://x/ HTTP/1.1\r\n\r\n").is_ok(), "the absolute form carries the host");
        assert!(read("GET / HTTP/1.0\r\n\r\n").is_ok(), "HTTP/1.0 needs no host");
        assert_eq!(read("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").err(), Some(Refusal::TwoHosts));
        for broken in [
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            "HELLO\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(read(broken).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn too_large_heads_are_told_apart_from_long_request_lines() {
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(2000));
        assert_eq!(read_request_head(&mut BytesMut::from(&long_line[..]), 1024).err(), Some(Refusal::UriTooLong));
        let long_headers = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}", "a".repeat(2000));
        assert_eq!(read_request_head(&mut BytesMut::from(&long_headers[..]), 1024).err(), Some(Refusal::TooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(read(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")).err(), Some(Refusal::TooLarge));
    }

    #[test]
    fn the_connection_header_decides_keep_alive_and_upgrades() {
        let head = |wire: &str| read(wire).expect("valid").expect("whole");
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let upgrade =
            head("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(upgrade.upgrade);
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n").upgrade, "no protocol named");
        let expect = "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
        assert!(head(expect).expect_continue);
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").expect_continue, "no body");
    }
}
