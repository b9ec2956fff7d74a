//! The OpenAI chat completions format, spoken by OpenAI, Azure OpenAI, Mistral, Ollama and
//! the many OpenAI-compatible servers (vLLM, DeepSeek, Groq, OpenRouter, ...).

mod request;
mod response;
mod stream;

#[cfg(test)]
use request::mistral_id;
pub(crate) use request::{parse_request, write_request, Flavour};
pub(crate) use response::{parse_response, read_usage, write_response};
pub use stream::{StreamReader, StreamWriter};

#[cfg(test)]
mod tests;
