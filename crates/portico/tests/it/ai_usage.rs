//! What AI calls use and cost: tokens read from every shape providers report them in,
//! normalised to one meaning, priced, and written to the access log.

use crate::helpers::Portico;
use crate::observe::log_lines;
use portico_gateway::{AccessLogSettings, AccessLogSink, AnalyticsSettings};
use portico_model::MasterKey;
use portico_testkit::{MockProvider, UsageReport};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Portico logging to a file, with an OpenAI provider `oa` (list prices) behind `gpt`
/// (`gpt-4o-mini`) and `local` (`llama`, unpriced), and an Anthropic provider `an` with
/// its own price for `claude-x` behind `claude`.
async fn metered_portico(openai: &MockProvider, anthropic: &MockProvider) -> (Portico, PathBuf, tempfile::TempDir) {
    let logs = tempfile::tempdir().expect("dir");
    let path = logs.path().join("access.log");
    let sink = AccessLogSink::File { path: path.clone(), max_bytes: 1 << 20, keep: 1 };
    let key = MasterKey::parse(&MasterKey::generate()).expect("key");
    let portico = Portico::start_with(|s| {
        s.master_key = Some(Arc::new(key));
        s.telemetry.access_log = Some(AccessLogSettings { sinks: vec![sink], queue: 1024 });
    })
    .await;
    let key = |name: &str| json!([{"name": "main", "key": format!("sk-{name}")}]);
    let openai = json!({"name": "oa", "kind": "openai", "base_url": openai.base_url(), "keys": key("oa")});
    portico.create("ai/providers", openai).await;
    let price = json!({"claude-x": {"input": 3, "output": 15, "cached_read": 0.3, "cache_write": 3.75}});
    let anthropic = json!({"name": "an", "kind": "anthropic", "base_url": anthropic.base_url(), "keys": key("an"),
                           "prices": price});
    portico.create("ai/providers", anthropic).await;
    portico.create("ai/models", json!({"name": "gpt", "targets": [{"provider": "oa", "model": "gpt-4o-mini"}]})).await;
    portico.create("ai/models", json!({"name": "local", "targets": [{"provider": "oa", "model": "llama"}]})).await;
    portico.create("ai/models", json!({"name": "claude", "targets": [{"provider": "an", "model": "claude-x"}]})).await;
    portico.create("services", json!({"name": "llm", "ai": {}})).await;
    portico.create("routes", json!({"name": "llm", "paths": ["/v1/*"], "service": "llm"})).await;
    (portico, path, logs)
}

fn ask(model: &str, stream: bool, words: &str) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": words}]})
}

async fn chat(portico: &Portico, body: Value) -> String {
    let response =
        portico.http_request(Method::POST, "/v1/chat/completions").json(&body).send().await.expect("request");
    assert_eq!(response.status(), 200);
    response.text().await.expect("body")
}

/// The JSON chunks of an OpenAI stream.
fn chunks_of(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).expect("a chunk"))
        .collect()
}

/// The `ai` record of the n-th logged request (requests are made one after another).
fn ai_of(lines: &[Value], n: usize) -> &Value {
    &lines[n]["ai"]
}

fn tokens(ai: &Value) -> [u64; 5] {
    ["input_tokens", "output_tokens", "cached_read_tokens", "cache_write_tokens", "reasoning_tokens"]
        .map(|field| ai[field].as_u64().unwrap_or_else(|| panic!("{field} in {ai}")))
}

fn dollars(ai: &Value) -> f64 {
    ai["cost_usd"].as_f64().unwrap_or_else(|| panic!("a cost in {ai}"))
}

