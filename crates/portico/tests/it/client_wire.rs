//! What Portico's HTTP/1.1 listener makes of the bytes a client sends (RFC 9112): requests
//! whose framing could be read two ways (how requests get smuggled past a gateway) are
//! refused before they reach an upstream, and the connection is closed after them; pipelined
//! requests, `Expect: 100-continue`, bodies nobody reads, HTTP/1.0 and `Connection: close`
//! keep each answer where the client expects it.
//!
//! Everything here is sent raw on a `TcpStream`: HTTP clients would fix or refuse most of it.
//! A request that should be refused is often followed, in the same write, by a harmless
//! `GET /up/after` with `Connection: close`: it keeps the test fast whatever the server does,
//! and an answer to it shows that the connection was not closed after the refusal. Where a
//! refusal is checked for a JSON error body, that is Portico's own rule for errors a client
//! can act on (see `errors.rs`), not the RFC's.

use crate::helpers::Portico;
use portico_testkit::{Reply, WireUpstream};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for the server to answer or close.
const WAIT: Duration = Duration::from_secs(2);

/// A request that closes the connection after its answer; sent after requests that should be
/// refused (see the module docs).
const AFTER: &str = "GET /up/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// The upstream behind `/up/*`. It answers with the method and path it got (so answers can be
/// told apart), a chunked body at `/up/chunked` and a 204 at `/up/no-content`.
fn answer(head: &str) -> Reply {
    let mut words = head.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    match path {
        "/up/chunked" => Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
            b"lo\r\n7;ext=1\r\n, world\r\n".to_vec(),
            b"0\r\nx-checksum: 1\r\n\r\n".to_vec(),
        ]),
        "/up/no-content" => Reply::bytes("HTTP/1.1 204 No Content\r\n\r\n"),
        _ => {
            let body = format!("{method} {path}");
            // The answer to a HEAD says how long the body would be, and has none.
            let sent = if method == "HEAD" { "" } else { body.as_str() };
            Reply::bytes(&format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{sent}", body.len()))
        }
    }
}

/// Portico with `/up/*` going to a [`WireUpstream`] (see [`answer`]) and `/mock` answered by
/// Portico itself, without reading the request body. Other paths have no route (404).
async fn gateway() -> (Portico, WireUpstream) {
    let upstream = WireUpstream::start(answer).await;
    let portico = Portico::start().await;
    portico.service("wire", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "up", "paths": ["/up/*"], "service": "wire"})).await;
    portico.create("routes", json!({"name": "mock", "paths": ["/mock"], "mock": {"body": "mocked"}})).await;
    (portico, upstream)
}

/// One client connection, and everything the server has sent on it so far.
struct Client {
    socket: TcpStream,
    received: Vec<u8>,
    /// The server closed (or reset) the connection.
    closed: bool,
}

impl Client {
    async fn connect(portico: &Portico) -> Client {
        let socket = TcpStream::connect(portico.running.proxy_addr).await.expect("connect to the proxy");
        Client { socket, received: Vec::new(), closed: false }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // A server that refuses a request may close before it has read all of it: what it
        // answered is still there to read.
        let _ = self.socket.write_all(bytes).await;
    }

    /// Reads until `done` holds for the text so far, the server closes the connection, or
    /// [`WAIT`] passes; returns the text so far.
    async fn read_until(&mut self, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.closed && !done(&self.text()) {
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.socket.read(&mut chunk)).await {
                Err(_) => break,
                Ok(Ok(0) | Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.received.extend_from_slice(&chunk[..n]),
            }
        }
        self.text()
    }

