//! A service's targets as they are now, and picking one of them for a request.
//!
//! Listed targets come from the configuration; discovered ones (registry, DNS) come through
//! [`Discovered`], which swaps a service's [`TargetSet`] in place when its instances change,
//! without compiling a new snapshot: requests in flight keep the set they started with.

use super::balance::{self, Members, Ring, RoundRobin};
use super::state::TargetState;
use super::UpstreamStates;
use crate::SnapshotCell;
use http::uri::Authority;
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) struct UpstreamTarget {
    pub authority: Authority,
    /// The `Host` header that names this target.
    pub host: HeaderValue,
    pub state: Arc<TargetState>,
}

/// How a service picks among its targets.
pub(crate) enum Balancer {
    RoundRobin,
    LeastRequests(AtomicUsize),
    PeakEwma,
    Hash(HashKey),
}

/// Where a hashing balancer finds a request's key.
pub(crate) enum HashKey {
    Header(HeaderName),
    Cookie(Box<str>),
    ClientIp,
    Path,
}

/// The targets of a service at one moment, with what balancing needs precomputed.
pub(crate) struct TargetSet {
    pub targets: Box<[UpstreamTarget]>,
    weights: Box<[u32]>,
    round_robin: RoundRobin,
    ring: Option<Ring>,
}

impl TargetSet {
    /// The set for `targets` (`host:port`, weight); addresses that do not parse are skipped
    /// (listed ones were validated; discovered ones are checked here).
    pub fn new(service: &str, targets: &[(String, u32)], hashed: bool, states: &UpstreamStates) -> TargetSet {
        let targets: Vec<(&str, u32, UpstreamTarget)> = targets
            .iter()
            .filter_map(|(address, weight)| {
                let target = UpstreamTarget {
                    authority: address.parse().ok()?,
                    host: HeaderValue::from_str(address).ok()?,
                    state: states.target(service, address),
                };
                Some((address.as_str(), *weight, target))
            })
            .collect();
        let weights: Vec<u32> = targets.iter().map(|(_, w, _)| *w).collect();
        let ring = hashed.then(|| Ring::new(&targets.iter().map(|(a, _, _)| *a).collect::<Vec<_>>(), &weights));
        TargetSet {
            targets: targets.into_iter().map(|(_, _, t)| t).collect(),
            round_robin: RoundRobin::new(&weights),
            weights: weights.into_boxed_slice(),
            ring,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// Picks a target (the set must not be empty); `key` is the hash of the request's key,
    /// for hashing balancers. A retry (`tried` is not empty) goes to a target not tried yet
    /// where there is one, and does not move the round-robin cursor, so that a dead target
    /// does not become every request's first choice.
    pub fn pick(&self, balancer: &Balancer, key: Option<u64>, tried: &[usize]) -> usize {
        let members = Members { targets: &self.targets, weights: &self.weights };
        let Some(&last) = tried.last() else {
            return match (balancer, key, &self.ring) {
                (Balancer::LeastRequests(cursor), _, _) => balance::least_requests(&members, cursor),
                (Balancer::PeakEwma, _, _) => balance::peak_ewma(&members),
                (Balancer::Hash(_), Some(key), Some(ring)) => ring.pick(key, &members),
                _ => self.round_robin.pick(&members),
            };
        };
        // Load-aware balancers still know best among the rest.
        let again = match balancer {
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
            .find(|&i| self.targets[i].state.is_available())
            .or_else(|| after_last.clone().next())
            .unwrap_or(last)
    }
}

/// Discovered targets by source (`registry:<name>`, `dns:<service>`), shared by the
/// discovery tasks, the compiler and the gateway.
#[derive(Clone, Default)]
pub struct Discovered(Arc<DiscoveredInner>);

#[derive(Default)]
struct DiscoveredInner {
    lists: Mutex<HashMap<String, Vec<(String, u32)>>>,
    /// Bumped on every change, so that followers (health checks) notice.
    generation: AtomicU64,
}

impl Discovered {
    /// The targets last found for `source`.
    pub fn get(&self, source: &str) -> Vec<(String, u32)> {
        self.0.lists.lock().unwrap_or_else(|p| p.into_inner()).get(source).cloned().unwrap_or_default()
    }

    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Relaxed)
    }

    /// Records the targets of `source` and, if they changed, swaps them into every service
    /// of the current snapshot that uses it.
    pub fn update(
        &self,
        source: &str,
        mut targets: Vec<(String, u32)>,
        snapshots: &SnapshotCell,
        states: &UpstreamStates,
    ) {
        targets.sort();
        {
            let mut lists = self.0.lists.lock().unwrap_or_else(|p| p.into_inner());
            if lists.get(source) == Some(&targets) {
                return;
            }
            tracing::info!(source, targets = targets.len(), "discovered targets changed");
            lists.insert(source.to_owned(), targets.clone());
        }
        self.0.generation.fetch_add(1, Ordering::Relaxed);
        for upstream in snapshots.load().upstreams.iter().filter(|u| u.discovery_source.as_deref() == Some(source)) {
            upstream.set_targets(&targets, states);
        }
        snapshots.wake_followers();
    }

    /// Takes the registry's live instances (name → targets) and updates every registry source
    /// the current snapshot uses; a name with no live instance gets no targets.
    pub fn update_registry(
        &self,
        instances: &HashMap<String, Vec<(String, u32)>>,
        snapshots: &SnapshotCell,
        states: &UpstreamStates,
    ) {
        let snapshot = snapshots.load();
        let sources = snapshot.upstreams.iter().filter_map(|u| u.discovery_source.as_deref());
        for source in sources.filter(|s| s.starts_with("registry:")) {
            let name = &source["registry:".len()..];
            self.update(source, instances.get(name).cloned().unwrap_or_default(), snapshots, states);
        }
    }

    /// Puts the current lists into a snapshot that was compiled while they changed.
    pub fn refresh(&self, snapshots: &SnapshotCell, states: &UpstreamStates) {
        for upstream in snapshots.load().upstreams.iter() {
            if let Some(source) = &upstream.discovery_source {
                upstream.set_targets(&self.get(source), states);
            }
        }
    }
}
