//! Who is calling: the consumers of a snapshot, indexed by their credentials.
//!
//! An API key is looked up by its SHA-256 in one step; a worker remembers the digests of the
//! keys it has found, so that a client's key is hashed once per worker, not per request. A
//! Basic password is checked against its Argon2id hash, which takes tens of milliseconds by
//! design; so a verdict is remembered (by a SHA-256 of user and password, for the life of
//! the snapshot) and each Argon2 check runs on a blocking thread, at most
//! [`HASHING_AT_ONCE`] at a time, never on a worker.

use super::rate_limit::{key_hash, AccessStates, Key, RateLimiter};
use crate::proxy::ProxyError;
use crate::server::ClientCert;
use base64::Engine;
use http::{HeaderMap, HeaderValue};
use portico_model::{Config, Credential, MtlsCredential};
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::sync::{Arc, RwLock};
use tokio::sync::Semaphore;

/// Argon2 checks that may run at once (each uses a core and ~19 MiB).
const HASHING_AT_ONCE: usize = 2;
/// Remembered Basic-auth verdicts; the memory is cleared when it is full.
const MAX_VERDICTS: usize = 10_000;

/// API keys a worker remembers having found; the memory is cleared when it is full.
const MAX_KNOWN_KEYS: usize = 1024;

thread_local! {
    /// The API keys this thread has found, each with its SHA-256: hashing a key takes about
    /// 200 ns, a look-up here a few. The digest is still looked up in the snapshot's keys, so
    /// a key remembered from an earlier snapshot is refused once its credential is gone.
    /// Only keys that were found are kept, so a client cannot fill it with made-up ones. They
    /// are held in memory only, like the requests that carried them; what is stored stays a
    /// digest.
    static KNOWN_KEYS: RefCell<FxHashMap<Box<[u8]>, [u8; 32]>> = RefCell::default();
}

/// A consumer, ready for the request path.
pub(crate) struct Consumer {
    pub name: Arc<str>,
    /// The name as sent upstream in `X-Consumer`.
    pub name_header: HeaderValue,
    pub groups: Box<[Box<str>]>,
    /// The groups as sent upstream in `X-Consumer-Groups`.
    pub groups_header: Option<HeaderValue>,
    /// The team that owns the consumer, for the access log and analytics.
    pub team: Option<Arc<str>>,
    /// A rate limit attached to the consumer, which replaces the route's.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// The hash its requests are counted under by limits per consumer, made once.
    pub limit_key: u64,
}

enum Password {
    Argon2(Arc<str>),
    /// Written in plain text in a configuration file; compared by digest.
    Plain([u8; 32]),
}

/// Every consumer of a snapshot and the indexes to find them by credential.
#[derive(Default)]
pub(crate) struct Consumers {
    all: Vec<Consumer>,
    /// By key digest: the consumer's index, and the credential's id.
    keys: FxHashMap<[u8; 32], (usize, Box<str>)>,
    fingerprints: FxHashMap<[u8; 32], usize>,
    common_names: FxHashMap<Box<str>, usize>,
    subjects: FxHashMap<Box<str>, usize>,
    users: FxHashMap<Box<str>, (Password, usize)>,
    verdicts: RwLock<FxHashMap<[u8; 32], Option<usize>>>,
    hashing: Option<Arc<Semaphore>>,
}

