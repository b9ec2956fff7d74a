//! The request pipeline.
//!
//! [`handle`] walks one request through the phases below, in this order; each policy belongs
//! to exactly one phase, and a later issue adds a policy as one more step in its phase:
//!
//! 1. **accept**: limits on the request head (the connection-level limits live in `server`).
//! 2. **route**: match host, path, method and headers; nothing matches → 404.
//! 3. **access**: client IP rules, CORS, authentication, authorization, rate limits, in that
//!    order (`crate::access`); a CORS preflight is answered here.
//! 4. **rewrite**: body limit (declared length); injected faults; mock responses end the request
//!    here; the service of a split route is chosen; path rewrite.
//! 5. **upstream**: circuit breaker (open: 503 or the fallback), bulkhead (full: 503), then
//!    pick an available target, send from the pool with timeouts, retry (`exchange`); a copy
//!    goes to the mirror, if any (`traffic`). An AI service answers here instead
//!    (`crate::ai`): provider models in place of targets, keys in place of retries.
//! 6. **response**: strip hop-by-hop headers, stream the body back with a read timeout.
//! 7. **log**: the request id, `Server-Timing` and the rate-limit state go back to the
//!    client (`stamp`); when the body is done, the request's [`Trail`] updates the metrics
//!    and queues the access log event (`crate::observe`).

mod body;
mod error;
mod exchange;
mod headers;
mod rewrite;
mod stamp;
mod traffic;
mod tunnel;

pub(crate) use body::{BodyError, Progress, RequestBody, ResponseBody};
pub(crate) use error::ProxyError;
pub(crate) use headers::{
    client_address, empty_map, is_hop_by_hop, name_from_wire, new_request_id, recycle_map, ConnectionTokens,
    X_REQUEST_ID,
};
pub(crate) use traffic::{Condition, Fault, Mirror, Share};

use crate::access;
use crate::observe::{Telemetry, Trail};
use crate::server::ClientBody;
use crate::snapshot::{Action, CompiledRoute, MockResponse, Snapshot};
use crate::upstream::{Admission, Fallback, Pools, Upstream};
use http::{header, HeaderValue, Request, Response};
use portico_model::Method;
use std::borrow::Cow;
use std::net::IpAddr;
use tokio::sync::OwnedSemaphorePermit;

/// Limits that apply to every request, whatever the route.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Largest request head (headers) accepted; larger ones get 431.
    pub max_header_bytes: usize,
    /// The TLS listener's port, for redirects to HTTPS (none: 443).
    pub https_port: Option<u16>,
}

/// Who sent a request: the connection's peer, with its address ready as a header value, and
/// whether the connection is TLS.
pub struct Client {
    pub ip: IpAddr,
    pub address: HeaderValue,
    pub tls: bool,
    /// The client certificate the TLS listener verified, if any.
    pub certificate: Option<crate::server::ClientCert>,
}

/// What the phases of one request need besides the request itself.
#[derive(Clone, Copy)]
pub(crate) struct RequestContext<'a> {
    pub client: &'a Client,
    pub pools: &'a Pools,
    pub request_id: &'a HeaderValue,
    /// The headers the pipeline reads, as the client sent them.
    pub sent: &'a headers::Sent,
}

/// What a worker serves every request with.
pub(crate) struct Serving<'a> {
    pub client: &'a Client,
    pub pools: &'a Pools,
    pub limits: &'a RequestLimits,
    pub telemetry: &'a Telemetry,
}

