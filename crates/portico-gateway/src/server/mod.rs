//! Listeners and workers.
//!
//! The gateway runs one worker per core: a thread with its own single-threaded tokio runtime
//! and its own `SO_REUSEPORT` listener on the shared address, so the kernel spreads
//! connections and a request never hops between threads. Each worker has its own upstream
//! connection pools. Workers share only the [`SnapshotCell`].

mod guard;
mod tls;

pub(crate) use guard::InFlight;
pub use tls::ClientCert;
pub(crate) use tls::TlsCertificates;

use crate::observe::Telemetry;
use crate::proxy::{self, RequestLimits, Serving};
use crate::upstream::Pools;
use crate::SnapshotCell;
use guard::{ConnState, GuardedIo};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Portico's own guard answers slow heads with 408; see `guard`.
        .header_read_timeout(None)
        .keep_alive(true)
        // Large enough that Portico's own header limit (431 with a JSON body) applies first.
        .max_buf_size((settings.max_header_bytes * 2).max(64 * 1024));
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let connections = Connections { builder, worker, settings };
    let graceful = GracefulShutdown::new();
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
            (Some(acceptor), true) => connections.serve_tls(&graceful, acceptor.clone(), stream, peer),
            _ => connections.serve(&graceful, stream, peer),
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
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(connections.settings.drain_timeout) => {
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
    builder: auto::Builder<TokioExecutor>,
    worker: Arc<Worker>,
    settings: ProxySettings,
}

impl Connections {
    /// Serves one plain connection on its own task.
    fn serve(&self, graceful: &GracefulShutdown, stream: tokio::net::TcpStream, peer: SocketAddr) {
        tokio::spawn(self.connection(graceful.watcher(), stream, peer, None));
    }

    /// Completes a TLS handshake on the connection's own task, then serves it there. The
    /// handshake must finish within the header timeout: a client that stalls it is treated
    /// like one that stalls its request head.
    fn serve_tls(
        &self,
        graceful: &GracefulShutdown,
        acceptor: TlsAcceptor,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) {
        let (this, watcher) = (self.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tokio::time::timeout(this.settings.header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let cert =
                        stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| ClientCert::new(c));
                    this.connection(watcher, stream, peer, Some(cert)).await
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }

    /// The connection, watched for graceful shutdown, as a future that serves it to the end.
    /// `tls` is `Some` for TLS connections, with the client's verified certificate if any.
    fn connection<S>(
        &self,
        watcher: Watcher,
        stream: S,
        peer: SocketAddr,
        tls: Option<Option<ClientCert>>,
    ) -> impl std::future::Future<Output = ()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let state = Arc::new(ConnState::default());
        let (header_timeout, idle_timeout) = (self.settings.header_timeout, self.settings.idle_timeout);
        let io = TokioIo::new(GuardedIo::new(stream, state.clone(), header_timeout, idle_timeout));
        let worker = self.worker.clone();
        let client = Arc::new(proxy::Client {
            ip: peer.ip(),
            address: proxy::client_address(peer.ip()),
            tls: tls.is_some(),
            certificate: tls.flatten(),
        });
        let open = OpenConnection::new(&worker.telemetry);
        let service = service_fn(move |request| {
            let in_flight = (request.version() < http::Version::HTTP_2).then(|| InFlight::start(&state));
            let (worker, client) = (worker.clone(), client.clone());
            async move {
                let snapshot = worker.snapshots.load();
                let serving = Serving {
                    client: &client,
                    pools: &worker.pools,
                    limits: &worker.limits,
                    telemetry: &worker.telemetry,
                };
                let mut response = proxy::handle(request, &snapshot, &serving).await;
                if let Some(in_flight) = in_flight {
                    response.body_mut().drop_with(in_flight);
                }
                Ok::<_, Infallible>(response)
            }
        });
        let connection = watcher.watch(self.builder.serve_connection_with_upgrades(io, service).into_owned());
        async move {
            let _open = open;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
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
