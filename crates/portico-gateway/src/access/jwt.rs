//! JSON Web Tokens: signature, time and issuer checks, with public keys given inline or
//! fetched from a JWKS URL (directly, or found by OpenID Connect discovery), or with HMAC
//! secrets stored sealed.
//!
//! Fetched keys are cached. A token signed with a key the cache does not know triggers one
//! refresh (single-flight, and at most one every [`MIN_REFRESH`]), so that an issuer's key
//! rotation is picked up at its first token while a flood of made-up key ids cannot make
//! Portico hammer the issuer. A policy accepts either HMAC or asymmetric algorithms, never
//! both, and a key is only used with algorithms of its own family, which rules out
//! `alg: none` and HS/RS confusion.

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portico_model::{JwtAuth, MasterKey};
use serde_json::{Map, Value};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fetched keys are refreshed at most this often.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Longest wait for the issuer when fetching keys.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger tokens are refused without being parsed.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A compiled `jwt_auth` policy.
pub(crate) struct JwtPolicy {
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway: u64,
    keys: Arc<KeySet>,
    pub consumer_claim: Box<str>,
    pub claims_to_headers: Vec<(Box<str>, http::HeaderName)>,
    pub keep_credential: bool,
}

impl JwtPolicy {
    /// Compiles `policy`; fails when a secret cannot be opened with `master_key`.
    pub fn new(policy: &JwtAuth, registry: &KeySets, master_key: Option<&MasterKey>) -> Result<JwtPolicy, String> {
        let source = match (&policy.jwks_uri, policy.discovery, &policy.issuer) {
            (Some(uri), _, _) => Source::Jwks(uri.clone()),
            (None, true, Some(issuer)) => Source::Discovery(issuer.clone()),
            _ => Source::Inline,
        };
        let keys = match source {
            Source::Inline if !policy.secrets.is_empty() => Arc::new(KeySet::fixed(secret_keys(policy, master_key)?)),
            Source::Inline => {
                let keys = policy.public_keys.iter().filter_map(|pem| inline_key(pem)).collect();
                Arc::new(KeySet::fixed(keys))
            }
            remote => registry.get(remote),
        };
        Ok(JwtPolicy {
            algorithms: policy.effective_algorithms().into_iter().filter_map(|a| Algorithm::from_str(a).ok()).collect(),
            issuer: policy.issuer.clone(),
            audiences: policy.audiences.clone(),
            leeway: policy.leeway_secs,
            keys,
            consumer_claim: policy.consumer_claim.as_str().into(),
            claims_to_headers: policy
                .claims_to_headers
                .iter()
                .filter_map(|(claim, header)| {
                    Some((claim.as_str().into(), http::HeaderName::from_bytes(header.as_bytes()).ok()?))
                })
                .collect(),
            keep_credential: policy.keep_credential,
        })
    }

    /// The token's claims, when it is valid; otherwise why not, for the client.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, &'static str> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("the token is too large");
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is malformed")?;
        if !self.algorithms.contains(&header.alg) {
            return Err("the token's signature algorithm is not accepted");
        }
        let key =
            self.keys.find(header.kid.as_deref(), header.alg).await.ok_or("the token is signed with an unknown key")?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
        }
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(error) => Err(match error.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
                ErrorKind::InvalidAudience => "the token's audience is not accepted",
                ErrorKind::InvalidSignature => "the token's signature is not valid",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss or aud)",
                _ => "the token is not valid",
            }),
        }
    }
}

/// A verification key, with what it may verify.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

impl Key {
    /// Whether the key may verify a token signed with `alg` under key id `kid`. A key
    /// without an id (an inline one) fits any id; a token without one gets the first key of
    /// the right family.
    fn fits(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        let same_id = match (kid, self.kid.as_deref()) {
            (Some(wanted), Some(own)) => wanted == own,
            _ => true,
        };
        self.key.family() == alg.family() && same_id
    }
}

