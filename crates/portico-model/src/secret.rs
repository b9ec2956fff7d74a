//! Secrets at rest: values Portico must be able to read back (private keys, upstream
//! credentials), encrypted with the master key before they are stored.
//!
//! A secret is written in plain text (in a request or a YAML file) and stored sealed:
//! `enc:v1:<key id>:<base64 of nonce, ciphertext and tag>`, AES-256-GCM under the master key.
//! The key id (a digest of the key) tells a wrong key from a corrupt value. Exports carry the
//! sealed form, which only a holder of the master key can open.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

const SEALED_PREFIX: &str = "enc:v1:";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A secret value: plain text as written by a user, or sealed for storage.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_sealed() { "Secret(sealed)" } else { "Secret(plain)" })
    }
}

/// Why a secret cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret is sealed and Portico has no master key; set PORTICO_MASTER_KEY or --master-key-file")]
    NoKey,
    #[error("the secret was sealed with another master key (key id {0})")]
    OtherKey(String),
    #[error("the sealed secret is corrupt")]
    Corrupt,
}

impl Secret {
    pub fn plain(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    pub fn is_sealed(&self) -> bool {
        self.0.starts_with(SEALED_PREFIX)
    }

    /// The plain text, opening a sealed secret with `key`.
    pub fn reveal(&self, key: Option<&MasterKey>) -> Result<String, SecretError> {
        let Some(sealed) = self.0.strip_prefix(SEALED_PREFIX) else { return Ok(self.0.clone()) };
        let key = key.ok_or(SecretError::NoKey)?;
        let (id, data) = sealed.split_once(':').ok_or(SecretError::Corrupt)?;
        if id != key.id {
            return Err(SecretError::OtherKey(id.to_owned()));
        }
        let mut data = B64.decode(data).map_err(|_| SecretError::Corrupt)?;
        if data.len() < NONCE_LEN {
            return Err(SecretError::Corrupt);
        }
        let mut in_out = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| SecretError::Corrupt)?;
        let plain =
            key.key.open_in_place(nonce, Aad::from(id.as_bytes()), &mut in_out).map_err(|_| SecretError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Corrupt)
    }

    /// The secret sealed with `key` (a sealed one is opened first, so this also re-seals).
    pub fn seal(&self, key: &MasterKey, opener: Option<&MasterKey>) -> Result<Secret, SecretError> {
        let plain = self.reveal(opener)?;
        let mut nonce = [0u8; NONCE_LEN];
        // The OS random source only fails on a broken system, where nothing should be sealed.
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let mut in_out = plain.into_bytes();
        key.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key.id.as_bytes()), &mut in_out)
            .map_err(|_| SecretError::Corrupt)?;
        let mut data = nonce.to_vec();
        data.extend_from_slice(&in_out);
        Ok(Secret(format!("{SEALED_PREFIX}{}:{}", key.id, B64.encode(data))))
    }
}

/// The key that seals every secret Portico stores.
pub struct MasterKey {
    key: LessSafeKey,
    /// The first 8 hex digits of the key's SHA-256: names the key without revealing it.
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// Reads a key written as base64 or hex of 32 random bytes.
    pub fn parse(text: &str) -> Result<MasterKey, String> {
        let text = text.trim();
        let bytes = B64
            .decode(text)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| (text.len() == 64).then(|| crate::consumer::unhex(text)).flatten())
            .ok_or("a master key is 32 random bytes, written as base64 (44 characters) or hex (64 digits); `portico secrets generate-key` makes one")?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "the master key is not usable".to_owned())?;
        let id = crate::consumer::hex(&Sha256::digest(&bytes)[..4]);
        Ok(MasterKey { key: LessSafeKey::new(key), id })
    }

    /// A new random key, as base64.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source is available");
        B64.encode(bytes)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// An entity that holds secrets: certificates (their private key), services (the client key
/// they present to upstreams), and anything with policies (HMAC secrets of `jwt_auth`). The
/// helpers below seal, redact and keep them uniformly.
pub trait HoldsSecrets {
    /// Every secret slot of the entity, each named by a path that stays the same while the
    /// entity is edited: an entry of a list is named by its key id, not by its position, so
    /// that removing one entry cannot hand its secret to the next.
    fn secret_slots(&mut self) -> Vec<(String, &mut Option<Secret>)>;

