//! Match patterns for hosts, paths and methods, and the precedence between them.
//!
//! Path patterns are sequences of `/`-separated segments. A segment is a literal (`users`)
//! or a parameter (`{id}`, which matches any one non-empty segment); a pattern that ends
//! in `/*` also matches everything below it, and the bare path itself (`/api/*` matches
//! `/api`, `/api/` and `/api/v1/x`, but not `/apix`). Any other pattern is exact.
//!
//! Precedence between two patterns that both match a request is decided segment by
//! segment from the left: a literal beats a parameter, which beats the end of an exact
//! pattern, which beats a trailing `/*`. So `/users/me` beats `/users/{id}`, which beats
//! `/users/*`.

use std::fmt;

/// One segment of a [`PathPattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed path pattern such as `/users/{id}` or `/api/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    pub segments: Vec<Segment>,
    /// The pattern ends in `/*` and matches any remainder.
    pub prefix: bool,
}

/// Rank of each segment kind in precedence order, as used by [`PathPattern::precedence`].
const RANK_LITERAL: u8 = 3;
const RANK_PARAM: u8 = 2;
const RANK_EXACT_END: u8 = 1;
const RANK_PREFIX_END: u8 = 0;

impl PathPattern {
    pub fn parse(raw: &str) -> Result<PathPattern, String> {
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(format!("`{raw}` must start with '/'"));
        };
        if raw.contains(['?', '#']) {
            return Err(format!("`{raw}` must not contain a query or fragment"));
        }
        let (rest, prefix) = match rest.strip_suffix('*') {
            Some(stem) if stem.is_empty() || stem.ends_with('/') => (stem.trim_end_matches('/'), true),
            Some(_) => return Err(format!("`{raw}`: '*' is only allowed as the whole last segment, as in `/api/*`")),
            None => (rest, false),
        };
        let mut segments = Vec::new();
        if !rest.is_empty() || (!prefix && raw.len() > 1) {
            for part in rest.split('/') {
                segments.push(Self::parse_segment(raw, part, &segments)?);
            }
        }
        Ok(PathPattern { segments, prefix })
    }

    fn parse_segment(raw: &str, part: &str, before: &[Segment]) -> Result<Segment, String> {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("`{raw}`: parameter `{{{name}}}` needs a name of letters, digits and '_'"));
            }
            if before.iter().any(|s| matches!(s, Segment::Param(n) if n == name)) {
                return Err(format!("`{raw}`: parameter `{{{name}}}` appears twice"));
            }
            return Ok(Segment::Param(name.to_owned()));
        }
        if part.contains(['{', '}', '*']) {
            return Err(format!(
                "`{raw}`: segment `{part}` mixes text with '{{', '}}' or '*'; a parameter or '*' must be a whole segment"
            ));
        }
        Ok(Segment::Literal(part.to_owned()))
    }

    /// The precedence key: compare two keys of patterns that match the same request, and the
    /// greater one wins.
    pub fn precedence(&self) -> Vec<u8> {
        let mut key: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => RANK_LITERAL,
                Segment::Param(_) => RANK_PARAM,
            })
            .collect();
        key.push(if self.prefix { RANK_PREFIX_END } else { RANK_EXACT_END });
        key
    }

    /// The pattern with parameter names erased: two patterns with the same shape match
    /// exactly the same requests.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(_) => out.push_str("{}"),
            }
        }
        if self.prefix {
            out.push_str("/*");
        } else if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// The names of the parameters, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// How many leading segments are literals: the part `strip_prefix` removes.
    pub fn literal_prefix_len(&self) -> usize {
        self.segments.iter().take_while(|s| matches!(s, Segment::Literal(_))).count()
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::Param(p) => write!(f, "/{{{p}}}")?,
            }
        }
        if self.prefix {
            f.write_str("/*")
        } else if self.segments.is_empty() {
            f.write_str("/")
        } else {
            Ok(())
        }
    }
}

/// A host to match: any host, one exact name, or every subdomain of a name (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Any,
    Exact(String),
    /// Matches names that end with this suffix, which starts with '.'.
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        let lower = raw.to_ascii_lowercase();
        let (name, wildcard) = match lower.strip_prefix("*.") {
            Some(name) => (name, true),
            None => (lower.as_str(), false),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "`{raw}` is not a valid host: use a name such as `api.example.com` or `*.example.com`, without port"
            ));
        }
        Ok(if wildcard { HostPattern::Wildcard(format!(".{name}")) } else { HostPattern::Exact(name.to_owned()) })
    }

    /// Greater is more specific: exact names, then longer wildcard suffixes, then any host.
    pub fn precedence(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(_) => (2, 0),
            HostPattern::Wildcard(suffix) => (1, suffix.len()),
            HostPattern::Any => (0, 0),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// The HTTP methods a route can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Trace,
    Connect,
}

