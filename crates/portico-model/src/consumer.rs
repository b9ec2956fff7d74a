//! Consumers: the applications that call APIs, and the credentials they prove it with.
//!
//! Credentials are written in plain text (a key, a password) or already hashed. Before a
//! consumer is stored, [`Consumer::seal`] replaces plain text with hashes: API keys by
//! SHA-256 (they are long and random, so a fast hash is safe and lets the gateway look a
//! key up in one step), passwords by Argon2id. Stored consumers never hold plain text.

use crate::{validate_name, Policies, Problems};
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use utoipa::ToSchema;

/// An application that calls APIs through Portico.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Unique name; policies and logs refer to the consumer by it.
    #[serde(default)]
    pub name: String,
    /// The team that owns the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Groups for access-control lists (`acl.allow_groups`, `acl.deny_groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How the consumer proves who it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    /// Policies that follow the consumer on every route: only `rate_limit`.
    #[serde(default, skip_serializing_if = "Policies::is_empty")]
    pub policies: Policies,
}

/// One credential of a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Credential {
    KeyAuth(KeyCredential),
    BasicAuth(BasicCredential),
    Mtls(MtlsCredential),
    Jwt(JwtCredential),
}

/// A token subject: tokens whose `jwt_auth.consumer_claim` (default `sub`) has this value
/// belong to the consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtCredential {
    /// Identifies the credential within its consumer (default: derived from the subject).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub subject: String,
}

/// A client certificate (verified against `global.client_ca` on the TLS listener), known by
/// its subject's common name or by its SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsCredential {
    /// Identifies the credential within its consumer (default: derived from what it matches).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The certificate subject's common name (CN): survives certificate renewals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// The SHA-256 of the certificate (DER), in hex: exactly one certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_sha256: Option<String>,
}

/// An API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCredential {
    /// Identifies the credential within its consumer (default: derived from the key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The key in plain text, at least 16 characters: accepted when writing, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key's SHA-256, in hex: what is stored and exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
}

/// A user name and password for Basic authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicCredential {
    /// Identifies the credential within its consumer (default: the user name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub username: String,
    /// The password in plain text: accepted when writing, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The password's Argon2id hash in PHC form (`$argon2id$v=19$...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// Shortest API key accepted in plain text.
pub const MIN_KEY_LEN: usize = 16;

impl Credential {
    pub fn id(&self) -> &str {
        match self {
            Credential::KeyAuth(key) => &key.id,
            Credential::BasicAuth(basic) => &basic.id,
            Credential::Mtls(mtls) => &mtls.id,
            Credential::Jwt(jwt) => &jwt.id,
        }
    }

    fn validate(&self, at: &str, problems: &mut Problems) {
        if !self.id().is_empty() {
            if let Err(message) = validate_name(self.id()) {
                problems.push(format!("{at}.id"), message);
            }
        }
        match self {
            Credential::KeyAuth(key) => match (&key.key, &key.key_sha256) {
                (Some(_), Some(_)) => problems.push(format!("{at}.key"), "give `key` or `key_sha256`, not both"),
                (None, None) => problems.push(format!("{at}.key"), "give the key, or its SHA-256 as `key_sha256`"),
                (Some(plain), None) if plain.chars().count() < MIN_KEY_LEN || !plain.is_ascii() => problems.push(
                    format!("{at}.key"),
                    format!("must be at least {MIN_KEY_LEN} ASCII characters; leave it out to have one generated"),
                ),
                (None, Some(hash)) if parse_sha256(hash).is_none() => {
                    problems.push(format!("{at}.key_sha256"), "must be 64 hexadecimal digits")
                }
                _ => {}
            },
            Credential::Jwt(jwt) => {
                if jwt.subject.is_empty() || jwt.subject.len() > 512 {
                    problems.push(format!("{at}.subject"), "must be 1 to 512 characters");
                }
            }
            Credential::Mtls(mtls) => match (&mtls.common_name, &mtls.fingerprint_sha256) {
                (Some(_), Some(_)) | (None, None) => {
                    problems.push(at.to_owned(), "give exactly one of `common_name` and `fingerprint_sha256`")
                }
                (Some(name), None) if name.is_empty() || name.len() > 256 => {
                    problems.push(format!("{at}.common_name"), "must be 1 to 256 characters")
                }
                (None, Some(hex)) if parse_sha256(&hex.replace(':', "").to_ascii_lowercase()).is_none() => {
                    problems.push(format!("{at}.fingerprint_sha256"), "must be 64 hexadecimal digits")
                }
                _ => {}
            },
            Credential::BasicAuth(basic) => {
                if basic.username.is_empty() || basic.username.contains(':') || basic.username.len() > 256 {
                    problems.push(format!("{at}.username"), "must be 1 to 256 characters without ':'");
                }
                match (&basic.password, &basic.password_hash) {
                    (Some(_), Some(_)) => {
                        problems.push(format!("{at}.password"), "give `password` or `password_hash`, not both")
                    }
                    (None, None) => problems.push(format!("{at}.password"), "give the password or its hash"),
                    (Some(plain), None) if plain.is_empty() || plain.len() > 1024 => {
                        problems.push(format!("{at}.password"), "must be 1 to 1024 characters")
                    }
                    (None, Some(hash)) if !is_argon2id(hash) => problems.push(
                        format!("{at}.password_hash"),
                        "must be an Argon2id hash in PHC form ($argon2id$v=19$...)",
                    ),
                    _ => {}
                }
            }
        }
    }

