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

use super::http1::{self, Connection, Failure, SetHeaders, UpstreamBody};
use crate::proxy::RequestBody;
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// Idle connections older than this are closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// At most this many idle connections are kept per target and worker.
const MAX_IDLE_PER_TARGET: usize = 1024;

/// Where a pooled connection goes. Compared and hashed as written: `Authority`'s own hash
/// lowercases a byte at a time, and this is looked up twice per request. (Two spellings of
/// one target get two pools, which is harmless.)
#[derive(Clone)]
struct Key {
    https: bool,
    authority: Authority,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.https == other.https && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.https.hash(state);
        self.authority.as_str().hash(state);
    }
}

/// Idle connections to one target, with when each became idle; the newest last.
type Idle = Vec<(Box<Connection>, Instant)>;

pub(crate) struct Pool {
    tls: TlsConnector,
    connect_timeout: Duration,
    // Keys come from configuration, not from clients, so a fast non-keyed hash is safe.
    idle: Mutex<FxHashMap<Key, Idle>>,
}

/// Why a request could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened.
    Connect(std::io::Error),
    /// The connection failed while sending or receiving.
    Exchange(Failure),
}

/// A failed send, with the request when it never left (so it can be sent elsewhere).
pub(crate) struct SendFailure {
    pub error: SendError,
    pub unsent: Option<Request<RequestBody>>,
}

/// Where a connection goes back to when its response is done.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    key: Key,
    /// Opened for a switch of protocols: never pooled.
    upgrade: bool,
}

impl Lease {
    /// Returns the connection to the pool; called when the response body has ended.
    pub fn give_back(self, connection: Box<Connection>) {
        if !self.upgrade {
            self.pool.put(self.key, connection);
        }
    }
}

impl Pool {
    /// A pool whose connections open within `connect_timeout`, speaking TLS with `tls` (the
    /// public roots and no client certificate when `None`).
    pub fn new(connect_timeout: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> Pool {
        Pool { tls: http1::tls_connector(tls), connect_timeout, idle: Mutex::new(FxHashMap::default()) }
    }

    /// Sends `request` (whose URI is origin-form) to `scheme://authority`, with the headers
    /// in `set` in place of its own of those names. `now` is the clock read that started
    /// the try; idle connections are judged by it rather than by another read.
    pub async fn send(
        self: &Arc<Self>,
        scheme: &Scheme,
        authority: &Authority,
        mut request: Request<RequestBody>,
        set: &SetHeaders<'_>,
        now: Instant,
    ) -> Result<Response<UpstreamBody>, SendFailure> {
        let key = Key { https: *scheme == Scheme::HTTPS, authority: authority.clone() };
        let upgrade = request.headers().contains_key(http::header::UPGRADE);
        loop {
            let pooled = if upgrade { None } else { self.take(&key, now) };
            let reused = pooled.is_some();
            let connection = match pooled {
                Some(connection) => connection,
                // Boxed: connecting (TCP, perhaps TLS) is a large future, and an inline one
                // would be copied with every request's future though it is rarely needed.
                None => match Box::pin(http1::connect(scheme, authority, &self.tls, self.connect_timeout)).await {
                    Ok(stream) => Connection::new(stream),
                    Err(error) => return Err(SendFailure { error: SendError::Connect(error), unsent: Some(request) }),
                },
            };
            let lease = Lease { pool: self.clone(), key: key.clone(), upgrade };
            match http1::send(connection, request, set, lease).await {
                Ok(response) => return Ok(response),
                // A reused connection the upstream had closed: the request never left,
                // so it is safe to send it again, on another connection.
                Err((_, Some(unsent))) if reused => request = unsent,
                Err((error, unsent)) => return Err(SendFailure { error: SendError::Exchange(error.failure), unsent }),
            }
        }
    }

    fn take(&self, key: &Key, now: Instant) -> Option<Box<Connection>> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let connections = idle.get_mut(key)?;
        while let Some((mut connection, since)) = connections.pop() {
            if now.saturating_duration_since(since) < IDLE_TIMEOUT && connection.is_usable() {
                return Some(connection);
            }
        }
        None
    }

    fn put(&self, key: Key, connection: Box<Connection>) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let connections = idle.entry(key).or_default();
        let now = Instant::now();
        // The oldest connections are at the bottom of the stack: close expired ones there.
        let expired = connections.iter().take_while(|(_, since)| now - *since >= IDLE_TIMEOUT).count();
        connections.drain(..expired);
        if connections.len() < MAX_IDLE_PER_TARGET {
            connections.push((connection, now));
        }
    }
}
