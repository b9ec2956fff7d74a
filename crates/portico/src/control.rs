//! The control loop: notices configuration changes, compiles them off the request path and
//! swaps the new snapshot in.
//!
//! In store mode it follows the store's revision: at once for changes made through this
//! process or, on PostgreSQL, announced by another (another node, `portico apply`); by
//! polling for changes otherwise made elsewhere. In
//! file mode it follows the file's modification time and SIGHUP. Either way a configuration
//! that cannot be loaded or compiled leaves the last good snapshot serving, and the reason is
//! reported in the admin status.

use arc_swap::ArcSwap;
use portico_admin::RuntimeStatus;
use portico_gateway::{compile, AccessStates, Discovered, SnapshotCell, Telemetry, UpstreamStates};
use portico_model::{Config, MasterKey};
use portico_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};

/// How often the store is checked for changes made by other processes. It is well under the
/// 100 ms a committed change may take to reach the gateway. An SQLite store is asked for its
/// revision only when its files changed (`Store::file_stamp`), a PostgreSQL store only while
/// the connection that hears its commits is down (`Store::hear_commits`); either at least
/// every [`STORE_ASK_EVERY`].
const STORE_POLL: Duration = Duration::from_millis(50);
/// How often a store that gave no sign of a change is asked anyway: a file's modification
/// time moves in clock ticks of a few milliseconds, so two commits in one tick that leave
/// SQLite's write-ahead log as long as it was look like none; and a PostgreSQL announcement
/// can be lost with its connection before the listener knows it is gone.
const STORE_ASK_EVERY: Duration = Duration::from_secs(2);
/// How often the configuration file's modification time is checked.
const FILE_POLL: Duration = Duration::from_millis(250);

pub struct Control {
    pub snapshots: SnapshotCell,
    /// What the gateway has learnt about services and targets; every compile takes it over.
    pub upstreams: UpstreamStates,
    /// Targets found by discovery; compiles start from them.
    pub discovered: Discovered,
    /// Rate-limit counters; every compile takes them over.
    pub limiters: Arc<AccessStates>,
    /// Opens sealed secrets.
    pub master_key: Option<Arc<MasterKey>>,
    pub status: Arc<RuntimeStatus>,
    /// Route metrics (kept across compiles) and reload timings.
    pub telemetry: Arc<Telemetry>,
}

/// Waits for the next change of what is heard of the store's commits; never, for a store that
/// announces none (or whose listener stopped: the store is then polled).
async fn announced(heard: &mut Option<watch::Receiver<portico_store::Heard>>) {
    match heard {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                *heard = None;
            }
        }
        None => std::future::pending().await,
    }
}

impl Control {
    /// Compiles `config` and serves it. Compiling a large configuration takes milliseconds, so
    /// it runs on a blocking thread rather than stall the control runtime.
    async fn install(&self, config: Config, revision: i64) -> Result<(), String> {
        let started = Instant::now();
        let result = self.swap_in(config, revision, started).await;
        self.telemetry.record_reload(started.elapsed(), result.is_ok());
        result
    }

    async fn swap_in(&self, config: Config, revision: i64, started: Instant) -> Result<(), String> {
        let (upstreams, discovered, limiters, telemetry) =
            (self.upstreams.clone(), self.discovered.clone(), self.limiters.clone(), self.telemetry.clone());
        let key = self.master_key.clone();
        let snapshot = tokio::task::spawn_blocking(move || {
            compile(&config, revision, &upstreams, &discovered, &limiters, &telemetry, key.as_deref())
        })
        .await
        .map_err(|e| format!("compiler stopped: {e}"))?
        .map_err(|problems| format!("the configuration is invalid:\n{problems}"))?;
        let (revision, routes) = (snapshot.revision, snapshot.route_count());
        self.snapshots.store(snapshot);
        // Discovery may have moved on while this snapshot was compiled.
        self.discovered.refresh(&self.snapshots, &self.upstreams);
        self.status.serving(revision, routes);
        let compile_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(revision, routes, compile_ms = format!("{compile_ms:.1}"), "configuration loaded");
        Ok(())
    }

