//! The store against real databases: SQLite always, PostgreSQL when
//! `PORTICO_TEST_POSTGRES_URL` names a server (as `.ci/run` does).

use portico_model::{Config, HostHeader, MockResponse, Route, Scheme, Service, Target};
use portico_store::{Precondition, Role, Store, StoreError};
use std::collections::BTreeMap;

/// A fresh, empty store on every backend available here.
struct TestStores {
    stores: Vec<(&'static str, Store)>,
    _dir: tempfile::TempDir,
}

async fn stores() -> TestStores {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("nested/portico.db").display());
    let mut stores = vec![("sqlite", Store::open(&sqlite).await.expect("open sqlite"))];
    if let Some(url) = portico_testkit::fresh_postgres().await {
        stores.push(("postgres", Store::open(&url).await.expect("open PostgreSQL")));
    }
    TestStores { stores, _dir: dir }
}

fn service(name: &str) -> Service {
    Service {
        name: name.into(),
        targets: vec![Target { address: "127.0.0.1:9001".into(), weight: 1 }],
        discovery: None,
        balance: Default::default(),
        health: Default::default(),
        retries: None,
        circuit_breaker: None,
        bulkhead: None,
        total_timeout_ms: None,
        scheme: Scheme::Http,
        connect_timeout_ms: 1_000,
        read_timeout_ms: 1_000,
        write_timeout_ms: 1_000,
        host_header: HostHeader::Upstream,
        tls: None,
        ai: None,
        policies: Default::default(),
    }
}

fn route(name: &str, path: &str, service: &str) -> Route {
    Route {
        name: name.into(),
        priority: 0,
        hosts: vec![],
        paths: vec![path.into()],
        methods: vec![],
        headers: BTreeMap::new(),
        strip_prefix: false,
        rewrite: None,
        https_only: false,
        max_body_bytes: None,
        service: Some(service.into()),
        retry_non_idempotent: false,
        mock: None,
        prompt: None,
        ai_cache: None,
        split: vec![],
        mirror: None,
        fault: None,
        policies: Default::default(),
    }
}

#[tokio::test]
async fn writes_bump_the_revision_and_versions() {
    for (backend, store) in stores().await.stores {
        let start = store.revision().await.expect("revision");
        let created = store.put(service("users"), Precondition::Absent).await.expect(backend);
        assert_eq!(created.version, 1, "{backend}");
        let updated = store.put(service("users"), Precondition::Version(1)).await.expect(backend);
        assert_eq!(updated.version, 2, "{backend}");
        assert_eq!(store.revision().await.expect("revision"), start + 2, "{backend}");
        let (revision, config) = store.load().await.expect("load");
        assert_eq!(revision, start + 2);
        assert_eq!(config.services, vec![service("users")]);
    }
}

#[tokio::test]
async fn stale_versions_and_duplicates_are_refused() {
    for (backend, store) in stores().await.stores {
        store.put(service("users"), Precondition::Absent).await.expect(backend);
        store.put(service("users"), Precondition::Version(1)).await.expect(backend);
        let stale = store.put(service("users"), Precondition::Version(1)).await;
        assert!(matches!(stale, Err(StoreError::VersionMismatch { current: 2, .. })), "{backend}: {stale:?}");
        let twice = store.put(service("users"), Precondition::Absent).await;
        assert!(matches!(twice, Err(StoreError::AlreadyExists { .. })), "{backend}");
        let missing = store.put(service("orders"), Precondition::Version(1)).await;
        assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{backend}");
    }
}

