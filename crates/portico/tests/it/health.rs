//! Health checks: sick targets leave the rotation and come back by themselves.

use crate::helpers::Portico;
use portico_testkit::MockUpstream;
use serde_json::{json, Value};
use std::time::Duration;

/// Polls the service's health report until `done` holds for it (or gives up after 5 s).
async fn health_until(portico: &Portico, service: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut report = Value::Null;
    for _ in 0..250 {
        report = portico.health(service).await;
        if done(&report) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report
}

fn target<'r>(report: &'r Value, address: &str) -> &'r Value {
    report["targets"].as_array().and_then(|t| t.iter().find(|t| t["address"] == address)).unwrap_or(&Value::Null)
}

async fn answers(portico: &Portico, n: usize) -> Vec<(u16, String)> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(portico.answered_by(portico.get("/")).await);
    }
    seen
}

#[tokio::test]
async fn active_checks_take_a_failing_target_out_and_bring_it_back() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let portico = Portico::start().await;
    let check = json!({"path": "/health", "interval_ms": 50, "timeout_ms": 500,
                       "healthy_threshold": 2, "unhealthy_threshold": 2});
    let service = json!({"name": "api", "targets": [{"address": a.addr.to_string()}, {"address": b.addr.to_string()}],
                         "health": {"active": check}});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;

    a.set_healthy(false);
    let a_addr = a.addr.to_string();
    let report = health_until(&portico, "api", |r| target(r, &a_addr)["available"] == false).await;
    let a_state = target(&report, &a_addr);
    assert_eq!(a_state["available"], false, "{report}");
    assert_eq!(a_state["active"]["healthy"], false);
    assert_eq!(a_state["active"]["last_error"], "unexpected status 503");
    assert_eq!(report["failing_open"], false);
    assert!(answers(&portico, 10).await.iter().all(|(s, u)| *s == 200 && u == "b"), "only b gets traffic");

    a.set_healthy(true);
    let report = health_until(&portico, "api", |r| target(r, &a_addr)["available"] == true).await;
    assert_eq!(target(&report, &a_addr)["active"]["healthy"], true, "{report}");
    let seen = answers(&portico, 10).await;
    assert!(seen.iter().any(|(_, u)| u == "a"), "a is back in rotation: {seen:?}");
    portico.stop().await;
}

#[tokio::test]
async fn a_dead_target_is_found_by_probes_and_every_sick_target_means_failing_open() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let portico = Portico::start().await;
    let check = json!({"path": "/health", "interval_ms": 50, "unhealthy_threshold": 1});
    let service = json!({"name": "api", "targets": [{"address": a.addr.to_string()}, {"address": b.addr.to_string()}],
                         "health": {"active": check}});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;

    let a_addr = a.addr.to_string();
    drop(a);
    let report = health_until(&portico, "api", |r| target(r, &a_addr)["available"] == false).await;
    let error = target(&report, &a_addr)["active"]["last_error"].as_str().unwrap_or("").to_owned();
    assert!(error.to_lowercase().contains("refused"), "{report}");

    // b's probes fail too: with nothing healthy left, traffic goes to every target rather
    // than nowhere, and b (alive apart from its health endpoint) answers.
    b.set_healthy(false);
    let b_addr = b.addr.to_string();
    let report = health_until(&portico, "api", |r| r["failing_open"] == true).await;
    assert_eq!(target(&report, &b_addr)["available"], false, "{report}");
    let seen = answers(&portico, 10).await;
    assert!(seen.iter().any(|(s, u)| *s == 200 && u == "b"), "{seen:?}");
    portico.stop().await;
}

#[tokio::test]
async fn passive_checks_eject_a_failing_target_for_a_while() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let portico = Portico::start().await;
    let passive = json!({"failures": 2, "ejection_ms": 600, "max_ejection_ms": 5000});
    let service = json!({"name": "api", "targets": [{"address": a.addr.to_string()}, {"address": b.addr.to_string()}],
                         "health": {"passive": passive}});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;

    // a dies. Round robin sends it every other request; after two failures it is ejected
    // and b takes everything.
    let a_addr = a.addr;
    drop(a);
    let seen = answers(&portico, 12).await;
    let failures = seen.iter().filter(|(s, _)| *s == 502).count();
    assert_eq!(failures, 2, "exactly the failures that trigger the ejection reach clients: {seen:?}");
    assert!(seen[6..].iter().all(|(s, u)| *s == 200 && u == "b"), "{seen:?}");
    let report = portico.health("api").await;
    let a_state = target(&report, &a_addr.to_string());
    assert_eq!(a_state["passive"]["ejected"], true, "{report}");
    assert_eq!(a_state["passive"]["ejections"], 1);

    // a comes back on the same address; when the ejection ends it gets traffic again.
    let _a = MockUpstream::start_on("a", a_addr).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = answers(&portico, 6).await;
    assert!(seen.iter().all(|(s, _)| *s == 200), "{seen:?}");
    assert!(seen.iter().any(|(_, u)| u == "a"), "a is back: {seen:?}");
    portico.stop().await;
}

#[tokio::test]
async fn passive_checks_count_configured_statuses_and_unknown_services_are_404() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let portico = Portico::start().await;
    let passive = json!({"failures": 3, "statuses": ["503"], "ejection_ms": 60000});
    let service = json!({"name": "api", "targets": [{"address": a.addr.to_string()}, {"address": b.addr.to_string()}],
                         "health": {"passive": passive}});
    portico.create("services", service).await;
    portico.create("routes", json!({"name": "api", "paths": ["/status/*"], "service": "api"})).await;
    // 500 is not in the list: nobody is ejected.
    for _ in 0..10 {
        assert_eq!(portico.answered_by(portico.get("/status/500")).await.0, 500);
    }
    let report = portico.health("api").await;
    assert!(report["targets"].as_array().is_some_and(|t| t.iter().all(|t| t["available"] == true)), "{report}");
    // 503 is: three in a row on each target eject both, and then Portico fails open.
    for _ in 0..6 {
        portico.answered_by(portico.get("/status/503")).await;
    }
    let report = portico.health("api").await;
    assert_eq!(report["failing_open"], true, "{report}");

    let missing = portico.admin(reqwest::Method::GET, "/services/nope/health").send().await.expect("admin");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    portico.stop().await;
}
