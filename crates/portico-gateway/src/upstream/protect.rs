//! Circuit breakers and bulkheads: the per-service guards of the upstream phase.
//!
//! Both keep their state in the service's [`ServiceState`](super::ServiceState), shared by
//! every worker and kept across reloads; the policies come from the snapshot.

use super::state::now_ms;
use portico_model::StatusSet;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A circuit breaker's policy, compiled.
pub(crate) struct BreakerPolicy {
    pub failure_rate_percent: u32,
    pub minimum_requests: u32,
    pub window_ms: u64,
    pub open_ms: u64,
    pub probes: u32,
    pub statuses: StatusSet,
    pub fallback: Option<Fallback>,
}

pub(crate) enum Fallback {
    /// Another service, by name (looked up in the request's snapshot).
    Service(Box<str>),
    Mock(crate::snapshot::MockResponse),
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
/// The sliding window is this many buckets.
const BUCKETS: usize = 10;

/// A circuit breaker's state.
#[derive(Default)]
pub struct Breaker {
    state: AtomicU8,
    /// When the circuit opened, or went half-open (`now_ms` time).
    since: AtomicU64,
    /// Probe requests still to let through while half-open.
    permits: AtomicU32,
    /// Probes that succeeded since the circuit went half-open.
    successes: AtomicU32,
    window: [Bucket; BUCKETS],
}

#[derive(Default)]
struct Bucket {
    /// Which slice of time the counts are for (`now_ms / bucket length`).
    epoch: AtomicU64,
    requests: AtomicU32,
    failures: AtomicU32,
}

/// How a request got past the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The circuit is closed.
    Closed,
    /// The circuit is half-open and this request is one of its probes.
    Probe,
    /// The circuit is open; try again in this many milliseconds.
    Rejected(u64),
}

impl Breaker {
    pub fn admit(&self, policy: &BreakerPolicy) -> Admission {
        match self.state.load(Relaxed) {
            CLOSED => Admission::Closed,
            OPEN => {
                let now = now_ms();
                let reopen = self.since.load(Relaxed) + policy.open_ms;
                if now < reopen {
                    return Admission::Rejected(reopen - now);
                }
                if self.state.compare_exchange(OPEN, HALF_OPEN, Relaxed, Relaxed).is_ok() {
                    self.since.store(now, Relaxed);
                    self.successes.store(0, Relaxed);
                    self.permits.store(policy.probes, Relaxed);
                    tracing::info!("circuit half-open: sending probe requests");
                }
                self.probe(policy, now)
            }
            _ => self.probe(policy, now_ms()),
        }
    }

    fn probe(&self, policy: &BreakerPolicy, now: u64) -> Admission {
        if self.permits.fetch_update(Relaxed, Relaxed, |p| p.checked_sub(1)).is_ok() {
            return Admission::Probe;
        }
        // Probes that never reported (their clients went away) must not keep the circuit
        // half-open for ever: after another cool-down, new probes go out.
        if now >= self.since.load(Relaxed) + policy.open_ms {
            self.since.store(now, Relaxed);
            self.permits.store(policy.probes.saturating_sub(1), Relaxed);
            return Admission::Probe;
        }
        Admission::Rejected(1_000)
    }

    /// Records how a request admitted as `admission` ended: `Some(true)` failed,
    /// `Some(false)` succeeded, `None` tells nothing (the client went away).
    pub fn record(&self, policy: &BreakerPolicy, admission: Admission, failed: Option<bool>) {
        match (admission, failed) {
            (Admission::Closed, Some(failed)) => self.record_closed(policy, failed),
            (Admission::Probe, Some(true)) => {
                if self.state.swap(OPEN, Relaxed) != OPEN {
                    tracing::warn!("circuit open again: a probe request failed");
                }
                self.since.store(now_ms(), Relaxed);
            }
            (Admission::Probe, Some(false)) => {
                let successes = self.successes.fetch_add(1, Relaxed) + 1;
                if successes >= policy.probes
                    && self.state.compare_exchange(HALF_OPEN, CLOSED, Relaxed, Relaxed).is_ok()
                {
                    for bucket in &self.window {
                        bucket.requests.store(0, Relaxed);
                        bucket.failures.store(0, Relaxed);
                    }
                    tracing::info!("circuit closed: the probe requests succeeded");
                }
            }
            (Admission::Probe, None) => {
                self.permits.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    fn record_closed(&self, policy: &BreakerPolicy, failed: bool) {
        let now = now_ms();
        let bucket_ms = (policy.window_ms / BUCKETS as u64).max(1);
        let epoch = now / bucket_ms;
        let bucket = &self.window[epoch as usize % BUCKETS];
        if bucket.epoch.load(Relaxed) != epoch && bucket.epoch.swap(epoch, Relaxed) != epoch {
            bucket.requests.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
        }
        bucket.requests.fetch_add(1, Relaxed);
        if !failed {
            return;
        }
        bucket.failures.fetch_add(1, Relaxed);
        let (mut requests, mut failures) = (0u64, 0u64);
        for b in &self.window {
            if epoch.saturating_sub(b.epoch.load(Relaxed)) < BUCKETS as u64 {
                requests += u64::from(b.requests.load(Relaxed));
                failures += u64::from(b.failures.load(Relaxed));
            }
        }
        if requests >= u64::from(policy.minimum_requests)
            && failures * 100 >= requests * u64::from(policy.failure_rate_percent)
            && self.state.compare_exchange(CLOSED, OPEN, Relaxed, Relaxed).is_ok()
        {
            self.since.store(now, Relaxed);
            tracing::warn!(requests, failures, open_ms = policy.open_ms, "circuit open: too many failures");
        }
    }

    /// `closed`, `open` or `half_open`, for reports.
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Relaxed) {
            CLOSED => "closed",
            OPEN => "open",
            _ => "half_open",
        }
    }
}

/// A bulkhead: a limit on requests in flight, with a bounded queue.
pub struct Bulkhead {
    pub config: portico_model::Bulkhead,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Leaves the queue however the wait ends, including when the request is dropped.
struct InQueue<'a>(&'a AtomicUsize);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Bulkhead {
    pub fn new(config: portico_model::Bulkhead) -> Bulkhead {
        Bulkhead {
            slots: Arc::new(Semaphore::new(config.max_concurrent as usize)),
            waiting: AtomicUsize::new(0),
            config,
        }
    }

