//! Requests through the gateway: routing, headers, rewriting, balancing, protocols, streaming.

use crate::helpers::Portico;
use portico_testkit::MockUpstream;
use serde_json::{json, Value};

async fn echo(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json echo")
}

#[tokio::test]
async fn forwards_with_forwarded_headers_and_a_request_id() {
    let upstream = MockUpstream::start("users").await;
    let portico = Portico::start().await;
    portico.service("users", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "users", "paths": ["/users/*"], "service": "users"})).await;

    let response = portico
        .get("/users/7?full=1")
        .header("host", "api.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-private")
        .header("x-private", "hop-by-hop")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().expect("id").to_owned();
    assert_eq!(request_id.len(), 32);
    let echo: Value = response.json().await.expect("json");
    assert_eq!(echo["path"], "/users/7");
    assert_eq!(echo["query"], "full=1");
    let headers = &echo["headers"];
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "api.example.com");
    assert_eq!(headers["host"], upstream.addr.to_string(), "the upstream sees its own host by default");
    assert_eq!(headers["x-request-id"], request_id.as_str(), "the upstream sees the same request id");
    assert!(headers.get("x-private").is_none(), "headers named by Connection are not forwarded");

    // A client's request id is kept.
    let response = portico.get("/users/7").header("x-request-id", "trace-abc").send().await.expect("request");
    assert_eq!(response.headers()["x-request-id"], "trace-abc");
    portico.stop().await;
}

#[tokio::test]
async fn host_header_can_be_passed_through() {
    let upstream = MockUpstream::start("web").await;
    let portico = Portico::start().await;
    let service = json!({"name": "web", "targets": [{"address": upstream.addr.to_string()}], "host_header": "pass"});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "web", "hosts": ["*.example.com"], "service": "web"})).await;
    let echo = echo(portico.get("/").header("host", "shop.example.com:8080")).await;
    assert_eq!(echo["headers"]["host"], "shop.example.com:8080");
    let other = portico.get("/").header("host", "example.org").send().await.expect("request");
    assert_eq!(other.status(), 404, "the wildcard does not match other hosts");
    portico.stop().await;
}

#[tokio::test]
async fn paths_are_stripped_and_rewritten_keeping_the_query() {
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    portico.service("api", &[upstream.addr.to_string()]).await;
    portico
        .create("routes", json!({"name": "strip", "paths": ["/api/*"], "strip_prefix": true, "service": "api"}))
        .await;
    portico
        .create(
            "routes",
            json!({"name": "people", "paths": ["/people/{id}/*"], "rewrite": "/v2/users/{id}", "service": "api"}),
        )
        .await;
    assert_eq!(echo(portico.get("/api/orders/1?x=y")).await["path"], "/orders/1");
    assert_eq!(echo(portico.get("/api/orders/1?x=y")).await["query"], "x=y");
    assert_eq!(echo(portico.get("/people/42/posts")).await["path"], "/v2/users/42/posts");
    portico.stop().await;
}

#[tokio::test]
async fn precedence_decides_between_overlapping_routes() {
    let portico = Portico::start().await;
    let mock = |body: &str| json!({"status": 200, "body": body});
    portico.create("routes", json!({"name": "catch-all", "paths": ["/*"], "mock": mock("catch-all")})).await;
    portico.create("routes", json!({"name": "users", "paths": ["/users/{id}"], "mock": mock("users")})).await;
    portico.create("routes", json!({"name": "me", "paths": ["/users/me"], "mock": mock("me")})).await;
    portico
        .create(
            "routes",
            json!({"name": "write", "paths": ["/users/{id}"], "methods": ["POST"], "mock": mock("write")}),
        )
        .await;
    let text = |r: reqwest::RequestBuilder| async move { r.send().await.expect("request").text().await.expect("text") };
    assert_eq!(text(portico.get("/users/me")).await, "me");
    assert_eq!(text(portico.get("/users/7")).await, "users");
    assert_eq!(text(portico.http.post(format!("{}/users/7", portico.proxy))).await, "write");
    assert_eq!(text(portico.get("/elsewhere")).await, "catch-all");
    portico.stop().await;
}

#[tokio::test]
async fn weighted_round_robin_spreads_requests_by_weight() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let portico = Portico::start_with(|s| s.workers = 1).await;
    let targets = json!([{"address": a.addr.to_string(), "weight": 3}, {"address": b.addr.to_string(), "weight": 1}]);
    portico.create("services", json!({"name": "ab", "targets": targets})).await;
    portico.create("routes", json!({"name": "ab", "service": "ab"})).await;
    for _ in 0..40 {
        assert_eq!(portico.get("/").send().await.expect("request").status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (30, 10));
    portico.stop().await;
}

