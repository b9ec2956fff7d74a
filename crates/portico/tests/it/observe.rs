//! Observability: the access log, trace context, `Server-Timing`, and `/metrics`, checked
//! with Prometheus's own `promtool` and scraped by a real Prometheus server.

use crate::helpers::Portico;
use portico_gateway::{AccessLogSettings, AccessLogSink};
use portico_testkit::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const KEY: &str = "shop-key-0123456789";

/// The access log's lines once there are `count` of them (or what there is after a few
/// seconds).
pub(crate) async fn log_lines(path: &Path, count: usize) -> Vec<Value> {
    let mut lines = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        lines = text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        if lines.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lines
}

#[tokio::test]
async fn every_request_is_logged_with_its_route_target_consumer_and_timings() {
    let logs = tempfile::tempdir().expect("dir");
    let path = logs.path().join("access.log");
    let sink = AccessLogSink::File { path: path.clone(), max_bytes: 1 << 20, keep: 1 };
    let portico =
        Portico::start_with(|s| s.telemetry.access_log = Some(AccessLogSettings { sinks: vec![sink], queue: 1024 }))
            .await;
    let upstream = MockUpstream::start("users").await;
    portico.service("users", &[upstream.addr.to_string()]).await;
    portico.create("consumers", json!({"name": "shop", "credentials": [{"type": "key_auth", "key": KEY}]})).await;
    let route = json!({"name": "users", "paths": ["/users/{id}"], "service": "users", "policies": {"key_auth": {}}});
    portico.create("routes", route).await;

    // A client that started a trace: Portico continues it, as the upstream's parent.
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = portico
        .get("/users/42")
        .header("x-api-key", KEY)
        .header("traceparent", parent)
        .header("x-request-id", "req-42")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let timing = response.headers()["server-timing"].to_str().expect("text").to_owned();
    let parts: Vec<&str> = timing.split(", ").collect();
    assert!(
        parts.len() == 2 && parts[0].starts_with("gateway;dur=") && parts[1].starts_with("upstream;dur="),
        "{timing}"
    );
    let body = response.bytes().await.expect("body");
    let echo: Value = serde_json::from_slice(&body).expect("echo");
    let sent = echo["headers"]["traceparent"].as_str().expect("traceparent upstream");
    assert!(sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && sent.ends_with("-01"), "{sent}");
    assert!(!sent.contains("b7ad6b7169203331"), "Portico's own span is the parent: {sent}");

    // A client without one: Portico starts a trace.
    let response = portico.get("/users/7").header("x-api-key", KEY).send().await.expect("request");
    let echo: Value = response.json().await.expect("echo");
    let started = echo["headers"]["traceparent"].as_str().expect("traceparent upstream").to_owned();
    assert!(started.len() == 55 && started.starts_with("00-") && !started.contains(&"0".repeat(32)), "{started}");

    // Refused, and matching no route.
    assert_eq!(portico.get("/users/1").send().await.expect("request").status(), 401);
    assert_eq!(portico.get("/nowhere").send().await.expect("request").status(), 404);

    let lines = log_lines(&path, 4).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    let line = |status: u64| lines.iter().find(|l| l["status"] == status).cloned().expect("a line");
    let ok = lines.iter().find(|l| l["request_id"] == "req-42").expect("the traced request");
    for (field, wanted) in [
        ("route", json!("users")),
        ("service", json!("users")),
        ("target", json!(upstream.addr.to_string())),
        ("consumer", json!("shop")),
        ("method", json!("GET")),
        ("path", json!("/users/42")),
        ("path_template", json!("/users/{id}")),
        ("status", json!(200)),
        ("bytes_out", json!(body.len())),
        ("trace_id", json!("0af7651916cd43dd8448eb211c80319c")),
        ("client_ip", json!("127.0.0.1")),
        ("retries", json!(0)),
        ("error", Value::Null),
    ] {
        assert_eq!(ok[field], wanted, "{field}: {ok}");
    }
    let (total, upstream_ms) = (ok["duration_ms"].as_f64().unwrap_or(-1.0), ok["upstream_ms"].as_f64().unwrap_or(-1.0));
    assert!(upstream_ms > 0.0 && total >= upstream_ms && ok["gateway_ms"].as_f64() >= Some(0.0), "{ok}");
    assert!(ok["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{ok}");
    let started_trace = &started[3..35];
    assert!(lines.iter().any(|l| l["trace_id"] == started_trace), "the started trace is logged");

    let refused = line(401);
    assert_eq!((refused["error"].as_str(), refused["route"].as_str()), (Some("unauthorized"), Some("users")));
    assert!(refused["consumer"].is_null() && refused["target"].is_null() && refused["upstream_ms"].is_null());
    let unrouted = line(404);
    assert_eq!((unrouted["error"].as_str(), unrouted["path"].as_str()), (Some("no_route"), Some("/nowhere")));
    assert!(unrouted["route"].is_null() && unrouted["path_template"].is_null());

    let status: Value = portico.admin(Method::GET, "/status").send().await.expect("a").json().await.expect("j");
    let log = &status["access_log"];
    assert_eq!((log["sinks"][0]["written"].as_u64(), log["dropped"].as_u64()), (Some(4), Some(0)), "{status}");
    assert_eq!(log["sinks"][0]["sink"], path.display().to_string());
    portico.stop().await;
}

#[tokio::test]
async fn server_timing_can_be_switched_off() {
    let portico = Portico::start_with(|s| s.telemetry.server_timing = false).await;
    portico.create("routes", json!({"name": "hello", "paths": ["/hello"], "mock": {"body": "hi"}})).await;
    let response = portico.get("/hello").send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("server-timing").is_none());
    portico.stop().await;
}