    /// The SHA-256 an API key credential matches, whether written in plain text or hashed.
    pub fn key_digest(&self) -> Option<[u8; 32]> {
        match self {
            Credential::KeyAuth(KeyCredential { key: Some(plain), .. }) => Some(Sha256::digest(plain).into()),
            Credential::KeyAuth(KeyCredential { key_sha256: Some(hex), .. }) => parse_sha256(hex),
            _ => None,
        }
    }

    /// The certificate fingerprint an mTLS credential matches.
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        match self {
            Credential::Mtls(MtlsCredential { fingerprint_sha256: Some(hex), .. }) => {
                parse_sha256(&hex.replace(':', "").to_ascii_lowercase())
            }
            _ => None,
        }
    }
}

impl Consumer {
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if let Err(message) = validate_name(&self.name) {
            problems.push("name", message);
        }
        if let Some(Err(message)) = self.team.as_deref().map(validate_name) {
            problems.push("team", message);
        }
        for (i, group) in self.groups.iter().enumerate() {
            if let Err(message) = validate_name(group) {
                problems.push(format!("groups[{i}]"), message);
            }
        }
        let mut ids = HashSet::new();
        for (i, credential) in self.credentials.iter().enumerate() {
            credential.validate(&format!("credentials[{i}]"), &mut problems);
            if !credential.id().is_empty() && !ids.insert(credential.id()) {
                problems.push(format!("credentials[{i}].id"), format!("`{}` is used twice", credential.id()));
            }
        }
        let only_limits = Policies { rate_limit: None, ..self.policies.clone() };
        if !only_limits.is_empty() {
            problems.push("policies", "only `rate_limit` can be attached to a consumer");
        }
        self.policies.validate(&mut problems);
        problems.into_result()
    }

    /// Replaces plain-text keys and passwords by their hashes and gives every credential an
    /// id. Hashing a password takes tens of milliseconds: call it off the async runtime.
    pub fn seal(&mut self) {
        self.seal_reusing(None)
    }

    /// Like [`Consumer::seal`], but a password that `previous` already holds a matching hash
    /// for keeps that hash, so applying the same file twice changes nothing.
    pub fn seal_reusing(&mut self, previous: Option<&Consumer>) {
        for credential in &mut self.credentials {
            match credential {
                Credential::KeyAuth(key) => {
                    if let Some(plain) = key.key.take() {
                        key.key_sha256 = Some(hex(&Sha256::digest(plain)));
                    }
                    if key.id.is_empty() {
                        let hash = key.key_sha256.as_deref().unwrap_or("");
                        key.id = format!("key-{}", &hash[..hash.len().min(12)]);
                    }
                }
                Credential::Jwt(jwt) => {
                    if jwt.id.is_empty() {
                        jwt.id = format!("jwt-{}", &hex(&Sha256::digest(&jwt.subject))[..12]);
                    }
                }
                Credential::Mtls(mtls) => {
                    if mtls.id.is_empty() {
                        let basis = mtls.common_name.clone().or(mtls.fingerprint_sha256.clone()).unwrap_or_default();
                        mtls.id = format!("mtls-{}", &hex(&Sha256::digest(basis))[..12]);
                    }
                }
                Credential::BasicAuth(basic) => {
                    if let Some(plain) = basic.password.take() {
                        let known = previous.into_iter().flat_map(|p| &p.credentials).find_map(|c| match c {
                            Credential::BasicAuth(old) if old.username == basic.username => old.password_hash.as_ref(),
                            _ => None,
                        });
                        basic.password_hash = match known {
                            Some(hash) if verify_password(&plain, hash) => Some(hash.clone()),
                            _ => Some(hash_password(&plain)),
                        };
                    }
                    if basic.id.is_empty() {
                        // The user name when it makes a valid id (`ann`), else a digest of it
                        // (`ann@example.com`).
                        basic.id = match validate_name(&basic.username) {
                            Ok(()) => basic.username.clone(),
                            Err(_) => format!("basic-{}", &hex(&Sha256::digest(&basic.username))[..12]),
                        };
                    }
                }
            }
        }
    }

    /// Whether any credential still holds plain text.
    pub fn needs_sealing(&self) -> bool {
        self.credentials.iter().any(|c| match c {
            Credential::KeyAuth(key) => key.key.is_some() || key.id.is_empty(),
            Credential::BasicAuth(basic) => basic.password.is_some() || basic.id.is_empty(),
            Credential::Mtls(mtls) => mtls.id.is_empty(),
            Credential::Jwt(jwt) => jwt.id.is_empty(),
        })
    }

    /// Removes secrets and their hashes, for showing a consumer through the admin API.
    pub fn redact(&mut self) {
        for credential in &mut self.credentials {
            match credential {
                Credential::KeyAuth(key) => (key.key, key.key_sha256) = (None, None),
                Credential::BasicAuth(basic) => (basic.password, basic.password_hash) = (None, None),
                Credential::Mtls(_) | Credential::Jwt(_) => {}
            }
        }
    }

    /// Gives credentials that were sent back without their secret (as a redacted read shows
    /// them) the hash they had in `previous`.
    pub fn keep_secrets(&mut self, previous: &Consumer) {
        for credential in &mut self.credentials {
            let before = previous.credentials.iter().find(|c| c.id() == credential.id());
            match (credential, before) {
                (Credential::KeyAuth(key), Some(Credential::KeyAuth(old))) if key.key.is_none() => {
                    key.key_sha256 = key.key_sha256.take().or_else(|| old.key_sha256.clone());
                }
                (Credential::BasicAuth(basic), Some(Credential::BasicAuth(old))) if basic.password.is_none() => {
                    basic.password_hash = basic.password_hash.take().or_else(|| old.password_hash.clone());
                }
                _ => {}
            }
        }
    }
}

