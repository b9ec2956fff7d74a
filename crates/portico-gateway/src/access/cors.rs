//! CORS: preflight answers, and the headers that let browsers read cross-origin responses.

use crate::proxy::ProxyError;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method};
use portico_model::{Cors, MethodSet};

/// A compiled `cors` policy.
pub(crate) struct CorsPolicy {
    any_origin: bool,
    /// Exact origins, lower case.
    origins: Box<[Box<str>]>,
    /// `https://*.example.com` as (`https://`, `.example.com`).
    wildcards: Box<[(Box<str>, Box<str>)]>,
    methods: MethodSet,
    allow_methods: HeaderValue,
    /// `None`: echo what the browser asks for.
    allow_headers: Option<(Box<[Box<str>]>, HeaderValue)>,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub(crate) fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(ORIGIN) {
        return None;
    }
    Method::from_bytes(headers.get(ACCESS_CONTROL_REQUEST_METHOD)?.as_bytes()).ok()
}

impl CorsPolicy {
    pub fn new(policy: &Cors) -> CorsPolicy {
        let mut methods = MethodSet::default();
        for method in &policy.methods {
            if let Ok(method) = portico_model::Method::parse(method) {
                methods.insert(method);
            }
        }
        let join = |list: &[String]| HeaderValue::from_str(&list.join(", ")).ok();
        let (mut origins, mut wildcards) = (Vec::new(), Vec::new());
        for origin in policy.origins.iter().filter(|o| *o != "*") {
            let origin = origin.to_ascii_lowercase();
            match origin.split_once("://*") {
                Some((scheme, suffix)) => wildcards.push((format!("{scheme}://").into(), suffix.into())),
                None => origins.push(origin.into()),
            }
        }
        CorsPolicy {
            any_origin: policy.origins.iter().any(|o| o == "*"),
            origins: origins.into(),
            wildcards: wildcards.into(),
            methods,
            allow_methods: join(&policy.methods).unwrap_or(HeaderValue::from_static("GET")),
            allow_headers: (!policy.headers.is_empty()).then(|| {
                let names = policy.headers.iter().map(|h| h.to_ascii_lowercase().into()).collect();
                (names, join(&policy.headers).unwrap_or(HeaderValue::from_static("")))
            }),
            expose_headers: (!policy.expose_headers.is_empty()).then(|| join(&policy.expose_headers)).flatten(),
            credentials: policy.credentials,
            max_age: HeaderValue::from(policy.max_age_secs),
        }
    }

    fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.any_origin
            || self.origins.iter().any(|o| **o == origin)
            || self.wildcards.iter().any(|(scheme, suffix)| {
                origin
                    .strip_prefix(&**scheme)
                    .is_some_and(|host| host.len() > suffix.len() && host.ends_with(&**suffix))
            })
    }

    /// `Access-Control-Allow-Origin` and friends for an allowed origin.
    fn allow(&self, origin: HeaderValue, out: &mut HeaderMap) {
        if self.any_origin && !self.credentials {
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            out.append(VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }

    /// Answers a preflight for `method`: the headers of a 204, or 403 when the origin, the
    /// method or a requested header is not allowed.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Result<HeaderMap, ProxyError> {
        let refused = |message| ProxyError::Forbidden { code: "cors_refused", message };
        let mut out = HeaderMap::new();
        let Some(origin) = self.allowed_origin(headers) else {
            return Err(refused("the origin is not allowed by this route's CORS policy"));
        };
        self.allow(origin, &mut out);
        if !self.methods.matches(portico_model::Method::from_http(method)) {
            return Err(refused("the method is not allowed by this route's CORS policy"));
        }
        let requested = headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        match (&self.allow_headers, requested) {
            (Some((names, value)), Some(requested)) => {
                let all_allowed = requested.to_str().is_ok_and(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .all(|h| names.iter().any(|n| n.eq_ignore_ascii_case(h)))
                });
                if !all_allowed {
                    return Err(refused("a requested header is not allowed by this route's CORS policy"));
                }
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, value.clone());
            }
            (None, Some(requested)) => {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
                out.append(VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
            }
            (_, None) => {}
        }
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Ok(out)
    }

    /// The request's origin, when it is one this policy lets read the response.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        origin.to_str().is_ok_and(|o| self.allows_origin(o)).then(|| origin.clone())
    }

    /// Adds the headers the response to an actual request from `origin` (allowed) needs.
    pub fn decorate(&self, origin: HeaderValue, out: &mut HeaderMap) {
        self.allow(origin, out);
        if let Some(expose) = &self.expose_headers {
            out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy::new(&Cors {
            origins: origins.iter().map(|o| o.to_string()).collect(),
            methods: vec!["GET".into(), "POST".into()],
            headers: vec!["Content-Type".into(), "X-Api-Key".into()],
            expose_headers: vec!["RateLimit-Remaining".into()],
            credentials,
            max_age_secs: 600,
        })
    }

    fn request(origin: &str, headers: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(ORIGIN, HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("x")));
        if !headers.is_empty() {
            map.insert(
                ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(headers).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        map
    }

    #[test]
    fn preflights_check_origin_method_and_headers() {
        let cors = policy(&["https://app.example.com", "https://*.example.org"], true);
        let ok = cors.preflight(&Method::POST, &request("https://app.example.com", "content-type, x-api-key"));
        let headers = ok.unwrap_or_default();
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert!(cors.preflight(&Method::GET, &request("https://a.b.example.org", "")).is_ok());
        assert!(cors.preflight(&Method::GET, &request("https://example.org", "")).is_err());
        assert!(cors.preflight(&Method::GET, &request("https://evil.com", "")).is_err());
        assert!(cors.preflight(&Method::DELETE, &request("https://app.example.com", "")).is_err());
        assert!(cors.preflight(&Method::GET, &request("https://app.example.com", "x-secret")).is_err());
    }

    #[test]
    fn any_origin_answers_star_without_credentials() {
        let cors = policy(&["*"], false);
        let mut out = HeaderMap::new();
        let origin = cors.allowed_origin(&request("https://anyone.test", ""));
        cors.decorate(origin.unwrap_or(HeaderValue::from_static("none")), &mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(out[ACCESS_CONTROL_EXPOSE_HEADERS], "RateLimit-Remaining");
        assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }
}
