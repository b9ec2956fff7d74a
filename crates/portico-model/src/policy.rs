//! Policies: the access rules a route, a service, a consumer or the whole gateway carries.
//!
//! Every kind of policy appears at most once per place it is attached to; where several
//! places set the same kind, the most specific one applies (consumer, then route, then
//! service, then global). They run in the fixed order of the access phase (see
//! ARCHITECTURE.md): client IP, CORS preflight, authentication, authorization, rate limits.

use crate::{Problems, RateLimit, Secret};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use utoipa::ToSchema;

/// The policies attached to one place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Admit or refuse clients by IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_restriction: Option<IpRestriction>,
    /// Cross-origin requests from browsers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Callers identify themselves with a client certificate on the TLS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_auth: Option<MtlsAuth>,
    /// Callers present a JSON Web Token (`Authorization: Bearer`), from an OpenID provider
    /// or any issuer whose keys Portico knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_auth: Option<JwtAuth>,
    /// Callers identify themselves with an API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<KeyAuth>,
    /// Callers identify themselves with a user name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Which consumers may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Acl>,
    /// How many requests may pass per time window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

impl Policies {
    pub fn is_empty(&self) -> bool {
        self == &Policies::default()
    }

    /// Whether any policy that identifies the caller is set.
    pub fn authenticates(&self) -> bool {
        self.key_auth.is_some() || self.basic_auth.is_some() || self.mtls_auth.is_some() || self.jwt_auth.is_some()
    }

    /// `self` with every policy it lacks taken from `general` (a less specific place).
    pub fn over(&self, general: &Policies) -> Policies {
        Policies {
            ip_restriction: self.ip_restriction.clone().or_else(|| general.ip_restriction.clone()),
            cors: self.cors.clone().or_else(|| general.cors.clone()),
            mtls_auth: self.mtls_auth.clone().or_else(|| general.mtls_auth.clone()),
            jwt_auth: self.jwt_auth.clone().or_else(|| general.jwt_auth.clone()),
            key_auth: self.key_auth.clone().or_else(|| general.key_auth.clone()),
            basic_auth: self.basic_auth.clone().or_else(|| general.basic_auth.clone()),
            acl: self.acl.clone().or_else(|| general.acl.clone()),
            rate_limit: self.rate_limit.clone().or_else(|| general.rate_limit.clone()),
        }
    }

    /// The secret slots of the policies (the HMAC secrets of `jwt_auth`), for
    /// [`crate::HoldsSecrets`].
    pub fn secret_slots(&mut self) -> Vec<(String, &mut Option<Secret>)> {
        let Some(jwt) = &mut self.jwt_auth else { return Vec::new() };
        jwt.secrets
            .iter_mut()
            .map(|s| (format!("policies.jwt_auth.secrets.{}", s.kid.as_deref().unwrap_or("")), &mut s.secret))
            .collect()
    }

    pub(crate) fn validate(&self, problems: &mut Problems) {
        if let Some(ip) = &self.ip_restriction {
            ip.validate(problems);
        }
        if let Some(cors) = &self.cors {
            cors.validate(problems);
        }
        if let Some(key_auth) = &self.key_auth {
            key_auth.validate(problems);
        }
        if let Some(jwt) = &self.jwt_auth {
            jwt.validate(problems);
        }
        if let Some(acl) = &self.acl {
            if acl.allow_consumers.is_empty()
                && acl.allow_groups.is_empty()
                && acl.deny_consumers.is_empty()
                && acl.deny_groups.is_empty()
            {
                problems.push("policies.acl", "list at least one consumer or group to allow or deny");
            }
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate("policies.rate_limit", problems);
        }
    }
}

