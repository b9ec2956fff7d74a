//! Gemini streams (`?alt=sse`): every event is a whole `GenerateContentResponse` chunk, and the
//! stream ends without a closing event: the end of the body is the end of the answer.

use super::response::{read_finish, read_part, read_usage};
use crate::chat::{fresh_id, FinishReason, Part, StreamEvent};
use crate::error::AiError;
use crate::json;
use crate::sse::SseEvent;
use serde_json::Value;

#[derive(Debug, Default)]
pub struct StreamReader {
    started: bool,
    calls: usize,
    finished: bool,
}

impl StreamReader {
    pub(crate) fn read(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else { return };
        if chunk.get("error").is_some() {
            out.push(StreamEvent::Error(AiError::from_value(&chunk, None)));
            return;
        }
        if !self.started {
            self.started = true;
            let id = chunk.get("responseId").and_then(Value::as_str).map_or_else(|| fresh_id("gen-"), str::to_owned);
            let model = chunk.get("modelVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
            out.push(StreamEvent::Start { id, model });
        }
        let candidate = json::present(&chunk["candidates"][0]);
        for part in candidate
            .and_then(|c| json::present(&c["content"]["parts"]))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = self.calls;
            match read_part(part, &mut self.calls) {
                Some(Part::Text { text, .. }) if !text.is_empty() => out.push(StreamEvent::Text(text)),
                Some(Part::Thinking { text, .. }) if !text.is_empty() => out.push(StreamEvent::Thinking(text)),
                // Calls arrive whole: one start, one piece of arguments.
                Some(Part::ToolCall { id, name, arguments, .. }) => {
                    out.push(StreamEvent::ToolCall { index, id, name });
                    out.push(StreamEvent::ToolArguments { index, fragment: arguments });
                }
                _ => {}
            }
        }
        if let Some(reason) = candidate.and_then(|c| c.get("finishReason")).and_then(Value::as_str) {
            self.finished = true;
            let reason = if self.calls > 0 { FinishReason::ToolCalls } else { read_finish(reason) };
            out.push(StreamEvent::Finish { reason, stop_sequence: None });
        }
        if let Some(usage) = chunk.get("usageMetadata") {
            out.push(StreamEvent::Usage(read_usage(&json::usage(usage))));
        }
    }

    /// The body ended: that completes an answer that said why it finished.
    pub(crate) fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.finished {
            out.push(StreamEvent::End);
        }
    }
}
