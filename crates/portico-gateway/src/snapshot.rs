//! Compiling a configuration into an immutable snapshot, and the cell that holds the current one.

use crate::access::{self, AccessPolicy, AccessShared, AccessStates};
use crate::ai::{self, AiCompiled, BudgetReport, KeyReport};
use crate::observe::{RouteCounters, Telemetry};
use crate::proxy::{Condition, Fault, Mirror, Share};
use crate::router::{Precedence, Router, Rule};
use crate::server::TlsCertificates;
use crate::upstream::{ClientTls, Discovered, TargetReport, Upstream, UpstreamStates};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use portico_model::{Config, MasterKey, PathPattern, Problems, Route};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Everything the request path needs, compiled from one revision of the configuration.
pub struct Snapshot {
    /// The store revision (or file generation) this snapshot was compiled from.
    pub revision: i64,
    pub(crate) router: Router,
    pub(crate) routes: Vec<CompiledRoute>,
    /// Every service, whether a route uses it or not (health checks probe them all).
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    /// Consumers and trusted proxies, for the access phase.
    pub(crate) access: AccessShared,
    /// Certificates for the TLS listener, by server name.
    pub(crate) tls: TlsCertificates,
    /// AI providers and services.
    pub(crate) ai: AiCompiled,
}

/// A route, ready for the request path.
pub(crate) struct CompiledRoute {
    pub name: Arc<str>,
    /// The route's path patterns, indexed by [`crate::router::Match::pattern`].
    pub patterns: Vec<PathPattern>,
    pub rewrite: PathRewrite,
    pub max_body_bytes: Option<u64>,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub https_only: bool,
    /// The service's retry policy may retry methods that are not idempotent.
    pub retry_non_idempotent: bool,
    pub action: Action,
    /// Shares of the traffic for other services.
    pub shares: Box<[Share]>,
    pub mirror: Option<Mirror>,
    pub fault: Option<Fault>,
    /// The access policies that apply; `None` when there are none.
    pub access: Option<Box<AccessPolicy>>,
    /// The route's metrics, kept across reloads.
    pub counters: Arc<RouteCounters>,
    /// The text of each path pattern, for the access log.
    pub templates: Box<[Arc<str>]>,
}

/// How the path sent upstream is derived from the request path.
pub(crate) enum PathRewrite {
    Keep,
    StripPrefix,
    Template(PathPattern),
}

pub(crate) enum Action {
    Forward(Arc<Upstream>),
    /// An AI service answers.
    Ai(ai::AiRoute),
    Mock(MockResponse),
}

pub(crate) struct MockResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The current snapshot, swapped atomically when the configuration changes; and the signal
/// that wakes the tasks that follow it (health checks, DNS discovery, the registry).
#[derive(Clone)]
pub struct SnapshotCell {
    current: Arc<ArcSwap<Snapshot>>,
    changes: Arc<watch::Sender<()>>,
}

impl SnapshotCell {
    pub fn new(snapshot: Snapshot) -> SnapshotCell {
        SnapshotCell { current: Arc::new(ArcSwap::from_pointee(snapshot)), changes: Arc::new(watch::Sender::new(())) }
    }

    /// The current snapshot; a request keeps it until it ends.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.wake_followers();
    }

    pub fn revision(&self) -> i64 {
        self.current.load().revision
    }

    /// Tells the followers to look again: the snapshot or its discovered targets changed.
    pub fn wake_followers(&self) {
        self.changes.send_replace(());
    }

    /// A receiver that sees every [`SnapshotCell::wake_followers`] after it was made or last
    /// looked at.
    pub fn follow(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }
}

impl Snapshot {
    /// A snapshot with no routes: every request gets 404.
    pub fn empty() -> Snapshot {
        Snapshot {
            revision: 0,
            router: Router::default(),
            routes: Vec::new(),
            upstreams: Vec::new(),
            access: AccessShared::default(),
            tls: TlsCertificates::default(),
            ai: AiCompiled::default(),
        }
    }

    /// The state of an AI provider's keys, if there is such a provider.
    pub fn ai_keys(&self, provider: &str) -> Option<Vec<KeyReport>> {
        self.ai.providers.get(provider).map(|p| p.keys.report())
    }

