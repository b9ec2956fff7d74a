//! The upstream phase: prepare the request for the upstream, pick a target, send it with
//! timeouts, and retry per the service's policy.
//!
//! A retry happens only before any of the response has gone to the client: this phase ends
//! when a response head is accepted, and the body streams afterwards. It goes to a target
//! not tried yet where there is one, after a jittered backoff, within the total timeout, and
//! only while the service's retry budget has tokens. The request is sent again as it never
//! left (connect failures hand it back whole) or from a kept copy of its body.

use super::body::{BodyError, Progress, RequestBody};
use super::error::ProxyError;
use super::headers::{self, X_REQUEST_ID};
use super::traffic::{Copy, MIRROR_BODY_BYTES};
use super::{Client, RequestContext};
use crate::access::UpstreamIdentity;
use crate::observe::{Trail, TRACEPARENT};
use crate::server::{ClientBody, ClientUpgrade};
use crate::snapshot::CompiledRoute;
use crate::upstream::{
    hash_key, Failure, HashKey, InFlightRequest, Pools, RetryPolicy, SendError, SetHeaders, Upstream, UpstreamBody,
    UpstreamTarget,
};
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use portico_model::HostHeader;
use std::future::Future;
use std::pin::pin;
use std::task::{ready, Poll};
use tokio::time::Instant;

/// At most this many tries: the first and up to ten retries.
const MAX_TRIES: usize = 11;

/// A response head from the upstream, with what the response body needs to finish.
pub(super) struct Exchanged {
    pub response: Response<UpstreamBody>,
    pub in_flight: Option<InFlightRequest>,
    /// The request as sent, for a mirror, when one was asked for and the body was kept whole.
    pub copy: Option<Copy>,
    /// The client's side of a switch of protocols it asked for (a WebSocket handshake).
    pub client_upgrade: Option<ClientUpgrade>,
}

/// Why one try failed, and the request if it never left.
struct Failed {
    error: ProxyError,
    /// The failure happened while connecting.
    connecting: bool,
    unsent: Option<Request<RequestBody>>,
}

impl From<ProxyError> for Failed {
    fn from(error: ProxyError) -> Failed {
        Failed { error, connecting: false, unsent: None }
    }
}

/// How earlier phases changed the request for the upstream.
pub(super) struct Edits<'s> {
    /// The path, when the route rewrites it.
    pub path: Option<String>,
    /// Who the access phase says the caller is (headers set or cleared with the head).
    pub identity: UpstreamIdentity<'s>,
}

/// `Host` as a static, so that the headers set with the head can start from it.
static HOST: HeaderName = header::HOST;

