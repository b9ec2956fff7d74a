//! How a service spreads requests over its targets, and how Portico tells healthy targets
//! from sick ones.

use crate::Problems;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a service spreads requests over its targets. A plain struct (not a tagged enum) so
/// that a stray field, such as `key` without `algorithm: hash`, is an error, not ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    pub algorithm: Algorithm,
    /// For `hash`: what the key is taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<HashOn>,
    /// For `hash` on a header or cookie: its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The balancing algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Smooth weighted round robin: each target in turn, as often as its weight says.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight, relative to its weight.
    LeastRequests,
    /// Power of two choices: of two random targets, the one with the lower peak-EWMA
    /// latency times requests in flight.
    PeakEwma,
    /// Consistent hashing: requests with the same key go to the same target, and adding or
    /// removing a target moves only the keys that belonged to it. Requests without the key
    /// are spread by round robin.
    Hash,
}

impl Balance {
    pub fn is_default(&self) -> bool {
        *self == Balance::default()
    }
}

/// Where a hashing balancer takes its key from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// The value of the request header named by `key`.
    Header,
    /// The value of the cookie named by `key`.
    Cookie,
    /// The client's IP address (the peer of the connection).
    ClientIp,
    /// The request path, without the query.
    Path,
}

/// Health checking of a service's targets. Unhealthy targets get no traffic; when every
/// target is unhealthy, Portico fails open and uses them all rather than failing everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Probes sent to every target on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveCheck>,
    /// Outlier detection from live traffic: targets that fail too often in a row are
    /// ejected for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveCheck>,
}

impl Health {
    pub fn is_empty(&self) -> bool {
        self.active.is_none() && self.passive.is_none()
    }
}

/// An HTTP probe: `GET path` on each target every `interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveCheck {
    /// The path probed, with an optional query.
    #[serde(default = "defaults::probe_path")]
    pub path: String,
    #[serde(default = "defaults::interval_ms")]
    pub interval_ms: u64,
    /// A probe that takes longer fails.
    #[serde(default = "defaults::probe_timeout_ms")]
    pub timeout_ms: u64,
    /// Successful probes in a row that bring an unhealthy target back.
    #[serde(default = "defaults::threshold")]
    pub healthy_threshold: u32,
    /// Failed probes in a row that take a healthy target out.
    #[serde(default = "defaults::threshold")]
    pub unhealthy_threshold: u32,
    /// Response statuses that count as healthy: codes such as `204` or classes such as `2xx`.
    #[serde(default = "defaults::healthy_statuses")]
    pub statuses: Vec<String>,
}

/// Passive checks: `failures` failed requests in a row (connection refused or reset, a
/// timeout, or a response status in `statuses`) eject a target for `ejection_ms`; each
/// further ejection doubles that, up to `max_ejection_ms`. An ejected target comes back by
/// itself when its time is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveCheck {
    #[serde(default = "defaults::failures")]
    pub failures: u32,
    /// Response statuses that count as failures.
    #[serde(default = "defaults::failure_statuses")]
    pub statuses: Vec<String>,
    #[serde(default = "defaults::ejection_ms")]
    pub ejection_ms: u64,
    #[serde(default = "defaults::max_ejection_ms")]
    pub max_ejection_ms: u64,
}

mod defaults {
    pub fn probe_path() -> String {
        "/".into()
    }
    pub fn interval_ms() -> u64 {
        5_000
    }
    pub fn probe_timeout_ms() -> u64 {
        1_000
    }
    pub fn threshold() -> u32 {
        2
    }
    pub fn healthy_statuses() -> Vec<String> {
        vec!["2xx".into(), "3xx".into()]
    }
    pub fn failures() -> u32 {
        5
    }
    pub fn failure_statuses() -> Vec<String> {
        vec!["5xx".into()]
    }
    pub fn ejection_ms() -> u64 {
        30_000
    }
    pub fn max_ejection_ms() -> u64 {
        300_000
    }
}

/// A set of HTTP statuses, written as codes (`503`) and classes (`5xx`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusSet {
    /// Bit `n` is status `100 + n`.
    bits: [u64; 8],
}

impl StatusSet {
    pub fn parse(items: &[String]) -> Result<StatusSet, String> {
        let mut set = StatusSet::default();
        for item in items {
            let bad = || format!("`{item}` is neither a status code (100-599) nor a class such as `5xx`");
            let range = match item.as_bytes() {
                [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                    let class = u16::from(c - b'0') * 100;
                    class..=class + 99
                }
                _ => {
                    let code: u16 = item.parse().map_err(|_| bad())?;
                    if !(100..=599).contains(&code) {
                        return Err(bad());
                    }
                    code..=code
                }
            };
            for code in range {
                let i = usize::from(code - 100);
                set.bits[i / 64] |= 1 << (i % 64);
            }
        }
        Ok(set)
    }

    pub fn contains(&self, status: u16) -> bool {
        let Some(i) = status.checked_sub(100).map(usize::from).filter(|i| *i < 500) else { return false };
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }
}

