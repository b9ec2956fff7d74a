//! Traffic in the store: the access log's `store` sink (rows of `access_events`), the
//! analytics rollups (rows of `traffic_rollups`), and the removal of both past their
//! retention.

use portico_gateway::{AccessEvent, EventSink, RollupSink};
use portico_model::{Interval, Rollup};
use portico_store::{AccessRecord, AiCallRecord, Store};
use std::io;
use std::time::{Duration, SystemTime};

/// Writes to the store from the access log's writer thread, on the control runtime.
pub struct StoreSink {
    store: Store,
    runtime: tokio::runtime::Handle,
}

impl StoreSink {
    pub fn new(store: Store, runtime: tokio::runtime::Handle) -> StoreSink {
        StoreSink { store, runtime }
    }
}

impl EventSink for StoreSink {
    fn write(&mut self, events: &[Box<AccessEvent>]) -> io::Result<()> {
        let records: Vec<AccessRecord> = events.iter().map(|event| record(event)).collect();
        self.runtime.block_on(self.store.insert_access_records(&records)).map_err(io::Error::other)
    }
}

impl RollupSink for StoreSink {
    fn write(&mut self, rollups: &[Rollup]) -> io::Result<()> {
        self.runtime.block_on(self.store.write_rollups(rollups)).map_err(io::Error::other)
    }
}

/// How long traffic rows are kept; `None` where Portico does not write them.
#[derive(Debug, Clone)]
pub struct Retention {
    pub access_log: Option<Duration>,
    pub rollups: Option<[(Interval, Duration); 3]>,
}

/// How often rows past the retention period are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

fn before(retention: Duration) -> i64 {
    portico_store::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)
}

/// Removes access-log rows and rollups past their retention, at start and every ten
/// minutes, until `shutdown` turns true.
pub async fn prune(store: Store, retention: Retention, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Some(keep) = retention.access_log {
            match store.prune_access_records(before(keep)).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed access-log rows past their retention"),
                Err(error) => tracing::warn!(%error, "cannot remove old access-log rows"),
            }
        }
        for (interval, keep) in retention.rollups.iter().flatten() {
            match store.prune_rollups(*interval, before(*keep) / 1_000).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, interval = interval.as_str(), "removed old analytics rollups"),
                Err(error) => tracing::warn!(%error, "cannot remove old analytics rollups"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn record(event: &AccessEvent) -> AccessRecord {
    let at = event.time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    AccessRecord {
        at: i64::try_from(at).unwrap_or(i64::MAX),
        request_id: text(event.head.request_id()),
        trace_id: format!("{:032x}", event.trace_id),
        client_ip: event.client_ip.to_string(),
        method: event.method.to_string(),
        host: event.head.host().map(text),
        path: text(event.head.path()),
        path_template: event.path_template.as_deref().map(str::to_owned),
        route: event.route.as_deref().map(str::to_owned),
        service: event.service.as_deref().map(str::to_owned),
        target: event.target.as_ref().map(|t| t.as_str().to_owned()),
        consumer: event.consumer.as_deref().map(str::to_owned),
        status: i32::from(event.status),
        bytes_in: i64::try_from(event.bytes_in).unwrap_or(i64::MAX),
        bytes_out: i64::try_from(event.bytes_out).unwrap_or(i64::MAX),
        duration_us: micros(event.duration),
        upstream_us: event.upstream.map(micros),
        gateway_us: micros(event.gateway),
        retries: i32::try_from(event.retries).unwrap_or(i32::MAX),
        error: event.error.map(str::to_owned),
        team: event.team.as_deref().map(str::to_owned),
        ai: event.ai.as_deref().map(|ai| {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            AiCallRecord {
                provider: ai.provider.to_string(),
                model: ai.model.to_string(),
                input_tokens: count(ai.usage.prompt_tokens),
                output_tokens: count(ai.usage.completion_tokens),
                cached_read_tokens: count(ai.usage.cached_tokens),
                cache_write_tokens: count(ai.usage.cache_write_tokens),
                reasoning_tokens: count(ai.usage.reasoning_tokens),
                estimated: ai.estimated,
                cost_usd: ai.cost,
            }
        }),
    }
}
