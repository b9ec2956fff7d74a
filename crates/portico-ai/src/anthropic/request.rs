//! Anthropic message requests (`POST /v1/messages`), read and written.

use crate::chat::{ChatRequest, ImageSource, Message, Part, ResponseFormat, Role, Tool, ToolChoice, JSON_TOOL};
use crate::error::AiError;
use crate::json::{self, at, index};
use serde_json::{json, Map, Value};

/// The `max_tokens` Anthropic requires, when a client of another format set none.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

const KNOWN: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "thinking",
    "metadata",
];

pub(crate) fn parse_request(body: &Value) -> Result<ChatRequest, AiError> {
    let map = json::object(body, "")?;
    let mut request = ChatRequest { model: json::required_string(map, "model", "")?, ..ChatRequest::default() };
    request.max_tokens =
        Some(json::count(map, "max_tokens", "")?.ok_or_else(|| AiError::invalid("max_tokens", "is required"))?);
    let messages = json::array(map.get("messages").unwrap_or(&Value::Null), "messages")?;
    if messages.is_empty() {
        return Err(AiError::invalid("messages", "at least one message is required"));
    }
    for (i, message) in messages.iter().enumerate() {
        let path = index("messages", i);
        let message = json::object(message, &path)?;
        let role = match json::required_string(message, "role", &path)?.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => return Err(AiError::invalid(at(&path, "role"), format!("unknown role `{other}`"))),
        };
        let content = message.get("content").ok_or_else(|| AiError::invalid(at(&path, "content"), "is required"))?;
        request.messages.push(Message { role, parts: read_content(content, &at(&path, "content"))? });
    }
    if let Some(system) = map.get("system").filter(|v| !v.is_null()) {
        request.system = read_content(system, "system")?;
    }
    if let Some(tools) = map.get("tools").filter(|v| !v.is_null()) {
        for (i, tool) in json::array(tools, "tools")?.iter().enumerate() {
            request.tools.push(read_tool(tool, &index("tools", i))?);
        }
    }
    if let Some(choice) = map.get("tool_choice").filter(|v| !v.is_null()) {
        let choice = json::object(choice, "tool_choice")?;
        request.tool_choice = Some(match json::required_string(choice, "type", "tool_choice")?.as_str() {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Tool(json::required_string(choice, "name", "tool_choice")?),
            other => return Err(AiError::invalid("tool_choice.type", format!("unknown tool choice `{other}`"))),
        });
        if json::boolean(choice, "disable_parallel_tool_use", "tool_choice")? == Some(true) {
            request.parallel_tool_calls = Some(false);
        }
    }
    request.stop = json::strings(map, "stop_sequences", "")?;
    request.temperature = json::number(map, "temperature", "")?;
    request.top_p = json::number(map, "top_p", "")?;
    request.top_k = json::count(map, "top_k", "")?;
    request.stream = json::boolean(map, "stream", "")?.unwrap_or(false);
    // Anthropic streams always end with the usage.
    request.include_usage = true;
    request.thinking = map.get("thinking").filter(|v| !v.is_null()).cloned();
    if let Some(metadata) = map.get("metadata").filter(|v| !v.is_null()) {
        request.user = json::string(json::object(metadata, "metadata")?, "user_id", "metadata")?;
    }
    request.extra =
        map.iter().filter(|(k, _)| !KNOWN.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(request)
}

fn read_content(content: &Value, path: &str) -> Result<Vec<Part>, AiError> {
    match content {
        Value::String(text) => Ok(vec![Part::Text { text: text.clone(), cache_control: None }]),
        Value::Array(blocks) => {
            blocks.iter().enumerate().map(|(i, block)| read_block(block, &index(path, i))).collect()
        }
        _ => Err(AiError::invalid(path, "expected a string or a list of content blocks")),
    }
}

