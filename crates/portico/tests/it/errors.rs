//! Errors a client can act on: each with the right status, a small JSON body naming what
//! happened and the request id, and nothing about the upstream's internals.

use crate::helpers::Portico;
use portico_testkit::MockUpstream;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn error_body(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let id = response.headers()["x-request-id"].to_str().expect("id").to_owned();
    let body: Value = response.json().await.expect("json body");
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["request_id"], id.as_str());
    body
}

#[tokio::test]
async fn no_route_is_404() {
    let portico = Portico::start().await;
    error_body(portico.get("/nowhere").send().await.expect("request"), 404, "no_route").await;
    portico.stop().await;
}

#[tokio::test]
async fn paths_that_climb_out_of_a_route_are_400() {
    let upstream = MockUpstream::start("public").await;
    let portico = Portico::start().await;
    portico.service("public", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "public", "paths": ["/public/*"], "service": "public"})).await;
    // Sent raw: HTTP clients would remove the dot segments themselves.
    for path in ["/public/../admin", "/public/%2e%2e/admin", "/public/./x"] {
        let mut socket = tokio::net::TcpStream::connect(portico.running.proxy_addr).await.expect("connect");
        let head = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        socket.write_all(head.as_bytes()).await.expect("write");
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 400 "), "{path}: {answer}");
        assert!(answer.contains("\"error\":\"bad_path\""), "{answer}");
    }
    assert_eq!(upstream.hits(), 0);
    portico.stop().await;
}

/// A port nothing listens on: bind one, note it, let it go.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

#[tokio::test]
async fn refused_and_broken_upstreams_are_502_without_details() {
    let upstream = MockUpstream::start("flaky").await;
    let portico = Portico::start().await;
    let down = closed_port().await;
    portico.service("down", std::slice::from_ref(&down)).await;
    portico.service("flaky", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "down", "paths": ["/down"], "service": "down"})).await;
    portico.create("routes", json!({"name": "flaky", "paths": ["/close"], "service": "flaky"})).await;

    let body = error_body(portico.get("/down").send().await.expect("request"), 502, "upstream_unavailable").await;
    let text = body.to_string();
    assert!(!text.contains(&down) && !text.to_lowercase().contains("refused"), "internals leaked: {text}");
    error_body(portico.get("/close").send().await.expect("request"), 502, "upstream_error").await;
    portico.stop().await;
}

#[tokio::test]
async fn slow_upstreams_are_504() {
    let upstream = MockUpstream::start("slow").await;
    let portico = Portico::start().await;
    let service = json!({"name": "slow", "targets": [{"address": upstream.addr.to_string()}], "read_timeout_ms": 200});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "slow", "service": "slow"})).await;
    error_body(portico.get("/delay/3000").send().await.expect("request"), 504, "upstream_timeout").await;
    assert_eq!(portico.get("/delay/10").send().await.expect("request").status(), 200);
    portico.stop().await;
}

#[tokio::test]
async fn a_body_is_cut_off_only_when_one_wait_for_it_passes_the_read_timeout() {
    let upstream = MockUpstream::start("drip").await;
    let portico = Portico::start().await;
    let service = json!({"name": "drip", "targets": [{"address": upstream.addr.to_string()}], "read_timeout_ms": 300});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "drip", "service": "drip"})).await;

    // Eight pieces 100 ms apart: the whole body takes longer than the timeout, no wait does.
    let steady = portico.get("/drip/8/100").send().await.expect("request");
    assert_eq!(steady.status(), 200);
    assert_eq!(steady.text().await.expect("the whole body"), "drip\n".repeat(8));

    // A wait longer than the timeout: the head has gone, so the client sees the body
    // break off instead of an end that would pass for complete.
    let stalled = portico.get("/drip/3/700").send().await.expect("request");
    let started = std::time::Instant::now();
    let cut = stalled.bytes().await;
    assert!(cut.is_err(), "a body that stops for longer than the read timeout breaks off: {cut:?}");
    assert!(started.elapsed() < Duration::from_millis(650), "cut at the timeout, not at the next piece");
    portico.stop().await;
}

