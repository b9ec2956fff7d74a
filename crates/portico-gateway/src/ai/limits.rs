//! Token and request rates per minute on AI calls, each consumer's or each model's.
//!
//! Before a call its tokens are reserved from an estimate (a quarter of the request's bytes,
//! plus the `max_tokens` it asks for), and it is refused when the reservation does not fit;
//! when the call ends the reservation is settled with the tokens it really used (and
//! released when it failed before using any). Rates are sliding windows of a minute, counted
//! as the rate limits of ordinary routes are (the current minute plus the fading part of the
//! previous one); with `cluster`, the same arithmetic runs in one Redis script per call, and
//! a node that cannot reach Redis counts on its own.

use super::meter::Pending;
use crate::access::RedisLimits;
use portico_ai::{AiError, ErrorKind};
use portico_model::{AiLimit, AiLimitBy};
use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const WINDOW_MS: u64 = 60_000;

static RESERVE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESERVE));
static SETTLE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SETTLE));

/// Reserves `ARGV[2]` tokens and one request under limits `ARGV[1]` (tokens, 0 for none)
/// and `ARGV[3]` (requests, 0 for none) in the minute window of Redis's clock. Returns
/// whether they fit, the window's index, the tokens and requests used before, and the
/// milliseconds into the window.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = 60000
local tlimit, amount, rlimit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'i', 'tc', 'tp', 'rc', 'rp')
local index = tonumber(v[1]) or 0
local tc, tp, rc, rp = tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0, tonumber(v[5]) or 0
local now_index = math.floor(now / window)
if now_index == index + 1 then tp = tc; rp = rc elseif now_index ~= index then tp = 0; rp = 0 end
if now_index ~= index then tc = 0; rc = 0 end
local faded = 1 - (now % window) / window
local tused = tp * faded + tc
local rused = rp * faded + rc
local fits = 1
if tlimit > 0 and tused + amount > tlimit then fits = 0 end
if rlimit > 0 and rused + 1 > rlimit then fits = 0 end
if fits == 1 then tc = tc + amount; rc = rc + 1 end
redis.call('HSET', KEYS[1], 'i', now_index, 'tc', tc, 'tp', tp, 'rc', rc, 'rp', rp)
redis.call('PEXPIRE', KEYS[1], 2 * window)
return { fits, now_index, math.floor(tused), math.floor(rused), now % window }
"#;

/// Adds `ARGV[2]` (negative to give back) to the tokens of window `ARGV[1]`, if it is still
/// the current or the previous one; counts never go below 0.
const SETTLE: &str = r#"
local index = tonumber(redis.call('HGET', KEYS[1], 'i') or -2)
local at, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local field
if index == at then field = 'tc' elseif index == at + 1 then field = 'tp' else return 0 end
local n = (tonumber(redis.call('HGET', KEYS[1], field)) or 0) + delta
if n < 0 then n = 0 end
redis.call('HSET', KEYS[1], field, n)
return 1
"#;

/// One key's counts in the current and previous minute.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    index: u64,
    tokens: (u64, u64),
    requests: (u64, u64),
}

impl Window {
    fn advance(&mut self, index: u64) {
        if index == self.index + 1 {
            self.tokens.1 = self.tokens.0;
            self.requests.1 = self.requests.0;
        } else if index != self.index {
            self.tokens.1 = 0;
            self.requests.1 = 0;
        }
        if index != self.index {
            self.tokens.0 = 0;
            self.requests.0 = 0;
            self.index = index;
        }
    }
}

/// The counts of one limit on this node, by key; kept across reloads.
#[derive(Debug, Default)]
pub struct RateCounts(Mutex<Counts>);

#[derive(Debug, Default)]
struct Counts {
    by_key: FxHashMap<Box<str>, Window>,
    /// The size at which idle keys are next swept out.
    sweep_at: usize,
}

