//! Analytics rollups on every backend: nodes' rows add up, a node's rewrite replaces its
//! row, top-N ranks by each measure, and retention removes one level at a time.

use portico_model::{Dimension, Interval, Rollup, Tally};
use portico_store::TopBy;

const T0: i64 = 1_800_000_000; // a whole hour

/// `requests` requests of `millis` each, `errors` of them 5xx.
fn tally(requests: u64, errors: u64, millis: f64) -> Tally {
    let mut tally = Tally::default();
    for i in 0..requests {
        tally.record(if i < errors { 503 } else { 200 }, 100, 1_000, millis);
    }
    tally
}

fn rollup(interval: Interval, bucket: i64, dimension: Dimension, key: &str, node: &str, tally: Tally) -> Rollup {
    Rollup { interval, bucket, dimension, key: key.into(), node: node.into(), tally }
}

#[tokio::test]
async fn the_rows_of_every_node_add_up_and_a_rewrite_replaces_a_nodes_row() {
    let stores = crate::stores().await;
    for (backend, store) in &stores.stores {
        let minute = |bucket, node, t| rollup(Interval::Minute, bucket, Dimension::All, "", node, t);
        store
            .write_rollups(&[minute(T0, "a", tally(5, 0, 10.0)), minute(T0, "b", tally(3, 1, 30.0))])
            .await
            .expect("the store answers");
        // Node a counted more of the same minute: its row is rewritten, not added to.
        store
            .write_rollups(&[minute(T0, "a", tally(8, 0, 10.0)), minute(T0 + 60, "a", tally(2, 2, 50.0))])
            .await
            .expect("the store answers");
        store.write_rollups(&[minute(T0 + 180, "b", tally(1, 0, 5.0))]).await.expect("the store answers");

        let series = store
            .traffic_series(Interval::Minute, Dimension::All, "", T0 + 30, T0 + 180)
            .await
            .expect("the store answers");
        let points: Vec<(i64, u64, u64)> = series.iter().map(|(b, t)| (*b, t.requests, t.server_errors)).collect();
        // The range's start is rounded down to its minute; its end is exclusive.
        assert_eq!(points, vec![(T0, 11, 1), (T0 + 60, 2, 2)], "{backend}");
        let p99 = series[0].1.latency.quantile(0.99).expect("the store answers");
        assert!((29.0..=31.0).contains(&p99), "{backend}: the merged p99 is node b's 30 ms, not {p99}");
        assert_eq!(series[0].1.bytes_out, 11_000, "{backend}");
    }
}

#[tokio::test]
async fn top_keys_are_ranked_by_the_measure_asked_for() {
    let stores = crate::stores().await;
    for (backend, store) in &stores.stores {
        let hour = |bucket, key, node, t| rollup(Interval::Hour, bucket, Dimension::Route, key, node, t);
        store
            .write_rollups(&[
                hour(T0, "orders", "a", tally(100, 1, 20.0)),
                hour(T0 + 3_600, "orders", "b", tally(50, 0, 20.0)),
                hour(T0, "users", "a", tally(120, 0, 5.0)),
                hour(T0, "search", "a", tally(10, 9, 900.0)),
                // Outside the range asked for.
                hour(T0 + 7_200, "users", "a", tally(1_000, 0, 5.0)),
                // Another dimension and another interval.
                rollup(Interval::Hour, T0, Dimension::Service, "shop", "a", tally(999, 0, 1.0)),
                rollup(Interval::Day, T0, Dimension::Route, "daily", "a", tally(999, 0, 1.0)),
            ])
            .await
            .expect("the store answers");
        let top = |by| store.traffic_top(Interval::Hour, Dimension::Route, "", T0, T0 + 7_200, by, 2);
        let names = |top: &[(String, Tally)]| top.iter().map(|(k, t)| (k.clone(), t.requests)).collect::<Vec<_>>();

        let by_requests = top(TopBy::Requests).await.expect("the store answers");
        assert_eq!(names(&by_requests), [("orders".into(), 150), ("users".into(), 120)], "{backend}");
        let p50 = by_requests[0].1.latency.quantile(0.5).expect("the store answers");
        assert!((19.0..=21.0).contains(&p50), "{backend}: orders' sketches are merged: {p50}");
        assert_eq!(names(&top(TopBy::Errors).await.expect("the store answers"))[0], ("search".into(), 10), "{backend}");
        let by_latency = top(TopBy::Latency).await.expect("the store answers");
        assert_eq!(names(&by_latency), [("search".into(), 10), ("orders".into(), 150)], "{backend}");
    }
}

