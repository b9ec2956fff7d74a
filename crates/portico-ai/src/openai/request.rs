//! OpenAI chat completion requests (`POST /v1/chat/completions`), read and written.

use crate::chat::{ChatRequest, ImageSource, Message, Part, ResponseFormat, Role, Tool, ToolChoice};
use crate::error::AiError;
use crate::json::{self, at, index};
use serde_json::{json, Map, Value};

/// Fields this module reads; everything else goes to `ChatRequest::extra`.
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_completion_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stream",
    "stream_options",
    "response_format",
    "reasoning_effort",
    "thinking",
    "user",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "logprobs",
];

pub(crate) fn parse_request(body: &Value) -> Result<ChatRequest, AiError> {
    let map = json::object(body, "")?;
    let mut request = ChatRequest { model: json::required_string(map, "model", "")?, ..ChatRequest::default() };
    let messages = json::array(map.get("messages").unwrap_or(&Value::Null), "messages")?;
    if messages.is_empty() {
        return Err(AiError::invalid("messages", "at least one message is required"));
    }
    for (i, message) in messages.iter().enumerate() {
        read_message(message, &index("messages", i), &mut request)?;
    }
    if let Some(tools) = map.get("tools").filter(|v| !v.is_null()) {
        for (i, tool) in json::array(tools, "tools")?.iter().enumerate() {
            request.tools.push(read_tool(tool, &index("tools", i))?);
        }
    }
    request.tool_choice = match map.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(choice)) => Some(match choice.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(AiError::invalid("tool_choice", format!("unknown tool choice `{other}`"))),
        }),
        Some(choice) => {
            let name = json::present(&choice["function"]["name"]).and_then(Value::as_str);
            let name = name.ok_or_else(|| AiError::invalid("tool_choice.function.name", "is required"))?;
            Some(ToolChoice::Tool(name.to_owned()))
        }
    };
    request.parallel_tool_calls = json::boolean(map, "parallel_tool_calls", "")?;
    request.max_tokens = match json::count(map, "max_completion_tokens", "")? {
        Some(max) => Some(max),
        None => json::count(map, "max_tokens", "")?,
    };
    request.temperature = json::number(map, "temperature", "")?;
    request.top_p = json::number(map, "top_p", "")?;
    request.top_k = json::count(map, "top_k", "")?;
    request.stop = json::strings(map, "stop", "")?;
    request.stream = json::boolean(map, "stream", "")?.unwrap_or(false);
    if let Some(options) = map.get("stream_options").filter(|v| !v.is_null()) {
        let options = json::object(options, "stream_options")?;
        request.include_usage = json::boolean(options, "include_usage", "stream_options")?.unwrap_or(false);
    }
    request.response_format = read_response_format(map.get("response_format"))?;
    request.reasoning_effort = json::string(map, "reasoning_effort", "")?;
    request.thinking = map.get("thinking").filter(|v| !v.is_null()).cloned();
    request.user = json::string(map, "user", "")?;
    request.seed = json::integer(map, "seed", "")?;
    request.presence_penalty = json::number(map, "presence_penalty", "")?;
    request.frequency_penalty = json::number(map, "frequency_penalty", "")?;
    request.choices = json::count(map, "n", "")?;
    request.logprobs = json::boolean(map, "logprobs", "")?.unwrap_or(false);
    request.extra =
        map.iter().filter(|(k, _)| !KNOWN.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(request)
}

