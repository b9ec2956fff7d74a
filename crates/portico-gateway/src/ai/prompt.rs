//! Prompt APIs: `POST` a JSON object of variables to a route, get the model's answer. The
//! variables are checked against the prompt version's schema and written into its
//! templates (`portico_model::CompiledPrompt`); the messages become an OpenAI chat request
//! that takes the AI service's usual path (models, fallbacks, usage, budgets, rates), so the
//! answer is an OpenAI chat completion, or its stream with `?stream=true` or
//! `Accept: text/event-stream`.

use bytes::Bytes;
use http::{header, HeaderMap, Uri};
use portico_ai::AiError;
use portico_model::{AiPrompt, CompiledPrompt, Problems, RoutePrompt};
use serde_json::{json, Value};

/// A route's prompt version, ready to render.
pub(crate) struct PromptApi {
    compiled: CompiledPrompt,
    model: Box<str>,
    max_tokens: Option<u64>,
    temperature: Option<f64>,
}

impl PromptApi {
    pub fn compile(wanted: &RoutePrompt, prompts: &[AiPrompt]) -> Result<PromptApi, Problems> {
        let missing = || {
            let mut problems = Problems::default();
            problems.push("prompt", format!("no prompt `{}` version {}", wanted.name, wanted.version));
            problems
        };
        let prompt = prompts.iter().find(|p| p.name == wanted.name).ok_or_else(missing)?;
        let version = prompt.version(wanted.version).ok_or_else(missing)?;
        Ok(PromptApi {
            compiled: version.compile()?,
            model: version.model.as_str().into(),
            max_tokens: version.max_tokens,
            temperature: version.temperature,
        })
    }

    /// The chat request for the variables in `body`.
    pub fn request(&self, body: &[u8], uri: &Uri, headers: &HeaderMap) -> Result<Bytes, AiError> {
        let variables: Value = serde_json::from_slice(body).map_err(|e| {
            AiError::invalid("", format!("the body must be a JSON object of the prompt's variables: {e}"))
        })?;
        let messages = self.compiled.render(variables).map_err(|problems| {
            AiError::invalid("variables", format!("the variables are not valid: {}", problems.join("; ")))
        })?;
        let messages: Vec<Value> =
            messages.into_iter().map(|(role, content)| json!({"role": role.as_str(), "content": content})).collect();
        let stream = uri.query().is_some_and(|q| q.split('&').any(|p| p == "stream=true"))
            || headers.get(header::ACCEPT).is_some_and(|a| a.as_bytes().starts_with(b"text/event-stream"));
        let mut request = json!({"model": &*self.model, "messages": messages, "stream": stream});
        if let Some(max_tokens) = self.max_tokens {
            request["max_tokens"] = max_tokens.into();
        }
        if let Some(temperature) = self.temperature {
            request["temperature"] = temperature.into();
        }
        Ok(serde_json::to_vec(&request).unwrap_or_default().into())
    }
}
