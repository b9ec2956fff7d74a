//! Consumers and the access phase as clients and upstreams see them: API keys, Basic auth,
//! access lists, client-IP rules behind trusted proxies, and CORS.

use crate::helpers::Portico;
use base64::Engine;
use portico_testkit::MockUpstream;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// An upstream and a route `/api/*` to it with `policies`.
async fn guarded(portico: &Portico, upstream: &MockUpstream, policies: Value) {
    portico.service("api", &[upstream.addr.to_string()]).await;
    portico.create("routes", json!({"name": "api", "paths": ["/api/*"], "service": "api", "policies": policies})).await;
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Issues a key for `consumer` through the admin API and returns it.
async fn issue_key(portico: &Portico, consumer: &str) -> (String, Value) {
    let response = portico
        .admin(Method::POST, &format!("/consumers/{consumer}/credentials"))
        .json(&json!({"type": "key_auth"}))
        .send()
        .await
        .expect("admin");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    portico.settle().await;
    (body["key"].as_str().expect("the new key is shown once").to_owned(), body)
}

#[tokio::test]
async fn api_keys_identify_consumers_and_stay_secret() {
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    guarded(&portico, &upstream, json!({"key_auth": {"query": "apikey"}})).await;
    portico.create("consumers", json!({"name": "shop", "team": "retail", "groups": ["gold", "eu"]})).await;
    let (key, issued) = issue_key(&portico, "shop").await;
    assert!(key.starts_with("pk_") && issued["id"].as_str().is_some_and(|id| id.starts_with("key-")), "{issued}");

    // No key, a wrong key, an absurdly long key: 401 with a JSON error, never a 5xx.
    let (status, body) = error_of(portico.get("/api/x").send().await.expect("request")).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");
    assert_eq!(body["message"], "this route needs an API key");
    for wrong in ["pk_wrong".to_owned(), "k".repeat(16_000)] {
        let (status, body) = error_of(portico.get("/api/x").header("x-api-key", wrong).send().await.expect("r")).await;
        assert_eq!((status, body["message"].as_str()), (401, Some("the API key is not valid")), "{body}");
    }
    assert_eq!(upstream.hits(), 0);

    // The right key: the upstream learns who called, and never sees the key.
    let echo: Value = portico.get("/api/x").header("x-api-key", &key).send().await.expect("r").json().await.expect("j");
    assert_eq!(echo["headers"]["x-consumer"], "shop");
    assert_eq!(echo["headers"]["x-consumer-groups"], "gold, eu");
    assert!(echo["headers"].get("x-api-key").is_none(), "{echo}");

    // A client cannot claim to be someone else.
    let echo: Value = portico
        .get("/api/x")
        .header("x-api-key", &key)
        .header("x-consumer", "admin")
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("j");
    assert_eq!(echo["headers"]["x-consumer"], "shop");

    // In the query string, the key is removed before the request goes upstream.
    let echo: Value =
        portico.get(&format!("/api/x?a=1&apikey={key}&b=2")).send().await.expect("r").json().await.expect("j");
    assert_eq!((echo["headers"]["x-consumer"].as_str(), echo["query"].as_str()), (Some("shop"), Some("a=1&b=2")));

    // Reads never show the key or its hash.
    let consumer = portico.admin(Method::GET, "/consumers/shop").send().await.expect("admin").text().await.expect("t");
    assert!(!consumer.contains(&key) && !consumer.contains("sha256"), "{consumer}");
    assert!(consumer.contains(issued["id"].as_str().unwrap_or("?")), "{consumer}");

    // A PUT of what was read keeps the credential working.
    let read: Value =
        portico.admin(Method::GET, "/consumers/shop").send().await.expect("admin").json().await.expect("j");
    let put = portico.admin(Method::PUT, "/consumers/shop").json(&read).send().await.expect("admin");
    assert_eq!(put.status(), StatusCode::OK);
    portico.settle().await;
    assert_eq!(portico.get("/api/x").header("x-api-key", &key).send().await.expect("r").status(), 200);

    // Revoking the key locks the consumer out.
    let id = issued["id"].as_str().unwrap_or("");
    let revoked = portico.admin(Method::DELETE, &format!("/consumers/shop/credentials/{id}")).send().await.expect("a");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    portico.settle().await;
    assert_eq!(portico.get("/api/x").header("x-api-key", &key).send().await.expect("r").status(), 401);
    portico.stop().await;
}

/// What the upstream is told about the caller, and what the phases before it see of that, is
/// Portico's word: a client's own `X-Consumer` or `X-Consumer-Groups` never passes, a split or
/// a hashing balancer on `X-Consumer` follows the consumer the key belongs to, and the key
/// itself stays behind unless the policy keeps it.
#[tokio::test]
async fn the_caller_s_identity_cannot_be_forged_on_its_way_upstream() {
    let (v1, v2) = (MockUpstream::start("v1").await, MockUpstream::start("v2").await);
    let portico = Portico::start().await;
    portico.service("v1", &[v1.addr.to_string()]).await;
    portico.service("v2", &[v2.addr.to_string()]).await;
    let split = json!([{"service": "v2", "weight": 0, "when": {"header": "x-consumer", "value": "beta"}}]);
    let route = json!({"name": "split", "paths": ["/split/*"], "service": "v1", "split": split,
                       "policies": {"key_auth": {}}});
    portico.create("routes", route).await;
    let targets = json!([{"address": v1.addr.to_string()}, {"address": v2.addr.to_string()}]);
    let balance = json!({"algorithm": "hash", "on": "header", "key": "x-consumer"});
    portico.create("services", json!({"name": "sticky", "targets": targets, "balance": balance})).await;
    let route = json!({"name": "sticky", "paths": ["/sticky/*"], "service": "sticky",
                       "policies": {"key_auth": {"keep_credential": true}}});
    portico.create("routes", route).await;
    portico.create("consumers", json!({"name": "beta"})).await;
    portico.create("consumers", json!({"name": "kiosk"})).await;
    let (beta, _) = issue_key(&portico, "beta").await;
    let (kiosk, _) = issue_key(&portico, "kiosk").await;
    let forged = |path: &str, key: &str| {
        portico.get(path).header("x-api-key", key).header("x-consumer", "beta").header("x-consumer-groups", "admins")
    };

    // kiosk claims to be beta: the split still sends it where kiosk's requests go.
    assert_eq!(portico.answered_by(forged("/split/x", &kiosk)).await, (200, "v1".to_owned()));
    assert_eq!(portico.answered_by(portico.get("/split/x").header("x-api-key", &beta)).await, (200, "v2".to_owned()));
    let echo: Value = forged("/split/x", &kiosk).send().await.expect("r").json().await.expect("j");
    assert_eq!(echo["headers"]["x-consumer"], "kiosk", "{echo}");
    assert!(echo["headers"].get("x-consumer-groups").is_none(), "kiosk is in no group: {echo}");
    assert!(echo["headers"].get("x-api-key").is_none(), "{echo}");

    // A balancer hashing on X-Consumer keeps each consumer on one target whatever it claims,
    // and a policy that keeps the credential passes the key on.
    let mut seen = std::collections::HashMap::new();
    for (key, who) in [(&kiosk, "kiosk"), (&beta, "beta")] {
        for claim in ["beta", "kiosk", "someone"] {
            let request = portico.get("/sticky/x").header("x-api-key", key).header("x-consumer", claim);
            let response = request.send().await.expect("r");
            let upstream = response.headers()["x-upstream"].to_str().unwrap_or("").to_owned();
            let echo: Value = response.json().await.expect("j");
            assert_eq!(
                (echo["headers"]["x-consumer"].as_str(), echo["headers"]["x-api-key"].as_str()),
                (Some(who), Some(key.as_str()))
            );
            assert_eq!(seen.entry(who).or_insert_with(|| upstream.clone()), &upstream, "{who} moved targets");
        }
    }
    portico.stop().await;
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn basic_auth_checks_argon2_hashes_and_refuses_garbage_cleanly() {
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    guarded(&portico, &upstream, json!({"basic_auth": {}})).await;
    let consumer = json!({"name": "ann", "credentials": [
        {"type": "basic_auth", "username": "ann", "password": "correct horse"}
    ]});
    let created = portico.create("consumers", consumer).await;
    assert!(
        created["credentials"][0].get("password").is_none() && created["credentials"][0].get("password_hash").is_none()
    );

    for _ in 0..3 {
        let echo: Value = portico
            .get("/api/x")
            .header("authorization", basic("ann", "correct horse"))
            .send()
            .await
            .expect("r")
            .json()
            .await
            .expect("j");
        assert_eq!(echo["headers"]["x-consumer"], "ann");
        assert!(echo["headers"].get("authorization").is_none(), "the password must not reach the upstream");
    }

    let response = portico.get("/api/x").header("authorization", basic("ann", "wrong")).send().await.expect("r");
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or("").to_owned());
    assert_eq!(challenge.as_deref(), Some("Basic realm=\"portico\", charset=\"UTF-8\""));
    let (status, body) = error_of(response).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("the user name or password is wrong")));

    let nocolon = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ann"));
    for garbage in ["Basic !!!not-base64!!!", "Basic ", nocolon.as_str(), "Basic //79/w==", "Bearer abc"] {
        let (status, body) =
            error_of(portico.get("/api/x").header("authorization", garbage).send().await.expect("r")).await;
        assert_eq!(status, 401, "{garbage}: {body}");
        assert!(body["message"].is_string(), "{garbage}: {body}");
    }
    assert_eq!(upstream.hits(), 3);
    portico.stop().await;
}

