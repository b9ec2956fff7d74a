//! JWT authentication against a local issuer that publishes its keys (JWKS and OpenID
//! discovery), with tokens signed here with real keys.

use crate::helpers::Portico;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portico_testkit::MockUpstream;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// An issuer: signing keys, and an HTTP server publishing the public ones.
struct Issuer {
    url: String,
    published: Arc<Mutex<JwkSet>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let published = Arc::new(Mutex::new(JwkSet { keys: Vec::new() }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (keys, count, base) = (published.clone(), fetches.clone(), url.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (keys, count, base) = (keys.clone(), count.clone(), base.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let body = match request.uri().path() {
                            "/.well-known/openid-configuration" => {
                                json!({"issuer": base, "jwks_uri": format!("{base}/jwks")}).to_string()
                            }
                            _ => {
                                count.fetch_add(1, Ordering::SeqCst);
                                serde_json::to_string(&*keys.lock().unwrap_or_else(|p| p.into_inner()))
                                    .unwrap_or_default()
                            }
                        };
                        async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Issuer { url, published, fetches, task }
    }

    /// Publishes `keys` (replacing what was published): a key rotation.
    fn publish(&self, keys: &[&SigningKey]) {
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) =
            JwkSet { keys: keys.iter().map(|k| k.jwk.clone()).collect() };
    }
}

struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
    /// The public key in PEM.
    public_pem: String,
}

impl SigningKey {
    fn new(kid: &str, alg: Algorithm) -> SigningKey {
        let pair = match alg {
            Algorithm::EdDSA => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
            _ => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        }
        .expect("key pair");
        let encoding = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()),
            _ => EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()),
        }
        .expect("encoding key");
        let mut jwk = match alg {
            // jsonwebtoken cannot write Ed25519 JWKs; the raw public key is the whole of one.
            Algorithm::EdDSA => serde_json::from_value(
                json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": base64_url(pair.public_key_raw())}),
            )
            .expect("Ed25519 JWK"),
            _ => Jwk::from_encoding_key(&encoding, alg).expect("JWK"),
        };
        jwk.common.key_id = Some(kid.to_owned());
        SigningKey { kid: kid.to_owned(), alg, encoding, jwk, public_pem: pair.public_key_pem() }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("token")
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn claims(issuer: &str, sub: &str) -> Value {
    json!({"iss": issuer, "sub": sub, "aud": "orders", "exp": now() + 300, "email": "ann@example.com"})
}

