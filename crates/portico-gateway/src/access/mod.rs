//! The access phase: who is calling and whether they may.
//!
//! [`check`] runs a route's policies in this fixed order, the one place it is written down:
//!
//! 1. **client IP**: `ip_restriction` allow/deny, on the address behind trusted proxies;
//! 2. **CORS**: a preflight is answered here, before authentication, because browsers send
//!    no credentials with it; actual requests get their CORS headers;
//! 3. **authentication**: `mtls_auth` (a client certificate the TLS listener verified), then
//!    `jwt_auth` (a bearer token), then `key_auth`, then `basic_auth`; the first credential
//!    presented decides; the consumer's name goes upstream in `X-Consumer`, and the credential
//!    header is left out unless the policy keeps it ([`UpstreamIdentity`]);
//! 4. **authorization**: `acl` by consumer and group;
//! 5. **rate limits**: the consumer's own `rate_limit`, else the route's.
//!
//! A rejection here never touches the upstream. Each kind of policy is taken from the most
//! specific place that sets it: consumer (rate limits only), route, service, global.

mod addresses;
mod cors;
mod identity;
mod jwt;
mod rate_limit;

pub(crate) use cors::preflight_method;
pub(crate) use identity::Consumer;
pub use rate_limit::{AccessStates, RedisLimits, RedisReport};

use crate::proxy::{Client, ProxyError, ResponseBody};
use addresses::{IpRules, TrustedProxies};
use cors::CorsPolicy;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use identity::Consumers;
use jwt::JwtPolicy;
use portico_model::{Acl, Config, KeyAuth, MasterKey, Policies, Route};
pub(crate) use rate_limit::LimitHeaders;
use rate_limit::{Caller, RateLimiter};
use std::sync::Arc;
use std::time::SystemTime;

static X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");
static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
/// A static, so that a credential's header can be referred to for as long as the snapshot.
static AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;

/// What every route's access phase shares in one snapshot.
#[derive(Default)]
pub(crate) struct AccessShared {
    consumers: Consumers,
    trusted: TrustedProxies,
}

impl AccessShared {
    pub fn compile(config: &Config, limiters: &AccessStates) -> AccessShared {
        AccessShared {
            consumers: Consumers::compile(config, limiters),
            trusted: TrustedProxies::new(&config.global.trusted_proxies),
        }
    }
}

/// A route's access policies, ready for the request path.
pub(crate) struct AccessPolicy {
    ip: Option<IpRules>,
    cors: Option<CorsPolicy>,
    key_auth: Option<KeyLookup>,
    /// Client certificates (verified by the TLS listener) identify consumers.
    mtls_auth: bool,
    jwt_auth: Option<JwtPolicy>,
    /// `Some(keep_credential)` when Basic authentication is on.
    basic_auth: Option<bool>,
    acl: Option<AclRules>,
    rate_limit: Option<Arc<RateLimiter>>,
}

struct KeyLookup {
    header: HeaderName,
    query: Option<Box<str>>,
    keep_credential: bool,
    /// Also `Authorization: Bearer <key>`.
    bearer: bool,
}

struct AclRules {
    allow_consumers: Box<[Box<str>]>,
    allow_groups: Box<[Box<str>]>,
    deny_consumers: Box<[Box<str>]>,
    deny_groups: Box<[Box<str>]>,
}

/// Compiles the policies that apply to `route`: its own, then its service's, then the global
/// ones. `None` when there are none, so that such routes skip the phase entirely. Fails when
/// a secret cannot be opened with `master_key`.
pub(crate) fn compile_route(
    route: &Route,
    config: &Config,
    limiters: &AccessStates,
    master_key: Option<&MasterKey>,
) -> Result<Option<Box<AccessPolicy>>, String> {
    let service = route.service.as_deref().and_then(|name| config.service(name));
    let service_policies = service.map(|s| &s.policies);
    let effective = route.policies.over(&service_policies.cloned().unwrap_or_default()).over(&config.global.policies);
    if effective.is_empty() {
        return Ok(None);
    }
    // A rate limit counts per place it is attached to: a service's limit is shared by all
    // of the service's routes.
    let limit_scope = if route.policies.rate_limit.is_some() {
        format!("route:{}", route.name)
    } else if let Some(service) = service.filter(|s| s.policies.rate_limit.is_some()) {
        format!("service:{}", service.name)
    } else {
        "global".to_owned()
    };
    Ok(Some(Box::new(AccessPolicy::new(&effective, &limit_scope, limiters, master_key)?)))
}

