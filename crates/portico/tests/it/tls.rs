//! TLS termination: certificates stored sealed, chosen by SNI, replaced without a restart;
//! HTTP/2 by ALPN; redirects from plain HTTP; WebSocket over TLS.

use crate::helpers::Portico;
use portico_model::MasterKey;
use portico_testkit::{MockUpstream, TestCa, TlsUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) async fn tls_portico() -> (Portico, SocketAddr) {
    let key = MasterKey::parse(&MasterKey::generate()).expect("key");
    let portico = Portico::start_with(|s| {
        s.master_key = Some(Arc::new(key));
        s.tls_listen = Some("127.0.0.1:0".parse().expect("address"));
        s.proxy.https_port = None;
    })
    .await;
    let addr = portico.running.tls_addr.expect("a TLS listener");
    (portico, addr)
}

/// A client that trusts `ca` and reaches every test host name at `addr`.
fn client(ca: &TestCa, addr: SocketAddr) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA");
    let mut builder = reqwest::Client::builder().add_root_certificate(root).tls_info(true).use_rustls_tls();
    for host in ["api.test", "one.apps.test", "other.test"] {
        builder = builder.resolve(host, addr);
    }
    builder.build().expect("client")
}

fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    let info = response.extensions().get::<reqwest::tls::TlsInfo>();
    info.and_then(|i| i.peer_certificate()).map(<[u8]>::to_vec).unwrap_or_default()
}

#[tokio::test]
async fn certificates_are_chosen_by_sni_and_replaced_without_restart() {
    let upstream = MockUpstream::start("api").await;
    let ca = TestCa::new("Portico test CA");
    let (portico, addr) = tls_portico().await;
    portico.service("api", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "api", "service": "api"})).await;
    let api = ca.issue(&["api.test"]);
    let apps = ca.issue(&["*.apps.test"]);
    for (name, issued, snis) in [("api", &api, json!(["api.test"])), ("apps", &apps, json!(["*.apps.test"]))] {
        let created = portico
            .create("certificates", json!({"name": name, "snis": snis, "cert": issued.cert_pem, "key": issued.key_pem}))
            .await;
        assert!(created.get("key").is_none(), "the key is never shown: {created}");
    }

    // The private key is stored sealed with the master key.
    let store = portico_store::Store::open(&portico.store_url).await.expect("store");
    let (_, stored) = store.load().await.expect("load");
    let key = stored.certificates[0].key.as_ref().expect("a stored key");
    assert!(key.is_sealed());
    assert!(!serde_json::to_string(&stored.certificates[0]).unwrap_or_default().contains("PRIVATE KEY"));

    let client = client(&ca, addr);
    let port = addr.port();
    let response = client.get(format!("https://api.test:{port}/hello")).send().await.expect("TLS request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN picks HTTP/2");
    assert_eq!(peer_certificate(&response), api.der);
    let echo: Value = response.json().await.expect("json");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    let wildcard = client.get(format!("https://one.apps.test:{port}/")).send().await.expect("wildcard");
    assert_eq!(peer_certificate(&wildcard), apps.der);
    // No certificate for this name: the handshake fails.
    assert!(client.get(format!("https://other.test:{port}/")).send().await.is_err());

    // A new certificate for api.test is presented from the next handshake on.
    let renewed = ca.issue(&["api.test"]);
    let read: Value =
        portico.admin(Method::GET, "/certificates/api").send().await.expect("admin").json().await.expect("json");
    let put =
        json!({"snis": ["api.test"], "cert": renewed.cert_pem, "key": renewed.key_pem, "version": read["version"]});
    let response = portico.admin(Method::PUT, "/certificates/api").json(&put).send().await.expect("admin");
    assert_eq!(response.status(), StatusCode::OK);
    portico.settle().await;
    let fresh = self::client(&ca, addr);
    let response = fresh.get(format!("https://api.test:{port}/")).send().await.expect("TLS request");
    assert_eq!(peer_certificate(&response), renewed.der);
    portico.stop().await;
}