/// `/metrics` once the request counter of route `api` reaches `requests`.
async fn metrics_after(portico: &Portico, requests: u64) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        // `/metrics` is at the root of the admin listener, where Prometheus looks.
        let response = portico.http.get(format!("{}/metrics", portico.admin)).bearer_auth(&portico.token).send();
        let response = response.await.expect("metrics");
        assert_eq!(response.status(), 200);
        text = response.text().await.expect("text");
        let counted: u64 = text
            .lines()
            .filter(|l| l.starts_with("portico_http_requests_total{route=\"api\""))
            .filter_map(|l| l.rsplit(" ").next()?.parse::<u64>().ok())
            .sum();
        if counted >= requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    text
}

async fn traffic(portico: &Portico, upstream: &MockUpstream) {
    portico.service("api", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "api", "paths": ["/api/*"], "strip_prefix": true, "service": "api"})).await;
    portico.create("routes", json!({"name": "hello", "paths": ["/hello"], "mock": {"body": "hi"}})).await;
    for path in ["/api/a", "/api/b", "/api/status/503", "/hello"] {
        portico.get(path).send().await.expect("request").bytes().await.expect("body");
    }
}

#[tokio::test]
async fn metrics_count_by_route_and_service_and_pass_promtool() {
    let portico = Portico::start().await;
    let upstream = MockUpstream::start("api").await;
    traffic(&portico, &upstream).await;

    let anonymous = portico.http.get(format!("{}/metrics", portico.admin)).send().await.expect("metrics");
    assert_eq!(anonymous.status(), 401, "metrics need a token, like the rest of the admin API");
    let text = metrics_after(&portico, 3).await;
    let target = upstream.addr.to_string();
    for wanted in [
        "portico_http_requests_total{route=\"api\",service=\"api\",code=\"2xx\"} 2".to_owned(),
        "portico_http_requests_total{route=\"api\",service=\"api\",code=\"5xx\"} 1".into(),
        "portico_http_requests_total{route=\"hello\",service=\"\",code=\"2xx\"} 1".into(),
        "portico_http_request_duration_seconds_count{route=\"api\",service=\"api\"} 3".into(),
        "portico_upstream_responses_total{service=\"api\",code=\"5xx\"} 1".into(),
        "portico_upstream_duration_seconds_count{service=\"api\"} 3".into(),
        format!("portico_upstream_target_available{{service=\"api\",target=\"{target}\"}} 1"),
        "portico_config_reloads_total".into(),
        "portico_connections_active".into(),
    ] {
        assert!(text.contains(&wanted), "missing `{wanted}` in:\n{text}");
    }
    // Bytes: the mock's 2-byte body.
    assert!(text.contains("portico_http_response_body_bytes_total{route=\"hello\",service=\"\"} 2"), "{text}");
    // Label values come from the configuration, never from the request: no raw path.
    assert!(!text.contains("/api/a") && !text.contains("status/503"), "{text}");

    let Some(promtool) = find_tool("promtool") else {
        eprintln!("skipped: promtool check metrics (install Debian's `prometheus` package; .ci/run does)");
        return portico.stop().await;
    };
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    check.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let output = check.wait_with_output().expect("promtool runs");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    portico.stop().await;
}

fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

