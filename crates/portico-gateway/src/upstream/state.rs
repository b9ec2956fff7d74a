//! What Portico learns about services and targets while it runs: health, requests in
//! flight, latency, retry budgets.
//!
//! This state is shared by every worker and every snapshot: it is keyed by service name (and
//! target address) in [`UpstreamStates`], so a configuration reload keeps what was learnt
//! (an ejected target stays ejected, a spent retry budget stays spent). Everything is
//! atomics: the request path reads and writes it without locks.

use super::protect::{Breaker, Bulkhead};
use portico_model::{PassiveCheck, StatusSet};
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds since the first call: a monotonic clock cheap enough to keep in atomics.
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Starts at 1 so that 0 can mean "never".
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// How long a latency sample keeps its weight in the moving average.
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// The latency assumed for a target that has not answered yet.
const DEFAULT_LATENCY_MS: f64 = 1.0;

pub struct TargetState {
    /// `service/address`, for logs.
    label: Box<str>,
    probe_healthy: AtomicBool,
    probe_successes: AtomicU32,
    probe_failures: AtomicU32,
    last_probe_error: Mutex<Option<String>>,
    /// Failed requests in a row, for passive checks.
    failures: AtomicU32,
    /// When the current ejection ends (`now_ms` time), or 0.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    outstanding: AtomicU32,
    /// Peak-EWMA latency in milliseconds (`f64` bits), and when it was last updated.
    latency: AtomicU64,
    latency_at: AtomicU64,
}

impl TargetState {
    fn new(label: String) -> TargetState {
        TargetState {
            label: label.into(),
            probe_healthy: AtomicBool::new(true),
            probe_successes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            last_probe_error: Mutex::new(None),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            outstanding: AtomicU32::new(0),
            latency: AtomicU64::new(0),
            latency_at: AtomicU64::new(0),
        }
    }

    /// Whether the target may get traffic: its probes pass and it is not ejected.
    pub fn is_available(&self) -> bool {
        if !self.probe_healthy.load(Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Relaxed);
        until == 0 || until <= now_ms()
    }

    /// Records one probe result; thresholds decide when the verdict flips.
    pub fn record_probe(&self, result: Result<(), String>, healthy_threshold: u32, unhealthy_threshold: u32) {
        match result {
            Ok(()) => {
                self.probe_failures.store(0, Relaxed);
                let successes = self.probe_successes.fetch_add(1, Relaxed).saturating_add(1);
                if successes >= healthy_threshold && !self.probe_healthy.swap(true, Relaxed) {
                    tracing::info!(target = %self.label, "target is healthy again (active check)");
                }
            }
            Err(error) => {
                self.probe_successes.store(0, Relaxed);
                let failures = self.probe_failures.fetch_add(1, Relaxed).saturating_add(1);
                if failures >= unhealthy_threshold && self.probe_healthy.swap(false, Relaxed) {
                    tracing::warn!(target = %self.label, %error, "target is unhealthy (active check)");
                }
                *self.last_probe_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                return;
            }
        }
        *self.last_probe_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records the outcome of one proxied request for passive checks.
    pub fn record_outcome(&self, policy: &PassivePolicy, failed: bool) {
        if !failed {
            if self.failures.load(Relaxed) != 0 {
                self.failures.store(0, Relaxed);
            }
            // A target that has behaved for a whole maximum ejection is forgiven its past.
            if self.ejections.load(Relaxed) != 0
                && now_ms() >= self.ejected_until.load(Relaxed).saturating_add(policy.max_ejection_ms)
            {
                self.ejections.store(0, Relaxed);
            }
            return;
        }
        let failures = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if failures < policy.failures {
            return;
        }
        self.failures.store(0, Relaxed);
        let ejections = self.ejections.fetch_add(1, Relaxed).saturating_add(1);
        let ms = policy.ejection_ms.saturating_mul(1 << (ejections - 1).min(20)).min(policy.max_ejection_ms);
        self.ejected_until.store(now_ms() + ms, Relaxed);
        tracing::warn!(target = %self.label, failures, ejection_ms = ms, "target ejected (passive check)");
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlightRequest {
        self.outstanding.fetch_add(1, Relaxed);
        InFlightRequest(self.clone())
    }

    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Relaxed)
    }