    /// Where AI budget `name` stands in its current period, across the cluster.
    pub async fn ai_budget(&self, name: &str) -> Option<BudgetReport> {
        self.ai.budgets.report(name).await
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// The registry names that services take their targets from.
    pub fn registry_names(&self) -> Vec<&str> {
        self.upstreams.iter().filter_map(|u| u.discovery_source.as_deref()?.strip_prefix("registry:")).collect()
    }

    /// A service by name.
    pub(crate) fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.binary_search_by(|u| (*u.name).cmp(name)).ok().map(|i| &self.upstreams[i])
    }

    /// The run-time state of a service and its targets; `None` if no such service is
    /// being served.
    pub fn service_health(&self, service: &str) -> Option<ServiceReport> {
        let upstream = self.upstream(service)?;
        Some(ServiceReport {
            circuit: upstream.breaker.as_ref().map(|_| upstream.state.breaker.state_name()),
            bulkhead_in_flight: upstream.bulkhead.as_ref().map(|b| b.in_flight()),
            targets: {
                let members = upstream.members();
                let targets = members.targets.iter().zip(members.weights());
                targets.map(|(t, &w)| (t.authority.to_string(), w, t.state.report())).collect()
            },
        })
    }
}

/// A point-in-time view of a service, for the admin API.
pub struct ServiceReport {
    /// The circuit breaker's state (`closed`, `open`, `half_open`), if it has one.
    pub circuit: Option<&'static str>,
    /// Requests holding a place in the bulkhead, if it has one.
    pub bulkhead_in_flight: Option<usize>,
    /// Address, weight and state of each target, in configuration order.
    pub targets: Vec<(String, u32, TargetReport)>,
}

