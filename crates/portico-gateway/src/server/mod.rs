//! Listeners and workers.
//!
//! The gateway runs one worker per core: a thread with its own single-threaded tokio runtime
//! and its own `SO_REUSEPORT` listener on the shared address, so the kernel spreads
//! connections and a request never hops between threads. Each worker has its own upstream
//! connection pools. Workers share only the [`SnapshotCell`].

mod http1;
mod tls;

pub use http1::ClientBody;
pub(crate) use http1::ClientUpgrade;
pub(crate) use http1::HeadLines;
pub use tls::ClientCert;
pub(crate) use tls::TlsCertificates;

use crate::observe::Telemetry;
use crate::proxy::{self, RequestLimits, ResponseBody, Serving};
use crate::upstream::Pools;
use crate::SnapshotCell;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// Settings of the proxy listener.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Largest request head accepted; larger ones get 431.
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head; slower ones get 408.
    pub header_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    pub idle_timeout: Duration,
    /// On shutdown, requests in flight get this long to finish.
    pub drain_timeout: Duration,
    /// The port of the TLS listener, for redirects of `https_only` routes (none: 443).
    pub https_port: Option<u16>,
}

impl Default for ProxySettings {
    fn default() -> ProxySettings {
        ProxySettings {
            max_header_bytes: 32 * 1024,
            header_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(75),
            drain_timeout: Duration::from_secs(30),
            https_port: None,
        }
    }
}

/// Binds `count` listeners to the same address with `SO_REUSEPORT`. With port 0 the first
/// one picks a free port and the others join it.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count.max(1) {
        listeners.push(bind_one(addr)?);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// The data plane: serves the current snapshot on the given listeners.
pub struct Gateway {
    snapshots: SnapshotCell,
    settings: ProxySettings,
    telemetry: Arc<Telemetry>,
}

/// Running workers; [`GatewayHandle::join`] waits until they have drained.
pub struct GatewayHandle {
    workers: Vec<JoinHandle<()>>,
}

struct Worker {
    snapshots: SnapshotCell,
    pools: Pools,
    limits: RequestLimits,
    telemetry: Arc<Telemetry>,
}

impl Gateway {
    pub fn new(snapshots: SnapshotCell, settings: ProxySettings, telemetry: Arc<Telemetry>) -> Gateway {
        Gateway { snapshots, settings, telemetry }
    }

    /// Starts one worker thread per listener, each also serving one of `tls_listeners`
    /// (TLS, with the snapshot's certificates) when there are any. They stop accepting when
    /// `shutdown` turns true, then let requests in flight finish within the drain timeout.
    pub fn spawn(
        &self,
        listeners: Vec<std::net::TcpListener>,
        tls_listeners: Vec<std::net::TcpListener>,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<GatewayHandle> {
        let acceptor = match tls_listeners.is_empty() {
            true => None,
            false => Some(tls::acceptor(self.snapshots.clone()).map_err(io::Error::other)?),
        };
        let mut tls_listeners = tls_listeners.into_iter();
        let mut workers = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let tls = tls_listeners.next().zip(acceptor.clone());
            let worker = Arc::new(Worker {
                snapshots: self.snapshots.clone(),
                pools: Pools::default(),
                limits: RequestLimits {
                    max_header_bytes: self.settings.max_header_bytes,
                    https_port: self.settings.https_port,
                },
                telemetry: self.telemetry.clone(),
            });
            let settings = self.settings.clone();
            let shutdown = shutdown.clone();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let thread = std::thread::Builder::new().name(format!("portico-worker-{i}")).spawn(move || {
                runtime.block_on(serve(listener, tls, worker, settings, shutdown));
            })?;
            workers.push(thread);
        }
        Ok(GatewayHandle { workers })
    }
}

impl GatewayHandle {
    /// Waits for every worker to finish draining.
    pub async fn join(self) {
        let _ = tokio::task::spawn_blocking(move || {
            for worker in self.workers {
                if worker.join().is_err() {
                    tracing::error!("a gateway worker panicked");
                }
            }
        })
        .await;
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<(std::net::TcpListener, TlsAcceptor)>,
    worker: Arc<Worker>,
    settings: ProxySettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => return tracing::error!(%error, "cannot use the proxy listener"),
    };
    let (tls_listener, acceptor) = match tls {
        Some((listener, acceptor)) => match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => (Some(listener), Some(acceptor)),
            Err(error) => return tracing::error!(%error, "cannot use the TLS listener"),
        },
        None => (None, None),
    };
    let drain_timeout = settings.drain_timeout;
    let tracker = TaskTracker::new();
    // The worker's own signal to its connections: each looks at it between requests, and a
    // signal shared by all workers would bounce its cache line between their cores.
    let (stopping, stop) = watch::channel(false);
    let connections = Connections { worker, settings, tracker: tracker.clone(), shutdown: stop };
    let mut accepted = 0u32;

    while !*shutdown.borrow() {
        let (stream, peer, secure) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer, false),
                Err(error) => {
                    backoff(error).await;
                    continue;
                }
            },
            accepted = accept_from(tls_listener.as_ref()) => match accepted {
                Ok((stream, peer)) => (stream, peer, true),
                Err(error) => {
                    backoff(error).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        match (&acceptor, secure) {
            (Some(acceptor), true) => connections.serve_tls(acceptor.clone(), stream, peer),
            _ => connections.serve(stream, peer),
        }
        // A few connections per turn of the worker: a burst of new connections then waits
        // in the kernel's queue instead of in the worker's, and the requests and streams
        // already open keep their pace. (A turn per connection would slow down clients that
        // open a connection per request.)
        accepted = accepted.wrapping_add(1);
        if accepted.is_multiple_of(ACCEPTS_PER_TURN) {
            tokio::task::yield_now().await;
        }
    }

    drop(listener);
    drop(tls_listener);
    // Idle connections close now; busy ones finish their request.
    let _ = stopping.send(true);
    tracker.close();
    tokio::select! {
        _ = tracker.wait() => {}
        _ = tokio::time::sleep(drain_timeout) => {
            tracing::warn!("drain timeout reached; closing the remaining connections");
        }
    }
}

