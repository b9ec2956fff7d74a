//! What Portico makes of the bytes an upstream sends: every framing of a response body,
//! informational answers, answers that come before the request body is all sent, and
//! responses that are broken or could be read two ways (how responses get smuggled).

use crate::helpers::Portico;
use portico_testkit::{Reply, WireUpstream};
use serde_json::json;

async fn portico_to(upstream: &WireUpstream) -> Portico {
    let portico = Portico::start().await;
    portico.service("wire", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "wire", "paths": ["/*"], "service": "wire"})).await;
    portico
}

fn answer(head: &str) -> Reply {
    let path = head.split(' ').nth(1).unwrap_or("/");
    match path {
        // The answer to a HEAD says how long the body would be, and has none.
        "/length" if head.starts_with("HEAD ") => Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"),
        "/length" => Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello, world"),
        "/chunked" => Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
            b"lo\r\n7;ext=1\r\n, world\r\n".to_vec(),
            b"0\r\nx-checksum: 1\r\n\r\n".to_vec(),
        ]),
        "/until-close" => Reply::ThenClose(b"HTTP/1.1 200 OK\r\n\r\nall of it, until the close".to_vec()),
        "/continue" => {
            Reply::bytes("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        }
        "/no-content" => Reply::bytes("HTTP/1.1 204 No Content\r\n\r\n"),
        "/two-lengths" => Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        "/smuggle" => Reply::bytes(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        ),
        "/bad-chunk" => Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".to_vec(),
            b"zz\r\n".to_vec(),
        ]),
        "/echo" => Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        "/switch" => {
            Reply::bytes("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: chat\r\n\r\nfirst words")
        }
        "/expect" => Reply::Continue(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ngot".to_vec()),
        "/early" => Reply::Early(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope".to_vec()),
        _ => Reply::bytes("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    }
}

#[tokio::test]
async fn bodies_in_every_framing_arrive_whole_and_the_connection_is_reused_when_it_can_be() {
    let upstream = WireUpstream::start(answer).await;
    let portico = portico_to(&upstream).await;
    let text = |path: &'static str| {
        let request = portico.get(path);
        async move {
            let response = request.send().await.expect("request");
            (response.status().as_u16(), response.text().await.expect("body"))
        }
    };

    assert_eq!(text("/length").await, (200, "hello, world".into()));
    assert_eq!(text("/chunked").await, (200, "hello, world".into()), "chunks and trailers decoded");
    assert_eq!(text("/continue").await, (201, "done".into()), "a 100 Continue is passed over");
    assert_eq!(text("/no-content").await, (204, String::new()));
    assert_eq!(text("/length").await, (200, "hello, world".into()));
    assert_eq!(upstream.connections(), 1, "one connection carried every length-framed answer");

    assert_eq!(text("/until-close").await, (200, "all of it, until the close".into()));
    assert_eq!(text("/length").await, (200, "hello, world".into()));
    assert_eq!(upstream.connections(), 2, "a body that ends with its connection takes it along");

    let head = portico.http.head(format!("{}/length", portico.proxy)).send().await.expect("HEAD");
    assert_eq!((head.status().as_u16(), head.headers()["content-length"].to_str().ok()), (200, Some("12")));
    assert_eq!(text("/length").await, (200, "hello, world".into()), "the answer to HEAD was not waited on for a body");
    assert_eq!(upstream.connections(), 2);
    portico.stop().await;
}

#[tokio::test]
async fn request_bodies_go_up_framed_by_portico() {
    let upstream = WireUpstream::start(answer).await;
    let portico = portico_to(&upstream).await;
    let post = |body: reqwest::Body| portico.http.post(format!("{}/echo", portico.proxy)).body(body).send();

    assert_eq!(post("0123456789".into()).await.expect("request").status(), 200);
    let pieces = futures_util::stream::iter(["abc", "defgh"].map(|p| Ok::<_, std::io::Error>(p.as_bytes().to_vec())));
    assert_eq!(post(reqwest::Body::wrap_stream(pieces)).await.expect("request").status(), 200);
    let empty = portico.http.post(format!("{}/echo", portico.proxy)).send().await.expect("request");
    assert_eq!(empty.status(), 200);

    let requests = upstream.requests();
    assert!(
        requests[0].contains("\r\ncontent-length: 10\r\n") && requests[0].ends_with("\r\n\r\n0123456789"),
        "{:?}",
        requests[0]
    );
    assert!(requests[1].contains("\r\ntransfer-encoding: chunked\r\n"), "{:?}", requests[1]);
    assert!(requests[1].ends_with("\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"), "{:?}", requests[1]);
    assert!(
        requests[2].contains("\r\ncontent-length: 0\r\n"),
        "an empty POST still says its length: {:?}",
        requests[2]
    );
    assert_eq!(upstream.connections(), 1);
    portico.stop().await;
}

#[tokio::test]
async fn an_answer_before_the_body_is_sent_stops_the_upload() {
    let upstream = WireUpstream::start(answer).await;
    let portico = portico_to(&upstream).await;
    // A body that would take 5 s to send; the upstream refuses it at its head.
    let slow = futures_util::stream::unfold(0, |n| async move {
        (n < 50).then_some(())?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(vec![b'x'; 1024]), n + 1))
    });
    let started = std::time::Instant::now();
    let response = portico.http.post(format!("{}/early", portico.proxy)).body(reqwest::Body::wrap_stream(slow)).send();
    let response = response.await.expect("request");
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await.expect("body"), "nope");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "the answer did not wait for the body");

    // That connection is not used again: it is in the middle of a request.
    let next = portico.get("/length").send().await.expect("request");
    assert_eq!(next.text().await.expect("body"), "hello, world");
    assert_eq!(upstream.connections(), 2);
    portico.stop().await;
}