fn read_message(message: &Value, path: &str, request: &mut ChatRequest) -> Result<(), AiError> {
    let map = json::object(message, path)?;
    let role = json::required_string(map, "role", path)?;
    let content = map.get("content").filter(|v| !v.is_null());
    let content_path = at(path, "content");
    match role.as_str() {
        "system" | "developer" => {
            let content = content.ok_or_else(|| AiError::invalid(&content_path, "is required"))?;
            request.system.extend(read_content(content, &content_path)?);
        }
        "user" => {
            let content = content.ok_or_else(|| AiError::invalid(&content_path, "is required"))?;
            request.messages.push(Message { role: Role::User, parts: read_content(content, &content_path)? });
        }
        "assistant" => {
            let mut parts = Vec::new();
            if let Some(reasoning) = json::string(map, "reasoning_content", path)? {
                parts.push(Part::Thinking { text: reasoning, signature: None });
            }
            if let Some(content) = content {
                parts.extend(read_content(content, &content_path)?);
            }
            if let Some(calls) = map.get("tool_calls").filter(|v| !v.is_null()) {
                let calls_path = at(path, "tool_calls");
                for (i, call) in json::array(calls, &calls_path)?.iter().enumerate() {
                    parts.push(read_tool_call(call, &index(&calls_path, i))?);
                }
            }
            request.messages.push(Message { role: Role::Assistant, parts });
        }
        "tool" => {
            let call_id = json::required_string(map, "tool_call_id", path)?;
            let content = match content {
                Some(content) => read_content(content, &content_path)?,
                None => Vec::new(),
            };
            let result = Part::ToolResult { call_id, content, is_error: false, cache_control: None };
            request.messages.push(Message { role: Role::User, parts: vec![result] });
        }
        other => return Err(AiError::invalid(at(path, "role"), format!("unknown role `{other}`"))),
    }
    Ok(())
}

/// Message content: a string, or a list of parts.
fn read_content(content: &Value, path: &str) -> Result<Vec<Part>, AiError> {
    match content {
        Value::String(text) => Ok(vec![Part::Text { text: text.clone(), cache_control: None }]),
        Value::Array(parts) => parts.iter().enumerate().map(|(i, part)| read_part(part, &index(path, i))).collect(),
        _ => Err(AiError::invalid(path, "expected a string or a list of content parts")),
    }
}

fn read_part(part: &Value, path: &str) -> Result<Part, AiError> {
    let map = json::object(part, path)?;
    let cache_control = map.get("cache_control").filter(|v| !v.is_null()).cloned();
    match json::required_string(map, "type", path)?.as_str() {
        "text" => Ok(Part::Text { text: json::required_string(map, "text", path)?, cache_control }),
        // An assistant's refusal, sent back as history, is what it said.
        "refusal" => Ok(Part::Text { text: json::required_string(map, "refusal", path)?, cache_control }),
        "image_url" => {
            let image_path = at(path, "image_url");
            let url = match map.get("image_url") {
                Some(Value::String(url)) => url.clone(),
                Some(image) => json::required_string(json::object(image, &image_path)?, "url", &image_path)?,
                None => return Err(AiError::invalid(image_path, "is required")),
            };
            Ok(Part::Image { source: image_source(url), cache_control })
        }
        other => Err(AiError::invalid(
            at(path, "type"),
            format!("`{other}` parts can only be sent to OpenAI-format providers"),
        )),
    }
}

/// A `data:` URL becomes inline base64 data; any other URL stays a URL.
fn image_source(url: String) -> ImageSource {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media_type, data)) = rest.split_once(";base64,") {
            return ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
        }
    }
    ImageSource::Url(url)
}

fn read_tool_call(call: &Value, path: &str) -> Result<Part, AiError> {
    let map = json::object(call, path)?;
    let function_path = at(path, "function");
    let function = json::object(map.get("function").unwrap_or(&Value::Null), &function_path)?;
    Ok(Part::ToolCall {
        id: json::required_string(map, "id", path)?,
        name: json::required_string(function, "name", &function_path)?,
        arguments: json::string(function, "arguments", &function_path)?.unwrap_or_else(|| "{}".to_owned()),
        cache_control: None,
    })
}

fn read_tool(tool: &Value, path: &str) -> Result<Tool, AiError> {
    let map = json::object(tool, path)?;
    let kind = json::string(map, "type", path)?.unwrap_or_else(|| "function".to_owned());
    if kind != "function" {
        return Err(AiError::invalid(
            at(path, "type"),
            format!("`{kind}` tools can only be sent to OpenAI-format providers"),
        ));
    }
    let function_path = at(path, "function");
    let function = json::object(map.get("function").unwrap_or(&Value::Null), &function_path)?;
    Ok(Tool {
        name: json::required_string(function, "name", &function_path)?,
        description: json::string(function, "description", &function_path)?,
        parameters: function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        strict: json::boolean(function, "strict", &function_path)?,
        cache_control: map.get("cache_control").filter(|v| !v.is_null()).cloned(),
    })
}

