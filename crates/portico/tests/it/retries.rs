//! Retries: what a client sees when targets fail, and what the targets see.

use crate::helpers::Portico;
use portico_testkit::{Failing, MockUpstream};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn service(portico: &Portico, targets: &[&MockUpstream], extra: Value) {
    let mut service = json!({"name": "api", "targets": targets.iter().map(|t| json!({"address": t.addr.to_string()})).collect::<Vec<_>>()});
    service.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
    portico.create("services", service).await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_target() {
    let (dead, alive) = (MockUpstream::start("dead").await, MockUpstream::start("alive").await);
    let portico = Portico::start().await;
    service(&portico, &[&dead, &alive], json!({"retries": {"attempts": 1, "budget_percent": 100}})).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;
    drop(dead);
    for _ in 0..20 {
        assert_eq!(portico.answered_by(portico.get("/")).await, (200, "alive".to_owned()));
    }
    assert_eq!(alive.hits(), 20, "each request reached the live target once");
    portico.stop().await;
}

#[tokio::test]
async fn every_retry_goes_to_a_target_not_tried_yet() {
    let (a, b, c) = (MockUpstream::start("a").await, MockUpstream::start("b").await, MockUpstream::start("c").await);
    a.set_failing(Failing::Status(503));
    b.set_failing(Failing::Reset);
    let portico = Portico::start().await;
    service(&portico, &[&a, &b, &c], json!({"retries": {"attempts": 2, "backoff_ms": 1, "budget_percent": 100}})).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;
    for _ in 0..30 {
        assert_eq!(portico.answered_by(portico.get("/")).await, (200, "c".to_owned()));
    }
    assert_eq!(c.hits(), 30);
    portico.stop().await;
}

#[tokio::test]
async fn bodies_are_replayed_and_unsafe_methods_need_the_routes_consent() {
    let (failing, working) = (MockUpstream::start("failing").await, MockUpstream::start("working").await);
    failing.set_failing(Failing::Status(502));
    let portico = Portico::start().await;
    service(
        &portico,
        &[&failing, &working],
        json!({"retries": {"attempts": 1, "replay_body_bytes": 1024, "budget_percent": 100}}),
    )
    .await;
    portico.create("routes", json!({"name": "plain", "paths": ["/plain"], "service": "api"})).await;
    let consenting =
        json!({"name": "consenting", "paths": ["/consenting"], "service": "api", "retry_non_idempotent": true});
    portico.create("routes", consenting).await;

    let send = |method: Method, path: &str, size: usize| portico.http_request(method, path).body(vec![b'x'; size]);
    for _ in 0..6 {
        // PUT is idempotent: retried, with its body sent again in full.
        let response = send(Method::PUT, "/plain", 600).send().await.expect("request");
        assert_eq!(response.status(), 200);
        let echo: Value = response.json().await.expect("echo");
        assert_eq!(echo["body_bytes"], 600);
        // POST only where the route consents.
        let response = send(Method::POST, "/consenting", 600).send().await.expect("request");
        assert_eq!(response.status(), 200);
    }
    // Without consent, a POST that meets the failing target gets its 502.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(send(Method::POST, "/plain", 600).send().await.expect("request").status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 502).count(), 3, "{statuses:?}");
    // A body larger than the replay limit is not kept, so it is not retried either.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(send(Method::PUT, "/plain", 4096).send().await.expect("request").status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 502).count(), 3, "{statuses:?}");
    portico.stop().await;
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    a.set_failing(Failing::Status(503));
    b.set_failing(Failing::Status(503));
    let portico = Portico::start().await;
    let retries = json!({"attempts": 2, "backoff_ms": 0, "max_backoff_ms": 0, "budget_percent": 20});
    service(&portico, &[&a, &b], json!({"retries": retries})).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;
    for _ in 0..100 {
        assert_eq!(portico.answered_by(portico.get("/")).await.0, 503);
    }
    // Unlimited, 100 requests would make 300 tries; the budget allows 20 % more plus a
    // reserve of 10.
    let tries = a.hits() + b.hits();
    assert!((125..=131).contains(&tries), "{tries} tries for 100 requests");
    portico.stop().await;
}

#[tokio::test]
async fn timeouts_per_try_and_in_total() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    a.set_delay(Duration::from_millis(400));
    let portico = Portico::start().await;
    let extra = json!({"read_timeout_ms": 100, "total_timeout_ms": 1000,
                       "retries": {"attempts": 3, "on": ["timeout"], "backoff_ms": 1}});
    service(&portico, &[&a, &b], extra).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;
    // A try that times out moves on to the fast target.
    for _ in 0..4 {
        assert_eq!(portico.answered_by(portico.get("/")).await, (200, "b".to_owned()));
    }
    // When every target is slow, the total timeout ends the request, not the tries.
    b.set_delay(Duration::from_millis(400));
    let put = portico.admin(Method::PUT, "/services/api").header("if-match", "\"1\"");
    let mut edited = json!({"name": "api", "targets": [{"address": a.addr.to_string()}, {"address": b.addr.to_string()}],
                            "read_timeout_ms": 150, "total_timeout_ms": 250,
                            "retries": {"attempts": 10, "on": ["timeout"], "backoff_ms": 1}});
    assert_eq!(put.json(&edited).send().await.expect("put").status(), 200);
    portico.settle().await;
    let started = Instant::now();
    let response = portico.get("/").send().await.expect("request");
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(elapsed >= Duration::from_millis(240) && elapsed < Duration::from_millis(400), "{elapsed:?}");
    edited["retries"] = Value::Null;
    portico.stop().await;
}

