//! Retrying failed requests on another target.

use crate::{Problems, StatusSet};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// When and how often a failed request is tried again. A retry goes to another target where
/// there is one, waits an exponential backoff with jitter, and is only made before any of the
/// response has gone to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Tries after the first one.
    #[serde(default = "defaults::attempts")]
    pub attempts: u32,
    /// What is retried: `connect_failure` (refused, unreachable, connect timeout), `reset`
    /// (the connection broke before a response), `timeout` (no response within
    /// `read_timeout_ms`), and response statuses (`503`, `5xx`).
    #[serde(default = "defaults::on")]
    pub on: Vec<String>,
    /// The first backoff; each retry doubles it, up to `max_backoff_ms`. The wait is a random
    /// time up to that, so that clients that failed together do not retry together.
    #[serde(default = "defaults::backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "defaults::max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// A request body is kept for a retry up to this size; a request with a larger body is
    /// retried only if it never left (a connect failure).
    #[serde(default = "defaults::replay_body_bytes")]
    pub replay_body_bytes: u64,
    /// Retries may add at most this share of extra requests to the service (plus a small
    /// reserve), so that retries cannot turn a slowdown into an overload.
    #[serde(default = "defaults::budget_percent")]
    pub budget_percent: u32,
}

mod defaults {
    pub fn attempts() -> u32 {
        2
    }
    pub fn on() -> Vec<String> {
        ["connect_failure", "reset", "502", "503", "504"].map(String::from).to_vec()
    }
    pub fn backoff_ms() -> u64 {
        25
    }
    pub fn max_backoff_ms() -> u64 {
        250
    }
    pub fn replay_body_bytes() -> u64 {
        64 * 1024
    }
    pub fn budget_percent() -> u32 {
        20
    }
}

/// The failures a retry policy retries, parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub reset: bool,
    pub timeout: bool,
    pub statuses: StatusSet,
}

impl RetryOn {
    pub fn parse(items: &[String]) -> Result<RetryOn, String> {
        let mut on = RetryOn::default();
        let mut statuses = Vec::new();
        for item in items {
            match item.as_str() {
                "connect_failure" => on.connect_failure = true,
                "reset" => on.reset = true,
                "timeout" => on.timeout = true,
                _ => statuses.push(item.clone()),
            }
        }
        on.statuses =
            StatusSet::parse(&statuses).map_err(|e| format!("{e}; or one of `connect_failure`, `reset`, `timeout`"))?;
        Ok(on)
    }
}

impl Retries {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.attempts > 10 {
            problems.push("retries.attempts", "must be at most 10");
        }
        if let Err(message) = RetryOn::parse(&self.on) {
            problems.push("retries.on", message);
        }
        if self.backoff_ms > 60_000 {
            problems.push("retries.backoff_ms", "must be at most 60000");
        }
        if self.max_backoff_ms < self.backoff_ms || self.max_backoff_ms > 60_000 {
            problems.push("retries.max_backoff_ms", "must be between backoff_ms and 60000");
        }
        if self.replay_body_bytes > 64 * 1024 * 1024 {
            problems.push("retries.replay_body_bytes", "must be at most 64 MiB");
        }
        if self.budget_percent == 0 || self.budget_percent > 100 {
            problems.push("retries.budget_percent", "must be between 1 and 100");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_conditions_parse() {
        let on = RetryOn::parse(&["reset".into(), "5xx".into()]).expect("valid");
        assert!(on.reset && !on.connect_failure && !on.timeout);
        assert!(on.statuses.contains(503) && !on.statuses.contains(429));
        let error = RetryOn::parse(&["sometimes".into()]).err().unwrap_or_default();
        assert!(error.contains("connect_failure"), "{error}");
    }
}