async fn call(portico: &Portico, token: &str) -> (u16, Value) {
    let response = portico.get("/").header("authorization", format!("Bearer {token}")).send().await.expect("request");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn tokens_from_a_discovered_issuer_identify_consumers_and_keys_rotate() {
    let upstream = MockUpstream::start("api").await;
    let issuer = Issuer::start().await;
    let first = SigningKey::new("2026-a", Algorithm::ES256);
    issuer.publish(&[&first]);
    let portico = Portico::start().await;
    portico.service("api", &[upstream.addr.to_string()]).await;
    let jwt = json!({"issuer": issuer.url, "discovery": true, "audiences": ["orders"],
                     "claims_to_headers": {"email": "x-user-email"}});
    portico.create("routes", json!({"name": "api", "service": "api", "policies": {"jwt_auth": jwt}})).await;
    portico.create("consumers", json!({"name": "ann-app", "credentials": [{"type": "jwt", "subject": "ann"}]})).await;

    let (status, echo) = call(&portico, &first.sign(&claims(&issuer.url, "ann"))).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-consumer"], "ann-app");
    assert_eq!(echo["headers"]["x-user-email"], "ann@example.com");
    assert!(echo["headers"].get("authorization").is_none(), "the token stays at the gateway");
    // A valid token whose subject is no consumer's still passes, without a consumer.
    let (status, echo) = call(&portico, &first.sign(&claims(&issuer.url, "bob"))).await;
    assert_eq!((status, echo["headers"].get("x-consumer")), (200, None));

    // The issuer rotates its key: the first token with the new key id triggers a refresh.
    let second = SigningKey::new("2026-b", Algorithm::EdDSA);
    issuer.publish(&[&second]);
    tokio::time::sleep(jwt_refresh_interval()).await;
    let (status, echo) = call(&portico, &second.sign(&claims(&issuer.url, "ann"))).await;
    assert_eq!((status, echo["headers"]["x-consumer"].as_str()), (200, Some("ann-app")), "{echo}");

    // Made-up key ids do not make Portico hammer the issuer: one refresh per interval at most.
    let fetched = issuer.fetches.load(Ordering::SeqCst);
    let stranger = SigningKey::new("made-up", Algorithm::ES256);
    for _ in 0..20 {
        let (status, body) = call(&portico, &stranger.sign(&claims(&issuer.url, "ann"))).await;
        assert_eq!((status, body["message"].as_str()), (401, Some("the token is signed with an unknown key")));
    }
    assert!(issuer.fetches.load(Ordering::SeqCst) - fetched <= 1);
    portico.stop().await;
}

/// The minimum time between two fetches of an issuer's keys.
fn jwt_refresh_interval() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

#[tokio::test]
async fn bad_tokens_get_401_with_the_reason() {
    let upstream = MockUpstream::start("api").await;
    let key = SigningKey::new("k1", Algorithm::ES256);
    let portico = Portico::start().await;
    portico.service("api", &[upstream.addr.to_string()]).await;
    let jwt = json!({"issuer": "https://id.example.com", "audiences": ["orders"], "public_keys": [key.public_pem],
                     "leeway_secs": 5});
    portico.create("routes", json!({"name": "api", "service": "api", "policies": {"jwt_auth": jwt}})).await;
    let iss = "https://id.example.com";
    let good = claims(iss, "ann");
    let (status, body) = call(&portico, &key.sign(&good)).await;
    assert_eq!(status, 200, "{body}");

    let with = |patch: Value| {
        let mut claims = good.clone();
        if let (Some(claims), Some(patch)) = (claims.as_object_mut(), patch.as_object()) {
            for (k, v) in patch {
                claims.insert(k.clone(), v.clone());
            }
        }
        claims
    };
    // An HS256 token "signed" with the public key as its secret: the classic confusion.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(key.public_pem.as_bytes()),
    )
    .expect("token");
    let unsigned =
        format!("{}.{}.", base64_url(br#"{"alg":"none","typ":"JWT"}"#), base64_url(good.to_string().as_bytes()));
    // A real signature over other claims.
    let signed = key.sign(&good);
    let parts: Vec<&str> = signed.split('.').collect();
    let tampered =
        format!("{}.{}.{}", parts[0], base64_url(with(json!({"sub": "admin"})).to_string().as_bytes()), parts[2]);
    let cases = [
        (key.sign(&with(json!({"exp": now() - 60}))), "the token has expired"),
        (key.sign(&with(json!({"nbf": now() + 600}))), "the token is not valid yet"),
        (key.sign(&with(json!({"iss": "https://evil.example.com"}))), "the token's issuer is not accepted"),
        (key.sign(&with(json!({"aud": "billing"}))), "the token's audience is not accepted"),
        (confused, "the token's signature algorithm is not accepted"),
        (unsigned, "the token is malformed"),
        (tampered, "the token's signature is not valid"),
        ("not.a.token".into(), "the token is malformed"),
        ("x".repeat(20_000), "the token is too large"),
    ];
    for (token, reason) in cases {
        let (status, body) = call(&portico, &token).await;
        assert_eq!((status, body["message"].as_str()), (401, Some(reason)), "{reason}: {body}");
    }
    // No token at all.
    let response = portico.get("/").send().await.expect("request");
    assert_eq!(response.status(), 401);
    assert_eq!(upstream.hits(), 1);
    portico.stop().await;
}

fn hmac_token(alg: Algorithm, kid: Option<&str>, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("token")
}

#[tokio::test]
async fn hmac_secrets_verify_tokens_are_stored_sealed_and_never_shown() {
    const OLD: &[u8] = b"the-retiring-secret-of-2026-october!";
    const NEW: &str = "the-current-secret-of-2026-november";
    use base64::Engine;
    let old_b64 = base64::engine::general_purpose::STANDARD.encode(OLD);

    // Without a master key, Portico refuses to store a secret and says how to set one.
    let plain = Portico::start().await;
    let global = json!({"policies": {"jwt_auth": {"secrets": [{"secret": NEW}]}}});
    let response = plain.admin(reqwest::Method::PUT, "/global").json(&global).send().await.expect("admin");
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("PORTICO_MASTER_KEY")), "{body}");
    plain.stop().await;

    let upstream = MockUpstream::start("api").await;
    let key = portico_model::MasterKey::parse(&portico_model::MasterKey::generate()).expect("key");
    let portico = Portico::start_with(|s| s.master_key = Some(Arc::new(key))).await;
    portico.service("api", &[upstream.addr.to_string()]).await;

    // Bad secrets and algorithms of the wrong kind are refused by field path.
    let refused = [
        (json!({"secrets": [{"secret": "short"}]}), "policies.jwt_auth.secrets[0].secret"),
        (json!({"secrets": [{"secret": "%%%", "base64": true}]}), "policies.jwt_auth.secrets[0].secret"),
        (json!({"secrets": [{"secret": NEW}, {"kid": "b", "secret": NEW}]}), "policies.jwt_auth.secrets[0].kid"),
        (json!({"secrets": [{"secret": NEW}], "algorithms": ["RS256"]}), "policies.jwt_auth.algorithms[0]"),
        (
            json!({"public_keys": [SigningKey::new("k", Algorithm::ES256).public_pem], "algorithms": ["HS256"]}),
            "policies.jwt_auth.algorithms[0]",
        ),
        (json!({"secrets": [{"kid": "a"}]}), "policies.jwt_auth.secrets[0].secret"),
    ];
    for (jwt, path) in refused {
        let route = json!({"name": "api", "service": "api", "policies": {"jwt_auth": jwt}});
        let response = portico.admin(reqwest::Method::POST, "/routes").json(&route).send().await.expect("admin");
        assert_eq!(response.status(), 422, "{jwt}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["errors"][0]["path"], path, "{body}");
    }

    // Two secrets during a rotation, told apart by `kid`; the old one written in base64.
    let jwt = json!({"issuer": "https://id.example.com", "secrets": [
        {"kid": "2026-10", "secret": old_b64, "base64": true}, {"kid": "2026-11", "secret": NEW}]});
    let created =
        portico.create("routes", json!({"name": "api", "service": "api", "policies": {"jwt_auth": jwt}})).await;
    let good = claims("https://id.example.com", "ann");
    let old_token = hmac_token(Algorithm::HS512, Some("2026-10"), OLD, &good);
    let new_token = hmac_token(Algorithm::HS256, Some("2026-11"), NEW.as_bytes(), &good);
    assert_eq!(call(&portico, &old_token).await.0, 200);
    assert_eq!(call(&portico, &new_token).await.0, 200);
    let cases = [
        (
            hmac_token(Algorithm::HS256, Some("2026-11"), b"a-guessed-secret-that-is-long-enough", &good),
            "the token's signature is not valid",
        ),
        (
            hmac_token(Algorithm::HS256, Some("2027-01"), NEW.as_bytes(), &good),
            "the token is signed with an unknown key",
        ),
        (SigningKey::new("2026-11", Algorithm::ES256).sign(&good), "the token's signature algorithm is not accepted"),
    ];
    for (token, reason) in cases {
        let (status, body) = call(&portico, &token).await;
        assert_eq!((status, body["message"].as_str()), (401, Some(reason)), "{reason}: {body}");
    }

    // Reads show the key ids but never the secrets, nor does the audit log or the store.
    let shown = created.to_string();
    assert!(shown.contains("2026-10") && !shown.contains(NEW) && !shown.contains("secret\":"), "{shown}");
    let read: Value =
        portico.admin(reqwest::Method::GET, "/routes/api").send().await.expect("a").json().await.expect("j");
    assert!(read["policies"]["jwt_auth"]["secrets"][1]["secret"].is_null(), "{read}");
    let audit =
        portico.admin(reqwest::Method::GET, "/audit?kind=route").send().await.expect("a").text().await.expect("t");
    assert!(audit.contains("2026-11") && !audit.contains(NEW) && !audit.contains("enc:v1:"), "{audit}");
    let stored = std::fs::read(portico.dir.path().join("portico.db")).expect("database");
    assert!(!String::from_utf8_lossy(&stored).contains(NEW), "the database holds the secret in plain text");

    // The rotation ends: the route is written back as read, without the old entry. The
    // remaining secret is kept by its key id, not by its position.
    let mut back = read.clone();
    let secrets = back["policies"]["jwt_auth"]["secrets"].as_array_mut().expect("secrets");
    secrets.remove(0);
    let response = portico.admin(reqwest::Method::PUT, "/routes/api").json(&back).send().await.expect("admin");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    portico.settle().await;
    assert_eq!(call(&portico, &new_token).await.0, 200);
    let (status, body) = call(&portico, &old_token).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("the token is signed with an unknown key")));
    assert_eq!(upstream.hits(), 3);
    portico.stop().await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A running `oidc-provider` (tests/oidc/provider.mjs), killed when dropped.