#[tokio::test]
async fn access_lists_admit_by_group_and_refuse_by_name() {
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    for (name, groups) in [("gold-app", json!(["gold"])), ("free-app", json!([])), ("banned-app", json!(["gold"]))] {
        let key = format!("{name}-key-0123456789");
        let consumer = json!({"name": name, "groups": groups, "credentials": [{"type": "key_auth", "key": key}]});
        portico.create("consumers", consumer).await;
    }
    let acl = json!({"allow_groups": ["gold"], "deny_consumers": ["banned-app"]});
    guarded(&portico, &upstream, json!({"key_auth": {}, "acl": acl})).await;

    let call = |name: &str| portico.get("/api/x").header("x-api-key", format!("{name}-key-0123456789")).send();
    assert_eq!(call("gold-app").await.expect("r").status(), 200);
    for refused in ["free-app", "banned-app"] {
        let (status, body) = error_of(call(refused).await.expect("r")).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("acl_denied")), "{refused}");
    }

    // A consumer an access list names cannot be deleted.
    let deleted = portico.admin(Method::DELETE, "/consumers/banned-app").send().await.expect("admin");
    assert_eq!(deleted.status(), StatusCode::CONFLICT);
    portico.stop().await;
}

#[tokio::test]
async fn client_ip_rules_see_through_trusted_proxies_only() {
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    guarded(&portico, &upstream, json!({"ip_restriction": {"deny": ["203.0.113.0/24"]}})).await;

    // Without trusted proxies, X-Forwarded-For is the client's word and is ignored.
    let spoofed = portico.get("/api/x").header("x-forwarded-for", "203.0.113.7").send().await.expect("r");
    assert_eq!(spoofed.status(), 200);

    let global = json!({"trusted_proxies": ["127.0.0.1"]});
    let put = portico.admin(Method::PUT, "/global").header("if-match", "\"0\"").json(&global).send().await;
    assert_eq!(put.expect("admin").status(), StatusCode::CREATED);
    portico.settle().await;
    let (status, body) =
        error_of(portico.get("/api/x").header("x-forwarded-for", "203.0.113.7").send().await.expect("r")).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("ip_denied")));
    let allowed = portico.get("/api/x").header("x-forwarded-for", "198.51.100.1").send().await.expect("r");
    assert_eq!(allowed.status(), 200);
    portico.stop().await;
}

