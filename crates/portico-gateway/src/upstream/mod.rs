//! Upstream services: targets, balancing, target health, timeouts, and the connection pools.

mod balance;
pub(crate) mod dns;
pub(crate) mod health;
mod http1;
mod pool;
mod protect;
mod state;
mod targets;
mod tasks;
mod tls;

pub(crate) use balance::hash as hash_key;
pub(crate) use http1::{chunked, Failure, SetHeaders, Upgraded, UpstreamBody};
pub(crate) use pool::{Pool, SendError};
pub(crate) use protect::{Admission, BreakerPolicy, Bulkhead, Fallback};
pub(crate) use state::{now_ms, InFlightRequest, PassivePolicy, ServiceState};
pub use state::{TargetReport, UpstreamStates};
pub use targets::Discovered;
pub(crate) use targets::{Balancer, HashKey, TargetSet, UpstreamTarget};
pub(crate) use tls::ClientTls;

use arc_swap::ArcSwap;
use http::header;
use http::uri::Scheme;
use http::HeaderName;
use portico_model::{ActiveCheck, Algorithm, DnsDiscovery, HashOn, HostHeader, RetryOn, Service, StatusSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A compiled service.
pub(crate) struct Upstream {
    pub name: Arc<str>,
    pub scheme: Scheme,
    /// The targets now; swapped when discovery finds new ones.
    members: ArcSwap<TargetSet>,
    balancer: Balancer,
    /// For discovered services: where their targets come from (`registry:<name>`,
    /// `dns:<service>`).
    pub discovery_source: Option<String>,
    pub dns: Option<DnsDiscovery>,
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
    /// TLS settings other than the defaults (public roots, no client certificate).
    pub tls: Option<Arc<ClientTls>>,
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

impl Upstream {
    /// Compiles a service; discovered services start with what `discovered` knows now.
    pub fn new(
        service: &Service,
        states: &UpstreamStates,
        discovered: &Discovered,
        tls: Option<Arc<ClientTls>>,
    ) -> Upstream {
        let discovery = service.discovery.as_ref();
        let discovery_source = discovery.and_then(|d| match (&d.registry, &d.dns) {
            (Some(name), _) => Some(format!("registry:{name}")),
            (None, Some(_)) => Some(format!("dns:{}", service.name)),
            (None, None) => None,
        });
        let targets: Vec<(String, u32)> = match &discovery_source {
            Some(source) => discovered.get(source),
            None => service.targets.iter().map(|t| (t.address.clone(), t.weight)).collect(),
        };
        let balance = &service.balance;
        let balancer = match balance.algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin,
            Algorithm::LeastRequests => Balancer::LeastRequests(AtomicUsize::new(0)),
            Algorithm::PeakEwma => Balancer::PeakEwma,
            Algorithm::Hash => {
                let key = balance.key.as_deref().unwrap_or_default();
                // Validation has checked that `on` is set and the header name is valid.
                Balancer::Hash(match balance.on.unwrap_or(HashOn::Path) {
                    HashOn::Header => HashKey::Header(HeaderName::from_bytes(key.as_bytes()).unwrap_or(header::HOST)),
                    HashOn::Cookie => HashKey::Cookie(key.into()),
                    HashOn::ClientIp => HashKey::ClientIp,
                    HashOn::Path => HashKey::Path,
                })
            }
        };
        let hashed = matches!(balancer, Balancer::Hash(_));
        Upstream {
            name: service.name.as_str().into(),
            scheme: match service.scheme {
                portico_model::Scheme::Http => Scheme::HTTP,
                portico_model::Scheme::Https => Scheme::HTTPS,
            },
            members: ArcSwap::from_pointee(TargetSet::new(&service.name, &targets, hashed, states)),
            balancer,
            discovery_source,
            dns: discovery.and_then(|d| d.dns.clone()),
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
            tls,
        }
    }

    /// The current targets; a request keeps the set it started with.
    pub fn members(&self) -> Arc<TargetSet> {
        self.members.load_full()
    }

    /// Replaces the targets (discovery found new ones).
    pub fn set_targets(&self, targets: &[(String, u32)], states: &UpstreamStates) {
        let hashed = matches!(self.balancer, Balancer::Hash(_));
        self.members.store(Arc::new(TargetSet::new(&self.name, targets, hashed, states)));
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// What a hashing balancer takes its key from; `None` for the other algorithms.
    pub fn hash_on(&self) -> Option<&HashKey> {
        match &self.balancer {
            Balancer::Hash(on) => Some(on),
            _ => None,
        }
    }

    /// Whether the balancer needs requests in flight counted.
    pub fn counts_requests(&self) -> bool {
        matches!(self.balancer, Balancer::LeastRequests(_) | Balancer::PeakEwma)
    }
}

/// The connection pools of one worker, keyed by connect timeout and TLS settings because
/// both are properties of the connector. Pools are per worker so that a connection is always
/// driven by the runtime that uses it.
#[derive(Clone, Default)]
pub(crate) struct Pools {
    by_connector: Arc<Mutex<Vec<PoolFor>>>,
}

/// The pool for one connect timeout and TLS settings (`None`: the defaults).
type PoolFor = ((Duration, Option<u64>), Arc<Pool>);

impl Pools {
    pub fn pool(&self, upstream: &Upstream) -> Arc<Pool> {
        self.pool_with(upstream.connect_timeout, upstream.tls.as_ref())
    }

    /// The pool for connections that open within `connect_timeout` and speak TLS with
    /// `tls` (the defaults when `None`).
    pub fn pool_with(&self, connect_timeout: Duration, tls: Option<&Arc<ClientTls>>) -> Arc<Pool> {
        let key = (connect_timeout, tls.map(|t| t.id));
        let mut pools = self.by_connector.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, pool)) = pools.iter().find(|(k, _)| *k == key) {
            return pool.clone();
        }
        let pool = Arc::new(Pool::new(connect_timeout, tls.map(|t| t.config.clone())));
        pools.push((key, pool.clone()));
        pool
    }
}
