//! Matching requests to routes.
//!
//! Routes are grouped by host: one table per exact host, one per wildcard suffix and one for
//! routes without hosts. Each table is a trie over path segments, so a lookup costs one walk
//! down the request's segments whatever the number of routes. Every (route, host, path) rule
//! carries a precomputed rank from the documented precedence order; among the rules that match
//! a request, the lowest rank wins.

use portico_model::{HeaderMatch, HostPattern, Method, MethodSet, PathPattern, Segment};
use rustc_hash::FxHashMap;

/// The precedence of a rule, most significant first; the greatest key wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    pub priority: i32,
    pub host: (u8, usize),
    pub path: Vec<u8>,
    pub header_count: usize,
    pub has_methods: bool,
}

/// A rule to add to the router: one host pattern and one path pattern of a route.
pub struct Rule {
    pub route: usize,
    pub pattern: usize,
    pub host: HostPattern,
    pub path: PathPattern,
    pub methods: MethodSet,
    pub headers: Vec<HeaderMatch>,
    pub precedence: Precedence,
}

/// What a lookup found: the route and which of its path patterns matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub route: usize,
    pub pattern: usize,
}

/// The maps hash with FxHash: their keys come from configuration, so clients cannot choose
/// colliding keys, and a lookup hashes request text on every request.
#[derive(Default)]
pub struct Router {
    exact_hosts: FxHashMap<Box<str>, Node>,
    wildcard_hosts: FxHashMap<Box<str>, Node>,
    any_host: Node,
}

#[derive(Default)]
struct Node {
    literals: FxHashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Rules whose pattern ends here exactly, best rank first.
    exact: Vec<Entry>,
    /// Rules whose pattern ends here with `/*`, best rank first.
    prefix: Vec<Entry>,
}

struct Entry {
    rank: u32,
    target: Match,
    methods: MethodSet,
    headers: Box<[HeaderMatch]>,
}

/// The parts of a request the router looks at.
pub struct RequestView<'a> {
    /// Lower-case host without port.
    pub host: &'a str,
    pub path: &'a str,
    pub method: Option<Method>,
    pub headers: &'a http::HeaderMap,
}

impl Router {
    /// Builds the router. Rules are ranked by precedence, ties broken by route order, which
    /// the caller makes deterministic by sorting routes by name.
    pub fn new(mut rules: Vec<Rule>) -> Router {
        rules.sort_by(|a, b| b.precedence.cmp(&a.precedence).then(a.route.cmp(&b.route)));
        let mut router = Router::default();
        for (rank, rule) in rules.into_iter().enumerate() {
            let table = match &rule.host {
                HostPattern::Exact(name) => router.exact_hosts.entry(name.as_str().into()).or_default(),
                HostPattern::Wildcard(suffix) => router.wildcard_hosts.entry(suffix.as_str().into()).or_default(),
                HostPattern::Any => &mut router.any_host,
            };
            let mut node = table;
            for segment in &rule.path.segments {
                node = match segment {
                    Segment::Literal(text) => node.literals.entry(text.as_str().into()).or_default(),
                    Segment::Param(_) => node.param.get_or_insert_with(Default::default),
                };
            }
            let entry = Entry {
                rank: rank as u32,
                target: Match { route: rule.route, pattern: rule.pattern },
                methods: rule.methods,
                headers: rule.headers.into_boxed_slice(),
            };
            // Rules arrive in rank order, so pushing keeps each list sorted.
            if rule.path.prefix {
                node.prefix.push(entry);
            } else {
                node.exact.push(entry);
            }
        }
        router
    }

    /// The best rule matching the request, if any.
    pub fn find(&self, request: &RequestView<'_>) -> Option<Match> {
        let path = request.path.strip_prefix('/').unwrap_or(request.path);
        let rest = if path.is_empty() { None } else { Some(path) };
        let mut best: Option<&Entry> = None;
        if let Some(table) = self.exact_hosts.get(request.host) {
            table.walk(rest, request, &mut best);
        }
        if !self.wildcard_hosts.is_empty() {
            for (i, _) in request.host.match_indices('.') {
                if let Some(table) = self.wildcard_hosts.get(&request.host[i..]) {
                    table.walk(rest, request, &mut best);
                }
            }
        }
        self.any_host.walk(rest, request, &mut best);
        best.map(|entry| entry.target)
    }
}

impl Node {
    /// Visits every node the remaining path can reach and keeps the best matching entry.
    /// `rest` is the path after the segments consumed so far, `None` once all are consumed.
    fn walk<'a>(&'a self, rest: Option<&str>, request: &RequestView<'_>, best: &mut Option<&'a Entry>) {
        consider(&self.prefix, request, best);
        let Some(rest) = rest else {
            consider(&self.exact, request, best);
            return;
        };
        let (segment, next) = match rest.split_once('/') {
            Some((segment, next)) => (segment, Some(next)),
            None => (rest, None),
        };
        if let Some(child) = self.literals.get(segment) {
            child.walk(next, request, best);
        }
        if let Some(child) = &self.param {
            if !segment.is_empty() {
                child.walk(next, request, best);
            }
        }
    }
}

/// Takes the first entry of `entries` (they are in rank order) that matches the method and
/// headers, if it beats the best so far.
fn consider<'a>(entries: &'a [Entry], request: &RequestView<'_>, best: &mut Option<&'a Entry>) {
    let beaten = |rank: u32| best.is_some_and(|b| b.rank < rank);
    for entry in entries {
        if beaten(entry.rank) {
            return;
        }
        if entry.methods.matches(request.method) && headers_match(&entry.headers, request.headers) {
            *best = Some(entry);
            return;
        }
    }
}

