//! The sliding-window counter, and the in-memory, lock-sharded counters of one node.
//!
//! Each limit counts requests in fixed windows and estimates the sliding window ending now as
//! the current window's count plus the previous window's count weighted by how much of it the
//! sliding window still covers. It needs two counters per key, allows no burst at window
//! edges, and is computed the same way here and in the Redis script (`redis.rs`).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{LazyLock, Mutex};

/// One limit: at most `requests` per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LimitSpec {
    pub requests: u64,
    pub window_ms: u64,
}

/// The counters of one key under one limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WindowState {
    /// Index of the current fixed window (`now / window`).
    pub index: u64,
    pub current: u64,
    pub previous: u64,
}

impl WindowState {
    /// Moves the counters to the window that holds `now_ms`.
    pub fn advance(&mut self, spec: LimitSpec, now_ms: u64) {
        let index = now_ms / spec.window_ms;
        if index == self.index + 1 {
            self.previous = self.current;
        } else if index != self.index {
            self.previous = 0;
        }
        if index != self.index {
            self.current = 0;
            self.index = index;
        }
    }

    /// Requests in the sliding window ending at `now_ms` (after [`WindowState::advance`]).
    fn estimate(&self, spec: LimitSpec, now_ms: u64) -> f64 {
        let elapsed = (now_ms % spec.window_ms) as f64 / spec.window_ms as f64;
        self.previous as f64 * (1.0 - elapsed) + self.current as f64
    }

    /// Whether one more request fits.
    pub fn admits(&self, spec: LimitSpec, now_ms: u64) -> bool {
        self.estimate(spec, now_ms) + 1.0 <= spec.requests as f64
    }

    /// What a client is told about this limit at `now_ms`.
    pub fn status(&self, spec: LimitSpec, now_ms: u64) -> LimitStatus {
        let window_end = (self.index + 1) * spec.window_ms;
        let remaining = (spec.requests as f64 - self.estimate(spec, now_ms)).floor().max(0.0) as u64;
        LimitStatus {
            limit: spec.requests,
            remaining,
            reset_ms: window_end.saturating_sub(now_ms),
            retry_after_ms: self.wait_ms(spec, now_ms),
        }
    }

    /// How long until one more request fits.
    fn wait_ms(&self, spec: LimitSpec, now_ms: u64) -> u64 {
        if self.admits(spec, now_ms) {
            return 0;
        }
        let (n, w) = (spec.requests as f64, spec.window_ms as f64);
        let start = (self.index * spec.window_ms) as f64;
        // In this window the previous count fades: previous * (1 - (t - start) / w) fits
        // once it is at most n - 1 - current.
        let room = n - 1.0 - self.current as f64;
        let at = if room >= 0.0 && self.previous > 0 {
            start + w * (1.0 - room / self.previous as f64)
        } else {
            // Not before the next window, where this window's count fades in its turn.
            let next = start + w;
            if self.current == 0 {
                next
            } else {
                next + w * (1.0 - ((n - 1.0) / self.current as f64).min(1.0))
            }
        };
        (at - now_ms as f64).ceil().max(1.0) as u64
    }
}

/// One limit's state as the `RateLimit-*` headers tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitStatus {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
    /// 0 when a request fits now.
    pub retry_after_ms: u64,
}

/// Checks one request against every limit: counts it in all of them only if all admit it.
/// Returns whether it was admitted and the status of the tightest limit.
pub(crate) fn decide(specs: &[LimitSpec], states: &mut [WindowState], now_ms: u64) -> (bool, LimitStatus) {
    for (state, spec) in states.iter_mut().zip(specs) {
        state.advance(*spec, now_ms);
    }
    let admitted = states.iter().zip(specs).all(|(state, spec)| state.admits(*spec, now_ms));
    if admitted {
        for state in states.iter_mut() {
            state.current += 1;
        }
    }
    (admitted, tightest(specs, states, now_ms))
}

/// The status to report: the limit with the fewest requests left, or, when refused, the one
/// that makes the client wait longest.
pub(crate) fn tightest(specs: &[LimitSpec], states: &[WindowState], now_ms: u64) -> LimitStatus {
    let statuses = states.iter().zip(specs).map(|(state, spec)| state.status(*spec, now_ms));
    statuses.min_by_key(|s| (std::cmp::Reverse(s.retry_after_ms), s.remaining)).unwrap_or(LimitStatus {
        limit: 0,
        remaining: 0,
        reset_ms: 0,
        retry_after_ms: 0,
    })
}

const SHARDS: usize = 16;

/// Identity hasher for keys that are already hashes.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, Box<[WindowState]>, BuildHasherDefault<KeyHasher>>;

/// The seed of [`key_hash`], random per process.
static SEED: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// The hash a key is counted under: 64 bits of SipHash under a per-process random seed, so
/// that no key is stored and none can be crafted to collide with another. Keys known in
/// advance (a consumer, a whole route) are hashed once, when the snapshot is compiled.
pub(crate) fn key_hash(key: &impl std::hash::Hash) -> u64 {
    SEED.hash_one(key)
}

