//! Cluster-wide counting through Redis: one atomic script per request, the same
//! sliding-window arithmetic as `window.rs`, and Redis's own clock so that nodes agree.
//!
//! When Redis cannot be reached (no connection, an error, or no answer within
//! [`REDIS_TIMEOUT`]), the request is counted by the node's local counters instead and Redis is
//! left alone for [`RETRY_AFTER_FAILURE`], so that an outage costs no latency: each node then
//! enforces every limit on its own, which lets a cluster of N nodes through up to N times a
//! limit until Redis is back. The fallback is counted and reported in the admin API's status.

use super::window::{tightest, LimitSpec, LimitStatus, WindowState};
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest wait for Redis on the request path.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// How long Redis is not asked after a failure.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Counts one request for one key under every limit, atomically. Returns whether it was
/// admitted, Redis's time in milliseconds, then (window index, current, previous) per limit.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local states = {}
local admitted = true
local longest = 0
for i = 1, n do
  local requests = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  if window > longest then longest = window end
  local f = 'w' .. window
  local v = redis.call('HMGET', KEYS[1], f .. ':i', f .. ':c', f .. ':p')
  local index, current, previous = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
  local now_index = math.floor(now / window)
  if now_index == index + 1 then
    previous = current
  elseif now_index ~= index then
    previous = 0
  end
  if now_index ~= index then current = 0 end
  local elapsed = (now % window) / window
  if previous * (1 - elapsed) + current + 1 > requests then admitted = false end
  states[i] = { f, now_index, current, previous }
end
local out = { admitted and 1 or 0, now }
for i = 1, n do
  local s = states[i]
  if admitted then s[3] = s[3] + 1 end
  redis.call('HSET', KEYS[1], s[1] .. ':i', s[2], s[1] .. ':c', s[3], s[1] .. ':p', s[4])
  table.insert(out, s[2])
  table.insert(out, s[3])
  table.insert(out, s[4])
end
redis.call('PEXPIRE', KEYS[1], 2 * longest)
return out
"#;

/// The Redis connection shared by every worker, and what is known about its health.
pub struct RedisLimits {
    client: redis::Client,
    script: redis::Script,
    connection: ArcSwapOption<MultiplexedConnection>,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not asked.
    resting_until_ms: AtomicU64,
    reconnect: Notify,
    fallbacks: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What the admin API shows about cluster rate limiting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RedisReport {
    pub connected: bool,
    /// Requests counted locally because Redis could not be reached.
    pub fallbacks: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl RedisLimits {
    /// Prepares a connection to `url` (`redis://host:port/db`); it is made by
    /// [`RedisLimits::run`].
    pub fn new(url: &str) -> Result<Arc<RedisLimits>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("the Redis URL is not valid: {e}"))?;
        Ok(Arc::new(RedisLimits {
            client,
            script: redis::Script::new(SCRIPT),
            connection: ArcSwapOption::empty(),
            started: Instant::now(),
            resting_until_ms: AtomicU64::new(0),
            reconnect: Notify::new(),
            fallbacks: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }))
    }

    /// Keeps a connection open until `shutdown` resolves: connects, and reconnects (at most
    /// once a second) whenever a request found the connection broken.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if self.connection.load().is_none() {
                let connecting =
                    tokio::time::timeout(Duration::from_secs(2), self.client.get_multiplexed_async_connection());
                match connecting.await {
                    Ok(Ok(connection)) => {
                        tracing::info!("connected to Redis for cluster rate limits");
                        self.connection.store(Some(Arc::new(connection)));
                        self.resting_until_ms.store(0, Ordering::Relaxed);
                    }
                    Ok(Err(error)) => self.failed(error.to_string()),
                    Err(_) => self.failed("connecting timed out".into()),
                }
            }
            let wait = if self.connection.load().is_some() { Duration::MAX } else { RETRY_AFTER_FAILURE };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.reconnect.notified() => {}
                _ = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {}
            }
        }
    }

    pub fn report(&self) -> RedisReport {
        RedisReport {
            connected: self.connection.load().is_some()
                && self.resting_until_ms.load(Ordering::Relaxed) <= self.now_ms(),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn failed(&self, error: String) {
        let was_healthy =
            self.resting_until_ms.swap(self.now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64, Ordering::Relaxed)
                <= self.now_ms();
        if was_healthy {
            tracing::warn!(%error, "Redis is unreachable; rate limits count on each node alone until it is back");
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// Counts a request under `specs` for `key` in Redis; `None` when Redis could not be
    /// asked, and the caller must count locally.
    pub(super) async fn check(&self, key: &str, specs: &[LimitSpec]) -> Option<(bool, LimitStatus)> {
        let mut invocation = self.script.key(key);
        invocation.arg(specs.len());
        for spec in specs {
            invocation.arg(spec.requests).arg(spec.window_ms);
        }
        let values: Vec<u64> =
            self.ask(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await?;
        let parsed = parse(&values, specs);
        if parsed.is_none() {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        parsed
    }

    /// Runs a script; `None` when Redis could not be asked.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Option<T> {
        self.ask(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    /// Runs `pipeline` (atomically, when it is one); `None` when Redis could not be asked.
    pub(crate) async fn pipeline<T: redis::FromRedisValue>(&self, pipeline: &redis::Pipeline) -> Option<T> {
        self.ask(|mut connection| async move { pipeline.query_async(&mut connection).await }).await
    }

    /// Runs `command` on the connection within [`REDIS_TIMEOUT`]; `None` (counted as a
    /// fallback) when Redis is resting, unreachable, slow or answers with an error.
    async fn ask<T, F, Fut>(&self, command: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection.load_full();
        let usable = connection.is_some() && self.resting_until_ms.load(Ordering::Relaxed) <= self.now_ms();
        let answer = match connection.filter(|_| usable) {
            Some(connection) => match tokio::time::timeout(REDIS_TIMEOUT, command((*connection).clone())).await {
                Ok(Ok(answer)) => Some(answer),
                Ok(Err(error)) => {
                    if error.is_unrecoverable_error() || error.is_connection_dropped() {
                        self.connection.store(None);
                        self.reconnect.notify_one();
                    }
                    self.failed(error.to_string());
                    None
                }
                Err(_) => {
                    self.failed(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis()));
                    None
                }
            },
            None => None,
        };
        if answer.is_none() {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }
}

fn parse(values: &[u64], specs: &[LimitSpec]) -> Option<(bool, LimitStatus)> {
    let [admitted, now_ms, rest @ ..] = values else { return None };
    if rest.len() != specs.len() * 3 {
        return None;
    }
    let states: Vec<WindowState> =
        rest.chunks(3).map(|c| WindowState { index: c[0], current: c[1], previous: c[2] }).collect();
    Some((*admitted == 1, tightest(specs, &states, *now_ms)))
}
