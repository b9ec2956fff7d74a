//! Traffic analytics: the rollups each node writes, and the queries the admin API answers
//! from them. Queries read rollups only, never the access log's rows, so a week of traffic
//! is a few hundred rows whatever the number of requests.

use crate::{Store, StoreError};
use portico_model::{AiTally, Dimension, Interval, LatencySketch, Rollup, Tally};
use sqlx::any::AnyRow;
use sqlx::Row;

/// What the top keys of a dimension are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBy {
    Requests,
    /// 5xx responses.
    Errors,
    /// 4xx responses.
    ClientErrors,
    /// Bytes received and sent.
    Bytes,
    /// The 95th percentile of latency.
    Latency,
    /// AI tokens, input and output.
    Tokens,
    /// The cost of AI calls.
    Cost,
}

impl TopBy {
    pub const EVERY: [(&'static str, TopBy); 7] = [
        ("requests", TopBy::Requests),
        ("errors", TopBy::Errors),
        ("client_errors", TopBy::ClientErrors),
        ("bytes", TopBy::Bytes),
        ("latency", TopBy::Latency),
        ("tokens", TopBy::Tokens),
        ("cost", TopBy::Cost),
    ];

    /// The SQL ordering of the summed columns; `None` for latency, ranked after merging.
    fn order(self) -> Option<&'static str> {
        match self {
            TopBy::Requests => Some("requests DESC"),
            TopBy::Errors => Some("server_errors DESC"),
            TopBy::ClientErrors => Some("client_errors DESC"),
            TopBy::Bytes => Some("bytes_in + bytes_out DESC"),
            TopBy::Tokens => Some("SUM(input_tokens) + SUM(output_tokens) DESC"),
            TopBy::Cost => Some("cost_nanos DESC"),
            TopBy::Latency => None,
        }
    }
}

const COLUMNS: &str = "interval_secs, bucket, dimension, key, node, requests, client_errors, server_errors, \
                       bytes_in, bytes_out, latency, ai_calls, input_tokens, output_tokens, cached_read_tokens, \
                       cache_write_tokens, reasoning_tokens, cost_nanos, unpriced_calls, estimated_calls";
const PER_ROW: usize = 20;
/// The counted columns, which a query sums.
const COUNTS: [&str; 14] = [
    "requests",
    "client_errors",
    "server_errors",
    "bytes_in",
    "bytes_out",
    "ai_calls",
    "input_tokens",
    "output_tokens",
    "cached_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "unpriced_calls",
    "estimated_calls",
];

