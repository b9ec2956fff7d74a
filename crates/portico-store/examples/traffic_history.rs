//! Fills a store with a week of synthetic traffic as one Portico node would have recorded
//! it: EVENTS access-log rows, and the rollups its analytics writes for them (minutes for
//! the newest two days, which is what the default retention keeps; hours and days for the
//! whole week). `bench/analytics.sh` runs it before timing the analytics queries.
//!
//! ```sh
//! cargo run --release -p portico-store --example traffic_history -- STORE_URL [EVENTS]
//! ```

use portico_model::{Dimension, Interval, Rollup, Tally};
use portico_store::{AccessRecord, Store};
use std::collections::HashMap;
use std::time::Instant;

const ROUTES: usize = 20;
const SERVICES: usize = 8;
const CONSUMERS: u32 = 200;
const WEEK: i64 = 7 * 86_400;
const MINUTES_KEPT: i64 = 2 * 86_400;
const RAW_BATCH: usize = 20_000;

/// One request of the synthetic week.
struct Request {
    at_ms: i64,
    route: usize,
    consumer: Option<u32>,
    status: u16,
    error: Option<&'static str>,
    millis: f64,
    bytes_in: u64,
    bytes_out: u64,
}

/// Busy routes and consumers are far busier than quiet ones, latencies have a long tail,
/// and a few percent of requests fail.
fn request(rng: &mut fastrand::Rng, at_ms: i64) -> Request {
    let route = (rng.f64().powi(2) * ROUTES as f64) as usize;
    let consumer = (rng.f64() < 0.8).then(|| (rng.f64().powi(3) * f64::from(CONSUMERS)) as u32);
    let (status, error) = match rng.u32(0..1000) {
        0..=949 => (200, None),
        950..=969 => (404, None),
        970..=979 => (401, Some("unauthorized")),
        980..=989 => (429, Some("rate_limited")),
        990..=994 => (502, Some("upstream_refused")),
        995..=997 => (503, None),
        _ => (504, Some("upstream_timeout")),
    };
    let base = 2.0 + route as f64 * 3.0;
    let millis = base * (1.0 - rng.f64()).ln().abs().mul_add(1.5, 0.5);
    Request {
        at_ms,
        route,
        consumer,
        status,
        error,
        millis,
        bytes_in: rng.u64(0..2_000),
        bytes_out: rng.u64(100..20_000),
    }
}

fn keys(r: &Request) -> Vec<(Dimension, String)> {
    let mut keys = vec![
        (Dimension::All, String::new()),
        (Dimension::Route, format!("route-{:02}", r.route)),
        (Dimension::Service, format!("service-{}", r.route % SERVICES)),
        (Dimension::Status, r.status.to_string()),
    ];
    if let Some(consumer) = r.consumer {
        let (route, consumer) = (format!("route-{:02}", r.route), format!("app-{consumer:03}"));
        keys.push((Dimension::RouteConsumer, portico_model::pair(&route, &consumer)));
        keys.push((Dimension::ConsumerRoute, portico_model::pair(&consumer, &route)));
        keys.push((Dimension::Consumer, consumer));
    }
    if let Some(error) = r.error {
        keys.push((Dimension::Error, error.to_owned()));
    }
    keys
}

fn record(r: &Request, i: u64) -> AccessRecord {
    AccessRecord {
        at: r.at_ms,
        request_id: format!("{i:016x}"),
        trace_id: format!("{:032x}", u128::from(i) * 7_919),
        client_ip: "10.0.0.7".into(),
        method: "GET".into(),
        host: Some("api.example.com".into()),
        path: format!("/v1/route-{:02}/items/{}", r.route, i % 1_000),
        path_template: Some(format!("/v1/route-{:02}/items/{{id}}", r.route)),
        route: Some(format!("route-{:02}", r.route)),
        service: Some(format!("service-{}", r.route % SERVICES)),
        target: Some("10.0.1.5:8080".into()),
        consumer: r.consumer.map(|c| format!("app-{c:03}")),
        status: i32::from(r.status),
        bytes_in: r.bytes_in as i64,
        bytes_out: r.bytes_out as i64,
        duration_us: (r.millis * 1_000.0) as i64,
        upstream_us: Some((r.millis * 900.0) as i64),
        gateway_us: (r.millis * 100.0) as i64,
        retries: 0,
        error: r.error.map(str::to_owned),
        team: None,
        ai: None,
    }
}

