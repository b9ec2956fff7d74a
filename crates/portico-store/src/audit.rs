//! The audit log: who changed what, when, and the entity before and after.
//!
//! Records are written in the same transaction as the change they describe, so the log and
//! the configuration never disagree. Secrets never reach it: consumers are recorded without
//! their credentials' secrets or hashes, and every other entity without its sealed secrets.

use crate::registry::now_ms;
use crate::tokens::{hex, random_bytes};
use crate::{Kind, Store, StoreError};
use portico_model::{AiProvider, Certificate, Consumer, Global, HoldsSecrets, Route, Service};
use sqlx::Row;
use std::sync::atomic::{AtomicU64, Ordering};

/// Orders the records one process writes within a millisecond.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Who makes a change: an admin token, or the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token id, or `cli`.
    pub id: String,
    pub name: String,
}

impl Actor {
    /// Changes made without a named actor (tests, internal writes).
    pub fn unnamed() -> Actor {
        Actor { id: "unknown".into(), name: "unknown".into() }
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// The configuration revision the change made, for configuration changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    pub actor_id: String,
    pub actor_name: String,
    /// `create`, `update` or `delete`.
    pub action: String,
    /// `service`, `route`, `consumer`, `global` or `admin_token`.
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

/// Which records to list; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub actor_id: Option<String>,
    /// Only records at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// Only records before this time (ms since the epoch).
    pub until: Option<i64>,
    /// Only records older than the record with this id: the next page after it.
    pub before: Option<String>,
    pub limit: i64,
}

/// A change to record.
pub(crate) struct Change<'a> {
    pub revision: Option<i64>,
    pub action: &'static str,
    pub kind: &'a str,
    pub name: &'a str,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
}

/// Writes one record through `conn` (the change's own transaction).
pub(crate) async fn record(
    conn: &mut sqlx::AnyConnection,
    actor: Option<&Actor>,
    change: Change<'_>,
) -> Result<(), StoreError> {
    let unnamed = Actor::unnamed();
    let actor = actor.unwrap_or(&unnamed);
    let at = now_ms();
    // Ids sort by time, then by the order this process wrote them (several records of one
    // change share a millisecond), so that they order the log and serve as page cursors.
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    let id = format!("{at:013}-{sequence:06}-{}", hex(&random_bytes::<3>()?));
    let redact = |spec: Option<&str>| spec.map(|s| redacted(change.kind, s));
    sqlx::query(
        "INSERT INTO audit_log (id, at, revision, actor_id, actor_name, action, kind, name, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(at)
    .bind(change.revision)
    .bind(&actor.id)
    .bind(&actor.name)
    .bind(change.action)
    .bind(change.kind)
    .bind(change.name)
    .bind(redact(change.before))
    .bind(redact(change.after))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A stored entity's JSON without secrets.
fn redacted(kind: &str, spec: &str) -> String {
    fn without<T: serde::Serialize + serde::de::DeserializeOwned>(spec: &str, redact: fn(&mut T)) -> String {
        match serde_json::from_str::<T>(spec) {
            Ok(mut value) => {
                redact(&mut value);
                serde_json::to_string(&value).unwrap_or_default()
            }
            Err(_) => String::new(),
        }
    }
    match kind {
        k if k == Kind::Consumer.as_str() => without::<Consumer>(spec, Consumer::redact),
        k if k == Kind::Certificate.as_str() => without::<Certificate>(spec, Certificate::redact_secrets),
        k if k == Kind::Service.as_str() => without::<Service>(spec, Service::redact_secrets),
        k if k == Kind::Route.as_str() => without::<Route>(spec, Route::redact_secrets),
        k if k == Kind::AiProvider.as_str() => without::<AiProvider>(spec, AiProvider::redact_secrets),
        k if k == Kind::Global.as_str() => without::<Global>(spec, Global::redact_secrets),
        _ => spec.to_owned(),
    }
}

impl Store {
    /// Audit records matching `query`, newest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, revision, actor_id, actor_name, action, kind, name, before, after FROM audit_log \
             WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR name = $2) AND ($3 = '' OR actor_id = $3) \
             AND at >= $4 AND at < $5 AND ($7 = '' OR id < $7) ORDER BY id DESC LIMIT $6",
        )
        .bind(query.kind.as_deref().unwrap_or(""))
        .bind(query.name.as_deref().unwrap_or(""))
        .bind(query.actor_id.as_deref().unwrap_or(""))
        .bind(query.since.unwrap_or(0))
        .bind(query.until.unwrap_or(i64::MAX))
        .bind(query.limit)
        .bind(query.before.as_deref().unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get(0)?,
                    at: row.try_get(1)?,
                    revision: row.try_get(2)?,
                    actor_id: row.try_get(3)?,
                    actor_name: row.try_get(4)?,
                    action: row.try_get(5)?,
                    kind: row.try_get(6)?,
                    name: row.try_get(7)?,
                    before: json(row.try_get(8)?),
                    after: json(row.try_get(9)?),
                })
            })
            .collect()
    }

    /// Records an admin-token change (no revision: tokens are not configuration).
    pub(crate) async fn record_token_change(&self, action: &'static str, name: &str) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        let change = Change { revision: None, action, kind: "admin_token", name, before: None, after: None };
        record(&mut conn, self.actor(), change).await
    }
}
