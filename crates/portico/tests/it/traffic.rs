//! Traffic splitting, mirroring and fault injection.

use crate::helpers::Portico;
use portico_testkit::{Failing, MockUpstream};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn count(portico: &Portico, n: usize, request: impl Fn() -> reqwest::RequestBuilder) -> (usize, usize) {
    let mut v2 = 0;
    for _ in 0..n {
        let (status, upstream) = portico.answered_by(request()).await;
        assert_eq!(status, 200);
        v2 += usize::from(upstream == "v2");
    }
    (n - v2, v2)
}

#[tokio::test]
async fn a_route_splits_by_weight_and_sends_marked_requests_to_the_canary() {
    let (v1, v2) = (MockUpstream::start("v1").await, MockUpstream::start("v2").await);
    let portico = Portico::start().await;
    portico.service("v1", &[v1.addr.to_string()]).await;
    portico.service("v2", &[v2.addr.to_string()]).await;
    let split = json!([
        {"service": "v2", "weight": 20, "when": {"header": "x-canary", "value": "1"}},
    ]);
    portico.create("routes", json!({"name": "api", "service": "v1", "split": split})).await;
    let (_, to_v2) = count(&portico, 400, || portico.get("/")).await;
    assert!((48..=112).contains(&to_v2), "20 % of 400 expected, got {to_v2}");
    let (_, marked) = count(&portico, 20, || portico.get("/").header("x-canary", "1")).await;
    assert_eq!(marked, 20, "marked requests always reach the canary");

    // A cookie works too; and weight 100 switches everything over (blue/green).
    let put = portico.admin(Method::PUT, "/routes/api").header("if-match", "\"1\"");
    let split = json!([{"service": "v2", "weight": 0, "when": {"cookie": "canary"}}]);
    let route = json!({"name": "api", "service": "v1", "split": split});
    assert_eq!(put.json(&route).send().await.expect("put").status(), 200);
    portico.settle().await;
    assert_eq!(count(&portico, 20, || portico.get("/")).await, (20, 0));
    assert_eq!(count(&portico, 20, || portico.get("/").header("cookie", "a=b; canary=on")).await, (0, 20));
    let put = portico.admin(Method::PUT, "/routes/api").header("if-match", "\"2\"");
    let route = json!({"name": "api", "service": "v1", "split": [{"service": "v2", "weight": 100}]});
    assert_eq!(put.json(&route).send().await.expect("put").status(), 200);
    portico.settle().await;
    assert_eq!(count(&portico, 20, || portico.get("/")).await, (0, 20));

    // Bad splits are refused with the field that is wrong.
    for (split, field) in [
        (json!([{"service": "v2", "weight": 101}]), "split[0].weight"),
        (json!([{"service": "nope", "weight": 10}]), "split[0].service"),
        (json!([{"service": "v2", "when": {"header": "bad header"}}]), "split[0].when.header"),
    ] {
        let bad = json!({"name": "bad", "paths": ["/bad"], "service": "v1", "split": split});
        let response = portico.admin(Method::POST, "/routes").json(&bad).send().await.expect("post");
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.expect("problem");
        let fields: Vec<&str> =
            problem["errors"].as_array().into_iter().flatten().filter_map(|e| e["path"].as_str()).collect();
        assert!(fields.contains(&field), "{field}: {problem}");
    }
    portico.stop().await;
}

#[tokio::test]
async fn mirrored_requests_reach_the_shadow_whose_failures_never_reach_the_client() {
    let (primary, shadow) = (MockUpstream::start("primary").await, MockUpstream::start("shadow").await);
    let portico = Portico::start().await;
    portico.service("primary", &[primary.addr.to_string()]).await;
    portico.service("shadow", &[shadow.addr.to_string()]).await;
    let route = json!({"name": "api", "service": "primary", "mirror": {"service": "shadow"}});
    portico.create("routes", route).await;
    for _ in 0..10 {
        let response = portico.http_request(Method::POST, "/orders").body(vec![b'o'; 1000]).send().await.expect("post");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-upstream"], "primary");
    }
    for _ in 0..100 {
        if shadow.hits() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(shadow.hits(), 10);
    assert_eq!(shadow.body_bytes(), 10_000, "the shadow gets the bodies too");

    // A failing or slow shadow changes nothing for clients.
    shadow.set_failing(Failing::Reset);
    for _ in 0..5 {
        assert_eq!(portico.answered_by(portico.get("/")).await, (200, "primary".to_owned()));
    }
    shadow.set_failing(Failing::No);
    shadow.set_delay(Duration::from_secs(5));
    let started = Instant::now();
    assert_eq!(portico.answered_by(portico.get("/")).await, (200, "primary".to_owned()));
    assert!(started.elapsed() < Duration::from_secs(1));
    portico.stop().await;
}

#[tokio::test]
async fn faults_delay_or_abort_requests_as_configured() {
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    portico.service("api", &[upstream.addr.to_string()]).await;
    let abort = json!({"abort": {"status": 418}});
    portico.create("routes", json!({"name": "abort", "paths": ["/abort"], "service": "api", "fault": abort})).await;
    let delay = json!({"delay": {"ms": 200}, "when": {"header": "x-chaos"}});
    portico.create("routes", json!({"name": "delay", "paths": ["/delay"], "service": "api", "fault": delay})).await;
    let half = json!({"abort": {"status": 503, "percent": 50}});
    portico.create("routes", json!({"name": "half", "paths": ["/half"], "service": "api", "fault": half})).await;

    let response = portico.get("/abort").send().await.expect("request");
    assert_eq!(response.status(), 418);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "fault_injected");
    assert_eq!(upstream.hits(), 0, "an aborted request never reaches the upstream");

    let started = Instant::now();
    assert_eq!(portico.get("/delay").send().await.expect("request").status(), 200);
    assert!(started.elapsed() < Duration::from_millis(150), "no header, no delay");
    let started = Instant::now();
    assert_eq!(portico.get("/delay").header("x-chaos", "yes").send().await.expect("request").status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));

    let mut aborted = 0;
    for _ in 0..200 {
        aborted += usize::from(portico.get("/half").send().await.expect("request").status() == 503);
    }
    assert!((60..=140).contains(&aborted), "about half of 200 expected, got {aborted}");
    portico.stop().await;
}
