//! Traffic analytics, counted off the request path.
//!
//! The access-log writer hands every event to a [`Counter`], which tallies it by minute
//! and by its combination of route, service, consumer, team, status, error kind and AI
//! provider and model: one lookup and one sketch insertion per event. Every flush interval
//! each combination's tally is folded into the minute, hour and day buckets still open of
//! each dimension (the whole traffic, route, service, consumer, status, error kind, route
//! with consumer, team, AI provider and model), and the buckets that changed are written to
//! a [`RollupSink`] (the store), each as this node's whole tally so far: rewriting a row is
//! idempotent, and a failed write is simply tried again at the next flush. A bucket is
//! forgotten once it has ended and its row is written. Requests are counted in the bucket
//! in which they ended.

use crate::ai::AiUsage;
use portico_model::{AiTally, Dimension, Interval, Rollup, Tally};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::AccessEvent;

/// Where rollups go: the program running the gateway provides it (Portico's store).
pub trait RollupSink: Send {
    /// Writes the rows, each replacing this node's row of the same bucket and key.
    fn write(&mut self, rollups: &[Rollup]) -> io::Result<()>;
}

/// Settings of traffic analytics.
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    /// How often the open buckets are written: how fresh the store's figures are.
    pub flush_interval: Duration,
}

impl Default for AnalyticsSettings {
    fn default() -> AnalyticsSettings {
        AnalyticsSettings { flush_interval: Duration::from_secs(10) }
    }
}

/// A bucket is closed this long after it ended (requests are counted when they end, so
/// only the writer's own delay makes an event late).
const GRACE: i64 = 5;
/// An unwritten bucket (the store is down) is given up this long after it ended.
const GIVE_UP: i64 = 3_600;

/// The analytics counters that `/api/v1/status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AnalyticsReport {
    /// This process's name in the rollups it writes.
    pub node: String,
    /// Rows written to the store.
    pub written: u64,
    /// Rows whose write failed (they are tried again at the next flush).
    pub failed: u64,
    /// Rows given up after failing for an hour.
    pub lost: u64,
}

#[derive(Default)]
pub(crate) struct AnalyticsCounts {
    written: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
}

