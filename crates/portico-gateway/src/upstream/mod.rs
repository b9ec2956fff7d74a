//! Upstream services: targets, balancing, target health, timeouts, and the connection pools.

mod balance;
pub(crate) mod health;
mod pool;
mod state;

pub(crate) use pool::{Lease, Pool, SendError};
pub(crate) use state::{InFlightRequest, PassivePolicy};
pub use state::{TargetReport, TargetStates};

use balance::{Members, Ring, RoundRobin};
use http::uri::{Authority, Scheme};
use http::{header, HeaderName, HeaderValue};
use portico_model::{ActiveCheck, Balance, HashOn, HostHeader, Service};
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
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub host_header: HostHeader,
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
    pub fn new(service: &Service, states: &TargetStates) -> Upstream {
        let targets: Vec<UpstreamTarget> = service
            .targets
            .iter()
            .filter_map(|t| {
                // Addresses were validated as host:port, so both conversions succeed.
                Some(UpstreamTarget {
                    authority: t.address.parse().ok()?,
                    host: HeaderValue::from_str(&t.address).ok()?,
                    state: states.get(&service.name, &t.address),
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

    /// Picks the target for a request; `key` is the hash key, for hashing balancers.
    pub fn pick(&self, key: Option<&[u8]>) -> &UpstreamTarget {
        let members = Members { states: &self.states, weights: &self.weights };
        let index = match (&self.balancer, key) {
            (Balancer::LeastRequests(cursor), _) => balance::least_requests(&members, cursor),
            (Balancer::PeakEwma, _) => balance::peak_ewma(&members),
            (Balancer::Hash(_, ring), Some(key)) => ring.pick(key, &members),
            (Balancer::RoundRobin | Balancer::Hash(..), _) => self.round_robin.pick(&members),
        };
        &self.targets[index]
    }
}

/// The connection pools of one worker, keyed by connect timeout because the timeout is a
/// property of the connector. Pools are per worker so that a connection is always driven by
/// the runtime that uses it.
#[derive(Default)]
pub(crate) struct Pools {
    pools: Mutex<Vec<(Duration, Arc<Pool>)>>,
}

impl Pools {
    pub fn pool(&self, connect_timeout: Duration) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, pool)) = pools.iter().find(|(t, _)| *t == connect_timeout) {
            return pool.clone();
        }
        let pool = Arc::new(Pool::new(connect_timeout));
        pools.push((connect_timeout, pool.clone()));
        pool
    }
}
