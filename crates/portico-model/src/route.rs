//! Routes: which requests go where.

use crate::{
    validate_name, Fault, HostPattern, Method, MethodSet, Mirror, PathPattern, Policies, Problems, RoutePrompt, Split,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A route matches requests by host, path, method and headers, and either sends them to a
/// service or answers them itself with a mock response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name.
    #[serde(default)]
    pub name: String,
    /// Higher priority wins when several routes match; see ARCHITECTURE.md for the full order.
    #[serde(default)]
    pub priority: i32,
    /// Hosts to match (`api.example.com`, `*.example.com`); empty matches any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path patterns (`/health`, `/users/{id}`, `/api/*`); empty matches every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Methods to match; empty matches any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Headers that must be present, each with the values accepted (any value if empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Remove the leading literal segments of the matched pattern before forwarding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    /// Replace the matched path with this template; `{name}` inserts a captured parameter and
    /// whatever a trailing `/*` matched is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// Requests over plain HTTP are redirected (308) to HTTPS on the TLS listener.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_only: bool,
    /// Largest request body accepted, in bytes; larger requests get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// The service to forward to. Exactly one of `service` and `mock` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Lets the service's retry policy retry methods that are not idempotent (POST, PATCH):
    /// only for routes whose upstream is safe to call twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_non_idempotent: bool,
    /// A fixed response Portico sends itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockResponse>,
    /// With an AI `service`: the route is a prompt API, answering `POST` with a JSON object
    /// of the prompt's variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<RoutePrompt>,
    /// With an AI `service`: answers to whole (not streamed) calls are kept and given again
    /// to the same request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_cache: Option<AiCache>,
    /// Shares of the traffic for other services (canaries, blue/green).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<Split>,
    /// A shadow service that gets a copy of the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Delays and errors injected for chaos tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Access policies; each kind set here replaces the same kind on the service or globally.
    #[serde(default, skip_serializing_if = "Policies::is_empty")]
    pub policies: Policies,
}

/// A response Portico answers with, without calling any upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MockResponse {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn default_status() -> u16 {
    200
}

/// A header condition, compiled from [`Route::headers`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderMatch {
    pub name: http::HeaderName,
    /// Accepted values; empty means the header only has to be present.
    pub values: Vec<String>,
}

impl crate::HoldsSecrets for Route {
    fn secret_slots(&mut self) -> Vec<(String, &mut Option<crate::Secret>)> {
        self.policies.secret_slots()
    }
}

impl Route {
    /// The path patterns, with an empty list meaning `/*`.
    pub fn path_patterns(&self) -> Vec<Result<PathPattern, String>> {
        if self.paths.is_empty() {
            return vec![Ok(PathPattern { segments: Vec::new(), prefix: true })];
        }
        self.paths.iter().map(|p| PathPattern::parse(p)).collect()
    }

    /// The host patterns, with an empty list meaning any host.
    pub fn host_patterns(&self) -> Vec<Result<HostPattern, String>> {
        if self.hosts.is_empty() {
            return vec![Ok(HostPattern::Any)];
        }
        self.hosts.iter().map(|h| HostPattern::parse(h)).collect()
    }

    pub fn method_set(&self) -> Result<MethodSet, String> {
        let mut set = MethodSet::default();
        for method in &self.methods {
            set.insert(Method::parse(method)?);
        }
        Ok(set)
    }