#[tokio::test]
async fn the_stored_configuration_always_validates() {
    for (backend, store) in stores().await.stores {
        let dangling = store.put(route("users", "/users/*", "users"), Precondition::None).await;
        assert!(matches!(dangling, Err(StoreError::Invalid(_))), "{backend}: {dangling:?}");
        store.put(service("users"), Precondition::None).await.expect(backend);
        store.put(route("users", "/users/*", "users"), Precondition::None).await.expect(backend);
        let clash = store.put(route("people", "/users/*", "users"), Precondition::None).await;
        let Err(StoreError::Invalid(problems)) = clash else { panic!("{backend}: {clash:?}") };
        assert!(problems.to_string().contains("`people`") && problems.to_string().contains("`users`"));
        let in_use = store.delete::<Service>("users", Precondition::None).await;
        assert!(matches!(in_use, Err(StoreError::InUse(ref m)) if m.contains("`users`")), "{backend}: {in_use:?}");
        store.delete::<Route>("users", Precondition::None).await.expect(backend);
        store.delete::<Service>("users", Precondition::Version(1)).await.expect(backend);
        assert_eq!(store.load().await.expect("load").1, Config::default());
    }
}

#[tokio::test]
async fn pages_follow_name_order() {
    for (backend, store) in stores().await.stores {
        for name in ["c", "a", "e", "b", "d"] {
            store.put(service(name), Precondition::Absent).await.expect(backend);
        }
        let first = store.list::<Service>(None, 2).await.expect("list");
        let names: Vec<_> = first.iter().map(|s| s.value.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "{backend}");
        let rest = store.list::<Service>(Some("b"), 10).await.expect("list");
        let names: Vec<_> = rest.iter().map(|s| s.value.name.as_str()).collect();
        assert_eq!(names, ["c", "d", "e"], "{backend}");
    }
}

#[tokio::test]
async fn replace_all_is_all_or_nothing_and_keeps_unchanged_versions() {
    for (backend, store) in stores().await.stores {
        let mut config = Config {
            services: vec![service("a"), service("b")],
            routes: vec![route("a", "/a/*", "a")],
            ..Config::default()
        };
        store.replace_all(&config).await.expect(backend);
        config.services[1].read_timeout_ms = 5;
        config.routes.push(Route { mock: Some(mock()), service: None, ..route("m", "/m", "") });
        store.replace_all(&config).await.expect(backend);
        let a = store.get::<Service>("a").await.expect("get").expect("a exists");
        let b = store.get::<Service>("b").await.expect("get").expect("b exists");
        assert_eq!((a.version, b.version), (1, 2), "{backend}");

        // An invalid document changes nothing.
        let before = store.load().await.expect("load");
        let mut broken = config.clone();
        broken.services.remove(0);
        assert!(matches!(store.replace_all(&broken).await, Err(StoreError::Invalid(_))));
        assert_eq!(store.load().await.expect("load"), before, "{backend}");

        // Removing entities from the document removes them from the store.
        store.replace_all(&Config::default()).await.expect(backend);
        assert_eq!(store.load().await.expect("load").1, Config::default(), "{backend}");
    }
}

fn mock() -> MockResponse {
    MockResponse { status: 200, headers: BTreeMap::new(), body: "hi".into() }
}

#[tokio::test]
async fn concurrent_writers_never_lose_an_update() {
    for (backend, store) in stores().await.stores {
        store.put(service("counter"), Precondition::Absent).await.expect(backend);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.put(service(&format!("s{i}")), Precondition::Absent).await }));
        }
        for task in tasks {
            task.await.expect("join").expect("concurrent write");
        }
        assert_eq!(store.load().await.expect("load").1.services.len(), 9, "{backend}");
    }
}

#[tokio::test]
async fn admin_tokens_are_shown_once_and_stored_hashed() {
    for (backend, store) in stores().await.stores {
        assert!(!store.has_tokens().await.expect("count"), "{backend}");
        let new = store.create_token("ci", Role::Admin).await.expect("create");
        assert!(new.secret.starts_with("portico_") && new.secret.len() > 60);
        assert_eq!(store.verify_token(&new.secret).await.expect("verify").map(|t| t.id), Some(new.token.id.clone()));
        assert_eq!(store.verify_token("portico_wrong").await.expect("verify"), None);
        let listed = store.list_tokens().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert!(!format!("{listed:?}").contains(&new.secret[8..]), "the secret is never listed");
        store.revoke_token("ci").await.expect("revoke");
        assert_eq!(store.verify_token(&new.secret).await.expect("verify"), None, "{backend}");
        assert!(matches!(store.revoke_token("ci").await, Err(StoreError::NotFound { .. })));
    }
}

