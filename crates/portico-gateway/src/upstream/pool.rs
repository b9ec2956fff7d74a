//! Pooled HTTP/1.1 connections to upstream targets.
//!
//! Each worker keeps idle connections per (scheme, authority), most recently used first.
//! A request borrows one (or opens one), and gives it back through its [`Lease`] once the
//! response body has been read to the end; a body abandoned half-way takes its connection
//! with it, since the connection is then in an unknown state.
//!
//! A request to switch protocols (a WebSocket handshake: it still carries an `Upgrade`
//! header here) gets a connection of its own, opened for it and never pooled, since the
//! switch takes the connection over.
//!
//! Idle connections are dropped after [`IDLE_TIMEOUT`], kept below the usual upstream
//! keep-alive timeouts (60 s and more) so that Portico closes an idle connection before the
//! upstream does instead of racing it with a new request. When that race is lost anyway (the
//! upstream closed a pooled connection just before it was reused), a request that was not
//! sent is retried once on another connection.

use crate::proxy::RequestBody;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service as _;

/// Idle connections older than this are closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// At most this many idle connections are kept per target and worker.
const MAX_IDLE_PER_TARGET: usize = 1024;

type Key = (Scheme, Authority);
type Sender = SendRequest<RequestBody>;

pub(crate) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    // Keys come from configuration, not from clients, so a fast non-keyed hash is safe.
    idle: Mutex<FxHashMap<Key, Vec<(Sender, Instant)>>>,
}

/// Why a request could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while sending or receiving.
    Http(hyper::Error),
}

/// A failed send, with the request when it never left (so it can be sent elsewhere).
pub(crate) struct SendFailure {
    pub error: SendError,
    pub unsent: Option<Request<RequestBody>>,
}

/// A connection on loan to one request; dropped without [`Lease::give_back`], it closes.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    key: Key,
    sender: Sender,
    /// Opened for a switch of protocols: never pooled.
    upgrade: bool,
}

impl Lease {
    /// Returns the connection to the pool; called when the response body has ended.
    pub fn give_back(self) {
        let Lease { pool, key, sender, upgrade } = self;
        if upgrade {
            return;
        }
        if sender.is_ready() {
            pool.put(key, sender);
        } else if !sender.is_closed() {
            // The connection task has not caught up with the end of the response yet.
            tokio::spawn(async move {
                let mut sender = sender;
                if sender.ready().await.is_ok() {
                    pool.put(key, sender);
                }
            });
        }
    }
}

impl Pool {
    /// A pool whose connections open within `connect_timeout`, speaking TLS with `tls` (the
    /// public roots and no client certificate when `None`).
    pub fn new(connect_timeout: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> Pool {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match tls {
            Some(config) => builder.with_tls_config((*config).clone()),
            None => builder.with_webpki_roots(),
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        Pool { connector, idle: Mutex::new(FxHashMap::default()) }
    }

    /// Sends `request` (whose URI is origin-form) to `scheme://authority`.
    pub async fn send(
        self: &Arc<Self>,
        scheme: &Scheme,
        authority: &Authority,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), SendFailure> {
        let key = (scheme.clone(), authority.clone());
        let upgrade = request.headers().contains_key(http::header::UPGRADE);
        loop {
            let pooled = if upgrade { None } else { self.take(&key) };
            let (mut sender, reused) = match pooled {
                Some(sender) => (sender, true),
                // Boxed: connecting (TCP, perhaps TLS) is a large future, and an inline one
                // would be copied with every request's future though it is rarely needed.
                None => match Box::pin(self.connect(&key, upgrade)).await {
                    Ok(sender) => (sender, false),
                    Err(error) => return Err(SendFailure { error, unsent: Some(request) }),
                },
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Lease { pool: self.clone(), key, sender, upgrade })),
                Err(mut error) => match error.take_message() {
                    // A reused connection the upstream had closed: the request never left,
                    // so it is safe to send it again, on another connection.
                    Some(unsent) if reused => request = unsent,
                    unsent => return Err(SendFailure { error: SendError::Http(error.into_error()), unsent }),
                },
            }
        }
    }

    fn take(&self, key: &Key) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let senders = idle.get_mut(key)?;
        while let Some((sender, since)) = senders.pop() {
            if sender.is_ready() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, key: Key, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let senders = idle.entry(key).or_default();
        let now = Instant::now();
        // The oldest connections are at the bottom of the stack: close expired ones there.
        let expired = senders.iter().take_while(|(_, since)| now - *since >= IDLE_TIMEOUT).count();
        senders.drain(..expired);
        if senders.len() < MAX_IDLE_PER_TARGET {
            senders.push((sender, now));
        }
    }

    /// Opens a connection; with `upgrade`, one that can be taken over by a switch of
    /// protocols.
    async fn connect(&self, (scheme, authority): &Key, upgrade: bool) -> Result<Sender, SendError> {
        let uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| SendError::Connect(e.into()))?;
        let io = self.connector.clone().call(uri).await.map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(io).await.map_err(SendError::Http)?;
        match upgrade {
            true => tokio::spawn(drive(connection.with_upgrades())),
            false => tokio::spawn(drive(connection)),
        };
        Ok(sender)
    }
}

/// Runs an upstream connection to its end.
async fn drive(connection: impl std::future::Future<Output = Result<(), hyper::Error>>) {
    if let Err(error) = connection.await {
        tracing::debug!(%error, "upstream connection ended with an error");
    }
}
