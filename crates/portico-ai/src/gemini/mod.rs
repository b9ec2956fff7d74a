//! Google Gemini's `generateContent` and `streamGenerateContent?alt=sse`, as a provider.
//!
//! Gemini has quirks the other formats do not: tool schemas must stay within its OpenAPI
//! subset (`schema.rs`); function calls arrive whole, not in fragments; a stream ends without
//! a closing event; and thinking models sign their function calls, wanting each
//! `thoughtSignature` back with the call in the next turn. Clients of other formats keep it
//! without knowing: it rides inside the tool call's id (`signature.rs`), which every client
//! sends back verbatim.

mod request;
mod response;
mod schema;
mod signature;
mod stream;

pub(crate) use request::write_request;
pub(crate) use response::{parse_response, read_usage};
pub use stream::StreamReader;

#[cfg(test)]
mod tests;