#[tokio::test]
async fn registry_instances_live_while_they_heartbeat() {
    for (backend, store) in stores().await.stores {
        let first = store.register_instance("users", "10.0.0.1:80", 1, 200).await.expect("register");
        let second = store.register_instance("users", "10.0.0.2:80", 3, 60_000).await.expect("register");
        store.register_instance("orders", "10.0.0.9:80", 1, 60_000).await.expect("register");
        let again = store.register_instance("users", "10.0.0.1:80", 2, 200).await.expect("register again");
        assert_eq!(again.id, first.id, "registering an address again refreshes it: {backend}");
        assert_eq!(again.weight, 2);
        let users = store.live_instances(Some("users")).await.expect("list");
        assert_eq!(users.iter().map(|i| i.address.as_str()).collect::<Vec<_>>(), ["10.0.0.1:80", "10.0.0.2:80"]);
        assert_eq!(store.live_instances(None).await.expect("all").len(), 3);

        // Heartbeats keep the first alive past its TTL; when they stop, it lapses.
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            store.heartbeat("users", &first.id).await.expect("heartbeat");
        }
        assert_eq!(store.live_instances(Some("users")).await.expect("list").len(), 2, "{backend}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let live = store.live_instances(Some("users")).await.expect("list");
        assert_eq!(live.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), [second.id.as_str()], "{backend}");
        assert!(matches!(store.heartbeat("users", &first.id).await, Err(StoreError::NotFound { .. })));

        store.deregister("users", &second.id).await.expect("deregister");
        assert!(store.live_instances(Some("users")).await.expect("list").is_empty());
        assert!(matches!(store.deregister("users", &second.id).await, Err(StoreError::NotFound { .. })));
    }
}

#[tokio::test]
async fn registry_tokens_carry_their_scope() {
    for (backend, store) in stores().await.stores {
        let new = store.create_token("svc", Role::Registry).await.expect("create");
        let verified = store.verify_token(&new.secret).await.expect("verify").expect("valid");
        assert_eq!(verified.role, Role::Registry, "{backend}");
        assert_eq!(store.list_tokens().await.expect("list")[0].role, Role::Registry);
    }
}

#[tokio::test]
async fn changes_are_audited_in_their_own_transaction() {
    use portico_store::{Actor, AuditQuery};
    for (backend, store) in stores().await.stores {
        let cli = store.acting_as(Actor { id: "cli".into(), name: "portico apply (ops)".into() });
        let mut config = Config { services: vec![service("a"), service("b")], ..Config::default() };
        cli.replace_all(&config).await.expect(backend);
        config.services[0].read_timeout_ms = 7;
        config.services.pop();
        cli.replace_all(&config).await.expect(backend);
        // A refused change leaves no record.
        let dangling = route("r", "/r", "missing");
        assert!(cli.put(dangling, Precondition::None).await.is_err());

        let all = store.audit(&AuditQuery { limit: 100, ..AuditQuery::default() }).await.expect(backend);
        let seen: Vec<(&str, &str)> = all.iter().map(|e| (e.action.as_str(), e.name.as_str())).collect();
        assert_eq!(seen, [("delete", "b"), ("update", "a"), ("create", "b"), ("create", "a")], "{backend}");
        assert!(all.iter().all(|e| e.actor_id == "cli" && e.actor_name == "portico apply (ops)"), "{backend}");
        assert_eq!(all[1].before.as_ref().map(|b| b["read_timeout_ms"].clone()), Some(1_000.into()), "{backend}");
        assert_eq!(all[1].after.as_ref().map(|a| a["read_timeout_ms"].clone()), Some(7.into()), "{backend}");

        let only_a = AuditQuery { name: Some("a".into()), limit: 100, ..AuditQuery::default() };
        assert_eq!(store.audit(&only_a).await.expect(backend).len(), 2, "{backend}");
        let page = AuditQuery { limit: 1, before: Some(all[1].id.clone()), ..AuditQuery::default() };
        assert_eq!(store.audit(&page).await.expect(backend)[0].id, all[2].id, "{backend}");
    }
}
mod analytics;