#[tokio::test]
async fn a_target_dying_and_coming_back_under_load_costs_clients_nothing() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let portico = Portico::start().await;
    let extra = json!({
        "read_timeout_ms": 2000,
        "retries": {"attempts": 2, "backoff_ms": 5},
        "health": {
            "active": {"path": "/health", "interval_ms": 50, "healthy_threshold": 2, "unhealthy_threshold": 1},
            "passive": {"failures": 2, "ejection_ms": 300, "max_ejection_ms": 1000}
        }
    });
    service(&portico, &[&a, &b], extra).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;

    let a_addr = a.addr;
    let started = Instant::now();
    let load = async {
        let lanes = (0..4).map(|_| async {
            let mut seen = Vec::new();
            while started.elapsed() < Duration::from_millis(2000) {
                let sent = started.elapsed();
                let (status, upstream) = portico.answered_by(portico.get("/delay/5")).await;
                seen.push((status, upstream, started.elapsed() - sent, sent));
            }
            seen
        });
        futures_util::future::join_all(lanes).await.into_iter().flatten().collect::<Vec<_>>()
    };
    let chaos = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(600)).await;
        MockUpstream::start_on("a", a_addr).await
    };
    let (seen, _a_again) = tokio::join!(load, chaos);

    let failed: Vec<_> = seen.iter().filter(|(status, ..)| *status != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), seen.len());
    let slowest = seen.iter().map(|(_, _, took, _)| *took).max().unwrap_or_default();
    assert!(slowest < Duration::from_millis(1000), "no request hangs: the slowest took {slowest:?}");
    // a returned at 1 s; two probes 50 ms apart bring it back, and its passive ejections
    // (300 ms, then 600 ms) have run out by 1.6 s. Every lane counts: with round robin and
    // lanes in step, one lane alone may keep meeting the same target.
    let late = Duration::from_millis(1600);
    let from_a_at_the_end = seen.iter().filter(|(_, upstream, _, sent)| *sent >= late && upstream == "a").count();
    assert!(from_a_at_the_end > 0, "a is back in rotation once it returns");
    portico.stop().await;
}

#[tokio::test]
async fn a_response_that_breaks_off_mid_body_is_never_retried() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let portico = Portico::start().await;
    let retries = json!({"attempts": 3, "on": ["connect_failure", "reset", "5xx"], "budget_percent": 100});
    service(&portico, &[&a, &b], json!({"retries": retries})).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;
    let response = portico.get("/truncate/1000").send().await.expect("response head");
    assert_eq!(response.status(), 200, "the head went through");
    assert!(response.bytes().await.is_err(), "the client sees the body break off");
    // The head had reached the client: sending the request again could only duplicate it.
    assert_eq!(a.hits() + b.hits(), 1);
    portico.stop().await;
}
