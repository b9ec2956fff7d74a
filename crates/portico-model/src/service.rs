//! Services: the upstreams that routes send traffic to.

use crate::{
    validate_name, AiService, Balance, Bulkhead, CircuitBreaker, Discovery, Health, Policies, Problems, Retries, Secret,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An upstream service: where requests go, and how Portico talks to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique name; routes refer to the service by it.
    #[serde(default)]
    pub name: String,
    /// The instances to balance over, when they are listed here.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Where the targets come from when they are not listed: the registry or DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// How requests are spread over the targets (default: smooth weighted round robin).
    #[serde(default, skip_serializing_if = "Balance::is_default")]
    pub balance: Balance,
    /// Active and passive health checks (default: none; every target is taken as healthy).
    #[serde(default, skip_serializing_if = "Health::is_empty")]
    pub health: Health,
    /// Retrying failed requests (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Stop sending requests while the service fails (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Limit the requests in flight to the service (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<Bulkhead>,
    /// How Portico connects to the targets.
    #[serde(default)]
    pub scheme: Scheme,
    /// Time allowed to open a connection to a target.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed for the response headers to arrive (per try, when retrying), and between
    /// two reads of the response body.
    #[serde(default = "defaults::read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Time allowed for the response headers over all tries, backoffs included (default: no
    /// limit beyond the tries' own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_timeout_ms: Option<u64>,
    /// Time allowed between two writes of the request body to the target.
    #[serde(default = "defaults::write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Which `Host` header the target sees.
    #[serde(default)]
    pub host_header: HostHeader,
    /// TLS to the targets, when `scheme` is https: which CAs to trust, which client
    /// certificate to present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Makes this an AI service: instead of forwarding to targets, it answers the OpenAI and
    /// Anthropic APIs (`/v1/chat/completions`, `/v1/messages`, `/v1/models`) with the
    /// configured AI models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiService>,
    /// Access policies for every route to this service, unless the route sets the same kind.
    #[serde(default, skip_serializing_if = "Policies::is_empty")]
    pub policies: Policies,
}

/// How Portico speaks TLS to a service's targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA certificates (PEM) that target certificates must chain to, instead of the public
    /// roots Portico trusts by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// A certificate chain (PEM) Portico presents to targets that ask for one (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// The private key of `client_cert` (PEM); stored sealed, never shown after it is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<Secret>,
}

impl UpstreamTls {
    fn validate(&self, problems: &mut Problems) {
        if let Some(ca) = &self.ca {
            crate::certificate::check_chain("tls.ca", ca, problems);
        }
        if let Some(cert) = &self.client_cert {
            crate::certificate::check_chain("tls.client_cert", cert, problems);
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => problems.push("tls.client_key", "a client certificate needs its private key"),
            (None, Some(_)) => problems.push("tls.client_cert", "a client key needs its certificate"),
            (Some(_), Some(key)) if !key.is_sealed() => {
                if let Err(message) = crate::parse_key(&key.reveal(None).unwrap_or_default()) {
                    problems.push("tls.client_key", message);
                }
            }
            _ => {}
        }
    }
}

impl crate::HoldsSecrets for Service {
    fn secret_slots(&mut self) -> Vec<(String, &mut Option<Secret>)> {
        let mut slots: Vec<_> = self.tls.iter_mut().map(|tls| ("tls.client_key".into(), &mut tls.client_key)).collect();
        slots.extend(self.policies.secret_slots());
        slots
    }
}

mod defaults {
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn read_timeout_ms() -> u64 {
        60_000
    }
    pub fn write_timeout_ms() -> u64 {
        60_000
    }
    pub fn weight() -> u32 {
        1
    }
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`, where host is a name, an IPv4 address or a bracketed IPv6 address.
    pub address: String,
    /// Share of the traffic relative to the other targets; 0 takes the target out of rotation.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostHeader {
    /// Send the target's own `host:port`, as most upstreams expect.
    #[default]
    Upstream,
    /// Pass on the `Host` the client sent.
    Pass,
}

/// The largest weight a target may have; it keeps the balancing schedule small.
pub const MAX_WEIGHT: u32 = 1_000;

impl Service {
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if let Err(message) = validate_name(&self.name) {
            problems.push("name", message);
        }
        match (&self.discovery, self.targets.is_empty()) {
            (_, _) if self.ai.is_some() => {
                if !self.targets.is_empty() || self.discovery.is_some() {
                    problems.push("ai", "an AI service answers with its models: it takes no targets or discovery");
                }
                if let Some(ai) = &self.ai {
                    ai.validate(&mut problems);
                }
            }
            (None, true) => problems.push("targets", "a service needs at least one target, or `discovery`"),
            (Some(_), false) => problems.push("targets", "list targets or use `discovery`, not both"),
            (Some(discovery), true) => discovery.validate(&mut problems),
            (None, false) => {}
        }
        for (i, target) in self.targets.iter().enumerate() {
            if let Err(message) = parse_address(&target.address) {
                problems.push(format!("targets[{i}].address"), message);
            }
            if target.weight > MAX_WEIGHT {
                problems.push(format!("targets[{i}].weight"), format!("must be at most {MAX_WEIGHT}"));
            }
        }
        if !self.targets.is_empty() && self.targets.iter().all(|t| t.weight == 0) {
            problems.push("targets", "at least one target needs a weight above 0");
        }
        for (field, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
        ] {
            problems.check_ms(field, value, 1);
        }
        if let Some(total) = self.total_timeout_ms {
            problems.check_ms("total_timeout_ms", total, 1);
        }
        if let Some(retries) = &self.retries {
            retries.validate(&mut problems);
        }
        if let Some(breaker) = &self.circuit_breaker {
            breaker.validate(&mut problems);
        }
        if let Some(bulkhead) = &self.bulkhead {
            bulkhead.validate(&mut problems);
        }
        self.balance.validate(&mut problems);
        self.health.validate(&mut problems);
        self.policies.validate(&mut problems);
        if let Some(tls) = &self.tls {
            if self.scheme != Scheme::Https {
                problems.push("tls", "TLS settings need `scheme: https`");
            }
            tls.validate(&mut problems);
        }
        problems.into_result()
    }
}

/// Splits `host:port` and checks both halves.
pub fn parse_address(address: &str) -> Result<(&str, u16), String> {
    let bad = || format!("`{address}` is not a valid `host:port` address");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = if let Some(ip6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        ip6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    };
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(address: &str) -> Service {
        Service {
            name: "users".into(),
            targets: vec![Target { address: address.into(), weight: 1 }],
            discovery: None,
            balance: Balance::default(),
            health: Health::default(),
            retries: None,
            circuit_breaker: None,
            bulkhead: None,
            total_timeout_ms: None,
            scheme: Scheme::Http,
            connect_timeout_ms: 1,
            read_timeout_ms: 1,
            write_timeout_ms: 1,
            host_header: HostHeader::Upstream,
            tls: None,
            ai: None,
            policies: Policies::default(),
        }
    }

    #[test]
    fn addresses() {
        for ok in ["127.0.0.1:80", "users.internal:8080", "[::1]:9000"] {
            assert!(service(ok).validate().is_ok(), "{ok}");
        }
        for bad in ["127.0.0.1", "host:0", "host:99999", ":80", "a b:80", "[zz]:80"] {
            assert!(service(bad).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut s = service("nope");
        s.name = "bad name".into();
        s.read_timeout_ms = 0;
        let problems = s.validate().err().unwrap_or_default();
        let paths: Vec<_> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["name", "targets[0].address", "read_timeout_ms"]);
    }
}
