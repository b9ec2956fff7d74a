//! The vocabulary of traffic analytics: what a rollup counts, over which interval and by
//! which dimension, and the latency sketch that lets rollups be merged (minutes of many
//! nodes into one series, hours into a week) without averaging percentiles.

use sketches_ddsketch::{Config, DDSketch};
use std::fmt;

/// What a rollup is kept by. `All` is the whole traffic (its key is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    All,
    Route,
    Service,
    Consumer,
    /// The response status code (`"503"`).
    Status,
    /// Why Portico answered with an error itself (`upstream_timeout`, `rate_limited`, ...).
    Error,
    /// A consumer's requests to one route: the key is `route/consumer` (see [`pair`]).
    RouteConsumer,
    /// The same requests keyed `consumer/route`, to find a consumer's routes by prefix.
    ConsumerRoute,
    /// The team of the consumer that called.
    Team,
    /// The AI provider that answered.
    Provider,
    /// The provider's model that answered.
    Model,
}

/// The key of a pair dimension: names cannot hold `/`, so the two never run together.
pub fn pair(first: &str, second: &str) -> String {
    format!("{first}/{second}")
}

impl Dimension {
    /// The dimensions that are asked for by name; the pairs are reached through filters.
    pub const EVERY: [Dimension; 9] = [
        Dimension::All,
        Dimension::Route,
        Dimension::Service,
        Dimension::Consumer,
        Dimension::Status,
        Dimension::Error,
        Dimension::Team,
        Dimension::Provider,
        Dimension::Model,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::All => "all",
            Dimension::Route => "route",
            Dimension::Service => "service",
            Dimension::Consumer => "consumer",
            Dimension::Status => "status",
            Dimension::Error => "error",
            Dimension::RouteConsumer => "route_consumer",
            Dimension::ConsumerRoute => "consumer_route",
            Dimension::Team => "team",
            Dimension::Provider => "provider",
            Dimension::Model => "model",
        }
    }

    pub fn parse(text: &str) -> Option<Dimension> {
        Dimension::EVERY.into_iter().find(|d| d.as_str() == text)
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The length of a rollup's bucket. Every request is counted once at each interval, so the
/// levels always agree with one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    pub const EVERY: [Interval; 3] = [Interval::Minute, Interval::Hour, Interval::Day];

    pub fn seconds(self) -> i64 {
        match self {
            Interval::Minute => 60,
            Interval::Hour => 3_600,
            Interval::Day => 86_400,
        }
    }

    /// The start of the bucket holding `time` (seconds since the Unix epoch; days in UTC).
    pub fn floor(self, time: i64) -> i64 {
        time - time.rem_euclid(self.seconds())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }

    pub fn parse(text: &str) -> Option<Interval> {
        Interval::EVERY.into_iter().find(|i| i.as_str() == text)
    }
}

/// Latencies in milliseconds, in a DDSketch with 1% relative accuracy: any percentile it
/// reports is within 1% of the true one, and two sketches merge into the sketch of both.
#[derive(Clone)]
pub struct LatencySketch(DDSketch);

impl Default for LatencySketch {
    fn default() -> LatencySketch {
        LatencySketch(DDSketch::new(Config::defaults()))
    }
}

impl fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencySketch").field("count", &self.0.count()).finish()
    }
}

impl LatencySketch {
    pub fn add(&mut self, millis: f64) {
        self.0.add(millis.max(0.0));
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        // Every sketch here is made with the same configuration, so merging cannot fail.
        let _ = self.0.merge(&other.0);
    }

    /// The `q` quantile (0 to 1), or `None` when the sketch is empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q.clamp(0.0, 1.0)).ok().flatten()
    }

    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// The sketch in DataDog's portable binary encoding (the one sketches-java reads).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_java_bytes()
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote; an empty slice is an empty sketch.
    pub fn from_bytes(bytes: &[u8]) -> Result<LatencySketch, String> {
        let mut sketch = LatencySketch::default();
        sketch.merge_bytes(bytes)?;
        Ok(sketch)
    }

    /// Merges in the sketch that `bytes` encodes.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        let sketch = DDSketch::from_java_bytes(bytes).map_err(|e| format!("unreadable latency sketch: {e}"))?;
        // Only sketches of the same accuracy and bounds merge.
        self.0.merge(&sketch).map_err(|e| format!("latency sketch of another accuracy: {e}"))
    }
}

