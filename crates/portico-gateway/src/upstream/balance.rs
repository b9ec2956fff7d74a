//! Balancing algorithms. Each picks among the targets that are available (healthy and not
//! ejected); when none is, it picks among all of them, so that a health check that is wrong
//! about every target degrades to plain balancing instead of failing every request.

use super::state::{now_ms, TargetState};
use super::UpstreamTarget;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The targets and their weights, in target order.
pub(crate) struct Members<'a> {
    pub targets: &'a [UpstreamTarget],
    pub weights: &'a [u32],
}

impl Members<'_> {
    fn state(&self, i: usize) -> &TargetState {
        &self.targets[i].state
    }

    fn usable(&self, i: usize, any: bool) -> bool {
        self.weights[i] > 0 && (any || self.state(i).is_available())
    }
}

/// Smooth weighted round robin over a precomputed schedule.
pub(crate) struct RoundRobin {
    /// Target indexes in smooth weighted round-robin order; the cursor walks it.
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> RoundRobin {
        RoundRobin { schedule: smooth_weighted_schedule(weights).into_boxed_slice(), cursor: AtomicUsize::new(0) }
    }

    pub fn pick(&self, members: &Members) -> usize {
        let start = self.cursor.fetch_add(1, Relaxed);
        let first = self.schedule[start % self.schedule.len()] as usize;
        if members.state(first).is_available() {
            return first;
        }
        // Skip unavailable targets; the schedule's order keeps the others' shares in proportion.
        (1..self.schedule.len())
            .map(|step| self.schedule[(start + step) % self.schedule.len()] as usize)
            .find(|&i| members.state(i).is_available())
            .unwrap_or(first)
    }
}

/// The fewest requests in flight relative to weight; ties go round the targets.
pub(crate) fn least_requests(members: &Members, cursor: &AtomicUsize) -> usize {
    let n = members.targets.len();
    let start = cursor.fetch_add(1, Relaxed);
    for any in [false, true] {
        let best = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| members.usable(i, any))
            // (outstanding + 1) / weight, compared without division.
            .min_by_key(|&i| {
                let load = u64::from(members.state(i).outstanding() + 1) << 20;
                load / u64::from(members.weights[i])
            });
        if let Some(best) = best {
            return best;
        }
    }
    0
}

/// Power of two choices on peak-EWMA latency times requests in flight, over weight.
pub(crate) fn peak_ewma(members: &Members) -> usize {
    let n = members.targets.len();
    if n == 1 {
        return 0;
    }
    let now = now_ms();
    let cost = |i: usize| members.state(i).ewma_cost(now) / f64::from(members.weights[i].max(1));
    for any in [false, true] {
        // A few random draws find two usable targets unless most are out; then a scan does.
        let mut chosen = [usize::MAX; 2];
        let mut found = 0;
        let candidates = (0..8).map(|_| fastrand::usize(..n)).chain(0..n);
        for i in candidates {
            if found == 2 {
                break;
            }
            if members.usable(i, any) && !chosen[..found].contains(&i) {
                chosen[found] = i;
                found += 1;
            }
        }
        match found {
            2 => return if cost(chosen[0]) <= cost(chosen[1]) { chosen[0] } else { chosen[1] },
            1 => return chosen[0],
            _ => {}
        }
    }
    0
}

/// A consistent-hash ring: each target owns points on a 64-bit circle in proportion to its
/// weight, and a key belongs to the first point at or after its own hash. Removing a target
/// hands only its keys to its neighbours; adding one takes only the keys it now owns.
pub(crate) struct Ring {
    points: Box<[(u64, u32)]>,
}

/// Points of the heaviest target; lighter ones get proportionally fewer. More points
/// spread keys more evenly.
const POINTS: u64 = 160;