/// Proxies one request and always produces a response, carrying the request id.
pub(crate) async fn handle(
    request: Request<ClientBody>,
    snapshot: &Snapshot,
    serving: &Serving<'_>,
) -> Response<ResponseBody> {
    let sent = headers::Sent::scan(request.headers());
    let request_id = headers::request_id(&sent);
    let mut trail = Trail::start(serving.telemetry, sent.traceparent.as_ref(), serving.client.tls);
    if let Some(event) = trail.event() {
        describe(event, &request, serving.client, &request_id, &sent);
    }
    let cx = RequestContext { client: serving.client, pools: serving.pools, request_id: &request_id, sent: &sent };
    // What the access phase adds to whatever the response turns out to be (rate-limit
    // state, CORS).
    let mut extras = access::ResponseExtras::default();
    // Set when the route is an AI service's: its errors take the AI client's format.
    let mut ai_client = None;
    let forwarded = forward(request, snapshot, &cx, serving.limits, &mut extras, &mut trail, &mut ai_client).await;
    let mut response = match forwarded {
        Ok(response) => response,
        Err(error) => {
            if let (ProxyError::RateLimited { .. }, Some(route)) = (error, &trail.route) {
                route.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(event) = trail.event() {
                event.error = Some(error.code());
            }
            error.to_response(&request_id, ai_client)
        }
    };
    if let Some(event) = trail.event() {
        event.consumer = extras.consumer.map(|c| c.name.clone());
        event.team = extras.consumer.and_then(|c| c.team.clone());
    }
    let stamp = stamp::Stamp {
        server_timing: trail.head_ready(response.status().as_u16(), serving.telemetry.settings.server_timing),
        limit: extras.limit.take(),
        request_id,
    };
    extras.write(response.headers_mut());
    response.body_mut().finish_with(trail, stamp);
    response
}

/// What the access log records of the request itself.
/// Values from the request head are copied (see `AccessEvent`).
fn describe(
    event: &mut crate::observe::AccessEvent,
    request: &Request<ClientBody>,
    client: &Client,
    id: &HeaderValue,
    sent: &headers::Sent,
) {
    event.client_ip = client.ip;
    event.method = request.method().clone();
    let host = match request.uri().authority() {
        Some(authority) => Some(authority.as_str().as_bytes()),
        None => sent.host.as_ref().map(HeaderValue::as_bytes),
    };
    event.head.set(id.as_bytes(), host, request.uri().path());
}

async fn forward<'s>(
    mut request: Request<ClientBody>,
    snapshot: &'s Snapshot,
    cx: &RequestContext<'_>,
    limits: &RequestLimits,
    extras: &mut access::ResponseExtras<'s>,
    trail: &mut Trail,
    ai_client: &mut Option<portico_ai::Format>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let client = cx.client;
    // 1. accept
    if headers::head_size(request.headers()) > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    if has_dot_segments(request.uri().path()) {
        return Err(ProxyError::BadPath);
    }

    // 2. route
    let (route, pattern) = find_route(snapshot, &request, cx.sent)?;
    trail.route = Some(route.counters.clone());
    if let Some(event) = trail.event() {
        event.route = Some(route.name.clone());
        event.path_template = Some(route.templates[pattern].clone());
    }
    if let Action::Ai(ai) = &route.action {
        *ai_client = Some(match ai.prompt {
            Some(_) => portico_ai::Format::OpenAi,
            None => crate::ai::client_format(request.uri().path()),
        });
    }
    if route.https_only && !client.tls {
        return Ok(redirect_to_https(&request, cx.sent, limits.https_port));
    }

    // 3. access
    if let Some(policy) = &route.access {
        if let Some(answer) =
            access::check(policy, &snapshot.access, &mut request, client, trail.arrived(), extras).await?
        {
            return Ok(answer);
        }
    }
    // Who the caller is goes upstream with the head, unless a phase before the upstream
    // reads headers to decide: then it must see them as the upstream will.
    if route.fault.is_some() || !route.shares.is_empty() || matches!(route.action, Action::Ai(_)) {
        extras.identity.apply_to(request.headers_mut());
    }

    // 4. rewrite
    if let Some(limit) = route.max_body_bytes {
        let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    if let Some(fault) = &route.fault {
        fault.apply(request.headers()).await?;
    }
    let upstream = match &route.action {
        Action::Mock(mock) => return Ok(mock_response(mock)),
        // An AI service takes the place of the upstream phase. Its future is boxed: inline,
        // its size would be added to every request's future, which is moved on every call.
        Action::Ai(ai) => {
            let caller = crate::ai::Caller { consumer: extras.consumer, credential: extras.credential };
            return Ok(Box::pin(crate::ai::handle(request, ai, route.max_body_bytes, caller, cx, trail)).await);
        }
        Action::Forward(upstream) => traffic::choose(&route.shares, upstream, request.headers()),
    };
    let path = rewrite::upstream_path(&route.rewrite, &route.patterns[pattern], request.uri().path());
    let edits = exchange::Edits { path, identity: extras.identity };

    // 5. upstream: circuit breaker, bulkhead, then the exchange (balancer, pool, retries).
    // The breaker goes first so that an open circuit answers at once instead of queueing.
    let admission = upstream.breaker.as_ref().map(|policy| (policy, upstream.state.breaker.admit(policy)));
    if let Some((policy, Admission::Rejected(wait_ms))) = admission {
        let other = match &policy.fallback {
            Some(Fallback::Mock(mock)) => return Ok(mock_response(mock)),
            Some(Fallback::Service(name)) => snapshot.upstream(name),
            None => None,
        };
        return match other {
            Some(other) => forward_to(request, route, other, edits, cx, None, None, trail).await,
            None => Err(ProxyError::CircuitOpen { retry_after_secs: wait_ms.div_ceil(1000) }),
        };
    }
    let permit = match &upstream.bulkhead {
        Some(bulkhead) => Some(bulkhead.enter().await.ok_or(ProxyError::Overloaded)?),
        None => None,
    };
    let mirror = route.mirror.as_ref().filter(|m| m.wanted());
    let result = forward_to(request, route, upstream, edits, cx, permit, mirror, trail).await;
    if let Some((policy, admission)) = admission {
        let failed = match &result {
            Ok(response) => Some(policy.statuses.contains(response.status().as_u16())),
            Err(error) if error.is_upstream_fault() => Some(true),
            Err(_) => None,
        };
        upstream.state.breaker.record(policy, admission, failed);
    }
    result
}

/// Sends the request to `upstream` and turns its answer into the client's response.
#[allow(clippy::too_many_arguments)]
async fn forward_to(
    request: Request<ClientBody>,
    route: &CompiledRoute,
    upstream: &Upstream,
    edits: exchange::Edits<'_>,
    cx: &RequestContext<'_>,
    permit: Option<OwnedSemaphorePermit>,
    mirror: Option<&Mirror>,
    trail: &mut Trail,
) -> Result<Response<ResponseBody>, ProxyError> {
    if let Some(event) = trail.event() {
        event.service = Some(upstream.name.clone());
    }
    let exchanged = exchange::send_upstream(request, route, upstream, edits, cx, mirror.is_some(), trail).await?;
    if let (Some(mirror), Some(copy)) = (mirror, exchanged.copy) {
        mirror.send(copy, cx.pools);
    }

    // 6. response
    let (mut parts, body) = exchanged.response.into_parts();
    let switched = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    let protocol = match body.has_hop_by_hop() {
        true => headers::remove_hop_by_hop(&mut parts.headers),
        false => None,
    };
    let mut body = match (switched, exchanged.client_upgrade, protocol) {
        (false, ..) => ResponseBody::upstream(body, upstream.read_timeout, exchanged.in_flight),
        (true, Some(client), Some(protocol)) => {
            let upstream_side = body.into_upgraded().ok_or(ProxyError::UpstreamBroken)?;
            headers::keep_upgrade(&mut parts.headers, protocol);
            let tunnel = tunnel::Tunnel { client, upstream: upstream_side, idle: upstream.read_timeout };
            ResponseBody::tunnel(tunnel, exchanged.in_flight)
        }
        // A switch the client did not ask for, or to no protocol.
        (true, ..) => return Err(ProxyError::UpstreamBroken),
    };
    if let Some(permit) = permit {
        body.hold(permit);
    }
    Ok(Response::from_parts(parts, body))
}

fn find_route<'s>(
    snapshot: &'s Snapshot,
    request: &Request<ClientBody>,
    sent: &headers::Sent,
) -> Result<(&'s CompiledRoute, usize), ProxyError> {
    let host = request_host(request, sent);
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    // A CORS preflight asks about the request the browser wants to send: it goes to the
    // route that request would match, whose CORS policy answers it.
    let method = match access::preflight_method(request.method(), request.headers()) {
        Some(wanted) => Method::from_http(&wanted),
        None => Method::from_http(request.method()),
    };
    let view =
        crate::router::RequestView { host: &host, path: request.uri().path(), method, headers: request.headers() };
    let found = snapshot.router.find(&view).ok_or(ProxyError::NoRoute)?;
    Ok((&snapshot.routes[found.route], found.pattern))
}

