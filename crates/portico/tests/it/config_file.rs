//! File mode: the YAML file is the source of truth, reloaded when it changes and on demand.

use crate::helpers::Portico;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

fn yaml(body: &str) -> String {
    format!("routes:\n  - name: hello\n    paths: [/hello]\n    mock: {{body: {body}}}\n")
}

#[tokio::test]
async fn the_file_is_served_and_followed_keeping_the_last_good_version() {
    let portico = Portico::start_file(&yaml("one")).await;
    let file = portico.dir.path().join("portico.yaml");
    assert_eq!(portico.body_becomes("/hello", "one").await, "one");

    std::fs::write(&file, yaml("two-two")).expect("edit");
    assert_eq!(portico.body_becomes("/hello", "two-two").await, "two-two");

    // A broken edit is reported and ignored.
    std::fs::write(&file, "routes:\n  - name: hello\n    pahts: [/hello]\n").expect("break");
    let status = portico.status_with_error().await;
    assert!(status["last_error"].as_str().unwrap_or("").contains("pahts"), "{status}");
    assert_eq!(status["mode"], "file");
    assert_eq!(portico.get("/hello").send().await.expect("request").text().await.expect("text"), "two-two");

    std::fs::write(&file, yaml("three")).expect("fix");
    assert_eq!(portico.body_becomes("/hello", "three").await, "three");
    portico.stop().await;
}

#[tokio::test]
async fn a_reload_request_rereads_the_file() {
    let portico = Portico::start_file(&yaml("aaa")).await;
    let file = portico.dir.path().join("portico.yaml");
    let before = std::fs::metadata(&file).and_then(|m| m.modified()).expect("mtime");
    std::fs::write(&file, yaml("bbb")).expect("edit");
    // Same size, same modification time: only an explicit reload (SIGHUP) can notice.
    std::fs::File::options().write(true).open(&file).and_then(|f| f.set_modified(before)).expect("reset mtime");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(portico.get("/hello").send().await.expect("request").text().await.expect("text"), "aaa");
    portico.running.reload();
    assert_eq!(portico.body_becomes("/hello", "bbb").await, "bbb");
    portico.stop().await;
}

#[tokio::test]
async fn the_admin_api_is_read_only_in_file_mode() {
    let portico = Portico::start_file(&yaml("one")).await;
    let list: Value = portico.admin(Method::GET, "/routes").send().await.expect("list").json().await.expect("json");
    assert_eq!(list["items"][0]["name"], "hello");
    let create = portico.admin(Method::POST, "/routes").json(&json!({"name": "x", "mock": {"body": "x"}}));
    let response = create.send().await.expect("post");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(portico.admin(Method::DELETE, "/routes/hello").send().await.expect("delete").status(), 405);
    portico.stop().await;
}
