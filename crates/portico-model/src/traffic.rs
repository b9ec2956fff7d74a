//! Shaping a route's traffic: splitting it across services, mirroring it to a shadow, and
//! injecting faults for chaos tests.

use crate::{validate_name, Problems};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A share of a route's traffic for another service (a canary, or the other colour of a
/// blue/green pair). Requests that match `when` always go to it; of the others, `weight`
/// percent do. The rest go to the route's `service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub service: String,
    /// Percent of the requests that match no `when`, 0 to 100.
    #[serde(default)]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
}

/// A request condition: a header or a cookie is present, with `value` if given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A copy of `percent` percent of the route's requests goes to `service`; its answers are
/// discarded and its failures never reach the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub service: String,
    #[serde(default = "hundred")]
    pub percent: u32,
}

/// Faults injected into a route's requests, for chaos tests. With `when`, only requests that
/// match it are touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
}

/// Delay `percent` percent of requests by `ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub ms: u64,
    #[serde(default = "hundred")]
    pub percent: u32,
}

/// Answer `percent` percent of requests with `status` instead of forwarding them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    pub status: u16,
    #[serde(default = "hundred")]
    pub percent: u32,
}

fn hundred() -> u32 {
    100
}

fn percent(field: &str, value: u32, problems: &mut Problems) {
    if value > 100 {
        problems.push(field, "must be a percentage, 0 to 100");
    }
}

impl When {
    pub(crate) fn validate(&self, at: &str, problems: &mut Problems) {
        match (&self.header, &self.cookie) {
            (Some(header), None) => {
                if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    problems.push(format!("{at}.header"), format!("`{header}` is not a valid header name"));
                }
            }
            (None, Some(cookie)) => {
                if cookie.is_empty() || cookie.contains([';', '=', ' ']) {
                    problems.push(format!("{at}.cookie"), format!("`{cookie}` is not a valid cookie name"));
                }
            }
            _ => problems.push(at, "give either a header or a cookie"),
        }
    }
}

/// Checks a route's splits, mirror and faults; whether the services exist is checked with
/// the whole configuration.
pub(crate) fn validate(
    split: &[Split],
    mirror: Option<&Mirror>,
    fault: Option<&Fault>,
    has_service: bool,
    problems: &mut Problems,
) {
    if !split.is_empty() && !has_service {
        problems.push("split", "a split needs the route's `service` for the rest of the traffic");
    }
    for (i, share) in split.iter().enumerate() {
        if let Err(message) = validate_name(&share.service) {
            problems.push(format!("split[{i}].service"), message);
        }
        percent(&format!("split[{i}].weight"), share.weight, problems);
        if let Some(when) = &share.when {
            when.validate(&format!("split[{i}].when"), problems);
        }
    }
    if split.iter().map(|s| s.weight).sum::<u32>() > 100 {
        problems.push("split", "the weights add up to more than 100 percent");
    }
    if let Some(mirror) = mirror {
        if !has_service {
            problems.push("mirror", "only routes that forward to a service can mirror");
        }
        if let Err(message) = validate_name(&mirror.service) {
            problems.push("mirror.service", message);
        }
        percent("mirror.percent", mirror.percent, problems);
    }
    if let Some(fault) = fault {
        if fault.delay.is_none() && fault.abort.is_none() {
            problems.push("fault", "give a delay, an abort or both");
        }
        if let Some(delay) = &fault.delay {
            if delay.ms > 3_600_000 {
                problems.push("fault.delay.ms", "must be at most an hour");
            }
            percent("fault.delay.percent", delay.percent, problems);
        }
        if let Some(abort) = &fault.abort {
            if !(200..=599).contains(&abort.status) {
                problems.push("fault.abort.status", "must be an HTTP status between 200 and 599");
            }
            percent("fault.abort.percent", abort.percent, problems);
        }
        if let Some(when) = &fault.when {
            when.validate("fault.when", problems);
        }
    }
}
