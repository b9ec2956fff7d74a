//! [`WireUpstream`]: an upstream whose answers a test writes byte for byte, to check how
//! Portico reads what servers really send: every framing of a body, informational answers,
//! answers that come before the request body is all sent, and broken or ambiguous ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// What the upstream does with a request, chosen from its head.
pub enum Reply {
    /// Writes these pieces, 20 ms apart, then waits for the next request.
    Pieces(Vec<Vec<u8>>),
    /// Writes this, then closes the connection.
    ThenClose(Vec<u8>),
    /// Writes this as soon as the head has arrived, without reading the body, and closes the
    /// connection a second later.
    Early(Vec<u8>),
    /// Writes `100 Continue` as soon as the head has arrived, then reads the body and
    /// answers with this.
    Continue(Vec<u8>),
}

impl Reply {
    /// One piece, and the connection stays open.
    pub fn bytes(wire: &str) -> Reply {
        Reply::Pieces(vec![wire.as_bytes().to_vec()])
    }
}

type Answer = dyn Fn(&str) -> Reply + Send + Sync;

/// A running upstream that answers with the bytes a test gives; stops when dropped.
pub struct WireUpstream {
    pub addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: AbortHandle,
}

impl WireUpstream {
    /// Starts the upstream; `answer` gets each request's head (request line and headers).
    pub async fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> WireUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the wire upstream");
        let addr = listener.local_addr().expect("address");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let (count, seen) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, answer.clone(), seen.clone()));
            }
        });
        WireUpstream { addr, connections, requests, task: task.abort_handle() }
    }

    /// Connections opened to this upstream so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request received whole so far (head and body as they came on the wire).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for WireUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, answer: Arc<Answer>, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until(&mut stream, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4)).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let reply = answer(&head);
        if let Reply::Early(bytes) = reply {
            let _ = stream.write_all(&bytes).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        if let Reply::Continue(_) = reply {
            if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                return;
            }
        }
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok());
        let end = if lower.contains("transfer-encoding: chunked") {
            read_until(&mut stream, &mut buf, |b| find(&b[head_end..], b"0\r\n\r\n").map(|i| head_end + i + 5)).await
        } else {
            let want = head_end + length.unwrap_or(0);
            read_until(&mut stream, &mut buf, |b| (b.len() >= want).then_some(want)).await
        };
        let Some(end) = end else { return };
        seen.lock().expect("requests").push(String::from_utf8_lossy(&buf[..end]).into_owned());
        buf.drain(..end);
        match reply {
            Reply::Continue(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Pieces(pieces) => {
                for (i, piece) in pieces.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if stream.write_all(piece).await.is_err() {
                        return;
                    }
                }
            }
            Reply::ThenClose(bytes) | Reply::Early(bytes) => {
                let _ = stream.write_all(&bytes).await;
                return;
            }
        }
    }
}

/// Reads until `done` finds an end in the bytes so far; `None` if the connection ends first.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, done: impl Fn(&[u8]) -> Option<usize>) -> Option<usize> {
    loop {
        if let Some(end) = done(buf) {
            return Some(end);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
