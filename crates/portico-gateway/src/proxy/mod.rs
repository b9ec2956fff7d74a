//! The request pipeline.
//!
//! [`handle`] walks one request through the phases below, in this order; each policy belongs
//! to exactly one phase, and a later issue adds a policy as one more step in its phase:
//!
//! 1. **accept**: limits on the request head (the connection-level limits live in `server`).
//! 2. **route**: match host, path, method and headers; nothing matches → 404.
//! 3. **access**: who may call (authentication, authorization, rate limits) — none yet.
//! 4. **rewrite**: body limit (declared length); mock responses end the request here; path rewrite.
//! 5. **upstream**: pick a target, connect from the pool, send with timeouts.
//! 6. **response**: strip hop-by-hop headers, stream the body back with a read timeout.
//! 7. **log**: the request id goes back to the client (access logs come later).

mod body;
mod error;
mod headers;
mod rewrite;

pub(crate) use body::{RequestBody, ResponseBody};
use error::ProxyError;
pub(crate) use headers::client_address;

use crate::snapshot::{Action, CompiledRoute, MockResponse, Snapshot};
use crate::upstream::{HashKey, InFlightRequest, Lease, Pools, SendError, Upstream};
use body::{BodyError, Progress};
use headers::X_REQUEST_ID;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use portico_model::{HostHeader, Method};
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// Limits that apply to every request, whatever the route.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Largest request head (headers) accepted; larger ones get 431.
    pub max_header_bytes: usize,
}

/// Who sent a request: the connection's peer, with its address ready as a header value.
pub struct Client {
    pub address: HeaderValue,
}

/// Proxies one request and always produces a response, carrying the request id.
pub async fn handle(
    request: Request<Incoming>,
    snapshot: &Snapshot,
    client: &Client,
    pools: &Pools,
    limits: &RequestLimits,
) -> Response<ResponseBody> {
    let request_id = headers::request_id(request.headers());
    let mut response = match forward(request, snapshot, client, pools, limits, &request_id).await {
        Ok(response) => response,
        Err(error) => error.to_response(&request_id),
    };
    response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    response
}

async fn forward(
    request: Request<Incoming>,
    snapshot: &Snapshot,
    client: &Client,
    pools: &Pools,
    limits: &RequestLimits,
    request_id: &HeaderValue,
) -> Result<Response<ResponseBody>, ProxyError> {
    // 1. accept
    if headers::head_size(request.headers()) > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    if has_dot_segments(request.uri().path()) {
        return Err(ProxyError::BadPath);
    }

    // 2. route
    let (route, pattern) = find_route(snapshot, &request)?;

    // 3. access: no policies yet.

    // 4. rewrite
    if let Some(limit) = route.max_body_bytes {
        let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    let upstream = match &route.action {
        Action::Mock(mock) => return Ok(mock_response(mock)),
        Action::Forward(upstream) => upstream,
    };
    let path = rewrite::upstream_path(&route.rewrite, &route.patterns[pattern], request.uri().path());

    // 5. upstream
    let (response, lease, in_flight) = send_upstream(request, route, upstream, path, client, pools, request_id).await?;

    // 6. response
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, ResponseBody::upstream(body, upstream.read_timeout, lease, in_flight)))
}

fn find_route<'s>(
    snapshot: &'s Snapshot,
    request: &Request<Incoming>,
) -> Result<(&'s CompiledRoute, usize), ProxyError> {
    let host = request_host(request);
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    let view = crate::router::RequestView {
        host: &host,
        path: request.uri().path(),
        method: Method::from_http(request.method()),
        headers: request.headers(),
    };
    let found = snapshot.router.find(&view).ok_or(ProxyError::NoRoute)?;
    Ok((&snapshot.routes[found.route], found.pattern))
}

/// The host the client asked for, without port: from the URI (HTTP/2 and absolute-form
/// requests) or the `Host` header.
fn request_host(request: &Request<Incoming>) -> &str {
    let raw = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""),
    };
    strip_port(raw)
}

