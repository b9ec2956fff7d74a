//! Admin roles and the audit log, through the admin API.

use crate::helpers::Portico;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Creates a token with `role` as the admin and returns (id, secret).
async fn token(portico: &Portico, name: &str, role: &str) -> (String, String) {
    let response = portico.admin(Method::POST, "/tokens").json(&json!({"name": name, "role": role})).send().await;
    let response = response.expect("admin");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    (body["id"].as_str().unwrap_or("").to_owned(), body["secret"].as_str().unwrap_or("").to_owned())
}

fn as_token(portico: &Portico, secret: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    portico.http.request(method, format!("{}/api/v1{path}", portico.admin)).bearer_auth(secret)
}

#[tokio::test]
async fn roles_limit_what_tokens_may_do() {
    let portico = Portico::start().await;
    let (_, viewer) = token(&portico, "dashboards", "viewer").await;
    let (_, editor) = token(&portico, "deployer", "editor").await;
    let route = json!({"name": "hello", "paths": ["/hello"], "mock": {"body": "hi"}});

    let status = |r: reqwest::Result<reqwest::Response>| r.expect("admin").status();
    assert_eq!(status(as_token(&portico, &viewer, Method::GET, "/routes").send().await), StatusCode::OK);
    let refused = as_token(&portico, &viewer, Method::POST, "/routes").json(&route).send().await.expect("admin");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["detail"], "a viewer token may only read");
    assert_eq!(status(as_token(&portico, &viewer, Method::GET, "/audit").send().await), StatusCode::FORBIDDEN);

    assert_eq!(
        status(as_token(&portico, &editor, Method::POST, "/routes").json(&route).send().await),
        StatusCode::CREATED
    );
    assert_eq!(status(as_token(&portico, &editor, Method::GET, "/tokens").send().await), StatusCode::FORBIDDEN);
    let made = as_token(&portico, &editor, Method::POST, "/tokens").json(&json!({"name": "x", "role": "admin"}));
    assert_eq!(status(made.send().await), StatusCode::FORBIDDEN, "an editor cannot make itself an admin");

    // Revoked tokens stop working at once.
    let (viewer_id, _) = {
        let tokens: Value = portico.admin(Method::GET, "/tokens").send().await.expect("a").json().await.expect("j");
        let found = tokens.as_array().into_iter().flatten().find(|t| t["name"] == "dashboards").cloned();
        (found.map(|t| t["id"].as_str().unwrap_or("").to_owned()).unwrap_or_default(), ())
    };
    assert_eq!(
        status(portico.admin(Method::DELETE, &format!("/tokens/{viewer_id}")).send().await),
        StatusCode::NO_CONTENT
    );
    assert_eq!(status(as_token(&portico, &viewer, Method::GET, "/routes").send().await), StatusCode::UNAUTHORIZED);
    portico.stop().await;
}

#[tokio::test]
async fn every_change_is_audited_with_who_and_what_without_secrets() {
    let portico = Portico::start().await;
    let (editor_id, editor) = token(&portico, "deployer", "editor").await;
    let route = json!({"name": "hello", "paths": ["/hello"], "mock": {"body": "hi"}});
    as_token(&portico, &editor, Method::POST, "/routes").json(&route).send().await.expect("create");
    let changed = json!({"name": "hello", "paths": ["/hello"], "mock": {"body": "hello"}, "version": 1});
    as_token(&portico, &editor, Method::PUT, "/routes/hello").json(&changed).send().await.expect("update");
    as_token(&portico, &editor, Method::DELETE, "/routes/hello").send().await.expect("delete");
    let consumer = json!({"name": "shop", "credentials": [{"type": "key_auth", "key": "shop-key-0123456789"}]});
    as_token(&portico, &editor, Method::POST, "/consumers").json(&consumer).send().await.expect("consumer");

    let page: Value =
        portico.admin(Method::GET, "/audit?kind=route&name=hello").send().await.expect("a").json().await.expect("j");
    let items = page["items"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = items.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["delete", "update", "create"], "{page}");
    for entry in &items {
        assert_eq!(
            (entry["actor_id"].as_str(), entry["actor_name"].as_str()),
            (Some(editor_id.as_str()), Some("deployer"))
        );
        assert!(entry["revision"].as_i64().is_some_and(|r| r > 0), "{entry}");
    }
    let update = &items[1];
    assert_eq!(
        (update["before"]["mock"]["body"].as_str(), update["after"]["mock"]["body"].as_str()),
        (Some("hi"), Some("hello"))
    );
    assert!(items[0]["after"].is_null() && items[2]["before"].is_null());

    let page: Value =
        portico.admin(Method::GET, "/audit?kind=consumer").send().await.expect("a").json().await.expect("j");
    let text = page.to_string();
    assert!(text.contains("\"shop\"") && !text.contains("shop-key-0123456789") && !text.contains("sha256"), "{text}");

    // Token changes are audited too; pages go back in time with `before`.
    let page: Value =
        portico.admin(Method::GET, "/audit?kind=admin_token").send().await.expect("a").json().await.expect("j");
    assert!(
        page["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|e| e["name"].as_str().is_some_and(|n| n.starts_with("deployer")))),
        "{page}"
    );
    let first: Value = portico.admin(Method::GET, "/audit?limit=2").send().await.expect("a").json().await.expect("j");
    let before = first["next_before"].as_str().expect("more pages").to_owned();
    let older: Value = portico
        .admin(Method::GET, &format!("/audit?before={before}"))
        .send()
        .await
        .expect("a")
        .json()
        .await
        .expect("j");
    let older_ids: Vec<&str> =
        older["items"].as_array().into_iter().flatten().filter_map(|e| e["id"].as_str()).collect();
    let all: Value = portico.admin(Method::GET, "/audit").send().await.expect("a").json().await.expect("j");
    let all_ids: Vec<&str> = all["items"].as_array().into_iter().flatten().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(older_ids, all_ids[2..], "the second page starts right after the first");
    let bad = portico.admin(Method::GET, "/audit?limit=0").send().await.expect("a");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    portico.stop().await;
}
