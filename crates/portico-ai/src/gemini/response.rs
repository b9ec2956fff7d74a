//! Gemini's answers: candidates with parts, a finish reason, and usage metadata.

use super::signature;
use crate::chat::{fresh_id, ChatResponse, FinishReason, Part, Usage};
use crate::error::{AiError, ErrorKind};
use crate::json;
use serde::Deserialize;
use serde_json::Value;

pub(crate) fn parse_response(body: &[u8]) -> Result<ChatResponse, AiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AiError::new(ErrorKind::Api, format!("the provider's answer could not be read: not JSON: {e}")))?;
    let candidate = json::present(&value["candidates"][0]);
    let mut parts = Vec::new();
    let mut calls = 0;
    for part in
        candidate.and_then(|c| json::present(&c["content"]["parts"])).and_then(Value::as_array).into_iter().flatten()
    {
        if let Some(part) = read_part(part, &mut calls) {
            parts.push(part);
        }
    }
    let finish = match candidate.and_then(|c| c.get("finishReason")).and_then(Value::as_str) {
        _ if calls > 0 => FinishReason::ToolCalls,
        Some(reason) => read_finish(reason),
        None if json::present(&value["promptFeedback"]["blockReason"]).is_some() => FinishReason::ContentFilter,
        None => FinishReason::Stop,
    };
    Ok(ChatResponse {
        id: value.get("responseId").and_then(Value::as_str).map_or_else(|| fresh_id("gen-"), str::to_owned),
        model: value.get("modelVersion").and_then(Value::as_str).unwrap_or_default().to_owned(),
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        parts,
        finish,
        stop_sequence: None,
        usage: value.get("usageMetadata").map(|usage| read_usage(&json::usage(usage))).unwrap_or_default(),
    })
}

/// One part of an answer; `calls` counts the function calls so far (for their ids).
pub(crate) fn read_part(part: &Value, calls: &mut usize) -> Option<Part> {
    let thought = part.get("thoughtSignature").and_then(Value::as_str);
    if let Some(call) = part.get("functionCall") {
        *calls += 1;
        let id = call.get("id").and_then(Value::as_str).filter(|id| valid_id(id));
        let id = id.map_or_else(|| fresh_id("call_"), str::to_owned);
        return Some(Part::ToolCall {
            id: signature::embed(&id, thought),
            name: call.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            arguments: serde_json::to_string(call.get("args").unwrap_or(&Value::Object(Default::default())))
                .unwrap_or_default(),
            cache_control: None,
        });
    }
    let text = part.get("text").and_then(Value::as_str)?.to_owned();
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return Some(Part::Thinking { text, signature: None });
    }
    Some(Part::Text { text, cache_control: None })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains("_ts_") && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn read_finish(reason: &str) -> FinishReason {
    match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

/// Gemini's usage metadata: `promptTokenCount` includes cached tokens; `candidatesTokenCount`
/// leaves out the thoughts, which OpenAI's `completion_tokens` counts.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct WireUsage {
    prompt_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
}

pub(crate) fn read_usage(usage: &WireUsage) -> Usage {
    let thoughts = usage.thoughts_token_count.unwrap_or(0);
    Usage {
        prompt_tokens: usage.prompt_token_count.unwrap_or(0),
        cached_tokens: usage.cached_content_token_count.unwrap_or(0),
        cache_write_tokens: 0,
        completion_tokens: usage.candidates_token_count.unwrap_or(0) + thoughts,
        reasoning_tokens: thoughts,
    }
}
