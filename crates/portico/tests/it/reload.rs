//! Hot reload: changes take effect without dropping requests, in-flight requests finish on
//! the snapshot they started with, and a broken store leaves the last good one serving.

use crate::helpers::Portico;
use portico_testkit::{fresh_postgres, MockUpstream};
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn hundred_changes_while_requests_flow(portico: Portico) {
    let upstream = MockUpstream::start("steady").await;
    portico.service("steady", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "proxied", "paths": ["/steady/*"], "service": "steady"})).await;
    portico.create("routes", json!({"name": "hot", "paths": ["/hot"], "mock": {"body": "v0"}})).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (http, url) =
            (portico.http.clone(), format!("{}{}", portico.proxy, if i % 2 == 0 { "/hot" } else { "/steady/x" }));
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.map(|_| ()).map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        eprintln!("request failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for version in 1..=100 {
        let route = json!({"paths": ["/hot"], "mock": {"body": format!("v{version}")}});
        let put = portico.admin(Method::PUT, "/routes/hot").header("if-match", format!("\"{version}\"")).json(&route);
        assert_eq!(put.send().await.expect("put").status(), 200);
    }
    portico.settle().await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during reloads");
    assert!(ok.load(Ordering::Relaxed) > 100, "too few requests flowed: {}", ok.load(Ordering::Relaxed));
    assert_eq!(portico.get("/hot").send().await.expect("request").text().await.expect("text"), "v100");
    portico.stop().await;
}

#[tokio::test]
async fn hundred_changes_while_requests_flow_drop_nothing() {
    hundred_changes_while_requests_flow(Portico::start().await).await;
}

#[tokio::test]
async fn hundred_changes_while_requests_flow_drop_nothing_on_postgres() {
    let Some(url) = fresh_postgres().await else { return };
    hundred_changes_while_requests_flow(Portico::start_with(|s| s.store = url).await).await;
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_snapshot_they_started_with() {
    let upstream = MockUpstream::start("slow").await;
    let portico = Portico::start().await;
    portico.service("slow", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "slow", "service": "slow"})).await;
    let in_flight = tokio::spawn(portico.get("/delay/800").send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(portico.admin(Method::DELETE, "/routes/slow").send().await.expect("delete").status(), 204);
    assert_eq!(portico.admin(Method::DELETE, "/services/slow").send().await.expect("delete").status(), 204);
    portico.settle().await;
    assert_eq!(portico.get("/delay/1").send().await.expect("request").status(), 404, "the route is gone");
    let response = in_flight.await.expect("task").expect("in-flight request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("text"), "late");
    portico.stop().await;
}

#[tokio::test]
async fn changes_committed_by_another_process_are_picked_up() {
    let portico = Portico::start().await;
    // What `portico apply` does: its own connection to the same store.
    let other = portico_store::Store::open(&portico.store_url).await.expect("second handle");
    // Each change arrives well within the 2 s after which an SQLite store is asked anyway:
    // its changed files are what tell the gateway to look.
    each_change_arrives_soon(&portico, &other, 3).await;
    portico.stop().await;
}

/// Commits `rounds` changes through `other`, a second handle on the gateway's store, and
/// checks that each is served within 700 ms of its commit.
async fn each_change_arrives_soon(portico: &Portico, other: &portico_store::Store, rounds: usize) {
    for round in 0..rounds {
        let body = format!("arrived {round}");
        let yaml = format!("routes:\n  - name: late\n    paths: [/late]\n    mock: {{body: {body}}}\n");
        other.replace_all(&portico_model::parse_yaml(&yaml).expect("yaml")).await.expect("apply");
        let committed = std::time::Instant::now();
        assert_eq!(portico.body_becomes("/late", &body).await, body);
        let took = committed.elapsed();
        assert!(took < std::time::Duration::from_millis(700), "round {round}: {took:?}");
    }
}

#[tokio::test]
async fn changes_committed_by_another_node_on_postgres_are_picked_up_at_once() {
    let Some(url) = fresh_postgres().await else { return };
    let portico = Portico::start_with(|s| s.store = url.clone()).await;
    let other = portico_store::Store::open(&url).await.expect("second handle");
    // The store is asked only every 2 s while the gateway listens for its commits: each
    // change arrives well before that because its commit was announced.
    each_change_arrives_soon(&portico, &other, 5).await;
    portico.stop().await;
}

#[tokio::test]
async fn an_unreachable_store_leaves_the_last_good_configuration_serving() {
    use sqlx::Connection;
    let Some(url) = fresh_postgres().await else { return };
    let portico = Portico::start_with(|s| s.store = url.clone()).await;
    portico.create("routes", json!({"name": "hello", "mock": {"body": "still here"}})).await;

    // Take the database away: end every session and rename it so that none can reconnect.
    let (base, name) = url.rsplit_once('/').expect("database in url");
    let mut admin = sqlx::AnyConnection::connect(&format!("{base}/postgres")).await.expect("connect");
    let hidden = format!("{name}_hidden");
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).execute(&mut admin).await.expect("block");
    sqlx::query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        .execute(&mut admin)
        .await
        .expect("terminate");
    sqlx::query(&format!("ALTER DATABASE {name} RENAME TO {hidden}")).execute(&mut admin).await.expect("rename");

    let status = portico.status_with_error().await;
    assert!(status["last_error"].as_str().unwrap_or("").contains("unreachable"), "{status}");
    for _ in 0..20 {
        let response = portico.get("/").send().await.expect("request");
        assert_eq!(response.text().await.expect("text"), "still here");
    }

    // Bring it back: the gateway follows the store again.
    sqlx::query(&format!("ALTER DATABASE {hidden} RENAME TO {name}")).execute(&mut admin).await.expect("rename back");
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).execute(&mut admin).await.expect("allow");
    let other = portico_store::Store::open(&url).await.expect("reconnect");
    let config = portico_model::parse_yaml("routes:\n  - name: hello\n    mock: {body: back}\n").expect("yaml");
    other.replace_all(&config).await.expect("apply");
    assert_eq!(portico.body_becomes("/", "back").await, "back");
    portico.stop().await;
}
