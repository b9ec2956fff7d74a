//! Errors in the client's format: an OpenAI client gets `{"error":{"message","type",
//! "param","code"}}`, an Anthropic client `{"type":"error","error":{"type","message"}}`,
//! each with the status its SDK maps to the right exception.

use crate::Format;
use serde_json::{json, Value};

/// What went wrong, in words both formats have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or asks for something the model cannot do (400).
    InvalidRequest,
    /// The credentials are missing or wrong (401).
    Authentication,
    /// The credentials may not do this (403).
    PermissionDenied,
    /// No such model or resource (404).
    NotFound,
    /// The request body is too large (413).
    RequestTooLarge,
    /// Too many requests or tokens (429).
    RateLimited,
    /// The provider failed (500).
    Api,
    /// No provider could be reached (502).
    Unreachable,
    /// The provider is overloaded (503, Anthropic's 529).
    Overloaded,
    /// The provider did not answer in time (504).
    Timeout,
}

impl ErrorKind {
    /// The kind a provider's status stands for.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimited,
            502 => ErrorKind::Unreachable,
            503 | 529 => ErrorKind::Overloaded,
            504 => ErrorKind::Timeout,
            400..=499 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Api,
        }
    }

    /// The status a client of `format` gets for this kind.
    pub fn status(self, format: Format) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Api => 500,
            ErrorKind::Unreachable => 502,
            ErrorKind::Overloaded if format == Format::Anthropic => 529,
            ErrorKind::Overloaded => 503,
            ErrorKind::Timeout => 504,
        }
    }

    fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::RequestTooLarge => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Api | ErrorKind::Unreachable | ErrorKind::Overloaded | ErrorKind::Timeout => "server_error",
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Api | ErrorKind::Unreachable => "api_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Timeout => "timeout_error",
        }
    }

    fn from_anthropic_type(kind: &str) -> Option<ErrorKind> {
        Some(match kind {
            "invalid_request_error" => ErrorKind::InvalidRequest,
            "authentication_error" => ErrorKind::Authentication,
            "permission_error" => ErrorKind::PermissionDenied,
            "not_found_error" => ErrorKind::NotFound,
            "request_too_large" => ErrorKind::RequestTooLarge,
            "rate_limit_error" => ErrorKind::RateLimited,
            "api_error" => ErrorKind::Api,
            "overloaded_error" => ErrorKind::Overloaded,
            "timeout_error" => ErrorKind::Timeout,
            _ => return None,
        })
    }
}

/// An error for the client, in words both formats can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, when there is one (`messages[2].content`).
    pub param: Option<String>,
    /// A machine-readable code (OpenAI's `code`), when there is one.
    pub code: Option<String>,
}

impl AiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> AiError {
        AiError { kind, message: message.into(), param: None, code: None }
    }

    /// A 400 about the field `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> AiError {
        AiError { kind: ErrorKind::InvalidRequest, message: message.into(), param: Some(param.into()), code: None }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> AiError {
        self.code = Some(code.into());
        self
    }

    /// The body a client of `format` gets.
    pub fn to_body(&self, format: Format) -> Vec<u8> {
        let value = self.to_value(format);
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The error as JSON in `format`; in streams it is the data of an error event.
    pub fn to_value(&self, format: Format) -> Value {
        match format {
            Format::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.kind.openai_type(),
                "param": self.param,
                "code": self.code,
            }}),
            Format::Anthropic => {
                // Anthropic errors have no `param`: the field goes into the message.
                let message = match &self.param {
                    Some(param) if !self.message.contains(param.as_str()) => format!("{param}: {}", self.message),
                    _ => self.message.clone(),
                };
                json!({"type": "error", "error": {"type": self.kind.anthropic_type(), "message": message}})
            }
        }
    }

    /// Reads an error object a provider sent in a stream or a body, in either format.
    pub(crate) fn from_value(value: &Value, status: Option<u16>) -> AiError {
        let error = value.get("error").unwrap_or(value);
        let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
        let by_type = text("type").and_then(|t| ErrorKind::from_anthropic_type(&t));
        let kind = match (status, by_type) {
            (Some(status), _) => ErrorKind::from_status(status),
            (None, Some(kind)) => kind,
            (None, None) => ErrorKind::Api,
        };
        let message = text("message").unwrap_or_else(|| match status {
            Some(status) => format!("the provider answered {status}"),
            None => "the provider reported an error".to_owned(),
        });
        let code = match error.get("code") {
            Some(Value::String(code)) => Some(code.clone()),
            Some(Value::Number(code)) => Some(code.to_string()),
            _ => None,
        };
        AiError { kind, message, param: text("param"), code }
    }
}

impl std::fmt::Display for AiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.param {
            Some(param) => write!(f, "{param}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Reads a provider's error body; any body, JSON or not, gives an error of the status's kind.
pub(crate) fn parse(status: u16, body: &[u8]) -> AiError {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.get("error").is_some() || value.get("message").is_some() => {
            AiError::from_value(&value, Some(status))
        }
        _ => AiError::new(ErrorKind::from_status(status), format!("the provider answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_take_each_formats_shape_and_status() {
        let error = AiError::invalid("messages[0].role", "unknown role `robot`");
        let openai: Value = serde_json::from_slice(&error.to_body(Format::OpenAi)).expect("json");
        assert_eq!(
            openai,
            json!({"error": {"message": "unknown role `robot`", "type": "invalid_request_error",
                              "param": "messages[0].role", "code": null}})
        );
        let anthropic: Value = serde_json::from_slice(&error.to_body(Format::Anthropic)).expect("json");
        assert_eq!(
            anthropic,
            json!({"type": "error", "error": {"type": "invalid_request_error",
                                               "message": "messages[0].role: unknown role `robot`"}})
        );
        assert_eq!(ErrorKind::Overloaded.status(Format::Anthropic), 529);
        assert_eq!(ErrorKind::Overloaded.status(Format::OpenAi), 503);
    }

    #[test]
    fn provider_errors_are_read_from_either_shape() {
        let openai = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let error = parse(429, openai);
        assert_eq!(error.kind, ErrorKind::RateLimited);
        assert_eq!(error.message, "Rate limit reached");
        assert_eq!(error.code.as_deref(), Some("rate_limit_exceeded"));
        let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let error = parse(529, anthropic);
        assert_eq!((error.kind, error.message.as_str()), (ErrorKind::Overloaded, "Overloaded"));
        let error = parse(502, b"<html>bad gateway</html>");
        assert_eq!((error.kind, error.message.as_str()), (ErrorKind::Unreachable, "the provider answered 502"));
        // In a stream there is no status: the type says what it was.
        let value = json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}});
        assert_eq!(AiError::from_value(&value, None).kind, ErrorKind::Overloaded);
    }
}
