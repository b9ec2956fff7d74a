//! Counters and histograms the request path updates with a few atomic additions, and their
//! exposition in the Prometheus text format.
//!
//! Every series is labelled by names from the configuration (route, service, target, path
//! template), never by anything a client sends, so the number of series is bounded by the
//! configuration. A route's counters are kept across reloads by name, like a target's health.

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds: 0.5 ms to 10 s.
const BOUNDS_MICROS: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        let micros = duration.as_micros().min(u64::MAX as u128) as u64;
        let bucket = BOUNDS_MICROS.iter().position(|bound| micros <= *bound).unwrap_or(BOUNDS_MICROS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and cumulative buckets, as Prometheus wants them.
    fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            total += bucket.load(Ordering::Relaxed);
            let bound = BOUNDS_MICROS.get(i).map_or(f64::INFINITY, |b| *b as f64 / 1e6);
            cumulative.push((bound, total));
        }
        (self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, total, cumulative)
    }
}

/// Responses counted by status class (1xx to 5xx).
#[derive(Default)]
pub struct StatusCounts([AtomicU64; 5]);

impl StatusCounts {
    pub fn count(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.0[class].fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().zip(self.0.iter().map(|c| c.load(Ordering::Relaxed)))
    }
}

/// What the requests of one route add up to.
#[derive(Default)]
pub struct RouteCounters {
    pub requests: StatusCounts,
    pub duration: Histogram,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// What one service's upstream exchanges add up to.
#[derive(Default)]
pub struct ServiceCounters {
    /// Response heads from the upstream by status class, after retries.
    pub responses: StatusCounts,
    /// Exchanges that got no response (refused, reset, timed out).
    pub failures: AtomicU64,
    /// Time from sending the request to the response head, per try.
    pub duration: Histogram,
    pub retries: AtomicU64,
}

/// Writes metric families in the Prometheus text format (version 0.0.4), which every
/// scraper reads and `promtool check metrics` checks.
pub(crate) struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Self {
        Exposition { text: String::with_capacity(16 * 1024) }
    }

    pub fn into_text(self) -> String {
        self.text
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], extra: Option<(&str, &str)>, value: impl Display) {
        self.text.push_str(name);
        let mut all = labels.iter().copied().chain(extra).peekable();
        if all.peek().is_some() {
            self.text.push('{');
            for (i, (label, value)) in all.enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A counter family (`name` ends in `_total`): one value per label set.
    pub fn counters<'l>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'static str, &'l str)>, u64)>,
    ) {
        self.header(name, help, "counter");
        for (labels, value) in series {
            self.sample(name, &labels, None, value);
        }
    }

    /// A gauge family: one value per label set.
    pub fn gauges<'l, V: Display>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'static str, &'l str)>, V)>,
    ) {
        self.header(name, help, "gauge");
        for (labels, value) in series {
            self.sample(name, &labels, None, value);
        }
    }

    /// A histogram family: one histogram per label set.
    pub fn histograms<'l, 'h>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'static str, &'l str)>, &'h Histogram)>,
    ) {
        self.header(name, help, "histogram");
        let (bucket, sum, count) = (format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count"));
        for (labels, histogram) in series {
            let (total_seconds, total, buckets) = histogram.read();
            for (bound, cumulative) in buckets {
                let le = if bound.is_infinite() { "+Inf".to_owned() } else { bound.to_string() };
                self.sample(&bucket, &labels, Some(("le", &le)), cumulative);
            }
            self.sample(&sum, &labels, None, total_seconds);
            self.sample(&count, &labels, None, total);
        }
    }
}

/// The status classes of `counts` as series, each labelled with `labels` and its class.
pub(crate) fn by_status<'l>(
    labels: &[(&'static str, &'l str)],
    counts: &StatusCounts,
) -> Vec<(Vec<(&'static str, &'l str)>, u64)> {
    counts
        .read()
        .filter(|(_, value)| *value > 0)
        .map(|(class, value)| {
            let mut all = labels.to_vec();
            all.push(("code", class));
            (all, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_into_cumulative_buckets() {
        let histogram = Histogram::default();
        for ms in [0, 1, 3, 3, 20_000] {
            histogram.observe(Duration::from_millis(ms));
        }
        let (sum, count, buckets) = histogram.read();
        assert_eq!(count, 5);
        assert!((sum - 20.007).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.0005, 1), "0 ms is in the first bucket");
        assert_eq!(buckets[1], (0.001, 2), "1 ms is at the bound of the second");
        assert_eq!(buckets[3], (0.005, 4));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 5)));
    }

    #[test]
    fn the_exposition_escapes_label_values_and_spells_out_buckets() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_millis(2));
        let mut out = Exposition::new();
        out.counters("x_total", "Things.", [(vec![("route", "a\"b\\c\nd")], 3)]);
        out.histograms("x_seconds", "Time.", [(vec![("route", "r")], &histogram)]);
        let text = out.into_text();
        assert!(text.starts_with("# HELP x_total Things.\n# TYPE x_total counter\n"), "{text}");
        assert!(text.contains("x_total{route=\"a\\\"b\\\\c\\nd\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{route=\"r\",le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{route=\"r\",le=\"0.0025\"} 1\n"), "{text}");
        assert!(
            text.contains("x_seconds_bucket{route=\"r\",le=\"+Inf\"} 1\nx_seconds_sum{route=\"r\"} 0.002\n"),
            "{text}"
        );
        assert!(text.ends_with("x_seconds_count{route=\"r\"} 1\n"), "{text}");
    }

    #[test]
    fn statuses_are_counted_by_class() {
        let counts = StatusCounts::default();
        for status in [200, 204, 404, 503, 101, 999] {
            counts.count(status);
        }
        let read: Vec<_> = counts.read().collect();
        assert_eq!(read, [("1xx", 1), ("2xx", 2), ("3xx", 0), ("4xx", 1), ("5xx", 2)]);
    }
}