    /// Adds a latency sample to the peak-EWMA: a slower sample replaces the average at once,
    /// faster ones pull it down gradually.
    pub fn observe_latency(&self, latency: Duration) {
        let sample = latency.as_secs_f64() * 1000.0;
        let now = now_ms();
        let current = self.decayed_latency(now);
        let next = if sample > current || current == 0.0 {
            sample
        } else {
            let elapsed = now.saturating_sub(self.latency_at.load(Relaxed)) as f64;
            let keep = (-elapsed / EWMA_DECAY.as_millis() as f64).exp();
            current * keep + sample * (1.0 - keep)
        };
        self.latency.store(next.to_bits(), Relaxed);
        self.latency_at.store(now, Relaxed);
    }

    /// The moving average, decayed for the time since the last sample, so that a target
    /// that stopped getting traffic after one slow answer is tried again eventually.
    fn decayed_latency(&self, now: u64) -> f64 {
        let latency = f64::from_bits(self.latency.load(Relaxed));
        if latency == 0.0 {
            return 0.0;
        }
        let idle = now.saturating_sub(self.latency_at.load(Relaxed)) as f64;
        latency * (-idle / EWMA_DECAY.as_millis() as f64).exp()
    }

    /// The peak-EWMA balancer's cost: expected latency times the queue it would join.
    pub fn ewma_cost(&self, now: u64) -> f64 {
        let latency = self.decayed_latency(now);
        let latency = if latency == 0.0 { DEFAULT_LATENCY_MS } else { latency };
        latency * f64::from(self.outstanding() + 1)
    }

    pub fn report(&self) -> TargetReport {
        let now = now_ms();
        let until = self.ejected_until.load(Relaxed);
        TargetReport {
            available: self.is_available(),
            probe_healthy: self.probe_healthy.load(Relaxed),
            probe_successes: self.probe_successes.load(Relaxed),
            probe_failures: self.probe_failures.load(Relaxed),
            last_probe_error: self.last_probe_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            consecutive_failures: self.failures.load(Relaxed),
            ejected_for_ms: until.saturating_sub(now),
            ejections: self.ejections.load(Relaxed),
            outstanding: self.outstanding(),
            latency_ms: self.decayed_latency(now),
        }
    }
}

/// A request in flight on a target; dropping it ends the request.
pub struct InFlightRequest(Arc<TargetState>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

/// A passive check, compiled.
pub(crate) struct PassivePolicy {
    pub failures: u32,
    pub statuses: StatusSet,
    pub ejection_ms: u64,
    pub max_ejection_ms: u64,
}

impl PassivePolicy {
    pub fn new(check: &PassiveCheck) -> PassivePolicy {
        PassivePolicy {
            failures: check.failures,
            // Validation has parsed these already.
            statuses: StatusSet::parse(&check.statuses).unwrap_or_default(),
            ejection_ms: check.ejection_ms,
            max_ejection_ms: check.max_ejection_ms,
        }
    }
}

/// A point-in-time view of a target's state, for the admin API.
#[derive(Debug, Clone)]
pub struct TargetReport {
    /// Whether the target gets traffic now.
    pub available: bool,
    pub probe_healthy: bool,
    pub probe_successes: u32,
    pub probe_failures: u32,
    pub last_probe_error: Option<String>,
    pub consecutive_failures: u32,
    pub ejected_for_ms: u64,
    pub ejections: u32,
    pub outstanding: u32,
    pub latency_ms: f64,
}

/// The state of one service, beyond its targets'.
#[derive(Default)]
pub struct ServiceState {
    pub retry_budget: RetryBudget,
    pub breaker: Breaker,
    /// Made for the configured limits; replaced when they change.
    bulkhead: Mutex<Option<Arc<Bulkhead>>>,
    /// What its upstream exchanges add up to, for `/metrics`.
    pub counters: crate::observe::ServiceCounters,
}

/// A token bucket for retries: every request a retry policy covers puts in a share of a
/// token (`budget_percent` / 100), every retry takes one out. Sustained retries therefore
/// stay under that share of the traffic; the bucket's size lets a short burst through.
pub struct RetryBudget {
    /// Thousandths of a token.
    milli_tokens: AtomicI64,
}

/// The bucket's size, and its content at start, in tokens.
const RETRY_RESERVE: i64 = 10;

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget { milli_tokens: AtomicI64::new(RETRY_RESERVE * 1000) }
    }
}

impl RetryBudget {
    pub fn deposit(&self, percent: u32) {
        let _ = self.milli_tokens.fetch_update(Relaxed, Relaxed, |m| {
            (m < RETRY_RESERVE * 1000).then(|| (m + i64::from(percent) * 10).min(RETRY_RESERVE * 1000))
        });
    }