/// One limit of an AI service, ready for the request path.
pub(crate) struct Limit {
    by: AiLimitBy,
    tokens: Option<u64>,
    requests: Option<u64>,
    /// Names the limit's counters: its service, place and rates.
    scope: Box<str>,
    local: Arc<RateCounts>,
    cluster: Option<Arc<RedisLimits>>,
}

/// What a call holds under one limit until it is settled.
pub(crate) struct Reservation {
    limit: Arc<Limit>,
    key: Box<str>,
    window: u64,
    tokens: u64,
}

/// A call refused for a rate, with the seconds until it would fit.
pub(crate) struct RateExceeded {
    pub error: AiError,
    pub retry_after: u64,
}

/// Who calls and what, as far as limits care.
pub(crate) struct Subject<'a> {
    pub consumer: Option<&'a str>,
    pub client_ip: IpAddr,
    pub model: &'a str,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Limit {
    pub fn compile(
        service: &str,
        index: usize,
        limit: &AiLimit,
        counts: impl FnOnce(&str) -> Arc<RateCounts>,
        redis: Option<&Arc<RedisLimits>>,
    ) -> Limit {
        let rate = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let by = match limit.by {
            AiLimitBy::Consumer => "consumer",
            AiLimitBy::Model => "model",
        };
        let scope =
            format!("{service}:{index}:{by}:{}:{}", rate(limit.tokens_per_minute), rate(limit.requests_per_minute));
        let cluster = match (limit.cluster, redis) {
            (true, Some(redis)) => Some(redis.clone()),
            (true, None) => {
                tracing::warn!(%scope, "an AI limit asks for cluster counting but no Redis is configured (--redis-url); it counts on this node alone");
                None
            }
            (false, _) => None,
        };
        Limit {
            by: limit.by,
            tokens: limit.tokens_per_minute,
            requests: limit.requests_per_minute,
            local: counts(&scope),
            scope: scope.into(),
            cluster,
        }
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Reserves `tokens` and one request for `subject`, or says how long to wait.
    async fn reserve(self: &Arc<Self>, subject: &Subject<'_>, tokens: u64) -> Result<Reservation, RateExceeded> {
        let key: Box<str> = match (self.by, subject.consumer) {
            (AiLimitBy::Consumer, Some(consumer)) => format!("c:{consumer}").into(),
            (AiLimitBy::Consumer, None) => format!("ip:{}", subject.client_ip).into(),
            (AiLimitBy::Model, _) => format!("m:{}", subject.model).into(),
        };
        // A call larger than a minute's allowance waits for an empty minute, then goes.
        let tokens = self.tokens.map_or(tokens, |max| tokens.min(max));
        let (fits, window, used_tokens, used_requests, into_window) = match self.reserve_in_redis(&key, tokens).await {
            Some(answer) => answer,
            None => self.reserve_here(&key, tokens),
        };
        if fits {
            return Ok(Reservation { limit: self.clone(), key, window, tokens });
        }
        let retry_after = (WINDOW_MS - into_window).div_ceil(1000).max(1);
        let (what, code) = match self.tokens {
            Some(max) if used_tokens + tokens > max => {
                (format!("{used_tokens} of {max} tokens a minute are used"), "tokens_per_minute_exceeded")
            }
            _ => (
                format!("{used_requests} of {} calls a minute are used", self.requests.unwrap_or(0)),
                "requests_per_minute_exceeded",
            ),
        };
        let whose = match self.by {
            AiLimitBy::Consumer => "this caller's",
            AiLimitBy::Model => "this model's",
        };
        let message = format!("{whose} rate is reached ({what}); try again in {retry_after} s");
        Err(RateExceeded { error: AiError::new(ErrorKind::RateLimited, message).with_code(code), retry_after })
    }

    async fn reserve_in_redis(&self, key: &str, tokens: u64) -> Option<(bool, u64, u64, u64, u64)> {
        let redis = self.cluster.as_ref()?;
        let mut invocation = RESERVE_SCRIPT.key(self.redis_key(key));
        invocation.arg(self.tokens.unwrap_or(0)).arg(tokens).arg(self.requests.unwrap_or(0));
        let answer: Vec<u64> = redis.invoke(&invocation).await?;
        match answer[..] {
            [fits, window, used_tokens, used_requests, into_window] => {
                Some((fits == 1, window, used_tokens, used_requests, into_window))
            }
            _ => None,
        }
    }

    fn reserve_here(&self, key: &str, tokens: u64) -> (bool, u64, u64, u64, u64) {
        let now = now_ms();
        let mut counts = self.local.0.lock().unwrap_or_else(|p| p.into_inner());
        let index = now / WINDOW_MS;
        if counts.by_key.len() >= counts.sweep_at {
            // Keys idle for two minutes count nothing any more. Sweeping at doubling sizes
            // keeps the cost constant per call.
            counts.by_key.retain(|_, w| w.index + 1 >= index);
            counts.sweep_at = (counts.by_key.len() * 2).max(1_024);
        }
        if !counts.by_key.contains_key(key) {
            counts.by_key.insert(key.into(), Window::default());
        }
        let window = counts.by_key.get_mut(key).expect("inserted above");
        window.advance(index);
        let faded = 1.0 - (now % WINDOW_MS) as f64 / WINDOW_MS as f64;
        let used = |(current, previous): (u64, u64)| (previous as f64 * faded + current as f64) as u64;
        let (used_tokens, used_requests) = (used(window.tokens), used(window.requests));
        let fits = self.tokens.is_none_or(|max| used_tokens + tokens <= max)
            && self.requests.is_none_or(|max| used_requests < max);
        if fits {
            window.tokens.0 += tokens;
            window.requests.0 += 1;
        }
        (fits, index, used_tokens, used_requests, now % WINDOW_MS)
    }

    fn redis_key(&self, key: &str) -> String {
        format!("portico:ai_rate:{}:{key}", self.scope)
    }
}

