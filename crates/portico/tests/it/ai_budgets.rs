//! AI budgets as clients see them: calls refused in their own format once a consumer's,
//! a team's or one key's budget is spent, streams charged when they end, and one budget
//! shared by two Portico processes through Redis.

use crate::ai::gpt_portico;
use crate::cli::serve_nodes;
use crate::helpers::Portico;
use crate::rate_limits::unique;
use portico_model::MasterKey;
use portico_testkit::{redis_url, MockProvider};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// Every call to `gpt` uses 21 tokens (14 in, 7 out) and costs, at gpt-4o-mini's list price:
const GPT_COST: f64 = (11.0 * 0.15 + 3.0 * 0.075 + 7.0 * 0.6) / 1e6;

fn key_of(consumer: &str, n: u32) -> String {
    format!("{consumer}-key{n}-0123456789")
}

/// Portico with `gpt` behind a mock OpenAI provider, on a route taking bearer API keys;
/// consumers `lab` (team `research`, keys 1 and 2), `desk` (team `research`) and `ops`.
async fn budgeted_portico(openai: &MockProvider) -> Portico {
    let portico = gpt_portico(openai, json!({}), |_| {}).await;
    let route =
        json!({"name": "llm", "paths": ["/v1/*"], "service": "llm", "policies": {"key_auth": {"bearer": true}}});
    portico.create("routes", route).await;
    for (name, team, keys) in [("lab", "research", 2), ("desk", "research", 1), ("ops", "platform", 1)] {
        let credentials: Vec<Value> =
            (1..=keys).map(|n| json!({"type": "key_auth", "id": format!("key{n}"), "key": key_of(name, n)})).collect();
        portico.create("consumers", json!({"name": name, "team": team, "credentials": credentials})).await;
    }
    portico
}

