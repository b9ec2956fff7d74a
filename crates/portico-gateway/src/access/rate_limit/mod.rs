//! Rate limits: compiled policies, their keys, and the counters that outlive reloads.

mod redis;
mod window;

pub use self::redis::{RedisLimits, RedisReport};
use super::identity::Consumer;
use crate::proxy::ProxyError;
use http::{HeaderMap, HeaderName, HeaderValue};
use portico_model::{LimitBy, RateLimit};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};
pub(crate) use window::key_hash;
use window::{LimitSpec, LocalCounters};

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Where a policy is attached, and its limits: what identifies its counters.
type CountersKey = (String, Box<[LimitSpec]>);

/// What the access phase keeps across reloads: the counters of every rate-limit policy (a
/// policy whose place and limits did not change keeps counting where it was), the Redis
/// connection, and the JWT verification keys fetched from issuers.
#[derive(Default)]
pub struct AccessStates {
    counters: Mutex<HashMap<CountersKey, Weak<LocalCounters>>>,
    redis: Option<Arc<RedisLimits>>,
    pub(crate) key_sets: super::jwt::KeySets,
}

impl AccessStates {
    /// Counters for this node, and through `redis` for the cluster when a policy asks.
    pub fn new(redis: Option<Arc<RedisLimits>>) -> AccessStates {
        AccessStates { counters: Mutex::default(), redis, key_sets: Default::default() }
    }

    pub fn redis(&self) -> Option<&Arc<RedisLimits>> {
        self.redis.as_ref()
    }

    /// Compiles the policy attached at `scope` (`route:orders`, `consumer:acme`, `global`).
    pub(crate) fn compile(&self, scope: &str, policy: &RateLimit) -> Arc<RateLimiter> {
        let specs: Box<[LimitSpec]> =
            policy.limits.iter().map(|l| LimitSpec { requests: l.requests, window_ms: l.per.0 }).collect();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.retain(|_, weak| weak.strong_count() > 0);
        let key = (scope.to_owned(), specs.clone());
        let local = match counters.get(&key).and_then(Weak::upgrade) {
            Some(existing) => existing,
            None => {
                let fresh = Arc::new(LocalCounters::new(specs));
                counters.insert(key, Arc::downgrade(&fresh));
                fresh
            }
        };
        let cluster = match (policy.cluster, &self.redis) {
            (true, Some(redis)) => Some(redis.clone()),
            (true, None) => {
                tracing::warn!(%scope, "a rate limit asks for cluster counting but no Redis is configured (--redis-url); it counts on this node alone");
                None
            }
            (false, _) => None,
        };
        Arc::new(RateLimiter {
            all_key: key_hash(&Key::All),
            scope: scope.into(),
            by: policy.by,
            header: policy.header.as_deref().and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            show_headers: !policy.hide_headers,
            local,
            cluster,
        })
    }
}

/// One rate-limit policy, ready for the request path.
pub(crate) struct RateLimiter {
    /// The hash of [`Key::All`], made once.
    all_key: u64,
    scope: Box<str>,
    by: LimitBy,
    header: Option<HeaderName>,
    show_headers: bool,
    local: Arc<LocalCounters>,
    cluster: Option<Arc<RedisLimits>>,
}

/// What a request is counted by.
#[derive(Hash)]
pub(crate) enum Key<'a> {
    Consumer(&'a str),
    ClientIp(IpAddr),
    Header(&'a [u8]),
    /// Every request of the route or service counts together.
    All,
}

/// What the limiter needs to know about a request.
pub(crate) struct Caller<'a> {
    pub consumer: Option<&'a Consumer>,
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
    /// When the request arrived.
    pub arrived: SystemTime,
}

impl RateLimiter {
    /// Counts the request; refuses it with 429 when a limit is reached. What the
    /// `RateLimit-*` headers will say goes into `headers` either way.
    pub async fn check(&self, caller: &Caller<'_>, headers: &mut Option<LimitHeaders>) -> Result<(), ProxyError> {
        // Keys known in advance come with their hash, made once (`None`: hash it here).
        let (key, hashed) = match (self.by, caller.consumer) {
            (LimitBy::Consumer, Some(consumer)) => (Key::Consumer(&consumer.name), Some(consumer.limit_key)),
            (LimitBy::Route | LimitBy::Service, _) => (Key::All, Some(self.all_key)),
            (LimitBy::Header, _) => match self.header.as_ref().and_then(|h| caller.headers.get(h)) {
                Some(value) => (Key::Header(value.as_bytes()), None),
                None => (Key::ClientIp(caller.client_ip), None),
            },
            (LimitBy::Consumer | LimitBy::ClientIp, _) => (Key::ClientIp(caller.client_ip), None),
        };
        let cluster = match &self.cluster {
            Some(redis) => Box::pin(redis.check(&self.redis_key(&key), self.local.specs())).await,
            None => None,
        };
        let (admitted, status) = match cluster {
            Some(answer) => answer,
            None => self.local.check(hashed.unwrap_or_else(|| key_hash(&key)), millis_since_epoch(caller.arrived)),
        };
        if self.show_headers {
            let limit = self.local.limit_value(status.limit);
            *headers =
                Some(LimitHeaders { limit, remaining: status.remaining, reset_secs: status.reset_ms.div_ceil(1000) });
        }
        match admitted {
            true => Ok(()),
            false => Err(ProxyError::RateLimited { retry_after_secs: status.retry_after_ms.div_ceil(1000).max(1) }),
        }
    }

    /// The key in Redis: readable, and the same on every node.
    fn redis_key(&self, key: &Key<'_>) -> String {
        let scope = &self.scope;
        match key {
            Key::Consumer(name) => format!("portico:rl:{scope}:consumer:{name}"),
            Key::ClientIp(ip) => format!("portico:rl:{scope}:ip:{ip}"),
            Key::Header(value) => {
                // Header values are the client's choice: hashed, they stay short and printable.
                let digest = Sha256::digest(value);
                format!(
                    "portico:rl:{scope}:header:{:016x}",
                    u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
                )
            }
            Key::All => format!("portico:rl:{scope}:all"),
        }
    }
}

/// The `RateLimit-*` headers of one response, for the tightest limit.
pub(crate) struct LimitHeaders {
    limit: HeaderValue,
    remaining: u64,
    reset_secs: u64,
}

impl LimitHeaders {
    /// Whether `name` is one of these headers.
    pub fn names(name: &HeaderName) -> bool {
        *name == RATELIMIT_LIMIT || *name == RATELIMIT_REMAINING || *name == RATELIMIT_RESET
    }

    /// Writes the headers as lines of an HTTP/1.1 head.
    pub fn write_lines(&self, out: &mut Vec<u8>) {
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"ratelimit-limit: ");
        out.extend_from_slice(self.limit.as_bytes());
        out.extend_from_slice(b"\r\nratelimit-remaining: ");
        out.extend_from_slice(number.format(self.remaining).as_bytes());
        out.extend_from_slice(b"\r\nratelimit-reset: ");
        out.extend_from_slice(number.format(self.reset_secs).as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Sets the headers in `headers`, in place of any of the same names.
    pub fn insert_into(self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT.clone(), self.limit);
        headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(self.remaining));
        headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(self.reset_secs));
    }
}

fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
