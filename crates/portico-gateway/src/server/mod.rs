//! Listeners and workers.
//!
//! The gateway runs one worker per core: a thread with its own single-threaded tokio runtime
//! and its own `SO_REUSEPORT` listener on the shared address, so the kernel spreads
//! connections and a request never hops between threads. Each worker has its own upstream
//! connection pools. Workers share only the [`SnapshotCell`].

mod guard;

pub(crate) use guard::InFlight;

use crate::proxy::{self, RequestLimits};
use crate::upstream::Pools;
use crate::SnapshotCell;
use guard::{ConnState, GuardedIo};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

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
}

impl Default for ProxySettings {
    fn default() -> ProxySettings {
        ProxySettings {
            max_header_bytes: 32 * 1024,
            header_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(75),
            drain_timeout: Duration::from_secs(30),
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
}

/// Running workers; [`GatewayHandle::join`] waits until they have drained.
pub struct GatewayHandle {
    workers: Vec<JoinHandle<()>>,
}

struct Worker {
    snapshots: SnapshotCell,
    pools: Pools,
    limits: RequestLimits,
}

impl Gateway {
    pub fn new(snapshots: SnapshotCell, settings: ProxySettings) -> Gateway {
        Gateway { snapshots, settings }
    }

    /// Starts one worker thread per listener. They stop accepting when `shutdown` turns
    /// true, then let requests in flight finish within the drain timeout.
    pub fn spawn(
        &self,
        listeners: Vec<std::net::TcpListener>,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<GatewayHandle> {
        let mut workers = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let worker = Arc::new(Worker {
                snapshots: self.snapshots.clone(),
                pools: Pools::default(),
                limits: RequestLimits { max_header_bytes: self.settings.max_header_bytes },
            });
            let settings = self.settings.clone();
            let shutdown = shutdown.clone();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let thread = std::thread::Builder::new().name(format!("portico-worker-{i}")).spawn(move || {
                runtime.block_on(serve(listener, worker, settings, shutdown));
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
    worker: Arc<Worker>,
    settings: ProxySettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => return tracing::error!(%error, "cannot use the proxy listener"),
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
    let graceful = GracefulShutdown::new();

    while !*shutdown.borrow() {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::default());
        let io = TokioIo::new(GuardedIo::new(stream, state.clone(), settings.header_timeout, settings.idle_timeout));
        let worker = worker.clone();
        let client = Arc::new(proxy::Client { ip: peer.ip(), address: proxy::client_address(peer.ip()) });
        let service = service_fn(move |request| {
            let in_flight = (request.version() < http::Version::HTTP_2).then(|| InFlight::start(&state));
            let (worker, client) = (worker.clone(), client.clone());
            async move {
                let snapshot = worker.snapshots.load();
                let mut response = proxy::handle(request, &snapshot, &client, &worker.pools, &worker.limits).await;
                if let Some(in_flight) = in_flight {
                    response.body_mut().drop_with(in_flight);
                }
                Ok::<_, Infallible>(response)
            }
        });
        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!("drain timeout reached; closing the remaining connections");
        }
    }
}