    /// Takes a token for one retry, if there is one.
    pub fn withdraw(&self) -> bool {
        self.milli_tokens.fetch_update(Relaxed, Relaxed, |m| (m >= 1000).then_some(m - 1000)).is_ok()
    }
}

/// Every service's and target's state. One per process.
#[derive(Clone, Default)]
pub struct UpstreamStates(Arc<Mutex<States>>);

#[derive(Default)]
struct States {
    /// By service name and target address.
    targets: FxHashMap<(Box<str>, Box<str>), Arc<TargetState>>,
    services: FxHashMap<Box<str>, Arc<ServiceState>>,
    /// AI provider keys, by provider, key name and a digest of the key.
    keys: FxHashMap<Box<str>, Arc<crate::ai::KeyState>>,
    /// What each AI budget has spent, by its name, subject and period.
    budgets: FxHashMap<Box<str>, Arc<crate::ai::Spent>>,
    /// The counts of each AI service's token and request rates, by service, place and rates.
    ai_rates: FxHashMap<Box<str>, Arc<crate::ai::RateCounts>>,
    /// The answer caches of AI routes, by route and settings.
    ai_caches: FxHashMap<Box<str>, Arc<crate::ai::AnswerCache>>,
}

/// Names an AI route's answer cache by the route and its settings.
fn cache_id(route: &str, settings: &portico_model::AiCache) -> String {
    format!("{route}|{}|{}|{}", settings.ttl_ms, settings.max_bytes, settings.shared)
}

impl UpstreamStates {
    /// The state of one target, made on first use.
    pub(crate) fn target(&self, service: &str, address: &str) -> Arc<TargetState> {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states
            .targets
            .entry((service.into(), address.into()))
            .or_insert_with(|| Arc::new(TargetState::new(format!("{service}/{address}"))))
            .clone()
    }

    /// The state of one service, made on first use.
    pub(crate) fn service(&self, service: &str) -> Arc<ServiceState> {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states.services.entry(service.into()).or_default().clone()
    }

