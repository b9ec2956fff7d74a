//! Opening the store, migrations, revisions and consistent reads of the whole configuration.

use crate::{Kind, StoreError};
use portico_model::Config;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::watch;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    place: Place,
    /// The newest revision this process committed or observed, for in-process listeners.
    committed: watch::Sender<i64>,
    /// Who the changes made through this handle are recorded as, in the audit log.
    actor: Option<std::sync::Arc<crate::Actor>>,
}

/// Where a store's data lives.
#[derive(Clone)]
enum Place {
    /// The SQLite database file.
    Sqlite(std::sync::Arc<std::path::PathBuf>),
    /// The PostgreSQL server's URL, for the connection that listens for commits.
    Postgres(std::sync::Arc<str>),
}

/// The channel on which a PostgreSQL store announces each committed revision (`NOTIFY`).
const COMMITS_CHANNEL: &str = "portico_revision";

/// What a process hears of the revisions committed to a PostgreSQL store, by itself or by
/// any other (see [`Store::hear_commits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// The newest revision announced so far (0 before any).
    pub revision: i64,
    /// Whether the listening connection is up. While it is not, announcements are missed
    /// and the store has to be asked.
    pub listening: bool,
}

/// What the files of an SQLite store looked like at one moment: each file's size and
/// modification time, the database's and its write-ahead log's. A commit by any process
/// writes to one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp([Option<(std::time::SystemTime, u64)>; 2]);

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`), creating an SQLite file and its
    /// folder if needed, and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without running migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let (url, place) = match backend {
            Backend::Sqlite => {
                let (url, path) = prepare_sqlite_url(url)?;
                (url, Place::Sqlite(std::sync::Arc::new(path)))
            }
            Backend::Postgres => (url.to_owned(), Place::Postgres(std::sync::Arc::from(url))),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // SQLite has one writer at a time; a few readers are all that helps.
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets the gateway read while an admin writes; the busy timeout
                        // makes a second writer wait instead of failing at once.
                        for pragma in
                            ["PRAGMA journal_mode = WAL", "PRAGMA busy_timeout = 5000", "PRAGMA synchronous = NORMAL"]
                        {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let (committed, _) = watch::channel(0);
        Ok(Store { pool, place, committed, actor: None })
    }

    /// For SQLite, a stamp of the database's files that changes when any process commits
    /// (see [`FileStamp`]); reading it takes two `stat` calls, where asking the database
    /// for its revision takes a round trip through a connection's thread. `None` for
    /// PostgreSQL, which has to be asked.
    pub fn file_stamp(&self) -> Option<FileStamp> {
        let Place::Sqlite(path) = &self.place else { return None };
        let look = |path: &std::path::Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Some(FileStamp([look(path), look(std::path::Path::new(&wal))]))
    }

    /// For PostgreSQL, starts listening for the revision every commit announces, whichever
    /// process made it: the receiver sees each one as it is committed, and whether the
    /// listening connection is up (a lost one is opened again, after 0.1 s and then up to
    /// every 5 s). Listening stops when the receiver is dropped. `None` for SQLite, whose
    /// files tell instead ([`Store::file_stamp`]).
    pub fn hear_commits(&self) -> Option<watch::Receiver<Heard>> {
        let Place::Postgres(url) = &self.place else { return None };
        let (heard, receiver) = watch::channel(Heard { revision: 0, listening: false });
        tokio::spawn(listen_for_commits(url.clone(), heard));
        Some(receiver)
    }

    /// This store, recording the changes made through it as `actor`'s.
    pub fn acting_as(&self, actor: crate::Actor) -> Store {
        Store { actor: Some(std::sync::Arc::new(actor)), ..self.clone() }
    }

    pub(crate) fn actor(&self) -> Option<&crate::Actor> {
        self.actor.as_deref()
    }

    pub fn backend(&self) -> Backend {
        match self.place {
            Place::Sqlite(_) => Backend::Sqlite,
            Place::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies pending schema migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The number of changes committed so far.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT revision FROM portico_revision WHERE id = 1").fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }

    /// A receiver that sees every revision this process commits, so that a change made
    /// through this handle is picked up without waiting for the next poll.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.committed.subscribe()
    }

    /// The whole configuration as of one revision.
    pub async fn load(&self) -> Result<(i64, Config), StoreError> {
        // Read the revision before and after: if a writer slipped in between, read again,
        // so that the configuration returned is exactly the one at that revision.
        loop {
            let before = self.revision().await?;
            let mut conn = self.pool.acquire().await?;
            let config = load_config(&mut conn).await?;
            drop(conn);
            if self.revision().await? == before {
                return Ok((before, config));
            }
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// How many rows of `columns` values one multi-row INSERT should carry (see [`values`]). SQLite binds
    /// parameters by name (`$n`), and finding a name costs time linear in the statement's
    /// parameters, so a statement's binding grows with the square of its size: there, a few
    /// hundred values per statement is the sweet spot. PostgreSQL takes up to 65,535.
    pub(crate) fn rows_per_insert(&self, columns: usize) -> usize {
        let values = match self.backend() {
            Backend::Sqlite => 240,
            Backend::Postgres => 8_000,
        };
        (values / columns).max(1)
    }

    /// Starts a write transaction: bumping the revision first takes the write lock on both
    /// backends, so concurrent writers queue up instead of validating against stale data.
    pub(crate) async fn begin_write(&self) -> Result<(Transaction<'static, Any>, i64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("UPDATE portico_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision")
            .fetch_one(&mut *tx)
            .await?;
        Ok((tx, row.try_get(0)?))
    }

    /// Commits a write transaction and tells in-process listeners; on PostgreSQL, every
    /// process listening hears of it too ([`Store::hear_commits`]).
    pub(crate) async fn commit(&self, mut tx: Transaction<'static, Any>, revision: i64) -> Result<(), StoreError> {
        if self.backend() == Backend::Postgres {
            // Delivered when the transaction commits, and never if it does not. NOTIFY takes no
            // bound parameters; the payload is a number.
            sqlx::query(&format!("NOTIFY {COMMITS_CHANNEL}, '{revision}'")).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.committed.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Listens on [`COMMITS_CHANNEL`] until `heard` has no receiver left, opening the connection
/// again whenever it is lost.
async fn listen_for_commits(url: std::sync::Arc<str>, heard: watch::Sender<Heard>) {
    const FIRST_RETRY: Duration = Duration::from_millis(100);
    const LAST_RETRY: Duration = Duration::from_secs(5);
    let mut retry = FIRST_RETRY;
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(COMMITS_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = heard.closed() => return,
            listener = listener => match listener {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::debug!(%error, "cannot listen for the store's commits; asking it instead");
                    tokio::select! {
                        _ = heard.closed() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
            },
        };
        retry = FIRST_RETRY;
        // Announcements made while no connection listened are lost: whoever follows this
        // asks the store once now.
        heard.send_modify(|heard| heard.listening = true);
        loop {
            let notification = tokio::select! {
                _ = heard.closed() => return,
                notification = listener.try_recv() => notification,
            };
            match notification {
                Ok(Some(notification)) => {
                    let revision = notification.payload().parse().unwrap_or(0);
                    heard.send_modify(|heard| heard.revision = heard.revision.max(revision));
                }
                // The connection was lost.
                Ok(None) | Err(_) => break,
            }
        }
        heard.send_modify(|heard| heard.listening = false);
    }
}

/// Reads every configuration entity through `conn`.
pub(crate) async fn load_config(conn: &mut sqlx::AnyConnection) -> Result<Config, StoreError> {
    let rows = sqlx::query("SELECT kind, name, spec FROM entities ORDER BY kind, name").fetch_all(&mut *conn).await?;
    let mut config = Config::default();
    for row in rows {
        let kind: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let spec: String = row.try_get(2)?;
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("{kind} `{name}`: {e}"));
        match Kind::parse(&kind) {
            Some(Kind::Service) => config.services.push(serde_json::from_str(&spec).map_err(corrupt)?),
            Some(Kind::Route) => config.routes.push(serde_json::from_str(&spec).map_err(corrupt)?),
            Some(Kind::Consumer) => config.consumers.push(serde_json::from_str(&spec).map_err(corrupt)?),
            Some(Kind::Certificate) => config.certificates.push(serde_json::from_str(&spec).map_err(corrupt)?),
            Some(Kind::AiProvider) => config.ai_providers.push(serde_json::from_str(&spec).map_err(corrupt)?),
            Some(Kind::AiModel) => config.ai_models.push(serde_json::from_str(&spec).map_err(corrupt)?),
            Some(Kind::AiBudget) => config.ai_budgets.push(serde_json::from_str(&spec).map_err(corrupt)?),
            Some(Kind::AiPrompt) => config.ai_prompts.push(serde_json::from_str(&spec).map_err(corrupt)?),
            Some(Kind::Global) => config.global = serde_json::from_str(&spec).map_err(corrupt)?,
            None => return Err(StoreError::Corrupt(format!("unknown entity kind `{kind}` for `{name}`"))),
        }
    }
    Ok(config)
}

/// Makes sure an SQLite file can be created: its folder exists and `mode=rwc` is set.
/// The URL to connect with, and the database file's path.
fn prepare_sqlite_url(url: &str) -> Result<(String, std::path::PathBuf), StoreError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        // An in-memory database would be a different empty database per pooled connection.
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    if let Some(parent) = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::Database(sqlx::Error::Configuration(format!("{}: {e}", parent.display()).into()))
        })?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok((format!("sqlite://{path}?{query}"), std::path::PathBuf::from(path)))
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The `VALUES` list of a multi-row INSERT: `rows` tuples of `columns` parameters,
/// `($1, $2), ($3, $4)`.
pub(crate) fn values(rows: usize, columns: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|row| {
            let marks: Vec<String> = (1..=columns).map(|i| format!("${}", row * columns + i)).collect();
            format!("({})", marks.join(", "))
        })
        .collect();
    tuples.join(", ")
}