#[tokio::test]
async fn cors_preflights_are_answered_before_authentication() {
    let upstream = MockUpstream::start("api").await;
    let portico = Portico::start().await;
    let cors = json!({"origins": ["https://app.example.com"], "methods": ["GET", "PUT"], "credentials": true,
                      "expose_headers": ["RateLimit-Remaining"]});
    portico.service("api", &[upstream.addr.to_string()]).await;
    let route = json!({"name": "api", "paths": ["/api/*"], "methods": ["GET", "PUT"], "service": "api",
                       "policies": {"cors": cors, "key_auth": {}}});
    portico.create("routes", route).await;

    // The route only takes GET and PUT, yet the browser's OPTIONS preflight is answered by it.
    let preflight = |origin: &'static str, method: &'static str| {
        portico
            .http_request(Method::OPTIONS, "/api/items")
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "content-type, x-api-key")
            .send()
    };
    let answer = preflight("https://app.example.com", "PUT").await.expect("preflight");
    assert_eq!(answer.status(), 204);
    let header = |name: &str| answer.headers().get(name).map(|v| v.to_str().unwrap_or("").to_owned());
    assert_eq!(header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(header("access-control-allow-methods").as_deref(), Some("GET, PUT"));
    assert_eq!(header("access-control-allow-headers").as_deref(), Some("content-type, x-api-key"));
    assert_eq!(header("access-control-allow-credentials").as_deref(), Some("true"));
    let (status, body) = error_of(preflight("https://evil.example", "PUT").await.expect("preflight")).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("cors_refused")));
    assert_eq!(upstream.hits(), 0);

    // The actual request's answer, even a 401, carries the headers the browser needs to read it.
    let denied = portico.get("/api/items").header("origin", "https://app.example.com").send().await.expect("r");
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(denied.headers()["access-control-expose-headers"], "RateLimit-Remaining");
    portico.stop().await;
}