#[tokio::test]
async fn a_100_continue_during_the_upload_lets_the_body_go_on() {
    let upstream = WireUpstream::start(answer).await;
    let portico = portico_to(&upstream).await;
    // The upstream says `100 Continue` at the head; the body is still on its way then.
    let pieces = futures_util::stream::unfold(0, |n| async move {
        (n < 3).then_some(())?;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(b"part".to_vec()), n + 1))
    });
    let response = portico.http.post(format!("{}/expect", portico.proxy)).body(reqwest::Body::wrap_stream(pieces));
    let response = response.send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "got");
    let requests = upstream.requests();
    assert!(requests[0].ends_with("4\r\npart\r\n4\r\npart\r\n4\r\npart\r\n0\r\n\r\n"), "{:?}", requests[0]);
    portico.stop().await;
}

#[tokio::test]
async fn ambiguous_or_broken_answers_go_no_further() {
    let upstream = WireUpstream::start(answer).await;
    let portico = portico_to(&upstream).await;

    // Two lengths: which is right cannot be known, so nothing of it is passed on.
    let response = portico.get("/two-lengths").send().await.expect("request");
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"], "upstream_error");

    // Bytes after the end of an answer are not taken for the next answer.
    let first = portico.get("/smuggle").send().await.expect("request");
    assert_eq!(first.text().await.expect("body"), "ok");
    let connections = upstream.connections();
    let next = portico.get("/length").send().await.expect("request");
    assert_eq!(next.text().await.expect("body"), "hello, world", "not the smuggled answer");
    assert_eq!(upstream.connections(), connections + 1, "the connection with extra bytes was dropped");

    // A chunk size that is not hex: the head has gone, so the body breaks off.
    let broken = portico.get("/bad-chunk").send().await.expect("request");
    assert_eq!(broken.status(), 200);
    assert!(broken.bytes().await.is_err(), "a broken body does not pass for a complete one");
    portico.stop().await;
}

/// The request's headers as one upstream saw them, lower-cased names.
fn header<'r>(request: &'r str, name: &str) -> Option<&'r str> {
    request.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn retried_and_mirrored_requests_carry_the_headers_portico_sets() {
    // The first target answers 503 and is retried; the shadow gets a copy of what was sent.
    let failing = WireUpstream::start(|_| Reply::bytes("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")).await;
    let healthy = WireUpstream::start(answer).await;
    let shadow = WireUpstream::start(answer).await;
    let portico = Portico::start().await;
    let targets = [failing.addr.to_string(), healthy.addr.to_string()];
    let service = json!({"name": "pair",
        "targets": targets.iter().map(|t| json!({"address": t})).collect::<Vec<_>>(),
        "retries": {"attempts": 1, "on": ["503"], "budget_percent": 100}});
    portico.create("services", service).await;
    portico.service("shadow", &[shadow.addr.to_string()]).await;
    portico.create("routes", json!({"name": "pair", "service": "pair", "mirror": {"service": "shadow"}})).await;

    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = portico.get("/echo").header("host", "api.example").send().await.expect("request");
        assert_eq!(response.status(), 200);
        ids.push(response.headers()["x-request-id"].to_str().expect("id").to_owned());
    }
    for _ in 0..100 {
        if shadow.requests().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (tried, answered, mirrored) = (failing.requests(), healthy.requests(), shadow.requests());
    assert!(!tried.is_empty(), "round robin sent a request to the failing target");
    assert_eq!((answered.len(), mirrored.len()), (2, 2), "every request was answered, after a retry if need be");
    for (request, upstream) in [(&tried[0], &failing), (&answered[0], &healthy), (&mirrored[0], &shadow)] {
        assert!(ids.iter().any(|id| header(request, "x-request-id") == Some(id)), "{request}");
        assert_eq!(header(request, "x-forwarded-proto"), Some("http"), "{request}");
        assert_eq!(header(request, "x-forwarded-host"), Some("api.example"), "{request}");
        assert_eq!(header(request, "x-forwarded-for"), Some("127.0.0.1"), "{request}");
        assert_eq!(header(request, "traceparent").map(str::len), Some(55), "{request}");
        assert_eq!(
            header(request, "host"),
            Some(upstream.addr.to_string().as_str()),
            "each upstream sees its own host"
        );
        assert_eq!(request.matches("\r\nhost:").count(), 1, "one Host header: {request}");
    }
    // The retried request is the same request: same id, same trace.
    let retried = answered.iter().find(|r| header(r, "x-request-id") == header(&tried[0], "x-request-id"));
    assert_eq!(retried.and_then(|r| header(r, "traceparent")), header(&tried[0], "traceparent"));
    portico.stop().await;
}

#[tokio::test]
async fn bytes_that_come_with_a_101_reach_the_client_through_the_tunnel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = WireUpstream::start(answer).await;
    let portico = portico_to(&upstream).await;
    let address = portico.proxy.trim_start_matches("http://");
    let mut client = tokio::net::TcpStream::connect(address).await.expect("connect");
    client
        .write_all(b"GET /switch HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: chat\r\n\r\n")
        .await
        .expect("handshake");
    // The upstream wrote its first words in the same write as its 101.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !seen.ends_with(b"first words") && tokio::time::Instant::now() < deadline {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 101 "), "{seen}");
    assert!(seen.ends_with("\r\n\r\nfirst words"), "{seen}");
    portico.stop().await;
}