#[tokio::test]
async fn bad_certificates_and_missing_master_keys_are_refused() {
    let ca = TestCa::new("Portico test CA");
    let issued = ca.issue(&["api.test"]);
    let other = ca.issue(&["api.test"]);

    // Without a master key, Portico will not store a private key.
    let plain = Portico::start().await;
    let certificate = json!({"name": "api", "snis": ["api.test"], "cert": issued.cert_pem, "key": issued.key_pem});
    let response = plain.admin(Method::POST, "/certificates").json(&certificate).send().await.expect("admin");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.expect("json");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("PORTICO_MASTER_KEY")), "{body}");
    plain.stop().await;

    let (portico, _) = tls_portico().await;
    let cases = [
        (json!({"name": "a", "snis": ["api.test"], "cert": "not pem", "key": issued.key_pem}), "cert"),
        (json!({"name": "a", "snis": ["bad host"], "cert": issued.cert_pem, "key": issued.key_pem}), "snis[0]"),
        (json!({"name": "a", "snis": ["api.test"], "cert": issued.cert_pem}), "key"),
    ];
    for (certificate, field) in cases {
        let body: Value = portico
            .admin(Method::POST, "/certificates")
            .json(&certificate)
            .send()
            .await
            .expect("a")
            .json()
            .await
            .expect("j");
        assert_eq!(body["errors"][0]["path"], field, "{body}");
    }
    // A key that does not belong to the certificate is caught when the snapshot is compiled:
    // the gateway keeps serving what it had and says why.
    let mismatched = json!({"name": "a", "snis": ["api.test"], "cert": issued.cert_pem, "key": other.key_pem});
    portico.admin(Method::POST, "/certificates").json(&mismatched).send().await.expect("admin");
    let status = portico.status_with_error().await;
    assert!(status["last_error"].as_str().is_some_and(|e| e.contains("does not belong")), "{status}");
    portico.stop().await;
}

#[tokio::test]
async fn https_only_routes_redirect_plain_requests() {
    let (portico, addr) = tls_portico().await;
    let route = json!({"name": "secure", "paths": ["/account/*"], "https_only": true, "mock": {"body": "ok"}});
    portico.create("routes", route).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let response = http
        .post(format!("{}/account/1?x=1", portico.proxy))
        .header("host", "shop.test")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    let location = response.headers()["location"].to_str().unwrap_or("").to_owned();
    assert_eq!(location, format!("https://shop.test:{}/account/1?x=1", addr.port()));
    portico.stop().await;
}