#[tokio::test]
async fn mock_responses_need_no_upstream() {
    let portico = Portico::start().await;
    let mock = json!({"status": 201, "headers": {"content-type": "application/json", "x-mock": "yes"}, "body": "{\"ok\":true}"});
    portico.create("routes", json!({"name": "hello", "paths": ["/hello"], "mock": mock})).await;
    let response = portico.get("/hello").send().await.expect("request");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-mock"], "yes");
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.expect("text"), "{\"ok\":true}");
    portico.stop().await;
}

#[tokio::test]
async fn http2_clients_are_served_over_cleartext() {
    let upstream = MockUpstream::start("h1").await;
    let portico = Portico::start().await;
    portico.service("h1", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "all", "service": "h1"})).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    let response = h2.get(format!("{}/over/h2", portico.proxy)).send().await.expect("h2 request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.expect("json");
    assert_eq!(echo["path"], "/over/h2");
    assert_eq!(echo["headers"]["x-forwarded-host"], portico.proxy.trim_start_matches("http://"));
    portico.stop().await;
}

/// Resident memory of this test process, from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok());
    kb.unwrap_or(0) * 1024
}

#[tokio::test]
async fn gigabyte_bodies_stream_both_ways_in_bounded_memory() {
    use futures_util::StreamExt;
    const GIB: u64 = 1 << 30;
    let upstream = MockUpstream::start("big").await;
    let portico = Portico::start().await;
    portico.service("big", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "big", "service": "big"})).await;
    let before = rss_bytes();

    // Upload: 1 GiB made on the fly, 1 MiB at a time; the upstream counts what arrives.
    let chunk = bytes::Bytes::from(vec![b'u'; 1 << 20]);
    let chunks = futures_util::stream::iter((0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let response = portico
        .http
        .post(format!("{}/count", portico.proxy))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.expect("json")["bytes"], GIB);

    // Download: 1 GiB from the upstream, counted as it arrives.
    let response = portico.get(&format!("/bytes/{GIB}")).send().await.expect("download");
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = 0u64;
    let mut peak = 0u64;
    while let Some(chunk) = stream.next().await {
        received += chunk.expect("chunk").len() as u64;
        if received % (64 << 20) < 65536 {
            peak = peak.max(rss_bytes());
        }
    }
    assert_eq!(received, GIB);
    let growth = peak.max(rss_bytes()).saturating_sub(before);
    // Client, gateway and upstream all live in this process; buffering either body whole
    // would add a gigabyte.
    assert!(growth < 128 << 20, "memory grew by {} MiB", growth >> 20);
    portico.stop().await;
}

#[tokio::test]
async fn portico_s_own_response_headers_replace_those_of_the_same_names() {
    let portico = Portico::start().await;
    // The mock stands in for an upstream that sets the headers Portico sets itself.
    let own =
        json!({"x-request-id": "from-upstream", "server-timing": "app;dur=1", "ratelimit-limit": "7", "x-kept": "yes"});
    let limit = json!({"by": "route", "limits": [{"requests": 100, "per": "minute"}]});
    let route = json!({"name": "own", "paths": ["/own"], "mock": {"body": "x", "headers": own}, "policies": {"rate_limit": limit}});
    portico.create("routes", route).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    for (client, version) in [(reqwest::Client::new(), reqwest::Version::HTTP_11), (h2, reqwest::Version::HTTP_2)] {
        let response =
            client.get(format!("{}/own", portico.proxy)).header("x-request-id", "req-7").send().await.expect("request");
        assert_eq!((response.status().as_u16(), response.version()), (200, version));
        let all = |name: &str| -> Vec<String> {
            response.headers().get_all(name).iter().map(|v| v.to_str().unwrap_or("").to_owned()).collect()
        };
        assert_eq!(all("x-request-id"), ["req-7"], "{version:?}");
        assert_eq!(all("ratelimit-limit"), ["100"], "{version:?}");
        let timing = all("server-timing");
        assert!(timing.len() == 1 && timing[0].starts_with("gateway;dur="), "{version:?}: {timing:?}");
        assert_eq!(all("ratelimit-remaining").len(), 1, "{version:?}");
        assert_eq!(all("x-kept"), ["yes"], "{version:?}");
    }
    portico.stop().await;
}