#[tokio::test]
async fn bodies_over_the_route_limit_are_413() {
    let upstream = MockUpstream::start("up").await;
    let portico = Portico::start().await;
    portico.service("up", &[upstream.addr.to_string()]).await;
    portico
        .create("routes", json!({"name": "small", "paths": ["/count"], "max_body_bytes": 1024, "service": "up"}))
        .await;
    let post = |body: reqwest::Body| portico.http.post(format!("{}/count", portico.proxy)).body(body).send();

    // Declared too large: refused before the upstream is contacted.
    let hits = upstream.hits();
    error_body(post(vec![0u8; 4096].into()).await.expect("request"), 413, "body_too_large").await;
    assert_eq!(upstream.hits(), hits);

    // Streamed (chunked) past the limit: cut off on the way.
    let chunks = futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![0u8; 512])));
    let cut = post(reqwest::Body::wrap_stream(chunks)).await.expect("request");
    // The rest of the body is not read: the connection closes, and says so, so that the
    // client does not send its next request on it.
    assert_eq!(cut.headers()["connection"], "close");
    error_body(cut, 413, "body_too_large").await;

    // At the limit: fine.
    let ok = post(vec![0u8; 1024].into()).await.expect("request");
    assert_eq!(ok.json::<Value>().await.expect("json")["bytes"], 1024);

    // Mock routes keep the limit too.
    portico
        .create("routes", json!({"name": "mock", "paths": ["/mock"], "max_body_bytes": 10, "mock": {"body": "ok"}}))
        .await;
    let mock = portico.http.post(format!("{}/mock", portico.proxy)).body("more than ten bytes").send();
    error_body(mock.await.expect("request"), 413, "body_too_large").await;
    portico.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let portico = Portico::start().await;
    portico.create("routes", json!({"name": "any", "mock": {"body": "ok"}})).await;
    let big = "x".repeat(40 * 1024);
    let response = portico.get("/").header("x-big", big).send().await.expect("request");
    error_body(response, 431, "headers_too_large").await;
    assert_eq!(portico.get("/").send().await.expect("request").status(), 200);
    portico.stop().await;
}

#[tokio::test]
async fn a_slow_request_head_gets_408_and_the_connection_closes() {
    // The test settings give clients one second to send a head.
    let portico = Portico::start().await;
    let mut socket = tokio::net::TcpStream::connect(portico.running.proxy_addr).await.expect("connect");
    socket.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Drip: 1\r\n").await.expect("partial head");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("\"error\":\"client_timeout\""), "{answer}");
    portico.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_quietly() {
    let portico = Portico::start_with(|s| s.proxy.idle_timeout = Duration::from_secs(1)).await;
    portico.create("routes", json!({"name": "any", "mock": {"body": "ok"}})).await;
    let mut socket = tokio::net::TcpStream::connect(portico.running.proxy_addr).await.expect("connect");
    socket.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("request");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the idle connection was not closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    // (Not a search for "408": the random request id may hold those digits.)
    let quiet = answer.matches("HTTP/1.1 ").count() == 1 && !answer.contains("client_timeout");
    assert!(quiet, "an idle connection gets no error: {answer}");
    portico.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408() {
    let upstream = MockUpstream::start("up").await;
    let portico = Portico::start().await;
    let service = json!({"name": "up", "targets": [{"address": upstream.addr.to_string()}], "write_timeout_ms": 300});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "up", "service": "up"})).await;
    // One chunk, then silence for longer than the write timeout.
    let chunks = futures_util::stream::unfold(0, |sent| async move {
        match sent {
            0 => Some((Ok::<_, std::io::Error>(vec![b'x'; 1024]), 1)),
            _ => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                None
            }
        }
    });
    let response =
        portico.http.post(format!("{}/count", portico.proxy)).body(reqwest::Body::wrap_stream(chunks)).send();
    error_body(response.await.expect("request"), 408, "client_timeout").await;
    portico.stop().await;
}

#[tokio::test]
async fn upstreams_closing_idle_connections_cause_no_errors() {
    let upstream = MockUpstream::start_with_idle_close("closer", Some(Duration::from_millis(100))).await;
    let portico = Portico::start_with(|s| s.workers = 1).await;
    portico.service("closer", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "closer", "service": "closer"})).await;
    for _ in 0..5 {
        let response = portico.get("/again").send().await.expect("request");
        assert_eq!(response.status(), 200, "a pooled connection the upstream closed was reused");
        // Long enough for the upstream to close the pooled connection.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(upstream.connections(), 5, "the upstream closed every idle connection");
    portico.stop().await;
}