impl Consumers {
    pub fn compile(config: &Config, limiters: &AccessStates) -> Consumers {
        let mut consumers =
            Consumers { hashing: Some(Arc::new(Semaphore::new(HASHING_AT_ONCE))), ..Default::default() };
        for (index, consumer) in config.consumers.iter().enumerate() {
            for credential in &consumer.credentials {
                if let Some(digest) = credential.key_digest() {
                    consumers.keys.insert(digest, (index, credential.id().into()));
                }
                if let Some(fingerprint) = credential.fingerprint() {
                    consumers.fingerprints.insert(fingerprint, index);
                }
                if let Credential::Mtls(MtlsCredential { common_name: Some(name), .. }) = credential {
                    consumers.common_names.insert(name.as_str().into(), index);
                }
                if let Credential::Jwt(jwt) = credential {
                    consumers.subjects.insert(jwt.subject.as_str().into(), index);
                }
                if let Credential::BasicAuth(basic) = credential {
                    let password = match (&basic.password_hash, &basic.password) {
                        (Some(hash), _) => Password::Argon2(hash.as_str().into()),
                        (None, Some(plain)) => Password::Plain(Sha256::digest(plain).into()),
                        (None, None) => continue,
                    };
                    consumers.users.insert(basic.username.as_str().into(), (password, index));
                }
            }
            let groups = consumer.groups.join(", ");
            consumers.all.push(Consumer {
                name: consumer.name.as_str().into(),
                // Validated names are always valid header values.
                name_header: HeaderValue::from_str(&consumer.name).unwrap_or(HeaderValue::from_static("")),
                groups: consumer.groups.iter().map(|g| g.as_str().into()).collect(),
                groups_header: (!groups.is_empty()).then(|| HeaderValue::from_str(&groups).ok()).flatten(),
                team: consumer.team.as_deref().map(Arc::from),
                limit_key: key_hash(&Key::Consumer(&consumer.name)),
                rate_limit: consumer
                    .policies
                    .rate_limit
                    .as_ref()
                    .map(|limit| limiters.compile(&format!("consumer:{}", consumer.name), limit)),
            });
        }
        consumers
    }

    /// The consumer a verified client certificate belongs to: by fingerprint, else by the
    /// subject's common name.
    pub fn by_certificate(&self, certificate: &ClientCert) -> Option<&Consumer> {
        let by_name = || certificate.common_name.as_deref().and_then(|cn| self.common_names.get(cn));
        self.fingerprints.get(&certificate.fingerprint).or_else(by_name).map(|&i| &self.all[i])
    }

    /// The consumer a token subject (the value of a policy's `consumer_claim`) belongs to.
    pub fn by_subject(&self, subject: &str) -> Option<&Consumer> {
        self.subjects.get(subject).map(|&i| &self.all[i])
    }

    /// The consumer an API key belongs to, and the key's credential id.
    pub fn by_key(&self, key: &[u8]) -> Option<(&Consumer, &str)> {
        let digest = match KNOWN_KEYS.with_borrow(|known| known.get(key).copied()) {
            Some(digest) => digest,
            None => {
                let digest: [u8; 32] = Sha256::digest(key).into();
                if self.keys.contains_key(&digest) {
                    KNOWN_KEYS.with_borrow_mut(|known| {
                        if known.len() >= MAX_KNOWN_KEYS {
                            known.clear();
                        }
                        known.insert(key.into(), digest);
                    });
                }
                digest
            }
        };
        self.keys.get(&digest).map(|(i, id)| (&self.all[*i], &**id))
    }

    /// The consumer a Basic `Authorization` value (after `Basic `) proves to be.
    pub async fn by_basic(&self, encoded: &[u8]) -> Result<&Consumer, ProxyError> {
        const MALFORMED: ProxyError =
            ProxyError::Unauthenticated { message: "the Basic credentials are malformed", basic: true };
        const WRONG: ProxyError =
            ProxyError::Unauthenticated { message: "the user name or password is wrong", basic: true };
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| MALFORMED)?;
        let text = std::str::from_utf8(&decoded).map_err(|_| MALFORMED)?;
        let (username, password) = text.split_once(':').ok_or(MALFORMED)?;
        let Some((secret, index)) = self.users.get(username) else { return Err(WRONG) };
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let remembered = self.verdicts.read().unwrap_or_else(|p| p.into_inner()).get(&digest).copied();
        let verdict = match (remembered, secret) {
            (Some(verdict), _) => verdict,
            (None, Password::Plain(expected)) => {
                let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                (given == *expected).then_some(*index)
            }
            (None, Password::Argon2(hash)) => {
                let verdict = self.verify(password, hash).await?.then_some(*index);
                let mut verdicts = self.verdicts.write().unwrap_or_else(|p| p.into_inner());
                if verdicts.len() >= MAX_VERDICTS {
                    verdicts.clear();
                }
                verdicts.insert(digest, verdict);
                verdict
            }
        };
        verdict.map(|i| &self.all[i]).ok_or(WRONG)
    }

    async fn verify(&self, password: &str, hash: &Arc<str>) -> Result<bool, ProxyError> {
        let busy = ProxyError::Unauthenticated { message: "credentials could not be checked", basic: true };
        let hashing = self.hashing.clone().ok_or(busy)?;
        let _permit = hashing.acquire_owned().await.map_err(|_| busy)?;
        let (password, hash) = (password.to_owned(), hash.clone());
        let check = tokio::task::spawn_blocking(move || portico_model::verify_password(&password, &hash));
        check.await.map_err(|_| busy)
    }
}

