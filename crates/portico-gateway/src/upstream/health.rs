//! Active health checks: one probe loop per target of every service that asks for them.
//!
//! The checker follows the snapshot: when the configuration changes it starts probes for
//! new targets (or changed checks) and stops those whose target or check is gone. Probes
//! write into the targets' shared state (`state.rs`), which the balancers read; the request
//! path never waits on a probe.

use super::state::TargetState;
use super::tasks::{self, KeyedTasks};
use super::Discovered;
use crate::SnapshotCell;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use portico_model::{ActiveCheck, StatusSet};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One probe loop: which target, with which check, over which TLS settings.
#[derive(PartialEq, Eq, Hash)]
struct ProbeKey {
    service: Box<str>,
    url: String,
    check: ActiveCheck,
    tls: Option<u64>,
}

/// Runs the active health checks until `shutdown` turns true; every probe stops with it.
pub async fn run_health_checks(snapshots: SnapshotCell, discovered: Discovered, mut shutdown: watch::Receiver<bool>) {
    let default_client = client(None);

    let mut probes = KeyedTasks::new();
    // What the running probes were set up for: a snapshot and a generation of discovered
    // targets.
    let mut seen = None;
    let mut changes = snapshots.follow();
    while !*shutdown.borrow() {
        let snapshot = snapshots.load();
        if seen != Some((snapshot.revision, discovered.generation())) {
            seen = Some((snapshot.revision, discovered.generation()));
            let mut wanted = HashMap::new();
            for upstream in &snapshot.upstreams {
                let Some(check) = &upstream.active_check else { continue };
                for target in upstream.members().targets.iter() {
                    let url = format!("{}://{}{}", upstream.scheme, target.authority, check.path);
                    let tls = upstream.tls.as_ref();
                    let key = ProbeKey {
                        service: upstream.name.as_ref().into(),
                        url,
                        check: check.clone(),
                        tls: tls.map(|t| t.id),
                    };
                    wanted.insert(key, (target.state.clone(), tls.map(|t| t.config.clone())));
                }
            }
            probes.reconcile(wanted, |key, (state, tls)| {
                // Probes speak TLS as the service's requests do (its CA, its client certificate).
                let client = if tls.is_some() { client(tls) } else { default_client.clone() };
                probe_loop(client, key.url.clone(), key.check.clone(), state)
            });
        }
        tasks::pause(&mut changes, &mut shutdown).await;
    }
    probes.shutdown().await;
}

/// A probe client, with the public roots or with a service's own TLS settings.
fn client(tls: Option<Arc<rustls::ClientConfig>>) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match tls {
        Some(config) => builder.with_tls_config((*config).clone()),
        None => builder.with_webpki_roots(),
    };
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    // No pooling: a probe must see whether a new connection can be made.
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector)
}

async fn probe_loop(client: HttpClient, url: String, check: ActiveCheck, state: Arc<TargetState>) {
    let Ok(uri) = url.parse::<Uri>() else { return };
    let statuses = StatusSet::parse(&check.statuses).unwrap_or_default();
    let timeout = Duration::from_millis(check.timeout_ms);
    let mut interval = tokio::time::interval(Duration::from_millis(check.interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let result = probe(&client, &uri, &statuses, timeout).await;
        state.record_probe(result, check.healthy_threshold, check.unhealthy_threshold);
    }
}

/// One probe: `Ok` when the target answered with an expected status within the timeout.
async fn probe(client: &HttpClient, uri: &Uri, statuses: &StatusSet, timeout: Duration) -> Result<(), String> {
    let request = Request::get(uri.clone())
        .header(header::USER_AGENT, "portico-health-check")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Err(format!("no response within {} ms", timeout.as_millis())),
        Ok(Err(error)) => Err(describe(&error)),
        Ok(Ok(response)) if statuses.contains(response.status().as_u16()) => Ok(()),
        Ok(Ok(response)) => Err(format!("unexpected status {}", response.status().as_u16())),
    }
}

/// The innermost cause, which says what happened ("Connection refused") where the outer
/// errors only say where.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