    /// Removes every secret, for showing the entity.
    fn redact_secrets(&mut self) {
        for (_, slot) in self.secret_slots() {
            *slot = None;
        }
    }

    /// Gives the slots left empty (sent back as read) the secrets they had in `previous`.
    fn keep_secrets_of(&mut self, previous: &mut Self)
    where
        Self: Sized,
    {
        let mut old = previous.secret_slots();
        for (name, slot) in self.secret_slots() {
            if slot.is_none() {
                if let Some((_, kept)) = old.iter_mut().find(|(n, _)| *n == name) {
                    *slot = kept.clone();
                }
            }
        }
    }

    /// Whether a secret is still in plain text.
    fn has_plain_secrets(&mut self) -> bool {
        self.secret_slots().into_iter().any(|(_, s)| s.as_ref().is_some_and(|s| !s.is_sealed()))
    }

    /// Seals every plain-text secret with `key`. A secret `previous` holds sealed with the
    /// same plain text keeps its sealed form, so writing the same value twice changes nothing.
    fn seal_secrets(&mut self, key: Option<&MasterKey>, previous: Option<&mut Self>) -> Result<(), String>
    where
        Self: Sized,
    {
        let old: Vec<(String, Option<Secret>)> = match previous {
            Some(previous) => previous.secret_slots().into_iter().map(|(n, s)| (n, s.clone())).collect(),
            None => Vec::new(),
        };
        for (name, slot) in self.secret_slots() {
            let Some(secret) = slot.as_ref().filter(|s| !s.is_sealed()) else { continue };
            let key = key.ok_or(NO_MASTER_KEY)?;
            let plain = secret.reveal(None).map_err(|e| e.to_string())?;
            let kept = old.iter().find(|(n, _)| *n == name).and_then(|(_, s)| s.as_ref());
            *slot = Some(match kept {
                Some(old) if old.reveal(Some(key)).is_ok_and(|p| p == plain) => old.clone(),
                _ => secret.seal(key, None).map_err(|e| e.to_string())?,
            });
        }
        Ok(())
    }

    /// Re-seals every secret with `new`, opening sealed ones with `old`; returns how many.
    fn reseal_secrets(&mut self, old: Option<&MasterKey>, new: &MasterKey) -> Result<usize, SecretError> {
        let mut count = 0;
        for (_, slot) in self.secret_slots() {
            if let Some(secret) = slot.as_ref() {
                *slot = Some(secret.seal(new, old)?);
                count += 1;
            }
        }
        Ok(count)
    }
}

/// Why a secret cannot be stored without a master key, and what to do.
pub const NO_MASTER_KEY: &str = "Portico has no master key, so it cannot store secrets: set PORTICO_MASTER_KEY to 32 random bytes in base64 (or use --master-key-file); `portico secrets generate-key` makes one";

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::parse(&MasterKey::generate()).expect("a generated key parses")
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let (one, two) = (key(), key());
        let secret = Secret::plain("-----BEGIN PRIVATE KEY-----");
        let sealed = secret.seal(&one, None).expect("seal");
        assert!(sealed.is_sealed() && !format!("{sealed:?}").contains("PRIVATE"));
        assert_eq!(sealed.reveal(Some(&one)).as_deref(), Ok("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(sealed.reveal(None), Err(SecretError::NoKey));
        assert!(matches!(sealed.reveal(Some(&two)), Err(SecretError::OtherKey(_))));
        // Sealing twice gives different texts (fresh nonces); re-sealing moves to a new key.
        assert_ne!(secret.seal(&one, None).ok(), Some(sealed.clone()));
        let moved = sealed.seal(&two, Some(&one)).expect("reseal");
        assert_eq!(moved.reveal(Some(&two)).as_deref(), Ok("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn tampering_is_detected() {
        let one = key();
        let sealed = Secret::plain("secret").seal(&one, None).expect("seal");
        let mut text = sealed.0.clone();
        let last = text.pop().unwrap_or('A');
        text.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(Secret(text).reveal(Some(&one)), Err(SecretError::Corrupt));
    }

    #[test]
    fn keys_are_read_as_base64_or_hex() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse("too short").is_err());
        assert_eq!(MasterKey::parse(&"ab".repeat(32)).map(|k| k.id().len()), Ok(8));
    }
}