#[tokio::test]
async fn bad_policies_and_credentials_are_refused_by_field() {
    let portico = Portico::start().await;
    let bad = json!({"name": "x", "credentials": [
        {"type": "key_auth", "key": "short"},
        {"type": "basic_auth", "username": "a:b", "password": "p"},
        {"type": "jwt_magic"}
    ]});
    let response = portico.admin(Method::POST, "/consumers").json(&bad).send().await.expect("admin");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let bad = json!({"name": "x", "credentials": [
        {"type": "key_auth", "key": "short"},
        {"type": "basic_auth", "username": "a:b", "password": "p"}
    ]});
    let body: Value =
        portico.admin(Method::POST, "/consumers").json(&bad).send().await.expect("a").json().await.expect("j");
    let paths: Vec<&str> = body["errors"].as_array().into_iter().flatten().filter_map(|e| e["path"].as_str()).collect();
    assert_eq!(paths, ["credentials[0].key", "credentials[1].username"], "{body}");

    let route = json!({"name": "r", "mock": {"body": "x"}, "policies": {
        "ip_restriction": {"allow": ["10.0.0.0/33"]},
        "cors": {"origins": ["*"], "credentials": true},
        "rate_limit": {"limits": [{"requests": 0, "per": "fortnight"}]}
    }});
    let body: Value =
        portico.admin(Method::POST, "/routes").json(&route).send().await.expect("a").json().await.expect("j");
    assert!(
        body["errors"][0]["path"].as_str().is_some_and(|p| p.starts_with("policies.rate_limit.limits[0]")),
        "{body}"
    );

    let route = json!({"name": "r", "mock": {"body": "x"}, "policies": {
        "ip_restriction": {"allow": ["10.0.0.0/33"]},
        "cors": {"origins": ["*"], "credentials": true},
        "rate_limit": {"limits": [{"requests": 0, "per": "second"}]}
    }});
    let body: Value =
        portico.admin(Method::POST, "/routes").json(&route).send().await.expect("a").json().await.expect("j");
    let paths: Vec<&str> = body["errors"].as_array().into_iter().flatten().filter_map(|e| e["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["policies.ip_restriction.allow[0]", "policies.cors.credentials", "policies.rate_limit.limits[0].requests"],
        "{body}"
    );

    // Access lists must name consumers that exist: a typo would lock everyone out.
    let route = json!({"name": "r", "mock": {"body": "x"}, "policies": {"acl": {"allow_consumers": ["nobody"]}}});
    let body: Value =
        portico.admin(Method::POST, "/routes").json(&route).send().await.expect("a").json().await.expect("j");
    assert_eq!(body["errors"][0]["path"], "policies.acl", "{body}");
    assert_eq!(body["errors"][0]["message"], "no consumer is named `nobody`", "{body}");
    portico.stop().await;
}

#[tokio::test]
async fn a_configuration_file_may_hold_plain_text_credentials() {
    let upstream = MockUpstream::start("api").await;
    let yaml = format!(
        r#"
services:
  - name: api
    targets: [{{address: "{}"}}]
    policies: {{key_auth: {{}}, basic_auth: {{}}}}
routes:
  - {{name: api, service: api}}
consumers:
  - name: ops
    credentials:
      - {{type: key_auth, key: "ops-key-0123456789"}}
      - {{type: basic_auth, username: "ops@example.com", password: "s3cret"}}
"#,
        upstream.addr
    );
    let portico = Portico::start_file(&yaml).await;
    let by_key = portico.get("/").header("x-api-key", "ops-key-0123456789").send().await.expect("r");
    assert_eq!(by_key.status(), 200);
    let by_password = portico.get("/").header("authorization", basic("ops@example.com", "s3cret")).send().await;
    assert_eq!(by_password.expect("r").status(), 200);
    let wrong = portico.get("/").header("authorization", basic("ops@example.com", "S3cret")).send().await;
    assert_eq!(wrong.expect("r").status(), 401);
    // The admin API shows the file's consumers without their secrets.
    let shown = portico.admin(Method::GET, "/consumers/ops").send().await.expect("admin").text().await.expect("t");
    assert!(!shown.contains("s3cret") && !shown.contains("ops-key-0123456789"), "{shown}");
    portico.stop().await;
}
