//! The AI gateway end to end: OpenAI and Anthropic clients, mock providers speaking each
//! format, translation both ways, streams, fallbacks, key pools and errors.

use crate::helpers::Portico;
use portico_model::MasterKey;
use portico_testkit::{MockProvider, ProviderFault};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// Portico with a master key, one OpenAI and one Anthropic mock provider, and an AI service
/// on `/v1/*` answering `gpt` (OpenAI), `claude` (Anthropic) and `both` (OpenAI, then
/// Anthropic as the fallback).
pub(crate) async fn ai_portico(openai: &MockProvider, anthropic: &MockProvider) -> Portico {
    let key = MasterKey::parse(&MasterKey::generate()).expect("key");
    let portico = Portico::start_with(|s| s.master_key = Some(Arc::new(key))).await;
    let provider = |name: &str, kind: &str, mock: &MockProvider| {
        json!({"name": name, "kind": kind, "base_url": mock.base_url(), "timeout_ms": 2000,
               "keys": [{"name": "main", "key": format!("sk-{name}-main")}, {"name": "spare", "key": format!("sk-{name}-spare"), "weight": 0}]})
    };
    portico.create("ai/providers", provider("oa", "openai", openai)).await;
    portico.create("ai/providers", provider("an", "anthropic", anthropic)).await;
    portico.create("ai/models", json!({"name": "gpt", "targets": [{"provider": "oa", "model": "gpt-4o-mini"}]})).await;
    portico.create("ai/models", json!({"name": "claude", "targets": [{"provider": "an", "model": "claude-x"}]})).await;
    let both = json!({"name": "both", "targets": [{"provider": "oa", "model": "gpt-4o-mini", "timeout_ms": 300},
                                                 {"provider": "an", "model": "claude-x"}]});
    portico.create("ai/models", both).await;
    portico.create("services", json!({"name": "llm", "ai": {}})).await;
    portico.create("routes", json!({"name": "llm", "paths": ["/v1/*"], "service": "llm"})).await;
    portico
}

/// Portico (with a master key, and `adjust`ed) where the mock `openai` is provider `oa`,
/// model `gpt` asks it for `gpt-4o-mini` (21 tokens a call), and AI service `llm` has the
/// settings `ai`; routes are the caller's to make.
pub(crate) async fn gpt_portico(
    openai: &MockProvider,
    ai: Value,
    adjust: impl FnOnce(&mut portico::Settings),
) -> Portico {
    let key = MasterKey::parse(&MasterKey::generate()).expect("key");
    let portico = Portico::start_with(|s| {
        s.master_key = Some(Arc::new(key));
        adjust(s);
    })
    .await;
    let provider = json!({"name": "oa", "kind": "openai", "base_url": openai.base_url(),
                          "keys": [{"name": "main", "key": "sk-oa"}]});
    portico.create("ai/providers", provider).await;
    portico.create("ai/models", json!({"name": "gpt", "targets": [{"provider": "oa", "model": "gpt-4o-mini"}]})).await;
    portico.create("services", json!({"name": "llm", "ai": ai})).await;
    portico
}

/// A new consumer named `name`, and the API key issued to it.
pub(crate) async fn consumer_key(portico: &Portico, name: &str) -> String {
    portico.create("consumers", json!({"name": name})).await;
    let issue =
        portico.admin(Method::POST, &format!("/consumers/{name}/credentials")).json(&json!({"type": "key_auth"}));
    let issued: Value = issue.send().await.expect("credential").json().await.expect("json");
    issued["key"].as_str().expect("a key").to_owned()
}

async fn chat(portico: &Portico, body: Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response =
        portico.http_request(Method::POST, "/v1/chat/completions").json(&body).send().await.expect("request");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.expect("json"))
}

async fn messages(portico: &Portico, body: Value) -> reqwest::Response {
    let request = portico.http_request(Method::POST, "/v1/messages").header("anthropic-version", "2023-06-01");
    request.json(&body).send().await.expect("request")
}

/// The `data` of each server-sent event, with its name.
async fn sse(response: reqwest::Response) -> Vec<(Option<String>, String)> {
    let text = response.text().await.expect("text");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let mut name = None;
            let mut data = String::new();
            for line in event.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            (name, data)
        })
        .collect()
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