/// Admits or refuses clients by address. The client address is the connection's peer, or,
/// when the peer is a trusted proxy (see `global.trusted_proxies`), the address it forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRestriction {
    /// Only these addresses or CIDR blocks are admitted (when not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// These addresses or CIDR blocks are refused, even when also allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl IpRestriction {
    fn validate(&self, problems: &mut Problems) {
        if self.allow.is_empty() && self.deny.is_empty() {
            problems.push("policies.ip_restriction", "list addresses to `allow` or `deny`");
        }
        for (field, list) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, block) in list.iter().enumerate() {
                if let Err(message) = parse_cidr(block) {
                    problems.push(format!("policies.ip_restriction.{field}[{i}]"), message);
                }
            }
        }
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address (`192.0.2.7`).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{text}` is not an IP address or CIDR block such as 10.0.0.0/8"))
}

/// Cross-origin resource sharing: answers browsers' preflight requests and marks responses
/// as readable by the allowed origins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Origins allowed to call, such as `https://app.example.com`, `https://*.example.com`,
    /// or `*` for any.
    pub origins: Vec<String>,
    /// Methods a cross-origin request may use (default: GET, HEAD, POST, PUT, PATCH, DELETE).
    #[serde(default = "default_cors_methods")]
    pub methods: Vec<String>,
    /// Request headers a cross-origin request may send; empty allows whatever the browser
    /// asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Response headers the browser lets scripts read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Whether browsers may send cookies and credentials. Not allowed with origin `*`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(default = "default_cors_max_age")]
    pub max_age_secs: u64,
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].map(String::from).to_vec()
}

fn default_cors_max_age() -> u64 {
    600
}

impl Cors {
    fn validate(&self, problems: &mut Problems) {
        if self.origins.is_empty() {
            problems.push("policies.cors.origins", "list the allowed origins, or `*` for any");
        }
        for (i, origin) in self.origins.iter().enumerate() {
            let valid = origin == "*"
                || (origin.split_once("://").is_some_and(|(scheme, host)| {
                    matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
                }) && http::HeaderValue::from_str(origin).is_ok());
            if !valid {
                problems.push(
                    format!("policies.cors.origins[{i}]"),
                    format!("`{origin}` is not an origin such as https://app.example.com, https://*.example.com or *"),
                );
            }
        }
        if self.credentials && self.origins.iter().any(|o| o == "*") {
            problems.push(
                "policies.cors.credentials",
                "browsers refuse credentials with origin `*`: list the origins that may send them",
            );
        }
        for (i, method) in self.methods.iter().enumerate() {
            if crate::Method::parse(method).is_err() {
                problems.push(format!("policies.cors.methods[{i}]"), format!("`{method}` is not an HTTP method"));
            }
        }
        for (field, list) in [("headers", &self.headers), ("expose_headers", &self.expose_headers)] {
            for (i, name) in list.iter().enumerate() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problems
                        .push(format!("policies.cors.{field}[{i}]"), format!("`{name}` is not a valid header name"));
                }
            }
        }
        if self.max_age_secs > 86_400 {
            problems.push("policies.cors.max_age_secs", "must be at most 86400 (one day)");
        }
    }
}

/// API keys, looked up in a header or a query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuth {
    /// The header that carries the key (default `x-api-key`). With `authorization`, the key
    /// is read from `Authorization: Bearer <key>`, as OpenAI's SDKs send it.
    #[serde(default = "default_key_header")]
    pub header: String,
    /// A query parameter that may carry the key instead (default: none, since URLs end up
    /// in logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Send the key on to the upstream (default: it is removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_credential: bool,
    /// Also take the key from `Authorization: Bearer <key>` when `header` is absent: one
    /// route then serves Anthropic's SDKs (`x-api-key`) and OpenAI's (bearer) alike.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bearer: bool,
}

fn default_key_header() -> String {
    "x-api-key".into()
}

impl KeyAuth {
    fn validate(&self, problems: &mut Problems) {
        if http::HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            problems.push("policies.key_auth.header", format!("`{}` is not a valid header name", self.header));
        }
        if let Some(query) = &self.query {
            let valid = !query.is_empty() && query.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
            if !valid {
                problems.push("policies.key_auth.query", "use letters, digits, '-', '_', '.' or '~'");
            }
        }
    }
}

