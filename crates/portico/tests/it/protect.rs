//! Circuit breakers and bulkheads, as clients and upstreams see them.

use crate::helpers::Portico;
use portico_testkit::{Failing, MockUpstream};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn error_of(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_open_circuit_answers_at_once_and_good_probes_close_it() {
    let upstream = MockUpstream::start("api").await;
    upstream.set_failing(Failing::Status(503));
    let portico = Portico::start().await;
    let breaker = json!({"minimum_requests": 4, "failure_rate_percent": 50, "open_ms": 300, "probes": 2});
    let service =
        json!({"name": "api", "targets": [{"address": upstream.addr.to_string()}], "circuit_breaker": breaker});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;

    for _ in 0..4 {
        assert_eq!(portico.answered_by(portico.get("/")).await, (503, "api".to_owned()));
    }
    // Four failures in four requests: the circuit opens and the upstream is left alone.
    let (status, retry_after, body) = error_of(portico.get("/").send().await.expect("request")).await;
    assert_eq!((status, retry_after.as_deref(), body["error"].as_str()), (503, Some("1"), Some("circuit_open")));
    assert_eq!(upstream.hits(), 4);
    assert_eq!(portico.health("api").await["circuit"], "open");

    // The upstream recovers; after the cool-down two probes succeed and the circuit closes.
    upstream.set_failing(Failing::No);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..5 {
        assert_eq!(portico.answered_by(portico.get("/")).await, (200, "api".to_owned()));
    }
    assert_eq!(portico.health("api").await["circuit"], "closed");
    portico.stop().await;
}

#[tokio::test]
async fn an_open_circuit_falls_back_to_another_service_or_a_fixed_answer() {
    let (main, backup) = (MockUpstream::start("main").await, MockUpstream::start("backup").await);
    main.set_failing(Failing::Reset);
    let portico = Portico::start().await;
    portico.service("backup", &[backup.addr.to_string()]).await;
    let to_service = json!({"minimum_requests": 2, "open_ms": 60000, "fallback": {"service": "backup"}});
    let to_mock = json!({"minimum_requests": 2, "open_ms": 60000,
                         "fallback": {"mock": {"status": 200, "headers": {"x-fallback": "yes"}, "body": "cached"}}});
    for (name, breaker) in [("main", to_service), ("mocked", to_mock)] {
        let service =
            json!({"name": name, "targets": [{"address": main.addr.to_string()}], "circuit_breaker": breaker});
        portico.create("services", service).await;
        portico.create("routes", json!({"name": name, "paths": [format!("/{name}")], "service": name})).await;
    }
    for path in ["/main", "/mocked"] {
        for _ in 0..2 {
            assert_eq!(portico.answered_by(portico.get(path)).await.0, 502);
        }
    }
    assert_eq!(portico.answered_by(portico.get("/main")).await, (200, "backup".to_owned()));
    let response = portico.get("/mocked").send().await.expect("request");
    assert_eq!(response.headers()["x-fallback"], "yes");
    assert_eq!(response.text().await.expect("body"), "cached");

    // A service that is someone's fallback cannot be deleted.
    let delete = portico.admin(Method::DELETE, "/services/backup").send().await.expect("delete");
    assert_eq!(delete.status(), 409);
    let problem: Value = delete.json().await.expect("problem");
    assert!(problem["detail"].as_str().unwrap_or("").contains("service main"), "{problem}");
    portico.stop().await;
}

/// A slow upstream (`delay_ms` per answer) behind a route to a service with this bulkhead.
async fn behind_a_bulkhead(delay_ms: u64, bulkhead: Value) -> (MockUpstream, Portico) {
    let upstream = MockUpstream::start("slow").await;
    upstream.set_delay(Duration::from_millis(delay_ms));
    let portico = Portico::start().await;
    let service = json!({"name": "slow", "targets": [{"address": upstream.addr.to_string()}], "bulkhead": bulkhead});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "slow", "service": "slow"})).await;
    (upstream, portico)
}

#[tokio::test]
async fn a_bulkhead_limits_requests_in_flight_queues_a_few_and_turns_the_rest_away() {
    let (upstream, portico) =
        behind_a_bulkhead(300, json!({"max_concurrent": 2, "max_queue": 1, "queue_timeout_ms": 2000})).await;

    let requests = (0..5).map(|_| async {
        let started = Instant::now();
        let (status, retry_after, body) = error_of(portico.get("/").send().await.expect("request")).await;
        (status, retry_after, body["error"].as_str().map(str::to_owned), started.elapsed())
    });
    let results = futures_util::future::join_all(requests).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!((ok, refused.len()), (3, 2), "{results:?}");
    for (_, retry_after, error, elapsed) in refused {
        assert_eq!((retry_after.as_deref(), error.as_deref()), (Some("1"), Some("service_busy")));
        assert!(*elapsed < Duration::from_millis(250), "refused at once, not after waiting: {elapsed:?}");
    }
    assert_eq!(upstream.hits(), 3);
    portico.stop().await;
}

#[tokio::test]
async fn a_queued_request_gives_up_after_the_queue_timeout() {
    let (_upstream, portico) =
        behind_a_bulkhead(500, json!({"max_concurrent": 1, "max_queue": 5, "queue_timeout_ms": 100})).await;
    let first = portico.get("/").send();
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let response = portico.get("/").send().await.expect("request");
        (response.status().as_u16(), started.elapsed())
    };
    let (first, (status, waited)) = tokio::join!(first, second);
    assert_eq!(first.expect("request").status(), 200);
    assert_eq!(status, 503);
    assert!(waited >= Duration::from_millis(90) && waited < Duration::from_millis(400), "{waited:?}");
    assert_eq!(portico.health("slow").await["bulkhead_in_flight"], 0);
    portico.stop().await;
}