struct OpenIdProvider(std::process::Child);

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl OpenIdProvider {
    /// Starts the provider on `port`, signing with a new key called `kid`; `None` (saying
    /// so) when Node.js or the provider's packages are not installed.
    fn start(port: u16, kid: &str) -> Option<OpenIdProvider> {
        use std::io::BufRead;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc");
        if !dir.join("node_modules/oidc-provider").exists() {
            eprintln!("skipped: the oidc-provider test (run `npm ci --prefix tests/oidc`, as .ci/run does)");
            return None;
        }
        let mut child = std::process::Command::new("node")
            .arg("provider.mjs")
            .arg(port.to_string())
            .arg(kid)
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("skipped: the oidc-provider test (cannot run node: {e})"))
            .ok()?;
        let stdout = child.stdout.take().expect("stdout");
        let ready = std::io::BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line == "ready");
        assert!(ready, "the OpenID provider did not start");
        Some(OpenIdProvider(child))
    }

    /// A client-credentials access token (a JWT) for client `shop`.
    async fn token(port: u16) -> String {
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/token"))
            .basic_auth("shop", Some("shop-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&scope=orders:read")
            .send()
            .await
            .expect("token request");
        let body: Value = response.json().await.expect("token response");
        body["access_token"].as_str().expect("an access token").to_owned()
    }
}