fn read_response_format(format: Option<&Value>) -> Result<Option<ResponseFormat>, AiError> {
    let Some(format) = format.filter(|v| !v.is_null()) else { return Ok(None) };
    let map = json::object(format, "response_format")?;
    Ok(Some(match json::required_string(map, "type", "response_format")?.as_str() {
        "text" => ResponseFormat::Text,
        "json_object" => ResponseFormat::JsonObject,
        "json_schema" => {
            let path = "response_format.json_schema";
            let schema = json::object(map.get("json_schema").unwrap_or(&Value::Null), path)?;
            ResponseFormat::JsonSchema {
                name: json::string(schema, "name", path)?.unwrap_or_else(|| "response".to_owned()),
                schema: schema.get("schema").cloned().unwrap_or_else(|| json!({})),
                strict: json::boolean(schema, "strict", path)?,
            }
        }
        other => return Err(AiError::invalid("response_format.type", format!("unknown response format `{other}`"))),
    }))
}

/// How an OpenAI-format provider wants a few fields written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flavour {
    /// OpenAI itself wants `max_completion_tokens` (its reasoning models refuse
    /// `max_tokens`); most compatible servers know only `max_tokens`.
    pub max_completion_tokens: bool,
    /// Mistral names the seed `random_seed` and "some tool" `any`.
    pub mistral: bool,
}

pub(crate) fn write_request(request: &ChatRequest, model: &str, flavour: Flavour) -> Result<Value, AiError> {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": write_content(&request.system, "system")?}));
    }
    for (i, message) in request.messages.iter().enumerate() {
        write_message(message, &index("messages", i), flavour, &mut messages)?;
    }
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("messages".into(), messages.into());
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request.tools.iter().map(write_tool).collect();
        body.insert("tools".into(), tools.into());
    }
    if let Some(choice) = &request.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required if flavour.mistral => json!("any"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), choice);
    }
    json::put(&mut body, "parallel_tool_calls", request.parallel_tool_calls);
    let max_field = if flavour.max_completion_tokens { "max_completion_tokens" } else { "max_tokens" };
    json::put(&mut body, max_field, request.max_tokens);
    json::put(&mut body, "temperature", request.temperature);
    json::put(&mut body, "top_p", request.top_p);
    if !request.stop.is_empty() {
        body.insert("stop".into(), request.stop.clone().into());
    }
    if request.stream {
        body.insert("stream".into(), true.into());
        // Usage is always asked for: Portico counts tokens even when the client does not.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(format) = &request.response_format {
        let format = match format {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema { name, schema, strict } => {
                let mut spec = json!({"name": name, "schema": schema});
                json::put(spec.as_object_mut().expect("an object literal"), "strict", *strict);
                json!({"type": "json_schema", "json_schema": spec})
            }
        };
        body.insert("response_format".into(), format);
    }
    // Anthropic's thinking budget has no OpenAI equivalent but an effort level.
    let effort = request.reasoning_effort.clone().or_else(|| request.thinking.as_ref().and_then(effort_for_thinking));
    json::put(&mut body, "reasoning_effort", effort);
    json::put(&mut body, "user", request.user.clone());
    json::put(&mut body, if flavour.mistral { "random_seed" } else { "seed" }, request.seed);
    json::put(&mut body, "presence_penalty", request.presence_penalty);
    json::put(&mut body, "frequency_penalty", request.frequency_penalty);
    json::put(&mut body, "n", request.choices);
    if request.logprobs {
        body.insert("logprobs".into(), true.into());
    }
    Ok(Value::Object(body))
}

/// The effort level closest to an Anthropic thinking budget.
fn effort_for_thinking(thinking: &Value) -> Option<String> {
    if thinking.get("type").and_then(Value::as_str) != Some("enabled") {
        return None;
    }
    let budget = thinking.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
    Some(
        match budget {
            0..=2_048 => "low",
            2_049..=8_192 => "medium",
            _ => "high",
        }
        .to_owned(),
    )
}