/// The host the client asked for, without port: from the URI (HTTP/2 and absolute-form
/// requests) or the `Host` header.
fn request_host<'r>(request: &'r Request<ClientBody>, sent: &'r headers::Sent) -> &'r str {
    let raw = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => sent.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""),
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

/// The host of `[userinfo@]host[:port]`. Byte loops rather than `str` patterns: hosts are
/// a few bytes long, and this runs for every request.
fn strip_port(authority: &str) -> &str {
    let bytes = authority.as_bytes();
    let start = bytes.iter().rposition(|&b| b == b'@').map_or(0, |at| at + 1);
    let host = &bytes[start..];
    let end = match host.first() {
        Some(b'[') => host.iter().position(|&b| b == b']').map_or(host.len(), |close| close + 1),
        _ => host.iter().position(|&b| b == b':').unwrap_or(host.len()),
    };
    // Both ends are at ASCII bytes, so on character boundaries.
    &authority[start..start + end]
}

/// A permanent redirect to the same URL over HTTPS (308 keeps the method and body).
fn redirect_to_https(request: &Request<ClientBody>, sent: &headers::Sent, port: Option<u16>) -> Response<ResponseBody> {
    let host = request_host(request, sent);
    let port = port.filter(|p| *p != 443).map(|p| format!(":{p}")).unwrap_or_default();
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut response = Response::new(ResponseBody::full(bytes::Bytes::new()));
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn mock_response(mock: &MockResponse) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(mock.body.clone()));
    *response.status_mut() = mock.status;
    *response.headers_mut() = mock.headers.clone();
    response
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
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("[::1"), "[::1");
        assert_eq!(strip_port("ünï.test:80"), "ünï.test");
        assert_eq!(strip_port(""), "");
    }
}
