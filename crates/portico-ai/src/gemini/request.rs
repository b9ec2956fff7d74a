//! Requests for Gemini's `generateContent`: contents with `user` and `model` turns, system
//! instructions apart, tools as function declarations.

use super::{schema, signature};
use crate::chat::{ChatRequest, ImageSource, Message, Part, ResponseFormat, Role, ToolChoice};
use crate::error::AiError;
use crate::json::{self, at, index};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

pub(crate) fn write_request(request: &ChatRequest, _model: &str) -> Result<Value, AiError> {
    if request.logprobs {
        return Err(AiError::invalid("logprobs", "Gemini models do not return log probabilities here"));
    }
    // A tool result names its call; Gemini wants the function's name.
    let names: HashMap<&str, &str> = request
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::ToolCall { id, name, .. } => Some((id.as_str(), name.as_str())),
            _ => None,
        })
        .collect();
    let mut contents: Vec<(Role, Vec<Value>)> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let path = index("messages", i);
        let parts = write_parts(message, &path, &names)?;
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((role, previous)) if *role == message.role => previous.extend(parts),
            _ => contents.push((message.role, parts)),
        }
    }
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": if role == Role::User { "user" } else { "model" }, "parts": parts}))
        .collect();
    let mut body = Map::new();
    body.insert("contents".into(), contents.into());
    if !request.system.is_empty() {
        let texts: Vec<Value> = request
            .system
            .iter()
            .filter_map(|p| match p {
                Part::Text { text, .. } => Some(json!({"text": text})),
                _ => None,
            })
            .collect();
        body.insert("systemInstruction".into(), json!({"parts": texts}));
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut declaration = json!({"name": tool.name, "parameters": schema::trim(&tool.parameters)});
                json::put(
                    declaration.as_object_mut().expect("an object literal"),
                    "description",
                    tool.description.clone(),
                );
                declaration
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert("toolConfig".into(), json!({"functionCallingConfig": config}));
    }
    let mut generation = Map::new();
    json::put(&mut generation, "temperature", request.temperature);
    json::put(&mut generation, "topP", request.top_p);
    json::put(&mut generation, "topK", request.top_k);
    json::put(&mut generation, "maxOutputTokens", request.max_tokens);
    json::put(&mut generation, "candidateCount", request.choices);
    json::put(&mut generation, "seed", request.seed);
    json::put(&mut generation, "presencePenalty", request.presence_penalty);
    json::put(&mut generation, "frequencyPenalty", request.frequency_penalty);
    if !request.stop.is_empty() {
        generation.insert("stopSequences".into(), request.stop.clone().into());
    }
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => {
            generation.insert("responseMimeType".into(), "application/json".into());
        }
        Some(ResponseFormat::JsonSchema { schema: wanted, .. }) => {
            generation.insert("responseMimeType".into(), "application/json".into());
            generation.insert("responseSchema".into(), schema::trim(wanted));
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(budget) = thinking_budget(request) {
        generation.insert("thinkingConfig".into(), json!({"thinkingBudget": budget, "includeThoughts": true}));
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(body))
}

/// The thinking budget from Anthropic's `thinking` or OpenAI's `reasoning_effort`.
fn thinking_budget(request: &ChatRequest) -> Option<u64> {
    if let Some(thinking) = &request.thinking {
        return match thinking.get("type").and_then(Value::as_str) {
            Some("enabled") => thinking.get("budget_tokens").and_then(Value::as_u64),
            _ => Some(0),
        };
    }
    request.reasoning_effort.as_deref().map(|effort| match effort {
        "minimal" => 0,
        "low" => 1_024,
        "medium" => 8_192,
        _ => 24_576,
    })
}

fn write_parts(message: &Message, path: &str, names: &HashMap<&str, &str>) -> Result<Vec<Value>, AiError> {
    let mut parts = Vec::new();
    for (k, part) in message.parts.iter().enumerate() {
        let part_path = index(&at(path, "content"), k);
        match part {
            Part::Text { text, .. } => parts.push(json!({"text": text})),
            Part::Image { source, .. } => parts.push(image(source)),
            Part::ToolCall { id, name, arguments, .. } => {
                let args: Value = serde_json::from_str(arguments).map_err(|_| {
                    AiError::invalid(&part_path, format!("the arguments of tool call `{id}` are not JSON"))
                })?;
                let (_, thought) = signature::extract(id);
                let mut call = json!({"functionCall": {"name": name, "args": args}});
                if let Some(thought) = thought {
                    call["thoughtSignature"] = thought.into();
                }
                parts.push(call);
            }
            Part::ToolResult { call_id, content, is_error, .. } => {
                let name = names.get(call_id.as_str()).copied().ok_or_else(|| {
                    AiError::invalid(&part_path, format!("no earlier tool call has the id `{call_id}`"))
                })?;
                let text: String = content
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text { text, .. } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                let key = if *is_error { "error" } else { "content" };
                parts.push(json!({"functionResponse": {"name": name, "response": {key: text}}}));
            }
            // Gemini's thoughts are not sent back as text.
            Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
        }
    }
    Ok(parts)
}

fn image(source: &ImageSource) -> Value {
    match source {
        ImageSource::Base64 { media_type, data } => json!({"inlineData": {"mimeType": media_type, "data": data}}),
        ImageSource::Url(url) => {
            let lower = url.to_ascii_lowercase();
            let mime = [(".png", "image/png"), (".gif", "image/gif"), (".webp", "image/webp")]
                .iter()
                .find(|(ending, _)| lower.split('?').next().is_some_and(|p| p.ends_with(ending)))
                .map_or("image/jpeg", |(_, mime)| mime);
            json!({"fileData": {"mimeType": mime, "fileUri": url}})
        }
    }
}