/// Verification of JSON Web Tokens: signature, `exp`, `nbf`, `iss`, `aud`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// The `iss` a token must carry; with `discovery`, also where the keys are found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When set, the token's `aud` must include one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Accepted signature algorithms. By default, every algorithm of the kind of keys given:
    /// HS256/384/512 with `secrets`, otherwise RS256/384/512, PS256/384/512, ES256/384 and
    /// EdDSA. The two kinds never mix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// Fetch the issuer's keys from this JWKS URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Find the JWKS URL through OpenID Connect discovery (`issuer` +
    /// `/.well-known/openid-configuration`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discovery: bool,
    /// Public keys in PEM, instead of fetched ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    /// Shared secrets for HMAC-signed tokens (HS256/384/512), stored sealed with the master
    /// key and never shown again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<JwtSecret>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// The claim whose value names the consumer, through a consumer's `jwt` credential.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Claims sent upstream as headers: `{email: x-user-email}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub claims_to_headers: std::collections::BTreeMap<String, String>,
    /// Send the token on to the upstream (default: `Authorization` is removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_credential: bool,
}

/// A shared secret that verifies HMAC-signed tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtSecret {
    /// The `kid` of the tokens signed with this secret; required when there are several
    /// secrets (during a rotation), and matched exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The secret, at least 32 bytes. Written in plain text, stored sealed; reads leave it
    /// out, and a write that leaves it out keeps the stored one (matched by `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// The secret is written in base64 and its bytes are the decoded ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base64: bool,
}

/// The shortest HMAC secret accepted: the output size of SHA-256 (RFC 7518, section 3.2).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

impl JwtSecret {
    /// The secret's bytes, from its plain text.
    pub fn bytes(&self, plain: &str) -> Result<Vec<u8>, &'static str> {
        if self.base64 {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(plain.trim())
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(plain.trim()))
                .map_err(|_| "is not valid base64")
        } else {
            Ok(plain.as_bytes().to_vec())
        }
    }
}

/// The asymmetric algorithms `jwt_auth` accepts, the default with public keys.
pub const JWT_PUBLIC_KEY_ALGORITHMS: [&str; 9] =
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
/// The HMAC algorithms `jwt_auth` accepts, the default with `secrets`.
pub const JWT_SECRET_ALGORITHMS: [&str; 3] = ["HS256", "HS384", "HS512"];

fn default_leeway_secs() -> u64 {
    30
}

fn default_consumer_claim() -> String {
    "sub".into()
}

impl JwtAuth {
    /// The algorithms accepted: the ones listed, or every one of the keys' kind.
    pub fn effective_algorithms(&self) -> Vec<&str> {
        match (self.algorithms.is_empty(), self.secrets.is_empty()) {
            (false, _) => self.algorithms.iter().map(String::as_str).collect(),
            (true, true) => JWT_PUBLIC_KEY_ALGORITHMS.to_vec(),
            (true, false) => JWT_SECRET_ALGORITHMS.to_vec(),
        }
    }