#[tokio::test]
async fn openai_clients_reach_openai_and_anthropic_providers() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let portico = ai_portico(&openai, &anthropic).await;
    let ask = |model: &str| json!({"model": model, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});

    let (status, headers, body) = chat(&portico, ask("gpt")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from openai-mock: hi");
    assert_eq!(
        (header(&headers, "x-portico-provider"), header(&headers, "x-portico-model")),
        ("oa".into(), "gpt-4o-mini".into())
    );
    let sent = &openai.received()[0];
    assert_eq!(sent.body["model"], "gpt-4o-mini", "the provider's model name replaces the alias");
    assert_eq!(sent.headers["authorization"], "Bearer sk-oa-main");

    let (status, headers, body) = chat(&portico, ask("claude")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-portico-provider"), "an");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from anthropic-mock: hi");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // Anthropic's 11 uncached and 3 cached input tokens are 14 prompt tokens, as OpenAI counts.
    assert_eq!(body["usage"]["prompt_tokens"], 14);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 21);
    // Anthropic has no JSON response format: it is asked to call a tool, whose input comes
    // back as the text of the answer.
    let format = json!({"type": "json_schema", "json_schema": {"name": "place", "schema": {"type": "object"}}});
    let ask_json =
        json!({"model": "claude", "response_format": format, "messages": [{"role": "user", "content": "where?"}]});
    let (status, _, body) = chat(&portico, ask_json).await;
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().expect("text");
    assert_eq!(serde_json::from_str::<Value>(text).expect("JSON"), json!({"city": "Paris"}));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let sent = &anthropic.received()[0];
    assert_eq!(sent.headers["x-api-key"], "sk-an-main");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.body["system"], "Be brief.");
    assert_eq!(sent.body["max_tokens"], 4096);
    assert_eq!(sent.body["model"], "claude-x");
    portico.stop().await;
}

#[tokio::test]
async fn streams_are_translated_event_by_event() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let portico = ai_portico(&openai, &anthropic).await;

    // An OpenAI client streaming a tool call from an Anthropic model.
    let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
    let body = json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true}, "tools": tools,
                      "messages": [{"role": "user", "content": "weather?"}]});
    let response =
        portico.http_request(Method::POST, "/v1/chat/completions").json(&body).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "content-type"), "text/event-stream");
    let events = sse(response).await;
    assert!(events.iter().all(|(name, _)| name.is_none()), "OpenAI streams have no event names");
    assert_eq!(events.last().map(|(_, d)| d.as_str()), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).expect("json")).collect();
    let call = chunks.iter().find_map(|c| c.pointer("/choices/0/delta/tool_calls/0/id")).expect("a tool call");
    assert_eq!(call, "toolu_mock1");
    let arguments: String =
        chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments")?.as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).expect("arguments"), json!({"city": "Paris"}));
    let finish = chunks.iter().find_map(|c| c.pointer("/choices/0/finish_reason")?.as_str());
    assert_eq!(finish, Some("tool_calls"));
    assert_eq!(chunks.last().expect("usage")["usage"]["total_tokens"], 21);

    // An Anthropic client streaming from an OpenAI model.
    let body =
        json!({"model": "gpt", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let response = messages(&portico, body).await;
    assert_eq!(response.status(), 200);
    let events = sse(response).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let text: String = events
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok()?.pointer("/delta/text")?.as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hello from openai-mock: hi");
    // The provider was asked for usage, and it reached the Anthropic client.
    assert_eq!(openai.received()[0].body["stream_options"]["include_usage"], true);
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).expect("json");
    assert_eq!(delta["usage"]["output_tokens"], 7);
    assert_eq!(delta["usage"]["input_tokens"], 11);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 3);
    portico.stop().await;
}

#[tokio::test]
async fn anthropic_clients_get_thinking_signatures_byte_for_byte() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let portico = ai_portico(&openai, &anthropic).await;
    let history = json!([
        {"role": "user", "content": [{"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Earlier.", "signature": "EqQB+/x=="},
                                          {"type": "text", "text": "Earlier answer"}]},
        {"role": "user", "content": "and now?"}
    ]);
    let body = json!({"model": "claude", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024},
                      "messages": history});
    let response = messages(&portico, body.clone()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer["content"][0],
        json!({"type": "thinking", "thinking": "Let me think.", "signature": "c2lnbmF0dXJl+/=="})
    );
    let sent = &anthropic.received()[0].body;
    assert_eq!(sent["messages"], history, "thinking blocks and cache markers reach the provider unchanged");

    let streamed = messages(&portico, json!({"model": "claude", "max_tokens": 2000, "stream": true,
                                             "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": history})).await;
    let events = sse(streamed).await;
    let signature = events.iter().find_map(|(_, d)| {
        let data: Value = serde_json::from_str(d).ok()?;
        data.pointer("/delta/signature")?.as_str().map(str::to_owned)
    });
    assert_eq!(signature.as_deref(), Some("c2lnbmF0dXJl+/=="));
    assert!(events.iter().any(|(n, _)| n.as_deref() == Some("ping")), "a pass-through stream keeps its pings");
    portico.stop().await;
}