impl Method {
    const ALL: [(Method, &'static str); 9] = [
        (Method::Get, "GET"),
        (Method::Head, "HEAD"),
        (Method::Post, "POST"),
        (Method::Put, "PUT"),
        (Method::Delete, "DELETE"),
        (Method::Patch, "PATCH"),
        (Method::Options, "OPTIONS"),
        (Method::Trace, "TRACE"),
        (Method::Connect, "CONNECT"),
    ];

    pub fn parse(raw: &str) -> Result<Method, String> {
        Self::ALL
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(raw))
            .map(|(m, _)| *m)
            .ok_or_else(|| format!("`{raw}` is not a method Portico routes on; use one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT"))
    }

    pub fn from_http(method: &http::Method) -> Option<Method> {
        Some(match *method {
            http::Method::GET => Method::Get,
            http::Method::HEAD => Method::Head,
            http::Method::POST => Method::Post,
            http::Method::PUT => Method::Put,
            http::Method::DELETE => Method::Delete,
            http::Method::PATCH => Method::Patch,
            http::Method::OPTIONS => Method::Options,
            http::Method::TRACE => Method::Trace,
            http::Method::CONNECT => Method::Connect,
            _ => return None,
        })
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of methods; the empty set means "any method".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MethodSet(u16);

impl MethodSet {
    pub fn insert(&mut self, method: Method) {
        self.0 |= method.bit();
    }

    pub fn is_any(self) -> bool {
        self.0 == 0
    }

    /// Whether a request with this method (None: a method outside the known list) matches.
    pub fn matches(self, method: Option<Method>) -> bool {
        self.is_any() || method.is_some_and(|m| self.0 & m.bit() != 0)
    }

    /// Whether some request method matches both sets.
    pub fn overlaps(self, other: MethodSet) -> bool {
        self.is_any() || other.is_any() || self.0 & other.0 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns_parse_and_print_back() {
        for raw in ["/", "/*", "/api/*", "/users/{id}", "/a/b/", "/users/{id}/posts/*"] {
            assert_eq!(PathPattern::parse(raw).map(|p| p.to_string()), Ok(raw.to_owned()));
        }
        assert_eq!(PathPattern::parse("/").map(|p| p.segments.len()), Ok(0));
        assert_eq!(PathPattern::parse("/a/").map(|p| p.segments.len()), Ok(2));
    }

    #[test]
    fn bad_path_patterns_are_explained() {
        for raw in ["api", "/api*", "/a/{}", "/a/{x}/{x}", "/a/b{c}", "/*/x", "/a?b=1"] {
            assert!(PathPattern::parse(raw).is_err(), "{raw} should be rejected");
        }
    }

    #[test]
    fn literal_beats_param_beats_exact_end_beats_prefix() {
        let key = |raw| PathPattern::parse(raw).map(|p| p.precedence()).unwrap_or_default();
        assert!(key("/users/me") > key("/users/{id}"));
        assert!(key("/users/{id}") > key("/users/*"));
        assert!(key("/users") > key("/users/*"));
        assert!(key("/api/v1/*") > key("/api/*"));
        assert!(key("/a/b/{y}") > key("/a/{x}/c"));
    }

    #[test]
    fn shapes_ignore_parameter_names() {
        let shape = |raw| PathPattern::parse(raw).map(|p| p.shape()).unwrap_or_default();
        assert_eq!(shape("/users/{id}"), shape("/users/{user}"));
        assert_ne!(shape("/users/*"), shape("/users"));
    }

    #[test]
    fn hosts_are_normalised_and_ranked() {
        assert_eq!(HostPattern::parse("API.Example.com"), Ok(HostPattern::Exact("api.example.com".into())));
        assert_eq!(HostPattern::parse("*.example.com"), Ok(HostPattern::Wildcard(".example.com".into())));
        assert!(HostPattern::parse("api.example.com:8080").is_err());
        assert!(HostPattern::parse("a.*.com").is_err());
        let exact = HostPattern::parse("a.example.com").map(|h| h.precedence());
        let wide = HostPattern::parse("*.example.com").map(|h| h.precedence());
        let narrow = HostPattern::parse("*.a.example.com").map(|h| h.precedence());
        assert!(exact > narrow && narrow > wide && wide > Ok(HostPattern::Any.precedence()));
    }

    #[test]
    fn method_sets() {
        let mut get = MethodSet::default();
        get.insert(Method::Get);
        let mut post = MethodSet::default();
        post.insert(Method::Post);
        assert!(get.matches(Some(Method::Get)) && !get.matches(Some(Method::Post)) && !get.matches(None));
        assert!(MethodSet::default().matches(None));
        assert!(!get.overlaps(post) && get.overlaps(MethodSet::default()));
    }
}