/// New connections a worker takes before it lets the work it has go on.
const ACCEPTS_PER_TURN: u32 = 8;

/// Usually out of file descriptors: back off instead of spinning.
async fn backoff(error: io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn accept_from(listener: Option<&tokio::net::TcpListener>) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// What every connection of a worker is served with.
#[derive(Clone)]
struct Connections {
    worker: Arc<Worker>,
    settings: ProxySettings,
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
}

impl Connections {
    /// Serves one plain connection on its own task.
    fn serve(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        self.tracker.spawn(self.clone().connection(Box::new(stream), peer, None, false));
    }

    /// Completes a TLS handshake on the connection's own task, then serves it there. The
    /// handshake must finish within the header timeout: a client that stalls it is treated
    /// like one that stalls its request head.
    fn serve_tls(&self, acceptor: TlsAcceptor, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let this = self.clone();
        self.tracker.spawn(async move {
            match tokio::time::timeout(this.settings.header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let (_, session) = stream.get_ref();
                    let cert = session.peer_certificates().and_then(|c| c.first()).map(|c| ClientCert::new(c));
                    let http2 = session.alpn_protocol() == Some(b"h2");
                    this.connection(Box::new(stream), peer, Some(cert), http2).await
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }

    /// Serves a connection to the end: HTTP/1.1 with Portico's own engine, HTTP/2 (asked
    /// for in the TLS handshake, or begun with its preface) with hyper's. `tls` is `Some` for
    /// TLS connections, with the client's verified certificate if any.
    async fn connection(self, io: Box<dyn http1::Io>, peer: SocketAddr, tls: Option<Option<ClientCert>>, http2: bool) {
        let _open = OpenConnection::new(&self.worker.telemetry);
        let handler = Handler {
            worker: self.worker,
            client: Arc::new(proxy::Client {
                ip: peer.ip(),
                address: proxy::client_address(peer.ip()),
                tls: tls.is_some(),
                certificate: tls.flatten(),
            }),
        };
        let mut shutdown = self.shutdown;
        if http2 {
            return serve_http2(io, handler, shutdown).await;
        }
        let limits = http1::Limits {
            max_header_bytes: self.settings.max_header_bytes,
            header_timeout: self.settings.header_timeout,
            idle_timeout: self.settings.idle_timeout,
        };
        if let http1::Ended::Http2(io) = http1::serve(io, &handler, limits, &mut shutdown).await {
            serve_http2(Box::new(io), handler, shutdown).await;
        }
    }
}

/// Serves HTTP/2 on a connection with hyper, until it closes or shutdown asks it to.
async fn serve_http2(io: Box<dyn http1::Io>, handler: Handler, mut shutdown: watch::Receiver<bool>) {
    let handler = Arc::new(handler);
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        async move {
            let mut response = handler.answer(request.map(ClientBody::http2)).await;
            // hyper writes the head from the map alone.
            if let Some(stamp) = response.body_mut().take_stamp() {
                stamp.insert_into(response.headers_mut());
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let stopping = *shutdown.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.changed(), if !stopping => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "HTTP/2 connection ended with an error");
    }
}

/// Answers a connection's requests from the worker's current snapshot.
struct Handler {
    worker: Arc<Worker>,
    client: Arc<proxy::Client>,
}

impl Handler {
    async fn answer(&self, request: http::Request<ClientBody>) -> http::Response<ResponseBody> {
        let snapshot = self.worker.snapshots.load();
        let serving = Serving {
            client: &self.client,
            pools: &self.worker.pools,
            limits: &self.worker.limits,
            telemetry: &self.worker.telemetry,
        };
        proxy::handle(request, &snapshot, &serving).await
    }
}

impl http1::Handler for Handler {
    type Body = ResponseBody;

    fn handle(&self, request: http::Request<ClientBody>) -> impl Future<Output = http::Response<ResponseBody>> + Send {
        self.answer(request)
    }
}

/// Counts a client connection in `portico_connections_active` while it is open.
struct OpenConnection(Arc<Telemetry>);

impl OpenConnection {
    fn new(telemetry: &Arc<Telemetry>) -> OpenConnection {
        telemetry.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenConnection(telemetry.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