#[tokio::test]
async fn failures_before_the_answer_fall_back_and_keys_rest_or_are_disabled() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let portico = ai_portico(&openai, &anthropic).await;
    let ask = json!({"model": "both", "messages": [{"role": "user", "content": "hi"}]});

    openai.fail_next(ProviderFault::Status(500));
    let (status, headers, body) = chat(&portico, ask.clone()).await;
    assert_eq!((status, header(&headers, "x-portico-provider")), (StatusCode::OK, "an".to_owned()), "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from anthropic-mock: hi");

    openai.fail_next(ProviderFault::Hang);
    let (status, headers, _) = chat(&portico, ask.clone()).await;
    assert_eq!((status, header(&headers, "x-portico-provider")), (StatusCode::OK, "an".to_owned()), "a hang times out");

    // A refused key is taken out; the spare (weight 0) is never used, so the next target answers.
    openai.reject_key("sk-oa-main");
    let (status, headers, _) = chat(&portico, ask.clone()).await;
    assert_eq!((status, header(&headers, "x-portico-provider")), (StatusCode::OK, "an".to_owned()));
    let keys: Value =
        portico.admin(Method::GET, "/ai/providers/oa/keys").send().await.expect("keys").json().await.expect("json");
    assert_eq!(keys["keys"][0]["name"], "main");
    assert_eq!(keys["keys"][0]["disabled"], true);
    assert!(keys["keys"][0]["disabled_because"].as_str().is_some_and(|w| w.starts_with("401")), "{keys}");
    assert!(!keys.to_string().contains("sk-oa"), "key values never appear: {keys}");
    let before = openai.received().len();
    chat(&portico, ask.clone()).await;
    assert_eq!(openai.received().len(), before, "a disabled key is not tried again");

    // 429 makes the key rest for the provider's Retry-After (1 s), and it comes back by itself.
    anthropic.fail_next(ProviderFault::Status(429));
    let (status, _, body) =
        chat(&portico, json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let keys: Value =
        portico.admin(Method::GET, "/ai/providers/an/keys").send().await.expect("keys").json().await.expect("json");
    assert!(keys["keys"][0]["resting_for_ms"].as_u64().is_some_and(|ms| ms > 0 && ms <= 1000), "{keys}");
    let (status, _, body) =
        chat(&portico, json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 429, "while every key rests: {body}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, _) =
        chat(&portico, json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200, "the key is back after its rest");
    portico.stop().await;
}

#[tokio::test]
async fn errors_reach_each_client_in_its_own_format() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let portico = ai_portico(&openai, &anthropic).await;

    let (status, _, body) =
        chat(&portico, json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response =
        messages(&portico, json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!((body["type"].clone(), body["error"]["type"].clone()), (json!("error"), json!("not_found_error")));

    // Translation needs a valid request: the field at fault is named.
    let response = messages(&portico, json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("max_tokens")), "{body}");

    let response =
        portico.http_request(Method::POST, "/v1/chat/completions").body("{not json").send().await.expect("request");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("not valid JSON")), "{body}");

    // Every target failing: the last failure, in the client's format.
    openai.fail_next(ProviderFault::Status(503));
    anthropic.fail_next(ProviderFault::Status(529));
    let (status, _, body) =
        chat(&portico, json!({"model": "both", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["message"], "Overloaded");

    // An error in the middle of a stream arrives as an event of the client's format.
    anthropic.fail_next(ProviderFault::MidStreamError);
    let body = json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let response =
        portico.http_request(Method::POST, "/v1/chat/completions").json(&body).send().await.expect("request");
    let events = sse(response).await;
    let last: Value = serde_json::from_str(&events.last().expect("events").1).expect("json");
    assert_eq!(last["error"]["message"], "Overloaded");
    openai.fail_next(ProviderFault::Drop);
    let body =
        json!({"model": "gpt", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let events = sse(messages(&portico, body).await).await;
    let (name, data) = events.last().expect("events");
    assert_eq!(name.as_deref(), Some("error"));
    let error: Value = serde_json::from_str(data).expect("json");
    assert_eq!(error["type"], "error");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("broke off")), "{error}");

    let response = portico.get("/v1/nothing").send().await.expect("request");
    assert_eq!(response.status(), 404);
    portico.stop().await;
}

#[tokio::test]
async fn embeddings_and_models_are_served() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let portico = ai_portico(&openai, &anthropic).await;
    let ask = |format: Option<&str>| {
        let mut body = json!({"model": "gpt", "input": ["a", "b"]});
        if let Some(format) = format {
            body["encoding_format"] = format.into();
        }
        portico.http_request(Method::POST, "/v1/embeddings").json(&body).send()
    };
    let floats: Value = ask(None).await.expect("request").json().await.expect("json");
    assert_eq!(floats["data"][1]["embedding"], json!([0.5, -1.25, 1.0]));
    let encoded: Value = ask(Some("base64")).await.expect("request").json().await.expect("json");
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        encoded["data"][1]["embedding"].as_str().expect("base64"),
    )
    .expect("decodes");
    let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    assert_eq!(floats, [0.5, -1.25, 1.0]);
    assert!(openai.received().iter().all(|r| r.body.get("encoding_format").is_none()));

    let response = portico
        .http_request(Method::POST, "/v1/embeddings")
        .json(&json!({"model": "claude", "input": "a"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400, "Anthropic has no embeddings");

    // Anthropic's token counting, for clients such as Claude Code: only Anthropic models count.
    let count = |model: &str| {
        let request =
            portico.http_request(Method::POST, "/v1/messages/count_tokens").header("anthropic-version", "2023-06-01");
        request.json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})).send()
    };
    let counted = count("claude").await.expect("request");
    assert_eq!(counted.status(), 200);
    assert_eq!(counted.json::<Value>().await.expect("json"), json!({"input_tokens": 14}));
    let sent = anthropic.received().last().expect("a request").clone();
    assert!(sent.uri.ends_with("/v1/messages/count_tokens") && sent.body["model"] == "claude-x", "{sent:?}");
    let refused = count("gpt").await.expect("request");
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["type"], "error", "an Anthropic client gets Anthropic's error shape: {error}");

    let models: Value = portico.get("/v1/models").send().await.expect("request").json().await.expect("json");
    let ids: Vec<&str> = models["data"].as_array().expect("list").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["both", "claude", "gpt"]);
    assert_eq!(portico.get("/v1/models/gpt").send().await.expect("request").status(), 200);
    assert_eq!(portico.get("/v1/models/none").send().await.expect("request").status(), 404);
    portico.stop().await;
}

