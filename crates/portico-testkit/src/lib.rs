//! Test helpers for Portico: a scriptable upstream, one that answers byte for byte
//! ([`WireUpstream`]), a WebSocket upstream ([`MockWebSocket`]), a mock model provider
//! ([`MockProvider`]) and throwaway PostgreSQL databases.
//!
//! [`MockUpstream`] is a real HTTP/1.1 server on a free loopback port. What it does is chosen
//! by the request path, so a test scripts it through the route it configures:
//!
//! | path | response |
//! |---|---|
//! | `/status/{code}` | that status, empty body |
//! | `/delay/{ms}` | waits, then 200 |
//! | `/bytes/{n}` | streams `n` bytes in 64 KiB chunks |
//! | `/count` | reads the whole request body, streaming, and answers `{"bytes": n}` |
//! | `/close` | closes the connection without answering |
//! | `/truncate/{n}` | promises `2n` bytes, sends `n`, then breaks the connection |
//! | `/drip/{pieces}/{ms}` | 200 at once, then a `drip` line every `ms` |
//! | `/health` | 200, or 503 after [`MockUpstream::set_healthy`]`(false)` |
//! | anything else | 200 with a JSON echo of the request (method, path, query, headers, body size) |
//!
//! Every response carries `x-upstream: <name>` so tests can tell upstreams apart.
//! [`MockUpstream::set_delay`] slows every answer down; [`MockUpstream::set_failing`] makes
//! every request fail with a status or a reset connection. Dropping the upstream kills it the
//! way a crashed instance dies: new connections are refused and open ones are cut.

mod ai;
mod dns;
mod postgres;
mod redis;
mod tls;
mod websocket;
mod wire;

pub use ai::{MockProvider, ProviderFault, Received, UsageReport};
pub use dns::Dnsmasq;
pub use postgres::{fresh_postgres, POSTGRES_URL_VAR};
pub use redis::{redis_url, REDIS_URL_VAR};
pub use tls::{Issued, TestCa, TlsUpstream};
pub use websocket::MockWebSocket;
pub use wire::{Reply, WireUpstream};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A running mock upstream; stops when dropped.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    behaviour: Arc<Behaviour>,
    task: JoinHandle<()>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
}

/// What a test can change while the upstream runs.
#[derive(Default)]
struct Behaviour {
    /// Request body bytes received by the echo.
    body_bytes: AtomicU64,
    unhealthy: AtomicBool,
    delay_ms: AtomicU64,
    failing: Mutex<Failing>,
}

/// How an upstream fails every request (after reading its body), whatever the path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Failing {
    #[default]
    No,
    /// Answers with this status.
    Status(u16),
    /// Closes the connection without answering.
    Reset,
}

impl MockUpstream {
    pub async fn start(name: &str) -> MockUpstream {
        MockUpstream::start_with_idle_close(name, None).await
    }

    /// Like [`MockUpstream::start`], but closes keep-alive connections that stay idle for
    /// `idle`, without a word, as many servers do; a proxy that reuses such a connection
    /// must not fail the request.
    pub async fn start_with_idle_close(name: &str, idle: Option<Duration>) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        MockUpstream::serve(name, listener, idle)
    }

    /// Starts an upstream on a given address, such as that of one that died.
    pub async fn start_on(name: &str, addr: SocketAddr) -> MockUpstream {
        let socket = if addr.is_ipv6() { tokio::net::TcpSocket::new_v6() } else { tokio::net::TcpSocket::new_v4() };
        let socket = socket.expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(addr).expect("bind the old address");
        MockUpstream::serve(name, socket.listen(1024).expect("listen"), None)
    }

    fn serve(name: &str, listener: TcpListener, idle: Option<Duration>) -> MockUpstream {
        let addr = listener.local_addr().expect("local address");
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let behaviour = Arc::new(Behaviour::default());
        let open: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (name_in_task, hits_in_task, connections_in_task, behaviour_in_task, open_in_task) =
            (name.to_owned(), hits.clone(), connections.clone(), behaviour.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                connections_in_task.fetch_add(1, Ordering::Relaxed);
                let name = name_in_task.clone();
                let hits = hits_in_task.clone();
                let behaviour = behaviour_in_task.clone();
                let connection = tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        hits.fetch_add(1, Ordering::Relaxed);
                        respond(name.clone(), behaviour.clone(), request)
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle);
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
                let mut open = open_in_task.lock().unwrap_or_else(|p| p.into_inner());
                open.retain(|c| !c.is_finished());
                open.push(connection.abort_handle());
            }
        });
        MockUpstream { addr, name: name.to_owned(), hits, connections, behaviour, task, open }
    }

    /// Makes `/health` answer 503 (`false`) or 200 (`true`).
    pub fn set_healthy(&self, healthy: bool) {
        self.behaviour.unhealthy.store(!healthy, Ordering::Relaxed);
    }

    /// Request body bytes the echo has received, over all requests.
    pub fn body_bytes(&self) -> u64 {
        self.behaviour.body_bytes.load(Ordering::Relaxed)
    }

    /// Makes every request but `/health` fail this way.
    pub fn set_failing(&self, failing: Failing) {
        *self.behaviour.failing.lock().unwrap_or_else(|p| p.into_inner()) = failing;
    }

    /// Delays every answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// How many requests this upstream has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// How many connections this upstream has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
        for connection in self.open.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            connection.abort();
        }
    }
}