/// A Prometheus server scraping Portico's admin listener every second; killed when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(binary: &Path, portico: &Portico) -> Prometheus {
        let dir = tempfile::tempdir().expect("dir");
        let target = portico.admin.trim_start_matches("http://");
        let config = format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: portico\n    \
             authorization: {{credentials: {}}}\n    static_configs: [{{targets: ['{target}']}}]\n",
            portico.token
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// The value of an instant query, once it has one (or `None` after 30 s).
    async fn value(&self, query: &str) -> Option<f64> {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            let response = client.get(format!("{}/api/v1/query", self.url)).query(&[("query", query)]).send().await;
            if let Ok(body) = response {
                let body: Value = body.json().await.unwrap_or(Value::Null);
                if let Some(value) = body["data"]["result"][0]["value"][1].as_str() {
                    return value.parse().ok();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

#[tokio::test]
async fn a_prometheus_server_scrapes_portico() {
    let Some(binary) = find_tool("prometheus") else {
        eprintln!("skipped: scraping by a Prometheus server (install Debian's `prometheus` package; .ci/run does)");
        return;
    };
    let portico = Portico::start().await;
    let upstream = MockUpstream::start("api").await;
    traffic(&portico, &upstream).await;
    metrics_after(&portico, 3).await;

    let prometheus = Prometheus::start(&binary, &portico);
    assert_eq!(prometheus.value("up{job=\"portico\"}").await, Some(1.0), "Prometheus scrapes Portico");
    let errors = "sum(portico_http_requests_total{route=\"api\",code=\"5xx\"})";
    assert_eq!(prometheus.value(errors).await, Some(1.0));
    let all = "sum by (route) (portico_http_requests_total{route=\"api\"})";
    assert_eq!(prometheus.value(all).await, Some(3.0));
    portico.stop().await;
}

/// An OTLP/HTTP collector: keeps the body of every POST to `/v1/traces`.
async fn otlp_collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<bytes::Bytes>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let bodies: std::sync::Arc<std::sync::Mutex<Vec<bytes::Bytes>>> = std::sync::Arc::default();
    let kept = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let kept = kept.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let protobuf =
                            request.headers().get("content-type").is_some_and(|t| t == "application/x-protobuf");
                        let path_ok = request.uri().path() == "/v1/traces";
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        if protobuf && path_ok {
                            kept.lock().unwrap_or_else(|p| p.into_inner()).push(body);
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (endpoint, bodies)
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<Value> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    let value = span.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        Any::StringValue(text) => json!(text),
        Any::IntValue(n) => json!(n),
        _ => Value::Null,
    })
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).filter_map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[tokio::test]
async fn sampled_requests_are_exported_as_otlp_spans_with_their_parents() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let (endpoint, bodies) = otlp_collector().await;
    let portico = Portico::start_with(|s| {
        s.telemetry.otlp_endpoint = Some(endpoint.parse().expect("URL"));
        s.telemetry.trace_sample_ratio = 0.0;
    })
    .await;
    let upstream = MockUpstream::start("users").await;
    portico.service("users", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "users", "paths": ["/users/{id}"], "service": "users"})).await;

    // Sampled by the client; then one the client did not sample, and a new trace at ratio 0.
    let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = portico.get("/users/42").header("traceparent", sampled).send().await.expect("request");
    let echo: Value = response.json().await.expect("echo");
    let upstream_parent = echo["headers"]["traceparent"].as_str().expect("traceparent")[36..52].to_owned();
    let unsampled = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    portico.get("/users/7").header("traceparent", unsampled).send().await.expect("request");
    portico.get("/users/8").send().await.expect("request");

    let decode = || -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        let bodies = bodies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        bodies
            .iter()
            .map(|b| ExportTraceServiceRequest::decode(b.as_ref()).expect("an OTLP export request"))
            .flat_map(|r| r.resource_spans)
            .inspect(|r| {
                let name = r.resource.as_ref().and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"));
                assert!(name.is_some(), "the resource names the service");
            })
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    };
    for _ in 0..100 {
        if decode().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever else would come has come after one more export interval.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let spans = decode();
    assert_eq!(spans.len(), 2, "one server and one client span of the sampled request only: {spans:?}");
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    let client = spans.iter().find(|s| s.kind == 3).expect("a client span");

    assert_eq!(server.trace_id, unhex("0af7651916cd43dd8448eb211c80319c"));
    assert_eq!(server.parent_span_id, unhex("b7ad6b7169203331"), "the client's span is the parent");
    assert_eq!(server.name, "GET /users/{id}");
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.parent_span_id, server.span_id, "the upstream call is a child of Portico's span");
    assert_eq!(client.span_id, unhex(&upstream_parent), "the upstream's parent is the client span");
    for (key, wanted) in [
        ("http.request.method", json!("GET")),
        ("http.route", json!("/users/{id}")),
        ("url.path", json!("/users/42")),
        ("url.scheme", json!("http")),
        ("http.response.status_code", json!(200)),
        ("client.address", json!("127.0.0.1")),
    ] {
        assert_eq!(attribute(server, key), Some(wanted), "server span {key}");
    }
    for (key, wanted) in [
        ("server.address", json!("127.0.0.1")),
        ("server.port", json!(upstream.addr.port())),
        ("http.response.status_code", json!(200)),
        ("http.request.resend_count", json!(0)),
    ] {
        assert_eq!(attribute(client, key), Some(wanted), "client span {key}");
    }
    assert!(server.start_time_unix_nano <= client.start_time_unix_nano, "{server:?} {client:?}");
    assert!(
        client.end_time_unix_nano <= server.end_time_unix_nano
            && client.start_time_unix_nano < client.end_time_unix_nano
    );

    let status: Value = portico.admin(Method::GET, "/status").send().await.expect("a").json().await.expect("j");
    assert_eq!(status["traces"]["exported"], 2, "{status}");
    portico.stop().await;
}

