//! DNS discovery: one resolver loop per service that takes its targets from DNS.
//!
//! A loop resolves the name (A and AAAA records with the configured port, or SRV records
//! whose targets are resolved in turn), hands the targets to [`Discovered`], and sleeps for
//! the records' TTL kept within the service's bounds. When a lookup fails, the last targets
//! stay and the lookup is tried again after the minimum TTL. Like the health checker, the
//! loops follow the snapshot and stop with the gateway.

use super::tasks::{self, KeyedTasks};
use super::{Discovered, UpstreamStates};
use crate::SnapshotCell;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use portico_model::DnsDiscovery;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Runs DNS discovery until `shutdown` turns true.
pub async fn run_dns_discovery(
    snapshots: SnapshotCell,
    discovered: Discovered,
    states: UpstreamStates,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut loops = KeyedTasks::new();
    let mut revision = None;
    let mut changes = snapshots.follow();
    while !*shutdown.borrow() {
        let snapshot = snapshots.load();
        if revision != Some(snapshot.revision) {
            revision = Some(snapshot.revision);
            let wanted: HashMap<(Box<str>, DnsDiscovery), ()> = snapshot
                .upstreams
                .iter()
                .filter_map(|u| Some(((u.name.as_ref().into(), u.dns.clone()?), ())))
                .collect();
            loops.reconcile(wanted, |(service, dns), ()| {
                resolve_loop(service.clone(), dns.clone(), discovered.clone(), snapshots.clone(), states.clone())
            });
        }
        tasks::pause(&mut changes, &mut shutdown).await;
    }
    loops.shutdown().await;
}

async fn resolve_loop(
    service: Box<str>,
    dns: DnsDiscovery,
    discovered: Discovered,
    snapshots: SnapshotCell,
    states: UpstreamStates,
) {
    let resolver = match resolver(&dns) {
        Ok(resolver) => resolver,
        Err(error) => return tracing::error!(%service, %error, "cannot set up DNS discovery"),
    };
    let (min, max) = (Duration::from_millis(dns.min_ttl_ms), Duration::from_millis(dns.max_ttl_ms));
    let source = format!("dns:{service}");
    loop {
        let wait = match lookup(&resolver, &dns).await {
            Ok((targets, ttl)) => {
                discovered.update(&source, targets, &snapshots, &states);
                ttl.clamp(min, max)
            }
            Err(error) => {
                tracing::warn!(%service, name = %dns.name, %error, "DNS lookup failed; keeping the last targets");
                min
            }
        };
        tokio::time::sleep(wait).await;
    }
}

fn resolver(dns: &DnsDiscovery) -> Result<TokioResolver, String> {
    let mut builder = match &dns.nameserver {
        Some(server) => {
            let address = server.parse().map_err(|_| format!("bad nameserver `{server}`"))?;
            let mut config = ResolverConfig::new();
            config.add_name_server(NameServerConfig::new(address, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(address, Protocol::Tcp));
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    // Portico decides when to ask again; a cache would hide changes until its own expiry.
    builder.options_mut().cache_size = 0;
    Ok(builder.build())
}

/// The targets (`ip:port`, weight) and how long they are good for.
async fn lookup(resolver: &TokioResolver, dns: &DnsDiscovery) -> Result<(Vec<(String, u32)>, Duration), String> {
    let now = Instant::now();
    let mut targets = Vec::new();
    if !dns.srv {
        let port = dns.port.unwrap_or(80);
        let found = resolver.lookup_ip(dns.name.as_str()).await.map_err(|e| e.to_string())?;
        targets.extend(found.iter().map(|ip| (std::net::SocketAddr::new(ip, port).to_string(), 1)));
        return Ok((targets, found.valid_until().saturating_duration_since(now)));
    }
    let found = resolver.srv_lookup(dns.name.as_str()).await.map_err(|e| e.to_string())?;
    let mut ttl = found.as_lookup().valid_until().saturating_duration_since(now);
    // Only the most preferred priority is used; the others are for when it is empty.
    let Some(best) = found.iter().map(|srv| srv.priority()).min() else { return Ok((targets, ttl)) };
    for srv in found.iter().filter(|srv| srv.priority() == best) {
        let ips = resolver.lookup_ip(srv.target().clone()).await.map_err(|e| e.to_string())?;
        ttl = ttl.min(ips.valid_until().saturating_duration_since(now));
        let weight = u32::from(srv.weight()).clamp(1, portico_model::MAX_WEIGHT);
        targets.extend(ips.iter().map(|ip| (std::net::SocketAddr::new(ip, srv.port()).to_string(), weight)));
    }
    Ok((targets, ttl))
}
