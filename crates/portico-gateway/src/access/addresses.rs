//! Client addresses: who the client is behind trusted proxies, and IP allow/deny rules.

use http::HeaderMap;
use ipnet::IpNet;
use portico_model::{parse_cidr, IpRestriction};
use std::net::IpAddr;

/// Proxies in front of Portico whose `X-Forwarded-For` is believed.
#[derive(Default)]
pub(crate) struct TrustedProxies(Box<[IpNet]>);

impl TrustedProxies {
    pub fn new(blocks: &[String]) -> TrustedProxies {
        TrustedProxies(blocks.iter().filter_map(|b| parse_cidr(b).ok()).collect())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the
    /// right-most address in `X-Forwarded-For` that is not itself a trusted proxy (addresses
    /// further left were written by whoever the untrusted hop was, and could be anything).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.0.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else { return client };
            for hop in text.rsplit(',') {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else { return client };
                client = ip.to_canonical();
                if !self.trusts(client) {
                    return client;
                }
            }
        }
        client
    }
}

/// A compiled `ip_restriction` policy.
pub(crate) struct IpRules {
    allow: Box<[IpNet]>,
    deny: Box<[IpNet]>,
}

impl IpRules {
    pub fn new(policy: &IpRestriction) -> IpRules {
        let parse = |list: &[String]| list.iter().filter_map(|b| parse_cidr(b).ok()).collect();
        IpRules { allow: parse(&policy.allow), deny: parse(&policy.deny) }
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.deny.iter().any(|net| net.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted = TrustedProxies::new(&["10.0.0.0/8".into()]);
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.9"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        // From a trusted proxy: the right-most untrusted hop.
        assert_eq!(trusted.client_ip(ip("10.0.0.2"), &headers), ip("203.0.113.9"));
        // From anyone else: the peer, whatever the header says.
        assert_eq!(trusted.client_ip(ip("198.51.100.1"), &headers), ip("198.51.100.1"));
        // Garbage stops the walk at the last address that could be believed.
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9, nonsense"));
        assert_eq!(trusted.client_ip(ip("10.0.0.2"), &bad), ip("10.0.0.2"));
        // IPv4-mapped IPv6 peers are IPv4 clients.
        assert_eq!(TrustedProxies::default().client_ip(ip("::ffff:192.0.2.1"), &headers), ip("192.0.2.1"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let rules =
            IpRules::new(&IpRestriction { allow: vec!["192.0.2.0/24".into()], deny: vec!["192.0.2.66".into()] });
        assert!(rules.admits(ip("192.0.2.1")));
        assert!(!rules.admits(ip("192.0.2.66")));
        assert!(!rules.admits(ip("198.51.100.1")));
    }
}
