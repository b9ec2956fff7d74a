//! What AI calls use and cost: tokens read from every shape providers report them in,
//! normalised to one meaning, priced, and written to the access log.

use crate::helpers::Portico;
use crate::observe::log_lines;
use portico_gateway::{AccessLogSettings, AccessLogSink};
use portico_model::MasterKey;
use portico_testkit::{MockProvider, UsageReport};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

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
    openai.set_pace(std::time::Duration::from_millis(20));
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
