//! What can go wrong in the store, in terms the admin API can turn into a status code.

use portico_model::Problems;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The change would leave an invalid configuration.
    #[error("the change is invalid:\n{0}")]
    Invalid(Problems),
    #[error("{kind} `{name}` does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} `{name}` already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// The entity changed since the caller read it (optimistic concurrency).
    #[error("{kind} `{name}` is at version {current}, not the version {expected} the change was based on")]
    VersionMismatch { kind: &'static str, name: String, expected: i64, current: i64 },
    /// The entity is still referred to by others and cannot be deleted.
    #[error("{0}")]
    InUse(String),
    /// A credential still holds plain text; it must be hashed before it is stored.
    #[error("a credential holds a plain-text secret; hash it before storing (Consumer::seal)")]
    Unsealed,
    #[error("the store URL `{0}` is not supported: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}
