//! A route's traffic policies: faults injected for chaos tests, splits across services, and
//! mirroring to a shadow service.

use super::body::{RequestBody, ResponseBody};
use super::error::ProxyError;
use super::headers;
use crate::upstream::{Pools, Upstream};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A compiled `when`: a header or cookie, with a value if given.
pub(crate) enum Condition {
    Header(HeaderName, Option<HeaderValue>),
    Cookie(Box<str>, Option<Box<str>>),
}

impl Condition {
    pub fn new(when: &portico_model::When) -> Option<Condition> {
        match (&when.header, &when.cookie) {
            (Some(name), _) => Some(Condition::Header(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                when.value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()),
            )),
            (None, Some(name)) => Some(Condition::Cookie(name.as_str().into(), when.value.as_deref().map(Into::into))),
            (None, None) => None,
        }
    }

    pub fn matches(&self, headers: &HeaderMap) -> bool {
        match self {
            Condition::Header(name, None) => headers.contains_key(name),
            Condition::Header(name, Some(value)) => headers.get_all(name).iter().any(|v| v == value),
            Condition::Cookie(name, value) => match (headers::cookie(headers, name), value) {
                (Some(found), Some(value)) => found == value.as_bytes(),
                (found, None) => found.is_some(),
                (None, Some(_)) => false,
            },
        }
    }
}

/// One share of a split route.
pub(crate) struct Share {
    pub upstream: Arc<Upstream>,
    pub weight: u32,
    pub when: Option<Condition>,
}

/// The service for this request: a share whose condition matches, else one picked by
/// weight, else the route's own.
pub(crate) fn choose<'u>(shares: &'u [Share], default: &'u Arc<Upstream>, headers: &HeaderMap) -> &'u Arc<Upstream> {
    if shares.is_empty() {
        return default;
    }
    if let Some(share) = shares.iter().find(|s| s.when.as_ref().is_some_and(|c| c.matches(headers))) {
        return &share.upstream;
    }
    let mut roll = fastrand::u32(0..100);
    for share in shares {
        if roll < share.weight {
            return &share.upstream;
        }
        roll -= share.weight;
    }
    default
}

/// A compiled fault policy.
pub(crate) struct Fault {
    pub delay: Option<(Duration, u32)>,
    pub abort: Option<(StatusCode, u32)>,
    pub when: Option<Condition>,
}

impl Fault {
    pub fn new(fault: &portico_model::Fault) -> Fault {
        Fault {
            delay: fault.delay.as_ref().map(|d| (Duration::from_millis(d.ms), d.percent)),
            abort: fault
                .abort
                .as_ref()
                .map(|a| (StatusCode::from_u16(a.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), a.percent)),
            when: fault.when.as_ref().and_then(Condition::new),
        }
    }

    /// Delays the request and/or fails it, if this request is one of the unlucky ones.
    pub async fn apply(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        if self.when.as_ref().is_some_and(|c| !c.matches(headers)) {
            return Ok(());
        }
        if let Some((delay, percent)) = self.delay {
            if fastrand::u32(0..100) < percent {
                tokio::time::sleep(delay).await;
            }
        }
        match self.abort {
            Some((status, percent)) if fastrand::u32(0..100) < percent => Err(ProxyError::FaultInjected(status)),
            _ => Ok(()),
        }
    }
}

/// A compiled mirror policy.
pub(crate) struct Mirror {
    pub upstream: Arc<Upstream>,
    pub percent: u32,
}

/// Largest request body copied to a mirror; requests with larger bodies are not mirrored.
pub(crate) const MIRROR_BODY_BYTES: u64 = 64 * 1024;
/// Mirrored requests in flight per process; beyond this, requests are not mirrored, so a
/// slow shadow service cannot pile up work in the gateway.
const MAX_MIRRORS: usize = 1024;
static MIRRORS: AtomicUsize = AtomicUsize::new(0);

/// Counts a mirrored request until dropped.
struct MirrorSlot;

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        MIRRORS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request as it was sent upstream, head and whole body: what a retry or a mirror sends
/// again.
pub(crate) struct Copy {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Vec<Bytes>,
}

impl Copy {
    pub fn into_request(self) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::replayed(self.body));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        request
    }
}

impl Mirror {
    pub fn wanted(&self) -> bool {
        fastrand::u32(0..100) < self.percent
    }

    /// Sends the copy to the shadow service on its own task; its answer is read and
    /// dropped. The task ends with the shadow service's own timeouts.
    pub fn send(&self, copy: Copy, pools: &Pools) {
        if MIRRORS.fetch_add(1, Ordering::Relaxed) >= MAX_MIRRORS {
            MIRRORS.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(upstream = %self.upstream.name, "too many mirrored requests in flight; not mirroring");
            return;
        }
        let slot = MirrorSlot;
        let (upstream, pools) = (self.upstream.clone(), pools.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let members = upstream.members();
            if members.is_empty() {
                return;
            }
            let target = &members.targets[members.pick(upstream.balancer(), None, &[])];
            let request = copy.into_request();
            let pool = pools.pool(&upstream);
            let host = [(&header::HOST, Some(&target.host))];
            let sending = pool.send(&upstream.scheme, &target.authority, request, &host, tokio::time::Instant::now());
            match tokio::time::timeout(upstream.read_timeout, sending).await {
                Ok(Ok(response)) => {
                    let body = ResponseBody::upstream(response.into_body(), upstream.read_timeout, None);
                    let _ = body.collect().await;
                }
                Ok(Err(failure)) => tracing::debug!(upstream = %upstream.name, error = ?failure.error, "mirror failed"),
                Err(_) => tracing::debug!(upstream = %upstream.name, "mirror timed out"),
            }
        });
    }
}
