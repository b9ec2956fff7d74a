//! Upstream services: targets, weighted round robin, timeouts, and the connection pools.

mod pool;

pub(crate) use pool::{Lease, Pool, SendError};

use http::uri::{Authority, Scheme};
use http::HeaderValue;
use portico_model::{HostHeader, Service};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A compiled service.
pub(crate) struct Upstream {
    pub name: Box<str>,
    pub scheme: Scheme,
    pub targets: Box<[UpstreamTarget]>,
    /// Target indexes in smooth weighted round-robin order; the cursor walks it.
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub host_header: HostHeader,
}

pub(crate) struct UpstreamTarget {
    pub authority: Authority,
    /// The `Host` header that names this target.
    pub host: HeaderValue,
}

impl Upstream {
    pub fn new(service: &Service) -> Upstream {
        let targets: Vec<UpstreamTarget> = service
            .targets
            .iter()
            .filter_map(|t| {
                // Addresses were validated as host:port, so both conversions succeed.
                Some(UpstreamTarget {
                    authority: t.address.parse().ok()?,
                    host: HeaderValue::from_str(&t.address).ok()?,
                })
            })
            .collect();
        let weights: Vec<u32> = service.targets.iter().map(|t| t.weight).collect();
        Upstream {
            name: service.name.as_str().into(),
            scheme: match service.scheme {
                portico_model::Scheme::Http => Scheme::HTTP,
                portico_model::Scheme::Https => Scheme::HTTPS,
            },
            targets: targets.into_boxed_slice(),
            schedule: smooth_weighted_schedule(&weights).into_boxed_slice(),
            cursor: AtomicUsize::new(0),
            connect_timeout: Duration::from_millis(service.connect_timeout_ms),
            read_timeout: Duration::from_millis(service.read_timeout_ms),
            write_timeout: Duration::from_millis(service.write_timeout_ms),
            host_header: service.host_header,
        }
    }

    /// The next target in weighted round-robin order.
    pub fn pick(&self) -> &UpstreamTarget {
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        &self.targets[self.schedule[turn] as usize]
    }
}

/// One full cycle of smooth weighted round robin: each target appears `weight / gcd` times,
/// spread out rather than in bursts (weights 5, 1, 1 give a a b a c a a, not a a a a a b c).
fn smooth_weighted_schedule(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().copied().filter(|w| *w > 0).reduce(gcd).unwrap_or(1);
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let (best, _) = current.iter().enumerate().max_by_key(|(i, c)| (**c, -(*i as i64))).unwrap_or((0, &0));
        current[best] -= total;
        schedule.push(best as u32);
    }
    if schedule.is_empty() {
        schedule.push(0);
    }
    schedule
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_schedules_are_smooth_and_proportional() {
        assert_eq!(smooth_weighted_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_schedule(&[2, 2]), [0, 1]);
        assert_eq!(smooth_weighted_schedule(&[3, 0]), [0]);
        let schedule = smooth_weighted_schedule(&[300, 100]);
        assert_eq!(schedule, [0, 0, 1, 0]);
    }
}