#[tokio::test]
async fn every_call_logs_its_provider_tokens_and_cost_whatever_shape_the_usage_came_in() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let (portico, path, _logs) = metered_portico(&openai, &anthropic).await;
    // gpt-4o-mini's list price: 0.15 input, 0.075 cached input, 0.6 output per million.
    let gpt_cost = (11.0 * 0.15 + 3.0 * 0.075 + 7.0 * 0.6) / 1e6;

    // 0: a whole answer.
    chat(&portico, ask("gpt", false, "hi")).await;

    // 1: a stream whose client did not ask for usage: Portico asks the provider, reads the
    // usage chunk, and keeps that chunk (its choices are empty) from the client.
    let text = chat(&portico, ask("gpt", true, "hi")).await;
    assert_eq!(openai.received()[1].body["stream_options"], json!({"include_usage": true}));
    let chunks = chunks_of(&text);
    assert!(chunks.len() >= 3 && text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        chunks.iter().all(|c| c["choices"].as_array().is_some_and(|c| !c.is_empty())),
        "no chunk without choices reaches a client that did not ask for usage: {text}"
    );

    // 2: a stream whose client asked for usage gets the usage chunk.
    let mut asking = ask("gpt", true, "hi");
    asking["stream_options"] = json!({"include_usage": true});
    let text = chat(&portico, asking).await;
    let usage_chunk = chunks_of(&text).into_iter().find(|c| c["choices"] == json!([])).expect("a usage chunk");
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 14, "{text}");

    // 3: usage on the last chunk that has a choice.
    openai.set_usage_report(UsageReport::OnLastChoice);
    chat(&portico, ask("gpt", true, "hi")).await;

    // 4 and 5: a provider that reports no usage, streamed and whole: an estimate, said so.
    openai.set_usage_report(UsageReport::Never);
    chat(&portico, ask("gpt", true, "hello there")).await;
    chat(&portico, ask("gpt", false, "hello there")).await;

    // 6: an unpriced model is unpriced, not free.
    openai.set_usage_report(UsageReport::Asked);
    chat(&portico, ask("local", false, "hi")).await;

    // 7 and 8: Anthropic's input_tokens leaves out the cache; the record counts every input
    // token once, each cached one at its own price; streamed or not.
    anthropic.set_cache_write(5);
    chat(&portico, ask("claude", false, "hi")).await;
    chat(&portico, ask("claude", true, "hi")).await;

    let lines = log_lines(&path, 9).await;
    assert_eq!(lines.len(), 9, "{lines:?}");
    for n in [0, 1, 2, 3] {
        let ai = ai_of(&lines, n);
        assert_eq!((ai["provider"].as_str(), ai["model"].as_str()), (Some("oa"), Some("gpt-4o-mini")), "{n}: {ai}");
        assert_eq!(tokens(ai), [14, 7, 3, 0, 0], "{n}: {ai}");
        assert_eq!(ai["estimated"], false, "{n}: {ai}");
        assert!((dollars(ai) - gpt_cost).abs() < 1e-12, "{n}: {ai}");
    }
    for n in [4, 5] {
        let ai = ai_of(&lines, n);
        assert_eq!(ai["estimated"], true, "{n}: {ai}");
        let [input, output, ..] = tokens(ai);
        // "Hello from openai-mock: hello there" is 35 bytes: 9 tokens at four bytes a token;
        // the input is guessed from the request's size.
        assert_eq!(output, 9, "{n}: {ai}");
        assert!(input > 10 && input < 40, "{n}: {ai}");
        assert!(dollars(ai) > 0.0, "{n}: {ai}");
    }
    let unpriced = ai_of(&lines, 6);
    assert_eq!(unpriced["model"], "llama");
    assert_eq!(unpriced["cost_usd"], Value::Null, "{unpriced}");
    assert_eq!(tokens(unpriced)[0], 14);
    let claude_cost = (11.0 * 3.0 + 3.0 * 0.3 + 5.0 * 3.75 + 7.0 * 15.0) / 1e6;
    for n in [7, 8] {
        let ai = ai_of(&lines, n);
        assert_eq!(tokens(ai), [19, 7, 3, 5, 0], "{n}: {ai}");
        assert!((dollars(ai) - claude_cost).abs() < 1e-12, "{n}: {ai}");
    }
    portico.stop().await;
}

#[tokio::test]
async fn a_stream_the_client_leaves_is_logged_with_what_it_used_so_far() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let (portico, path, _logs) = metered_portico(&openai, &anthropic).await;
    openai.set_stream_pieces(40);
    openai.set_pace(Duration::from_millis(20));
    let mut response = portico
        .http_request(Method::POST, "/v1/chat/completions")
        .json(&ask("gpt", true, "a long story please"))
        .send()
        .await
        .expect("request");
    // A few pieces, then the client goes away.
    for _ in 0..3 {
        response.chunk().await.expect("a chunk").expect("more");
    }
    drop(response);
    let lines = log_lines(&path, 1).await;
    let ai = ai_of(&lines, 0);
    assert_eq!(ai["estimated"], true, "no usage arrived, so the record is an estimate: {ai}");
    assert!(tokens(ai)[1] >= 1, "what was streamed counts: {ai}");
    assert!(dollars(ai) > 0.0, "{ai}");
    portico.stop().await;
}

async fn analytics(portico: &Portico, query: &str) -> Value {
    let response = portico.admin(Method::GET, &format!("/analytics/{query}")).send().await.expect("admin");
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.expect("json")
}

