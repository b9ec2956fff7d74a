//! Throwaway PostgreSQL databases for tests.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Connection, Row};

/// The variable that names the PostgreSQL server tests may use; `.ci/run` sets it.
pub const POSTGRES_URL_VAR: &str = "PORTICO_TEST_POSTGRES_URL";

/// Creates an empty database on the server named by `PORTICO_TEST_POSTGRES_URL` and returns
/// its URL, or `None` (saying so on stderr) when the variable is not set. Databases left by
/// earlier test processes that have exited are dropped first.
pub async fn fresh_postgres() -> Option<String> {
    let Ok(url) = std::env::var(POSTGRES_URL_VAR) else {
        eprintln!("skipped: the PostgreSQL part of this test (set {POSTGRES_URL_VAR} to run it)");
        return None;
    };
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect to PostgreSQL");
    drop_leftovers(&mut conn).await;
    // Tests of one process run on parallel threads, and the clock alone has been seen to give
    // two of them the same reading: the counter keeps their names apart.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let name = format!("portico_test_{}_{nanos}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    // Database names cannot be bound as parameters; this one is made of digits and '_'.
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
    let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
    Some(format!("{base}/{name}"))
}

async fn drop_leftovers(conn: &mut sqlx::AnyConnection) {
    let Ok(rows) = sqlx::query("SELECT datname::text FROM pg_database WHERE datname LIKE 'portico_test_%'")
        .fetch_all(&mut *conn)
        .await
    else {
        return;
    };
    for row in rows {
        let Ok(name) = row.try_get::<String, _>(0) else { continue };
        let pid = name.trim_start_matches("portico_test_").split('_').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut *conn).await;
        }
    }
}