fn write_message(message: &Message, path: &str, flavour: Flavour, out: &mut Vec<Value>) -> Result<(), AiError> {
    let id = |id: &str| if flavour.mistral { mistral_id(id) } else { id.to_owned() };
    match message.role {
        Role::User => {
            // Tool results are `tool` messages of their own, right after the assistant's calls.
            let (results, rest): (Vec<&Part>, Vec<&Part>) =
                message.parts.iter().partition(|p| matches!(p, Part::ToolResult { .. }));
            for result in results {
                if let Part::ToolResult { call_id, content, .. } = result {
                    out.push(json!({"role": "tool", "tool_call_id": id(call_id), "content": text_of(content, path)?}));
                }
            }
            if !rest.is_empty() {
                let rest: Vec<Part> = rest.into_iter().cloned().collect();
                out.push(json!({"role": "user", "content": write_content(&rest, path)?}));
            }
        }
        Role::Assistant => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for part in &message.parts {
                match part {
                    Part::Text { text: piece, .. } => text.push_str(piece),
                    Part::ToolCall { id: call_id, name, arguments, .. } => calls.push(json!({
                        "id": id(call_id), "type": "function", "function": {"name": name, "arguments": arguments}
                    })),
                    // Chat completions take no reasoning back.
                    Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
                    Part::Image { .. } | Part::ToolResult { .. } => {
                        return Err(AiError::invalid(path, "an assistant message can hold only text and tool calls"))
                    }
                }
            }
            let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }});
            if !calls.is_empty() {
                message["tool_calls"] = calls.into();
            }
            out.push(message);
        }
    }
    Ok(())
}

/// Mistral takes only tool call ids of 9 letters and digits. Others (`call_…`, `toolu_…`)
/// are mapped to one, always the same for the same id, so that a call and its result still
/// match, whichever Portico node sends the conversation.
pub(crate) fn mistral_id(id: &str) -> String {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_owned();
    }
    // FNV-1a: stable across processes and versions, unlike the standard library's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..9)
        .map(|_| {
            let digit = DIGITS[(hash % 62) as usize] as char;
            hash /= 62;
            digit
        })
        .collect()
}

/// Content as a plain string when it is one unmarked text, else as parts.
fn write_content(parts: &[Part], path: &str) -> Result<Value, AiError> {
    if let [Part::Text { text, cache_control: None }] = parts {
        return Ok(text.clone().into());
    }
    let mut out = Vec::new();
    for part in parts {
        let mut written = match part {
            Part::Text { text, .. } => json!({"type": "text", "text": text}),
            Part::Image { source, .. } => {
                let url = match source {
                    ImageSource::Url(url) => url.clone(),
                    ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
                };
                json!({"type": "image_url", "image_url": {"url": url}})
            }
            // Reasoning given back as history is not part of the content.
            Part::Thinking { .. } | Part::RedactedThinking { .. } => continue,
            Part::ToolCall { .. } | Part::ToolResult { .. } => {
                return Err(AiError::invalid(path, "tool calls and results cannot be mixed into message content"))
            }
        };
        if let Part::Text { cache_control: Some(marker), .. } | Part::Image { cache_control: Some(marker), .. } = part {
            written["cache_control"] = marker.clone();
        }
        out.push(written);
    }
    Ok(out.into())
}

/// A tool result's content as the string an OpenAI `tool` message carries.
fn text_of(content: &[Part], path: &str) -> Result<String, AiError> {
    let mut text = String::new();
    for part in content {
        match part {
            Part::Text { text: piece, .. } => text.push_str(piece),
            _ => return Err(AiError::invalid(path, "OpenAI-format tool results can only carry text")),
        }
    }
    Ok(text)
}

fn write_tool(tool: &Tool) -> Value {
    let mut function = json!({"name": tool.name, "parameters": tool.parameters});
    let map = function.as_object_mut().expect("an object literal");
    json::put(map, "description", tool.description.clone());
    json::put(map, "strict", tool.strict);
    json!({"type": "function", "function": function})
}
