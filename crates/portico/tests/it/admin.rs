//! The admin API: authentication, CRUD with optimistic concurrency, problem details, paging,
//! and the OpenAPI document.

use crate::helpers::Portico;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    body
}

#[tokio::test]
async fn every_route_but_the_probes_needs_a_token() {
    let portico = Portico::start().await;
    let anonymous = |path: &str| portico.http.get(format!("{}/api/v1{path}", portico.admin)).send();
    assert_eq!(anonymous("/health").await.expect("health").status(), 200);
    assert_eq!(anonymous("/ready").await.expect("ready").status(), 200);
    for path in ["/services", "/routes", "/status", "/openapi.json", "/services/x"] {
        let response = anonymous(path).await.expect("request");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    let wrong = portico.http.get(format!("{}/api/v1/routes", portico.admin)).bearer_auth("portico_nope");
    problem(wrong.send().await.expect("request"), StatusCode::UNAUTHORIZED).await;
    assert_eq!(portico.admin(Method::GET, "/routes").send().await.expect("request").status(), 200);
    portico.stop().await;
}

#[tokio::test]
async fn updates_need_the_version_they_were_based_on() {
    let portico = Portico::start().await;
    let created = portico.create("services", json!({"name": "users", "targets": [{"address": "127.0.0.1:9"}]})).await;
    assert_eq!(created["version"], 1);
    assert_eq!(created["connect_timeout_ms"], 5000, "defaults are filled in");

    let read = portico.admin(Method::GET, "/services/users").send().await.expect("get");
    assert_eq!(read.headers()["etag"], "\"1\"");
    let mut edited: Value = read.json().await.expect("json");
    edited["read_timeout_ms"] = json!(1234);

    // Without a version, an existing entity is not overwritten.
    let blind = portico.admin(Method::PUT, "/services/users").json(&json!({"targets": [{"address": "127.0.0.1:9"}]}));
    problem(blind.send().await.expect("put"), StatusCode::PRECONDITION_REQUIRED).await;

    // With If-Match it is; the body read by GET can be sent back as it is.
    let put = portico.admin(Method::PUT, "/services/users").header("if-match", "\"1\"").json(&edited);
    let updated = put.send().await.expect("put");
    assert_eq!(updated.status(), 200);
    assert_eq!(updated.headers()["etag"], "\"2\"");
    assert_eq!(updated.json::<Value>().await.expect("json")["read_timeout_ms"], 1234);

    // A second editor still holding version 1 is refused, by header or by body.
    let stale = portico.admin(Method::PUT, "/services/users").header("if-match", "\"1\"").json(&edited);
    let body = problem(stale.send().await.expect("put"), StatusCode::PRECONDITION_FAILED).await;
    assert!(body["detail"].as_str().unwrap_or("").contains("version 2"), "{body}");
    let stale = portico.admin(Method::PUT, "/services/users").json(&edited);
    problem(stale.send().await.expect("put"), StatusCode::PRECONDITION_FAILED).await;

    // Create-only writes.
    let again = portico.admin(Method::POST, "/services").json(&edited);
    problem(again.send().await.expect("post"), StatusCode::CONFLICT).await;
    let fresh = portico.admin(Method::PUT, "/services/orders").json(&json!({"targets": [{"address": "127.0.0.1:9"}]}));
    let fresh = fresh.send().await.expect("put");
    assert_eq!(fresh.status(), StatusCode::CREATED);
    assert_eq!(fresh.json::<Value>().await.expect("json")["name"], "orders");
    portico.stop().await;
}

#[tokio::test]
async fn invalid_input_gets_problem_details_with_field_paths() {
    let portico = Portico::start().await;
    let post = |body: &str| {
        portico.admin(Method::POST, "/routes").header("content-type", "application/json").body(body.to_owned()).send()
    };

    let body = problem(post("{not json").await.expect("post"), StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap_or("").contains("not valid JSON"));

    let typed =
        problem(post(r#"{"name": "r", "paths": "/x"}"#).await.expect("post"), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(typed["errors"][0]["path"], "paths", "{typed}");

    let invalid = r#"{"name": "bad name", "paths": ["/ok", "nope"], "methods": ["FETCH"], "service": "missing"}"#;
    let body = problem(post(invalid).await.expect("post"), StatusCode::UNPROCESSABLE_ENTITY).await;
    let paths: Vec<&str> =
        body["errors"].as_array().expect("errors").iter().filter_map(|e| e["path"].as_str()).collect();
    assert_eq!(paths, ["name", "paths[1]", "methods"], "{body}");

    let dangling =
        problem(post(r#"{"name": "r", "service": "missing"}"#).await.expect("post"), StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    assert!(dangling.to_string().contains("no service is named `missing`"), "{dangling}");
    assert_eq!(
        portico.admin(Method::GET, "/routes").send().await.expect("list").json::<Value>().await.expect("json")["items"],
        json!([])
    );
    portico.stop().await;
}

#[tokio::test]
async fn indistinguishable_routes_are_refused_naming_both() {
    let portico = Portico::start().await;
    portico.create("routes", json!({"name": "first", "paths": ["/users/{id}"], "mock": {"body": "1"}})).await;
    let second = json!({"name": "second", "paths": ["/users/{user}"], "mock": {"body": "2"}});
    let body = problem(
        portico.admin(Method::POST, "/routes").json(&second).send().await.expect("post"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let text = body.to_string();
    assert!(text.contains("`first`") && text.contains("`second`"), "{text}");
    portico.stop().await;
}

#[tokio::test]
async fn services_in_use_cannot_be_deleted() {
    let portico = Portico::start().await;
    portico.service("users", &["127.0.0.1:9".into()]).await;
    portico.create("routes", json!({"name": "users", "service": "users"})).await;
    let body =
        problem(portico.admin(Method::DELETE, "/services/users").send().await.expect("delete"), StatusCode::CONFLICT)
            .await;
    assert!(body["detail"].as_str().unwrap_or("").contains("`users`"));
    let stale = portico.admin(Method::DELETE, "/routes/users").header("if-match", "\"7\"");
    problem(stale.send().await.expect("delete"), StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(portico.admin(Method::DELETE, "/routes/users").send().await.expect("delete").status(), 204);
    assert_eq!(portico.admin(Method::DELETE, "/services/users").send().await.expect("delete").status(), 204);
    problem(portico.admin(Method::GET, "/services/users").send().await.expect("get"), StatusCode::NOT_FOUND).await;
    portico.stop().await;
}

#[tokio::test]
async fn listings_are_paged_in_name_order() {
    let portico = Portico::start().await;
    for name in ["d", "b", "e", "a", "c"] {
        portico.create("routes", json!({"name": name, "paths": [format!("/{name}")], "mock": {"body": name}})).await;
    }
    let mut names = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page: Value = portico
            .admin(Method::GET, &format!("/routes{query}"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        names.extend(
            page["items"].as_array().expect("items").iter().map(|r| r["name"].as_str().unwrap_or("").to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => query = format!("?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    problem(portico.admin(Method::GET, "/routes?limit=0").send().await.expect("list"), StatusCode::BAD_REQUEST).await;
    problem(portico.admin(Method::PATCH, "/routes").send().await.expect("patch"), StatusCode::METHOD_NOT_ALLOWED).await;
    problem(portico.admin(Method::GET, "/nothing-here").send().await.expect("get"), StatusCode::NOT_FOUND).await;
    portico.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let portico = Portico::start().await;
    let doc: Value = portico.admin(Method::GET, "/openapi.json").send().await.expect("get").json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in
        [("/api/v1/routes", "post"), ("/api/v1/routes/{name}", "put"), ("/api/v1/services/{name}", "delete")]
    {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
    assert!(doc["components"]["schemas"]["Service"]["properties"]["targets"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["admin_token"]["scheme"], "bearer");
    portico.stop().await;
}

#[tokio::test]
async fn revoked_tokens_stop_working() {
    let portico = Portico::start().await;
    let store = portico_store::Store::open(&portico.store_url).await.expect("store");
    let extra = store.create_token("ci", portico_store::Role::Admin).await.expect("token");
    let with = |secret: &str| {
        portico.http.get(format!("{}/api/v1/routes", portico.admin)).bearer_auth(secret.to_owned()).send()
    };
    assert_eq!(with(&extra.secret).await.expect("request").status(), 200);
    store.revoke_token(&extra.token.id).await.expect("revoke");
    assert_eq!(with(&extra.secret).await.expect("request").status(), 401);
    assert_eq!(with(&portico.token).await.expect("request").status(), 200, "other tokens still work");
    portico.stop().await;
}