/// The sums a query adds up, cast back to BIGINT (PostgreSQL sums BIGINT as NUMERIC).
fn sums() -> String {
    COUNTS.map(|c| format!("CAST(SUM({c}) AS BIGINT) AS {c}")).join(", ")
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(row: &AnyRow, column: &str) -> Result<u64, StoreError> {
    let n: Option<i64> = row.try_get(column)?;
    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
}

/// The counts of a row (summed or not), with an empty sketch.
fn counts(row: &AnyRow) -> Result<Tally, StoreError> {
    Ok(Tally {
        requests: unsigned(row, "requests")?,
        client_errors: unsigned(row, "client_errors")?,
        server_errors: unsigned(row, "server_errors")?,
        bytes_in: unsigned(row, "bytes_in")?,
        bytes_out: unsigned(row, "bytes_out")?,
        latency: LatencySketch::default(),
        ai: AiTally {
            calls: unsigned(row, "ai_calls")?,
            input_tokens: unsigned(row, "input_tokens")?,
            output_tokens: unsigned(row, "output_tokens")?,
            cached_read_tokens: unsigned(row, "cached_read_tokens")?,
            cache_write_tokens: unsigned(row, "cache_write_tokens")?,
            reasoning_tokens: unsigned(row, "reasoning_tokens")?,
            cost_nanos: unsigned(row, "cost_nanos")?,
            unpriced: unsigned(row, "unpriced_calls")?,
            estimated: unsigned(row, "estimated_calls")?,
        },
    })
}

/// Adds a row's latency sketch to `tally`.
fn add_sketch(tally: &mut Tally, row: &AnyRow) -> Result<(), StoreError> {
    let bytes: Vec<u8> = row.try_get("latency")?;
    tally.latency.merge_bytes(&bytes).map_err(StoreError::Corrupt)
}

/// Adds a whole row to `tally`.
fn add_row(tally: &mut Tally, row: &AnyRow) -> Result<(), StoreError> {
    tally.merge(&counts(row)?);
    add_sketch(tally, row)
}

/// The totals of rows that come sorted by `group`, one per group.
fn sum_sorted<K: PartialEq>(
    rows: &[AnyRow],
    group: impl Fn(&AnyRow) -> Result<K, sqlx::Error>,
) -> Result<Vec<(K, Tally)>, StoreError> {
    let mut sums: Vec<(K, Tally)> = Vec::new();
    for row in rows {
        let key = group(row)?;
        if sums.last().is_none_or(|(last, _)| *last != key) {
            sums.push((key, Tally::default()));
        }
        if let Some((_, tally)) = sums.last_mut() {
            add_row(tally, row)?;
        }
    }
    Ok(sums)
}

/// The rollups that count the requests of `[from, to)` exactly once, reading the fewest rows:
/// buckets of `interval` at the edges, and whole hours or days wherever they fit inside.
/// (Every request is counted at every interval, so the levels can be mixed.)
fn cover(interval: Interval, from: i64, to: i64) -> Vec<(Interval, i64, i64)> {
    let coarser = match interval {
        Interval::Minute => Interval::Hour,
        Interval::Hour => Interval::Day,
        Interval::Day => return vec![(interval, from, to)],
    };
    let start = coarser.floor(from + coarser.seconds() - 1);
    let end = coarser.floor(to);
    if start >= end {
        return vec![(interval, from, to)];
    }
    let mut segments = Vec::new();
    if from < start {
        segments.push((interval, from, start));
    }
    segments.extend(cover(coarser, start, end));
    if end < to {
        segments.push((interval, end, to));
    }
    segments
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// How a rollup's dimension and key are stored. A pair's first name goes into the
/// dimension column (`route_consumer:orders`, key `shop`), so that a route's consumers, or
/// a consumer's routes, are one exact dimension value that the primary key finds.
fn stored(dimension: Dimension, key: &str) -> (String, &str) {
    match (dimension, key.split_once('/')) {
        (Dimension::RouteConsumer | Dimension::ConsumerRoute, Some((first, second))) => {
            (format!("{}:{first}", dimension.as_str()), second)
        }
        _ => (dimension.as_str().to_owned(), key),
    }
}

/// The rows of a top list: a stored dimension and the [`cover`] of a range, as SQL with its
/// parameters `$1` to `$(next - 1)`.
struct Filter {
    sql: String,
    dimension: String,
    segments: Vec<(Interval, i64, i64)>,
    next: usize,
}

impl Filter {
    fn new(dimension: String, segments: Vec<(Interval, i64, i64)>) -> Filter {
        let parts: Vec<String> = (0..segments.len())
            .map(|i| {
                let n = 2 + i * 3;
                format!("(interval_secs = ${n} AND bucket >= ${} AND bucket < ${})", n + 1, n + 2)
            })
            .collect();
        let sql = format!("dimension = $1 AND ({})", parts.join(" OR "));
        let next = 2 + segments.len() * 3;
        Filter { sql, dimension, segments, next }
    }

    fn bind<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        let mut query = query.bind(self.dimension.as_str());
        for (interval, from, to) in &self.segments {
            query = query.bind(interval.seconds()).bind(*from).bind(*to);
        }
        query
    }
}

impl Store {
    /// Writes `rollups`, replacing the rows of the same node, bucket and key: a node
    /// rewrites the buckets it is still counting.
    pub async fn write_rollups(&self, rollups: &[Rollup]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for chunk in rollups.chunks(self.rows_per_insert(PER_ROW)) {
            let sql = format!(
                "INSERT INTO traffic_rollups ({COLUMNS}) VALUES {} \
                 ON CONFLICT (interval_secs, dimension, bucket, key, node) DO UPDATE SET {}, \
                 latency = excluded.latency",
                crate::store::values(chunk.len(), PER_ROW),
                COUNTS.map(|c| format!("{c} = excluded.{c}")).join(", ")
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                let (dimension, key) = stored(r.dimension, &r.key);
                query = query
                    .bind(r.interval.seconds())
                    .bind(r.bucket)
                    .bind(dimension)
                    .bind(key.to_owned())
                    .bind(r.node.clone())
                    .bind(signed(r.tally.requests))
                    .bind(signed(r.tally.client_errors))
                    .bind(signed(r.tally.server_errors))
                    .bind(signed(r.tally.bytes_in))
                    .bind(signed(r.tally.bytes_out))
                    .bind(r.tally.latency.to_bytes());
                let ai = &r.tally.ai;
                for count in [
                    ai.calls,
                    ai.input_tokens,
                    ai.output_tokens,
                    ai.cached_read_tokens,
                    ai.cache_write_tokens,
                    ai.reasoning_tokens,
                    ai.cost_nanos,
                    ai.unpriced,
                    ai.estimated,
                ] {
                    query = query.bind(signed(count));
                }
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The traffic of `key` in `dimension` (`""` for [`Dimension::All`]) per bucket of
    /// `interval` from `from` (inclusive) to `to` (exclusive), in seconds since the epoch;
    /// buckets without traffic are left out.
    pub async fn traffic_series(
        &self,
        interval: Interval,
        dimension: Dimension,
        key: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Tally)>, StoreError> {
        let (dimension, key) = stored(dimension, key);
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM traffic_rollups WHERE interval_secs = $1 AND dimension = $2 \
             AND bucket >= $3 AND bucket < $4 AND key = $5 ORDER BY bucket"
        ))
        .bind(interval.seconds())
        .bind(dimension)
        .bind(interval.floor(from))
        .bind(to)
        .bind(key)
        .fetch_all(self.pool())
        .await?;
        // Rows come sorted by bucket; those of one bucket (one per node) are merged.
        sum_sorted(&rows, |row| row.try_get::<i64, _>("bucket"))
    }

    /// The `limit` keys of `dimension` with the most of `by` between `from` and `to` (at the
    /// precision of `interval`), with their totals; ties go to the first key in
    /// alphabetical order. In a pair dimension, `first` names the route (or consumer)
    /// whose consumers (or routes) are ranked.
    #[allow(clippy::too_many_arguments)]
    pub async fn traffic_top(
        &self,
        interval: Interval,
        dimension: Dimension,
        first: &str,
        from: i64,
        to: i64,
        by: TopBy,
        limit: usize,
    ) -> Result<Vec<(String, Tally)>, StoreError> {
        let (dimension, _) = stored(dimension, &portico_model::pair(first, ""));
        let filter = Filter::new(dimension, cover(interval, interval.floor(from), to));
        let Some(order) = by.order() else {
            // Ranking by a percentile needs every key's merged sketch.
            let sql = format!("SELECT {COLUMNS} FROM traffic_rollups WHERE {} ORDER BY key", filter.sql);
            let rows = filter.bind(sqlx::query(&sql)).fetch_all(self.pool()).await?;
            let mut all = sum_sorted(&rows, |row| row.try_get::<String, _>("key"))?;
            let p95 = |tally: &Tally| tally.latency.quantile(0.95).unwrap_or(0.0);
            all.sort_by(|a, b| p95(&b.1).total_cmp(&p95(&a.1)).then_with(|| a.0.cmp(&b.0)));
            all.truncate(limit);
            return Ok(all);
        };
        // The counts are summed by the database; only the winners' sketches are read.
        let limit_at = filter.next;
        let sql = format!(
            "SELECT key, {} FROM traffic_rollups WHERE {} GROUP BY key ORDER BY {order}, key LIMIT ${limit_at}",
            sums(),
            filter.sql
        );
        let rows = filter
            .bind(sqlx::query(&sql))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await?;
        let mut top = Vec::with_capacity(rows.len());
        for row in &rows {
            top.push((row.try_get::<String, _>("key")?, counts(row)?));
        }
        if top.is_empty() {
            return Ok(top);
        }
        let marks: Vec<String> = (0..top.len()).map(|i| format!("${}", limit_at + i)).collect();
        let sql =
            format!("SELECT key, latency FROM traffic_rollups WHERE {} AND key IN ({})", filter.sql, marks.join(", "));
        let mut query = filter.bind(sqlx::query(&sql));
        for (key, _) in &top {
            query = query.bind(key.clone());
        }
        for row in query.fetch_all(self.pool()).await? {
            let key: String = row.try_get("key")?;
            if let Some((_, tally)) = top.iter_mut().find(|(k, _)| *k == key) {
                add_sketch(tally, &row)?;
            }
        }
        Ok(top)
    }

    /// Removes the rollups of `interval` whose bucket started before `before` (seconds);
    /// returns how many.
    pub async fn prune_rollups(&self, interval: Interval, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM traffic_rollups WHERE interval_secs = $1 AND bucket < $2")
            .bind(interval.seconds())
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn a_range_is_covered_by_the_coarsest_whole_buckets_that_fit() {
        // 22:00 on day 0 to 02:30 on day 3, by hours: two hours, two whole days, two hours
        // and the open one.
        let (from, to) = (22 * 3_600, 3 * DAY + 2 * 3_600 + 1_800);
        assert_eq!(
            cover(Interval::Hour, from, to),
            [(Interval::Hour, from, DAY), (Interval::Day, DAY, 3 * DAY), (Interval::Hour, 3 * DAY, to)]
        );
        // By minutes within one hour: nothing coarser fits.
        assert_eq!(cover(Interval::Minute, 600, 1_200), [(Interval::Minute, 600, 1_200)]);
        // Whole days from a day's start.
        assert_eq!(cover(Interval::Hour, 0, 2 * DAY), [(Interval::Day, 0, 2 * DAY)]);
        // Minutes, then hours, then days, then hours, then minutes.
        let (from, to) = (DAY - 3_600 - 120, 2 * DAY + 3_600 + 60);
        assert_eq!(
            cover(Interval::Minute, from, to),
            [
                (Interval::Minute, from, DAY - 3_600),
                (Interval::Hour, DAY - 3_600, DAY),
                (Interval::Day, DAY, 2 * DAY),
                (Interval::Hour, 2 * DAY, 2 * DAY + 3_600),
                (Interval::Minute, 2 * DAY + 3_600, to),
            ]
        );
    }
}