#[tokio::test]
async fn budget_spending_only_grows_and_old_periods_go() {
    for (backend, store) in stores().await.stores {
        let spend = |period: i64, nanos: i64, tokens: i64| portico_store::BudgetSpend {
            budget: "team|team:research|month".into(),
            period,
            nanos,
            tokens,
        };
        store.save_budget_spends(&[spend(100, 5, 50), spend(200, 7, 70)]).await.expect("save");
        // A node that saw less does not lower what another saved.
        store.save_budget_spends(&[spend(200, 9, 60)]).await.expect("save");
        let mut saved = store.budget_spends(0).await.expect("read");
        saved.sort_by_key(|s| s.period);
        assert_eq!(saved, [spend(100, 5, 50), spend(200, 9, 70)], "{backend}");
        assert_eq!(store.prune_budget_spends(150).await.expect("prune"), 1, "{backend}");
        assert_eq!(store.budget_spends(0).await.expect("read"), [spend(200, 9, 70)], "{backend}");
    }
}

#[tokio::test]
async fn postgres_announces_each_commit_to_every_listening_process() {
    use sqlx::Row;
    let Some(url) = portico_testkit::fresh_postgres().await else { return };
    let listening = Store::open(&url).await.expect("open");
    // Another process's handle on the same database.
    let writer = Store::connect(&url).await.expect("second handle");
    let mut heard = listening.hear_commits().expect("PostgreSQL announces its commits");
    heard_until(&mut heard, |h| h.listening).await;

    writer.put(service("users"), Precondition::Absent).await.expect("put");
    let revision = writer.revision().await.expect("revision");
    heard_until(&mut heard, |h| h.revision == revision).await;

    // A refused write commits nothing and announces nothing.
    assert!(writer.put(service("users"), Precondition::Absent).await.is_err());
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), heard.changed()).await;
    assert!(quiet.is_err(), "a refused write was announced: {:?}", *heard.borrow());

    // The listening connection is ended: a new one takes its place, and hears what follows.
    let listener_pid = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'";
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    let first: i32 = sqlx::query(listener_pid).fetch_one(&pool).await.expect("the listener").get(0);
    sqlx::query("SELECT pg_terminate_backend($1)").bind(first).execute(&pool).await.expect("terminate");
    let mut replaced = false;
    for _ in 0..100 {
        let now: Vec<i32> =
            sqlx::query(listener_pid).fetch_all(&pool).await.expect("listeners").iter().map(|r| r.get(0)).collect();
        if now.iter().any(|pid| *pid != first) {
            replaced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(replaced, "no new listening connection within 5 s");
    heard_until(&mut heard, |h| h.listening).await;
    writer.put(service("orders"), Precondition::Absent).await.expect("put");
    heard_until(&mut heard, |h| h.revision == revision + 1).await;
}

/// Waits, up to 5 s, until what is heard of the store's commits satisfies `wanted`.
async fn heard_until(
    heard: &mut tokio::sync::watch::Receiver<portico_store::Heard>,
    wanted: impl Fn(&portico_store::Heard) -> bool,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !wanted(&heard.borrow_and_update()) {
        match tokio::time::timeout_at(deadline, heard.changed()).await {
            Ok(changed) => changed.expect("the listener stopped"),
            Err(_) => panic!("not heard within 5 s; last heard {:?}", *heard.borrow()),
        }
    }
}