impl Reservation {
    /// Settles the reservation with the tokens the call used, here; what remains to do in
    /// Redis is returned.
    pub fn settle(self, used: u64) -> Option<Pending> {
        let delta = used as i64 - self.tokens as i64;
        if delta == 0 {
            return None;
        }
        let limit = &self.limit;
        if let Some(window) = limit.local.0.lock().unwrap_or_else(|p| p.into_inner()).by_key.get_mut(&self.key) {
            let count = if window.index == self.window {
                Some(&mut window.tokens.0)
            } else if window.index == self.window + 1 {
                Some(&mut window.tokens.1)
            } else {
                None
            };
            if let Some(count) = count {
                *count = count.saturating_add_signed(delta);
            }
        }
        let redis = limit.cluster.clone()?;
        let (key, window) = (limit.redis_key(&self.key), self.window);
        Some(Box::pin(async move {
            let mut invocation = SETTLE_SCRIPT.key(key);
            invocation.arg(window).arg(delta);
            let _: Option<i64> = redis.invoke(&invocation).await;
        }))
    }
}

/// The limits of an AI service.
#[derive(Default)]
pub(crate) struct Limits(pub Vec<Arc<Limit>>);

impl Limits {
    /// Reserves `tokens` under every limit, or none of them.
    pub async fn reserve(&self, subject: &Subject<'_>, tokens: u64) -> Result<Vec<Reservation>, RateExceeded> {
        let mut held = Vec::with_capacity(self.0.len());
        for limit in &self.0 {
            match limit.reserve(subject, tokens).await {
                Ok(reservation) => held.push(reservation),
                Err(exceeded) => {
                    // The limits that did reserve give their tokens back; the request
                    // stays counted, as a refused request does in a rate limit.
                    let given_back = held.into_iter().filter_map(|r| r.settle(0));
                    futures_util::future::join_all(given_back).await;
                    return Err(exceeded);
                }
            }
        }
        Ok(held)
    }
}