/// The counters of one rate-limit policy on this node, by [`key_hash`], split over shards
/// that each have their own lock.
pub(crate) struct LocalCounters {
    specs: Box<[LimitSpec]>,
    /// Each limit's count as a header value, made once.
    limit_values: Box<[(u64, http::HeaderValue)]>,
    shards: Box<[Mutex<(Shard, usize)>]>,
}

impl LocalCounters {
    pub fn new(specs: Box<[LimitSpec]>) -> LocalCounters {
        let shards = (0..SHARDS).map(|_| Mutex::new((Shard::default(), 64))).collect();
        let limit_values = specs.iter().map(|s| (s.requests, http::HeaderValue::from(s.requests))).collect();
        LocalCounters { specs, limit_values, shards }
    }

    /// `limit` (one of the limits' counts) as a header value.
    pub fn limit_value(&self, limit: u64) -> http::HeaderValue {
        match self.limit_values.iter().find(|(n, _)| *n == limit) {
            Some((_, value)) => value.clone(),
            None => http::HeaderValue::from(limit),
        }
    }

    pub fn specs(&self) -> &[LimitSpec] {
        &self.specs
    }

    pub fn check(&self, key: u64, now_ms: u64) -> (bool, LimitStatus) {
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut guard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let (map, sweep_at) = &mut *guard;
        if map.len() >= *sweep_at {
            // Keys whose windows have all passed count nothing; dropping them bounds memory
            // by the keys seen in the longest window. Sweeping at doubling sizes keeps the
            // cost constant per request.
            map.retain(|_, states| {
                states.iter().zip(self.specs.iter()).any(|(s, spec)| s.index + 1 >= now_ms / spec.window_ms)
            });
            *sweep_at = (map.len() * 2).max(64);
        }
        let states = map.entry(key).or_insert_with(|| vec![WindowState::default(); self.specs.len()].into());
        decide(&self.specs, states, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_PER_SECOND: LimitSpec = LimitSpec { requests: 10, window_ms: 1_000 };

    #[test]
    fn a_window_admits_its_count_and_then_refuses() {
        let counters = LocalCounters::new(vec![TEN_PER_SECOND].into());
        let admitted = (0..15).filter(|_| counters.check(1, 5_000).0).count();
        assert_eq!(admitted, 10);
        let (ok, status) = counters.check(1, 5_000);
        assert!(!ok);
        assert_eq!(status.remaining, 0);
        assert!(status.retry_after_ms > 0 && status.retry_after_ms <= 2_000, "{status:?}");
        // Another key has its own count.
        assert!(counters.check(2, 5_000).0);
    }

    #[test]
    fn the_previous_window_fades_out() {
        let counters = LocalCounters::new(vec![TEN_PER_SECOND].into());
        for _ in 0..10 {
            assert!(counters.check(1, 5_999).0);
        }
        // Just after the edge the sliding window still holds ~all ten: no burst at the edge.
        assert!(!counters.check(1, 6_001).0);
        // Half way through the next window, half of them have faded.
        let admitted = (0..10).filter(|_| counters.check(1, 6_500).0).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn every_limit_must_admit_and_only_admitted_requests_count() {
        let specs: Box<[LimitSpec]> =
            vec![LimitSpec { requests: 3, window_ms: 1_000 }, LimitSpec { requests: 5, window_ms: 60_000 }].into();
        let counters = LocalCounters::new(specs);
        let admitted = (0..10).filter(|_| counters.check(7, 1_000).0).count();
        assert_eq!(admitted, 3);
        // The next second: the per-second limit has room, the per-minute one only two more.
        let admitted = (0..10).filter(|_| counters.check(7, 3_000).0).count();
        assert_eq!(admitted, 2);
        let (_, status) = counters.check(7, 3_000);
        assert_eq!((status.limit, status.remaining), (5, 0));
    }

    #[test]
    fn retry_after_is_when_a_request_fits_again() {
        let spec = TEN_PER_SECOND;
        let mut states = [WindowState::default()];
        for _ in 0..10 {
            decide(&[spec], &mut states, 10_000);
        }
        let (ok, status) = decide(&[spec], &mut states, 10_000);
        assert!(!ok);
        let later = 10_000 + status.retry_after_ms;
        assert!(decide(&[spec], &mut states.clone(), later).0, "{status:?}");
        assert!(!decide(&[spec], &mut states, later - 50).0, "{status:?}");
    }

    #[test]
    fn idle_keys_are_swept() {
        let counters = LocalCounters::new(vec![TEN_PER_SECOND].into());
        for key in 0..1_000u64 {
            counters.check(key * SHARDS as u64, 1_000);
        }
        for key in 0..200u64 {
            counters.check((key + 5_000) * SHARDS as u64, 100_000);
        }
        let len = counters.shards[0].lock().map(|g| g.0.len()).unwrap_or(0);
        assert!(len <= 200, "{len}");
    }
}
