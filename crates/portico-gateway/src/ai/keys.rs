//! Provider key pools: keys chosen by weight among those that may be used now.
//!
//! A key answered with 429 rests for the `Retry-After` the provider gave (a short default
//! when it gave none) and comes back on its own; a key answered with 401 or 403 is taken
//! out until the configuration changes (a changed key is a new key), and reported. The state
//! is process-wide, kept in [`crate::upstream::UpstreamStates`], so that a reload keeps it.

use crate::upstream::now_ms;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a key rests after a 429 without `Retry-After`.
pub(crate) const DEFAULT_REST: Duration = Duration::from_secs(10);
/// The longest rest a provider's `Retry-After` can impose.
const MAX_REST: Duration = Duration::from_secs(3600);

/// What Portico has learnt about one key.
#[derive(Debug, Default)]
pub struct KeyState {
    /// When its rest ends (`now_ms` time), or 0.
    resting_until: AtomicU64,
    disabled: AtomicBool,
    /// Why it was disabled: the provider's status and message.
    disabled_because: Mutex<Option<String>>,
    requests: AtomicU64,
    rate_limited: AtomicU64,
}

impl KeyState {
    fn usable(&self, now: u64) -> bool {
        !self.disabled.load(Relaxed) && self.resting_until.load(Relaxed) <= now
    }

    pub(crate) fn used(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// The provider refused the key for now (429).
    pub(crate) fn rest(&self, retry_after: Option<Duration>) {
        self.rate_limited.fetch_add(1, Relaxed);
        let rest = retry_after.unwrap_or(DEFAULT_REST).min(MAX_REST);
        self.resting_until.store(now_ms() + rest.as_millis() as u64, Relaxed);
    }

    /// The provider refused the key itself (401, 403).
    pub(crate) fn disable(&self, why: String) {
        *self.disabled_because.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.disabled.store(true, Relaxed);
    }
}

/// One key of a compiled provider.
pub(crate) struct PoolKey {
    pub name: Box<str>,
    /// Names the key's state: provider, key name and a digest of the key.
    pub id: Box<str>,
    /// The header that carries the key (`None` for a provider that takes none), marked
    /// sensitive so that it is never logged.
    pub auth: Option<(http::HeaderName, http::HeaderValue)>,
    pub weight: u32,
    pub state: Arc<KeyState>,
}

/// A provider's keys.
pub(crate) struct KeyPool {
    pub keys: Box<[PoolKey]>,
}

impl KeyPool {
    /// A usable key not in `tried`, by weight; `None` when every key is resting, disabled or
    /// tried.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = now_ms();
        let usable = |(i, key): &(usize, &PoolKey)| key.weight > 0 && !tried.contains(i) && key.state.usable(now);
        let total: u64 = self.keys.iter().enumerate().filter(usable).map(|(_, k)| u64::from(k.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut point = fastrand::u64(..total);
        for (i, key) in self.keys.iter().enumerate().filter(usable) {
            let weight = u64::from(key.weight);
            if point < weight {
                return Some(i);
            }
            point -= weight;
        }
        None
    }

    pub fn report(&self) -> Vec<KeyReport> {
        let now = now_ms();
        self.keys
            .iter()
            .map(|key| KeyReport {
                name: key.name.to_string(),
                weight: key.weight,
                available: key.state.usable(now),
                disabled: key.state.disabled.load(Relaxed),
                disabled_because: key.state.disabled_because.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                resting_for_ms: key.state.resting_until.load(Relaxed).saturating_sub(now),
                requests: key.state.requests.load(Relaxed),
                rate_limited: key.state.rate_limited.load(Relaxed),
            })
            .collect()
    }
}

/// One key's state, for the admin API.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub name: String,
    pub weight: u32,
    /// The key may be used now.
    pub available: bool,
    /// The provider refused it (401 or 403); it stays out until the configuration changes.
    pub disabled: bool,
    pub disabled_because: Option<String>,
    /// How long it still rests after a 429.
    pub resting_for_ms: u64,
    pub requests: u64,
    /// 429 answers it got.
    pub rate_limited: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(weights: &[u32]) -> KeyPool {
        let keys = weights
            .iter()
            .enumerate()
            .map(|(i, w)| PoolKey {
                name: format!("k{i}").into(),
                id: format!("p/k{i}").into(),
                auth: None,
                weight: *w,
                state: Arc::default(),
            })
            .collect();
        KeyPool { keys }
    }

    #[test]
    fn keys_are_chosen_by_weight_and_skipped_while_resting_or_disabled() {
        let pool = pool(&[3, 1, 0]);
        let mut counts = [0; 3];
        for _ in 0..4000 {
            counts[pool.pick(&[]).expect("a key")] += 1;
        }
        assert_eq!(counts[2], 0, "a weight of 0 keeps a key unused");
        assert!((2700..3300).contains(&counts[0]), "{counts:?}");
        pool.keys[0].state.rest(Some(Duration::from_secs(60)));
        assert_eq!(pool.pick(&[]), Some(1));
        assert_eq!(pool.pick(&[1]), None, "the only other key was tried");
        pool.keys[1].state.disable("401 invalid key".into());
        assert_eq!(pool.pick(&[]), None);
        let report = pool.report();
        assert!(report[0].resting_for_ms > 59_000 && !report[0].available);
        assert_eq!(report[1].disabled_because.as_deref(), Some("401 invalid key"));
    }

    #[test]
    fn a_rest_ends_on_its_own() {
        let pool = pool(&[1]);
        pool.keys[0].state.rest(Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(pool.pick(&[]), Some(0));
    }
}
