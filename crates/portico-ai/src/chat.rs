//! The format-neutral form of chat requests, responses and stream events.
//!
//! It holds the union of what the supported formats can say, so that a translation keeps
//! everything the target format can carry: thinking blocks keep their signatures byte for
//! byte, `cache_control` markers stay on the blocks they were put on, tool calls keep their
//! ids. What a target format cannot carry is refused with an error naming the field, never
//! silently dropped, unless dropping it cannot change the answer.

use crate::error::AiError;
use serde_json::{Map, Value};

/// A chat request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The model the client asked for (an alias Portico resolves).
    pub model: String,
    /// System instructions: text parts, each perhaps with a `cache_control` marker.
    pub system: Vec<Part>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `false` asks for at most one tool call per turn.
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// The client wants token usage at the end of the stream (OpenAI's
    /// `stream_options.include_usage`; Anthropic streams always carry it).
    pub include_usage: bool,
    pub response_format: Option<ResponseFormat>,
    /// Anthropic's `thinking` settings, as sent.
    pub thinking: Option<Value>,
    /// OpenAI's `reasoning_effort`.
    pub reasoning_effort: Option<String>,
    /// An id of the end user, for the provider's abuse monitoring.
    pub user: Option<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// How many choices the client wants (OpenAI's `n`).
    pub choices: Option<u64>,
    /// Whether the client asked for log probabilities.
    pub logprobs: bool,
    /// Other fields of the client's format, sent on only to a provider of the same format.
    pub extra: Map<String, Value>,
}

/// Who said a message. Tool results travel in user messages, as Anthropic has them; the
/// OpenAI format writes them as `tool` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text {
        text: String,
        cache_control: Option<Value>,
    },
    Image {
        source: ImageSource,
        cache_control: Option<Value>,
    },
    /// A call the model made; `arguments` is JSON text, as OpenAI carries it.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
        cache_control: Option<Value>,
    },
    /// What a tool answered, in a user message.
    ToolResult {
        call_id: String,
        content: Vec<Part>,
        is_error: bool,
        cache_control: Option<Value>,
    },
    /// The model's reasoning, with the signature the provider needs to see it again.
    Thinking {
        text: String,
        signature: Option<String>,
    },
    /// Reasoning the provider encrypted; it must go back unchanged.
    RedactedThinking {
        data: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    Url(String),
    Base64 { media_type: String, data: String },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    pub strict: Option<bool>,
    pub cache_control: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Some tool must be called.
    Required,
    /// This tool must be called.
    Tool(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { name: String, schema: Value, strict: Option<bool> },
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    /// Seconds since the epoch (OpenAI's `created`).
    pub created: u64,
    /// Text, tool calls and thinking, in the order the model produced them.
    pub parts: Vec<Part>,
    pub finish: FinishReason,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

/// The tool a provider without JSON response formats (Anthropic) is made to call when the
/// client asked for JSON: its arguments are the answer.
pub(crate) const JSON_TOOL: &str = "json_response";

impl ChatRequest {
    /// Whether the client asked for a JSON answer (`json_object` or `json_schema`).
    pub fn wants_json(&self) -> bool {
        matches!(self.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }))
    }
}

impl ChatResponse {
    /// The bytes of what the model wrote (text, reasoning, tool arguments), the base of
    /// a usage estimate.
    pub fn written_bytes(&self) -> usize {
        self.parts.iter().map(Part::written_bytes).sum()
    }

    /// Turns the call of the JSON tool (see `wants_json`) back into the text answer the
    /// client asked for.
    pub fn unwrap_json_tool(&mut self) {
        let mut unwrapped = false;
        for part in &mut self.parts {
            if let Part::ToolCall { name, arguments, .. } = part {
                if name == JSON_TOOL {
                    *part = Part::Text { text: std::mem::take(arguments), cache_control: None };
                    unwrapped = true;
                }
            }
        }
        if unwrapped && self.finish == FinishReason::ToolCalls {
            self.finish = FinishReason::Stop;
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// A natural end (`stop`, `end_turn`).
    Stop,
    /// One of the request's stop sequences.
    StopSequence,
    /// The token limit (`length`, `max_tokens`).
    Length,
    /// The model wants tool results (`tool_calls`, `tool_use`).
    ToolCalls,
    /// The provider's filter stopped it (`content_filter`).
    ContentFilter,
    /// The model refused (`refusal`).
    Refusal,
    /// A long turn paused, to be continued (`pause_turn`).
    PauseTurn,
    /// A reason this version does not know, as the provider wrote it.
    Other(String),
}

/// Token counts, with OpenAI's meaning: `prompt_tokens` counts every input token, cached
/// or not, and `completion_tokens` counts reasoning tokens too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    /// Input tokens read from the provider's prompt cache (part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// Input tokens written to the provider's prompt cache (part of `prompt_tokens`).
    pub cache_write_tokens: u64,
    pub completion_tokens: u64,
    /// Reasoning tokens (part of `completion_tokens`).
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Whether no tokens were counted: the provider reported none.
    pub fn is_empty(&self) -> bool {
        self.total_tokens() == 0
    }

    /// Input tokens neither read from nor written to a prompt cache.
    pub fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_sub(self.cached_tokens + self.cache_write_tokens)
    }

    /// A guess, for a provider that reports no usage, from the bytes of the request and
    /// of the answer's text: about four bytes a token, the usual rate for English text
    /// and JSON with the tokenizers of common models.
    pub fn estimate(request_bytes: usize, answer_bytes: usize) -> Usage {
        Usage {
            prompt_tokens: request_bytes.div_ceil(4) as u64,
            completion_tokens: answer_bytes.div_ceil(4) as u64,
            ..Usage::default()
        }
    }
}

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The answer begins.
    Start {
        id: String,
        model: String,
    },
    Text(String),
    Thinking(String),
    /// The signature of the thinking just streamed.
    Signature(String),
    RedactedThinking(String),
    /// A tool call begins; `index` is its position among the answer's tool calls.
    ToolCall {
        index: usize,
        id: String,
        name: String,
    },
    /// A piece of a tool call's JSON arguments.
    ToolArguments {
        index: usize,
        fragment: String,
    },
    Finish {
        reason: FinishReason,
        stop_sequence: Option<String>,
    },
    /// Token counts so far; a later one replaces an earlier one.
    Usage(Usage),
    /// The provider failed in the middle of the stream.
    Error(AiError),
    /// The stream is complete.
    End,
}

impl Part {
    fn written_bytes(&self) -> usize {
        match self {
            Part::Text { text, .. } | Part::Thinking { text, .. } => text.len(),
            Part::ToolCall { name, arguments, .. } => name.len() + arguments.len(),
            Part::ToolResult { .. } | Part::Image { .. } | Part::RedactedThinking { .. } => 0,
        }
    }
}

impl StreamEvent {
    /// The bytes of what the model wrote that this event carries, the base of a usage
    /// estimate.
    pub fn written_bytes(&self) -> usize {
        match self {
            StreamEvent::Text(text) | StreamEvent::Thinking(text) => text.len(),
            StreamEvent::ToolCall { name, .. } => name.len(),
            StreamEvent::ToolArguments { fragment, .. } => fragment.len(),
            _ => 0,
        }
    }
}

/// The id Portico gives an answer whose provider gave none.
pub(crate) fn fresh_id(prefix: &str) -> String {
    format!("{prefix}{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}