#[tokio::test]
async fn upstreams_are_verified_with_their_ca_and_get_portico_s_client_certificate() {
    let upstream_ca = TestCa::new("Upstream CA");
    let clients_ca = TestCa::new("Clients CA");
    let upstream = TlsUpstream::start(&upstream_ca.issue(&["127.0.0.1"]), Some(&clients_ca)).await;
    let client = clients_ca.issue_client("portico-gateway");
    let (portico, _) = tls_portico().await;
    let tls = json!({"ca": upstream_ca.pem(), "client_cert": client.cert_pem, "client_key": client.key_pem});
    let service = json!({"name": "secure", "scheme": "https", "targets": [{"address": upstream.addr.to_string()}], "tls": tls,
               "health": {"active": {"path": "/health", "interval_ms": 50}}});
    let created = portico.create("services", service).await;
    assert!(created["tls"].get("client_key").is_none(), "{created}");
    portico.create("routes", json!({"name": "secure", "paths": ["/secure"], "service": "secure"})).await;
    let body: Value = portico.get("/secure").send().await.expect("request").json().await.expect("json");
    assert_eq!(body["client"], "portico-gateway");
    // Bodies go up over TLS whole, of known length or streamed in chunks, on reused connections.
    for _ in 0..3 {
        let known = portico.http.post(format!("{}/secure", portico.proxy)).body(vec![b'k'; 200_000]).send();
        let body: Value = known.await.expect("request").json().await.expect("json");
        assert_eq!(body["bytes"], 200_000);
        let pieces = futures_util::stream::iter((0..16).map(|_| Ok::<_, std::io::Error>(vec![b's'; 65_536])));
        let streamed = portico.http.post(format!("{}/secure", portico.proxy)).body(reqwest::Body::wrap_stream(pieces));
        let body: Value = streamed.send().await.expect("request").json().await.expect("json");
        assert_eq!(body["bytes"], 16 * 65_536);
    }
    // Health probes speak TLS as requests do: the service's CA and client certificate.
    let mut probes = Value::Null;
    for _ in 0..100 {
        probes = portico.health("secure").await["targets"][0]["active"].clone();
        if probes["consecutive_successes"].as_u64().is_some_and(|n| n >= 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(probes["consecutive_successes"].as_u64().is_some_and(|n| n >= 2), "{probes}");

    // Trusting only the public roots, Portico refuses the upstream's certificate: 502.
    let untrusted =
        json!({"name": "untrusted", "scheme": "https", "targets": [{"address": upstream.addr.to_string()}]});
    portico.create("services", untrusted).await;
    portico.create("routes", json!({"name": "untrusted", "paths": ["/untrusted"], "service": "untrusted"})).await;
    assert_eq!(portico.get("/untrusted").send().await.expect("request").status(), 502);
    portico.stop().await;
}

#[tokio::test]
async fn client_certificates_identify_consumers() {
    let upstream = MockUpstream::start("api").await;
    let server_ca = TestCa::new("Server CA");
    let clients_ca = TestCa::new("Clients CA");
    let strangers_ca = TestCa::new("Someone else's CA");
    let (portico, addr) = tls_portico().await;
    let server = server_ca.issue(&["api.test"]);
    portico
        .create(
            "certificates",
            json!({"name": "api", "snis": ["api.test"], "cert": server.cert_pem, "key": server.key_pem}),
        )
        .await;
    let global = json!({"client_ca": clients_ca.pem()});
    let put = portico.admin(Method::PUT, "/global").header("if-match", "\"0\"").json(&global).send().await;
    assert_eq!(put.expect("admin").status(), StatusCode::CREATED);
    let shop = clients_ca.issue_client("shop-client");
    let other = clients_ca.issue_client("unknown-client");
    let pinned = clients_ca.issue_client("pinned-client");
    let fingerprint: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&pinned.der).iter().map(|b| format!("{b:02x}")).collect()
    };
    portico
        .create("consumers", json!({"name": "shop", "credentials": [{"type": "mtls", "common_name": "shop-client"}]}))
        .await;
    let by_fingerprint =
        json!({"name": "pinned", "credentials": [{"type": "mtls", "fingerprint_sha256": fingerprint}]});
    portico.create("consumers", by_fingerprint).await;
    portico.service("api", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "api", "service": "api", "policies": {"mtls_auth": {}}})).await;

    let port = addr.port();
    let with_identity = |issued: Option<&portico_testkit::Issued>| {
        let root = reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).expect("CA");
        let mut builder =
            reqwest::Client::builder().use_rustls_tls().add_root_certificate(root).resolve("api.test", addr);
        if let Some(issued) = issued {
            let pem = format!("{}{}", issued.cert_pem, issued.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        builder.build().expect("client")
    };
    let url = format!("https://api.test:{port}/");
    let echo: Value = with_identity(Some(&shop)).get(&url).send().await.expect("mTLS").json().await.expect("json");
    assert_eq!(echo["headers"]["x-consumer"], "shop");
    let echo: Value = with_identity(Some(&pinned)).get(&url).send().await.expect("mTLS").json().await.expect("json");
    assert_eq!(echo["headers"]["x-consumer"], "pinned");

    let response = with_identity(Some(&other)).get(&url).send().await.expect("request");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["message"], "the client certificate belongs to no consumer");
    let response = with_identity(None).get(&url).send().await.expect("request");
    assert_eq!(response.status(), 401);
    // A certificate from a CA Portico does not trust fails the handshake.
    let stranger = strangers_ca.issue_client("shop-client");
    assert!(with_identity(Some(&stranger)).get(&url).send().await.is_err());
    portico.stop().await;
}