fn inline_key(pem: &str) -> Option<Key> {
    let bytes = pem.as_bytes();
    let key = DecodingKey::from_rsa_pem(bytes)
        .or_else(|_| DecodingKey::from_ec_pem(bytes))
        .or_else(|_| DecodingKey::from_ed_pem(bytes))
        .ok()?;
    Some(Key { kid: None, key })
}

/// The HMAC keys of a policy's `secrets`, opened with the master key.
fn secret_keys(policy: &JwtAuth, master_key: Option<&MasterKey>) -> Result<Vec<Key>, String> {
    let mut keys = Vec::with_capacity(policy.secrets.len());
    for entry in &policy.secrets {
        let Some(secret) = &entry.secret else { return Err("a `jwt_auth` secret is missing".into()) };
        let plain = secret.reveal(master_key).map_err(|e| format!("a `jwt_auth` secret cannot be read: {e}"))?;
        let bytes = entry.bytes(&plain).map_err(|e| format!("a `jwt_auth` secret {e}"))?;
        keys.push(Key { kid: entry.kid.clone(), key: DecodingKey::from_secret(&bytes) });
    }
    Ok(keys)
}

/// Where a key set comes from.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Source {
    Inline,
    Jwks(String),
    Discovery(String),
}

/// Keys, fixed or fetched.
pub(crate) struct KeySet {
    source: Source,
    keys: ArcSwap<Vec<Key>>,
    /// When the keys were last fetched (or tried).
    fetched: Mutex<Option<Instant>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl KeySet {
    fn fixed(keys: Vec<Key>) -> KeySet {
        KeySet {
            source: Source::Inline,
            keys: ArcSwap::from_pointee(keys),
            fetched: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        self.keys.load().iter().find(|k| k.fits(kid, alg)).map(|k| k.key.clone())
    }

    async fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        if let Some(key) = self.lookup(kid, alg) {
            return Some(key);
        }
        if self.source == Source::Inline {
            return None;
        }
        self.refresh().await;
        self.lookup(kid, alg)
    }

    /// Fetches the keys again, unless that happened less than [`MIN_REFRESH`] ago.
    async fn refresh(&self) {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let mut fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
            if fetched.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
                return;
            }
            *fetched = Some(Instant::now());
        }
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
            Ok(Ok(keys)) => {
                tracing::info!(keys = keys.len(), "fetched JWT verification keys");
                self.keys.store(Arc::new(keys));
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot fetch JWT verification keys; keeping the ones known"),
            Err(_) => tracing::warn!("fetching JWT verification keys timed out; keeping the ones known"),
        }
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let jwks_uri = match &self.source {
            Source::Inline => return Ok(Vec::new()),
            Source::Jwks(uri) => uri.clone(),
            Source::Discovery(issuer) => {
                let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
                let document: Value = get_json(&url).await?;
                document["jwks_uri"].as_str().ok_or("the discovery document has no jwks_uri")?.to_owned()
            }
        };
        let set: JwkSet = serde_json::from_value(get_json(&jwks_uri).await?).map_err(|e| format!("not a JWKS: {e}"))?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| Some(Key { kid: jwk.common.key_id.clone(), key: DecodingKey::from_jwk(jwk).ok()? }))
            .collect())
    }
}

async fn get_json(url: &str) -> Result<Value, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector: HttpsConnector<HttpConnector> = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    // No pooling: fetches are rare, and a pooled connection would belong to one worker.
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{url} did not send JSON: {e}"))
}

/// Fetched key sets, shared by every policy with the same source and kept across reloads.
#[derive(Default)]
pub struct KeySets(Mutex<std::collections::HashMap<Source, std::sync::Weak<KeySet>>>);

impl KeySets {
    fn get(&self, source: Source) -> Arc<KeySet> {
        let mut sets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sets.retain(|_, set| set.strong_count() > 0);
        if let Some(set) = sets.get(&source).and_then(std::sync::Weak::upgrade) {
            return set;
        }
        let set = Arc::new(KeySet { source: source.clone(), ..KeySet::fixed(Vec::new()) });
        sets.insert(source, Arc::downgrade(&set));
        set
    }
}