    /// Records a problem; it is logged once, not on every poll while it lasts.
    fn report(&self, error: String) {
        if self.status.last_error().as_deref() != Some(error.as_str()) {
            tracing::warn!(%error, "keeping the current configuration");
        }
        self.status.failed(error);
    }

    /// Loads the store's configuration once; used at start, where failing is fatal.
    pub async fn load_store(&self, store: &Store) -> anyhow::Result<()> {
        let (revision, config) = store.load().await?;
        self.install(config, revision).await.map_err(anyhow::Error::msg)
    }

    /// Follows the store until `shutdown` turns true.
    pub async fn follow_store(self, store: Store, mut shutdown: watch::Receiver<bool>) {
        let mut committed = store.subscribe();
        let mut heard = store.hear_commits();
        let mut loaded = self.snapshots.revision();
        let mut poll = tokio::time::interval(STORE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stamp = store.file_stamp();
        let mut asked = Instant::now();
        loop {
            tokio::select! {
                _ = committed.changed() => {}
                // A commit announced, or the listening connection lost or back.
                _ = announced(&mut heard) => {}
                _ = poll.tick() => {
                    // Read before asking: a commit after this read changes the next one.
                    let now = store.file_stamp();
                    let listening = heard.as_ref().is_some_and(|heard| heard.borrow().listening);
                    let quiet = listening || (now.is_some() && now == stamp);
                    if quiet && asked.elapsed() < STORE_ASK_EVERY {
                        continue;
                    }
                    stamp = now;
                }
                _ = shutdown.changed() => return,
            }
            asked = Instant::now();
            match store.revision().await {
                Ok(revision) if revision == loaded => continue,
                Ok(_) => {}
                Err(error) => {
                    self.report(format!("the store is unreachable: {error}"));
                    continue;
                }
            }
            match store.load().await {
                Ok((revision, config)) => {
                    // A configuration that fails to compile is not retried until it changes.
                    loaded = revision;
                    if let Err(error) = self.install(config, revision).await {
                        self.report(error);
                    }
                }
                Err(error) => self.report(format!("the store is unreachable: {error}")),
            }
        }
    }

    /// Loads the configuration file once; used at start, where failing is fatal.
    pub async fn load_file(&self, file: &ConfigFile) -> anyhow::Result<()> {
        let config = file.read().map_err(anyhow::Error::msg)?;
        file.current.store(Arc::new(config.clone()));
        self.install(config, 1).await.map_err(anyhow::Error::msg)
    }

    /// Follows the file until `shutdown` turns true.
    pub async fn follow_file(self, file: ConfigFile, reload: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let mut seen = file.modified();
        let mut generation = 1;
        let mut poll = tokio::time::interval(FILE_POLL);
        loop {
            tokio::select! {
                _ = reload.notified() => tracing::info!(path = %file.path.display(), "reloading on request"),
                _ = poll.tick() => {
                    let modified = file.modified();
                    if modified == seen {
                        continue;
                    }
                    seen = modified;
                }
                _ = shutdown.changed() => return,
            }
            let config = match file.read() {
                Ok(config) => config,
                Err(error) => {
                    self.report(error);
                    continue;
                }
            };
            generation += 1;
            file.current.store(Arc::new(config.clone()));
            if let Err(error) = self.install(config, generation).await {
                self.report(error);
            }
        }
    }
}

/// The configuration file of file mode, and its last good contents for the admin API.
pub struct ConfigFile {
    pub path: PathBuf,
    pub current: Arc<ArcSwap<Config>>,
}

impl ConfigFile {
    pub fn new(path: PathBuf) -> ConfigFile {
        ConfigFile { path, current: Arc::new(ArcSwap::from_pointee(Config::default())) }
    }

    fn read(&self) -> Result<Config, String> {
        let text =
            std::fs::read_to_string(&self.path).map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        portico_model::parse_yaml(&text).map_err(|problems| format!("{} is invalid:\n{problems}", self.path.display()))
    }

    /// Modification time and size: together they catch edits within the same second.
    fn modified(&self) -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(&self.path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }
}