/// The open bucket of one interval, as a node's analytics holds it.
struct Level {
    interval: Interval,
    bucket: i64,
    tallies: HashMap<(Dimension, String), Tally>,
}

impl Level {
    /// Moves to the bucket of `second`, handing back the rows of the bucket left.
    fn advance(&mut self, second: i64, keep_from: i64) -> Vec<Rollup> {
        let bucket = self.interval.floor(second);
        if bucket == self.bucket {
            return Vec::new();
        }
        let rows = self.rows(keep_from);
        self.bucket = bucket;
        rows
    }

    fn rows(&mut self, keep_from: i64) -> Vec<Rollup> {
        let tallies = std::mem::take(&mut self.tallies);
        if self.bucket < keep_from {
            return Vec::new();
        }
        tallies
            .into_iter()
            .map(|((dimension, key), tally)| Rollup {
                interval: self.interval,
                bucket: self.bucket,
                dimension,
                key,
                node: "bench-node".into(),
                tally,
            })
            .collect()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: traffic_history STORE_URL [EVENTS]")?;
    let events: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10_000_000);
    let store = Store::open(&url).await?;
    let now = Interval::Minute.floor(portico_store::now_ms() / 1_000);
    let start = now - WEEK;
    let keep =
        [(Interval::Minute, now - MINUTES_KEPT), (Interval::Hour, start - 3_600), (Interval::Day, start - 86_400)];
    let mut levels: Vec<Level> = keep
        .iter()
        .map(|(interval, _)| Level { interval: *interval, bucket: interval.floor(start), tallies: HashMap::new() })
        .collect();
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut raw, mut rollups) = (Vec::with_capacity(RAW_BATCH), Vec::new());
    let (mut raw_rows, mut rollup_rows) = (0u64, 0u64);
    let began = Instant::now();
    let step_ms = (WEEK * 1_000) as f64 / events as f64;
    for i in 0..events {
        let at_ms = start * 1_000 + (i as f64 * step_ms) as i64;
        let r = request(&mut rng, at_ms);
        let second = at_ms / 1_000;
        for (level, (_, keep_from)) in levels.iter_mut().zip(keep) {
            rollups.extend(level.advance(second, keep_from));
            for key in keys(&r) {
                level.tallies.entry(key).or_default().record(r.status, r.bytes_in, r.bytes_out, r.millis);
            }
        }
        raw.push(record(&r, i));
        if raw.len() == RAW_BATCH {
            store.insert_access_records(&raw).await?;
            raw_rows += raw.len() as u64;
            raw.clear();
        }
        if rollups.len() >= 2_000 {
            store.write_rollups(&rollups).await?;
            rollup_rows += rollups.len() as u64;
            rollups.clear();
        }
        if i % 1_000_000 == 999_999 {
            eprintln!("{} events in {:.0} s", i + 1, began.elapsed().as_secs_f64());
        }
    }
    for (level, (_, keep_from)) in levels.iter_mut().zip(keep) {
        rollups.extend(level.rows(keep_from));
    }
    store.insert_access_records(&raw).await?;
    store.write_rollups(&rollups).await?;
    raw_rows += raw.len() as u64;
    rollup_rows += rollups.len() as u64;
    store.close().await;
    println!(
        "stored {raw_rows} access events and {rollup_rows} rollup rows for {} to {} in {:.0} s",
        start * 1_000,
        now * 1_000,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