/// A new random API key: `pk_` and 48 hex digits (192 bits).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 24];
    // The OS random source only fails on a broken system, where no key should be made.
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    format!("pk_{}", hex(&bytes))
}

/// An Argon2id hash of `password` with a random salt and the crate's recommended cost.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        // Hashing with default parameters only fails if the OS random source does.
        .expect("Argon2id hashing with default parameters succeeds")
}

/// Whether `password` matches an Argon2id hash in PHC form. Takes as long as hashing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

fn is_argon2id(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| hash.algorithm.as_str() == "argon2id")
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(credentials: Vec<Credential>) -> Consumer {
        Consumer { name: "app".into(), team: None, groups: vec![], credentials, policies: Policies::default() }
    }

    #[test]
    fn sealing_replaces_plain_text_with_hashes() {
        let mut c = consumer(vec![
            Credential::KeyAuth(KeyCredential { id: String::new(), key: Some("k".repeat(20)), key_sha256: None }),
            Credential::BasicAuth(BasicCredential {
                id: String::new(),
                username: "ann".into(),
                password: Some("secret".into()),
                password_hash: None,
            }),
        ]);
        let digest = c.credentials[0].key_digest();
        assert!(c.validate().is_ok());
        c.seal();
        assert!(c.validate().is_ok());
        assert!(!c.needs_sealing());
        assert_eq!(c.credentials[0].key_digest(), digest);
        let Credential::BasicAuth(basic) = &c.credentials[1] else { panic!("basic") };
        assert!(basic.password_hash.as_deref().is_some_and(|h| h.starts_with("$argon2id$")));
        assert_eq!(basic.id, "ann");
        assert!(c.credentials[0].id().starts_with("key-"));
        let Credential::BasicAuth(basic) = &c.credentials[1] else { panic!("basic") };
        assert!(verify_password("secret", basic.password_hash.as_deref().unwrap_or("")));
        assert!(!verify_password("Secret", basic.password_hash.as_deref().unwrap_or("")));

        let sealed = c.clone();
        c.redact();
        let text = serde_json::to_string(&c).unwrap_or_default();
        assert!(!text.contains("argon2") && !text.contains("sha256"), "{text}");
        c.keep_secrets(&sealed);
        assert_eq!(c, sealed);
    }

    #[test]
    fn bad_credentials_are_named() {
        let c = consumer(vec![
            Credential::KeyAuth(KeyCredential { id: String::new(), key: Some("short".into()), key_sha256: None }),
            Credential::BasicAuth(BasicCredential {
                id: String::new(),
                username: "a:b".into(),
                password: None,
                password_hash: Some("$2b$10$notargon".into()),
            }),
        ]);
        let problems = c.validate().err().unwrap_or_default();
        let paths: Vec<_> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["credentials[0].key", "credentials[1].username", "credentials[1].password_hash"]);
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 51);
    }
}
