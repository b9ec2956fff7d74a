//! OpenAI chat completion streams: `data:` chunks ending with `data: [DONE]`.

use super::response::{read_finish, read_usage, reasoning_of, write_finish, write_usage};
use crate::chat::{fresh_id, ChatRequest, FinishReason, StreamEvent, Usage, JSON_TOOL};
use crate::error::AiError;
use crate::json;
use crate::sse::{write_event, SseEvent};
use serde_json::{json, Value};

/// Reads an OpenAI-format provider's stream.
#[derive(Debug, Default)]
pub struct StreamReader {
    started: bool,
    /// The tool calls begun so far, by their index in the stream.
    tool_calls: Vec<usize>,
}

impl StreamReader {
    pub(crate) fn read(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        let data = event.data.trim();
        if data == "[DONE]" {
            out.push(StreamEvent::End);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else { return };
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            out.push(StreamEvent::Error(AiError::from_value(&chunk, None)));
            return;
        }
        if !self.started {
            self.started = true;
            let id = chunk.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
            out.push(StreamEvent::Start {
                id: id.map_or_else(|| fresh_id("chatcmpl-"), str::to_owned),
                model: chunk.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
            });
        }
        // `choices` may be missing, null or empty (usage chunks, Azure's filter results).
        if let Some(choice) = json::present(&chunk["choices"][0]) {
            self.read_choice(choice, out);
        }
        // Usage can come on a chunk of its own or on the last one with a choice; Groq puts
        // it in `x_groq`.
        let usage = chunk.get("usage").filter(|u| u.is_object()).or_else(|| json::present(&chunk["x_groq"]["usage"]));
        if let Some(usage) = usage.filter(|u| u.is_object()) {
            out.push(StreamEvent::Usage(read_usage(&json::usage(usage))));
        }
    }

    fn read_choice(&mut self, choice: &Value, out: &mut Vec<StreamEvent>) {
        if let Some(delta) = choice.get("delta") {
            if let Some(reasoning) = reasoning_of(delta) {
                out.push(StreamEvent::Thinking(reasoning.to_owned()));
            }
            for key in ["content", "refusal"] {
                if let Some(text) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Text(text.to_owned()));
                }
            }
            for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                self.read_tool_call(call, out);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(StreamEvent::Finish { reason: read_finish(reason), stop_sequence: None });
        }
    }

    fn read_tool_call(&mut self, call: &Value, out: &mut Vec<StreamEvent>) {
        let stream_index = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        let function = call.get("function").unwrap_or(&Value::Null);
        let index = match self.tool_calls.iter().position(|i| *i == stream_index) {
            Some(index) => index,
            None => {
                self.tool_calls.push(stream_index);
                let id = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
                out.push(StreamEvent::ToolCall {
                    index: self.tool_calls.len() - 1,
                    id: id.map_or_else(|| fresh_id("call_"), str::to_owned),
                    name: function.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                });
                self.tool_calls.len() - 1
            }
        };
        if let Some(fragment) = function.get("arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
            out.push(StreamEvent::ToolArguments { index, fragment: fragment.to_owned() });
        }
    }
}

/// Writes a stream for an OpenAI-format client.
#[derive(Debug)]
pub struct StreamWriter {
    id: String,
    model: String,
    created: u64,
    started: bool,
    include_usage: bool,
    usage: Option<Usage>,
    /// The client asked for JSON: a call of the JSON tool is its answer's text.
    unwrap_json: bool,
    /// The index of the JSON tool's call, once it began.
    json_call: Option<usize>,
}

impl StreamWriter {
    pub(crate) fn new(request: &ChatRequest) -> StreamWriter {
        StreamWriter {
            id: String::new(),
            model: request.model.clone(),
            created: super::response::created_now(),
            started: false,
            include_usage: request.include_usage,
            usage: None,
            unwrap_json: request.wants_json(),
            json_call: None,
        }
    }

    pub(crate) fn write(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if let StreamEvent::Start { id, model } = event {
            self.id.clone_from(id);
            if !model.is_empty() {
                self.model.clone_from(model);
            }
        }
        let needs_start = !matches!(event, StreamEvent::Usage(_) | StreamEvent::Error(_));
        if !self.started && needs_start {
            self.started = true;
            if self.id.is_empty() {
                self.id = fresh_id("chatcmpl-");
            }
            self.chunk(json!({"role": "assistant", "content": ""}), None, out);
        }
        match event {
            StreamEvent::ToolCall { index, name, .. } if self.unwrap_json && name == JSON_TOOL => {
                self.json_call = Some(*index);
            }
            StreamEvent::ToolArguments { index, fragment } if self.json_call == Some(*index) => {
                self.chunk(json!({"content": fragment}), None, out)
            }
            StreamEvent::Finish { reason: FinishReason::ToolCalls, .. } if self.json_call.is_some() => {
                self.chunk(json!({}), Some("stop"), out)
            }
            StreamEvent::Start { .. } | StreamEvent::Signature(_) | StreamEvent::RedactedThinking(_) => {}
            StreamEvent::Text(text) => self.chunk(json!({"content": text}), None, out),
            StreamEvent::Thinking(text) => self.chunk(json!({"reasoning_content": text}), None, out),
            StreamEvent::ToolCall { index, id, name } => self.chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                        "function": {"name": name, "arguments": ""}}]}),
                None,
                out,
            ),
            StreamEvent::ToolArguments { index, fragment } => {
                self.chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}), None, out)
            }
            StreamEvent::Finish { reason, .. } => self.chunk(json!({}), Some(write_finish(reason)), out),
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Error(error) => {
                let body = serde_json::to_vec(&error.to_value(crate::Format::OpenAi)).unwrap_or_default();
                write_event(out, None, &body);
            }
            StreamEvent::End => {
                if self.include_usage {
                    let usage = write_usage(&self.usage.unwrap_or_default());
                    let chunk = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                       "model": self.model, "choices": [], "usage": usage});
                    write_event(out, None, &serde_json::to_vec(&chunk).unwrap_or_default());
                }
                write_event(out, None, b"[DONE]");
            }
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        write_event(out, None, &serde_json::to_vec(&chunk).unwrap_or_default());
    }
}