/// Whether the path has `.` or `..` segments, plain or percent-encoded. Routes match the path
/// as sent, so `/public/../admin` would match `/public/*` and then reach `/admin` on an
/// upstream that resolves it; such paths are refused instead (clients remove dot segments
/// before sending, RFC 3986 §5.2.4).
fn has_dot_segments(path: &str) -> bool {
    if !path.contains(['.', '%']) {
        return false;
    }
    path.split('/').any(|segment| {
        let bytes = segment.as_bytes();
        let (mut dots, mut i) = (0, 0);
        while i < bytes.len() {
            match bytes[i..] {
                [b'.', ..] => i += 1,
                [b'%', b'2', e, ..] if e.eq_ignore_ascii_case(&b'e') => i += 3,
                _ => return false,
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

fn strip_port(authority: &str) -> &str {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    authority.split_once(':').map_or(authority, |(host, _)| host)
}

fn mock_response(mock: &MockResponse) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(mock.body.clone()));
    *response.status_mut() = mock.status;
    *response.headers_mut() = mock.headers.clone();
    response
}

async fn send_upstream(
    request: Request<Incoming>,
    route: &CompiledRoute,
    upstream: &Upstream,
    path: Option<String>,
    client: &Client,
    pools: &Pools,
    request_id: &HeaderValue,
) -> Result<(Response<Incoming>, Lease, Option<InFlightRequest>), ProxyError> {
    let (mut parts, body) = request.into_parts();
    let key = upstream.hash_on().and_then(|on| balance_key(on, &parts, client));
    let target = upstream.pick(key);
    let in_flight = upstream.counts_requests().then(|| target.state.start_request());
    let started = Instant::now();

    let uri = std::mem::take(&mut parts.uri).into_parts();
    let path_and_query = match path {
        Some(path) => {
            let joined = match uri.path_and_query.as_ref().and_then(|pq| pq.query()) {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            PathAndQuery::from_maybe_shared(joined).map_err(|_| ProxyError::BadPath)?
        }
        None => uri.path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let client_host = uri
        .authority
        .as_ref()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| parts.headers.get(header::HOST).cloned());
    // Origin-form (`/path?query`): the target's address travels in the `Host` header.
    parts.uri = Uri::from(path_and_query);
    parts.version = Version::HTTP_11;

    headers::remove_hop_by_hop(&mut parts.headers);
    match (upstream.host_header, &client_host) {
        (HostHeader::Pass, Some(host)) => parts.headers.insert(header::HOST, host.clone()),
        _ => parts.headers.insert(header::HOST, target.host.clone()),
    };
    headers::set_forwarded(&mut parts.headers, &client.address, client_host.as_ref());
    parts.headers.insert(X_REQUEST_ID.clone(), request_id.clone());

    let (body, progress) = RequestBody::new(body, route.max_body_bytes);
    let pool = pools.pool(upstream.connect_timeout);
    let sending = pool.send(&upstream.scheme, &target.authority, Request::from_parts(parts, body));
    let result = match &progress {
        None => tokio::time::timeout(upstream.read_timeout, sending).await.map_err(|_| ProxyError::UpstreamTimeout)?,
        Some(progress) => {
            with_progress_deadline(sending, progress, upstream.write_timeout, upstream.read_timeout).await?
        }
    };
    match result {
        Ok((response, lease)) => {
            if let Some(policy) = &upstream.passive_check {
                target.state.record_outcome(policy, policy.statuses.contains(response.status().as_u16()));
            }
            if in_flight.is_some() {
                target.state.observe_latency(started.elapsed());
            }
            Ok((response, lease, in_flight))
        }
        Err(error) => {
            let outcome = classify(&error, progress.as_deref());
            tracing::debug!(route = %route.name, upstream = %upstream.name, ?error, status = %outcome.status(), "upstream request failed");
            if let Some(policy) = &upstream.passive_check {
                if outcome.is_upstream_fault() {
                    target.state.record_outcome(policy, true);
                }
            }
            Err(outcome)
        }
    }
}

/// The key a hashing balancer uses for this request, if the request has one.
fn balance_key<'r>(on: &HashKey, parts: &'r http::request::Parts, client: &'r Client) -> Option<&'r [u8]> {
    match on {
        HashKey::Header(name) => parts.headers.get(name).map(HeaderValue::as_bytes),
        HashKey::Cookie(name) => headers::cookie(&parts.headers, name),
        HashKey::ClientIp => Some(client.address.as_bytes()),
        HashKey::Path => Some(parts.uri.path().as_bytes()),
    }
}

/// Waits for the upstream's response while the request body streams: the upstream is late
/// if no body chunk moves for `write`, or if no response comes `read` after the body ended.
async fn with_progress_deadline<F, T>(
    sending: F,
    progress: &Progress,
    write: Duration,
    read: Duration,
) -> Result<T, ProxyError>
where
    F: std::future::Future<Output = T>,
{
    let mut sending = std::pin::pin!(sending);
    loop {
        let deadline = progress.deadline(write, read);
        match tokio::time::timeout_at(deadline, &mut sending).await {
            Ok(result) => return Ok(result),
            // The body moved on since the deadline was set: wait again from the new one.
            Err(_) if progress.deadline(write, read) > deadline => continue,
            Err(_) if progress.waiting_on_client() => return Err(ProxyError::ClientTimeout),
            Err(_) => return Err(ProxyError::UpstreamTimeout),
        }
    }
}

/// Tells who failed from an upstream error.
fn classify(error: &SendError, progress: Option<&Progress>) -> ProxyError {
    if progress.is_some_and(Progress::too_large) {
        return ProxyError::BodyTooLarge;
    }
    let (root, connecting): (&(dyn std::error::Error + 'static), bool) = match error {
        SendError::Connect(error) => (error.as_ref(), true),
        SendError::Http(error) => (error, false),
    };
    let mut cause = Some(root);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return ProxyError::UpstreamTimeout;
            }
        }
        if let Some(BodyError::Http(_)) = error.downcast_ref::<BodyError>() {
            return ProxyError::ClientBodyFailed;
        }
        cause = error.source();
    }
    if connecting {
        ProxyError::UpstreamUnavailable
    } else {
        ProxyError::UpstreamBroken
    }
}

#[cfg(test)]
mod tests {
    use super::{has_dot_segments, strip_port};

    #[test]
    fn dot_segments_are_found_however_they_are_written() {
        for path in ["/a/../b", "/a/./b", "/..", "/a/%2e%2E/b", "/a/%2E"] {
            assert!(has_dot_segments(path), "{path}");
        }
        for path in ["/", "/a/b", "/a..b/c", "/.well-known/x", "/a/...", "/v1.2/x"] {
            assert!(!has_dot_segments(path), "{path}");
        }
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("api.test:8080"), "api.test");
        assert_eq!(strip_port("api.test"), "api.test");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("user@api.test:1"), "api.test");
    }
}