impl Ring {
    /// `ids` name the targets (their addresses): a target's points depend only on its own
    /// id and weight (relative to the heaviest), never on the other targets' ids, which is
    /// what keeps remapping minimal.
    pub fn new(ids: &[&str], weights: &[u32]) -> Ring {
        let heaviest = u64::from(weights.iter().copied().max().unwrap_or(1).max(1));
        let mut points = Vec::new();
        for (i, (id, &weight)) in ids.iter().zip(weights).enumerate() {
            let count = if weight == 0 { 0 } else { (POINTS * u64::from(weight)).div_ceil(heaviest) };
            for replica in 0..count {
                let mut key = Vec::with_capacity(id.len() + 8);
                key.extend_from_slice(id.as_bytes());
                key.extend_from_slice(&replica.to_le_bytes());
                points.push((hash(&key), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points: points.into_boxed_slice() }
    }

    /// The target for a key's [`hash`].
    pub fn pick(&self, key: u64, members: &Members) -> usize {
        if self.points.is_empty() {
            return 0;
        }
        let start = self.points.partition_point(|(point, _)| *point < key);
        let owner = |k: usize| self.points[(start + k) % self.points.len()].1 as usize;
        // The first available target clockwise; with none, the key's own target.
        (0..self.points.len()).map(owner).find(|&i| members.state(i).is_available()).unwrap_or_else(|| owner(0))
    }
}

/// FNV-1a with a final avalanche step: stable across processes and versions, so every
/// Portico node of a cluster sends a key to the same target.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // MurmurHash3's fmix64: FNV alone leaves similar keys close together on the ring.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamStates;

    fn targets(n: usize) -> Vec<UpstreamTarget> {
        let registry = UpstreamStates::default();
        (0..n)
            .map(|i| {
                let address = format!("10.0.0.{i}:80");
                UpstreamTarget {
                    authority: address.parse().expect("authority"),
                    host: http::HeaderValue::from_str(&address).expect("host"),
                    state: registry.target("s", &address),
                }
            })
            .collect()
    }

    #[test]
    fn weighted_schedules_are_smooth_and_proportional() {
        assert_eq!(smooth_weighted_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_schedule(&[2, 2]), [0, 1]);
        assert_eq!(smooth_weighted_schedule(&[3, 0]), [0]);
        assert_eq!(smooth_weighted_schedule(&[300, 100]), [0, 0, 1, 0]);
    }

    #[test]
    fn least_requests_prefers_the_idle_target() {
        let targets = targets(3);
        let weights = [1, 1, 1];
        let members = Members { targets: &targets, weights: &weights };
        let _busy =
            [targets[0].state.start_request(), targets[1].state.start_request(), targets[1].state.start_request()];
        let cursor = AtomicUsize::new(0);
        for _ in 0..5 {
            assert_eq!(least_requests(&members, &cursor), 2);
        }
        // Weight counts: twice the weight carries twice the requests for the same cost.
        let weights = [4, 1, 1];
        let members = Members { targets: &targets, weights: &weights };
        assert_eq!(least_requests(&members, &cursor), 0);
    }

    #[test]
    fn peak_ewma_avoids_the_slow_target() {
        let targets = targets(2);
        let weights = [1, 1];
        let members = Members { targets: &targets, weights: &weights };
        targets[0].state.observe_latency(std::time::Duration::from_millis(200));
        targets[1].state.observe_latency(std::time::Duration::from_millis(2));
        let picks: Vec<usize> = (0..100).map(|_| peak_ewma(&members)).collect();
        assert!(picks.iter().all(|&i| i == 1));
    }

    /// The share of 10,000 keys that change target when the target set changes.
    fn moved(before: &[&str], after: &[&str]) -> f64 {
        let (sa, sb) = (targets(before.len()), targets(after.len()));
        let (wa, wb) = (vec![1; before.len()], vec![1; after.len()]);
        let (ra, rb) = (Ring::new(before, &wa), Ring::new(after, &wb));
        let (ma, mb) = (Members { targets: &sa, weights: &wa }, Members { targets: &sb, weights: &wb });
        let moved = (0..10_000u32)
            .filter(|k| {
                let key = format!("user-{k}");
                before[ra.pick(hash(key.as_bytes()), &ma)] != after[rb.pick(hash(key.as_bytes()), &mb)]
            })
            .count();
        moved as f64 / 10_000.0
    }

    #[test]
    fn consistent_hashing_moves_only_the_keys_it_must() {
        let ten: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:80")).collect();
        let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
        // Removing one of ten targets moves its tenth of the keys, and nothing else.
        let removed = moved(&ten, &ten[1..]);
        assert!((0.06..=0.14).contains(&removed), "removing moved {removed}");
        // Adding an eleventh takes about a eleventh.
        let mut eleven = ten.clone();
        eleven.push("10.0.0.10:80");
        let added = moved(&ten, &eleven);
        assert!((0.05..=0.13).contains(&added), "adding moved {added}");
        // Keys spread roughly evenly.
        let s = targets(10);
        let w = vec![1; 10];
        let ring = Ring::new(&ten, &w);
        let mut counts = [0u32; 10];
        for k in 0..10_000u32 {
            counts[ring.pick(hash(format!("k{k}").as_bytes()), &Members { targets: &s, weights: &w })] += 1;
        }
        assert!(counts.iter().all(|&c| (600..=1_400).contains(&c)), "{counts:?}");
    }
}
