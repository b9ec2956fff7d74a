//! The access log's rows, written in batches by the gateway's access-log writer.

use crate::{Store, StoreError};

/// One request, as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessRecord {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub request_id: String,
    pub trace_id: String,
    pub client_ip: String,
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    pub path_template: Option<String>,
    pub route: Option<String>,
    pub service: Option<String>,
    pub target: Option<String>,
    pub consumer: Option<String>,
    pub status: i32,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub duration_us: i64,
    pub upstream_us: Option<i64>,
    pub gateway_us: i64,
    pub retries: i32,
    pub error: Option<String>,
    /// The team of the consumer.
    pub team: Option<String>,
    pub ai: Option<AiCallRecord>,
}

/// What an AI call used and cost (see the `access_events` migrations for the meanings).
#[derive(Debug, Clone, PartialEq)]
pub struct AiCallRecord {
    pub provider: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub estimated: bool,
    /// US dollars; `None` for a model without a price.
    pub cost_usd: Option<f64>,
}

const COLUMNS: &str = "at, request_id, trace_id, client_ip, method, host, path, path_template, route, service, \
                       target, consumer, status, bytes_in, bytes_out, duration_us, upstream_us, gateway_us, retries, error, \
                       team, ai_provider, ai_model, input_tokens, output_tokens, cached_read_tokens, \
                       cache_write_tokens, reasoning_tokens, usage_estimated, cost_usd";
const PER_ROW: usize = 30;

impl Store {
    /// Appends `records` in one transaction, several rows per statement.
    pub async fn insert_access_records(&self, records: &[AccessRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for chunk in records.chunks(self.rows_per_insert(PER_ROW)) {
            let sql =
                format!("INSERT INTO access_events ({COLUMNS}) VALUES {}", crate::store::values(chunk.len(), PER_ROW));
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(r.at)
                    .bind(r.request_id.clone())
                    .bind(r.trace_id.clone())
                    .bind(r.client_ip.clone())
                    .bind(r.method.clone())
                    .bind(r.host.clone())
                    .bind(r.path.clone())
                    .bind(r.path_template.clone())
                    .bind(r.route.clone())
                    .bind(r.service.clone())
                    .bind(r.target.clone())
                    .bind(r.consumer.clone())
                    .bind(r.status)
                    .bind(r.bytes_in)
                    .bind(r.bytes_out)
                    .bind(r.duration_us)
                    .bind(r.upstream_us)
                    .bind(r.gateway_us)
                    .bind(r.retries)
                    .bind(r.error.clone())
                    .bind(r.team.clone());
                let ai = r.ai.as_ref();
                query = query
                    .bind(ai.map(|a| a.provider.clone()))
                    .bind(ai.map(|a| a.model.clone()))
                    .bind(ai.map(|a| a.input_tokens))
                    .bind(ai.map(|a| a.output_tokens))
                    .bind(ai.map(|a| a.cached_read_tokens))
                    .bind(ai.map(|a| a.cache_write_tokens))
                    .bind(ai.map(|a| a.reasoning_tokens))
                    .bind(ai.map(|a| i32::from(a.estimated)))
                    .bind(ai.and_then(|a| a.cost_usd));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes the records from before `before` (milliseconds); returns how many.
    pub async fn prune_access_records(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM access_events WHERE at < $1").bind(before).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    /// The newest `limit` records at or after `since` (milliseconds), newest first.
    pub async fn access_records(&self, since: i64, limit: i64) -> Result<Vec<AccessRecord>, StoreError> {
        use sqlx::Row;
        let rows =
            sqlx::query(&format!("SELECT {COLUMNS} FROM access_events WHERE at >= $1 ORDER BY at DESC LIMIT $2"))
                .bind(since)
                .bind(limit)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| {
                let ai = match row.try_get::<Option<String>, _>("ai_provider")? {
                    Some(provider) => Some(AiCallRecord {
                        provider,
                        model: row.try_get::<Option<String>, _>("ai_model")?.unwrap_or_default(),
                        input_tokens: row.try_get::<Option<i64>, _>("input_tokens")?.unwrap_or(0),
                        output_tokens: row.try_get::<Option<i64>, _>("output_tokens")?.unwrap_or(0),
                        cached_read_tokens: row.try_get::<Option<i64>, _>("cached_read_tokens")?.unwrap_or(0),
                        cache_write_tokens: row.try_get::<Option<i64>, _>("cache_write_tokens")?.unwrap_or(0),
                        reasoning_tokens: row.try_get::<Option<i64>, _>("reasoning_tokens")?.unwrap_or(0),
                        estimated: row.try_get::<Option<i32>, _>("usage_estimated")?.unwrap_or(0) != 0,
                        cost_usd: row.try_get("cost_usd")?,
                    }),
                    None => None,
                };
                Ok(AccessRecord {
                    at: row.try_get("at")?,
                    request_id: row.try_get("request_id")?,
                    trace_id: row.try_get("trace_id")?,
                    client_ip: row.try_get("client_ip")?,
                    method: row.try_get("method")?,
                    host: row.try_get("host")?,
                    path: row.try_get("path")?,
                    path_template: row.try_get("path_template")?,
                    route: row.try_get("route")?,
                    service: row.try_get("service")?,
                    target: row.try_get("target")?,
                    consumer: row.try_get("consumer")?,
                    status: row.try_get("status")?,
                    bytes_in: row.try_get("bytes_in")?,
                    bytes_out: row.try_get("bytes_out")?,
                    duration_us: row.try_get("duration_us")?,
                    upstream_us: row.try_get("upstream_us")?,
                    gateway_us: row.try_get("gateway_us")?,
                    retries: row.try_get("retries")?,
                    error: row.try_get("error")?,
                    team: row.try_get("team")?,
                    ai,
                })
            })
            .collect()
    }
}
