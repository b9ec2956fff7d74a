//! Balancing algorithms, seen from the client: which target answers.

use crate::helpers::Portico;
use portico_testkit::MockUpstream;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

async fn two_targets(portico: &Portico, balance: serde_json::Value) -> (MockUpstream, MockUpstream) {
    let (slow, fast) = (MockUpstream::start("slow").await, MockUpstream::start("fast").await);
    let targets = json!([{"address": slow.addr.to_string()}, {"address": fast.addr.to_string()}]);
    portico.create("services", json!({"name": "api", "targets": targets, "balance": balance})).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;
    (slow, fast)
}

/// Four clients send ten requests each, one after the other.
async fn four_lanes_of_ten(portico: &Portico) -> HashMap<String, usize> {
    let lanes = (0..4).map(|_| async {
        let mut seen = Vec::new();
        for _ in 0..10 {
            let (status, upstream) = portico.answered_by(portico.get("/")).await;
            assert_eq!(status, 200);
            seen.push(upstream);
        }
        seen
    });
    let mut counts = HashMap::new();
    for upstream in futures_util::future::join_all(lanes).await.into_iter().flatten() {
        *counts.entry(upstream).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn least_requests_keeps_traffic_away_from_a_slow_target() {
    let portico = Portico::start().await;
    let (slow, _fast) = two_targets(&portico, json!({"algorithm": "least_requests"})).await;
    slow.set_delay(Duration::from_millis(200));
    let counts = four_lanes_of_ten(&portico).await;
    // Round robin would send 20 of the 40 requests to the slow target.
    assert!(counts.get("slow").copied().unwrap_or(0) <= 8, "{counts:?}");
    portico.stop().await;
}

#[tokio::test]
async fn peak_ewma_learns_which_target_is_slow() {
    let portico = Portico::start().await;
    let (slow, _fast) = two_targets(&portico, json!({"algorithm": "peak_ewma"})).await;
    slow.set_delay(Duration::from_millis(50));
    let mut slow_hits = 0;
    for _ in 0..40 {
        let (status, upstream) = portico.answered_by(portico.get("/")).await;
        assert_eq!(status, 200);
        slow_hits += usize::from(upstream == "slow");
    }
    assert!(slow_hits <= 4, "the slow target answered {slow_hits} of 40");
    portico.stop().await;
}

#[tokio::test]
async fn hashing_on_a_header_sticks_and_moves_only_the_removed_targets_keys() {
    let upstreams = [MockUpstream::start("a").await, MockUpstream::start("b").await, MockUpstream::start("c").await];
    let portico = Portico::start().await;
    let targets: Vec<_> = upstreams.iter().map(|u| json!({"address": u.addr.to_string()})).collect();
    let balance = json!({"algorithm": "hash", "on": "header", "key": "x-user"});
    portico.create("services", json!({"name": "api", "targets": targets, "balance": balance})).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;

    let mut owner = HashMap::new();
    for user in 0..60 {
        let user = format!("user-{user}");
        let (_, first) = portico.answered_by(portico.get("/").header("x-user", &user)).await;
        for _ in 0..2 {
            let (_, again) = portico.answered_by(portico.get("/").header("x-user", &user)).await;
            assert_eq!(again, first, "{user} moved between requests");
        }
        owner.insert(user, first);
    }
    let used: std::collections::HashSet<_> = owner.values().collect();
    assert_eq!(used.len(), 3, "60 keys spread over all three targets");

    // Take `c` out: only its keys move.
    let targets: Vec<_> = upstreams[..2].iter().map(|u| json!({"address": u.addr.to_string()})).collect();
    let service = json!({"name": "api", "targets": targets, "balance": balance});
    let put = portico.admin(reqwest::Method::PUT, "/services/api").header("if-match", "\"1\"").json(&service);
    let response = put.send().await.expect("put");
    assert_eq!(response.status(), 200);
    portico.settle().await;
    for (user, before) in &owner {
        let (_, now) = portico.answered_by(portico.get("/").header("x-user", user)).await;
        if before == "c" {
            assert_ne!(now, "c");
        } else {
            assert_eq!(&now, before, "{user} moved although its target stayed");
        }
    }
    // Requests without the header are still served, spread by round robin.
    let (status, _) = portico.answered_by(portico.get("/")).await;
    assert_eq!(status, 200);
    portico.stop().await;
}

#[tokio::test]
async fn hashing_on_a_cookie_or_the_client_address_sticks() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let portico = Portico::start().await;
    let targets = json!([{"address": a.addr.to_string()}, {"address": b.addr.to_string()}]);
    for (name, balance) in [
        ("by-cookie", json!({"algorithm": "hash", "on": "cookie", "key": "session"})),
        ("by-ip", json!({"algorithm": "hash", "on": "client_ip"})),
    ] {
        let service = json!({"name": name, "targets": targets, "balance": balance});
        portico.create("services", service).await;
        portico.create("routes", json!({"name": name, "paths": [format!("/{name}")], "service": name})).await;
    }
    let mut seen = std::collections::HashSet::new();
    for session in 0..20 {
        let cookie = format!("theme=dark; session=s{session}");
        let (_, first) = portico.answered_by(portico.get("/by-cookie").header("cookie", &cookie)).await;
        let (_, again) = portico.answered_by(portico.get("/by-cookie").header("cookie", &cookie)).await;
        assert_eq!(first, again);
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "twenty sessions use both targets");
    // Every request here comes from 127.0.0.1, so one target answers them all.
    let mut by_ip = std::collections::HashSet::new();
    for _ in 0..10 {
        by_ip.insert(portico.answered_by(portico.get("/by-ip")).await.1);
    }
    assert_eq!(by_ip.len(), 1);
    portico.stop().await;
}