fn headers_match(conditions: &[HeaderMatch], headers: &http::HeaderMap) -> bool {
    conditions.iter().all(|condition| {
        let mut values = headers.get_all(&condition.name).iter();
        if condition.values.is_empty() {
            values.next().is_some()
        } else {
            values.any(|v| condition.values.iter().any(|wanted| v.as_bytes() == wanted.as_bytes()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_model::Route;

    /// Builds a router the way the snapshot compiler does, from routes in the YAML shape.
    fn router(routes: &[(&str, &str)]) -> (Router, Vec<String>) {
        let mut rules = Vec::new();
        let mut names = Vec::new();
        for (i, (name, yaml)) in routes.iter().enumerate() {
            let mut route: Route = yaml_serde::from_str(yaml).expect("route yaml");
            route.name = (*name).into();
            names.push(name.to_string());
            rules.extend(crate::snapshot::rules_for(i, &route).expect("valid route"));
        }
        (Router::new(rules), names)
    }

    fn find(router: &(Router, Vec<String>), method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        let method = Method::parse(method).ok();
        let view = RequestView { host, path, method, headers: &map };
        router.0.find(&view).map(|m| router.1[m.route].clone()).unwrap_or_else(|| "404".into())
    }

    #[test]
    fn paths_exact_prefix_and_templates() {
        let r = router(&[
            ("root", "{paths: ['/'], service: s}"),
            ("api", "{paths: ['/api/*'], service: s}"),
            ("api-v1", "{paths: ['/api/v1/*'], service: s}"),
            ("user", "{paths: ['/users/{id}'], service: s}"),
            ("me", "{paths: ['/users/me'], service: s}"),
            ("posts", "{paths: ['/users/{id}/posts/*'], service: s}"),
        ]);
        assert_eq!(find(&r, "GET", "h", "/", &[]), "root");
        assert_eq!(find(&r, "GET", "h", "/x", &[]), "404");
        assert_eq!(find(&r, "GET", "h", "/api", &[]), "api");
        assert_eq!(find(&r, "GET", "h", "/api/", &[]), "api");
        assert_eq!(find(&r, "GET", "h", "/apix", &[]), "404");
        assert_eq!(find(&r, "GET", "h", "/api/v2/x", &[]), "api");
        assert_eq!(find(&r, "GET", "h", "/api/v1/x/y", &[]), "api-v1");
        assert_eq!(find(&r, "GET", "h", "/users/42", &[]), "user");
        assert_eq!(find(&r, "GET", "h", "/users/me", &[]), "me");
        assert_eq!(find(&r, "GET", "h", "/users/", &[]), "404", "a parameter never matches an empty segment");
        assert_eq!(find(&r, "GET", "h", "/users/42/x", &[]), "404");
        assert_eq!(find(&r, "GET", "h", "/users/42/posts", &[]), "posts");
        assert_eq!(find(&r, "GET", "h", "/users/42/posts/7", &[]), "posts");
    }

    #[test]
    fn hosts_exact_beat_wildcards_beat_any() {
        let r = router(&[
            ("any", "{paths: ['/*'], service: s}"),
            ("wide", "{hosts: ['*.example.com'], service: s}"),
            ("narrow", "{hosts: ['*.eu.example.com'], service: s}"),
            ("exact", "{hosts: ['api.eu.example.com'], service: s}"),
        ]);
        assert_eq!(find(&r, "GET", "api.eu.example.com", "/", &[]), "exact");
        assert_eq!(find(&r, "GET", "www.eu.example.com", "/", &[]), "narrow");
        assert_eq!(find(&r, "GET", "www.example.com", "/", &[]), "wide");
        assert_eq!(find(&r, "GET", "example.com", "/", &[]), "any");
        assert_eq!(find(&r, "GET", "other.org", "/x", &[]), "any");
    }

    #[test]
    fn priority_comes_before_specificity() {
        let r = router(&[
            ("specific", "{paths: ['/users/me'], service: s}"),
            ("catch-all", "{paths: ['/*'], priority: 10, service: s}"),
        ]);
        assert_eq!(find(&r, "GET", "h", "/users/me", &[]), "catch-all");
    }

    #[test]
    fn methods_and_headers_narrow_a_match() {
        let r = router(&[
            ("read", "{paths: ['/items'], methods: [GET, HEAD], service: s}"),
            ("write", "{paths: ['/items'], methods: [POST], service: s}"),
            ("v2", "{paths: ['/items'], methods: [GET], headers: {x-version: ['2', '3']}, service: s}"),
            ("flagged", "{paths: ['/items'], headers: {x-beta: []}, service: s}"),
            ("fallback", "{paths: ['/*'], service: s}"),
        ]);
        assert_eq!(find(&r, "GET", "h", "/items", &[]), "read");
        assert_eq!(find(&r, "HEAD", "h", "/items", &[]), "read");
        assert_eq!(find(&r, "POST", "h", "/items", &[]), "write");
        assert_eq!(find(&r, "DELETE", "h", "/items", &[]), "fallback");
        assert_eq!(find(&r, "GET", "h", "/items", &[("x-version", "3")]), "v2");
        assert_eq!(find(&r, "GET", "h", "/items", &[("x-version", "4")]), "read");
        assert_eq!(find(&r, "DELETE", "h", "/items", &[("x-beta", "")]), "flagged");
    }
}
