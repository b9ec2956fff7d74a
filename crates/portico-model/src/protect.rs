//! Protecting a service from overload and the gateway from a failing service: circuit
//! breakers and bulkheads.

use crate::{MockResponse, Problems, StatusSet};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A circuit breaker. Closed, it counts failed requests (upstream errors and `statuses`)
/// over a sliding `window_ms`; when at least `minimum_requests` were made and the share of
/// failures reaches `failure_rate_percent`, it opens. Open, it answers at once (503 with
/// `Retry-After`, or the `fallback`) for `open_ms`; then it lets `probes` requests through,
/// and closes again if they all succeed, or opens again at the first failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default = "defaults::failure_rate_percent")]
    pub failure_rate_percent: u32,
    #[serde(default = "defaults::minimum_requests")]
    pub minimum_requests: u32,
    #[serde(default = "defaults::window_ms")]
    pub window_ms: u64,
    #[serde(default = "defaults::open_ms")]
    pub open_ms: u64,
    #[serde(default = "defaults::probes")]
    pub probes: u32,
    /// Response statuses that count as failures.
    #[serde(default = "defaults::statuses")]
    pub statuses: Vec<String>,
    /// What clients get while the circuit is open (default: 503 with `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// A fallback: another service, or a fixed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockResponse>,
}

/// A bulkhead: at most `max_concurrent` requests to the service at once; up to `max_queue`
/// more wait for a place, each for at most `queue_timeout_ms`. Others get 503 with
/// `Retry-After` at once, so a slow service cannot take every connection and task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bulkhead {
    pub max_concurrent: u32,
    #[serde(default)]
    pub max_queue: u32,
    #[serde(default = "defaults::queue_timeout_ms")]
    pub queue_timeout_ms: u64,
}

mod defaults {
    pub fn failure_rate_percent() -> u32 {
        50
    }
    pub fn minimum_requests() -> u32 {
        20
    }
    pub fn window_ms() -> u64 {
        10_000
    }
    pub fn open_ms() -> u64 {
        5_000
    }
    pub fn probes() -> u32 {
        3
    }
    pub fn statuses() -> Vec<String> {
        vec!["5xx".into()]
    }
    pub fn queue_timeout_ms() -> u64 {
        1_000
    }
}

impl CircuitBreaker {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.failure_rate_percent == 0 || self.failure_rate_percent > 100 {
            problems.push("circuit_breaker.failure_rate_percent", "must be between 1 and 100");
        }
        if self.minimum_requests == 0 || self.minimum_requests > 1_000_000 {
            problems.push("circuit_breaker.minimum_requests", "must be between 1 and 1000000");
        }
        problems.check_ms("circuit_breaker.window_ms", self.window_ms, 10);
        problems.check_ms("circuit_breaker.open_ms", self.open_ms, 10);
        if self.probes == 0 || self.probes > 1_000 {
            problems.push("circuit_breaker.probes", "must be between 1 and 1000");
        }
        if let Err(message) = StatusSet::parse(&self.statuses) {
            problems.push("circuit_breaker.statuses", message);
        }
        if let Some(fallback) = &self.fallback {
            match (&fallback.service, &fallback.mock) {
                (Some(_), Some(_)) | (None, None) => {
                    problems.push("circuit_breaker.fallback", "give either a service or a mock response")
                }
                (None, Some(mock)) => mock.validate("circuit_breaker.fallback.mock", problems),
                (Some(_), None) => {}
            }
        }
    }
}

impl Bulkhead {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.max_concurrent == 0 || self.max_concurrent > 1_000_000 {
            problems.push("bulkhead.max_concurrent", "must be between 1 and 1000000");
        }
        if self.max_queue > 1_000_000 {
            problems.push("bulkhead.max_queue", "must be at most 1000000");
        }
        problems.check_ms("bulkhead.queue_timeout_ms", self.queue_timeout_ms, 1);
    }
}
