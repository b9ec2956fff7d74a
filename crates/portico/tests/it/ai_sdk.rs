//! The official `openai` and `anthropic` Python SDKs (pinned in tests/ai/requirements.txt)
//! pointed at Portico: each scenario of tests/ai/sdk_checks.py asserts what the SDK hands
//! back to its caller.

use crate::ai::{ai_portico, consumer_key};
use portico_testkit::{MockProvider, ProviderFault};
use reqwest::Method;
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/ai")
}

#[tokio::test]
async fn the_official_sdks_work_through_portico() {
    let python = tests_dir().join(".venv/bin/python");
    if !python.exists() {
        eprintln!(
            "skipped: the SDK tests need tests/ai/.venv (.ci/run makes it; by hand: python3 -m venv tests/ai/.venv && \
             tests/ai/.venv/bin/pip install -r tests/ai/requirements.txt)"
        );
        return;
    }
    let (openai, anthropic) = (MockProvider::start("openai-mock").await, MockProvider::start("anthropic-mock").await);
    let portico = ai_portico(&openai, &anthropic).await;
    // The SDKs authenticate as a consumer: OpenAI's with a bearer token, Anthropic's with
    // `x-api-key`, on the same route.
    let key = consumer_key(&portico, "sdk-app").await;
    let route =
        json!({"name": "llm", "paths": ["/v1/*"], "service": "llm", "policies": {"key_auth": {"bearer": true}}});
    let put = portico.admin(Method::PUT, "/routes/llm").header("if-match", "\"1\"").json(&route);
    assert_eq!(put.send().await.expect("put").status(), 200);
    portico.settle().await;
    // Scripted failures come last: a 429 leaves the Anthropic key resting for a second.
    let scenarios: [(&str, Option<(&MockProvider, ProviderFault)>); 13] = [
        ("openai_chat", None),
        ("openai_stream", None),
        ("openai_stream_without_usage", None),
        ("openai_tools", None),
        ("openai_embeddings", None),
        ("openai_errors", None),
        ("anthropic_messages", None),
        ("anthropic_stream", None),
        ("anthropic_tools_and_thinking", None),
        ("anthropic_errors", None),
        ("openai_fallback", Some((&openai, ProviderFault::Status(500)))),
        ("openai_rate_limited", Some((&anthropic, ProviderFault::Status(429)))),
        // Last: it spends the consumer's budget.
        ("openai_budget_spent", None),
    ];
    let mut checks = tokio::process::Command::new(&python)
        .arg(tests_dir().join("sdk_checks.py"))
        .arg(&portico.proxy)
        .env("PORTICO_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut ask = checks.stdin.take().expect("stdin");
    let mut answers = BufReader::new(checks.stdout.take().expect("stdout")).lines();
    for (scenario, fault) in scenarios {
        if let Some((provider, fault)) = fault {
            provider.fail_next(fault);
        }
        if scenario == "openai_budget_spent" {
            let budget = json!({"name": "sdk-daily", "consumer": "sdk-app", "period": "day", "max_tokens": 1});
            portico.create("ai/budgets", budget).await;
            portico.settle().await;
        }
        ask.write_all(format!("{scenario}\n").as_bytes()).await.expect("ask");
        let answer = answers.next_line().await.expect("read").unwrap_or_else(|| format!("{scenario}: no answer"));
        assert_eq!(answer, format!("{scenario}: ok"));
    }
    drop(ask);
    assert!(checks.wait().await.expect("python ends").success());
    portico.stop().await;
}
