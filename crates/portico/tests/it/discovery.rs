//! Service discovery: the built-in registry, and DNS (A and SRV records, from a real dnsmasq).

use crate::helpers::Portico;
use portico_testkit::{Dnsmasq, MockUpstream};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The upstreams that answer `n` requests.
async fn answering(portico: &Portico, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        let (status, upstream) = portico.answered_by(portico.get("/")).await;
        seen.insert(if status == 200 { upstream } else { status.to_string() });
    }
    seen
}

/// Polls until `n` requests are answered by exactly `wanted` (or 5 s pass); returns how long
/// that took.
async fn until_answering(portico: &Portico, wanted: &[&str]) -> Duration {
    let started = Instant::now();
    let wanted: HashSet<String> = wanted.iter().map(|s| s.to_string()).collect();
    let mut seen = HashSet::new();
    while started.elapsed() < Duration::from_secs(5) {
        seen = answering(portico, 6).await;
        if seen == wanted {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("wanted {wanted:?}, still answered by {seen:?}");
}

#[tokio::test]
async fn instances_register_heartbeat_and_lapse() {
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let portico = Portico::start().await;
    portico.create("services", json!({"name": "users", "discovery": {"registry": "users"}})).await;
    portico.create("routes", json!({"name": "users", "service": "users"})).await;
    let revision =
        portico.admin(Method::GET, "/status").send().await.expect("status").json::<Value>().await.expect("json")
            ["serving_revision"]
            .clone();

    // No instance yet.
    let response = portico.get("/").send().await.expect("request");
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<Value>().await.expect("json")["error"], "no_targets");

    // Instances register with a registry-scoped token, which can do nothing else.
    let store = portico_store::Store::open(&portico.store_url).await.expect("store");
    let token = store.create_token("users", portico_store::Role::Registry).await.expect("token").secret;
    let registry = |method: Method, path: &str| {
        portico.http.request(method, format!("{}/api/v1/registry/users{path}", portico.admin)).bearer_auth(&token)
    };
    let register = |address: String, ttl: u64| {
        registry(Method::POST, "/instances").json(&json!({"address": address, "ttl_ms": ttl}))
    };
    let response = register(a.addr.to_string(), 60_000).send().await.expect("register");
    assert_eq!(response.status(), 201);
    let a_id = response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
    let response = register(b.addr.to_string(), 400).send().await.expect("register");
    let b_id = response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
    let forbidden = portico.http.get(format!("{}/api/v1/services", portico.admin)).bearer_auth(&token);
    assert_eq!(forbidden.send().await.expect("request").status(), 403);
    let bad = register("not an address".into(), 1000).send().await.expect("register");
    assert_eq!(bad.status(), 422);

    until_answering(&portico, &["a", "b"]).await;
    let listed: Value = registry(Method::GET, "/instances").send().await.expect("list").json().await.expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));

    // b heartbeats for a while and stays; then it stops and leaves within its TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let beat = registry(Method::PUT, &format!("/instances/{b_id}/heartbeat")).send().await.expect("heartbeat");
        assert_eq!(beat.status(), 200);
    }
    assert_eq!(answering(&portico, 6).await.len(), 2, "b stayed while it heartbeat");
    let stopped = Instant::now();
    until_answering(&portico, &["a"]).await;
    // The TTL counts from the last heartbeat, sent just before `stopped`; the margin is for
    // the polling requests of `until_answering`.
    assert!(stopped.elapsed() < Duration::from_millis(400 + 75), "left after {:?}", stopped.elapsed());
    tokio::time::sleep(Duration::from_millis(400).saturating_sub(stopped.elapsed()) + Duration::from_millis(50)).await;
    let late = registry(Method::PUT, &format!("/instances/{b_id}/heartbeat")).send().await.expect("heartbeat");
    assert_eq!(late.status(), 404, "a lapsed instance must register again");

    // A request in flight on an instance that deregisters finishes.
    let slow = portico.get("/delay/300").send();
    let leave = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        registry(Method::DELETE, &format!("/instances/{a_id}")).send().await.expect("deregister").status()
    };
    let (slow, left) = tokio::join!(slow, leave);
    assert_eq!(left, 204);
    assert_eq!(slow.expect("request").status(), 200);
    until_answering(&portico, &["503"]).await;

    // None of this touched the configuration.
    let status: Value = portico.admin(Method::GET, "/status").send().await.expect("status").json().await.expect("json");
    assert_eq!(status["serving_revision"], revision);
    portico.stop().await;
}

async fn upstream_on(name: &str, ip: [u8; 4], port: u16) -> MockUpstream {
    MockUpstream::start_on(name, std::net::SocketAddr::from((ip, port))).await
}

