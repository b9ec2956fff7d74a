//! Token and request rates on AI calls: reserved from an estimate before the call, settled
//! with the real usage after, given back when the call fails, and counted across nodes
//! through Redis.

use crate::ai::gpt_portico;
use crate::helpers::Portico;
use crate::rate_limits::unique;
use portico_testkit::{redis_url, MockProvider, ProviderFault};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Portico with `gpt` (21 tokens a call) behind a mock OpenAI provider, and an AI service
/// with `limits`, on a route taking bearer keys of consumers `a` and `b`.
async fn limited_portico(openai: &MockProvider, limits: Value, redis: Option<String>) -> Portico {
    let portico = gpt_portico(openai, json!({"limits": limits}), |s| s.redis_url = redis).await;
    let route =
        json!({"name": "llm", "paths": ["/v1/*"], "service": "llm", "policies": {"key_auth": {"bearer": true}}});
    portico.create("routes", route).await;
    for name in ["a", "b"] {
        let credentials = json!([{"type": "key_auth", "key": format!("{name}-key-0123456789")}]);
        portico.create("consumers", json!({"name": name, "credentials": credentials})).await;
    }
    portico.settle().await;
    portico
}

/// A call asking for up to 60 output tokens: with its ~75 bytes, about 79 tokens are reserved.
async fn call(portico: &Portico, consumer: &str) -> reqwest::Response {
    let body = json!({"model": "gpt", "max_tokens": 60, "messages": [{"role": "user", "content": "hi"}]});
    let request =
        portico.http_request(Method::POST, "/v1/chat/completions").bearer_auth(format!("{consumer}-key-0123456789"));
    request.json(&body).send().await.expect("request")
}

async fn statuses(portico: &Portico, consumer: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let response = call(portico, consumer).await;
        out.push(response.status().as_u16());
        response.bytes().await.expect("body");
    }
    out
}

#[tokio::test]
async fn tokens_are_reserved_before_a_call_and_settled_with_what_it_used() {
    let openai = MockProvider::start("openai-mock").await;
    let limits = json!([{"by": "consumer", "tokens_per_minute": 130}]);
    let portico = limited_portico(&openai, limits, None).await;
    // ~79 reserved each time, 21 kept: 79, then 21 + 79, then 42 + 79 fit; 63 + 79 does not.
    // Counted by reservations alone, the second call would not fit.
    assert_eq!(statuses(&portico, "a", 4).await, [200, 200, 200, 429]);
    let refused = call(&portico, "a").await;
    let retry_after: u64 = refused.headers()["retry-after"].to_str().expect("text").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "tokens_per_minute_exceeded", "{error}");
    assert!(error["error"]["message"].as_str().unwrap_or("").contains("of 130 tokens a minute"), "{error}");
    // Each consumer has its own rate.
    assert_eq!(statuses(&portico, "b", 1).await, [200]);
    portico.stop().await;
}

#[tokio::test]
async fn a_failed_call_gives_its_tokens_back_and_requests_count_per_model() {
    let openai = MockProvider::start("openai-mock").await;
    let limits = json!([{"by": "consumer", "tokens_per_minute": 100}, {"by": "model", "requests_per_minute": 3}]);
    let portico = limited_portico(&openai, limits, None).await;
    openai.fail_next(ProviderFault::Status(500));
    assert_eq!(call(&portico, "a").await.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // Had the failed call kept its ~79 tokens, this one would not fit in 100.
    assert_eq!(statuses(&portico, "a", 1).await, [200]);
    // The model's third call this minute (the failed one counts), by another consumer; then
    // no more for anyone.
    assert_eq!(statuses(&portico, "b", 2).await, [200, 429]);
    let error: Value = call(&portico, "b").await.json().await.expect("json");
    assert_eq!(error["error"]["code"], "requests_per_minute_exceeded", "{error}");
    assert!(error["error"]["message"].as_str().unwrap_or("").contains("this model's rate"), "{error}");
    portico.stop().await;
}

#[tokio::test]
async fn two_nodes_share_a_token_rate_through_redis() {
    let Some(redis) = redis_url() else { return };
    let openai = MockProvider::start("openai-mock").await;
    // A model name of its own keeps this run's counts apart from earlier runs' on the same
    // Redis: the rate is the model's.
    let model = unique("gpt");
    let limits = json!([{"by": "model", "tokens_per_minute": 130, "cluster": true}]);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let node = limited_portico(&openai, limits.clone(), Some(redis.clone())).await;
        node.create("ai/models", json!({"name": model, "targets": [{"provider": "oa", "model": "gpt-4o-mini"}]})).await;
        node.settle().await;
        nodes.push(node);
    }
    let body = json!({"model": model, "max_tokens": 60, "messages": [{"role": "user", "content": "hi"}]});
    let mut statuses = Vec::new();
    for i in 0..4 {
        let node = &nodes[i % 2];
        let request = node.http_request(Method::POST, "/v1/chat/completions").bearer_auth("a-key-0123456789");
        statuses.push(request.json(&body).send().await.expect("request").status().as_u16());
    }
    // Counted on each node alone, all four would fit.
    assert_eq!(statuses, [200, 200, 200, 429], "the nodes share the model's rate");
    for node in nodes {
        node.stop().await;
    }
}
