//! Traffic analytics end to end: requests through Portico become rollups in its store
//! (SQLite, PostgreSQL), read back through the admin API as series and top lists.

use crate::helpers::Portico;
use portico_gateway::AnalyticsSettings;
use portico_testkit::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn analytics(portico: &Portico, query: &str) -> Value {
    let response = portico.admin(Method::GET, &format!("/analytics/{query}")).send().await.expect("admin");
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.expect("json")
}

/// The keys and request counts of a top list.
fn ranked(top: &Value) -> Vec<(String, u64)> {
    let items = top["items"].as_array().expect("items");
    items.iter().map(|i| (i["key"].as_str().unwrap_or("").to_owned(), i["requests"].as_u64().unwrap_or(0))).collect()
}

/// 20 fast requests to `users`, 5 slow ones to `orders` by consumer `shop-app`, 3 refused
/// for want of a key, 2 to no route; then what analytics says about them.
async fn analysed(store: Option<String>) {
    let portico = Portico::start_with(|s| {
        if let Some(url) = store {
            s.store = url;
        }
        s.telemetry.analytics = Some(AnalyticsSettings { flush_interval: Duration::from_millis(100) });
    })
    .await;
    let (fast, slow) = (MockUpstream::start("users").await, MockUpstream::start("orders").await);
    slow.set_delay(Duration::from_millis(120));
    portico.service("users", &[fast.addr.to_string()]).await;
    portico.service("orders", &[slow.addr.to_string()]).await;
    portico.create("routes", json!({"name": "users", "paths": ["/users/{id}"], "service": "users"})).await;
    let orders = json!({"name": "orders", "paths": ["/orders/*"], "service": "orders", "policies": {"key_auth": {}}});
    portico.create("routes", orders).await;
    let key = "shop-app-key-0123456789";
    portico.create("consumers", json!({"name": "shop-app", "credentials": [{"type": "key_auth", "key": key}]})).await;
    portico.settle().await;
    for i in 0..20 {
        assert_eq!(portico.get(&format!("/users/{i}")).send().await.expect("r").status(), 200);
    }
    for _ in 0..5 {
        assert_eq!(portico.get("/orders/1").header("x-api-key", key).send().await.expect("r").status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(portico.get("/orders/1").send().await.expect("r").status(), 401);
    }
    for _ in 0..2 {
        assert_eq!(portico.get("/nowhere").send().await.expect("r").status(), 404);
    }

    // Rollups reach the store within a flush interval or two.
    let mut series = Value::Null;
    for _ in 0..100 {
        series = analytics(&portico, "series?range=1h").await;
        if series["total"]["requests"] == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(series["interval"], "minute", "an hour is charted by the minute");
    assert_eq!(series["total"]["requests"], 30, "{series}");
    assert_eq!(series["total"]["client_errors"], 5, "three 401s and two 404s");
    let points = series["points"].as_array().expect("points");
    assert!((60..=61).contains(&points.len()), "every minute of the hour has a point: {}", points.len());
    let counted: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap_or(0)).sum();
    assert_eq!(counted, 30);

    // The slow route's percentiles show its upstream's 120 ms; the fast one's do not.
    let orders = analytics(&portico, "series?range=1h&dimension=route&key=orders").await;
    assert_eq!(orders["total"]["requests"], 8, "{orders}");
    let p50 = orders["total"]["latency_ms"]["p50"].as_f64().expect("p50");
    assert!(p50 >= 115.0, "5 of the 8 waited 120 ms: p50 {p50}");
    let users = analytics(&portico, "series?range=1h&dimension=route&key=users").await;
    assert!(users["total"]["latency_ms"]["p99"].as_f64().expect("p99") < 100.0, "{users}");

    // The hour and day rollups count the same requests.
    for interval in ["hour", "day"] {
        let total = analytics(&portico, &format!("series?range=2d&interval={interval}")).await;
        assert_eq!(total["total"]["requests"], 30, "{interval}: {total}");
    }

    let routes = analytics(&portico, "top?dimension=route&range=1h").await;
    assert_eq!(ranked(&routes), [("users".into(), 20), ("orders".into(), 8)]);
    let slowest = analytics(&portico, "top?dimension=route&range=1h&by=latency&limit=1").await;
    assert_eq!(ranked(&slowest), [("orders".into(), 8)]);
    let consumers = analytics(&portico, "top?dimension=consumer&range=1h").await;
    assert_eq!(ranked(&consumers), [("shop-app".into(), 5)]);
    // A route's consumers, a consumer's routes, and one consumer's traffic on one route.
    let of_route = analytics(&portico, "top?dimension=consumer&route=orders&range=1h").await;
    assert_eq!((ranked(&of_route), &of_route["route"]), (vec![("shop-app".into(), 5)], &json!("orders")));
    let of_consumer = analytics(&portico, "top?dimension=route&consumer=shop-app&range=1h").await;
    assert_eq!(ranked(&of_consumer), [("orders".into(), 5)]);
    assert_eq!(ranked(&analytics(&portico, "top?dimension=consumer&route=users&range=1h").await), []);
    let pair = analytics(&portico, "series?range=1h&route=orders&consumer=shop-app").await;
    assert_eq!((&pair["dimension"], &pair["total"]["requests"]), (&json!("route_consumer"), &json!(5)), "{pair}");
    let statuses = analytics(&portico, "top?dimension=status&range=1h").await;
    assert_eq!(ranked(&statuses), [("200".into(), 25), ("401".into(), 3), ("404".into(), 2)]);
    let errors = analytics(&portico, "top?dimension=error&range=1h").await;
    assert_eq!(ranked(&errors), [("unauthorized".into(), 3), ("no_route".into(), 2)]);

    let status: Value = portico.admin(Method::GET, "/status").send().await.expect("a").json().await.expect("j");
    assert!(status["analytics"]["written"].as_u64() > Some(0), "{status}");
    assert_eq!(status["analytics"]["failed"], 0, "{status}");
    portico.stop().await;
}

#[tokio::test]
async fn traffic_is_charted_and_ranked_from_rollups_sqlite() {
    analysed(None).await;
}

#[tokio::test]
async fn traffic_is_charted_and_ranked_from_rollups_postgres() {
    let Some(url) = portico_testkit::fresh_postgres().await else { return };
    analysed(Some(url)).await;
}

#[tokio::test]
async fn bad_analytics_queries_get_problems_naming_the_parameter() {
    let portico = Portico::start().await;
    for (query, named) in [
        ("series?dimension=route", "`key`"),
        ("series?interval=minute&range=30d", "coarser interval"),
        ("top?range=1h", "`dimension`"),
        ("top?dimension=route&by=fame", "`by`"),
        ("top?dimension=status&route=orders", "`route` narrows"),
        ("series?route=orders", "`route` and `consumer` together"),
    ] {
        let response = portico.admin(Method::GET, &format!("/analytics/{query}")).send().await.expect("admin");
        assert_eq!(response.status(), 400, "{query}");
        let content_type = response.headers()["content-type"].to_str().unwrap_or("").to_owned();
        assert_eq!(content_type, "application/problem+json");
        let problem: Value = response.json().await.expect("json");
        assert!(problem["detail"].as_str().unwrap_or("").contains(named), "{query}: {problem}");
    }
    portico.stop().await;
}

#[tokio::test]
async fn rollups_are_removed_past_the_retention_of_their_interval() {
    use portico_model::{Dimension, Interval, Rollup, Tally};
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("portico.db").display());
    let store = portico_store::Store::open(&url).await.expect("store");
    let now = portico_store::now_ms() / 1_000;
    let mut tally = Tally::default();
    tally.record(200, 0, 0, 1.0);
    let row = |interval: Interval, age_days: i64| Rollup {
        interval,
        bucket: interval.floor(now - age_days * 86_400),
        dimension: Dimension::All,
        key: String::new(),
        node: "old-node".into(),
        tally: tally.clone(),
    };
    // Three days old: past the minutes' retention (2 days), within the hours' (35).
    store.write_rollups(&[row(Interval::Minute, 3), row(Interval::Hour, 3)]).await.expect("write");

    let mut settings = crate::helpers::settings(url);
    settings.telemetry.analytics = Some(AnalyticsSettings::default());
    settings.analytics_retention[0].1 = Duration::from_secs(2 * 86_400);
    let portico = Portico::launch(settings, None, dir).await;
    let count = |interval| {
        let store = store.clone();
        async move {
            let series = store.traffic_series(interval, Dimension::All, "", now - 4 * 86_400, now).await;
            series.expect("series").len()
        }
    };
    let mut minutes = 1;
    for _ in 0..100 {
        minutes = count(Interval::Minute).await;
        if minutes == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(minutes, 0, "minute rollups older than two days are gone");
    assert_eq!(count(Interval::Hour).await, 1, "hour rollups of the same age stay");
    store.close().await;
    portico.stop().await;
}
