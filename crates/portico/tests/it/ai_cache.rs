//! The response cache of AI routes: the same request, however it is spelled, answered
//! again without calling the provider or charging anything; never across consumers unless
//! the route says so; never for streams; for as long as the route says.

use crate::ai::gpt_portico;
use crate::helpers::Portico;
use portico_testkit::MockProvider;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// Routes `/private/*` (a cache per consumer, kept 300 ms) and `/shared/*` (one cache for
/// all) to `gpt`, for consumers `a` (with a daily token budget) and `b`.
async fn cached_portico(openai: &MockProvider) -> Portico {
    let portico = gpt_portico(openai, json!({}), |_| {}).await;
    let auth = json!({"key_auth": {"bearer": true}});
    let private = json!({"name": "private", "paths": ["/private/*"], "strip_prefix": true, "service": "llm",
                         "policies": auth, "ai_cache": {"ttl_ms": 300}});
    portico.create("routes", private).await;
    let shared = json!({"name": "shared", "paths": ["/shared/*"], "strip_prefix": true, "service": "llm",
                        "policies": auth, "ai_cache": {"shared": true}});
    portico.create("routes", shared).await;
    for name in ["a", "b"] {
        let credentials = json!([{"type": "key_auth", "key": format!("{name}-key-0123456789")}]);
        portico.create("consumers", json!({"name": name, "credentials": credentials})).await;
    }
    portico
        .create("ai/budgets", json!({"name": "a-daily", "consumer": "a", "period": "day", "max_tokens": 1000}))
        .await;
    portico.settle().await;
    portico
}

async fn chat(portico: &Portico, path: &str, consumer: &str, body: &str) -> (Option<String>, Value) {
    let response = portico
        .http_request(Method::POST, path)
        .bearer_auth(format!("{consumer}-key-0123456789"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let cache = response.headers().get("x-portico-cache").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (cache, response.json().await.expect("json"))
}

const ASK: &str = r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}]}"#;
/// The same request, spelled otherwise.
const ASK_AGAIN: &str = "{ \"messages\": [{\"content\": \"hi\", \"role\": \"user\"}],\n  \"model\": \"gpt\" }";

#[tokio::test]
async fn the_same_request_is_answered_from_the_cache_without_a_call_or_a_charge() {
    let openai = MockProvider::start("openai-mock").await;
    let portico = cached_portico(&openai).await;
    let path = "/private/v1/chat/completions";
    let (first, answer) = chat(&portico, path, "a", ASK).await;
    assert_eq!(first.as_deref(), Some("miss"));
    let (second, again) = chat(&portico, path, "a", ASK_AGAIN).await;
    assert_eq!(second.as_deref(), Some("hit"));
    assert_eq!(again, answer, "the kept answer, as it was");
    assert_eq!(openai.received().len(), 1, "a hit calls no provider");
    let usage: Value =
        portico.admin(Method::GET, "/ai/budgets/a-daily/usage").send().await.expect("a").json().await.expect("j");
    assert_eq!(usage["spent_tokens"], 21, "a hit is not charged: {usage}");

    // Another consumer does not get a's answer.
    assert_eq!(chat(&portico, path, "b", ASK).await.0.as_deref(), Some("miss"));
    // A stream is never cached.
    let stream = r#"{"model":"gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = portico
        .http_request(Method::POST, path)
        .bearer_auth("a-key-0123456789")
        .header("content-type", "application/json")
        .body(stream)
        .send()
        .await
        .expect("request");
    assert!(response.headers().get("x-portico-cache").is_none());
    response.bytes().await.expect("stream");
    assert_eq!(openai.received().len(), 3);
    // After its time, the answer is asked for again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(chat(&portico, path, "a", ASK).await.0.as_deref(), Some("miss"));
    assert_eq!(openai.received().len(), 4);
    portico.stop().await;
}

#[tokio::test]
async fn a_shared_cache_gives_one_consumers_answer_to_another() {
    let openai = MockProvider::start("openai-mock").await;
    let portico = cached_portico(&openai).await;
    let path = "/shared/v1/chat/completions";
    assert_eq!(chat(&portico, path, "a", ASK).await.0.as_deref(), Some("miss"));
    assert_eq!(chat(&portico, path, "b", ASK_AGAIN).await.0.as_deref(), Some("hit"));
    // Another question is another answer.
    let other = r#"{"model":"gpt","messages":[{"role":"user","content":"hello"}]}"#;
    let (cache, answer) = chat(&portico, path, "b", other).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello from openai-mock: hello");
    assert_eq!(openai.received().len(), 2);
    portico.stop().await;
}