impl Balance {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        let Some(on) = self.on.filter(|_| self.algorithm == Algorithm::Hash) else {
            if self.algorithm == Algorithm::Hash {
                problems.push("balance.on", "say what to hash: header, cookie, client_ip or path");
            } else if self.on.is_some() || self.key.is_some() {
                problems.push("balance", "`on` and `key` are for `algorithm: hash` only");
            }
            return;
        };
        match (on, &self.key) {
            (HashOn::Header, Some(name)) if http::HeaderName::from_bytes(name.as_bytes()).is_err() => {
                problems.push("balance.key", format!("`{name}` is not a valid header name"));
            }
            (HashOn::Cookie, Some(name))
                if name.is_empty()
                    || !name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) =>
            {
                problems.push("balance.key", format!("`{name}` is not a valid cookie name"));
            }
            (HashOn::Header | HashOn::Cookie, None) => {
                problems.push("balance.key", "name the header or cookie to hash on");
            }
            (HashOn::ClientIp | HashOn::Path, Some(_)) => {
                problems.push("balance.key", "only `on: header` and `on: cookie` take a key");
            }
            _ => {}
        }
    }
}

impl Health {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if let Some(active) = &self.active {
            problems.check_ms("health.active.interval_ms", active.interval_ms, 1);
            problems.check_ms("health.active.timeout_ms", active.timeout_ms, 1);
        }
        if let Some(passive) = &self.passive {
            problems.check_ms("health.passive.ejection_ms", passive.ejection_ms, 1);
            problems.check_ms("health.passive.max_ejection_ms", passive.max_ejection_ms, 1);
        }
        if let Some(active) = &self.active {
            if !active.path.starts_with('/') || http::uri::PathAndQuery::try_from(active.path.as_str()).is_err() {
                problems.push("health.active.path", format!("`{}` is not a path starting with `/`", active.path));
            }
            for (field, value) in
                [("healthy_threshold", active.healthy_threshold), ("unhealthy_threshold", active.unhealthy_threshold)]
            {
                if value == 0 || value > 100 {
                    problems.push(format!("health.active.{field}"), "must be between 1 and 100");
                }
            }
            if let Err(message) = StatusSet::parse(&active.statuses) {
                problems.push("health.active.statuses", message);
            }
        }
        if let Some(passive) = &self.passive {
            if passive.failures == 0 || passive.failures > 1_000 {
                problems.push("health.passive.failures", "must be between 1 and 1000");
            }
            if passive.max_ejection_ms < passive.ejection_ms {
                problems.push("health.passive.max_ejection_ms", "must not be below ejection_ms");
            }
            if let Err(message) = StatusSet::parse(&passive.statuses) {
                problems.push("health.passive.statuses", message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_take_codes_and_classes() {
        let set = StatusSet::parse(&["2xx".into(), "304".into()]).expect("valid");
        assert!(set.contains(200) && set.contains(299) && set.contains(304));
        assert!(!set.contains(300) && !set.contains(500) && !set.contains(99) && !set.contains(700));
        assert!(StatusSet::parse(&["6xx".into()]).is_err());
        assert!(StatusSet::parse(&["99".into()]).is_err());
        assert!(StatusSet::parse(&["abc".into()]).is_err());
    }

    #[test]
    fn balance_reads_from_yaml() {
        let hash: Balance = yaml_serde::from_str("algorithm: hash\non: header\nkey: x-user").expect("valid");
        assert_eq!(hash, Balance { algorithm: Algorithm::Hash, on: Some(HashOn::Header), key: Some("x-user".into()) });
        let least: Balance = yaml_serde::from_str("algorithm: least_requests").expect("valid");
        assert_eq!(least.algorithm, Algorithm::LeastRequests);
        assert!(yaml_serde::from_str::<Balance>("algorithm: random").is_err());
        assert!(yaml_serde::from_str::<Balance>("algorithm: hash\nonn: path").is_err(), "typos are errors");
        // Fields that belong to another algorithm are refused, not ignored.
        let mut problems = Problems::default();
        let stray: Balance = yaml_serde::from_str("algorithm: round_robin\nkey: x-user").expect("parses");
        stray.validate(&mut problems);
        assert_eq!(problems.0.len(), 1);
    }

    #[test]
    fn services_with_balancing_and_health_round_trip_and_validate() {
        let yaml = "name: api\ntargets: [{address: 10.0.0.1:80}]\nbalance: {algorithm: hash, on: cookie, key: sid}\n\
                    health:\n  active: {path: /health, statuses: ['200', 3xx]}\n  passive: {failures: 3}\n";
        let service: crate::Service = yaml_serde::from_str(yaml).expect("valid");
        assert!(service.validate().is_ok());
        let written = yaml_serde::to_string(&service).expect("serialises");
        assert_eq!(yaml_serde::from_str::<crate::Service>(&written).expect("reads back"), service);
        let plain: crate::Service =
            yaml_serde::from_str("name: api\ntargets: [{address: 10.0.0.1:80}]").expect("valid");
        let written = yaml_serde::to_string(&plain).expect("serialises");
        assert!(!written.contains("balance") && !written.contains("health"), "defaults stay out: {written}");

        let mut bad = service;
        bad.balance = Balance { algorithm: Algorithm::Hash, on: Some(HashOn::Header), key: Some("bad header".into()) };
        let active = bad.health.active.as_mut().expect("active");
        active.statuses = vec!["7xx".into()];
        active.path = "health".into();
        active.interval_ms = 0;
        bad.health.passive.as_mut().expect("passive").max_ejection_ms = 1;
        let problems = bad.validate().err().unwrap_or_default();
        let paths: Vec<_> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "balance.key",
                "health.active.interval_ms",
                "health.active.path",
                "health.active.statuses",
                "health.passive.max_ejection_ms"
            ]
        );
    }
}
