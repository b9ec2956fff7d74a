//! Upstream services: targets, balancing, target health, timeouts, and the connection pools.

mod balance;
pub(crate) mod health;
mod pool;
mod protect;
mod state;

pub(crate) use balance::hash as hash_key;
pub(crate) use pool::{Lease, Pool, SendError};
pub(crate) use protect::{Admission, BreakerPolicy, Bulkhead, Fallback};
pub(crate) use state::{InFlightRequest, PassivePolicy, ServiceState};
pub use state::{TargetReport, UpstreamStates};

use balance::{Members, Ring, RoundRobin};
use http::uri::{Authority, Scheme};
use http::{header, HeaderName, HeaderValue};
use portico_model::{ActiveCheck, Balance, HashOn, HostHeader, RetryOn, Service, StatusSet};
use state::TargetState;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A compiled service.
pub(crate) struct Upstream {
    pub name: Box<str>,
    pub scheme: Scheme,
    pub targets: Box<[UpstreamTarget]>,
    states: Box<[Arc<TargetState>]>,
    weights: Box<[u32]>,
    round_robin: RoundRobin,
    balancer: Balancer,
    pub active_check: Option<ActiveCheck>,
    pub passive_check: Option<PassivePolicy>,
    pub retries: Option<RetryPolicy>,
    pub breaker: Option<BreakerPolicy>,
    pub bulkhead: Option<Arc<Bulkhead>>,
    pub state: Arc<ServiceState>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// Limit on the wait for the response head over all tries.
    pub total_timeout: Option<Duration>,
    pub host_header: HostHeader,
}

/// A retry policy, compiled.
pub(crate) struct RetryPolicy {
    pub attempts: u32,
    pub on: RetryOn,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub replay_body_bytes: u64,
    pub budget_percent: u32,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first): a random time up to the
    /// exponential backoff ("full jitter").
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff.saturating_mul(1 << (retry - 1).min(16)).min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

enum Balancer {
    RoundRobin,
    LeastRequests(AtomicUsize),
    PeakEwma,
    Hash(HashKey, Ring),
}

/// Where a hashing balancer finds a request's key.
pub(crate) enum HashKey {
    Header(HeaderName),
    Cookie(Box<str>),
    ClientIp,
    Path,
}

pub(crate) struct UpstreamTarget {
    pub authority: Authority,
    /// The `Host` header that names this target.
    pub host: HeaderValue,
    pub state: Arc<TargetState>,
}

impl Upstream {
    pub fn new(service: &Service, states: &UpstreamStates) -> Upstream {
        let targets: Vec<UpstreamTarget> = service
            .targets
            .iter()
            .filter_map(|t| {
                // Addresses were validated as host:port, so both conversions succeed.
                Some(UpstreamTarget {
                    authority: t.address.parse().ok()?,
                    host: HeaderValue::from_str(&t.address).ok()?,
                    state: states.target(&service.name, &t.address),
                })
            })
            .collect();
        let weights: Vec<u32> = service.targets.iter().map(|t| t.weight).collect();
        let balancer = match &service.balance {
            Balance::RoundRobin => Balancer::RoundRobin,
            Balance::LeastRequests => Balancer::LeastRequests(AtomicUsize::new(0)),
            Balance::PeakEwma => Balancer::PeakEwma,
            Balance::Hash { on, key } => {
                let ids: Vec<&str> = service.targets.iter().map(|t| t.address.as_str()).collect();
                let key = key.as_deref().unwrap_or_default();
                let source = match on {
                    // Validation has checked the header name.
                    HashOn::Header => HashKey::Header(HeaderName::from_bytes(key.as_bytes()).unwrap_or(header::HOST)),
                    HashOn::Cookie => HashKey::Cookie(key.into()),
                    HashOn::ClientIp => HashKey::ClientIp,
                    HashOn::Path => HashKey::Path,
                };
                Balancer::Hash(source, Ring::new(&ids, &weights))
            }
        };
        Upstream {
            name: service.name.as_str().into(),
            scheme: match service.scheme {
                portico_model::Scheme::Http => Scheme::HTTP,
                portico_model::Scheme::Https => Scheme::HTTPS,
            },
            states: targets.iter().map(|t| t.state.clone()).collect(),
            targets: targets.into_boxed_slice(),
            round_robin: RoundRobin::new(&weights),
            weights: weights.into_boxed_slice(),
            balancer,
            active_check: service.health.active.clone(),
            retries: service.retries.as_ref().map(|r| RetryPolicy {
                attempts: r.attempts,
                // Validation has parsed these already.
                on: RetryOn::parse(&r.on).unwrap_or_default(),
                backoff: Duration::from_millis(r.backoff_ms),
                max_backoff: Duration::from_millis(r.max_backoff_ms),
                replay_body_bytes: r.replay_body_bytes,
                budget_percent: r.budget_percent,
            }),
            breaker: service.circuit_breaker.as_ref().map(|b| BreakerPolicy {
                failure_rate_percent: b.failure_rate_percent,
                minimum_requests: b.minimum_requests,
                window_ms: b.window_ms,
                open_ms: b.open_ms,
                probes: b.probes,
                statuses: StatusSet::parse(&b.statuses).unwrap_or_default(),
                fallback: b.fallback.as_ref().and_then(|f| match (&f.service, &f.mock) {
                    (Some(service), _) => Some(Fallback::Service(service.as_str().into())),
                    (None, Some(mock)) => Some(Fallback::Mock(crate::snapshot::compile_mock(mock))),
                    (None, None) => None,
                }),
            }),
            bulkhead: service.bulkhead.as_ref().map(|b| states.bulkhead(&service.name, b)),
            state: states.service(&service.name),
            total_timeout: service.total_timeout_ms.map(Duration::from_millis),
            passive_check: service.health.passive.as_ref().map(PassivePolicy::new),
            connect_timeout: Duration::from_millis(service.connect_timeout_ms),
            read_timeout: Duration::from_millis(service.read_timeout_ms),
            write_timeout: Duration::from_millis(service.write_timeout_ms),
            host_header: service.host_header,
        }
    }

    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// What a hashing balancer takes its key from; `None` for the other algorithms.
    pub fn hash_on(&self) -> Option<&HashKey> {
        match &self.balancer {
            Balancer::Hash(on, _) => Some(on),
            _ => None,
        }
    }