#[tokio::test]
async fn provider_keys_are_sealed_and_never_shown() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let portico = ai_portico(&openai, &anthropic).await;
    let provider: Value =
        portico.admin(Method::GET, "/ai/providers/oa").send().await.expect("get").json().await.expect("json");
    assert_eq!(provider["keys"], json!([{"name": "main", "weight": 1}, {"name": "spare", "weight": 0}]));
    let file = std::fs::read(portico.dir.path().join("portico.db")).expect("database file");
    assert!(!file.windows(9).any(|w| w == b"sk-oa-mai"), "the store holds keys sealed");
    let audit =
        portico.admin(Method::GET, "/audit?kind=ai_provider").send().await.expect("audit").text().await.expect("text");
    assert!(
        audit.contains("\"oa\"") && !audit.contains("sk-oa"),
        "the audit log names the provider, not its keys: {audit}"
    );
    // Sent back as read (without keys), the provider keeps them.
    let put = portico.admin(Method::PUT, "/ai/providers/oa").header("if-match", "\"1\"").json(&provider);
    assert_eq!(put.send().await.expect("put").status(), 200);
    portico.settle().await;
    let (status, _, _) = chat(&portico, json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200);
    assert_eq!(openai.received().last().expect("a request").headers["authorization"], "Bearer sk-oa-main");
    // A model cannot name a provider that does not exist; a provider in use cannot go.
    let bad = portico
        .admin(Method::POST, "/ai/models")
        .json(&json!({"name": "x", "targets": [{"provider": "ghost", "model": "m"}]}));
    let response = bad.send().await.expect("post");
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("json");
    assert!(problem.to_string().contains("ghost"), "{problem}");
    let response =
        portico.admin(Method::DELETE, "/ai/providers/oa").header("if-match", "\"2\"").send().await.expect("delete");
    assert_eq!(response.status(), 409);
    portico.stop().await;
}