    fn validate(&self, problems: &mut Problems) {
        let at = "policies.jwt_auth";
        let sources = [self.jwks_uri.is_some(), self.discovery, !self.public_keys.is_empty(), !self.secrets.is_empty()];
        if sources.iter().filter(|s| **s).count() != 1 {
            problems.push(at, "give exactly one source of keys: `jwks_uri`, `discovery`, `public_keys` or `secrets`");
        }
        if self.discovery && self.issuer.is_none() {
            problems.push(format!("{at}.issuer"), "discovery needs the issuer's URL");
        }
        for (field, url) in [("jwks_uri", &self.jwks_uri), ("issuer", &self.issuer)] {
            let needs_url = field == "jwks_uri" || self.discovery;
            if let Some(url) = url.as_ref().filter(|_| needs_url) {
                let valid = url
                    .parse::<http::Uri>()
                    .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
                if !valid {
                    problems.push(format!("{at}.{field}"), format!("`{url}` is not an http(s) URL"));
                }
            }
        }
        // Secrets verify only HMAC algorithms and public keys only asymmetric ones, so that
        // a public key can never be used as an HMAC secret.
        let (kind, allowed) = if self.secrets.is_empty() {
            ("public keys", &JWT_PUBLIC_KEY_ALGORITHMS[..])
        } else {
            ("secrets", &JWT_SECRET_ALGORITHMS[..])
        };
        for (i, alg) in self.algorithms.iter().enumerate() {
            if !allowed.contains(&alg.as_str()) {
                problems.push(
                    format!("{at}.algorithms[{i}]"),
                    format!("`{alg}` is not accepted with {kind}: use {}", allowed.join(", ")),
                );
            }
        }
        for (i, pem) in self.public_keys.iter().enumerate() {
            if !pem.contains("-----BEGIN PUBLIC KEY-----") && !pem.contains("-----BEGIN RSA PUBLIC KEY-----") {
                problems.push(format!("{at}.public_keys[{i}]"), "must be a public key in PEM");
            }
        }
        self.validate_secrets(problems);
        if self.leeway_secs > 600 {
            problems.push(format!("{at}.leeway_secs"), "must be at most 600");
        }
        if self.consumer_claim.is_empty() {
            problems.push(format!("{at}.consumer_claim"), "name the claim that names the consumer");
        }
        for header in self.claims_to_headers.values() {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.push(format!("{at}.claims_to_headers"), format!("`{header}` is not a valid header name"));
            }
        }
    }

    fn validate_secrets(&self, problems: &mut Problems) {
        let several = self.secrets.len() > 1;
        for (i, entry) in self.secrets.iter().enumerate() {
            let at = format!("policies.jwt_auth.secrets[{i}]");
            match &entry.kid {
                None if several => problems.push(format!("{at}.kid"), "with several secrets, give each a `kid`"),
                Some(kid) if self.secrets[..i].iter().any(|e| e.kid.as_ref() == Some(kid)) => {
                    problems.push(format!("{at}.kid"), format!("`{kid}` is given twice"))
                }
                _ => {}
            }
            let Some(secret) = &entry.secret else {
                problems.push(format!("{at}.secret"), "give the secret");
                continue;
            };
            // A sealed secret was checked when it was written.
            if secret.is_sealed() {
                continue;
            }
            match entry.bytes(&secret.reveal(None).unwrap_or_default()) {
                Err(message) => problems.push(format!("{at}.secret"), message),
                Ok(bytes) if bytes.len() < MIN_JWT_SECRET_BYTES => problems.push(
                    format!("{at}.secret"),
                    format!("is {} bytes; an HMAC secret needs at least {MIN_JWT_SECRET_BYTES}", bytes.len()),
                ),
                Ok(_) => {}
            }
        }
    }
}

/// A client certificate, verified by the TLS listener against `global.client_ca`, names the
/// consumer (by a consumer's `mtls` credential).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsAuth {}

/// User name and password in the `Authorization: Basic` header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// Send the `Authorization` header on to the upstream (default: it is removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_credential: bool,
}

/// Which consumers may call, by name or by group. Deny lists are checked first; when any
/// allow list is set, the consumer must be in one of them. A request without an identified
/// consumer is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_consumers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_consumers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_groups: Vec<String>,
}

impl Acl {
    /// Every consumer name the lists mention.
    pub fn consumers(&self) -> impl Iterator<Item = &String> {
        self.allow_consumers.iter().chain(&self.deny_consumers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_single_addresses_parse() {
        assert_eq!(parse_cidr("10.1.2.3/8").map(|n| n.to_string()), Ok("10.0.0.0/8".into()));
        assert_eq!(parse_cidr("192.0.2.7").map(|n| n.to_string()), Ok("192.0.2.7/32".into()));
        assert_eq!(parse_cidr("2001:db8::/32").map(|n| n.to_string()), Ok("2001:db8::/32".into()));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }

    #[test]
    fn the_more_specific_place_wins_per_kind() {
        let route = Policies {
            key_auth: Some(KeyAuth { header: "k".into(), query: None, keep_credential: false, bearer: false }),
            ..Default::default()
        };
        let global = Policies {
            key_auth: Some(KeyAuth { header: "g".into(), query: None, keep_credential: false, bearer: false }),
            basic_auth: Some(BasicAuth::default()),
            ..Default::default()
        };
        let merged = route.over(&global);
        assert_eq!(merged.key_auth.map(|k| k.header), Some("k".into()));
        assert!(merged.basic_auth.is_some());
    }

    #[test]
    fn cors_refuses_credentials_for_any_origin() {
        let cors = Cors {
            origins: vec!["*".into()],
            methods: default_cors_methods(),
            headers: vec![],
            expose_headers: vec![],
            credentials: true,
            max_age_secs: 600,
        };
        let mut problems = Problems::default();
        cors.validate(&mut problems);
        assert_eq!(problems.0.len(), 1);
        assert_eq!(problems.0[0].path, "policies.cors.credentials");
    }
}