    /// Reads until `count` final responses have arrived whole (or the connection closes).
    async fn read_responses(&mut self, count: usize) -> String {
        self.read_until(|text| responses(text).iter().filter(|r| r.is_final() && r.complete).count() >= count).await
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

/// What the server sent on one connection, and whether it closed it.
struct Exchange {
    text: String,
    closed: bool,
}

/// Sends `bytes` on a new connection in one write, and reads everything the server sends
/// until it closes the connection or [`WAIT`] passes.
async fn exchange(portico: &Portico, bytes: &[u8]) -> Exchange {
    let mut client = Client::connect(portico).await;
    client.send(bytes).await;
    let text = client.read_until(|_| false).await;
    Exchange { text, closed: client.closed }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body: a request without a length, an answer to HEAD, a 1xx, 204 or 304.
    None,
    Length,
    Chunked,
    /// Until the connection closes.
    Close,
}

/// One HTTP message found in the bytes of a connection.
#[derive(Debug)]
struct Message {
    /// The request or status line.
    start: String,
    headers: Vec<(String, String)>,
    /// The body, with chunked framing removed.
    body: String,
    framing: Framing,
    /// Whether the whole body is there (one that runs to the close never is).
    complete: bool,
}

impl Message {
    fn status(&self) -> u16 {
        self.start.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
    }

    fn is_final(&self) -> bool {
        self.status() >= 200
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// Whether this is an error answer with Portico's JSON body (`{"error": "...", ...}`).
    fn is_json_error(&self) -> bool {
        let json = self.header("content-type").is_some_and(|t| t.starts_with("application/json"));
        let body: Option<Value> = serde_json::from_str(&self.body).ok();
        json && body.is_some_and(|body| body["error"].is_string())
    }
}

/// Reads one message from the start of `wire`: a request, or a response (`to_head`: one that
/// answers a HEAD). `None` if not even a whole head is there; else the message and the rest.
fn parse_message(wire: &str, request: bool, to_head: bool) -> Option<(Message, &str)> {
    let (head, rest) = wire.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (name.to_owned(), value.trim().to_owned())
        })
        .collect();
    let mut message = Message { start, headers, body: String::new(), framing: Framing::None, complete: true };
    let status = message.status();
    let chunked = message.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"));
    let length = message.header("content-length").and_then(|l| l.parse::<usize>().ok());
    if !request && (to_head || status < 200 || status == 204 || status == 304) {
        return Some((message, rest));
    }
    if chunked {
        message.framing = Framing::Chunked;
        return match dechunk(rest) {
            Some((body, rest)) => {
                message.body = body;
                Some((message, rest))
            }
            None => {
                message.complete = false;
                Some((message, ""))
            }
        };
    }
    match (length, request) {
        (Some(length), _) => {
            message.framing = Framing::Length;
            message.complete = rest.len() >= length;
            let split = length.min(rest.len());
            message.body = rest[..split].to_owned();
            Some((message, &rest[split..]))
        }
        (None, true) => Some((message, rest)),
        (None, false) => {
            message.framing = Framing::Close;
            message.complete = false;
            message.body = rest.to_owned();
            Some((message, ""))
        }
    }
}

/// The data of a chunked body at the start of `wire` (extensions and trailers are dropped),
/// and what follows it; `None` if it is incomplete or malformed.
fn dechunk(mut wire: &str) -> Option<(String, &str)> {
    let mut body = String::new();
    loop {
        let (line, after) = wire.split_once("\r\n")?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).ok()?;
        wire = after;
        if size == 0 {
            loop {
                let (trailer, after) = wire.split_once("\r\n")?;
                wire = after;
                if trailer.is_empty() {
                    return Some((body, wire));
                }
            }
        }
        body.push_str(wire.get(..size)?);
        wire = wire.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// The responses in the bytes of a connection, in order, 1xx ones included; the first
/// `heads` final ones answer HEAD requests.
fn responses_to_heads(wire: &str, heads: usize) -> Vec<Message> {
    let (mut found, mut rest, mut finals) = (Vec::new(), wire, 0);
    while let Some((message, after)) = parse_message(rest, false, finals < heads) {
        finals += usize::from(message.is_final());
        let complete = message.complete;
        found.push(message);
        if !complete {
            break;
        }
        rest = after;
    }
    found
}

/// The responses in the bytes of a connection, in order, 1xx ones included.
fn responses(wire: &str) -> Vec<Message> {
    responses_to_heads(wire, 0)
}

/// The final responses in the bytes of a connection.
fn final_responses(wire: &str) -> Vec<Message> {
    responses(wire).into_iter().filter(Message::is_final).collect()
}

/// The request the upstream received for `path`, if it received it whole.
fn upstream_request(upstream: &WireUpstream, path: &str) -> Option<Message> {
    let line = format!(" {path} HTTP/1.1");
    let request =
        upstream.requests().into_iter().find(|r| r.split("\r\n").next().is_some_and(|l| l.ends_with(&line)))?;
    parse_message(&request, true, false).map(|(message, _)| message)
}

/// What is wrong with the server's answer to a request it should refuse: it should send one
/// answer, with one of `statuses` and a JSON error body, then close the connection, and the
/// request (for `path`) should not reach the upstream. `None` if nothing is wrong.
fn refusal_problem(exchange: &Exchange, statuses: &[u16], upstream: &WireUpstream, path: &str) -> Option<String> {
    let answers = final_responses(&exchange.text);
    let first = answers.first();
    let problem = if !first.is_some_and(|r| statuses.contains(&r.status())) {
        format!("want one of {statuses:?}")
    } else if !first.is_some_and(Message::is_json_error) {
        "want a JSON error body".to_owned()
    } else if answers.len() != 1 || !exchange.closed {
        "want the connection closed after the refusal".to_owned()
    } else if upstream.requests().iter().any(|r| r.split("\r\n").next().is_some_and(|l| l.contains(path))) {
        "the upstream received the request".to_owned()
    } else {
        return None;
    };
    Some(format!("{problem}; got {:?} (closed: {})", exchange.text, exchange.closed))
}

/// Sends each `(case, path, request)` on its own connection and checks that each is refused
/// (see [`refusal_problem`]); reports every case that is not, then checks that the upstream
/// was never contacted.
async fn assert_refused(portico: &Portico, upstream: &WireUpstream, statuses: &[u16], cases: &[(&str, &str, String)]) {
    let mut problems = Vec::new();
    for (case, path, request) in cases {
        let answer = exchange(portico, request.as_bytes()).await;
        if let Some(problem) = refusal_problem(&answer, statuses, upstream, path) {
            problems.push(format!("{case}: {problem}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(upstream.connections(), 0, "the upstream was contacted: {:?}", upstream.requests());
}

#[tokio::test]
async fn a_request_with_both_content_length_and_chunked_is_refused_and_never_reaches_the_upstream() {
    // RFC 9112 §6.1 and §6.3: a server MAY reject such a request and MUST close the
    // connection after it; Portico rejects it (a gateway in front of servers that might read
    // the other length is the smuggling setup).
    let (portico, upstream) = gateway().await;
    // Read by its chunks, the body is empty and a GET for /up/smuggled follows; read by its
    // length, the GET is part of the body.
    let smuggled = "0\r\n\r\nGET /up/smuggled HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let length = format!("Content-Length: {}\r\n", smuggled.len());
    let chunked = "Transfer-Encoding: chunked\r\n";
    let request = |path: &str, framing: String| format!("POST {path} HTTP/1.1\r\nHost: a\r\n{framing}\r\n{smuggled}");
    let cases = [
        ("CL then TE", "/up/cl-te", request("/up/cl-te", format!("{length}{chunked}"))),
        ("TE then CL", "/up/te-cl", request("/up/te-cl", format!("{chunked}{length}"))),
    ];
    assert_refused(&portico, &upstream, &[400], &cases).await;
    portico.stop().await;
}

#[tokio::test]
async fn two_different_content_lengths_are_400_and_the_connection_closes() {
    // RFC 9112 §6.3 (5): an invalid Content-Length in a request is a 400, then a close.
    let (portico, upstream) = gateway().await;
    for lengths in ["Content-Length: 5\r\nContent-Length: 6\r\n", "Content-Length: 5, 6\r\n"] {
        let request = format!("POST /up/post HTTP/1.1\r\nHost: a\r\n{lengths}\r\nhello!{AFTER}");
        let answer = exchange(&portico, request.as_bytes()).await;
        let text = &answer.text;
        let answers = final_responses(text);
        assert_eq!(answers.first().map(Message::status), Some(400), "{lengths:?}: {text:?}");
        assert_eq!(answers.len(), 1, "{lengths:?}: the connection is closed after the 400: {text:?}");
        assert!(answer.closed, "{lengths:?}: {text:?}");
    }
    assert_eq!(upstream.connections(), 0, "{:?}", upstream.requests());
    portico.stop().await;
}

#[tokio::test]
async fn a_content_length_that_is_not_a_plain_number_is_400_and_the_connection_closes() {
    // RFC 9112 §6.3 (5); RFC 9110 §8.6: Content-Length = 1*DIGIT.
    let (portico, upstream) = gateway().await;
    for length in ["-1", "+5", "0x10", "5 5"] {
        let request = format!("POST /up/post HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n\r\nhello{AFTER}");
        let answer = exchange(&portico, request.as_bytes()).await;
        let text = &answer.text;
        let answers = final_responses(text);
        assert_eq!(answers.first().map(Message::status), Some(400), "{length:?}: {text:?}");
        assert_eq!(answers.len(), 1, "{length:?}: the connection is closed after the 400: {text:?}");
        assert!(answer.closed, "{length:?}: {text:?}");
    }
    assert_eq!(upstream.connections(), 0, "{:?}", upstream.requests());
    portico.stop().await;
}

#[tokio::test]
async fn a_content_length_repeated_with_the_same_value_is_accepted() {
    // RFC 9110 §8.6: a recipient MAY take `5, 5` (or the same line twice) as one `5`
    // instead of rejecting it; Portico takes it, and the body goes up whole.
    let (portico, upstream) = gateway().await;
    let cases = [("/up/list", "Content-Length: 5, 5\r\n"), ("/up/lines", "Content-Length: 5\r\nContent-Length: 5\r\n")];
    let (mut got, mut wanted, mut texts) = (Vec::new(), Vec::new(), Vec::new());
    for (path, lengths) in cases {
        let request = format!("POST {path} HTTP/1.1\r\nHost: a\r\n{lengths}Connection: close\r\n\r\nhello");
        let answer = exchange(&portico, request.as_bytes()).await;
        // (the answers' statuses and bodies, and the body the upstream got)
        let answers: Vec<(u16, String)> =
            final_responses(&answer.text).iter().map(|r| (r.status(), r.body.clone())).collect();
        got.push((lengths, answers, upstream_request(&upstream, path).map(|r| r.body)));
        wanted.push((lengths, vec![(200, format!("POST {path}"))], Some("hello".to_owned())));
        texts.push(answer.text);
    }
    assert_eq!(got, wanted, "{texts:?}");
    portico.stop().await;
}

#[tokio::test]
async fn chunked_that_is_not_the_last_transfer_coding_is_400_and_the_connection_closes() {
    // RFC 9112 §6.3 (4): the length of such a request cannot be known; 400, then a close.
    let (portico, upstream) = gateway().await;
    let request = format!(
        "POST /up/post HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n{AFTER}"
    );
    assert_refused(&portico, &upstream, &[400], &[("chunked, gzip", "/up/post", request)]).await;
    portico.stop().await;
}

#[tokio::test]
async fn a_transfer_coding_portico_does_not_know_is_refused_and_the_connection_closes() {
    // RFC 9112 §6.1: a server that does not understand a transfer coding SHOULD answer 501;
    // passing the body on decoded only of its chunks would hand the upstream gzip bytes as
    // the body. `xchunked` is not `chunked` at all (§6.3 (4): 400).
    let (portico, upstream) = gateway().await;
    let cases = [("gzip, chunked", "/up/gzip"), ("xchunked", "/up/xchunked")].map(|(coding, path)| {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n{AFTER}"
        );
        (coding, path, request)
    });
    assert_refused(&portico, &upstream, &[400, 501], &cases).await;
    portico.stop().await;
}

#[tokio::test]
async fn an_http_1_0_request_with_transfer_encoding_is_400() {
    // RFC 9112 §6.1: the framing of an HTTP/1.0 message with Transfer-Encoding is faulty
    // (even with a Content-Length); §6.3: 400, then a close.
    let (portico, upstream) = gateway().await;
    let request = "POST /up/post HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
                   5\r\nhello\r\n0\r\n\r\n";
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    let answers = final_responses(text);
    assert_eq!(answers.first().map(Message::status), Some(400), "{text:?}");
    assert_eq!(answers.len(), 1, "{text:?}");
    assert!(answer.closed, "{text:?}");
    assert_eq!(upstream.connections(), 0, "{:?}", upstream.requests());
    portico.stop().await;
}

#[tokio::test]
async fn a_folded_header_line_is_400() {
    // RFC 9112 §5.2: obs-fold in a request is rejected with 400 (or replaced by spaces);
    // Portico rejects it.
    let (portico, upstream) = gateway().await;
    for fold in [" ", "\t"] {
        let request = format!("GET /up/fold HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n{fold}two\r\n\r\n{AFTER}");
        let answer = exchange(&portico, request.as_bytes()).await;
        let text = &answer.text;
        assert_eq!(final_responses(text).first().map(Message::status), Some(400), "{fold:?}: {text:?}");
    }
    assert!(upstream_request(&upstream, "/up/fold").is_none(), "{:?}", upstream.requests());
    portico.stop().await;
}

#[tokio::test]
async fn whitespace_between_a_header_name_and_its_colon_is_400() {
    // RFC 9112 §5.1: a server MUST reject such a request with 400. (A server that took
    // `Content-Length : 5` for some other header would read the body as the next request.)
    let (portico, upstream) = gateway().await;
    for head in ["Host : a\r\n", "Host: a\r\nContent-Length : 5\r\n", "Host: a\r\nX-Thing\t: x\r\n"] {
        let request = format!("POST /up/spaced HTTP/1.1\r\n{head}\r\nhello{AFTER}");
        let answer = exchange(&portico, request.as_bytes()).await;
        let text = &answer.text;
        assert_eq!(final_responses(text).first().map(Message::status), Some(400), "{head:?}: {text:?}");
    }
    assert!(upstream_request(&upstream, "/up/spaced").is_none(), "{:?}", upstream.requests());
    portico.stop().await;
}

#[tokio::test]
async fn an_http_1_1_request_without_host_is_400() {
    // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
    let (portico, upstream) = gateway().await;
    let request = format!("GET /up/no-host HTTP/1.1\r\nAccept: */*\r\n\r\n{AFTER}");
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    assert_eq!(final_responses(text).first().map(Message::status), Some(400), "{text:?}");
    assert!(upstream_request(&upstream, "/up/no-host").is_none(), "{:?}", upstream.requests());
    portico.stop().await;
}

#[tokio::test]
async fn a_request_with_two_host_headers_is_400() {
    // RFC 9112 §3.2: a server MUST answer 400 to a request with more than one Host line
    // (which one routes it, and which one the upstream reads?).
    let (portico, upstream) = gateway().await;
    let request = format!("GET /up/two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{AFTER}");
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    assert_eq!(final_responses(text).first().map(Message::status), Some(400), "{text:?}");
    assert!(upstream_request(&upstream, "/up/two-hosts").is_none(), "{:?}", upstream.requests());
    portico.stop().await;
}

#[tokio::test]
async fn three_pipelined_requests_get_three_answers_in_order() {
    // RFC 9112 §9.3.2: a server answers pipelined requests in the order they came.
    let (portico, _upstream) = gateway().await;
    let request = "GET /up/one HTTP/1.1\r\nHost: a\r\n\r\n\
                   GET /up/two HTTP/1.1\r\nHost: a\r\n\r\n\
                   GET /up/three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    let bodies: Vec<(u16, String)> = final_responses(text).iter().map(|r| (r.status(), r.body.clone())).collect();
    let wanted = ["GET /up/one", "GET /up/two", "GET /up/three"].map(|b| (200, b.to_owned()));
    assert_eq!(bodies, wanted, "{text:?}");
    let ids: Vec<String> =
        final_responses(text).iter().filter_map(|r| r.header("x-request-id")).map(str::to_owned).collect();
    assert_eq!(ids.len(), 3, "each answer has its request id: {text:?}");
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:?}");
    assert!(answer.closed, "closed after the request that asked for it: {text:?}");
    portico.stop().await;
}

#[tokio::test]
async fn a_pipelined_chunked_post_and_get_are_both_answered_and_the_body_arrives_whole() {
    let (portico, upstream) = gateway().await;
    let request = "POST /up/post HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
                   GET /up/get HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    let bodies: Vec<(u16, String)> = final_responses(text).iter().map(|r| (r.status(), r.body.clone())).collect();
    assert_eq!(bodies, [(200, "POST /up/post".to_owned()), (200, "GET /up/get".to_owned())], "{text:?}");
    let post = upstream_request(&upstream, "/up/post").expect("the upstream got the POST whole");
    assert_eq!(post.body, "hello world");
    assert!(upstream_request(&upstream, "/up/get").is_some_and(|get| get.body.is_empty()));
    portico.stop().await;
}

#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_and_the_upstream_gets_it_whole() {
    // RFC 9110 §10.1.1: a client that sends `Expect: 100-continue` waits for the 100 before
    // it sends the body.
    let (portico, upstream) = gateway().await;
    let mut client = Client::connect(&portico).await;
    client.send(b"POST /up/expect HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n").await;
    let interim = client.read_until(|text| text.contains("\r\n\r\n")).await;
    assert!(interim.starts_with("HTTP/1.1 100 "), "a 100 Continue first: {interim:?}");
    assert!(interim.ends_with("\r\n\r\n"), "nothing but the 100 before the body is sent: {interim:?}");
    client.send(b"hello world").await;
    let text = client.read_responses(1).await;
    let answers = final_responses(&text);
    assert_eq!(answers.len(), 1, "{text:?}");
    assert_eq!((answers[0].status(), answers[0].body.as_str()), (200, "POST /up/expect"), "{text:?}");
    let received = upstream_request(&upstream, "/up/expect").expect("the upstream got the request whole");
    assert_eq!(received.body, "hello world");
    portico.stop().await;
}

#[tokio::test]
async fn expect_100_continue_to_a_route_that_does_not_read_the_body_gets_only_the_final_answer() {
    // RFC 9110 §10.1.1: a server MAY answer with a final status instead of 100 Continue;
    // one that will not read the body should.
    let (portico, _upstream) = gateway().await;
    for (path, status, code) in [("/mock", 200, None), ("/nowhere", 404, Some("no_route"))] {
        let mut client = Client::connect(&portico).await;
        let head = format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
        client.send(head.as_bytes()).await;
        let text = client.read_responses(1).await;
        let answers = responses(&text);
        let first = answers.first().expect("an answer without the body being sent");
        assert_eq!(first.status(), status, "{path}: no 100 Continue before the final answer: {text:?}");
        match code {
            Some(code) => assert!(first.body.contains(&format!("\"error\":\"{code}\"")), "{text:?}"),
            None => assert_eq!(first.body, "mocked", "{text:?}"),
        }
    }
    portico.stop().await;
}

#[tokio::test]
async fn an_unread_body_is_skipped_not_taken_for_the_next_request() {
    // RFC 9112 §6.3: the body's length is its Content-Length whether or not anyone reads it;
    // here the body is itself a request, which must not be answered.
    let (portico, upstream) = gateway().await;
    let body = "GET /up/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    for (path, status) in [("/mock", 200), ("/nowhere", 404)] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}\
             GET /up/next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let answer = exchange(&portico, request.as_bytes()).await;
        let text = &answer.text;
        // (status, whether it is the answer to /up/next)
        let answers: Vec<(u16, bool)> =
            final_responses(text).iter().map(|r| (r.status(), r.body == "GET /up/next")).collect();
        assert_eq!(answers, [(status, false), (200, true)], "{path}: {text:?}");
    }
    assert!(upstream_request(&upstream, "/up/smuggled").is_none(), "{:?}", upstream.requests());
    portico.stop().await;
}

#[tokio::test]
async fn an_http_1_0_request_is_answered_and_the_connection_closes() {
    // RFC 9112 §9.3: HTTP/1.0 connections do not persist unless asked to.
    let (portico, _upstream) = gateway().await;
    let answer = exchange(&portico, b"GET /mock HTTP/1.0\r\n\r\n").await;
    let text = &answer.text;
    let answers = final_responses(text);
    assert_eq!(answers.len(), 1, "{text:?}");
    assert!(answers[0].start.starts_with("HTTP/1."), "{text:?}");
    assert_eq!((answers[0].status(), answers[0].body.as_str()), (200, "mocked"), "{text:?}");
    assert!(answer.closed, "{text:?}");
    portico.stop().await;
}

#[tokio::test]
async fn an_http_1_0_keep_alive_request_gets_a_length_and_the_connection_stays_open() {
    // RFC 9112 §9.3 and Appendix C.2.2: an HTTP/1.0 client keeps the connection only if the
    // answer says `keep-alive`, and then needs the body's length to find its end.
    let (portico, _upstream) = gateway().await;
    let mut client = Client::connect(&portico).await;
    client.send(b"GET /mock HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await;
    let text = client.read_responses(1).await;
    let answers = final_responses(&text);
    assert_eq!(answers.len(), 1, "{text:?}");
    assert_eq!((answers[0].status(), answers[0].body.as_str()), (200, "mocked"), "{text:?}");
    assert_eq!(answers[0].framing, Framing::Length, "{text:?}");
    assert!(answers[0].header("connection").is_some_and(|c| c.eq_ignore_ascii_case("keep-alive")), "{text:?}");
    assert!(!client.closed, "{text:?}");

    client.send(b"GET /up/second HTTP/1.0\r\n\r\n").await;
    let text = client.read_until(|_| false).await;
    let answers = final_responses(&text);
    assert_eq!(answers.len(), 2, "the second request was answered on the same connection: {text:?}");
    assert_eq!((answers[1].status(), answers[1].body.as_str()), (200, "GET /up/second"), "{text:?}");
    assert!(client.closed, "closed after the request without keep-alive: {text:?}");
    portico.stop().await;
}

#[tokio::test]
async fn connection_close_is_answered_with_connection_close_and_a_close() {
    // RFC 9112 §9.6: a server that gets `close` sends `close` in its answer, then closes.
    let (portico, _upstream) = gateway().await;
    for path in ["/mock", "/up/close"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let answer = exchange(&portico, request.as_bytes()).await;
        let text = &answer.text;
        let answers = final_responses(text);
        assert_eq!(answers.len(), 1, "{text:?}");
        assert_eq!(answers[0].status(), 200, "{text:?}");
        assert!(answers[0].header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")), "{text:?}");
        assert!(answer.closed, "{text:?}");
    }
    portico.stop().await;
}

#[tokio::test]
async fn chunk_extensions_and_trailers_reach_the_upstream_as_the_same_data() {
    // RFC 9112 §7.1: extensions and trailers are part of the framing; the data is the same.
    let (portico, upstream) = gateway().await;
    let request = format!(
        "POST /up/trailers HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;name=value\r\nhello\r\n7;x\r\n, world\r\n0\r\nX-Checksum: 1\r\n\r\n{AFTER}"
    );
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    let bodies: Vec<(u16, String)> = final_responses(text).iter().map(|r| (r.status(), r.body.clone())).collect();
    assert_eq!(bodies, [(200, "POST /up/trailers".to_owned()), (200, "GET /up/after".to_owned())], "{text:?}");
    let received = upstream_request(&upstream, "/up/trailers").expect("the upstream got the request whole");
    assert_eq!(received.body, "hello, world");
    portico.stop().await;
}

#[tokio::test]
async fn a_malformed_chunk_size_never_reaches_the_upstream_as_a_complete_request() {
    // RFC 9112 §7.1: a chunk size is hex. The first chunk may have gone up already; the
    // upstream must not be told that the body ended.
    let (portico, upstream) = gateway().await;
    let request = format!(
        "POST /up/bad-chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n{AFTER}"
    );
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    let answers = final_responses(text);
    assert!(answers.len() <= 1, "nothing is answered after the broken body: {text:?}");
    if let Some(first) = answers.first() {
        assert!(first.status() == 400 && first.is_json_error(), "a 400 with a JSON body, or none: {text:?}");
    }
    assert!(answer.closed, "{text:?}");
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    portico.stop().await;
}

#[tokio::test]
async fn an_absurdly_long_uri_is_414_or_431_and_the_connection_closes() {
    // RFC 9112 §3: a request-target longer than the server will parse is a 414 (here also a
    // head over Portico's limit, so 431 will do).
    let (portico, upstream) = gateway().await;
    let request = format!("GET /up/{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100 * 1024));
    assert_refused(&portico, &upstream, &[414, 431], &[("a 100 KiB URI", "/up/aaaa", request)]).await;
    portico.stop().await;
}

#[tokio::test]
async fn a_request_line_that_is_not_http_is_400() {
    // RFC 9112 §3: an invalid request line is answered 400 (or the connection is closed);
    // the connection cannot go on after it.
    let (portico, upstream) = gateway().await;
    let answer = exchange(&portico, format!("HELLO\r\n\r\n{AFTER}").as_bytes()).await;
    let text = &answer.text;
    let answers = final_responses(text);
    assert_eq!(answers.first().map(Message::status), Some(400), "{text:?}");
    assert_eq!(answers.len(), 1, "{text:?}");
    assert!(answer.closed, "{text:?}");
    assert_eq!(upstream.connections(), 0);
    portico.stop().await;
}

#[tokio::test]
async fn the_answer_to_head_has_no_body() {
    // RFC 9110 §9.3.2; RFC 9112 §6.3 (1): the answer to HEAD ends with its head, whatever
    // length it announces.
    let (portico, _upstream) = gateway().await;
    let request =
        "HEAD /up/head HTTP/1.1\r\nHost: a\r\n\r\nGET /up/get HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    let answers: Vec<Message> = responses_to_heads(text, 1).into_iter().filter(Message::is_final).collect();
    assert_eq!(answers.len(), 2, "{text:?}");
    assert_eq!(answers[0].status(), 200, "{text:?}");
    assert_eq!(answers[0].header("content-length"), Some("13"), "the length the upstream announced: {text:?}");
    assert_eq!(
        (answers[1].status(), answers[1].body.as_str()),
        (200, "GET /up/get"),
        "no body bytes between: {text:?}"
    );
    portico.stop().await;
}

#[tokio::test]
async fn a_204_from_the_upstream_reaches_the_client_without_a_body() {
    // RFC 9110 §15.3.5; RFC 9112 §6.1: no body, and no Transfer-Encoding, on a 204.
    let (portico, _upstream) = gateway().await;
    let request =
        "GET /up/no-content HTTP/1.1\r\nHost: a\r\n\r\nGET /up/get HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    let answers = final_responses(text);
    assert_eq!(answers.len(), 2, "{text:?}");
    assert_eq!(answers[0].status(), 204, "{text:?}");
    assert_eq!(answers[0].header("transfer-encoding"), None, "{text:?}");
    assert!(answers[0].header("content-length").is_none_or(|l| l == "0"), "{text:?}");
    assert_eq!(
        (answers[1].status(), answers[1].body.as_str()),
        (200, "GET /up/get"),
        "no body bytes between: {text:?}"
    );
    portico.stop().await;
}

#[tokio::test]
async fn a_chunked_upstream_body_reaches_an_http_1_1_client_whole() {
    let (portico, _upstream) = gateway().await;
    let request =
        "GET /up/chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /up/get HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = exchange(&portico, request.as_bytes()).await;
    let text = &answer.text;
    let answers = final_responses(text);
    assert_eq!(answers.len(), 2, "{text:?}");
    assert!(matches!(answers[0].framing, Framing::Chunked | Framing::Length), "{text:?}");
    assert_eq!((answers[0].status(), answers[0].body.as_str()), (200, "hello, world"), "{text:?}");
    assert_eq!((answers[1].status(), answers[1].body.as_str()), (200, "GET /up/get"), "{text:?}");
    portico.stop().await;
}

#[tokio::test]
async fn a_streamed_body_reaches_an_http_1_0_client_unchunked_and_the_connection_closes() {
    // RFC 9112 §6.1: chunked is not sent to an HTTP/1.0 client, which cannot read it; the
    // body then ends with the connection (or has a length).
    let (portico, _upstream) = gateway().await;
    let answer = exchange(&portico, b"GET /up/chunked HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let text = &answer.text;
    let answers = final_responses(text);
    assert_eq!(answers.len(), 1, "{text:?}");
    assert_eq!(answers[0].header("transfer-encoding"), None, "{text:?}");
    assert!(matches!(answers[0].framing, Framing::Close | Framing::Length), "{text:?}");
    assert_eq!((answers[0].status(), answers[0].body.as_str()), (200, "hello, world"), "{text:?}");
    assert!(answer.closed, "{text:?}");
    portico.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once_and_lets_a_request_in_flight_finish() {
    let upstream = portico_testkit::MockUpstream::start("slow").await;
    let portico = Portico::start().await;
    portico.service("slow", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "slow", "paths": ["/delay/*"], "service": "slow"})).await;
    portico.create("routes", json!({"name": "mock", "paths": ["/mock"], "mock": {"body": "mocked"}})).await;

    let mut idle = Client::connect(&portico).await;
    idle.send(b"GET /mock HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(idle.read_responses(1).await.ends_with("mocked"));
    let mut busy = Client::connect(&portico).await;
    busy.send(b"GET /delay/700 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The drain timeout is 30 s: an idle connection that held up the shutdown would show.
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(portico.stop());
    let answer = busy.read_until(|_| false).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "the request in flight finishes: {answer}");
    assert!(answer.contains("connection: close\r\n"), "and says the connection closes: {answer}");
    assert!(busy.closed, "the busy connection closes after its answer");
    idle.read_until(|_| false).await;
    assert!(idle.closed, "the idle connection is closed");
    assert_eq!(idle.text().matches("HTTP/1.1 ").count(), 1, "quietly: {}", idle.text());
    stopping.await.expect("shutdown");
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown waited for the drain timeout");
}
