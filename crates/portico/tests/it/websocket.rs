//! WebSocket (HTTP/1.1 `Upgrade`) through Portico, with a real WebSocket client and server.

use crate::helpers::Portico;
use futures_util::{SinkExt, StreamExt};
use portico_testkit::{MockWebSocket, TestCa};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A service for `upstream` and a route `/ws/*` to it, with `extra` fields on the service.
async fn route(portico: &Portico, upstream: &MockWebSocket, service: Value, policies: Value) {
    let mut service = service;
    service["name"] = "chat".into();
    service["targets"] = json!([{"address": upstream.addr.to_string()}]);
    portico.create("services", service).await;
    portico
        .create("routes", json!({"name": "chat", "paths": ["/ws/*"], "service": "chat", "policies": policies}))
        .await;
}

async fn connect(portico: &Portico, path: &str, headers: &[(&'static str, &str)]) -> Result<Socket, Error> {
    let mut request = format!("ws://{}{path}", portico.running.proxy_addr).into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().expect("header value"));
    }
    tokio_tungstenite::connect_async(request).await.map(|(socket, _)| socket)
}

async fn next_text<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test]
async fn websockets_pass_through_both_ways_with_the_forwarded_headers() {
    let upstream = MockWebSocket::start().await;
    let portico = Portico::start().await;
    route(&portico, &upstream, json!({}), json!({})).await;

    let mut socket = connect(&portico, "/ws/chat?room=1", &[]).await.expect("handshake through Portico");
    let handshake: Value = serde_json::from_str(&next_text(&mut socket).await).expect("json");
    assert_eq!(handshake["path"], "/ws/chat");
    let headers = &handshake["headers"];
    assert_eq!((headers["upgrade"].as_str(), headers["connection"].as_str()), (Some("websocket"), Some("upgrade")));
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-request-id"].as_str().map(str::len), Some(32));
    assert!(headers["sec-websocket-key"].is_string(), "{headers}");

    for round in 0..20 {
        socket.send(Message::text(format!("hello {round}"))).await.expect("send");
        assert_eq!(next_text(&mut socket).await, format!("hello {round}"));
    }
    let payload: Vec<u8> = (0..=255).cycle().take(200_000).collect();
    socket.send(Message::binary(payload.clone())).await.expect("send");
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(Message::Binary(echo)))) => assert_eq!(echo.as_ref(), payload.as_slice()),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    // The request is counted, as a 1xx, once its tunnel has closed.
    let counted = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("portico_http_requests_total{route=\"chat\"")
                && l.contains("code=\"1xx\"")
                && l.ends_with(" 1")
        })
    };
    let open = portico.http.get(format!("{}/metrics", portico.admin)).bearer_auth(&portico.token).send();
    assert!(!counted(&open.await.expect("metrics").text().await.expect("text")), "counted while open");
    socket.close(None).await.expect("close");
    let reply = socket.next().await;
    assert!(matches!(reply, Some(Ok(Message::Close(_)))), "the upstream's close comes back: {reply:?}");
    drop(socket);

    let mut metrics = String::new();
    for _ in 0..100 {
        let response = portico.http.get(format!("{}/metrics", portico.admin)).bearer_auth(&portico.token).send();
        metrics = response.await.expect("metrics").text().await.expect("text");
        if counted(&metrics) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted(&metrics), "{metrics}");
    // With the bytes that went each way: the 200 KB message and its echo, framed, and more.
    let bytes = |name: &str| {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name}{{route=\"chat\"")));
        line.and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    let (from_client, to_client) =
        (bytes("portico_http_request_body_bytes_total"), bytes("portico_http_response_body_bytes_total"));
    assert!((200_000..210_000).contains(&from_client), "from the client: {from_client}");
    assert!((200_000..210_000).contains(&to_client), "to the client: {to_client}");
    portico.stop().await;
}

#[tokio::test]
async fn a_websocket_route_keeps_its_policies() {
    let upstream = MockWebSocket::start().await;
    let portico = Portico::start().await;
    let key = "chat-app-key-0123456789";
    portico.create("consumers", json!({"name": "chat-app", "credentials": [{"type": "key_auth", "key": key}]})).await;
    route(&portico, &upstream, json!({}), json!({"key_auth": {}})).await;

    match connect(&portico, "/ws/chat", &[]).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("a handshake without a key is refused, got {:?}", other.map(|_| "a socket")),
    }
    let mut socket = connect(&portico, "/ws/chat", &[("x-api-key", key)]).await.expect("handshake with a key");
    let handshake: Value = serde_json::from_str(&next_text(&mut socket).await).expect("json");
    assert_eq!(handshake["headers"]["x-consumer"], "chat-app", "{handshake}");
    socket.send(Message::text("ping")).await.expect("send");
    assert_eq!(next_text(&mut socket).await, "ping");
    portico.stop().await;
}

#[tokio::test]
async fn a_tunnel_closes_when_quiet_for_the_read_timeout_and_not_while_busy() {
    let upstream = MockWebSocket::start().await;
    let portico = Portico::start().await;
    route(&portico, &upstream, json!({"read_timeout_ms": 400}), json!({})).await;

    let mut socket = connect(&portico, "/ws/chat", &[]).await.expect("handshake");
    next_text(&mut socket).await;
    // Busy for three times the timeout: it stays open.
    for round in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        socket.send(Message::text(format!("{round}"))).await.expect("send");
        assert_eq!(next_text(&mut socket).await, format!("{round}"));
    }
    // Quiet for longer than the timeout: Portico closes both sides.
    let closed = tokio::time::timeout(Duration::from_secs(3), socket.next()).await.expect("closed within 3 s");
    assert!(!matches!(closed, Some(Ok(Message::Text(_) | Message::Binary(_)))), "{closed:?}");
    portico.stop().await;
}

#[tokio::test]
async fn websockets_pass_through_the_tls_listener() {
    let upstream = MockWebSocket::start().await;
    let ca = TestCa::new("Portico test CA");
    let (portico, addr) = crate::tls::tls_portico().await;
    let issued = ca.issue(&["chat.test"]);
    let certificate = json!({"name": "chat", "snis": ["chat.test"], "cert": issued.cert_pem, "key": issued.key_pem});
    portico.create("certificates", certificate).await;
    route(&portico, &upstream, json!({}), json!({})).await;
    portico.settle().await;

    let tls = ca.connect(addr, "chat.test").await;
    let url = format!("wss://chat.test:{}/ws/secure", addr.port());
    let (mut socket, _) = tokio_tungstenite::client_async(url, tls).await.expect("handshake over TLS");
    let handshake: Value = serde_json::from_str(&next_text(&mut socket).await).expect("json");
    assert_eq!(handshake["path"], "/ws/secure");
    assert_eq!(handshake["headers"]["x-forwarded-proto"], "https");
    for round in 0..5 {
        socket.send(Message::text(format!("over tls {round}"))).await.expect("send");
        assert_eq!(next_text(&mut socket).await, format!("over tls {round}"));
    }
    socket.close(None).await.expect("close");
    portico.stop().await;
}