/// Two consumers of two teams call two providers; analytics adds up their tokens and cost
/// by team, consumer, provider and model, and the stored access log keeps each call's.
async fn usage_rolled_up(store: Option<String>) {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let key = MasterKey::parse(&MasterKey::generate()).expect("key");
    let mut portico = Portico::start_with(|s| {
        if let Some(url) = store {
            s.store = url;
        }
        s.master_key = Some(Arc::new(key));
        s.telemetry.analytics = Some(AnalyticsSettings { flush_interval: Duration::from_millis(100) });
        s.telemetry.access_log = Some(AccessLogSettings { sinks: vec![AccessLogSink::Store], queue: 1024 });
    })
    .await;
    let keys = |name: &str| json!([{"name": "main", "key": format!("sk-{name}")}]);
    let oa = json!({"name": "oa", "kind": "openai", "base_url": openai.base_url(), "keys": keys("oa")});
    portico.create("ai/providers", oa).await;
    let an = json!({"name": "an", "kind": "anthropic", "base_url": anthropic.base_url(), "keys": keys("an"),
                    "prices": {"claude-x": {"input": 3, "output": 15}}});
    portico.create("ai/providers", an).await;
    portico.create("ai/models", json!({"name": "gpt", "targets": [{"provider": "oa", "model": "gpt-4o-mini"}]})).await;
    portico.create("ai/models", json!({"name": "claude", "targets": [{"provider": "an", "model": "claude-x"}]})).await;
    portico.create("services", json!({"name": "llm", "ai": {}})).await;
    let route =
        json!({"name": "llm", "paths": ["/v1/*"], "service": "llm", "policies": {"key_auth": {"bearer": true}}});
    portico.create("routes", route).await;
    for (name, team) in [("lab-app", "research"), ("desk-app", "support")] {
        let key = format!("{name}-key-0123456789");
        let credentials = json!([{"type": "key_auth", "key": key}]);
        portico.create("consumers", json!({"name": name, "team": team, "credentials": credentials})).await;
    }
    portico.settle().await;
    let call = |consumer: &str, model: &str| {
        let key = format!("{consumer}-key-0123456789");
        let request = portico.http_request(Method::POST, "/v1/chat/completions").bearer_auth(key);
        request.json(&ask(model, false, "hi")).send()
    };
    for (consumer, model) in [("lab-app", "gpt"), ("lab-app", "gpt"), ("desk-app", "claude")] {
        assert_eq!(call(consumer, model).await.expect("call").status(), 200);
    }

    let gpt_cost = (11.0 * 0.15 + 3.0 * 0.075 + 7.0 * 0.6) / 1e6;
    // claude-x has no cache prices: its cached tokens cost what input costs.
    let claude_cost = (14.0 * 3.0 + 7.0 * 15.0) / 1e6;
    let mut all = Value::Null;
    for _ in 0..100 {
        all = analytics(&portico, "series?range=1h").await;
        if all["total"]["ai"]["calls"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = &all["total"]["ai"];
    assert_eq!((total["calls"].as_u64(), total["input_tokens"].as_u64()), (Some(3), Some(42)), "{all}");
    assert_eq!((total["output_tokens"].as_u64(), total["cached_read_tokens"].as_u64()), (Some(21), Some(9)));
    let cost = total["cost_usd"].as_f64().expect("cost");
    assert!((cost - (2.0 * gpt_cost + claude_cost)).abs() < 1e-9, "{total}");
    assert_eq!((total["unpriced_calls"].as_u64(), total["estimated_calls"].as_u64()), (Some(0), Some(0)));

    let research = analytics(&portico, "series?range=1h&dimension=team&key=research").await;
    assert_eq!(research["total"]["ai"]["calls"], 2, "{research}");
    assert!((research["total"]["ai"]["cost_usd"].as_f64().expect("cost") - 2.0 * gpt_cost).abs() < 1e-9);
    let by_cost = analytics(&portico, "top?dimension=provider&by=cost&range=1h").await;
    let providers: Vec<(&str, u64)> = by_cost["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| (i["key"].as_str().unwrap_or(""), i["ai"]["calls"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(providers, [("an", 1), ("oa", 2)], "claude's one call cost more than gpt's two: {by_cost}");
    let by_tokens = analytics(&portico, "top?dimension=model&by=tokens&range=1h").await;
    let models: Vec<&str> =
        by_tokens["items"].as_array().expect("items").iter().filter_map(|i| i["key"].as_str()).collect();
    assert_eq!(models, ["gpt-4o-mini", "claude-x"], "{by_tokens}");
    let teams = analytics(&portico, "top?dimension=team&range=1h").await;
    assert_eq!(teams["items"].as_array().map(Vec::len), Some(2), "{teams}");

    let url = portico.store_url.clone();
    let kept = std::mem::replace(&mut portico.dir, tempfile::tempdir().expect("dir"));
    portico.stop().await;
    let store = portico_store::Store::open(&url).await.expect("store");
    let records = store.access_records(0, 100).await.expect("records");
    store.close().await;
    drop(kept);
    let claude = records.iter().find(|r| r.consumer.as_deref() == Some("desk-app")).expect("desk-app's call");
    assert_eq!(claude.team.as_deref(), Some("support"));
    let ai = claude.ai.as_ref().expect("the AI call's usage");
    assert_eq!((ai.provider.as_str(), ai.model.as_str(), ai.input_tokens, ai.output_tokens), ("an", "claude-x", 14, 7));
    assert_eq!((ai.cached_read_tokens, ai.estimated), (3, false));
    assert!(ai.cost_usd.is_some_and(|c| (c - claude_cost).abs() < 1e-12), "{ai:?}");
}

#[tokio::test]
async fn ai_usage_is_rolled_up_by_team_consumer_provider_and_model_sqlite() {
    usage_rolled_up(None).await;
}

#[tokio::test]
async fn ai_usage_is_rolled_up_by_team_consumer_provider_and_model_postgres() {
    let Some(url) = portico_testkit::fresh_postgres().await else { return };
    usage_rolled_up(Some(url)).await;
}