#[tokio::test]
async fn dns_a_records_are_followed_as_they_change() {
    if !Dnsmasq::available() {
        eprintln!("skipped: dnsmasq is not installed (apt-get install dnsmasq-base)");
        return;
    }
    let a = MockUpstream::start("a").await;
    let port = a.addr.port();
    drop(a);
    let (a, b) = (upstream_on("a", [127, 0, 0, 2], port).await, upstream_on("b", [127, 0, 0, 3], port).await);
    let dns = Dnsmasq::start(&["host-record=users.test,127.0.0.2".into()]).await;
    let portico = Portico::start().await;
    let discovery = json!({"dns": {"name": "users.test", "port": port, "nameserver": dns.addr.to_string(),
                                    "min_ttl_ms": 100, "max_ttl_ms": 1000}});
    portico.create("services", json!({"name": "users", "discovery": discovery})).await;
    portico.create("routes", json!({"name": "users", "service": "users"})).await;
    until_answering(&portico, &["a"]).await;

    // The record gains an address: within the TTL (1 s) the new target gets traffic.
    let addr = dns.addr;
    drop(dns);
    let dns = Dnsmasq::start_on(
        addr,
        &["host-record=users.test,127.0.0.2".into(), "host-record=users.test,127.0.0.3".into()],
    )
    .await;
    let took = until_answering(&portico, &["a", "b"]).await;
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // The server goes away: the known targets keep serving.
    drop(dns);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(answering(&portico, 6).await.len(), 2);
    drop((a, b));
    portico.stop().await;
}

#[tokio::test]
async fn dns_srv_records_give_ports_and_weights() {
    if !Dnsmasq::available() {
        eprintln!("skipped: dnsmasq is not installed (apt-get install dnsmasq-base)");
        return;
    }
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let records = [
        "host-record=a.users.test,127.0.0.1".to_owned(),
        "host-record=b.users.test,127.0.0.1".to_owned(),
        format!("srv-host=_http._tcp.users.test,a.users.test,{},0,3", a.addr.port()),
        format!("srv-host=_http._tcp.users.test,b.users.test,{},0,1", b.addr.port()),
    ];
    let dns = Dnsmasq::start(&records).await;
    let portico = Portico::start().await;
    let discovery = json!({"dns": {"name": "_http._tcp.users.test", "srv": true, "nameserver": dns.addr.to_string(),
                                    "min_ttl_ms": 100}});
    portico.create("services", json!({"name": "users", "discovery": discovery})).await;
    portico.create("routes", json!({"name": "users", "service": "users"})).await;
    until_answering(&portico, &["a", "b"]).await;
    let health = portico.health("users").await;
    let weights: HashSet<(String, u64)> = health["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["address"].as_str().unwrap_or("").to_owned(), t["weight"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(weights, HashSet::from([(a.addr.to_string(), 3), (b.addr.to_string(), 1)]));
    drop(dns);
    portico.stop().await;
}

/// The README's two-line recipe, run as it is written (with the addresses filled in).
#[tokio::test]
async fn the_readme_registration_recipe_works() {
    use std::os::unix::process::CommandExt;
    let readme = include_str!("../../../../README.md");
    let start = readme.find("**The registry.**").expect("registry section");
    let block = &readme[start..];
    let recipe = block[block.find("```sh\n").expect("recipe") + 6..].split("```").next().expect("recipe end");
    assert_eq!(recipe.lines().count(), 2, "the recipe is two lines");

    let upstream = MockUpstream::start("users").await;
    let portico = Portico::start().await;
    portico.create("services", json!({"name": "users", "discovery": {"registry": "users"}})).await;
    portico.create("routes", json!({"name": "users", "service": "users"})).await;
    let store = portico_store::Store::open(&portico.store_url).await.expect("store");
    let token = store.create_token("users", portico_store::Role::Registry).await.expect("token").secret;

    let recipe = recipe.replace("http://portico:9080", &portico.admin);
    let mut shell = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("{recipe}\nwait"))
        .env("PORTICO_REGISTRY_TOKEN", &token)
        .env("ADDR", upstream.addr.to_string())
        .process_group(0)
        .spawn()
        .expect("bash");
    until_answering(&portico, &["users"]).await;
    let listed: Value = portico
        .http
        .get(format!("{}/api/v1/registry/users/instances", portico.admin))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed[0]["address"], upstream.addr.to_string());
    let _ = std::process::Command::new("kill").arg("--").arg(format!("-{}", shell.id())).status();
    let _ = shell.wait();
    portico.stop().await;
}

#[tokio::test]
async fn dns_aaaa_records_give_ipv6_targets() {
    if !Dnsmasq::available() {
        eprintln!("skipped: dnsmasq is not installed (apt-get install dnsmasq-base)");
        return;
    }
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let probe = std::net::TcpListener::bind("[::1]:0").expect("v6 port");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let v6 = MockUpstream::start_on("v6", std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))).await;
    let dns = Dnsmasq::start(&["host-record=v6.users.test,::1".into()]).await;
    let portico = Portico::start().await;
    let discovery = json!({"dns": {"name": "v6.users.test", "port": port, "nameserver": dns.addr.to_string()}});
    portico.create("services", json!({"name": "users", "discovery": discovery})).await;
    portico.create("routes", json!({"name": "users", "service": "users"})).await;
    until_answering(&portico, &["v6"]).await;
    assert_eq!(portico.health("users").await["targets"][0]["address"], format!("[::1]:{port}"));
    drop((v6, dns));
    portico.stop().await;
}
