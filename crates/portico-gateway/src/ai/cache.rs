//! The response cache of AI routes: whole answers (never streams) kept for a time and given
//! again to the same request, normalised, from the same consumer (or any, when the route
//! shares its cache). A hit costs no provider call, so it passes budgets and token rates and
//! is not charged. Each node keeps its own, bounded in bytes; the oldest answers go first.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use portico_model::AiCache;
use rustc_hash::FxHashMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An answer as it is kept: its body and the headers that say who answered.
#[derive(Clone)]
pub(crate) struct Cached {
    pub body: Bytes,
    pub headers: Vec<(&'static HeaderName, HeaderValue)>,
    stored: Instant,
}

impl Cached {
    pub fn new(body: Bytes, headers: Vec<(&'static HeaderName, HeaderValue)>) -> Cached {
        Cached { body, headers, stored: Instant::now() }
    }

    /// Seconds since the answer was kept, for `Age`.
    pub fn age(&self) -> u64 {
        self.stored.elapsed().as_secs()
    }
}

type Key = [u8; 32];

#[derive(Default)]
struct Entries {
    by_key: FxHashMap<Key, Cached>,
    /// Keys in the order they were stored, to evict the oldest.
    order: VecDeque<(Key, Instant)>,
    bytes: u64,
}

/// One route's cache; kept across reloads while its settings stay the same.
pub struct AnswerCache {
    ttl: Duration,
    max_bytes: u64,
    shared: bool,
    entries: Mutex<Entries>,
}

impl AnswerCache {
    pub(crate) fn new(settings: &AiCache) -> AnswerCache {
        AnswerCache {
            ttl: Duration::from_millis(settings.ttl_ms),
            max_bytes: settings.max_bytes,
            shared: settings.shared,
            entries: Mutex::default(),
        }
    }

    /// The key of a request: what it asks (`api`), who asks (unless the cache is shared),
    /// and its body with object keys sorted and spacing dropped. `None` for a body that is
    /// not JSON.
    pub fn key(&self, api: &str, consumer: Option<&str>, body: &[u8]) -> Option<Key> {
        let body: Value = serde_json::from_slice(body).ok()?;
        let mut hasher = Sha256::new();
        hasher.update(api.as_bytes());
        hasher.update([0]);
        if !self.shared {
            hasher.update(consumer.unwrap_or("").as_bytes());
        }
        hasher.update([0]);
        let mut canonical = Vec::with_capacity(256);
        write_canonical(&body, &mut canonical);
        hasher.update(&canonical);
        Some(hasher.finalize().into())
    }

    pub fn get(&self, key: &Key) -> Option<Cached> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.by_key.get(key).filter(|cached| cached.stored.elapsed() < self.ttl).cloned()
    }

    pub fn put(&self, key: Key, answer: Cached) {
        let size = answer.body.len() as u64;
        if size > self.max_bytes {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let stored = answer.stored;
        if let Some(old) = entries.by_key.insert(key, answer) {
            entries.bytes -= old.body.len() as u64;
        }
        entries.bytes += size;
        entries.order.push_back((key, stored));
        // The oldest go first; a queued key whose entry was replaced since is skipped.
        while entries.bytes > self.max_bytes || entries.order.front().is_some_and(|(_, t)| t.elapsed() >= self.ttl) {
            let Some((old_key, old_stored)) = entries.order.pop_front() else { break };
            if entries.by_key.get(&old_key).is_some_and(|c| c.stored == old_stored) {
                if let Some(gone) = entries.by_key.remove(&old_key) {
                    entries.bytes -= gone.body.len() as u64;
                }
            }
        }
    }
}

/// `value` as JSON with every object's keys in order and no spacing.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, key);
                out.push(b':');
                write_canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_bytes: u64, shared: bool) -> AnswerCache {
        AnswerCache::new(&AiCache { ttl_ms: 60_000, max_bytes, shared })
    }

    #[test]
    fn the_same_request_in_another_spelling_has_the_same_key_but_not_for_another_consumer() {
        let cache = cache(1 << 20, false);
        let a = cache.key("chat", Some("shop"), br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let b = cache.key(
            "chat",
            Some("shop"),
            b"{ \"messages\": [ {\"content\": \"hi\", \"role\": \"user\"} ],\n \"model\": \"m\" }",
        );
        assert!(a.is_some() && a == b);
        assert_ne!(
            a,
            cache.key("chat", Some("other"), br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
        );
        assert_ne!(
            a,
            cache.key("embeddings", Some("shop"), br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
        );
        let shared = self::cache(1 << 20, true);
        assert_eq!(shared.key("chat", Some("a"), b"{}"), shared.key("chat", Some("b"), b"{}"));
        assert_eq!(cache.key("chat", None, b"not json"), None);
    }

    #[test]
    fn the_oldest_answers_go_when_the_bytes_run_out() {
        let cache = cache(10, false);
        let key = |n: u8| [n; 32];
        for n in 0..3 {
            cache.put(key(n), Cached::new(Bytes::from_static(b"1234"), Vec::new()));
        }
        assert!(cache.get(&key(0)).is_none(), "12 bytes do not fit in 10: the oldest went");
        assert!(cache.get(&key(1)).is_some() && cache.get(&key(2)).is_some());
        cache.put(key(9), Cached::new(Bytes::from_static(b"far too large"), Vec::new()));
        assert!(cache.get(&key(9)).is_none(), "an answer larger than the cache is not kept");
        assert!(cache.get(&key(1)).is_some());
    }
}