fn read_block(block: &Value, path: &str) -> Result<Part, AiError> {
    let map = json::object(block, path)?;
    let cache_control = map.get("cache_control").filter(|v| !v.is_null()).cloned();
    Ok(match json::required_string(map, "type", path)?.as_str() {
        "text" => Part::Text { text: json::required_string(map, "text", path)?, cache_control },
        "image" => {
            let source_path = at(path, "source");
            let source = json::object(map.get("source").unwrap_or(&Value::Null), &source_path)?;
            let source = match json::required_string(source, "type", &source_path)?.as_str() {
                "base64" => ImageSource::Base64 {
                    media_type: json::required_string(source, "media_type", &source_path)?,
                    data: json::required_string(source, "data", &source_path)?,
                },
                "url" => ImageSource::Url(json::required_string(source, "url", &source_path)?),
                other => {
                    return Err(AiError::invalid(at(&source_path, "type"), format!("unknown image source `{other}`")))
                }
            };
            Part::Image { source, cache_control }
        }
        "tool_use" => Part::ToolCall {
            id: json::required_string(map, "id", path)?,
            name: json::required_string(map, "name", path)?,
            arguments: serde_json::to_string(map.get("input").unwrap_or(&json!({}))).unwrap_or_default(),
            cache_control,
        },
        "tool_result" => Part::ToolResult {
            call_id: json::required_string(map, "tool_use_id", path)?,
            content: match map.get("content").filter(|v| !v.is_null()) {
                Some(content) => read_content(content, &at(path, "content"))?,
                None => Vec::new(),
            },
            is_error: json::boolean(map, "is_error", path)?.unwrap_or(false),
            cache_control,
        },
        "thinking" => Part::Thinking {
            text: json::required_string(map, "thinking", path)?,
            signature: json::string(map, "signature", path)?,
        },
        "redacted_thinking" => Part::RedactedThinking { data: json::required_string(map, "data", path)? },
        other => {
            return Err(AiError::invalid(
                at(path, "type"),
                format!("`{other}` blocks can only be sent to Anthropic-format providers"),
            ))
        }
    })
}

fn read_tool(tool: &Value, path: &str) -> Result<Tool, AiError> {
    let map = json::object(tool, path)?;
    if let Some(kind) = json::string(map, "type", path)?.filter(|k| k != "custom") {
        return Err(AiError::invalid(
            at(path, "type"),
            format!("`{kind}` is a server tool: it can only be sent to Anthropic-format providers"),
        ));
    }
    Ok(Tool {
        name: json::required_string(map, "name", path)?,
        description: json::string(map, "description", path)?,
        parameters: map.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        strict: None,
        cache_control: map.get("cache_control").filter(|v| !v.is_null()).cloned(),
    })
}

pub(crate) fn write_request(request: &ChatRequest, model: &str) -> Result<Value, AiError> {
    refuse_what_anthropic_cannot_do(request)?;
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    let mut max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let thinking = match (&request.thinking, &request.reasoning_effort) {
        (Some(thinking), _) => Some(thinking.clone()),
        (None, Some(effort)) => {
            let budget = match effort.as_str() {
                "minimal" | "low" => 1_024,
                "medium" => 4_096,
                _ => 16_384,
            };
            // The budget is part of `max_tokens`: keep the client's limit for the answer.
            if max_tokens <= budget {
                max_tokens += budget;
            }
            Some(json!({"type": "enabled", "budget_tokens": budget}))
        }
        (None, None) => None,
    };
    body.insert("max_tokens".into(), max_tokens.into());
    if !request.system.is_empty() {
        body.insert("system".into(), write_content(&request.system, "system")?);
    }
    body.insert("messages".into(), write_messages(&request.messages)?.into());
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request.tools.iter().map(write_tool).collect();
        body.insert("tools".into(), tools.into());
    }
    // A JSON answer is asked for as the one call of a tool whose input is that JSON.
    let json_schema = match &request.response_format {
        Some(ResponseFormat::JsonSchema { schema, .. }) => Some(schema.clone()),
        Some(ResponseFormat::JsonObject) => Some(json!({"type": "object"})),
        _ => None,
    };
    if let Some(schema) = json_schema {
        let tool = json!({"name": JSON_TOOL, "description": "Give the answer as this tool's input, in JSON.", "input_schema": schema});
        body.insert("tools".into(), json!([tool]));
        body.insert("tool_choice".into(), json!({"type": "tool", "name": JSON_TOOL}));
        return finish_request(request, body, thinking);
    }
    let mut choice = request.tool_choice.as_ref().map(|choice| match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    });
    if request.parallel_tool_calls == Some(false) && !request.tools.is_empty() {
        choice.get_or_insert_with(|| json!({"type": "auto"}))["disable_parallel_tool_use"] = true.into();
    }
    json::put(&mut body, "tool_choice", choice);
    finish_request(request, body, thinking)
}

/// The fields every request ends with.
fn finish_request(
    request: &ChatRequest,
    mut body: Map<String, Value>,
    thinking: Option<Value>,
) -> Result<Value, AiError> {
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), request.stop.clone().into());
    }
    json::put(&mut body, "temperature", request.temperature);
    json::put(&mut body, "top_p", request.top_p);
    json::put(&mut body, "top_k", request.top_k);
    if request.stream {
        body.insert("stream".into(), true.into());
    }
    json::put(&mut body, "thinking", thinking);
    if let Some(user) = &request.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(body))
}