async fn call(portico: &Portico, key: &str, stream: bool) -> reqwest::Response {
    let body = json!({"model": "gpt", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let request = portico.http_request(Method::POST, "/v1/chat/completions").bearer_auth(key);
    request.json(&body).send().await.expect("request")
}

/// Calls until one is refused; returns how many were answered, and the refusal.
async fn calls_until_refused(portico: &Portico, key: &str, stream: bool) -> (usize, reqwest::Response) {
    for answered in 0..20 {
        let response = call(portico, key, stream).await;
        if response.status() != StatusCode::OK {
            return (answered, response);
        }
        // The whole answer, so that a stream has ended and been charged.
        response.bytes().await.expect("answer");
    }
    panic!("no call was refused");
}

async fn usage(portico: &Portico, budget: &str) -> Value {
    let response = portico.admin(Method::GET, &format!("/ai/budgets/{budget}/usage")).send().await.expect("admin");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[tokio::test]
async fn a_spent_budget_refuses_the_next_call_in_the_clients_format() {
    let openai = MockProvider::start("openai-mock").await;
    let portico = budgeted_portico(&openai).await;
    // 50 tokens a day: 21 + 21 = 42 leaves room for a third call, which crosses it.
    let budget = json!({"name": "lab-daily", "consumer": "lab", "period": "day", "max_tokens": 50});
    portico.create("ai/budgets", budget).await;
    portico.settle().await;

    let (answered, refused) = calls_until_refused(&portico, &key_of("lab", 1), false).await;
    assert_eq!(answered, 3, "calls go on until the budget is spent, and the one that crosses it finishes");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-should-retry"], "false", "the SDKs must not retry a spent budget");
    let retry_after: u64 = refused.headers()["retry-after"].to_str().expect("text").parse().expect("seconds");
    assert!((1..=86_400).contains(&retry_after), "until the day ends: {retry_after}");
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "budget_exceeded", "{error}");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(message.contains("lab-daily") && message.contains("63 of 50 tokens"), "{message}");
    // An Anthropic client is refused in its own format.
    let anthropic = portico
        .http_request(Method::POST, "/v1/messages")
        .header("x-api-key", key_of("lab", 2))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(anthropic.status(), 429);
    let error: Value = anthropic.json().await.expect("json");
    assert_eq!((error["type"].as_str(), error["error"]["type"].as_str()), (Some("error"), Some("rate_limit_error")));
    assert_eq!(openai.received().len(), 3, "refused calls never reach the provider");
    // Other consumers have their own budgets (here, none).
    assert_eq!(call(&portico, &key_of("ops", 1), false).await.status(), 200);

    let state = usage(&portico, "lab-daily").await;
    assert_eq!((state["spent_tokens"].as_u64(), state["max_tokens"].as_u64()), (Some(63), Some(50)), "{state}");
    assert_eq!(state["spent"], true);
    assert_eq!(state["period_end"].as_i64().expect("end") - state["period_start"].as_i64().expect("start"), 86_400_000);
    // Raising the budget lets calls through again, and keeps what was spent.
    let raised = json!({"name": "lab-daily", "consumer": "lab", "period": "day", "max_tokens": 100});
    let put = portico.admin(Method::PUT, "/ai/budgets/lab-daily").header("if-match", "\"1\"").json(&raised);
    assert_eq!(put.send().await.expect("put").status(), 200);
    portico.settle().await;
    assert_eq!(call(&portico, &key_of("lab", 1), false).await.status(), 200);
    assert_eq!(usage(&portico, "lab-daily").await["spent_tokens"], 84);
    portico.stop().await;
}

#[tokio::test]
async fn team_and_key_budgets_count_their_own_calls_and_streams_are_charged_when_they_end() {
    let openai = MockProvider::start("openai-mock").await;
    let portico = budgeted_portico(&openai).await;
    // The research team may spend three calls' worth of dollars a month; lab's second key,
    // 30 tokens a day.
    let team = json!({"name": "research", "team": "research", "period": "month", "max_usd": 2.5 * GPT_COST});
    portico.create("ai/budgets", team).await;
    let key = json!({"name": "lab-key2", "consumer": "lab", "credential": "key2", "period": "day", "max_tokens": 30});
    portico.create("ai/budgets", key).await;
    portico.settle().await;

    // Two streamed calls with lab's second key: the first leaves 9 tokens of room, the
    // second crosses it when it ends, the third is refused.
    let (answered, refused) = calls_until_refused(&portico, &key_of("lab", 2), true).await;
    assert_eq!((answered, refused.status().as_u16()), (2, 429));
    let error: Value = refused.json().await.expect("json");
    assert!(error["error"]["message"].as_str().unwrap_or("").contains("lab-key2"), "{error}");
    // The same two calls count for the team: one more by desk crosses its 2.5 calls.
    assert_eq!(call(&portico, &key_of("desk", 1), false).await.status(), 200);
    let refused = call(&portico, &key_of("desk", 1), false).await;
    assert_eq!(refused.status(), 429);
    let error: Value = refused.json().await.expect("json");
    assert!(error["error"]["message"].as_str().unwrap_or("").contains("`research`"), "{error}");
    // And lab's first key is stopped by the team's budget, not its key's.
    let refused = call(&portico, &key_of("lab", 1), false).await;
    assert_eq!(refused.status(), 429);
    let team = usage(&portico, "research").await;
    let spent = team["spent_usd"].as_f64().expect("spent");
    assert!((spent - 3.0 * GPT_COST).abs() < 1e-9, "{team}");
    let month = team["period_end"].as_i64().expect("end") - team["period_start"].as_i64().expect("start");
    assert!((28 * 86_400_000..=31 * 86_400_000).contains(&month), "{team}");
    // A budget names a consumer and a key that exist.
    let bad = json!({"name": "x", "consumer": "lab", "credential": "key9", "period": "day", "max_tokens": 1});
    let response = portico.admin(Method::POST, "/ai/budgets").json(&bad).send().await.expect("admin");
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("json");
    assert!(problem.to_string().contains("no API key with id `key9`"), "{problem}");
    portico.stop().await;
}

#[tokio::test]
async fn two_processes_share_a_budget_through_redis() {
    let Some(redis) = redis_url() else { return };
    let openai = MockProvider::start("openai-mock").await;
    // A budget name of its own keeps this run's spending apart from earlier runs'.
    let budget = unique("shared");
    const CALLS: u64 = 40;
    let config = format!(
        r#"
ai_providers:
  - {{name: oa, kind: openai, base_url: "{base}", keys: [{{name: main, key: sk-oa}}]}}
ai_models:
  - {{name: gpt, targets: [{{provider: oa, model: gpt-4o-mini}}]}}
ai_budgets:
  - {{name: {budget}, consumer: app, period: day, max_tokens: {max}}}
consumers:
  - {{name: app, credentials: [{{type: key_auth, key: app-key-0123456789}}]}}
services:
  - {{name: llm, ai: {{}}}}
routes:
  - {{name: llm, paths: ["/v1/*"], service: llm, policies: {{key_auth: {{bearer: true}}}}}}
"#,
        base = openai.base_url(),
        max = CALLS * 21,
    );
    let nodes = serve_nodes(&config, &redis, 2);
    let http = reqwest::Client::new();
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]});
    // 120 calls, alternating between the nodes, eight at a time.
    let mut answered = 0u64;
    let mut last_batch = Vec::new();
    for batch in 0..15 {
        let sends = (0..8).map(|i| {
            let url = format!("{}/v1/chat/completions", nodes[(batch + i) % 2].url);
            http.post(url).bearer_auth("app-key-0123456789").json(&body).send()
        });
        last_batch.clear();
        for response in futures_util::future::join_all(sends).await {
            let status = response.expect("request").status().as_u16();
            answered += u64::from(status == 200);
            last_batch.push(status);
        }
    }
    drop(nodes);
    eprintln!("a shared budget of {CALLS} calls: {answered} answered over two nodes");
    // Each node alone would let 40 through, 80 in all. Shared, a batch in flight when the
    // budget runs out may cross it, by at most the eight calls of a batch.
    assert!((CALLS..=CALLS + 8).contains(&answered), "{answered} answered, not {CALLS} to {}", CALLS + 8);
    assert_eq!(last_batch, [429; 8], "once spent, both nodes refuse");
}