#[tokio::test]
async fn a_real_openid_provider_s_tokens_pass_and_its_key_rotation_is_followed() {
    let port = crate::cli::free_port();
    let Some(provider) = OpenIdProvider::start(port, "key-1") else { return };
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    portico.service("api", &[upstream.addr.to_string()]).await;
    let issuer = format!("http://127.0.0.1:{port}");
    let jwt = json!({"issuer": issuer, "discovery": true, "audiences": ["orders"], "consumer_claim": "client_id",
                     "claims_to_headers": {"scope": "x-scope"}});
    portico.create("routes", json!({"name": "api", "service": "api", "policies": {"jwt_auth": jwt}})).await;
    portico.create("consumers", json!({"name": "shop-app", "credentials": [{"type": "jwt", "subject": "shop"}]})).await;

    let old_token = OpenIdProvider::token(port).await;
    let (status, echo) = call(&portico, &old_token).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        (echo["headers"]["x-consumer"].as_str(), echo["headers"]["x-scope"].as_str()),
        (Some("shop-app"), Some("orders:read"))
    );

    // The provider rotates its key: it restarts on the same address with a new one.
    drop(provider);
    tokio::time::sleep(jwt_refresh_interval()).await;
    let Some(_provider) = OpenIdProvider::start(port, "key-2") else { return };
    let new_token = OpenIdProvider::token(port).await;
    let (status, echo) = call(&portico, &new_token).await;
    assert_eq!((status, echo["headers"]["x-consumer"].as_str()), (200, Some("shop-app")), "{echo}");
    // Tokens signed with the retired key are refused now.
    let (status, body) = call(&portico, &old_token).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("the token is signed with an unknown key")));
    portico.stop().await;
}
