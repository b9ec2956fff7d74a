//! Anthropic message streams: named events (`message_start`, `content_block_start`,
//! `content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`, `ping`,
//! `error`), each carrying its `type` in its data too.

use super::response::{read_stop_reason, read_usage, write_stop_reason, write_usage};
use crate::chat::{fresh_id, ChatRequest, FinishReason, StreamEvent, Usage};
use crate::error::AiError;
use crate::sse::{write_event, SseEvent};
use serde_json::{json, Value};

/// What a content block of the stream being read holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    /// A tool call: its position among the answer's tool calls.
    Tool(usize),
    Other,
}

/// Reads an Anthropic-format provider's stream.
#[derive(Debug, Default)]
pub struct StreamReader {
    blocks: Vec<(u64, Block)>,
    tools: usize,
    usage: Usage,
}

impl StreamReader {
    pub(crate) fn read(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else { return };
        let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        // The data's `type` is the event's name; unknown types are ignored, as Anthropic's
        // versioning policy asks.
        match data.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                out.push(StreamEvent::Start { id: text(message, "id"), model: text(message, "model") });
                if let Some(usage) = message.get("usage") {
                    self.usage = read_usage(&crate::json::usage(usage), self.usage);
                    out.push(StreamEvent::Usage(self.usage));
                }
            }
            "content_block_start" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = data.get("content_block").unwrap_or(&Value::Null);
                let kind = match block.get("type").and_then(Value::as_str).unwrap_or_default() {
                    "text" => {
                        push_text(out, StreamEvent::Text, text(block, "text"));
                        Block::Other
                    }
                    "thinking" => {
                        push_text(out, StreamEvent::Thinking, text(block, "thinking"));
                        Block::Other
                    }
                    "redacted_thinking" => {
                        out.push(StreamEvent::RedactedThinking(text(block, "data")));
                        Block::Other
                    }
                    "tool_use" => {
                        let tool = self.tools;
                        self.tools += 1;
                        out.push(StreamEvent::ToolCall {
                            index: tool,
                            id: text(block, "id"),
                            name: text(block, "name"),
                        });
                        // Streams start tool input empty; a whole input would come here.
                        if let Some(input) = block.get("input").filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                        {
                            let fragment = serde_json::to_string(input).unwrap_or_default();
                            out.push(StreamEvent::ToolArguments { index: tool, fragment });
                        }
                        Block::Tool(tool)
                    }
                    _ => Block::Other,
                };
                self.blocks.push((index, kind));
            }
            "content_block_delta" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str).unwrap_or_default() {
                    "text_delta" => push_text(out, StreamEvent::Text, text(delta, "text")),
                    "thinking_delta" => push_text(out, StreamEvent::Thinking, text(delta, "thinking")),
                    "signature_delta" => out.push(StreamEvent::Signature(text(delta, "signature"))),
                    "input_json_delta" => {
                        let block = self.blocks.iter().rev().find(|(i, _)| *i == index).map(|(_, b)| *b);
                        let fragment = text(delta, "partial_json");
                        if let (Some(Block::Tool(tool)), false) = (block, fragment.is_empty()) {
                            out.push(StreamEvent::ToolArguments { index: tool, fragment });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                if let Some(reason) = delta.get("stop_reason").and_then(Value::as_str) {
                    let stop_sequence = delta.get("stop_sequence").and_then(Value::as_str).map(str::to_owned);
                    out.push(StreamEvent::Finish { reason: read_stop_reason(reason), stop_sequence });
                }
                if let Some(usage) = data.get("usage") {
                    self.usage = read_usage(&crate::json::usage(usage), self.usage);
                    out.push(StreamEvent::Usage(self.usage));
                }
            }
            "message_stop" => out.push(StreamEvent::End),
            "error" => out.push(StreamEvent::Error(AiError::from_value(&data, None))),
            _ => {}
        }
    }
}

fn push_text(out: &mut Vec<StreamEvent>, event: fn(String) -> StreamEvent, text: String) {
    if !text.is_empty() {
        out.push(event(text));
    }
}

/// The kind of the content block being written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text,
    Thinking,
    Tool(usize),
}