async fn respond(
    name: String,
    behaviour: Arc<Behaviour>,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let delay = behaviour.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = request.uri().path().to_owned();
    let failing = *behaviour.failing.lock().unwrap_or_else(|p| p.into_inner());
    if failing != Failing::No && path != "/health" {
        request.into_body().collect().await.map_err(std::io::Error::other)?;
        let status = match failing {
            Failing::Status(status) => StatusCode::from_u16(status).map_err(std::io::Error::other)?,
            _ => return Err(std::io::Error::other("failing on purpose")),
        };
        let mut response =
            Response::builder().status(status).body(Empty::new().boxed()).map_err(std::io::Error::other)?;
        response.headers_mut().insert("x-upstream", name.parse().map_err(std::io::Error::other)?);
        return Ok(response);
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (command, argument) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let number = argument.parse::<u64>().unwrap_or(0);
    let response = match command {
        "status" => {
            let status = StatusCode::from_u16(number as u16).unwrap_or(StatusCode::BAD_REQUEST);
            Response::builder().status(status).body(Empty::new().boxed())
        }
        "delay" => {
            tokio::time::sleep(Duration::from_millis(number)).await;
            Response::builder().body(Full::from("late").boxed())
        }
        "bytes" => Response::builder().header("content-length", number).body(byte_stream(number)),
        "count" => {
            let mut body = request.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(std::io::Error::other)?;
                total += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Response::builder().body(Full::from(format!("{{\"bytes\":{total}}}")).boxed())
        }
        "close" => return Err(std::io::Error::other("closing without a response")),
        "drip" => {
            // `/drip/PIECES/GAP_MS`: the head at once, then a `drip` line every GAP_MS.
            let mut numbers = argument.split('/').map(|n| n.parse::<u64>().unwrap_or(0));
            let (pieces, gap) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
            let drips = futures_util::stream::unfold(0, move |sent| async move {
                if sent == pieces {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(gap)).await;
                Some((Ok(Frame::data(Bytes::from_static(b"drip\n"))), sent + 1))
            });
            Response::builder().body(BodyExt::boxed(StreamBody::new(drips)))
        }
        "truncate" => {
            // Half the body goes out; a moment later the body ends short of its length, so
            // the server breaks the connection.
            let half = futures_util::stream::unfold(0u8, move |step| async move {
                if step == 0 {
                    return Some((Ok(Frame::data(Bytes::from(vec![b't'; number as usize]))), 1));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            });
            Response::builder().header("content-length", number * 2).body(BodyExt::boxed(StreamBody::new(half)))
        }
        "health" => {
            let status = if behaviour.unhealthy.load(Ordering::Relaxed) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            Response::builder().status(status).body(Empty::new().boxed())
        }
        _ => {
            let (head, body) = request.into_parts();
            let size = body.collect().await.map_err(std::io::Error::other)?.to_bytes().len();
            behaviour.body_bytes.fetch_add(size as u64, Ordering::Relaxed);
            let headers: serde_json::Map<String, serde_json::Value> = head
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.to_str().unwrap_or("<binary>"))))
                .collect();
            let echo = serde_json::json!({
                "method": head.method.as_str(),
                "path": head.uri.path(),
                "query": head.uri.query(),
                "headers": headers,
                "body_bytes": size,
            });
            Response::builder().header("content-type", "application/json").body(Full::from(echo.to_string()).boxed())
        }
    };
    let mut response = response.map_err(std::io::Error::other)?;
    response.headers_mut().insert("x-upstream", name.parse().map_err(std::io::Error::other)?);
    Ok(response)
}

/// `total` bytes of a repeating pattern, produced chunk by chunk as they are sent.
fn byte_stream(total: u64) -> Body {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'p'; CHUNK as usize]);
    let frames = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let size = CHUNK.min(total - sent);
            Some((Ok(Frame::data(chunk.slice(..size as usize))), sent + size))
        }
    });
    BodyExt::boxed(StreamBody::new(frames))
}
