//! Where a service's targets come from when they are not listed: the registry, or DNS.

use crate::{validate_name, Problems};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Service discovery. Exactly one of `registry` and `dns` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// The registry name whose live instances are the targets (usually the service's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDiscovery>,
}

/// Targets from DNS, re-resolved when the records' TTL runs out (kept within the bounds).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    /// The name to resolve: its A and AAAA records, with `port`; or with `srv: true`, its SRV
    /// records, which give each target's port and weight.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub srv: bool,
    #[serde(default = "defaults::min_ttl_ms")]
    pub min_ttl_ms: u64,
    #[serde(default = "defaults::max_ttl_ms")]
    pub max_ttl_ms: u64,
    /// A nameserver (`ip:port`) to ask instead of the system's resolvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
}

mod defaults {
    pub fn min_ttl_ms() -> u64 {
        1_000
    }
    pub fn max_ttl_ms() -> u64 {
        300_000
    }
}

impl Discovery {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        match (&self.registry, &self.dns) {
            (Some(name), None) => {
                if let Err(message) = validate_name(name) {
                    problems.push("discovery.registry", message);
                }
            }
            (None, Some(dns)) => dns.validate(problems),
            _ => problems.push("discovery", "give either `registry` or `dns`"),
        }
    }
}

impl DnsDiscovery {
    fn validate(&self, problems: &mut Problems) {
        let name = self.name.trim_end_matches('.');
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            problems.push("discovery.dns.name", format!("`{}` is not a DNS name", self.name));
        }
        match (self.srv, self.port) {
            (false, None | Some(0)) => problems.push("discovery.dns.port", "A and AAAA records need a port"),
            (true, Some(_)) => problems.push("discovery.dns.port", "SRV records carry their own ports"),
            _ => {}
        }
        if self.min_ttl_ms == 0 || self.min_ttl_ms > self.max_ttl_ms || self.max_ttl_ms > crate::MAX_MS {
            problems.push("discovery.dns.min_ttl_ms", "need 0 < min_ttl_ms <= max_ttl_ms <= one day");
        }
        if let Some(server) = &self.nameserver {
            if server.parse::<std::net::SocketAddr>().is_err() {
                problems.push("discovery.dns.nameserver", format!("`{server}` is not an `ip:port` address"));
            }
        }
    }
}