/// Sends three requests through a Portico whose access log goes to its store (and a file),
/// stops it, and reads the rows back.
async fn logged_to_the_store(store: Option<String>) -> Vec<portico_store::AccessRecord> {
    let files = tempfile::tempdir().expect("dir");
    let file = files.path().join("access.log");
    let sinks = vec![AccessLogSink::Store, AccessLogSink::File { path: file.clone(), max_bytes: 1 << 20, keep: 1 }];
    let mut portico = Portico::start_with(|s| {
        if let Some(url) = store {
            s.store = url;
        }
        s.telemetry.access_log = Some(AccessLogSettings { sinks, queue: 1024 });
    })
    .await;
    let upstream = MockUpstream::start("users").await;
    portico.service("users", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "users", "paths": ["/users/{id}"], "service": "users"})).await;
    for path in ["/users/1", "/users/2", "/nowhere"] {
        portico.get(path).header("x-request-id", format!("req{path}")).send().await.expect("request");
    }
    let url = portico.store_url.clone();
    // The SQLite file lives in the instance's directory: keep it past the stop.
    let kept = std::mem::replace(&mut portico.dir, tempfile::tempdir().expect("dir"));
    // Stopping writes what is queued before the store closes.
    portico.stop().await;
    let lines = std::fs::read_to_string(&file).expect("the file sink");
    assert_eq!(lines.lines().count(), 3, "both sinks get every event: {lines}");
    let store = portico_store::Store::open(&url).await.expect("store");
    let records = store.access_records(0, 100).await.expect("records");
    store.close().await;
    drop(kept);
    records
}

fn check_stored(mut records: Vec<portico_store::AccessRecord>) {
    records.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let ids: Vec<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["req/nowhere", "req/users/1", "req/users/2"], "{records:?}");
    let found = &records[1];
    assert_eq!(
        (found.status, found.route.as_deref(), found.path_template.as_deref()),
        (200, Some("users"), Some("/users/{id}"))
    );
    assert_eq!(
        (found.method.as_str(), found.path.as_str(), found.client_ip.as_str()),
        ("GET", "/users/1", "127.0.0.1")
    );
    assert!(
        found.target.is_some() && found.upstream_us.is_some_and(|u| u > 0) && found.duration_us >= found.gateway_us
    );
    assert!(found.at > 1_700_000_000_000 && found.trace_id.len() == 32, "{found:?}");
    let missed = &records[0];
    assert_eq!((missed.status, missed.error.as_deref(), missed.route.as_deref()), (404, Some("no_route"), None));
}

#[tokio::test]
async fn the_access_log_can_go_to_the_store_sqlite() {
    check_stored(logged_to_the_store(None).await);
}

#[tokio::test]
async fn the_access_log_can_go_to_the_store_postgres() {
    let Some(url) = portico_testkit::fresh_postgres().await else { return };
    check_stored(logged_to_the_store(Some(url)).await);
}

#[tokio::test]
async fn stored_access_log_rows_are_removed_past_their_retention() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("portico.db").display());
    let store = portico_store::Store::open(&url).await.expect("store");
    let now = portico_store::now_ms();
    let row = |id: &str, age_ms: i64| portico_store::AccessRecord {
        at: now - age_ms,
        request_id: id.into(),
        path: "/".into(),
        method: "GET".into(),
        status: 200,
        ..Default::default()
    };
    let day = 86_400_000;
    store.insert_access_records(&[row("old", 3 * day), row("recent", day / 24)]).await.expect("insert");

    let mut settings = crate::helpers::settings(url);
    settings.telemetry.access_log = Some(AccessLogSettings { sinks: vec![AccessLogSink::Store], queue: 64 });
    settings.access_log_retention = Duration::from_secs(2 * 86_400);
    let portico = Portico::launch(settings, None, dir).await;
    let mut kept = Vec::new();
    for _ in 0..100 {
        kept = store.access_records(0, 10).await.expect("records").into_iter().map(|r| r.request_id).collect();
        if kept.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kept, ["recent"], "rows older than two days are gone, newer ones stay");
    store.close().await;
    portico.stop().await;
}
