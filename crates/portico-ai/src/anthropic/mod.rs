//! The Anthropic messages format.

mod request;
mod response;
mod stream;

pub(crate) use request::{parse_request, write_request};
pub(crate) use response::{parse_response, read_usage, write_response};
pub use stream::{StreamReader, StreamWriter};

#[cfg(test)]
mod tests;