impl AccessPolicy {
    fn new(
        policies: &Policies,
        limit_scope: &str,
        limiters: &AccessStates,
        master_key: Option<&MasterKey>,
    ) -> Result<AccessPolicy, String> {
        let jwt_auth = match &policies.jwt_auth {
            Some(jwt) => Some(JwtPolicy::new(jwt, &limiters.key_sets, master_key)?),
            None => None,
        };
        Ok(AccessPolicy {
            ip: policies.ip_restriction.as_ref().map(IpRules::new),
            cors: policies.cors.as_ref().map(CorsPolicy::new),
            key_auth: policies.key_auth.as_ref().map(KeyLookup::new),
            mtls_auth: policies.mtls_auth.is_some(),
            jwt_auth,
            basic_auth: policies.basic_auth.as_ref().map(|b| b.keep_credential),
            acl: policies.acl.as_ref().map(AclRules::new),
            rate_limit: policies.rate_limit.as_ref().map(|limit| limiters.compile(limit_scope, limit)),
        })
    }
}

impl KeyLookup {
    fn new(policy: &KeyAuth) -> KeyLookup {
        KeyLookup {
            // Validation has checked the name.
            header: HeaderName::from_bytes(policy.header.as_bytes()).unwrap_or(HeaderName::from_static("x-api-key")),
            query: policy.query.as_deref().map(Into::into),
            keep_credential: policy.keep_credential,
            bearer: policy.bearer,
        }
    }
}

impl AclRules {
    fn new(acl: &Acl) -> AclRules {
        let list = |names: &[String]| names.iter().map(|n| n.as_str().into()).collect();
        AclRules {
            allow_consumers: list(&acl.allow_consumers),
            allow_groups: list(&acl.allow_groups),
            deny_consumers: list(&acl.deny_consumers),
            deny_groups: list(&acl.deny_groups),
        }
    }

    fn admits(&self, consumer: &Consumer) -> bool {
        let named = |list: &[Box<str>]| list.iter().any(|n| **n == *consumer.name);
        let grouped = |list: &[Box<str>]| list.iter().any(|g| consumer.groups.contains(g));
        if named(&self.deny_consumers) || grouped(&self.deny_groups) {
            return false;
        }
        let restricted = !self.allow_consumers.is_empty() || !self.allow_groups.is_empty();
        !restricted || named(&self.allow_consumers) || grouped(&self.allow_groups)
    }
}

/// What the upstream is told by the access phase: who the caller is (`X-Consumer`,
/// `X-Consumer-Groups`) and which credential header it does not get.
///
/// These go out with the request head as headers Portico sets or clears (`SetHeaders`), like
/// `X-Request-Id`, not through the request's header map: that saves a hash and an insert or
/// removal for each on every authenticated request. The phases between access and the
/// upstream that read headers to decide (faults, splits, an AI service) get them applied to
/// the map first ([`UpstreamIdentity::apply_to`]), so that they see what the upstream would.
#[derive(Default, Clone, Copy)]
pub(crate) struct UpstreamIdentity<'s> {
    /// The request was authenticated: the identity headers are Portico's, and a client's own
    /// never pass (a token whose subject is no consumer's leaves them out).
    authenticated: bool,
    consumer: Option<&'s Consumer>,
    /// The header that carried the credential, unless the policy keeps it.
    credential: Option<&'s HeaderName>,
}

impl<'s> UpstreamIdentity<'s> {
    /// The headers to set (`Some`) or leave out (`None`) upstream: at most three.
    pub fn headers(&self) -> impl Iterator<Item = (&'s HeaderName, Option<&'s HeaderValue>)> {
        let who = [
            (&X_CONSUMER, self.consumer.map(|c| &c.name_header)),
            (&X_CONSUMER_GROUPS, self.consumer.and_then(|c| c.groups_header.as_ref())),
        ];
        let credential = self.credential.map(|header| (header, None));
        self.authenticated.then_some(who).into_iter().flatten().chain(credential)
    }