pub(super) async fn send_upstream(
    request: Request<ClientBody>,
    route: &CompiledRoute,
    upstream: &Upstream,
    edits: Edits<'_>,
    cx: &RequestContext<'_>,
    mirror: bool,
    trail: &mut Trail,
) -> Result<Exchanged, ProxyError> {
    let RequestContext { client, pools, request_id, sent } = *cx;
    let (mut parts, body) = request.into_parts();
    let identity = edits.identity;
    let key = upstream.hash_on().and_then(|on| balance_key(on, &parts, client, &identity)).map(hash_key);

    let uri = std::mem::take(&mut parts.uri).into_parts();
    let path_and_query = match edits.path {
        Some(path) => {
            let joined = match uri.path_and_query.as_ref().and_then(|pq| pq.query()) {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            PathAndQuery::from_maybe_shared(joined).map_err(|_| ProxyError::BadPath)?
        }
        None => uri.path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let client_host =
        uri.authority.as_ref().and_then(|a| HeaderValue::from_str(a.as_str()).ok()).or_else(|| sent.host.clone());
    // Origin-form (`/path?query`): the target's address travels in the `Host` header.
    parts.uri = Uri::from(path_and_query);
    // A switch of protocols (HTTP/1.1 only) keeps the headers that ask for it; the client's
    // side of it waits for the upstream's answer.
    let upgrade = match sent.hop_by_hop {
        true => headers::remove_hop_by_hop(&mut parts.headers).filter(|_| parts.version == Version::HTTP_11),
        false => None,
    };
    let client_upgrade = upgrade.as_ref().and_then(|_| parts.extensions.remove::<ClientUpgrade>());
    if let Some(protocol) = upgrade {
        headers::keep_upgrade(&mut parts.headers, protocol);
    }
    parts.version = Version::HTTP_11;
    headers::append_forwarded_for(&mut parts.headers, &client.address, sent);
    // The other headers Portico sets are written with the head of each try (`set` below).
    let traceparent = trail.trace.header();
    let proto = headers::forwarded_proto(client.tls);

    let policy = upstream.retries.as_ref().filter(|_| route.retry_non_idempotent || parts.method.is_idempotent());
    if let Some(policy) = policy {
        upstream.state.retry_budget.deposit(policy.budget_percent);
    }
    let keep = match (policy.map(|p| p.replay_body_bytes), mirror.then_some(MIRROR_BODY_BYTES)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let (body, progress) = RequestBody::new(body, route.max_body_bytes, keep);
    trail.bytes_in = progress.clone();
    // What a retry or a mirror needs to send the request again, kept only when needed.
    let head = (policy.is_some() || mirror).then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
    let mut request = Request::from_parts(parts, body);
    let deadline = upstream.total_timeout.map(|total| Instant::now() + total);

    let members = upstream.members();
    if members.is_empty() {
        return Err(ProxyError::NoTargets);
    }
    let mut tried = [usize::MAX; MAX_TRIES];
    let mut tries = 0;
    loop {
        let index = members.pick(upstream.balancer(), key, &tried[..tries]);
        tried[tries] = index;
        tries += 1;
        let target = &members.targets[index];
        let host = match (upstream.host_header, &client_host) {
            (HostHeader::Pass, Some(host)) => host,
            _ => &target.host,
        };
        let mut set = [(&HOST, None); 8];
        set[..5].copy_from_slice(&[
            (&HOST, Some(host)),
            (&headers::X_FORWARDED_PROTO, Some(proto)),
            (&X_REQUEST_ID, Some(request_id)),
            (&TRACEPARENT, Some(&traceparent)),
            (&headers::X_FORWARDED_HOST, Some(client_host.as_ref().unwrap_or(host))),
        ]);
        // Without a host from the client, a client's own `X-Forwarded-Host` is passed on.
        let mut len = if client_host.is_some() { 5 } else { 4 };
        for header in identity.headers() {
            set[len] = header;
            len += 1;
        }
        let set = &set[..len];

        let in_flight = upstream.counts_requests().then(|| target.state.start_request());
        trail.set_target(&target.authority);
        let started = Instant::now();
        // Only the first try streams the client's body and watches its progress.
        let progress_now = if tries == 1 { progress.as_deref() } else { None };
        let mut outcome = try_once(request, set, upstream, target, pools, progress_now, deadline, started).await;
        let took = started.elapsed();
        trail.record_try(started.into_std(), took);
        upstream.state.counters.duration.observe(took);
        match &outcome {
            Ok(response) => {
                if let Some(passive) = &upstream.passive_check {
                    target.state.record_outcome(passive, passive.statuses.contains(response.status().as_u16()));
                }
                if in_flight.is_some() {
                    target.state.observe_latency(took);
                }
            }
            Err(failed) => {
                let (error, status) = (failed.error, failed.error.status());
                tracing::debug!(route = %route.name, upstream = %upstream.name, ?error, %status, "upstream try failed");
                if let (Some(passive), true) = (&upstream.passive_check, failed.error.is_upstream_fault()) {
                    target.state.record_outcome(passive, true);
                }
            }
        }

        if let Some(policy) = policy.filter(|p| tries <= p.attempts as usize && wants_retry(p, &outcome)) {
            let unsent = outcome.as_mut().err().and_then(|failed| failed.unsent.take());
            let next = unsent.or_else(|| copy_of(head.as_ref(), progress.as_deref()).map(Copy::into_request));
            let in_time = deadline.is_none_or(|d| Instant::now() < d);
            if let Some(next) = next.filter(|_| in_time && upstream.state.retry_budget.withdraw()) {
                let wait = policy.backoff(tries as u32);
                let wait = deadline.map_or(wait, |d| wait.min(d.saturating_duration_since(Instant::now())));
                tracing::debug!(upstream = %upstream.name, retry = tries, wait_ms = wait.as_millis() as u64, "retrying");
                upstream.state.counters.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(event) = trail.event() {
                    event.retries += 1;
                }
                tokio::time::sleep(wait).await;
                request = next;
                continue;
            }
        }
        return match outcome {
            Ok(response) => {
                upstream.state.counters.responses.count(response.status().as_u16());
                // A mirrored copy carries what this request was sent with, but its `Host`.
                let copy = match mirror {
                    true => copy_of(head.as_ref(), progress.as_deref()).map(|mut copy| {
                        for (name, value) in set.iter().filter(|(name, _)| **name != header::HOST) {
                            match value {
                                Some(value) => copy.headers.insert(*name, (*value).clone()),
                                None => copy.headers.remove(*name),
                            };
                        }
                        copy
                    }),
                    false => None,
                };
                Ok(Exchanged { response, in_flight, copy, client_upgrade })
            }
            Err(failed) => {
                upstream.state.counters.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(failed.error)
            }
        };
    }
}

/// One try on one target, with the per-try (read) and total timeouts; `started` is when it
/// began.
///
/// The sending future is pinned here and polled beside one timer, rather than wrapped in a
/// timeout future per kind of deadline: each wrapper would hold its own copy of that large
/// future, and so would every future that awaits this one, on every request.
#[allow(clippy::too_many_arguments)]
async fn try_once(
    request: Request<RequestBody>,
    set: &SetHeaders<'_>,
    upstream: &Upstream,
    target: &UpstreamTarget,
    pools: &Pools,
    progress: Option<&Progress>,
    deadline: Option<Instant>,
    started: Instant,
) -> Result<Response<UpstreamBody>, Failed> {
    let pool = pools.pool(upstream);
    let mut sending = pin!(pool.send(&upstream.scheme, &target.authority, request, set, started));
    // While the body streams, the upstream is late if no body chunk moves for the write
    // timeout, or if no response comes a read timeout after the body ended; without a body
    // to watch, if no response comes a read timeout from now. Always by the total deadline.
    let read_by = started + upstream.read_timeout;
    let due = || match progress {
        Some(progress) => earliest(progress.deadline(upstream.write_timeout, upstream.read_timeout), deadline),
        None => earliest(read_by, deadline),
    };
    let mut at = due();
    let mut timer = pin!(tokio::time::sleep_until(at));
    let result = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = sending.as_mut().poll(cx) {
            return Poll::Ready(Ok(result));
        }
        loop {
            ready!(timer.as_mut().poll(cx));
            // The body moved on since the timer was set: wait again from the new deadline.
            let later = due();
            if later > at {
                at = later;
                timer.as_mut().reset(at);
                continue;
            }
            let client_late = progress.is_some_and(|p| deadline.is_none_or(|d| at < d) && p.waiting_on_client());
            return Poll::Ready(Err(if client_late { ProxyError::ClientTimeout } else { ProxyError::UpstreamTimeout }));
        }
    })
    .await?;
    result.map_err(|failure| Failed {
        error: classify(&failure.error, progress),
        connecting: matches!(failure.error, SendError::Connect(_)),
        unsent: failure.unsent,
    })
}

fn earliest(at: Instant, deadline: Option<Instant>) -> Instant {
    deadline.map_or(at, |d| d.min(at))
}

/// Whether the policy retries this outcome.
fn wants_retry(policy: &RetryPolicy, outcome: &Result<Response<UpstreamBody>, Failed>) -> bool {
    match outcome {
        Ok(response) => policy.on.statuses.contains(response.status().as_u16()),
        Err(Failed { error: ProxyError::UpstreamUnavailable, .. }) => policy.on.connect_failure,
        Err(Failed { error: ProxyError::UpstreamTimeout, connecting: true, .. }) => policy.on.connect_failure,
        Err(Failed { error: ProxyError::UpstreamTimeout, .. }) => policy.on.timeout,
        Err(Failed { error: ProxyError::UpstreamBroken, .. }) => policy.on.reset,
        Err(_) => false,
    }
}

/// The request as sent, from the kept head and body; `None` if the body was not kept whole.
fn copy_of(head: Option<&(Method, Uri, HeaderMap)>, progress: Option<&Progress>) -> Option<Copy> {
    let (method, uri, headers) = head?;
    let body = match progress {
        None => Vec::new(),
        Some(progress) => progress.replay()?,
    };
    Some(Copy { method: method.clone(), uri: uri.clone(), headers: headers.clone(), body })
}

/// The key a hashing balancer uses for this request, if the request has one. A header the
/// access phase sets or clears counts as the upstream will get it.
fn balance_key<'r>(
    on: &HashKey,
    parts: &'r http::request::Parts,
    client: &'r Client,
    identity: &UpstreamIdentity<'r>,
) -> Option<&'r [u8]> {
    match on {
        HashKey::Header(name) => match identity.headers().find(|(set, _)| *set == name) {
            Some((_, value)) => value.map(HeaderValue::as_bytes),
            None => parts.headers.get(name).map(HeaderValue::as_bytes),
        },
        HashKey::Cookie(name) => headers::cookie(&parts.headers, name),
        HashKey::ClientIp => Some(client.address.as_bytes()),
        HashKey::Path => Some(parts.uri.path().as_bytes()),
    }
}

/// Tells who failed from an upstream error.
fn classify(error: &SendError, progress: Option<&Progress>) -> ProxyError {
    if progress.is_some_and(Progress::too_large) {
        return ProxyError::BodyTooLarge;
    }
    match error {
        SendError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => ProxyError::UpstreamTimeout,
        SendError::Connect(_) => ProxyError::UpstreamUnavailable,
        SendError::Exchange(Failure::Io(io)) if io.kind() == std::io::ErrorKind::TimedOut => {
            ProxyError::UpstreamTimeout
        }
        SendError::Exchange(Failure::Body(BodyError::TooLarge)) => ProxyError::BodyTooLarge,
        SendError::Exchange(Failure::Body(BodyError::Client(_))) => ProxyError::ClientBodyFailed,
        SendError::Exchange(_) => ProxyError::UpstreamBroken,
    }
}