#[tokio::test]
async fn without_a_master_key_provider_keys_are_refused() {
    let portico = Portico::start().await;
    let provider = json!({"name": "oa", "kind": "openai", "keys": [{"name": "main", "key": "sk-1"}]});
    let response = portico.admin(Method::POST, "/ai/providers").json(&provider).send().await.expect("post");
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("json");
    assert!(problem.to_string().contains("PORTICO_MASTER_KEY"), "{problem}");
    portico.stop().await;
}

#[tokio::test]
async fn a_yaml_file_configures_the_ai_gateway() {
    let mock = MockProvider::start("local").await;
    let yaml = format!(
        "ai_providers:\n  - {{name: local, kind: openai_compatible, base_url: '{}', keys: [{{name: k, key: sk-local}}]}}\n\
         ai_models:\n  - {{name: llama3.1:8b, targets: [{{provider: local, model: 'llama3.1:8b-instruct'}}]}}\n\
         services:\n  - {{name: llm, ai: {{models: ['llama3.1:8b']}}}}\n\
         routes:\n  - {{name: llm, paths: ['/openai/v1/*'], service: llm}}\n",
        mock.base_url()
    );
    let portico = Portico::start_file(&yaml).await;
    let body = json!({"model": "llama3.1:8b", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let response =
        portico.http_request(Method::POST, "/openai/v1/chat/completions").json(&body).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello from local: hi");
    let sent = &mock.received()[0];
    assert_eq!(sent.body["model"], "llama3.1:8b-instruct");
    assert_eq!(sent.body["max_tokens"], 10, "OpenAI-compatible servers get `max_tokens` as sent");
    portico.stop().await;
}

#[tokio::test]
async fn ai_routes_take_the_gateways_policies_and_bearer_keys() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let portico = ai_portico(&openai, &anthropic).await;
    let key = consumer_key(&portico, "app").await;
    let secured = json!({"name": "secured", "paths": ["/secure/v1/*"], "service": "llm",
                         "policies": {"key_auth": {"header": "authorization"}}});
    portico.create("routes", secured).await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]});
    let send = |auth: Option<String>| {
        let request = portico.http_request(Method::POST, "/secure/v1/chat/completions").json(&body);
        match auth {
            Some(auth) => request.header("authorization", auth),
            None => request,
        }
        .send()
    };
    assert_eq!(send(None).await.expect("request").status(), 401);
    assert_eq!(send(Some("Bearer wrong".into())).await.expect("request").status(), 401);
    let response = send(Some(format!("Bearer {key}"))).await.expect("request");
    assert_eq!(response.status(), 200);
    // The consumer's key stays with Portico: the provider gets Portico's own.
    assert_eq!(openai.received().last().expect("a request").headers["authorization"], "Bearer sk-oa-main");

    // With `bearer`, one route takes Anthropic's `x-api-key` and OpenAI's bearer token, and
    // refuses each client in its own API's words.
    let both =
        json!({"name": "both", "paths": ["/both/v1/*"], "service": "llm", "policies": {"key_auth": {"bearer": true}}});
    portico.create("routes", both).await;
    let ask = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let anthropic_request = |key: &str| {
        let request = portico.http_request(Method::POST, "/both/v1/messages").header("anthropic-version", "2023-06-01");
        request.header("x-api-key", key).json(&ask).send()
    };
    assert_eq!(anthropic_request(&key).await.expect("request").status(), 200);
    let refused = anthropic_request("wrong").await.expect("request");
    assert_eq!(refused.status(), 401);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(
        (error["type"].clone(), error["error"]["type"].clone()),
        (json!("error"), json!("authentication_error"))
    );
    let openai_request = |key: &str| {
        let request = portico.http_request(Method::POST, "/both/v1/chat/completions").bearer_auth(key);
        request.json(&body).send()
    };
    assert_eq!(openai_request(&key).await.expect("request").status(), 200);
    let refused = openai_request("wrong").await.expect("request");
    assert_eq!(refused.status(), 401);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["type"], "authentication_error");
    assert_eq!(error["error"]["code"], "unauthorized");
    portico.stop().await;
}