    /// Writes the identity into `headers` and leaves nothing to set with the head.
    pub fn apply_to(&mut self, headers: &mut HeaderMap) {
        for (name, value) in self.headers() {
            match value {
                Some(value) => headers.insert(name, value.clone()),
                None => headers.remove(name),
            };
        }
        *self = UpstreamIdentity::default();
    }
}

/// What the access phase decided besides admitting the request: headers for the eventual
/// response, whatever it turns out to be (errors included), kept as values and written once
/// the response exists; and what the upstream is told.
#[derive(Default)]
pub(crate) struct ResponseExtras<'s> {
    /// The consumer the request was authenticated as, for the access log.
    pub consumer: Option<&'s Consumer>,
    /// Who the upstream is told the caller is.
    pub identity: UpstreamIdentity<'s>,
    /// The id of the API key it was authenticated with, for AI budgets.
    pub credential: Option<&'s str>,
    /// The rate-limit state, which goes with the response's other stamped headers.
    pub limit: Option<LimitHeaders>,
    cors: Option<(&'s CorsPolicy, HeaderValue)>,
}

impl ResponseExtras<'_> {
    /// Adds the CORS headers (the rate-limit state is taken out before, see `limit`).
    pub fn write(self, headers: &mut HeaderMap) {
        if let Some((cors, origin)) = self.cors {
            cors.decorate(origin, headers);
        }
    }
}

