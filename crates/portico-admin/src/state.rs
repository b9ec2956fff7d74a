//! What the admin handlers share.

use arc_swap::ArcSwap;
use portico_gateway::{RedisLimits, SnapshotCell};
use portico_model::{Config, MasterKey};
use portico_store::Store;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Where the configuration the admin API shows comes from.
#[derive(Clone)]
pub enum ConfigSource {
    /// The store: read and write.
    Store,
    /// A configuration file, reloaded by the control plane: read only.
    File(Arc<ArcSwap<Config>>),
}

/// What the control plane reports about the running gateway.
#[derive(Default)]
pub struct RuntimeStatus {
    ready: AtomicBool,
    revision: AtomicI64,
    routes: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// The Redis connection of cluster rate limits, when one is configured.
    redis: Option<Arc<RedisLimits>>,
}

impl RuntimeStatus {
    pub fn new(redis: Option<Arc<RedisLimits>>) -> RuntimeStatus {
        RuntimeStatus { redis, ..RuntimeStatus::default() }
    }

    pub(crate) fn redis(&self) -> Option<&Arc<RedisLimits>> {
        self.redis.as_ref()
    }

    /// Records that the snapshot of `revision` with `routes` routes is now serving.
    pub fn serving(&self, revision: i64, routes: usize) {
        self.revision.store(revision, Ordering::Relaxed);
        self.ready.store(true, Ordering::Relaxed);
        self.routes.store(routes as i64, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records why the newest configuration could not be loaded; the gateway keeps serving
    /// the last good snapshot meanwhile.
    pub fn failed(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// Whether a configuration has been loaded and is serving.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    pub fn routes(&self) -> i64 {
        self.routes.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
pub struct AdminState {
    pub(crate) store: Store,
    pub(crate) source: ConfigSource,
    pub(crate) status: Arc<RuntimeStatus>,
    pub(crate) verified: Arc<crate::auth::VerifiedTokens>,
    /// The configuration being served, with its targets' run-time state.
    pub(crate) snapshots: SnapshotCell,
    /// Seals secrets before they are stored; without it, secrets are refused.
    pub(crate) master_key: Option<Arc<MasterKey>>,
    /// Metrics and the access log's counters.
    pub(crate) telemetry: Arc<portico_gateway::Telemetry>,
    /// The filter of Portico's own log, when Portico installed the log.
    pub(crate) log_filter: Option<Arc<dyn crate::LogFilter>>,
}

impl AdminState {
    /// The store, recording changes as made by the token behind the current request.
    pub(crate) fn writer(&self) -> Store {
        match crate::auth::ACTOR.try_with(|actor| actor.clone()) {
            Ok(actor) => self.store.acting_as(actor),
            Err(_) => self.store.clone(),
        }
    }

    pub fn new(store: Store, source: ConfigSource, status: Arc<RuntimeStatus>, snapshots: SnapshotCell) -> AdminState {
        AdminState {
            store,
            source,
            status,
            verified: Arc::default(),
            snapshots,
            master_key: None,
            telemetry: portico_gateway::Telemetry::disabled(),
            log_filter: None,
        }
    }

    /// Lets the admin API change the filter of Portico's own log.
    pub fn with_log_filter(mut self, filter: Option<Arc<dyn crate::LogFilter>>) -> AdminState {
        self.log_filter = filter;
        self
    }

    /// Serves the metrics and counters of `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<portico_gateway::Telemetry>) -> AdminState {
        self.telemetry = telemetry;
        self
    }

    /// Lets the admin API store secrets, sealed with `key`.
    pub fn with_master_key(self, key: Option<Arc<MasterKey>>) -> AdminState {
        AdminState { master_key: key, ..self }
    }
}