    /// The bulkhead of one service, for these limits: the same one as long as the limits
    /// stay the same. Requests in flight when they change finish in the old one.
    pub(crate) fn bulkhead(&self, service: &str, config: &portico_model::Bulkhead) -> Arc<Bulkhead> {
        let state = self.service(service);
        let mut current = state.bulkhead.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some(bulkhead) if bulkhead.config == *config => bulkhead.clone(),
            _ => current.insert(Arc::new(Bulkhead::new(config.clone()))).clone(),
        }
    }

    /// The state of one AI provider key, made on first use; `id` names the provider, the key
    /// and its value, so that a changed key starts afresh.
    pub(crate) fn key(&self, id: &str) -> Arc<crate::ai::KeyState> {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states.keys.entry(id.into()).or_default().clone()
    }

    /// Forgets AI provider keys that are no longer configured.
    pub(crate) fn retain_keys(&self, live: impl Fn(&str) -> bool) {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states.keys.retain(|id, _| live(id));
    }

    /// What an AI budget has spent, made on first use; `id` names the budget, what it
    /// counts and its period, so that a budget changed in those starts afresh.
    pub(crate) fn budget(&self, id: &str) -> Arc<crate::ai::Spent> {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states.budgets.entry(id.into()).or_default().clone()
    }

    /// What every AI budget known here has spent: its id, period, dollars (billionths)
    /// and tokens.
    pub fn budget_spends(&self) -> Vec<(String, i64, u64, u64)> {
        let states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let spends = states.budgets.iter().map(|(id, spent)| {
            let (period, nanos, tokens) = spent.read();
            (id.to_string(), period, nanos, tokens)
        });
        spends.filter(|(_, period, ..)| *period > 0).collect()
    }

    /// Seeds what budget `id` had spent in a period, from before a restart.
    pub fn seed_budget(&self, id: &str, period: i64, nanos: u64, tokens: u64) {
        self.budget(id).seed(period, nanos, tokens);
    }

    /// Forgets AI budgets that are no longer configured.
    pub(crate) fn retain_budgets(&self, live: impl Fn(&str) -> bool) {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states.budgets.retain(|id, _| live(id));
    }

    /// The counts of an AI rate limit, made on first use.
    pub(crate) fn ai_rate(&self, scope: &str) -> Arc<crate::ai::RateCounts> {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states.ai_rates.entry(scope.into()).or_default().clone()
    }

    /// The answer cache of an AI route, the same one while its settings stay the same.
    pub(crate) fn ai_cache(&self, route: &str, settings: &portico_model::AiCache) -> Arc<crate::ai::AnswerCache> {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let id = cache_id(route, settings);
        states.ai_caches.entry(id.into()).or_insert_with(|| Arc::new(crate::ai::AnswerCache::new(settings))).clone()
    }

    /// Forgets the answer caches of routes that are gone or whose cache changed.
    pub(crate) fn retain_ai_caches<'a>(&self, live: impl Iterator<Item = (&'a str, &'a portico_model::AiCache)>) {
        let live: rustc_hash::FxHashSet<String> = live.map(|(route, settings)| cache_id(route, settings)).collect();
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states.ai_caches.retain(|id, _| live.contains(&**id));
    }

    /// Forgets AI rate limits that are no longer configured.
    pub(crate) fn retain_ai_rates(&self, live: impl Fn(&str) -> bool) {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states.ai_rates.retain(|scope, _| live(scope));
    }

    /// Forgets services and targets that are no longer configured.
    pub(crate) fn retain(&self, live_target: impl Fn(&str, &str) -> bool, live_service: impl Fn(&str) -> bool) {
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states.targets.retain(|(service, address), _| live_target(service, address));
        states.services.retain(|service, _| live_service(service));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(failures: u32) -> PassivePolicy {
        PassivePolicy {
            failures,
            statuses: StatusSet::parse(&["5xx".into()]).expect("valid"),
            ejection_ms: 1_000,
            max_ejection_ms: 3_000,
        }
    }

    #[test]
    fn consecutive_failures_eject_and_ejections_grow() {
        let state = TargetState::new("s/a".into());
        let policy = policy(3);
        state.record_outcome(&policy, true);
        state.record_outcome(&policy, true);
        state.record_outcome(&policy, false);
        state.record_outcome(&policy, true);
        assert!(state.is_available(), "a success in between resets the count");
        state.record_outcome(&policy, true);
        state.record_outcome(&policy, true);
        assert!(!state.is_available());
        let first = state.report().ejected_for_ms;
        assert!((900..=1_000).contains(&first), "{first}");
        for _ in 0..3 {
            state.record_outcome(&policy, true);
        }
        let second = state.report().ejected_for_ms;
        assert!((1_900..=2_000).contains(&second), "the second ejection is twice as long: {second}");
        for _ in 0..6 {
            state.record_outcome(&policy, true);
        }
        assert!(state.report().ejected_for_ms <= 3_000, "capped at the maximum");
    }

    #[test]
    fn probes_flip_only_at_thresholds() {
        let state = TargetState::new("s/a".into());
        state.record_probe(Err("refused".into()), 2, 2);
        assert!(state.is_available());
        state.record_probe(Err("refused".into()), 2, 2);
        assert!(!state.is_available());
        assert_eq!(state.report().last_probe_error.as_deref(), Some("refused"));
        state.record_probe(Ok(()), 2, 2);
        assert!(!state.is_available());
        state.record_probe(Ok(()), 2, 2);
        assert!(state.is_available());
    }

    #[test]
    fn latency_follows_peaks_at_once_and_recovers_slowly() {
        let state = TargetState::new("s/a".into());
        state.observe_latency(Duration::from_millis(10));
        state.observe_latency(Duration::from_millis(100));
        assert!((state.report().latency_ms - 100.0).abs() < 1.0);
        state.observe_latency(Duration::from_millis(10));
        assert!(state.report().latency_ms > 90.0, "one fast answer does not erase a peak at once");
    }

    #[test]
    fn the_retry_budget_allows_a_share_of_the_traffic_plus_a_reserve() {
        let budget = RetryBudget::default();
        let mut retries = 0;
        for _ in 0..1_000 {
            budget.deposit(20);
            // Every request fails and wants a retry.
            retries += usize::from(budget.withdraw());
        }
        // 20 % of 1,000 plus the reserve of 10, give or take the first deposit into a full bucket.
        assert!((205..=210).contains(&retries), "{retries}");
    }

    #[test]
    fn in_flight_requests_are_counted_until_dropped() {
        let state = Arc::new(TargetState::new("s/a".into()));
        let first = state.start_request();
        let second = state.start_request();
        assert_eq!(state.outstanding(), 2);
        drop(first);
        drop(second);
        assert_eq!(state.outstanding(), 0);
    }
}