/// Runs the access phase for a request that arrived at `arrived` (wall-clock time, which
/// rate limits count by). `Ok(Some(response))` answers the request here (a CORS preflight);
/// what the eventual response must carry goes into `extras`.
pub(crate) async fn check<'s, B>(
    policy: &'s AccessPolicy,
    shared: &'s AccessShared,
    request: &mut Request<B>,
    client: &Client,
    arrived: SystemTime,
    extras: &mut ResponseExtras<'s>,
) -> Result<Option<Response<ResponseBody>>, ProxyError> {
    // 1. client IP
    let client_ip = shared.trusted.client_ip(client.ip, request.headers());
    if let Some(rules) = &policy.ip {
        if !rules.admits(client_ip) {
            return Err(ProxyError::Forbidden { code: "ip_denied", message: "this client address is not allowed" });
        }
    }

    // 2. CORS
    if let Some(cors) = &policy.cors {
        if let Some(method) = preflight_method(request.method(), request.headers()) {
            let mut response = Response::new(ResponseBody::full(bytes::Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.headers_mut() = cors.preflight(&method, request.headers())?;
            return Ok(Some(response));
        }
        extras.cors = cors.allowed_origin(request.headers()).map(|origin| (cors, origin));
    }

    // 3. authentication
    let authenticates = policy.key_auth.is_some() || policy.basic_auth.is_some() || policy.mtls_auth;
    let consumer = match authenticates || policy.jwt_auth.is_some() {
        false => None,
        true => {
            extras.identity = authenticate(policy, &shared.consumers, request, client, &mut extras.credential).await?;
            extras.identity.consumer
        }
    };
    extras.consumer = consumer;

    // 4. authorization
    if let Some(acl) = &policy.acl {
        let Some(consumer) = consumer else {
            return Err(ProxyError::Forbidden {
                code: "acl_denied",
                message: "this route only admits known consumers",
            });
        };
        if !acl.admits(consumer) {
            return Err(ProxyError::Forbidden { code: "acl_denied", message: "this consumer may not call this route" });
        }
    }

    // 5. rate limits
    if let Some(limiter) = consumer.and_then(|c| c.rate_limit.as_ref()).or(policy.rate_limit.as_ref()) {
        let caller = Caller { consumer, client_ip, headers: request.headers(), arrived };
        limiter.check(&caller, &mut extras.limit).await?;
    }
    Ok(None)
}

/// Finds the consumer behind the request's credentials. A valid token whose subject is no
/// consumer's authenticates the request without a consumer. A credential in the query is
/// removed here; one in a header is left out when the head goes upstream
/// (`UpstreamIdentity::credential`).
async fn authenticate<'s, B>(
    policy: &'s AccessPolicy,
    consumers: &'s Consumers,
    request: &mut Request<B>,
    client: &Client,
    credential: &mut Option<&'s str>,
) -> Result<UpstreamIdentity<'s>, ProxyError> {
    let basic = policy.basic_auth.is_some();
    let found = |consumer, credential| UpstreamIdentity { authenticated: true, consumer, credential };
    let strip = |keep: bool, header: &'s HeaderName| (!keep).then_some(header);
    if let (true, Some(certificate)) = (policy.mtls_auth, &client.certificate) {
        let unknown = ProxyError::Unauthenticated { message: "the client certificate belongs to no consumer", basic };
        return Ok(found(Some(consumers.by_certificate(certificate).ok_or(unknown)?), None));
    }
    if let (Some(jwt), Some(token)) = (&policy.jwt_auth, bearer_token(request.headers())) {
        let claims = jwt.verify(token).await.map_err(|message| ProxyError::Unauthenticated { message, basic })?;
        let subject = claims.get(&*jwt.consumer_claim).and_then(claim_text);
        let consumer = subject.as_deref().and_then(|s| consumers.by_subject(s));
        let headers = request.headers_mut();
        for (claim, header) in &jwt.claims_to_headers {
            // What the client sent under these names must not pass for a verified claim.
            headers.remove(header);
            let value = claims.get(&**claim).and_then(claim_text);
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(header.clone(), value);
            }
        }
        return Ok(found(consumer, strip(jwt.keep_credential, &AUTHORIZATION)));
    }
    if let Some(lookup) = &policy.key_auth {
        let (header, key) = match request.headers().get(&lookup.header) {
            Some(key) => (&lookup.header, Some(key)),
            None if lookup.bearer => (&AUTHORIZATION, request.headers().get(&AUTHORIZATION)),
            None => (&lookup.header, None),
        };
        if let Some(key) = key.map(HeaderValue::as_bytes) {
            // `Authorization: Bearer <key>` is how OpenAI's SDKs send a key.
            let key = match *header == AUTHORIZATION {
                true => identity::bearer_token(key).unwrap_or(key),
                false => key,
            };
            let (consumer, id) = consumers.by_key(key).ok_or(unknown_key(basic))?;
            *credential = Some(id);
            return Ok(found(Some(consumer), strip(lookup.keep_credential, header)));
        }
        let in_query = lookup.query.as_deref().and_then(|name| {
            let key = identity::query_param(request.uri().query()?, name)?;
            Some((name, key))
        });
        if let Some((name, key)) = in_query {
            let (consumer, id) = consumers.by_key(&key).ok_or(unknown_key(basic))?;
            if !lookup.keep_credential {
                remove_query_param(request, name);
            }
            *credential = Some(id);
            return Ok(found(Some(consumer), None));
        }
    }
    if let Some(keep) = policy.basic_auth {
        if let Some(encoded) = identity::basic_credentials(request.headers()) {
            let consumer = consumers.by_basic(encoded).await?;
            return Ok(found(Some(consumer), strip(keep, &AUTHORIZATION)));
        }
    }
    let ways = [policy.mtls_auth, policy.jwt_auth.is_some(), policy.key_auth.is_some(), basic];
    let message = match ways {
        [true, false, false, false] => "this route needs a client certificate (over TLS)",
        [false, true, false, false] => "this route needs a token (Authorization: Bearer)",
        [false, false, true, false] => "this route needs an API key",
        [false, false, false, true] => "this route needs a user name and password (Basic authentication)",
        _ => "this route needs credentials: see which kinds it accepts",
    };
    Err(ProxyError::Unauthenticated { message, basic })
}

/// The token in `Authorization: Bearer <token>`.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(&AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A claim as header text: strings as they are, numbers and booleans written out.
fn claim_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn unknown_key(basic: bool) -> ProxyError {
    ProxyError::Unauthenticated { message: "the API key is not valid", basic }
}

fn remove_query_param<B>(request: &mut Request<B>, name: &str) {
    let uri = request.uri();
    let query = uri.query().and_then(|q| identity::without_param(q, name));
    let path_and_query = match query {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = path_and_query.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}
