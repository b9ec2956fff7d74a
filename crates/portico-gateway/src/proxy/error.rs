//! Errors a request can end with, and the one place they become HTTP responses.
//!
//! Each error says who failed (the client, the upstream, or nothing matched) in a small JSON
//! body with the request id. Upstream internals (addresses, error texts) are logged, never sent.

use super::body::ResponseBody;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No route matches the request.
    NoRoute,
    /// The request head is larger than allowed.
    HeadersTooLarge,
    /// The path has `.` or `..` segments.
    BadPath,
    /// The request body is larger than the route allows.
    BodyTooLarge,
    /// The client stopped sending the request body.
    ClientTimeout,
    /// The request body could not be read from the client (it broke the connection or sent
    /// invalid framing).
    ClientBodyFailed,
    /// The upstream could not be reached: refused, reset or unresolvable.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream answered with something that is not valid HTTP, or closed mid-response.
    UpstreamBroken,
    /// The service's circuit breaker is open; it may close in this many seconds.
    CircuitOpen { retry_after_secs: u64 },
    /// The service's bulkhead is full, and so is its queue.
    Overloaded,
    /// The route's fault policy failed the request on purpose.
    FaultInjected(StatusCode),
    /// The service has no targets (discovery has found no instance).
    NoTargets,
    /// The request carries no credentials, or ones that identify no consumer. `basic` asks
    /// the client for Basic credentials (`WWW-Authenticate`).
    Unauthenticated { message: &'static str, basic: bool },
    /// An access policy refuses the request.
    Forbidden { code: &'static str, message: &'static str },
    /// A rate limit is reached; a request may fit again in this many seconds.
    RateLimited { retry_after_secs: u64 },
}

impl ProxyError {
    /// Whether the upstream, not the client, is to blame; such errors count against the
    /// target in passive health checks.
    pub fn is_upstream_fault(self) -> bool {
        matches!(self, ProxyError::UpstreamUnavailable | ProxyError::UpstreamTimeout | ProxyError::UpstreamBroken)
    }

    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ProxyError::NoRoute => (StatusCode::NOT_FOUND, "no_route", "no route matches this request"),
            ProxyError::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request headers are larger than allowed",
            ),
            ProxyError::BadPath => {
                (StatusCode::BAD_REQUEST, "bad_path", "the path must not contain '.' or '..' segments")
            }
            ProxyError::BodyTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is larger than this route allows")
            }
            ProxyError::ClientTimeout => {
                (StatusCode::REQUEST_TIMEOUT, "client_timeout", "the client stopped sending the request")
            }
            ProxyError::ClientBodyFailed => {
                (StatusCode::BAD_REQUEST, "client_body_failed", "the request body could not be read")
            }
            ProxyError::UpstreamUnavailable => {
                (StatusCode::BAD_GATEWAY, "upstream_unavailable", "the upstream service could not be reached")
            }
            ProxyError::UpstreamTimeout => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "the upstream service did not answer in time")
            }
            ProxyError::UpstreamBroken => {
                (StatusCode::BAD_GATEWAY, "upstream_error", "the upstream service sent an invalid response")
            }
            ProxyError::CircuitOpen { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "circuit_open",
                "the upstream service is failing; requests to it are paused",
            ),
            ProxyError::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_busy",
                "the upstream service has as many requests as it may take",
            ),
            ProxyError::NoTargets => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_targets", "the upstream service has no instances")
            }
            ProxyError::FaultInjected(status) => (status, "fault_injected", "this route injects faults for testing"),
            ProxyError::Unauthenticated { message, .. } => (StatusCode::UNAUTHORIZED, "unauthorized", message),
            ProxyError::Forbidden { code, message } => (StatusCode::FORBIDDEN, code, message),
            ProxyError::RateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; slow down and try again later")
            }
        }
    }

    /// The code clients see in the error body (`upstream_timeout`, `rate_limited`, ...).
    pub fn code(self) -> &'static str {
        self.parts().1
    }

    pub fn status(self) -> StatusCode {
        self.parts().0
    }

    /// The response for this error: Portico's JSON error, or for a client of an AI service,
    /// the error of its own API (so that its SDK raises the right exception).
    pub fn to_response(self, request_id: &HeaderValue, ai: Option<portico_ai::Format>) -> Response<ResponseBody> {
        let (status, code, message) = self.parts();
        let mut response = match ai {
            Some(format) => {
                let kind = portico_ai::ErrorKind::from_status(status.as_u16());
                let error = portico_ai::AiError::new(kind, message).with_code(code);
                crate::ai::error_response(format, Some(status), &error)
            }
            None => error_response(status, code, message, request_id.to_str().unwrap_or("")),
        };
        if let ProxyError::Unauthenticated { basic: true, .. } = self {
            let challenge = HeaderValue::from_static("Basic realm=\"portico\", charset=\"UTF-8\"");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        let retry_after = match self {
            ProxyError::CircuitOpen { retry_after_secs } | ProxyError::RateLimited { retry_after_secs } => {
                Some(retry_after_secs)
            }
            ProxyError::Overloaded => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // The rest of the request body will not be read, so the connection closes after the
        // answer; saying so keeps a client from sending its next request on it.
        if matches!(self, ProxyError::BodyTooLarge | ProxyError::ClientTimeout | ProxyError::ClientBodyFailed) {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A JSON error response: `{"error": code, "message": ..., "request_id": ...}`.
fn error_response(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({ "error": code, "message": message, "request_id": request_id }).to_string();
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
