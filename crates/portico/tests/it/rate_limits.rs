//! Rate limits as clients see them: the counts, the `RateLimit-*` headers, limits that
//! follow a consumer, counting across two Portico processes through Redis, and what happens
//! when Redis is gone.

use crate::cli::serve_nodes;
use crate::helpers::Portico;
use portico_testkit::{redis_url, MockUpstream};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn limits_count_per_consumer_and_say_so_in_headers() {
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    portico.service("api", &[upstream.addr.to_string()]).await;
    let limit =
        json!({"by": "consumer", "limits": [{"requests": 3, "per": "minute"}, {"requests": 100, "per": "day"}]});
    let route = json!({"name": "api", "service": "api", "policies": {"key_auth": {}, "rate_limit": limit}});
    portico.create("routes", route).await;
    let consumer = |name: &str, policies: Value| json!({"name": name, "credentials": [{"type": "key_auth", "key": format!("{name}-secret-key-123")}], "policies": policies});
    portico.create("consumers", consumer("basic-app", json!({}))).await;
    let premium = json!({"rate_limit": {"limits": [{"requests": 5, "per": "minute"}]}});
    portico.create("consumers", consumer("premium-app", premium)).await;
    let call = |name: &str| portico.get("/").header("x-api-key", format!("{name}-secret-key-123")).send();

    for remaining in ["2", "1", "0"] {
        let response = call("basic-app").await.expect("request");
        assert_eq!(response.status(), 200);
        // The tightest limit is the one reported: 3 a minute, not 100 a day.
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(header(&response, "ratelimit-remaining").as_deref(), Some(remaining));
        let reset: u64 = header(&response, "ratelimit-reset").and_then(|r| r.parse().ok()).unwrap_or(0);
        assert!((1..=60).contains(&reset), "{reset}");
    }
    let refused = call("basic-app").await.expect("request");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = header(&refused, "retry-after").and_then(|r| r.parse().ok()).unwrap_or(0);
    assert!((1..=120).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&refused, "ratelimit-remaining").as_deref(), Some("0"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(upstream.hits(), 3);

    // A consumer with its own limit gets that one instead of the route's.
    let passed = futures_util::future::join_all((0..7).map(|_| call("premium-app"))).await;
    let ok = passed.iter().filter(|r| r.as_ref().is_ok_and(|r| r.status() == 200)).count();
    assert_eq!(ok, 5);

    // A reload that leaves the limit alone keeps its count.
    portico.create("routes", json!({"name": "other", "paths": ["/other"], "mock": {"body": "x"}})).await;
    assert_eq!(call("basic-app").await.expect("request").status(), 429);
    portico.stop().await;
}

#[tokio::test]
async fn a_service_limit_is_shared_by_its_routes() {
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    let limit = json!({"rate_limit": {"by": "service", "limits": [{"requests": 4, "per": "hour"}]}});
    let service = json!({"name": "api", "targets": [{"address": upstream.addr.to_string()}], "policies": limit});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "a", "paths": ["/a"], "service": "api"})).await;
    portico.create("routes", json!({"name": "b", "paths": ["/b"], "service": "api"})).await;
    let mut statuses = Vec::new();
    for path in ["/a", "/b", "/a", "/b", "/a", "/b"] {
        statuses.push(portico.get(path).send().await.expect("request").status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    portico.stop().await;
}

pub(crate) fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn two_processes_share_a_cluster_limit_through_redis() {
    let Some(redis) = redis_url() else { return };
    let upstream = MockUpstream::start("api").await;
    const LIMIT: usize = 200;
    // Unique route names keep this run's counters apart from earlier runs on the same Redis.
    let (shared, local) = (unique("shared"), unique("local"));
    let config = format!(
        r#"
services:
  - name: api
    targets: [{{address: "{upstream}"}}]
routes:
  - name: {shared}
    paths: ["/shared"]
    service: api
    policies:
      rate_limit: {{by: route, cluster: true, limits: [{{requests: {LIMIT}, per: hour}}]}}
  - name: {local}
    paths: ["/local"]
    service: api
    policies:
      rate_limit: {{by: route, limits: [{{requests: {LIMIT}, per: hour}}]}}
"#,
        upstream = upstream.addr
    );
    let nodes = serve_nodes(&config, &redis, 2);

    let http = reqwest::Client::new();
    let count_ok = |path: &'static str| {
        let (http, nodes) = (http.clone(), nodes.iter().map(|node| node.url.clone()).collect::<Vec<_>>());
        async move {
            // 600 requests, alternating between the nodes, eight at a time.
            let mut passed = 0usize;
            for batch in 0..75 {
                let sends = (0..8).map(|i| http.get(format!("{}{path}", nodes[(batch + i) % 2])).send());
                for response in futures_util::future::join_all(sends).await {
                    if response.expect("request").status() == 200 {
                        passed += 1;
                    }
                }
            }
            passed
        }
    };
    let shared_passed = count_ok("/shared").await;
    let local_passed = count_ok("/local").await;
    drop(nodes);
    eprintln!("shared limit of {LIMIT}: {shared_passed} passed; per-node limits: {local_passed} passed");
    let tolerance = LIMIT / 20;
    assert!(shared_passed.abs_diff(LIMIT) <= tolerance, "{shared_passed} passed, not {LIMIT} ± 5%");
    // Counted on each node alone, the same limit lets twice as many through.
    assert_eq!(local_passed, 2 * LIMIT);
}

#[tokio::test]
async fn without_redis_cluster_limits_fall_back_to_each_node_and_say_so() {
    let upstream = MockUpstream::start("api").await;
    // Nothing listens on port 1.
    let portico = Portico::start_with(|s| s.redis_url = Some("redis://127.0.0.1:1".into())).await;
    portico.service("api", &[upstream.addr.to_string()]).await;
    let limit = json!({"rate_limit": {"by": "route", "cluster": true, "limits": [{"requests": 3, "per": "minute"}]}});
    portico.create("routes", json!({"name": "api", "service": "api", "policies": limit})).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(portico.get("/").send().await.expect("request").status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let status: Value = portico.admin(Method::GET, "/status").send().await.expect("admin").json().await.expect("json");
    assert_eq!(status["redis"]["connected"], false, "{status}");
    assert!(status["redis"]["fallbacks"].as_u64().is_some_and(|n| n >= 5), "{status}");
    assert!(status["redis"]["last_error"].is_string(), "{status}");
    portico.stop().await;
}