/// Compiles a configuration. It validates first, so a snapshot is only ever built from a
/// configuration that is correct as a whole. Targets take their run-time state from
/// `states`, and rate limits their counters from `limiters`, so that what was learnt and
/// counted survives the reload. Sealed secrets (certificate keys) are opened with
/// `master_key`.
pub fn compile(
    config: &Config,
    revision: i64,
    states: &UpstreamStates,
    discovered: &Discovered,
    limiters: &AccessStates,
    telemetry: &Telemetry,
    master_key: Option<&MasterKey>,
) -> Result<Snapshot, Problems> {
    config.validate()?;
    let tls = TlsCertificates::compile(&config.certificates, config.global.client_ca.as_deref(), master_key).map_err(
        |message| Problems(vec![portico_model::Problem { path: "certificates".into(), message, line: None }]),
    )?;
    let upstreams: HashMap<&str, Arc<Upstream>> = config
        .services
        .iter()
        .map(|s| {
            let tls = s.tls.as_ref().map(|tls| ClientTls::new(tls, master_key)).transpose().map_err(|message| {
                Problems(vec![portico_model::Problem { path: format!("services.{}.tls", s.name), message, line: None }])
            })?;
            Ok((s.name.as_str(), Arc::new(Upstream::new(s, states, discovered, tls.map(Arc::new)))))
        })
        .collect::<Result<_, Problems>>()?;
    let ai = ai::compile(config, states, limiters.redis().cloned(), master_key)?;
    let mut routes: Vec<&Route> = config.routes.iter().collect();
    // Route order breaks ties in the router; sorting by name makes it independent of input order.
    routes.sort_by(|a, b| a.name.cmp(&b.name));

    let mut rules = Vec::new();
    let mut compiled = Vec::with_capacity(routes.len());
    for (i, route) in routes.iter().enumerate() {
        let invalid = |message: String| {
            Problems(vec![portico_model::Problem { path: format!("routes.{}", route.name), message, line: None }])
        };
        rules.extend(rules_for(i, route).map_err(invalid)?);
        let action = match (&route.service, &route.mock) {
            (Some(service), _) => match ai.endpoints.get(service.as_str()) {
                Some(endpoint) => {
                    let prompt = route.prompt.as_ref().map(|p| ai::PromptApi::compile(p, &config.ai_prompts));
                    let prompt = prompt.transpose().map_err(|p| invalid(p.to_string()))?;
                    let cache = route.ai_cache.as_ref().map(|c| states.ai_cache(&route.name, c));
                    Action::Ai(ai::AiRoute { endpoint: endpoint.clone(), prompt: prompt.map(Arc::new), cache })
                }
                None => Action::Forward(
                    upstreams
                        .get(service.as_str())
                        .cloned()
                        .ok_or_else(|| invalid(format!("no service `{service}`")))?,
                ),
            },
            (None, Some(mock)) => Action::Mock(compile_mock(mock)),
            (None, None) => return Err(invalid("no service or mock".into())),
        };
        let rewrite = match (&route.rewrite, route.strip_prefix) {
            (Some(template), _) => PathRewrite::Template(PathPattern::parse(template).map_err(invalid)?),
            (None, true) => PathRewrite::StripPrefix,
            (None, false) => PathRewrite::Keep,
        };
        let upstream = |name: &str| upstreams.get(name).cloned().ok_or_else(|| invalid(format!("no service `{name}`")));
        let shares = route
            .split
            .iter()
            .map(|s| {
                let when = s.when.as_ref().and_then(Condition::new);
                Ok(Share { upstream: upstream(&s.service)?, weight: s.weight, when })
            })
            .collect::<Result<_, Problems>>()?;
        let mirror = match &route.mirror {
            Some(m) => Some(Mirror { upstream: upstream(&m.service)?, percent: m.percent }),
            None => None,
        };
        let patterns: Vec<PathPattern> =
            route.path_patterns().into_iter().collect::<Result<_, _>>().map_err(invalid)?;
        compiled.push(CompiledRoute {
            name: route.name.as_str().into(),
            templates: patterns.iter().map(|p| p.to_string().into()).collect(),
            patterns,
            rewrite,
            max_body_bytes: route.max_body_bytes,
            https_only: route.https_only,
            retry_non_idempotent: route.retry_non_idempotent,
            action,
            shares,
            mirror,
            fault: route.fault.as_ref().map(Fault::new),
            access: access::compile_route(route, config, limiters, master_key).map_err(invalid)?,
            counters: telemetry.route(&route.name),
        });
    }
    let live: rustc_hash::FxHashSet<(&str, &str)> =
        config.services.iter().flat_map(|s| s.targets.iter().map(|t| (s.name.as_str(), t.address.as_str()))).collect();
    // Discovered services keep their targets' state: their targets are not in the config.
    let discovering: rustc_hash::FxHashSet<&str> =
        config.services.iter().filter(|s| s.discovery.is_some()).map(|s| s.name.as_str()).collect();
    states.retain(
        |service, address| live.contains(&(service, address)) || discovering.contains(service),
        |service| upstreams.contains_key(service),
    );
    let mut upstreams: Vec<Arc<Upstream>> = upstreams.into_values().collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    let live_routes: rustc_hash::FxHashSet<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    telemetry.retain_routes(|name| live_routes.contains(name));
    states.retain_ai_caches(config.routes.iter().filter_map(|r| Some((r.name.as_str(), r.ai_cache.as_ref()?))));
    let access = AccessShared::compile(config, limiters);
    Ok(Snapshot { revision, router: Router::new(rules), routes: compiled, upstreams, access, tls, ai })
}

/// The router rules of one route: one per (host pattern, path pattern) pair.
pub(crate) fn rules_for(index: usize, route: &Route) -> Result<Vec<Rule>, String> {
    let methods = route.method_set()?;
    let headers = route.header_matches()?;
    let paths: Vec<PathPattern> = route.path_patterns().into_iter().collect::<Result<_, _>>()?;
    let mut rules = Vec::new();
    for host in route.host_patterns() {
        let host = host?;
        for (pattern, path) in paths.iter().enumerate() {
            rules.push(Rule {
                route: index,
                pattern,
                precedence: Precedence {
                    priority: route.priority,
                    host: host.precedence(),
                    path: path.precedence(),
                    header_count: headers.len(),
                    has_methods: !methods.is_any(),
                },
                host: host.clone(),
                path: path.clone(),
                methods,
                headers: headers.clone(),
            });
        }
    }
    Ok(rules)
}

pub(crate) fn compile_mock(mock: &portico_model::MockResponse) -> MockResponse {
    // Validation has checked the status and every header, so nothing is dropped here.
    let mut headers = HeaderMap::new();
    for (name, value) in &mock.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(name, value);
        }
    }
    MockResponse {
        status: StatusCode::from_u16(mock.status).unwrap_or(StatusCode::OK),
        headers,
        body: Bytes::from(mock.body.clone()),
    }
}