#[tokio::test]
async fn retention_removes_old_buckets_of_one_interval() {
    let stores = crate::stores().await;
    for (backend, store) in &stores.stores {
        store
            .write_rollups(&[
                rollup(Interval::Minute, T0, Dimension::All, "", "a", tally(1, 0, 1.0)),
                rollup(Interval::Minute, T0 + 60, Dimension::All, "", "a", tally(1, 0, 1.0)),
                rollup(Interval::Hour, T0, Dimension::All, "", "a", tally(2, 0, 1.0)),
            ])
            .await
            .expect("the store answers");
        assert_eq!(store.prune_rollups(Interval::Minute, T0 + 60).await.expect("the store answers"), 1, "{backend}");
        let minutes = store
            .traffic_series(Interval::Minute, Dimension::All, "", T0, T0 + 3_600)
            .await
            .expect("the store answers");
        assert_eq!(minutes.len(), 1, "{backend}");
        let hours =
            store.traffic_series(Interval::Hour, Dimension::All, "", T0, T0 + 3_600).await.expect("the store answers");
        assert_eq!(hours[0].1.requests, 2, "{backend}: other intervals are kept");
    }
}

#[tokio::test]
async fn top_lists_read_whole_days_from_day_rows_and_the_edges_from_hours() {
    let stores = crate::stores().await;
    let day = 20_833 * 86_400; // a UTC midnight
    for (backend, store) in &stores.stores {
        let row =
            |interval, bucket, requests| rollup(interval, bucket, Dimension::Route, "a", "n", tally(requests, 0, 1.0));
        store
            .write_rollups(&[
                row(Interval::Hour, day - 3_600, 2),
                // The day's hours, and the day's row counting the same requests.
                row(Interval::Hour, day + 3_600, 4),
                row(Interval::Hour, day + 7_200, 6),
                row(Interval::Day, day, 10),
                row(Interval::Hour, day + 86_400, 3),
            ])
            .await
            .expect("the store answers");
        let (from, to) = (day - 3_600, day + 86_400 + 3_600);
        for by in [TopBy::Requests, TopBy::Latency] {
            let top = store.traffic_top(Interval::Hour, Dimension::Route, "", from, to, by, 5).await.expect("top");
            assert_eq!(top.len(), 1, "{backend}");
            assert_eq!((top[0].1.requests, top[0].1.latency.count()), (15, 15), "{backend} {by:?}: each counted once");
        }
    }
}

#[tokio::test]
async fn a_routes_consumers_are_ranked_apart_from_other_routes() {
    let stores = crate::stores().await;
    for (backend, store) in &stores.stores {
        let row = |key: &str, requests| {
            rollup(Interval::Hour, T0, Dimension::RouteConsumer, key, "n", tally(requests, 0, 1.0))
        };
        // Names that extend `orders`, and that sort next to it.
        store
            .write_rollups(&[
                row("orders/app-a", 3),
                row("orders/app-b", 7),
                row("orders-eu/app-c", 50),
                row("orders0/x", 60),
            ])
            .await
            .expect("the store answers");
        for by in [TopBy::Requests, TopBy::Latency] {
            let top = store
                .traffic_top(Interval::Hour, Dimension::RouteConsumer, "orders", T0, T0 + 3_600, by, 10)
                .await
                .expect("top");
            let mut keys: Vec<(String, u64)> = top.iter().map(|(k, t)| (k.clone(), t.requests)).collect();
            keys.sort();
            assert_eq!(keys, [("app-a".into(), 3), ("app-b".into(), 7)], "{backend} {by:?}");
        }
    }
}