/// Writes a stream for an Anthropic-format client.
#[derive(Debug)]
pub struct StreamWriter {
    model: String,
    started: bool,
    /// The block being written and its index.
    open: Option<(u64, Open)>,
    next_block: u64,
    /// The block index of each tool call, by its position.
    tool_blocks: Vec<u64>,
    finish: Option<(FinishReason, Option<String>)>,
    usage: Usage,
}

impl StreamWriter {
    pub(crate) fn new(request: &ChatRequest) -> StreamWriter {
        StreamWriter {
            model: request.model.clone(),
            started: false,
            open: None,
            next_block: 0,
            tool_blocks: Vec::new(),
            finish: None,
            usage: Usage::default(),
        }
    }

    pub(crate) fn write(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        match event {
            StreamEvent::Start { id, model } => self.start(id, model, out),
            StreamEvent::Usage(usage) => self.usage = *usage,
            StreamEvent::Finish { reason, stop_sequence } => {
                self.finish = Some((reason.clone(), stop_sequence.clone()))
            }
            StreamEvent::Error(error) => {
                let body = serde_json::to_vec(&error.to_value(crate::Format::Anthropic)).unwrap_or_default();
                write_event(out, Some("error"), &body);
            }
            StreamEvent::Text(text) => {
                let index = self.block(Open::Text, json!({"type": "text", "text": ""}), out);
                self.delta(index, json!({"type": "text_delta", "text": text}), out);
            }
            StreamEvent::Thinking(text) => {
                let start = json!({"type": "thinking", "thinking": "", "signature": ""});
                let index = self.block(Open::Thinking, start, out);
                self.delta(index, json!({"type": "thinking_delta", "thinking": text}), out);
            }
            StreamEvent::Signature(signature) => {
                if let Some((index, Open::Thinking)) = self.open {
                    self.delta(index, json!({"type": "signature_delta", "signature": signature}), out);
                }
            }
            StreamEvent::RedactedThinking(data) => {
                self.ensure_started(out);
                self.close(out);
                let index = self.next_block;
                self.next_block += 1;
                let block = json!({"type": "redacted_thinking", "data": data});
                self.event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": block}),
                    out,
                );
                self.event("content_block_stop", json!({"type": "content_block_stop", "index": index}), out);
            }
            StreamEvent::ToolCall { index, id, name } => {
                self.ensure_started(out);
                self.close(out);
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let at = self.block(Open::Tool(*index), block, out);
                if self.tool_blocks.len() <= *index {
                    self.tool_blocks.resize(*index + 1, at);
                }
                self.tool_blocks[*index] = at;
            }
            StreamEvent::ToolArguments { index, fragment } => {
                if let Some(block) = self.tool_blocks.get(*index).copied() {
                    self.delta(block, json!({"type": "input_json_delta", "partial_json": fragment}), out);
                }
            }
            StreamEvent::End => {
                self.ensure_started(out);
                self.close(out);
                let (reason, stop_sequence) = self.finish.take().unwrap_or((FinishReason::Stop, None));
                let delta = json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": write_stop_reason(&reason), "stop_sequence": stop_sequence},
                    "usage": write_usage(&self.usage),
                });
                self.event("message_delta", delta, out);
                self.event("message_stop", json!({"type": "message_stop"}), out);
            }
        }
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if !model.is_empty() {
            self.model = model.to_owned();
        }
        let id = if id.is_empty() { fresh_id("msg_") } else { id.to_owned() };
        let message = json!({
            "id": id, "type": "message", "role": "assistant", "content": [], "model": self.model,
            "stop_reason": null, "stop_sequence": null, "usage": write_usage(&self.usage),
        });
        self.event("message_start", json!({"type": "message_start", "message": message}), out);
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.start("", "", out);
        }
    }

    /// The index of an open block of `kind`, opening one (and closing another) if needed.
    fn block(&mut self, kind: Open, start: Value, out: &mut Vec<u8>) -> u64 {
        self.ensure_started(out);
        if let Some((index, open)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, kind));
        self.event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
            out,
        );
        index
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            self.event("content_block_stop", json!({"type": "content_block_stop", "index": index}), out);
        }
    }

    fn delta(&self, index: u64, delta: Value, out: &mut Vec<u8>) {
        self.event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta}), out);
    }

    fn event(&self, name: &str, data: Value, out: &mut Vec<u8>) {
        write_event(out, Some(name), &serde_json::to_vec(&data).unwrap_or_default());
    }
}