#[tokio::test]
async fn what_a_budget_spent_survives_a_restart() {
    let openai = MockProvider::start("openai-mock").await;
    let key = Arc::new(MasterKey::parse(&MasterKey::generate()).expect("key"));
    let first_key = key.clone();
    let first = Portico::start_with(|s| s.master_key = Some(first_key)).await;
    let provider = json!({"name": "oa", "kind": "openai", "base_url": openai.base_url(),
                          "keys": [{"name": "main", "key": "sk-oa"}]});
    first.create("ai/providers", provider).await;
    first.create("ai/models", json!({"name": "gpt", "targets": [{"provider": "oa", "model": "gpt-4o-mini"}]})).await;
    first.create("services", json!({"name": "llm", "ai": {}})).await;
    let route =
        json!({"name": "llm", "paths": ["/v1/*"], "service": "llm", "policies": {"key_auth": {"bearer": true}}});
    first.create("routes", route).await;
    let credentials = json!([{"type": "key_auth", "id": "key1", "key": key_of("lab", 1)}]);
    first.create("consumers", json!({"name": "lab", "credentials": credentials})).await;
    first
        .create("ai/budgets", json!({"name": "lab-daily", "consumer": "lab", "period": "day", "max_tokens": 50}))
        .await;
    first.settle().await;
    for _ in 0..2 {
        assert_eq!(call(&first, &key_of("lab", 1), false).await.status(), 200);
    }
    let second = first.restart(|s| s.master_key = Some(key)).await;
    assert_eq!(usage(&second, "lab-daily").await["spent_tokens"], 42, "the 42 tokens spent before are remembered");
    // 42 of 50: one more call, which crosses the budget, then no more.
    assert_eq!(call(&second, &key_of("lab", 1), false).await.status(), 200);
    assert_eq!(call(&second, &key_of("lab", 1), false).await.status(), 429);
    second.stop().await;
}
