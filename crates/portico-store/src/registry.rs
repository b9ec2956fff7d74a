//! The service registry: instances register with a TTL, heartbeat to stay, and leave (or
//! lapse). Expiry times are kept in milliseconds since the Unix epoch, set by whichever
//! Portico node took the heartbeat; nodes of a cluster are assumed to keep their clocks in
//! sync (NTP), as every TTL-based registry does.

use crate::{Store, StoreError};
use sqlx::Row;

/// One registered instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub service: String,
    pub id: String,
    pub address: String,
    pub weight: u32,
    pub ttl_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    pub registered_at: i64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

const COLUMNS: &str = "service, id, address, weight, ttl_ms, expires_at, registered_at";

fn instance(row: &sqlx::any::AnyRow) -> Result<Instance, StoreError> {
    Ok(Instance {
        service: row.try_get(0)?,
        id: row.try_get(1)?,
        address: row.try_get(2)?,
        weight: row.try_get::<i64, _>(3)? as u32,
        ttl_ms: row.try_get::<i64, _>(4)? as u64,
        expires_at: row.try_get(5)?,
        registered_at: row.try_get(6)?,
    })
}

impl Store {
    /// Registers an instance, or refreshes the registration of the same address.
    pub async fn register_instance(
        &self,
        service: &str,
        address: &str,
        weight: u32,
        ttl_ms: u64,
    ) -> Result<Instance, StoreError> {
        let now = now_ms();
        let id = crate::tokens::hex(&crate::tokens::random_bytes::<8>()?);
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE registry_instances SET weight = $1, ttl_ms = $2, expires_at = $3 WHERE service = $4 AND address = $5",
        )
        .bind(i64::from(weight))
        .bind(ttl_ms as i64)
        .bind(now + ttl_ms as i64)
        .bind(service)
        .bind(address)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(&format!("INSERT INTO registry_instances ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
                .bind(service)
                .bind(&id)
                .bind(address)
                .bind(i64::from(weight))
                .bind(ttl_ms as i64)
                .bind(now + ttl_ms as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM registry_instances WHERE service = $1 AND address = $2"))
            .bind(service)
            .bind(address)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        instance(&row)
    }

    /// Extends a live instance's registration by its TTL. An instance that has lapsed must
    /// register again.
    pub async fn heartbeat(&self, service: &str, id: &str) -> Result<Instance, StoreError> {
        let now = now_ms();
        let row = sqlx::query(&format!(
            "UPDATE registry_instances SET expires_at = $1 + ttl_ms \
             WHERE service = $2 AND id = $3 AND expires_at > $1 RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(service)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => instance(&row),
            None => Err(StoreError::NotFound { kind: "live instance", name: format!("{service}/{id}") }),
        }
    }

    pub async fn deregister(&self, service: &str, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM registry_instances WHERE service = $1 AND id = $2")
            .bind(service)
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { kind: "instance", name: format!("{service}/{id}") });
        }
        Ok(())
    }

    /// The live instances of one service, or of every service, oldest first. Instances that
    /// lapsed more than an hour ago are deleted on the way.
    pub async fn live_instances(&self, service: Option<&str>) -> Result<Vec<Instance>, StoreError> {
        let now = now_ms();
        sqlx::query("DELETE FROM registry_instances WHERE expires_at < $1")
            .bind(now - 3_600_000)
            .execute(self.pool())
            .await?;
        let rows = match service {
            Some(service) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM registry_instances WHERE service = $1 AND expires_at > $2 \
                     ORDER BY registered_at, address"
                ))
                .bind(service)
                .bind(now)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM registry_instances WHERE expires_at > $1 ORDER BY service, registered_at, address"
                ))
                .bind(now)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(instance).collect()
    }
}
