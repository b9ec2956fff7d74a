//! A WebSocket upstream: it echoes every text and binary message, and first tells the client
//! what its opening handshake looked like on arrival.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server on a free loopback port. On each new connection it sends one text
/// message, `{"path": ..., "headers": {...}}` of the handshake it received, then echoes
/// every text and binary message until the client closes.
pub struct MockWebSocket {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MockWebSocket {
    pub async fn start() -> MockWebSocket {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(echo(stream));
            }
        });
        MockWebSocket { addr, task }
    }
}

impl Drop for MockWebSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(stream: TcpStream) {
    let mut handshake = Value::Null;
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let seen = |request: &Request, response: Response| {
        let headers: Map<String, Value> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), Value::from(value.to_str().unwrap_or("<binary>"))))
            .collect();
        handshake = json!({"path": request.uri().path(), "headers": headers});
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, seen).await else { return };
    if socket.send(Message::text(handshake.to_string())).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        // The reply to a close goes out on the next poll, which ends the stream.
        let echoed = matches!(message, Message::Text(_) | Message::Binary(_));
        if echoed && socket.send(message).await.is_err() {
            return;
        }
    }
}