impl AnalyticsCounts {
    pub fn report(&self, node: &str) -> AnalyticsReport {
        AnalyticsReport {
            node: node.to_owned(),
            written: self.written.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

/// What sets a request apart for analytics: the minute it ended in, and its keys.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Combination {
    minute: i64,
    route: Option<Arc<str>>,
    service: Option<Arc<str>>,
    consumer: Option<Arc<str>>,
    team: Option<Arc<str>>,
    status: u16,
    error: Option<&'static str>,
    /// The AI provider and its model that answered.
    provider: Option<Arc<str>>,
    model: Option<Arc<str>>,
}

impl Combination {
    fn of(event: &AccessEvent, minute: i64) -> Combination {
        Combination {
            minute,
            route: event.route.clone(),
            service: event.service.clone(),
            consumer: event.consumer.clone(),
            team: event.team.clone(),
            status: event.status,
            error: event.error,
            provider: event.ai.as_ref().map(|ai| ai.provider.clone()),
            model: event.ai.as_ref().map(|ai| ai.model.clone()),
        }
    }

    /// Whether `event`, ended in `minute`, is of this combination: `Arc<str>`s compare their
    /// pointers first, so this is a few comparisons, with no hashing or cloning.
    fn holds(&self, event: &AccessEvent, minute: i64) -> bool {
        self.minute == minute
            && self.status == event.status
            && self.route == event.route
            && self.service == event.service
            && self.consumer == event.consumer
            && self.team == event.team
            && self.error == event.error
            && self.provider.as_ref() == event.ai.as_ref().map(|ai| &ai.provider)
            && self.model.as_ref() == event.ai.as_ref().map(|ai| &ai.model)
    }
}

/// A bucket's identity: interval, start, dimension, key.
type BucketKey = (Interval, i64, Dimension, Arc<str>);

#[derive(Default)]
struct Open {
    tally: Tally,
    /// Changed since it was last written.
    dirty: bool,
}

/// Tallies events and writes rollups; owned by the access-log writer thread.
pub(crate) struct Counter {
    node: String,
    sink: Box<dyn RollupSink>,
    flush_interval: Duration,
    last_flush: Instant,
    /// Counted since the last flush, by minute and combination of keys; `index` finds a
    /// combination's place, and `last` is where the last event went, which is where the next
    /// one goes too, more often than not.
    fresh: Vec<(Combination, Tally)>,
    index: FxHashMap<Combination, usize>,
    last: Option<usize>,
    open: BTreeMap<BucketKey, Open>,
    /// `now - GRACE` at the last flush: the buckets that had ended by then are closed (see
    /// `closed`).
    closed_at: Option<i64>,
    /// Keys made once: the empty key of `all`, status codes and error kinds.
    all: Arc<str>,
    statuses: FxHashMap<u16, Arc<str>>,
    errors: FxHashMap<&'static str, Arc<str>>,
    counts: Arc<AnalyticsCounts>,
}

/// Whether the bucket of `interval` starting at `bucket` had ended by `closed_at`. A late
/// request for a closed bucket goes to the bucket open now instead of reopening (and
/// overwriting) a written one.
fn closed(closed_at: Option<i64>, interval: Interval, bucket: i64) -> bool {
    closed_at.is_some_and(|at| bucket < interval.floor(at))
}

/// One AI call's usage as a tally.
fn ai_tally(ai: &AiUsage) -> AiTally {
    AiTally {
        calls: 1,
        input_tokens: ai.usage.prompt_tokens,
        output_tokens: ai.usage.completion_tokens,
        cached_read_tokens: ai.usage.cached_tokens,
        cache_write_tokens: ai.usage.cache_write_tokens,
        reasoning_tokens: ai.usage.reasoning_tokens,
        cost_nanos: ai.cost.map_or(0, AiTally::nanos),
        unpriced: u64::from(ai.cost.is_none()),
        estimated: u64::from(ai.estimated),
    }
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Counter {
    pub fn new(
        node: String,
        settings: &AnalyticsSettings,
        sink: Box<dyn RollupSink>,
        counts: Arc<AnalyticsCounts>,
    ) -> Counter {
        Counter {
            node,
            sink,
            flush_interval: settings.flush_interval,
            last_flush: Instant::now(),
            fresh: Vec::new(),
            index: FxHashMap::default(),
            last: None,
            open: BTreeMap::new(),
            closed_at: None,
            all: Arc::from(""),
            statuses: FxHashMap::default(),
            errors: FxHashMap::default(),
            counts,
        }
    }

    /// Counts one finished request.
    pub fn count(&mut self, event: &AccessEvent) {
        let minute = Interval::Minute.floor(unix_seconds(event.time + event.duration));
        let at = match self.last {
            Some(at) if self.fresh[at].0.holds(event, minute) => at,
            _ => {
                let combination = Combination::of(event, minute);
                match self.index.get(&combination) {
                    Some(&at) => at,
                    None => {
                        self.index.insert(combination.clone(), self.fresh.len());
                        self.fresh.push((combination, Tally::default()));
                        self.fresh.len() - 1
                    }
                }
            }
        };
        self.last = Some(at);
        let millis = event.duration.as_secs_f64() * 1_000.0;
        let tally = &mut self.fresh[at].1;
        tally.record(event.status, event.bytes_in, event.bytes_out, millis);
        if let Some(ai) = &event.ai {
            tally.ai.merge(&ai_tally(ai));
        }
    }

    /// The dimension keys a combination counts for.
    fn keys(&mut self, c: &Combination) -> Vec<(Dimension, Arc<str>)> {
        let mut keys = Vec::with_capacity(11);
        keys.push((Dimension::All, self.all.clone()));
        keys.extend(c.route.clone().map(|route| (Dimension::Route, route)));
        keys.extend(c.service.clone().map(|service| (Dimension::Service, service)));
        keys.extend(c.consumer.clone().map(|consumer| (Dimension::Consumer, consumer)));
        keys.extend(c.team.clone().map(|team| (Dimension::Team, team)));
        keys.extend(c.provider.clone().map(|provider| (Dimension::Provider, provider)));
        keys.extend(c.model.clone().map(|model| (Dimension::Model, model)));
        if let (Some(route), Some(consumer)) = (&c.route, &c.consumer) {
            keys.push((Dimension::RouteConsumer, portico_model::pair(route, consumer).into()));
            keys.push((Dimension::ConsumerRoute, portico_model::pair(consumer, route).into()));
        }
        let status = self.statuses.entry(c.status).or_insert_with(|| c.status.to_string().into());
        keys.push((Dimension::Status, status.clone()));
        if let Some(error) = c.error {
            let error = self.errors.entry(error).or_insert_with(|| error.into());
            keys.push((Dimension::Error, error.clone()));
        }
        keys
    }

    /// Flushes when the interval has passed (or `last`, at shutdown).
    pub fn tick(&mut self, last: bool) {
        if last || self.last_flush.elapsed() >= self.flush_interval {
            self.last_flush = Instant::now();
            self.flush(unix_seconds(SystemTime::now()));
        }
    }

    /// Folds what was counted into the open buckets, writes those that changed and forgets
    /// those that ended before `now` (seconds since the epoch).
    pub fn flush(&mut self, now: i64) {
        let fresh = std::mem::take(&mut self.fresh);
        self.index.clear();
        self.last = None;
        for (combination, tally) in &fresh {
            for (dimension, key) in self.keys(combination) {
                for interval in Interval::EVERY {
                    let mut bucket = interval.floor(combination.minute);
                    if closed(self.closed_at, interval, bucket) {
                        bucket = interval.floor(now);
                    }
                    let open = self.open.entry((interval, bucket, dimension, key.clone())).or_default();
                    open.tally.merge(tally);
                    open.dirty = true;
                }
            }
        }
        let rows: Vec<Rollup> = self
            .open
            .iter()
            .filter(|(_, open)| open.dirty)
            .map(|((interval, bucket, dimension, key), open)| Rollup {
                interval: *interval,
                bucket: *bucket,
                dimension: *dimension,
                key: key.to_string(),
                node: self.node.clone(),
                tally: open.tally.clone(),
            })
            .collect();
        if !rows.is_empty() {
            match self.sink.write(&rows) {
                Ok(()) => {
                    self.open.values_mut().for_each(|open| open.dirty = false);
                    self.counts.written.fetch_add(rows.len() as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(%error, rows = rows.len(), "cannot write analytics rollups; trying again at the next flush");
                    self.counts.failed.fetch_add(rows.len() as u64, Ordering::Relaxed);
                }
            }
        }
        let closed_at = Some(now - GRACE);
        self.closed_at = closed_at;
        let mut lost = 0;
        self.open.retain(|(interval, bucket, _, _), open| {
            let ended = closed(closed_at, *interval, *bucket);
            if ended && open.dirty && bucket + interval.seconds() + GIVE_UP < now {
                lost += 1;
                return false;
            }
            !ended || open.dirty
        });
        if lost > 0 {
            tracing::warn!(lost, "gave up analytics rollups the store did not take for an hour");
            self.counts.lost.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Keeps what was written, as the store would: one row per node, bucket and key.
    #[derive(Clone, Default)]
    struct Table(Arc<Mutex<Rows>>, Arc<Mutex<bool>>);

    type Rows = BTreeMap<(Interval, i64, Dimension, String), Tally>;

    impl RollupSink for Table {
        fn write(&mut self, rollups: &[Rollup]) -> io::Result<()> {
            if *self.1.lock().expect("lock") {
                return Err(io::Error::other("the store is down"));
            }
            let mut rows = self.0.lock().expect("lock");
            for r in rollups {
                rows.insert((r.interval, r.bucket, r.dimension, r.key.clone()), r.tally.clone());
            }
            Ok(())
        }
    }

    impl Table {
        fn requests(&self, interval: Interval, bucket: i64, dimension: Dimension, key: &str) -> u64 {
            let rows = self.0.lock().expect("lock");
            rows.get(&(interval, bucket, dimension, key.to_owned())).map_or(0, |t| t.requests)
        }
    }

    const HOUR: i64 = 1_800_000_000;

    fn event(ended: i64, route: &str, status: u16, error: Option<&'static str>) -> AccessEvent {
        AccessEvent {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(ended).expect("after 1970"))
                - Duration::from_millis(250),
            trace_id: 1,
            client_ip: [127, 0, 0, 1].into(),
            method: http::Method::GET,
            head: super::super::access_log::HeadText::new(b"r", None, "/x"),
            path_template: None,
            route: Some(route.into()),
            service: Some("shop".into()),
            target: None,
            consumer: None,
            team: None,
            status,
            bytes_in: 10,
            bytes_out: 100,
            duration: Duration::from_millis(250),
            upstream: None,
            gateway: Duration::ZERO,
            retries: 0,
            error,
            ai: None,
        }
    }

    fn counter(table: &Table) -> Counter {
        Counter::new("n1".into(), &AnalyticsSettings::default(), Box::new(table.clone()), Arc::default())
    }

    #[test]
    fn each_request_counts_once_per_interval_and_dimension() {
        let table = Table::default();
        let mut counter = counter(&table);
        counter.count(&event(HOUR + 10, "orders", 200, None));
        counter.count(&event(HOUR + 70, "orders", 504, Some("upstream_timeout")));
        counter.count(&event(HOUR + 75, "users", 200, None));
        counter.flush(HOUR + 80);

        assert_eq!(table.requests(Interval::Minute, HOUR, Dimension::All, ""), 1);
        assert_eq!(table.requests(Interval::Minute, HOUR + 60, Dimension::All, ""), 2);
        assert_eq!(table.requests(Interval::Hour, HOUR, Dimension::Route, "orders"), 2);
        assert_eq!(table.requests(Interval::Day, Interval::Day.floor(HOUR), Dimension::Service, "shop"), 3);
        assert_eq!(table.requests(Interval::Hour, HOUR, Dimension::Status, "504"), 1);
        assert_eq!(table.requests(Interval::Hour, HOUR, Dimension::Error, "upstream_timeout"), 1);
        let rows = table.0.lock().expect("lock");
        let latency = &rows[&(Interval::Hour, HOUR, Dimension::All, String::new())].latency;
        assert!((245.0..=255.0).contains(&latency.quantile(0.5).expect("values")), "durations are kept in ms");
    }

    #[test]
    fn events_in_any_order_are_counted_in_their_own_combination() {
        let table = Table::default();
        let mut counter = counter(&table);
        for (ended, route, status) in [
            (10, "a", 200),
            (11, "b", 200),
            (12, "a", 200),
            (13, "a", 200),
            (14, "a", 500),
            (70, "a", 200),
            (15, "b", 200),
        ] {
            counter.count(&event(HOUR + ended, route, status, None));
        }
        counter.flush(HOUR + 80);
        let requests = |start, dimension, key| table.requests(Interval::Minute, HOUR + start, dimension, key);
        assert_eq!((requests(0, Dimension::Route, "a"), requests(0, Dimension::Route, "b")), (4, 2));
        assert_eq!((requests(0, Dimension::Status, "200"), requests(0, Dimension::Status, "500")), (5, 1));
        assert_eq!((requests(60, Dimension::Route, "a"), requests(60, Dimension::All, "")), (1, 1), "the next minute");
    }

    #[test]
    fn open_buckets_are_rewritten_with_the_whole_tally_and_closed_ones_are_not_reopened() {
        let table = Table::default();
        let mut counter = counter(&table);
        counter.count(&event(HOUR + 10, "orders", 200, None));
        counter.flush(HOUR + 20);
        counter.count(&event(HOUR + 30, "orders", 200, None));
        counter.flush(HOUR + 40);
        assert_eq!(table.requests(Interval::Minute, HOUR, Dimension::All, ""), 2, "the row holds both");

        // The minute is closed two minutes later: a straggler from it goes to the minute
        // open now, and the hour (still open) counts it where it belongs.
        counter.flush(HOUR + 180);
        counter.count(&event(HOUR + 50, "orders", 200, None));
        counter.flush(HOUR + 185);
        assert_eq!(table.requests(Interval::Minute, HOUR, Dimension::All, ""), 2);
        assert_eq!(table.requests(Interval::Minute, HOUR + 180, Dimension::All, ""), 1);
        assert_eq!(table.requests(Interval::Hour, HOUR, Dimension::All, ""), 3);
    }

    #[test]
    fn a_failed_write_is_tried_again_with_everything_since() {
        let table = Table::default();
        let mut counter = counter(&table);
        *table.1.lock().expect("lock") = true;
        counter.count(&event(HOUR + 10, "orders", 200, None));
        counter.flush(HOUR + 20);
        // The minute ends while the store is down: its row is kept until written.
        counter.count(&event(HOUR + 100, "orders", 200, None));
        counter.flush(HOUR + 130);
        *table.1.lock().expect("lock") = false;
        counter.flush(HOUR + 140);
        assert_eq!(table.requests(Interval::Minute, HOUR, Dimension::All, ""), 1);
        assert_eq!(table.requests(Interval::Minute, HOUR + 60, Dimension::All, ""), 1);
        assert_eq!(table.requests(Interval::Hour, HOUR, Dimension::All, ""), 2);
        // 4 keys (all, route, service, status) at 3 intervals, then a new minute's 4 more.
        let report = counter.counts.report("n1");
        assert_eq!((report.failed, report.written), (12 + 16, 16));
    }
}
