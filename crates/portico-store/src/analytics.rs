//! Traffic analytics: the rollups each node writes, and the queries the admin API answers
//! from them. Queries read rollups only, never the access log's rows, so a week of traffic
//! is a few hundred rows whatever the number of requests.

use crate::{Store, StoreError};
use portico_model::{Dimension, Interval, LatencySketch, Rollup, Tally};
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
}

impl TopBy {
    pub const EVERY: [(&'static str, TopBy); 5] = [
        ("requests", TopBy::Requests),
        ("errors", TopBy::Errors),
        ("client_errors", TopBy::ClientErrors),
        ("bytes", TopBy::Bytes),
        ("latency", TopBy::Latency),
    ];

    pub fn parse(text: &str) -> Option<TopBy> {
        TopBy::EVERY.iter().find(|(name, _)| *name == text).map(|(_, by)| *by)
    }

    /// The SQL ordering of the summed columns; `None` for latency, ranked after merging.
    fn order(self) -> Option<&'static str> {
        match self {
            TopBy::Requests => Some("requests DESC"),
            TopBy::Errors => Some("server_errors DESC"),
            TopBy::ClientErrors => Some("client_errors DESC"),
            TopBy::Bytes => Some("bytes_in + bytes_out DESC"),
            TopBy::Latency => None,
        }
    }
}

const COLUMNS: &str =
    "interval_secs, bucket, dimension, key, node, requests, client_errors, server_errors, bytes_in, bytes_out, latency";
const PER_ROW: usize = 11;
const ROWS_PER_INSERT: usize = 200;
/// The sums a query adds up, cast back to BIGINT (PostgreSQL sums BIGINT as NUMERIC).
const SUMS: &str = "CAST(SUM(requests) AS BIGINT) AS requests, CAST(SUM(client_errors) AS BIGINT) AS client_errors, \
                    CAST(SUM(server_errors) AS BIGINT) AS server_errors, CAST(SUM(bytes_in) AS BIGINT) AS bytes_in, \
                    CAST(SUM(bytes_out) AS BIGINT) AS bytes_out";

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
    })
}

fn sketch(row: &AnyRow) -> Result<LatencySketch, StoreError> {
    let bytes: Vec<u8> = row.try_get("latency")?;
    LatencySketch::from_bytes(&bytes).map_err(StoreError::Corrupt)
}

fn tally(row: &AnyRow) -> Result<Tally, StoreError> {
    Ok(Tally { latency: sketch(row)?, ..counts(row)? })
}

impl Store {
    /// Writes `rollups`, replacing the rows of the same node, bucket and key: a node
    /// rewrites the buckets it is still counting.
    pub async fn write_rollups(&self, rollups: &[Rollup]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for chunk in rollups.chunks(ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let marks: Vec<String> = (1..=PER_ROW).map(|i| format!("${}", row * PER_ROW + i)).collect();
                    format!("({})", marks.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO traffic_rollups ({COLUMNS}) VALUES {} \
                 ON CONFLICT (interval_secs, dimension, bucket, key, node) DO UPDATE SET \
                 requests = excluded.requests, client_errors = excluded.client_errors, \
                 server_errors = excluded.server_errors, bytes_in = excluded.bytes_in, \
                 bytes_out = excluded.bytes_out, latency = excluded.latency",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(r.interval.seconds())
                    .bind(r.bucket)
                    .bind(r.dimension.as_str())
                    .bind(r.key.clone())
                    .bind(r.node.clone())
                    .bind(signed(r.tally.requests))
                    .bind(signed(r.tally.client_errors))
                    .bind(signed(r.tally.server_errors))
                    .bind(signed(r.tally.bytes_in))
                    .bind(signed(r.tally.bytes_out))
                    .bind(r.tally.latency.to_bytes());
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
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM traffic_rollups WHERE interval_secs = $1 AND dimension = $2 \
             AND bucket >= $3 AND bucket < $4 AND key = $5 ORDER BY bucket"
        ))
        .bind(interval.seconds())
        .bind(dimension.as_str())
        .bind(interval.floor(from))
        .bind(to)
        .bind(key)
        .fetch_all(self.pool())
        .await?;
        // Rows come sorted by bucket; those of one bucket (one per node) are merged.
        let mut series: Vec<(i64, Tally)> = Vec::new();
        for row in &rows {
            let bucket: i64 = row.try_get("bucket")?;
            let tally = tally(row)?;
            match series.last_mut() {
                Some((last, sum)) if *last == bucket => sum.merge(&tally),
                _ => series.push((bucket, tally)),
            }
        }
        Ok(series)
    }

    /// The `limit` keys of `dimension` with the most of `by` between `from` and `to`, with
    /// their totals; ties go to the first key in alphabetical order.
    pub async fn traffic_top(
        &self,
        interval: Interval,
        dimension: Dimension,
        from: i64,
        to: i64,
        by: TopBy,
        limit: usize,
    ) -> Result<Vec<(String, Tally)>, StoreError> {
        let from = interval.floor(from);
        let Some(order) = by.order() else {
            return self.top_by_latency(interval, dimension, from, to, limit).await;
        };
        // The counts are summed by the database; only the winners' sketches are read.
        let rows = sqlx::query(&format!(
            "SELECT key, {SUMS} FROM traffic_rollups WHERE interval_secs = $1 AND dimension = $2 \
             AND bucket >= $3 AND bucket < $4 GROUP BY key ORDER BY {order}, key LIMIT $5"
        ))
        .bind(interval.seconds())
        .bind(dimension.as_str())
        .bind(from)
        .bind(to)
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
        let marks: Vec<String> = (0..top.len()).map(|i| format!("${}", i + 5)).collect();
        let sql = format!(
            "SELECT key, latency FROM traffic_rollups WHERE interval_secs = $1 AND dimension = $2 \
             AND bucket >= $3 AND bucket < $4 AND key IN ({})",
            marks.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(interval.seconds()).bind(dimension.as_str()).bind(from).bind(to);
        for (key, _) in &top {
            query = query.bind(key.clone());
        }
        for row in query.fetch_all(self.pool()).await? {
            let key: String = row.try_get("key")?;
            if let Some((_, tally)) = top.iter_mut().find(|(k, _)| *k == key) {
                tally.latency.merge(&sketch(&row)?);
            }
        }
        Ok(top)
    }

    /// Ranking by a percentile needs every key's merged sketch.
    async fn top_by_latency(
        &self,
        interval: Interval,
        dimension: Dimension,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<(String, Tally)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM traffic_rollups WHERE interval_secs = $1 AND dimension = $2 \
             AND bucket >= $3 AND bucket < $4 ORDER BY key"
        ))
        .bind(interval.seconds())
        .bind(dimension.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        let mut all: Vec<(String, Tally)> = Vec::new();
        for row in &rows {
            let key: String = row.try_get("key")?;
            let tally = tally(row)?;
            match all.last_mut() {
                Some((last, sum)) if *last == key => sum.merge(&tally),
                _ => all.push((key, tally)),
            }
        }
        let p95 = |tally: &Tally| tally.latency.quantile(0.95).unwrap_or(0.0);
        all.sort_by(|a, b| p95(&b.1).total_cmp(&p95(&a.1)).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        Ok(all)
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
