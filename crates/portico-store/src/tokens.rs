//! Admin API tokens. A token is 32 random bytes shown once; only its SHA-256 is stored, which
//! is enough for a secret with that much entropy (no slow password hash is needed). Tokens are
//! admin state, not configuration, so changing them does not bump the revision.

use crate::store::now;
use crate::{Store, StoreError};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Tokens start with this, so that leaked ones are easy to recognise in logs and by scanners.
const TOKEN_PREFIX: &str = "portico_";

/// A token as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: configuration, admin tokens and the audit log.
    Admin,
    /// Read and change the configuration.
    Editor,
    /// Read the configuration and the gateway's state.
    Viewer,
    /// Only the registry: register, heartbeat, deregister and list instances.
    Registry,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Editor, Role::Viewer, Role::Registry];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
            Role::Registry => "registry",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// A stored role; one this version does not know grants the least.
    fn from_stored(text: &str) -> Role {
        Role::parse(text).unwrap_or(Role::Viewer)
    }
}

/// A freshly created token, with the secret that is never shown again.
#[derive(Debug)]
pub struct NewToken {
    pub token: AdminToken,
    pub secret: String,
}

impl Store {
    /// Creates a token and returns its secret, which is not kept.
    pub async fn create_token(&self, name: &str, role: Role) -> Result<NewToken, StoreError> {
        let id = hex(&random_bytes::<6>()?);
        let secret = format!("{TOKEN_PREFIX}{}", hex(&random_bytes::<32>()?));
        let created_at = now();
        sqlx::query("INSERT INTO admin_tokens (id, name, hash, created_at, scope) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(name)
            .bind(hash(&secret))
            .bind(created_at)
            .bind(role.as_str())
            .execute(self.pool())
            .await?;
        self.record_token_change("create", &format!("{name} ({id}, {})", role.as_str())).await?;
        Ok(NewToken { token: AdminToken { id, name: name.to_owned(), role, created_at, revoked_at: None }, secret })
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, created_at, revoked_at, scope FROM admin_tokens ORDER BY created_at, id")
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| {
                Ok(AdminToken {
                    id: row.try_get(0)?,
                    name: row.try_get(1)?,
                    role: Role::from_stored(row.try_get(4)?),
                    created_at: row.try_get(2)?,
                    revoked_at: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Revokes the token with this id, or every active token with this name. Returns how many
    /// tokens were revoked.
    pub async fn revoke_token(&self, id_or_name: &str) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE admin_tokens SET revoked_at = $1 WHERE (id = $2 OR name = $2) AND revoked_at IS NULL")
                .bind(now())
                .bind(id_or_name)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { kind: "admin token", name: id_or_name.to_owned() });
        }
        self.record_token_change("delete", id_or_name).await?;
        Ok(done.rows_affected())
    }

    /// The active token whose secret this is, if any.
    pub async fn verify_token(&self, secret: &str) -> Result<Option<AdminToken>, StoreError> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row =
            sqlx::query("SELECT id, name, created_at, scope FROM admin_tokens WHERE hash = $1 AND revoked_at IS NULL")
                .bind(hash(secret))
                .fetch_optional(self.pool())
                .await?;
        Ok(match row {
            Some(row) => Some(AdminToken {
                id: row.try_get(0)?,
                name: row.try_get(1)?,
                role: Role::from_stored(row.try_get(3)?),
                created_at: row.try_get(2)?,
                revoked_at: None,
            }),
            None => None,
        })
    }

    /// Whether any token was ever created; on first start there is none and Portico makes one.
    pub async fn has_tokens(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM admin_tokens").fetch_one(self.pool()).await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Database(sqlx::Error::Configuration(format!("no secure randomness: {e}").into())))?;
    Ok(bytes)
}

fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
