//! Upstream services: targets, weighted round robin, timeouts, and the connection pools.

use crate::proxy::RequestBody;
use http::uri::{Authority, Scheme};
use http::HeaderValue;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portico_model::{HostHeader, Service};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A compiled service.
pub(crate) struct Upstream {
    pub name: Box<str>,
    pub scheme: Scheme,
    pub targets: Box<[UpstreamTarget]>,
    /// Target indexes in smooth weighted round-robin order; the cursor walks it.
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub host_header: HostHeader,
}

pub(crate) struct UpstreamTarget {
    pub authority: Authority,
    /// The `Host` header that names this target.
    pub host: HeaderValue,
}

impl Upstream {
    pub fn new(service: &Service) -> Upstream {
        let targets: Vec<UpstreamTarget> = service
            .targets
            .iter()
            .filter_map(|t| {
                // Addresses were validated as host:port, so both conversions succeed.
                Some(UpstreamTarget {
                    authority: t.address.parse().ok()?,
                    host: HeaderValue::from_str(&t.address).ok()?,
                })
            })
            .collect();
        let weights: Vec<u32> = service.targets.iter().map(|t| t.weight).collect();
        Upstream {
            name: service.name.as_str().into(),
            scheme: match service.scheme {
                portico_model::Scheme::Http => Scheme::HTTP,
                portico_model::Scheme::Https => Scheme::HTTPS,
            },
            targets: targets.into_boxed_slice(),
            schedule: smooth_weighted_schedule(&weights).into_boxed_slice(),
            cursor: AtomicUsize::new(0),
            connect_timeout: Duration::from_millis(service.connect_timeout_ms),
            read_timeout: Duration::from_millis(service.read_timeout_ms),
            write_timeout: Duration::from_millis(service.write_timeout_ms),
            host_header: service.host_header,
        }
    }

    /// The next target in weighted round-robin order.
    pub fn pick(&self) -> &UpstreamTarget {
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        &self.targets[self.schedule[turn] as usize]
    }
}

/// One full cycle of smooth weighted round robin: each target appears `weight / gcd` times,
/// spread out rather than in bursts (weights 5, 1, 1 give a a b a c a a, not a a a a a b c).
fn smooth_weighted_schedule(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().copied().filter(|w| *w > 0).reduce(gcd).unwrap_or(1);
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let (best, _) = current.iter().enumerate().max_by_key(|(i, c)| (**c, -(*i as i64))).unwrap_or((0, &0));
        current[best] -= total;
        schedule.push(best as u32);
    }
    if schedule.is_empty() {
        schedule.push(0);
    }
    schedule
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// The connection pools of one worker. Pools are per worker so that a connection is always
/// driven by the runtime that uses it, and keyed by connect timeout because the timeout is a
/// property of the connector.
#[derive(Default)]
pub(crate) struct Pools {
    clients: Mutex<Vec<(Duration, Arc<HttpClient>)>>,
}

/// Upstream connections idle longer than this are closed. It is kept below the usual
/// upstream keep-alive timeouts (60 s and more) so that Portico closes an idle connection
/// before the upstream does, instead of racing it with a new request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

impl Pools {
    pub fn client(&self, connect_timeout: Duration) -> Arc<HttpClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, client)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
            return client.clone();
        }
        let client = Arc::new(new_client(connect_timeout));
        clients.push((connect_timeout, client.clone()));
        client
    }
}

fn new_client(connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(1024)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_schedules_are_smooth_and_proportional() {
        assert_eq!(smooth_weighted_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_schedule(&[2, 2]), [0, 1]);
        assert_eq!(smooth_weighted_schedule(&[3, 0]), [0]);
        let schedule = smooth_weighted_schedule(&[300, 100]);
        assert_eq!(schedule, [0, 0, 1, 0]);
    }
}