/// The value of query parameter `name`, percent-decoded.
pub(crate) fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    let raw = query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// `query` without parameter `name`; `None` when nothing is left.
pub(crate) fn without_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> =
        query.split('&').filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name).collect();
    let joined = kept.join("&");
    (!joined.is_empty()).then_some(joined)
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case).
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| token.trim_ascii())
}

/// The credentials part of an `Authorization: Basic ...` header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    scheme.eq_ignore_ascii_case(b"basic ").then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_decoded_and_removed() {
        assert_eq!(query_param("a=1&apikey=pk%5Fx+y&b=2", "apikey"), Some(b"pk_x y".to_vec()));
        assert_eq!(query_param("a=1", "apikey"), None);
        assert_eq!(query_param("apikey=%zz%", "apikey"), Some(b"%zz%".to_vec()));
        assert_eq!(without_param("a=1&apikey=x&b=2", "apikey").as_deref(), Some("a=1&b=2"));
        assert_eq!(without_param("apikey=x", "apikey"), None);
    }

    fn consumers(yaml: &str) -> Consumers {
        let config = portico_model::parse_yaml(yaml).expect("config");
        Consumers::compile(&config, &AccessStates::default())
    }

    #[test]
    fn a_remembered_key_is_refused_once_its_credential_is_gone() {
        let before = consumers(
            "consumers:\n  - name: acme\n    credentials: [{type: key_auth, key: key-one-0123456789abcdef}, {type: key_auth, key: key-two-0123456789abcdef}]\n",
        );
        let after = consumers(
            "consumers:\n  - name: acme\n    credentials: [{type: key_auth, key: key-two-0123456789abcdef}]\n",
        );
        let name = |found: Option<(&Consumer, &str)>| found.map(|(consumer, _)| consumer.name.to_string());
        for _ in 0..2 {
            assert_eq!(name(before.by_key(b"key-one-0123456789abcdef")).as_deref(), Some("acme"));
            assert_eq!(name(before.by_key(b"key-two-0123456789abcdef")).as_deref(), Some("acme"));
            assert_eq!(name(before.by_key(b"key-three-0123456789abcdef")), None);
        }
        // Found keys are remembered; made-up ones are not.
        KNOWN_KEYS.with_borrow(|known| {
            assert!(known.contains_key(&b"key-one-0123456789abcdef"[..]));
            assert!(!known.contains_key(&b"key-three-0123456789abcdef"[..]));
        });
        // The key was removed by the next configuration: found before on this thread, it is
        // not let through now, and the old snapshot still knows it.
        assert_eq!(name(after.by_key(b"key-one-0123456789abcdef")), None);
        assert_eq!(name(after.by_key(b"key-two-0123456789abcdef")).as_deref(), Some("acme"));
        assert_eq!(name(before.by_key(b"key-one-0123456789abcdef")).as_deref(), Some("acme"));
        assert_eq!(name(before.by_key(b"key-one-0123456789abcde")), None);
    }

    #[test]
    fn basic_credentials_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static("bAsIc  YTpi "));
        assert_eq!(basic_credentials(&headers), Some(&b"YTpi"[..]));
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&headers), None);
    }
}
