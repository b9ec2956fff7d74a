//! `portico serve`: wires the store, the control loop, the gateway and the admin API
//! together, and takes them down in order.

use crate::control::{ConfigFile, Control};
use crate::settings::Settings;
use crate::traffic_store::{Retention, StoreSink};
use anyhow::Context;
use portico_admin::{AdminState, ConfigSource, RuntimeStatus};
use portico_gateway::{
    bind_listeners, run_dns_discovery, run_health_checks, AccessLogSink, AccessStates, Discovered, Gateway,
    GatewayHandle, RedisLimits, Snapshot, SnapshotCell, StoreSinks, Telemetry, UpstreamStates,
};
use portico_store::{Actor, Role, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// A running Portico.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The TLS listener's address, when there is one.
    pub tls_addr: Option<SocketAddr>,
    /// The admin token created on first start; it is shown once and never stored.
    pub initial_token: Option<String>,
    shutdown: watch::Sender<bool>,
    reload: Arc<Notify>,
    gateway: GatewayHandle,
    tasks: Vec<JoinHandle<()>>,
    store: Store,
    telemetry: Arc<Telemetry>,
    /// The run-time state of targets, keys and budgets, for the budgets' last save.
    states: UpstreamStates,
}

/// Starts Portico: opens (and migrates) the store, loads the configuration, binds the
/// listeners and starts serving. `config_file` selects file mode.
pub async fn start(settings: &Settings, config_file: Option<PathBuf>) -> anyhow::Result<Running> {
    let store =
        Store::open(&settings.store).await.with_context(|| format!("cannot open the store {}", settings.store))?;
    let initial_token = if store.has_tokens().await? { None } else { Some(first_token(&store).await?) };

    let redis = match &settings.redis_url {
        Some(url) => Some(RedisLimits::new(url).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let to_store = settings.telemetry.access_log.as_ref().is_some_and(|l| l.sinks.contains(&AccessLogSink::Store));
    let analytics = settings.telemetry.analytics.is_some();
    let sink = || StoreSink::new(store.clone(), tokio::runtime::Handle::current());
    let sinks = StoreSinks {
        events: to_store.then(|| Box::new(sink()) as Box<dyn portico_gateway::EventSink>),
        rollups: analytics.then(|| Box::new(sink()) as Box<dyn portico_gateway::RollupSink>),
    };
    let telemetry = Telemetry::start(settings.telemetry.clone(), sinks).context("cannot open the access log")?;
    let snapshots = SnapshotCell::new(Snapshot::empty());
    let status = Arc::new(RuntimeStatus::new(redis.clone()));
    let (upstreams, discovered) = (UpstreamStates::default(), Discovered::default());
    let control = Control {
        snapshots: snapshots.clone(),
        upstreams: upstreams.clone(),
        discovered: discovered.clone(),
        limiters: Arc::new(AccessStates::new(redis.clone())),
        master_key: settings.master_key.clone(),
        status: status.clone(),
        telemetry: telemetry.clone(),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let reload = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    if let Some(redis) = redis {
        let mut stop = shutdown_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        tasks.push(tokio::spawn(redis.run(stopped)));
    }

    // Before the first configuration is served: budgets remember what they had spent.
    crate::budgets::restore(&store, &upstreams).await;
    let source = match config_file {
        Some(path) => {
            let file = ConfigFile::new(path);
            control.load_file(&file).await?;
            let source = ConfigSource::File(file.current.clone());
            tasks.push(tokio::spawn(control.follow_file(file, reload.clone(), shutdown_rx.clone())));
            source
        }
        None => {
            control.load_store(&store).await?;
            tasks.push(tokio::spawn(control.follow_store(store.clone(), shutdown_rx.clone())));
            ConfigSource::Store
        }
    };

    // Both listeners are bound before anything serves, so that a taken port fails the start
    // cleanly instead of leaving half of Portico running.
    let listeners = bind_listeners(settings.listen, settings.workers)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let proxy_addr = listeners[0].local_addr()?;
    let tls_listeners = match settings.tls_listen {
        Some(addr) => {
            bind_listeners(addr, settings.workers).with_context(|| format!("cannot listen on {addr} for TLS"))?
        }
        None => Vec::new(),
    };
    let tls_addr = tls_listeners.first().map(|l| l.local_addr()).transpose()?;
    let mut proxy_settings = settings.proxy.clone();
    if let Some(addr) = tls_addr {
        proxy_settings.https_port = Some(addr.port());
    }
    let admin = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the admin API", settings.admin_listen))?;
    let admin_addr = admin.local_addr()?;
    let gateway = Gateway::new(snapshots.clone(), proxy_settings, telemetry.clone()).spawn(
        listeners,
        tls_listeners,
        shutdown_rx.clone(),
    )?;

    tasks.push(tokio::spawn(run_health_checks(snapshots.clone(), discovered.clone(), shutdown_rx.clone())));
    tasks.push(tokio::spawn(run_dns_discovery(
        snapshots.clone(),
        discovered.clone(),
        upstreams.clone(),
        shutdown_rx.clone(),
    )));
    if to_store || analytics {
        let retention = Retention {
            access_log: to_store.then_some(settings.access_log_retention),
            rollups: analytics.then_some(settings.analytics_retention),
        };
        tasks.push(tokio::spawn(crate::traffic_store::prune(store.clone(), retention, shutdown_rx.clone())));
    }
    tasks.push(tokio::spawn(crate::budgets::keep(store.clone(), upstreams.clone(), shutdown_rx.clone())));
    let states = upstreams.clone();
    tasks.push(tokio::spawn(crate::registry::follow_registry(
        store.clone(),
        discovered,
        snapshots.clone(),
        upstreams,
        shutdown_rx.clone(),
    )));
    let admin_state = AdminState::new(store.clone(), source, status, snapshots)
        .with_master_key(settings.master_key.clone())
        .with_telemetry(telemetry.clone())
        .with_log_filter(crate::logging::filter());
    let router = portico_admin::router(admin_state);
    let mut admin_shutdown = shutdown_rx;
    tasks.push(tokio::spawn(async move {
        let stopped = async move {
            let _ = admin_shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(admin, router).with_graceful_shutdown(stopped).await {
            tracing::error!(%error, "the admin API stopped");
        }
    }));

    Ok(Running {
        proxy_addr,
        admin_addr,
        tls_addr,
        initial_token,
        shutdown,
        reload,
        gateway,
        tasks,
        store,
        telemetry,
        states,
    })
}

/// The admin token a fresh store gets, recorded in the audit log as made by the first start.
async fn first_token(store: &Store) -> anyhow::Result<String> {
    let actor = Actor { id: "system".into(), name: "first start".into() };
    Ok(store.acting_as(actor).create_token("initial", Role::Admin).await?.secret)
}

impl Running {
    /// Re-reads the configuration file now (what SIGHUP does); no effect in store mode.
    pub fn reload(&self) {
        self.reload.notify_one();
    }

    /// Stops accepting, lets requests in flight finish within the drain timeout, stops every
    /// background task and closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.gateway.join().await;
        for task in self.tasks {
            let _ = task.await;
        }
        // Every request has finished: what budgets have spent is final.
        crate::budgets::save(&self.store, &self.states, &mut Default::default()).await;
        // Every request has finished: what the access log holds is complete.
        let telemetry = self.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.stop()).await;
        self.store.close().await;
        tracing::info!("Portico stopped");
    }
}
