//! OpenAI chat completion responses, and the usage object both they and stream chunks carry.

use crate::chat::{ChatResponse, FinishReason, Part, Usage};
use crate::error::AiError;
use crate::json;
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn parse_response(body: &[u8]) -> Result<ChatResponse, AiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| invalid_answer(format!("not JSON: {e}")))?;
    let choice = json::present(&value["choices"][0]).ok_or_else(|| invalid_answer("no choices".to_owned()))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut parts = Vec::new();
    if let Some(reasoning) = reasoning_of(message) {
        parts.push(Part::Thinking { text: reasoning.to_owned(), signature: None });
    }
    let text =
        message.get("content").and_then(Value::as_str).or_else(|| message.get("refusal").and_then(Value::as_str));
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        parts.push(Part::Text { text: text.to_owned(), cache_control: None });
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function").unwrap_or(&Value::Null);
        parts.push(Part::ToolCall {
            id: call.get("id").and_then(Value::as_str).map_or_else(|| crate::chat::fresh_id("call_"), str::to_owned),
            name: function.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            arguments: function.get("arguments").and_then(Value::as_str).unwrap_or("{}").to_owned(),
            cache_control: None,
        });
    }
    Ok(ChatResponse {
        id: value.get("id").and_then(Value::as_str).map_or_else(|| crate::chat::fresh_id("chatcmpl-"), str::to_owned),
        model: value.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
        created: value.get("created").and_then(Value::as_u64).unwrap_or_else(now),
        parts,
        finish: choice.get("finish_reason").and_then(Value::as_str).map_or(FinishReason::Stop, read_finish),
        stop_sequence: None,
        usage: value.get("usage").map(|usage| read_usage(&json::usage(usage))).unwrap_or_default(),
    })
}

/// The reasoning text OpenAI-compatible servers send next to the content (DeepSeek and vLLM
/// call it `reasoning_content`, others `reasoning`).
pub(crate) fn reasoning_of(message: &Value) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|key| message.get(*key).and_then(Value::as_str))
        .filter(|text| !text.is_empty())
}

fn invalid_answer(why: String) -> AiError {
    AiError::new(crate::ErrorKind::Api, format!("the provider's answer could not be read: {why}"))
}

pub(crate) fn write_response(response: &ChatResponse) -> Vec<u8> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for part in &response.parts {
        match part {
            Part::Text { text: piece, .. } => text.push_str(piece),
            Part::Thinking { text: piece, .. } => reasoning.push_str(piece),
            Part::ToolCall { id, name, arguments, .. } => {
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
            }
            Part::RedactedThinking { .. } | Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() },
        "refusal": Value::Null,
    });
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let body = json!({
        "id": response.id,
        "object": "chat.completion",
        "created": response.created,
        "model": response.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": write_finish(&response.finish)}],
        "usage": write_usage(&response.usage),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

pub(crate) fn read_finish(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

pub(crate) fn write_finish(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence | FinishReason::PauseTurn => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter | FinishReason::Refusal => "content_filter",
        FinishReason::Other(other) => other,
    }
}

/// OpenAI's usage object, with the words some compatible servers use in it.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
    /// DeepSeek's name for the cached tokens.
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptDetails {
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

pub(crate) fn read_usage(usage: &WireUsage) -> Usage {
    let prompt = usage.prompt_tokens_details.as_ref();
    Usage {
        prompt_tokens: usage.prompt_tokens.unwrap_or(0),
        cached_tokens: prompt.and_then(|p| p.cached_tokens).or(usage.prompt_cache_hit_tokens).unwrap_or(0),
        cache_write_tokens: prompt.and_then(|p| p.cache_write_tokens).unwrap_or(0),
        completion_tokens: usage.completion_tokens.unwrap_or(0),
        reasoning_tokens: usage.completion_tokens_details.as_ref().and_then(|c| c.reasoning_tokens).unwrap_or(0),
    }
}

/// Writes usage the OpenAI way; tokens written to a prompt cache (which OpenAI does not
/// bill apart) go in `prompt_tokens_details.cache_write_tokens`.
pub(crate) fn write_usage(usage: &Usage) -> Value {
    let mut prompt_details = json!({"cached_tokens": usage.cached_tokens});
    if usage.cache_write_tokens > 0 {
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens.into();
    }
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens(),
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    })
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn created_now() -> u64 {
    now()
}
