//! Portico's AI wire formats and the translation between them.
//!
//! Clients speak one [`Format`] (the *ingress*: OpenAI chat completions or Anthropic
//! messages) and providers another ([`Dialect`]: those two and Google Gemini, each with its
//! habits). A request in the client's format is read into [`ChatRequest`], the
//! format-neutral form that carries everything either side can express (thinking blocks
//! with their signatures, `cache_control` markers, tool calls), and written in the
//! provider's format. Responses come back the same way; streams go event by event through
//! [`StreamEvent`], each translated as it arrives and never held back.
//!
//! When client and provider speak the same format, the gateway passes bodies through
//! (only the model name changes) and uses this crate to read usage from them.
//!
//! Nothing here does I/O: the gateway owns connections, keys and timing.

mod anthropic;
mod chat;
mod error;
mod fields;
mod gemini;
mod json;
mod openai;
mod scan;
mod sse;
#[cfg(test)]
mod tests;

pub use chat::{
    ChatRequest, ChatResponse, FinishReason, ImageSource, Message, Part, ResponseFormat, Role, StreamEvent, Tool,
    ToolChoice, Usage,
};
pub use error::{AiError, ErrorKind};
pub use fields::Fields;
pub use json::parse_body;
pub use sse::{write_event, SseEvent, SseParser};

use openai::Flavour;

/// A client's wire format: how it writes chat requests and reads answers, streams and
/// errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenAI chat completions.
    OpenAi,
    /// Anthropic messages.
    Anthropic,
}

impl Format {
    /// Reads a request body in this format (a JSON object, parsed once by the caller, who
    /// also needs its `model` and `stream`).
    pub fn parse_request(self, body: &serde_json::Value) -> Result<ChatRequest, AiError> {
        match self {
            Format::OpenAi => openai::parse_request(body),
            Format::Anthropic => anthropic::parse_request(body),
        }
    }

    /// Writes a response in this format.
    pub fn write_response(self, response: &ChatResponse) -> Vec<u8> {
        match self {
            Format::OpenAi => openai::write_response(response),
            Format::Anthropic => anthropic::write_response(response),
        }
    }

    /// Writes `error` the way a client of this format expects it.
    pub fn write_error(self, error: &AiError) -> Vec<u8> {
        error.to_body(self)
    }

    /// An error event of this format's streams, for an error in the middle of one.
    pub fn stream_error(self, error: &AiError) -> Vec<u8> {
        let mut out = Vec::new();
        let data = serde_json::to_vec(&error.to_value(self)).unwrap_or_default();
        let name = (self == Format::Anthropic).then_some("error");
        sse::write_event(&mut out, name, &data);
        out
    }

    /// A writer of this format's stream events, for a client that asked for `request`.
    pub fn stream_writer(self, request: &ChatRequest) -> StreamWriter {
        match self {
            Format::OpenAi => StreamWriter::OpenAi(openai::StreamWriter::new(request)),
            Format::Anthropic => StreamWriter::Anthropic(anthropic::StreamWriter::new(request)),
        }
    }
}

/// How one kind of provider speaks: its format and its local habits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenAI: `max_completion_tokens` (its reasoning models refuse `max_tokens`).
    OpenAi,
    /// Mistral: `random_seed`, `tool_choice: "any"`, tool call ids of 9 letters and digits.
    Mistral,
    /// Azure OpenAI, Ollama, vLLM and other OpenAI-compatible servers: `max_tokens`.
    OpenAiCompatible,
    Anthropic,
    /// Google Gemini's `generateContent`.
    Gemini,
}

impl Dialect {
    /// Whether a client of `format` can be passed through to this provider unchanged but
    /// for the model's name: the formats agree and the provider has no habits to respect.
    pub fn passes_through(self, format: Format) -> bool {
        matches!(
            (self, format),
            (Dialect::OpenAi | Dialect::OpenAiCompatible, Format::OpenAi) | (Dialect::Anthropic, Format::Anthropic)
        )
    }

    /// Writes `request` for this kind of provider, asking for `model`.
    pub fn write_request(self, request: &ChatRequest, model: &str) -> Result<Vec<u8>, AiError> {
        let openai = |max_completion_tokens, mistral| {
            openai::write_request(request, model, Flavour { max_completion_tokens, mistral })
        };
        let body = match self {
            Dialect::OpenAi => openai(true, false),
            Dialect::Mistral => openai(false, true),
            Dialect::OpenAiCompatible => openai(false, false),
            Dialect::Anthropic => anthropic::write_request(request, model),
            Dialect::Gemini => gemini::write_request(request, model),
        }?;
        Ok(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Reads a (non-streamed) answer.
    pub fn parse_response(self, body: &[u8]) -> Result<ChatResponse, AiError> {
        match self {
            Dialect::OpenAi | Dialect::Mistral | Dialect::OpenAiCompatible => openai::parse_response(body),
            Dialect::Anthropic => anthropic::parse_response(body),
            Dialect::Gemini => gemini::parse_response(body),
        }
    }

    /// The usage a whole answer (chat or embeddings) reports, read from its top level
    /// only; `None` when it reports none.
    pub fn read_usage(self, body: &[u8]) -> Option<Usage> {
        let key = if self == Dialect::Gemini { "usageMetadata" } else { "usage" };
        let text = scan::field(body, key)?;
        let usage = match self {
            Dialect::OpenAi | Dialect::Mistral | Dialect::OpenAiCompatible => {
                openai::read_usage(&serde_json::from_slice(text).ok()?)
            }
            Dialect::Anthropic => anthropic::read_usage(&serde_json::from_slice(text).ok()?, Usage::default()),
            Dialect::Gemini => gemini::read_usage(&serde_json::from_slice(text).ok()?),
        };
        (!usage.is_empty()).then_some(usage)
    }

    /// Reads an error body the provider sent with `status`.
    pub fn parse_error(self, status: u16, body: &[u8]) -> AiError {
        error::parse(status, body)
    }

    /// A reader of the provider's stream events.
    pub fn stream_reader(self) -> StreamReader {
        match self {
            Dialect::OpenAi | Dialect::Mistral | Dialect::OpenAiCompatible => {
                StreamReader::OpenAi(openai::StreamReader::default())
            }
            Dialect::Anthropic => StreamReader::Anthropic(anthropic::StreamReader::default()),
            Dialect::Gemini => StreamReader::Gemini(gemini::StreamReader::default()),
        }
    }
}

/// Turns a provider's stream events into [`StreamEvent`]s.
pub enum StreamReader {
    OpenAi(openai::StreamReader),
    Anthropic(anthropic::StreamReader),
    Gemini(gemini::StreamReader),
}

impl StreamReader {
    /// The events one upstream SSE event stands for, appended to `out`.
    pub fn read(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        match self {
            StreamReader::OpenAi(reader) => reader.read(event, out),
            StreamReader::Anthropic(reader) => reader.read(event, out),
            StreamReader::Gemini(reader) => reader.read(event, out),
        }
    }

    /// The stream's body ended; formats without a closing event end here.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if let StreamReader::Gemini(reader) = self {
            reader.finish(out);
        }
    }
}

/// Writes [`StreamEvent`]s as a client's SSE stream.
pub enum StreamWriter {
    OpenAi(openai::StreamWriter),
    Anthropic(anthropic::StreamWriter),
}

impl StreamWriter {
    /// Appends the SSE bytes for `event` to `out` (perhaps none: some events only update
    /// what a later one says).
    pub fn write(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        match self {
            StreamWriter::OpenAi(writer) => writer.write(event, out),
            StreamWriter::Anthropic(writer) => writer.write(event, out),
        }
    }
}