    /// A place for one request, held until the returned permit is dropped; `None` when the
    /// service is full and so is its queue, or the wait timed out.
    pub async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Relaxed) >= self.config.max_queue as usize {
            self.waiting.fetch_sub(1, Relaxed);
            return None;
        }
        let _queued = InQueue(&self.waiting);
        let wait = Duration::from_millis(self.config.queue_timeout_ms);
        tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await.ok()?.ok()
    }

    pub fn in_flight(&self) -> usize {
        (self.config.max_concurrent as usize).saturating_sub(self.slots.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failure_rate_percent: 50,
            minimum_requests: 4,
            window_ms: 10_000,
            open_ms: 50,
            probes: 2,
            statuses: StatusSet::default(),
            fallback: None,
        }
    }

    #[test]
    fn the_breaker_opens_on_the_failure_rate_and_closes_after_good_probes() {
        let (breaker, policy) = (Breaker::default(), policy());
        for failed in [false, true, false] {
            breaker.record(&policy, breaker.admit(&policy), Some(failed));
        }
        assert_eq!(breaker.state_name(), "closed", "three requests are below the minimum");
        breaker.record(&policy, breaker.admit(&policy), Some(true));
        assert_eq!(breaker.state_name(), "open", "two failures in four is 50 %");
        assert!(matches!(breaker.admit(&policy), Admission::Rejected(ms) if ms <= 50));

        std::thread::sleep(Duration::from_millis(60));
        let (first, second) = (breaker.admit(&policy), breaker.admit(&policy));
        assert_eq!((first, second), (Admission::Probe, Admission::Probe));
        assert!(matches!(breaker.admit(&policy), Admission::Rejected(_)), "only two probes");
        breaker.record(&policy, first, Some(false));
        assert_eq!(breaker.state_name(), "half_open");
        breaker.record(&policy, second, Some(false));
        assert_eq!(breaker.state_name(), "closed");
        assert_eq!(breaker.admit(&policy), Admission::Closed);
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let (breaker, policy) = (Breaker::default(), policy());
        for _ in 0..4 {
            breaker.record(&policy, breaker.admit(&policy), Some(true));
        }
        std::thread::sleep(Duration::from_millis(60));
        let probe = breaker.admit(&policy);
        assert_eq!(probe, Admission::Probe);
        breaker.record(&policy, probe, Some(true));
        assert_eq!(breaker.state_name(), "open");
        assert!(matches!(breaker.admit(&policy), Admission::Rejected(_)));
    }

    #[tokio::test]
    async fn the_bulkhead_admits_its_limit_queues_a_few_and_refuses_the_rest() {
        let bulkhead = Bulkhead::new(portico_model::Bulkhead { max_concurrent: 2, max_queue: 1, queue_timeout_ms: 50 });
        let first = bulkhead.enter().await.expect("first place");
        let _second = bulkhead.enter().await.expect("second place");
        assert_eq!(bulkhead.in_flight(), 2);
        // The third waits; a fourth finds the queue full and is refused at once.
        let third = bulkhead.enter();
        let mut third = std::pin::pin!(third);
        assert!(futures_util::FutureExt::now_or_never(&mut third).is_none(), "the third waits");
        assert!(bulkhead.enter().await.is_none());
        drop(first);
        let _third = third.await.expect("the queued request gets the freed place");
        // A queued request that waits too long gives up.
        assert!(bulkhead.enter().await.is_none());
    }
}
