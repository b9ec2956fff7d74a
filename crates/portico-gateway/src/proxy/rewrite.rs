//! Deriving the upstream path from the request path.

use crate::snapshot::PathRewrite;
use portico_model::{PathPattern, Segment};

/// The path to send upstream for `path`, which matched `pattern`; `None` keeps it as is.
pub fn upstream_path(rewrite: &PathRewrite, pattern: &PathPattern, path: &str) -> Option<String> {
    let segments = || path.strip_prefix('/').unwrap_or(path).split('/');
    match rewrite {
        PathRewrite::Keep => None,
        PathRewrite::StripPrefix => {
            let skip = pattern.literal_prefix_len();
            let rest: Vec<&str> = if path == "/" { Vec::new() } else { segments().skip(skip).collect() };
            Some(format!("/{}", rest.join("/")))
        }
        PathRewrite::Template(template) => {
            let captured: Vec<&str> = segments().collect();
            let mut out = String::with_capacity(path.len() + 16);
            for segment in &template.segments {
                out.push('/');
                match segment {
                    Segment::Literal(text) => out.push_str(text),
                    Segment::Param(name) => {
                        let position =
                            pattern.segments.iter().position(|s| matches!(s, Segment::Param(n) if n == name));
                        out.push_str(position.and_then(|i| captured.get(i)).copied().unwrap_or(""));
                    }
                }
            }
            if pattern.prefix && captured.len() > pattern.segments.len() && path != "/" {
                let remainder = &captured[pattern.segments.len()..];
                if !(out.ends_with('/') && remainder.first() == Some(&"")) {
                    out.push('/');
                }
                out.push_str(&remainder.join("/"));
            }
            if out.is_empty() {
                out.push('/');
            }
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(pattern: &str, rewrite: Option<&str>, path: &str) -> String {
        let pattern = PathPattern::parse(pattern).expect("pattern");
        let rewrite = match rewrite {
            Some(t) => PathRewrite::Template(PathPattern::parse(t).expect("template")),
            None => PathRewrite::StripPrefix,
        };
        upstream_path(&rewrite, &pattern, path).unwrap_or_default()
    }

    #[test]
    fn strip_prefix_removes_the_leading_literals() {
        assert_eq!(rewrite("/api/*", None, "/api/users/1"), "/users/1");
        assert_eq!(rewrite("/api/*", None, "/api"), "/");
        assert_eq!(rewrite("/api/*", None, "/api/"), "/");
        assert_eq!(rewrite("/users/{id}", None, "/users/7"), "/7");
        assert_eq!(rewrite("/*", None, "/x"), "/x");
    }

    #[test]
    fn templates_insert_parameters_and_append_the_rest() {
        assert_eq!(rewrite("/users/{id}", Some("/v2/people/{id}"), "/users/7"), "/v2/people/7");
        assert_eq!(rewrite("/old/{id}/*", Some("/new/{id}"), "/old/5/a/b"), "/new/5/a/b");
        assert_eq!(rewrite("/old/{id}/*", Some("/new/{id}"), "/old/5"), "/new/5");
        assert_eq!(rewrite("/api/*", Some("/"), "/api/x"), "/x");
        assert_eq!(rewrite("/api/*", Some("/backend"), "/api"), "/backend");
    }
}