/// Refuses what would change the shape or meaning of the answer if it were dropped.
fn refuse_what_anthropic_cannot_do(request: &ChatRequest) -> Result<(), AiError> {
    if request.choices.is_some_and(|n| n > 1) {
        return Err(AiError::invalid("n", "Anthropic models give one choice per request"));
    }
    if request.logprobs {
        return Err(AiError::invalid("logprobs", "Anthropic models do not return log probabilities"));
    }
    for (field, value) in
        [("presence_penalty", request.presence_penalty), ("frequency_penalty", request.frequency_penalty)]
    {
        if value.is_some_and(|v| v != 0.0) {
            return Err(AiError::invalid(field, "Anthropic models take no penalties"));
        }
    }
    if request.wants_json() && !request.tools.is_empty() {
        return Err(AiError::invalid(
            "response_format",
            "Anthropic models answer in JSON by calling a tool, so a JSON response format cannot be combined with tools",
        ));
    }
    if let Some(ResponseFormat::JsonSchema { schema, .. }) = &request.response_format {
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(AiError::invalid(
                "response_format.json_schema.schema",
                "Anthropic models can answer JSON objects only: the schema's type must be `object`",
            ));
        }
    }
    Ok(())
}

/// Messages with consecutive same-role messages merged, as Anthropic wants them.
fn write_messages(messages: &[Message]) -> Result<Vec<Value>, AiError> {
    let mut out: Vec<(Role, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let path = index("messages", i);
        let mut blocks = Vec::new();
        for (k, part) in message.parts.iter().enumerate() {
            if let Some(block) = write_block(part, &index(&at(&path, "content"), k))? {
                blocks.push(block);
            }
        }
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((role, previous)) if *role == message.role => previous.extend(blocks),
            _ => out.push((message.role, blocks)),
        }
    }
    Ok(out
        .into_iter()
        .map(|(role, mut content)| {
            let role = if role == Role::User { "user" } else { "assistant" };
            // One unmarked text is written as a plain string, as clients mostly send it.
            let plain = match &content[..] {
                [block] if block.as_object().is_some_and(|b| b.len() == 2) => block.get("text").cloned(),
                _ => None,
            };
            let content = plain.unwrap_or_else(|| std::mem::take(&mut content).into());
            json!({"role": role, "content": content})
        })
        .collect())
}

/// Content as a plain string when it is one unmarked text, else as blocks.
fn write_content(parts: &[Part], path: &str) -> Result<Value, AiError> {
    if let [Part::Text { text, cache_control: None }] = parts {
        return Ok(text.clone().into());
    }
    let mut blocks = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if let Some(block) = write_block(part, &index(path, i))? {
            blocks.push(block);
        }
    }
    Ok(blocks.into())
}

fn write_block(part: &Part, path: &str) -> Result<Option<Value>, AiError> {
    let (mut block, cache_control) = match part {
        Part::Text { text, cache_control } => (json!({"type": "text", "text": text}), cache_control),
        Part::Image { source, cache_control } => {
            let source = match source {
                ImageSource::Url(url) => json!({"type": "url", "url": url}),
                ImageSource::Base64 { media_type, data } => {
                    json!({"type": "base64", "media_type": media_type, "data": data})
                }
            };
            (json!({"type": "image", "source": source}), cache_control)
        }
        Part::ToolCall { id, name, arguments, cache_control } => {
            let input: Value = serde_json::from_str(arguments)
                .map_err(|_| AiError::invalid(path, format!("the arguments of tool call `{id}` are not JSON")))?;
            (json!({"type": "tool_use", "id": id, "name": name, "input": input}), cache_control)
        }
        Part::ToolResult { call_id, content, is_error, cache_control } => {
            let mut block = json!({"type": "tool_result", "tool_use_id": call_id,
                                   "content": write_content(content, &format!("{path}.content"))?});
            if *is_error {
                block["is_error"] = true.into();
            }
            (block, cache_control)
        }
        // Anthropic checks the signature of every thinking block it gets back; reasoning from
        // another provider has none and cannot be sent.
        Part::Thinking { signature: None, .. } => return Ok(None),
        Part::Thinking { text, signature: Some(signature) } => {
            (json!({"type": "thinking", "thinking": text, "signature": signature}), &None)
        }
        Part::RedactedThinking { data } => (json!({"type": "redacted_thinking", "data": data}), &None),
    };
    if let Some(marker) = cache_control {
        block["cache_control"] = marker.clone();
    }
    Ok(Some(block))
}

fn write_tool(tool: &Tool) -> Value {
    let mut written = json!({"name": tool.name, "input_schema": tool.parameters});
    let map = written.as_object_mut().expect("an object literal");
    json::put(map, "description", tool.description.clone());
    json::put(map, "cache_control", tool.cache_control.clone());
    written
}
