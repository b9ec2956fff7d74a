//! Anthropic message responses, and the usage object they and stream events carry.

use crate::chat::{ChatResponse, FinishReason, Part, Usage};
use crate::error::{AiError, ErrorKind};
use crate::json;
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn parse_response(body: &[u8]) -> Result<ChatResponse, AiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AiError::new(ErrorKind::Api, format!("the provider's answer could not be read: not JSON: {e}")))?;
    let mut parts = Vec::new();
    for block in value.get("content").and_then(Value::as_array).into_iter().flatten() {
        let text = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(Part::Text { text: text("text"), cache_control: None }),
            Some("tool_use") => parts.push(Part::ToolCall {
                id: text("id"),
                name: text("name"),
                arguments: serde_json::to_string(block.get("input").unwrap_or(&json!({}))).unwrap_or_default(),
                cache_control: None,
            }),
            Some("thinking") => parts.push(Part::Thinking {
                text: text("thinking"),
                signature: block.get("signature").and_then(Value::as_str).map(str::to_owned),
            }),
            Some("redacted_thinking") => parts.push(Part::RedactedThinking { data: text("data") }),
            // Server tool blocks and the like have no place in other formats.
            _ => {}
        }
    }
    Ok(ChatResponse {
        id: value.get("id").and_then(Value::as_str).map_or_else(|| crate::chat::fresh_id("msg_"), str::to_owned),
        model: value.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        parts,
        finish: value.get("stop_reason").and_then(Value::as_str).map_or(FinishReason::Stop, read_stop_reason),
        stop_sequence: value.get("stop_sequence").and_then(Value::as_str).map(str::to_owned),
        usage: value.get("usage").map(|u| read_usage(&json::usage(u), Usage::default())).unwrap_or_default(),
    })
}

pub(crate) fn write_response(response: &ChatResponse) -> Vec<u8> {
    let mut content = Vec::new();
    for part in &response.parts {
        match part {
            Part::Text { text, .. } => content.push(json!({"type": "text", "text": text})),
            Part::ToolCall { id, name, arguments, .. } => content.push(json!({
                "type": "tool_use", "id": id, "name": name, "input": tool_input(arguments),
            })),
            Part::Thinking { text, signature } => content.push(json!({
                "type": "thinking", "thinking": text, "signature": signature.clone().unwrap_or_default(),
            })),
            Part::RedactedThinking { data } => content.push(json!({"type": "redacted_thinking", "data": data})),
            Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    let body = json!({
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": write_stop_reason(&response.finish),
        "stop_sequence": response.stop_sequence,
        "usage": write_usage(&response.usage),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Tool arguments as the object Anthropic's `input` must be. Arguments that are not a JSON
/// object (a model can produce broken JSON) are kept as text under `arguments`.
pub(crate) fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => input,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({"arguments": arguments}),
    }
}

pub(crate) fn read_stop_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" => FinishReason::Stop,
        "stop_sequence" => FinishReason::StopSequence,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::Refusal,
        "pause_turn" => FinishReason::PauseTurn,
        other => FinishReason::Other(other.to_owned()),
    }
}

pub(crate) fn write_stop_reason(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter | FinishReason::Refusal => "refusal",
        FinishReason::PauseTurn => "pause_turn",
        FinishReason::Other(other) => other,
    }
}

/// Anthropic's usage object.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct WireUsage {
    input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// Reads Anthropic's usage over `known`: fields present replace the known ones (stream
/// events carry cumulative counts, and not every event carries every field).
pub(crate) fn read_usage(usage: &WireUsage, known: Usage) -> Usage {
    // Anthropic's `input_tokens` leaves out the cached tokens; OpenAI's meaning counts them.
    let uncached = usage
        .input_tokens
        .unwrap_or(known.prompt_tokens.saturating_sub(known.cached_tokens + known.cache_write_tokens));
    let cached = usage.cache_read_input_tokens.unwrap_or(known.cached_tokens);
    let written = usage.cache_creation_input_tokens.unwrap_or(known.cache_write_tokens);
    Usage {
        prompt_tokens: uncached + cached + written,
        cached_tokens: cached,
        cache_write_tokens: written,
        completion_tokens: usage.output_tokens.unwrap_or(known.completion_tokens),
        reasoning_tokens: known.reasoning_tokens,
    }
}

pub(crate) fn write_usage(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens + usage.cache_write_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    })
}