/// What a rollup counts for the requests of one bucket.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub requests: u64,
    /// Responses with a 4xx status.
    pub client_errors: u64,
    /// Responses with a 5xx status.
    pub server_errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Time from the request head to the last response byte, in milliseconds.
    pub latency: LatencySketch,
    pub ai: AiTally,
}

/// What AI calls used, in a tally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AiTally {
    /// AI calls with usage, reported or estimated.
    pub calls: u64,
    /// Every input token, those read from or written to a prompt cache included.
    pub input_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    pub cached_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// The cost of the calls that had a price, in billionths of a US dollar (whole
    /// numbers add up exactly, across rows and nodes).
    pub cost_nanos: u64,
    /// Calls whose model had no price: their cost is unknown, not zero.
    pub unpriced: u64,
    /// Calls whose usage Portico estimated, the provider having reported none.
    pub estimated: u64,
}

impl AiTally {
    /// `dollars` in billionths.
    pub fn nanos(dollars: f64) -> u64 {
        (dollars * 1e9).round().max(0.0) as u64
    }

    pub fn merge(&mut self, other: &AiTally) {
        self.calls += other.calls;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_read_tokens += other.cached_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cost_nanos += other.cost_nanos;
        self.unpriced += other.unpriced;
        self.estimated += other.estimated;
    }
}

impl Tally {
    pub fn record(&mut self, status: u16, bytes_in: u64, bytes_out: u64, millis: f64) {
        self.requests += 1;
        match status {
            400..=499 => self.client_errors += 1,
            500..=599 => self.server_errors += 1,
            _ => {}
        }
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.latency.add(millis);
    }

    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.latency.merge(&other.latency);
        self.ai.merge(&other.ai);
    }
}

/// One row of analytics: the tally of one node's requests in one bucket, for one key of
/// a dimension. Queries merge the rows of every node.
#[derive(Debug, Clone)]
pub struct Rollup {
    pub interval: Interval,
    /// The bucket's start, in seconds since the Unix epoch.
    pub bucket: i64,
    pub dimension: Dimension,
    /// The route, service or consumer name, the status code or the error kind; empty for
    /// [`Dimension::All`].
    pub key: String,
    /// The Portico process that counted these requests.
    pub node: String,
    pub tally: Tally,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_at_whole_minutes_hours_and_utc_days() {
        let t = 1_764_180_000 + 3_725; // 2025-11-26T18:02:05Z
        assert_eq!(Interval::Minute.floor(t), t - 5);
        assert_eq!(Interval::Hour.floor(t), t - 125);
        assert_eq!(Interval::Day.floor(t) % 86_400, 0);
        assert!(t - Interval::Day.floor(t) < 86_400);
    }

    #[test]
    fn merged_sketches_give_the_percentiles_of_all_their_values() {
        // Two nodes: one saw 1..=900 ms, the other 901..=1000 ms.
        let (mut fast, mut slow) = (Tally::default(), Tally::default());
        for ms in 1..=900 {
            fast.record(200, 10, 100, f64::from(ms));
        }
        for ms in 901..=1000 {
            slow.record(503, 10, 100, f64::from(ms));
        }
        // Through the stored encoding, as queries see them.
        let mut all = Tally::default();
        for tally in [&fast, &slow] {
            let mut read = tally.clone();
            read.latency = LatencySketch::from_bytes(&tally.latency.to_bytes()).expect("a sketch");
            all.merge(&read);
        }
        assert_eq!((all.requests, all.server_errors, all.bytes_out), (1000, 100, 100_000));
        for (q, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let estimate = all.latency.quantile(q).expect("values");
            assert!((estimate - exact).abs() <= exact * 0.02, "p{q}: {estimate} vs {exact}");
        }
    }

    #[test]
    fn an_empty_sketch_has_no_percentiles_and_garbage_is_refused() {
        assert_eq!(LatencySketch::default().quantile(0.5), None);
        assert_eq!(LatencySketch::from_bytes(&[]).expect("empty").count(), 0);
        assert!(LatencySketch::from_bytes(&[0xff, 0x01]).is_err());
    }
}