    /// Whether the balancer needs requests in flight counted.
    pub fn counts_requests(&self) -> bool {
        matches!(self.balancer, Balancer::LeastRequests(_) | Balancer::PeakEwma)
    }

    /// Picks the target for a request; `key` is the hash of the request's key, for hashing
    /// balancers. A retry (`tried` is not empty) goes to a target not tried yet where there
    /// is one, and does not move the round-robin cursor, so that a dead target does not
    /// become every request's first choice.
    pub fn pick(&self, key: Option<u64>, tried: &[usize]) -> usize {
        let members = Members { states: &self.states, weights: &self.weights };
        let Some(&last) = tried.last() else {
            return match (&self.balancer, key) {
                (Balancer::LeastRequests(cursor), _) => balance::least_requests(&members, cursor),
                (Balancer::PeakEwma, _) => balance::peak_ewma(&members),
                (Balancer::Hash(_, ring), Some(key)) => ring.pick(key, &members),
                (Balancer::RoundRobin | Balancer::Hash(..), _) => self.round_robin.pick(&members),
            };
        };
        // Load-aware balancers still know best among the rest.
        let again = match &self.balancer {
            Balancer::LeastRequests(cursor) => Some(balance::least_requests(&members, cursor)),
            Balancer::PeakEwma => Some(balance::peak_ewma(&members)),
            _ => None,
        };
        if let Some(i) = again.filter(|i| !tried.contains(i)) {
            return i;
        }
        // Otherwise the next target after the last one tried: available ones first.
        let n = self.targets.len();
        let after_last = (1..=n).map(|k| (last + k) % n).filter(|&i| self.weights[i] > 0 && !tried.contains(&i));
        after_last
            .clone()
            .find(|&i| self.states[i].is_available())
            .or_else(|| after_last.clone().next())
            .unwrap_or(last)
    }
}

/// The connection pools of one worker, keyed by connect timeout because the timeout is a
/// property of the connector. Pools are per worker so that a connection is always driven by
/// the runtime that uses it.
#[derive(Clone, Default)]
pub(crate) struct Pools {
    by_connect_timeout: Arc<Mutex<Vec<PoolFor>>>,
}

/// The pool for one connect timeout.
type PoolFor = (Duration, Arc<Pool>);

impl Pools {
    pub fn pool(&self, connect_timeout: Duration) -> Arc<Pool> {
        let mut pools = self.by_connect_timeout.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, pool)) = pools.iter().find(|(t, _)| *t == connect_timeout) {
            return pool.clone();
        }
        let pool = Arc::new(Pool::new(connect_timeout));
        pools.push((connect_timeout, pool.clone()));
        pool
    }
}