    pub fn header_matches(&self) -> Result<Vec<HeaderMatch>, String> {
        self.headers
            .iter()
            .map(|(name, values)| {
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a valid header name"))?;
                if let Some(bad) = values.iter().find(|v| http::HeaderValue::from_str(v).is_err()) {
                    return Err(format!("`{bad}` is not a valid header value"));
                }
                Ok(HeaderMatch { name, values: values.clone() })
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if let Err(message) = validate_name(&self.name) {
            problems.push("name", message);
        }
        if let Some(cache) = &self.ai_cache {
            problems.check_ms("ai_cache.ttl_ms", cache.ttl_ms, 1);
            if cache.max_bytes == 0 {
                problems.push("ai_cache.max_bytes", "must be above 0");
            }
        }
        let patterns: Vec<_> = self.path_patterns();
        for (i, pattern) in patterns.iter().enumerate() {
            if let Err(message) = pattern {
                problems.push(format!("paths[{i}]"), message.clone());
            }
        }
        for (i, host) in self.host_patterns().iter().enumerate() {
            if let Err(message) = host {
                problems.push(format!("hosts[{i}]"), message.clone());
            }
        }
        if let Err(message) = self.method_set() {
            problems.push("methods", message);
        }
        if let Err(message) = self.header_matches() {
            problems.push("headers", message);
        }
        if let Some(rewrite) = &self.rewrite {
            self.validate_rewrite(rewrite, &patterns, &mut problems);
        }
        match (&self.service, &self.mock) {
            (Some(_), Some(_)) => problems.push("mock", "set either `service` or `mock`, not both"),
            (None, None) => problems.push("service", "a route needs a `service` to forward to or a `mock` response"),
            (Some(service), None) => {
                if let Err(message) = validate_name(service) {
                    problems.push("service", message);
                }
            }
            (None, Some(mock)) => mock.validate("mock", &mut problems),
        }
        crate::traffic::validate(
            &self.split,
            self.mirror.as_ref(),
            self.fault.as_ref(),
            self.service.is_some(),
            &mut problems,
        );
        self.policies.validate(&mut problems);
        problems.into_result()
    }

    fn validate_rewrite(&self, rewrite: &str, patterns: &[Result<PathPattern, String>], problems: &mut Problems) {
        if self.strip_prefix {
            problems.push("rewrite", "set either `rewrite` or `strip_prefix`, not both");
        }
        let template = match PathPattern::parse(rewrite) {
            Ok(template) if !template.prefix => template,
            Ok(_) => return problems.push("rewrite", "a rewrite template cannot end in '*'"),
            Err(message) => return problems.push("rewrite", message),
        };
        for param in template.params() {
            let everywhere = patterns.iter().flatten().all(|p| p.params().any(|name| name == param));
            if !everywhere {
                problems.push("rewrite", format!("`{{{param}}}` is not a parameter of every path of this route"));
            }
        }
    }
}

impl MockResponse {
    /// Checks the response; problems are reported under the field path `at`.
    pub(crate) fn validate(&self, at: &str, problems: &mut Problems) {
        if !(200..=599).contains(&self.status) {
            problems.push(format!("{at}.status"), "must be an HTTP status between 200 and 599");
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!("{at}.headers.{name}"), "is not a valid header name");
            } else if http::HeaderValue::from_str(value).is_err() {
                problems.push(format!("{at}.headers.{name}"), "is not a valid header value");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            name: "users".into(),
            priority: 0,
            hosts: vec![],
            paths: vec!["/users/{id}".into()],
            methods: vec![],
            headers: BTreeMap::new(),
            strip_prefix: false,
            rewrite: None,
            https_only: false,
            max_body_bytes: None,
            service: Some("users".into()),
            retry_non_idempotent: false,
            mock: None,
            prompt: None,
            ai_cache: None,
            split: vec![],
            mirror: None,
            fault: None,
            policies: Policies::default(),
        }
    }

    #[test]
    fn a_route_needs_exactly_one_destination() {
        let mut r = route();
        r.mock = Some(MockResponse { status: 200, headers: BTreeMap::new(), body: String::new() });
        assert!(r.validate().is_err());
        r.service = None;
        assert!(r.validate().is_ok());
        r.mock = None;
        assert!(r.validate().is_err());
    }

    #[test]
    fn rewrite_may_only_use_parameters_every_path_captures() {
        let mut r = route();
        r.rewrite = Some("/people/{id}".into());
        assert!(r.validate().is_ok());
        r.paths.push("/members/*".into());
        let problems = r.validate().err().unwrap_or_default();
        assert_eq!(problems.0.len(), 1);
        assert_eq!(problems.0[0].path, "rewrite");
    }

    #[test]
    fn problems_name_the_field() {
        let mut r = route();
        r.paths = vec!["/ok".into(), "bad".into()];
        r.methods = vec!["FETCH".into()];
        r.hosts = vec!["bad host".into()];
        let problems = r.validate().err().unwrap_or_default();
        let paths: Vec<_> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["paths[1]", "hosts[0]", "methods"]);
    }
}

/// The response cache of an AI route: an answer is given again to a request that is the
/// same once normalised (the same JSON, whatever its key order and spacing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiCache {
    /// How long an answer is kept.
    #[serde(default = "AiCache::default_ttl_ms")]
    pub ttl_ms: u64,
    /// The most bytes of answers kept (on each node); the oldest go first.
    #[serde(default = "AiCache::default_max_bytes")]
    pub max_bytes: u64,
    /// Give one consumer's answers to another. Off by default: each consumer has its own.
    #[serde(default)]
    pub shared: bool,
}

impl AiCache {
    fn default_ttl_ms() -> u64 {
        300_000
    }

    fn default_max_bytes() -> u64 {
        64 << 20
    }
}