#[tokio::test]
async fn gemini_and_mistral_are_spoken_to_in_their_own_words() {
    let (gemini, mistral) = (MockProvider::start("gemini-mock").await, MockProvider::start("mistral-mock").await);
    let key = MasterKey::parse(&MasterKey::generate()).expect("key");
    let portico = Portico::start_with(|s| s.master_key = Some(Arc::new(key))).await;
    for (name, kind, mock) in [("gem", "gemini", &gemini), ("mis", "mistral", &mistral)] {
        let provider = json!({"name": name, "kind": kind, "base_url": mock.base_url(), "keys": [{"name": "k", "key": format!("key-{name}")}]});
        portico.create("ai/providers", provider).await;
    }
    portico
        .create("ai/models", json!({"name": "flash", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]}))
        .await;
    portico
        .create(
            "ai/models",
            json!({"name": "large", "targets": [{"provider": "mis", "model": "mistral-large-latest"}]}),
        )
        .await;
    portico.create("services", json!({"name": "llm", "ai": {}})).await;
    portico.create("routes", json!({"name": "llm", "paths": ["/v1/*"], "service": "llm"})).await;

    let (status, _, body) =
        chat(&portico, json!({"model": "flash", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from gemini-mock: hi");
    assert_eq!(
        (body["usage"]["prompt_tokens"].clone(), body["usage"]["prompt_tokens_details"]["cached_tokens"].clone()),
        (json!(14), json!(3))
    );
    let sent = &gemini.received()[0];
    assert!(sent.uri.ends_with("/models/gemini-2.5-flash:generateContent"), "{}", sent.uri);
    assert_eq!(sent.headers["x-goog-api-key"], "key-gem");
    assert_eq!(sent.body["contents"], json!([{"role": "user", "parts": [{"text": "hi"}]}]));

    // A Gemini stream has no closing event: its end completes the Anthropic client's stream.
    let body =
        json!({"model": "flash", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let events = sse(messages(&portico, body).await).await;
    assert!(gemini.received()[1].uri.ends_with(":streamGenerateContent?alt=sse"));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"], "{events:?}");
    let text: String = events
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok()?.pointer("/delta/text")?.as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hello from gemini-mock: hi");

    // Gemini signs its calls; the signature rides in the call's id and goes back with it.
    let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "additionalProperties": false}}}]);
    let ask = json!({"model": "flash", "tools": tools, "messages": [{"role": "user", "content": "weather?"}]});
    let (_, _, answer) = chat(&portico, ask).await;
    let call = answer["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    let history = json!([{"role": "user", "content": "weather?"}, answer["choices"][0]["message"],
                         {"role": "tool", "tool_call_id": call["id"], "content": "18C"}]);
    let (status, _, answer) = chat(&portico, json!({"model": "flash", "tools": tools, "messages": history})).await;
    assert_eq!(status, 200, "{answer}");
    let sent = gemini.received().last().expect("a request").body.clone();
    assert_eq!(sent["contents"][1]["parts"][0]["thoughtSignature"], "Z2VtaW5pLXNpZw==");
    assert_eq!(sent["contents"][2]["parts"][0]["functionResponse"]["name"], "weather");
    assert!(sent["tools"][0]["functionDeclarations"][0]["parameters"].get("additionalProperties").is_none());

    // Mistral takes only 9-character tool call ids, and calls the seed `random_seed`.
    let history = json!([{"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_01A09q90qw90", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_01A09q90qw90", "content": "18C"}]);
    let (status, _, answer) = chat(&portico, json!({"model": "large", "seed": 7, "messages": history})).await;
    assert_eq!(status, 200, "{answer}");
    let sent = &mistral.received()[0].body;
    let id = sent["messages"][1]["tool_calls"][0]["id"].as_str().expect("an id");
    assert!(id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    assert_eq!(sent["messages"][2]["tool_call_id"], id);
    assert_eq!((sent["random_seed"].clone(), sent.get("seed")), (json!(7), None));
    portico.stop().await;
}

#[tokio::test]
async fn streams_flow_as_they_arrive_and_a_client_that_leaves_cancels_the_provider() {
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    anthropic.set_pace(std::time::Duration::from_millis(100));
    let portico = ai_portico(&openai, &anthropic).await;
    let body = json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut response =
        portico.http_request(Method::POST, "/v1/chat/completions").json(&body).send().await.expect("request");
    let first = response.chunk().await.expect("read").expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "), "{first:?}");
    let sent = anthropic.events_sent();
    assert!(sent < 9, "the first event reached the client before the provider sent the other ones ({sent} of 9 sent)");
    drop(response);
    let mut cancelled = 0;
    for _ in 0..100 {
        cancelled = anthropic.streams_cancelled();
        if cancelled > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(cancelled, 1, "the provider's stream was cut when the client left");
    assert!(anthropic.events_sent() < 9);
    portico.stop().await;
}
