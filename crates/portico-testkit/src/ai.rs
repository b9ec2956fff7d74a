//! A mock model provider that speaks OpenAI's, Anthropic's and Gemini's wire formats, written
//! from their documentation (not from Portico's own code, so that it checks Portico's).
//!
//! | request | answer |
//! |---|---|
//! | `POST …/chat/completions` | an OpenAI chat completion, streamed as `data:` chunks when asked |
//! | `POST …/messages` | an Anthropic message, streamed as named events when asked |
//! | `POST …/messages/count_tokens` | `{"input_tokens": 14}` |
//! | `POST …/models/{model}:generateContent` | a Gemini answer (`:streamGenerateContent?alt=sse` streams it) |
//! | `POST …/embeddings` | three floats per input; 400 if `encoding_format` is sent |
//!
//! The answer says `Hello from <name>: <the last user text>`; with tools it calls the first
//! tool with `{"city":"Paris"}` (unless the last message carries a tool result); an Anthropic
//! request with `thinking` gets a signed thinking block first; Gemini signs its function calls
//! (`thoughtSignature: Z2VtaW5pLXNpZw==`). Usage is fixed: 14 prompt tokens
//! of which 3 cached, 7 completion tokens. Keys given to [`MockProvider::reject_key`] get 401,
//! and [`MockProvider::fail_next`] scripts the next requests' failures.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A failure for the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderFault {
    /// This status, with an error body in the provider's format (and `retry-after` on 429).
    Status(u16),
    /// No answer, ever.
    Hang,
    /// The stream starts, then an error event arrives.
    MidStreamError,
    /// The stream starts, then the connection breaks.
    Drop,
}

/// How the mock reports usage in OpenAI's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UsageReport {
    /// As OpenAI does: always in whole answers; in streams only when asked
    /// (`stream_options.include_usage`), on a last chunk with empty `choices`.
    #[default]
    Asked,
    /// As some compatible servers do: in streams on the chunk with the finish reason,
    /// asked or not.
    OnLastChoice,
    /// Never, as some compatible servers do.
    Never,
}

/// A request the provider received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct Script {
    faults: VecDeque<ProviderFault>,
    rejected_keys: Vec<String>,
    received: Vec<Received>,
    /// Pause between stream events.
    pace: Duration,
    /// Stream events sent so far, over all streams.
    events_sent: usize,
    /// Streams whose client went away before the last event.
    streams_cancelled: usize,
    /// Text pieces per streamed answer.
    pieces: usize,
    /// Whether requests are kept for [`MockProvider::received`].
    forget: bool,
    usage: UsageReport,
    /// Input tokens Anthropic answers report as written to the prompt cache.
    cache_write: u64,
}

/// Counts a stream as cancelled if it is dropped before its last event.
struct Unfinished(Arc<Mutex<Script>>, bool);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.1 {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).streams_cancelled += 1;
        }
    }
}

/// A running mock provider; stops when dropped.
pub struct MockProvider {
    pub addr: SocketAddr,
    pub name: String,
    script: Arc<Mutex<Script>>,
    task: JoinHandle<()>,
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockProvider {
    pub async fn start(name: &str) -> MockProvider {
        MockProvider::start_on(name, "127.0.0.1:0".parse().expect("an address")).await
    }

    /// A mock provider on `addr` (port 0: a free one).
    pub async fn start_on(name: &str, addr: SocketAddr) -> MockProvider {
        // A provider's servers take a burst of connections; std's backlog of 128 would make
        // a thousand streams opened at once wait a second for SYN-ACK retransmits.
        let socket = if addr.is_ipv6() { TcpSocket::new_v6() } else { TcpSocket::new_v4() };
        let socket = socket.expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(addr).expect("bind");
        let listener = socket.listen(4096).expect("listen");
        let addr = listener.local_addr().expect("local address");
        let script = Arc::new(Mutex::new(Script { pace: Duration::from_millis(2), pieces: 3, ..Script::default() }));
        let (shared, label) = (script.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                // Paced events must leave at once, not wait for the last one's ACK.
                let _ = stream.set_nodelay(true);
                let (script, name) = (shared.clone(), label.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(name.clone(), script.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MockProvider { addr, name: name.to_owned(), script, task }
    }

    /// The base URL of its API (`http://127.0.0.1:port/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The next requests fail this way, one fault each, in order.
    pub fn fail_next(&self, fault: ProviderFault) {
        self.lock().faults.push_back(fault);
    }

    /// Requests with this key get 401 from now on.
    pub fn reject_key(&self, key: &str) {
        self.lock().rejected_keys.push(key.to_owned());
    }

    /// The pause between two events of a stream (2 ms by default).
    pub fn set_pace(&self, pace: Duration) {
        self.lock().pace = pace;
    }

    /// Streamed answers come in `pieces` text pieces (3 by default).
    pub fn set_stream_pieces(&self, pieces: usize) {
        self.lock().pieces = pieces.max(1);
    }

    /// Stops keeping requests (for benchmarks, where they would pile up).
    pub fn set_usage_report(&self, usage: UsageReport) {
        self.script.lock().unwrap_or_else(|p| p.into_inner()).usage = usage;
    }

    /// Anthropic answers report `tokens` input tokens written to the prompt cache.
    pub fn set_cache_write(&self, tokens: u64) {
        self.script.lock().unwrap_or_else(|p| p.into_inner()).cache_write = tokens;
    }

    pub fn forget_requests(&self) {
        self.lock().forget = true;
    }

    /// Stream events sent so far, over all streams.
    pub fn events_sent(&self) -> usize {
        self.lock().events_sent
    }

    /// Streams whose connection closed before their last event (the client went away).
    pub fn streams_cancelled(&self) -> usize {
        self.lock().streams_cancelled
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
}

async fn answer(
    name: String,
    script: Arc<Mutex<Script>>,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path().to_owned();
    let wire = if path.ends_with("/messages") || path.ends_with("/messages/count_tokens") {
        Wire::Anthropic
    } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        Wire::Gemini
    } else {
        Wire::OpenAi
    };
    let key = key_of(&parts.headers);
    let (fault, rejected, pace, pieces, usage, cache_write) = {
        let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
        if !script.forget {
            let uri = parts.uri.path_and_query().map_or(path.clone(), |pq| pq.to_string());
            script.received.push(Received { uri, headers: parts.headers.clone(), body: body.clone() });
        }
        let rejected = key.as_ref().is_some_and(|k| script.rejected_keys.contains(k));
        (script.faults.pop_front(), rejected, script.pace, script.pieces, script.usage, script.cache_write)
    };
    if rejected || key.is_none() {
        return Ok(error(wire, 401, "authentication_error", "invalid x-api-key or bearer token"));
    }
    if wire == Wire::Anthropic && !parts.headers.contains_key("anthropic-version") {
        return Ok(error(wire, 400, "invalid_request_error", "anthropic-version: header is required"));
    }
    match &fault {
        Some(ProviderFault::Status(status)) => {
            let (kind, message) = match status {
                429 => ("rate_limit_error", "Rate limit reached"),
                529 => ("overloaded_error", "Overloaded"),
                401 => ("authentication_error", "invalid key"),
                _ => ("api_error", "Internal server error"),
            };
            return Ok(error(wire, *status, kind, message));
        }
        Some(ProviderFault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        _ => {}
    }
    if path.ends_with("/embeddings") {
        return Ok(embeddings(&body));
    }
    if path.ends_with("/messages/count_tokens") {
        return Ok(json_response(200, &json!({"input_tokens": 14})));
    }
    if !path.ends_with("/chat/completions") && wire == Wire::OpenAi {
        return Ok(error(wire, 404, "invalid_request_error", "unknown path"));
    }
    let mut reply = Reply::for_request(&name, wire, &body);
    reply.pieces = pieces;
    reply.usage = usage;
    reply.cache_write = cache_write;
    let stream = match wire {
        Wire::Gemini => path.contains(":streamGenerateContent"),
        _ => body.get("stream").and_then(Value::as_bool).unwrap_or(false),
    };
    if wire == Wire::Gemini {
        // The model is in the path: `…/models/{model}:generateContent`.
        let model = path.rsplit_once("/models/").and_then(|(_, m)| m.split_once(':')).map(|(m, _)| m.to_owned());
        reply.model = model.unwrap_or_default();
    }
    if !stream {
        let whole = match wire {
            Wire::OpenAi => reply.openai(&body),
            Wire::Anthropic => reply.anthropic(),
            Wire::Gemini => reply.gemini(),
        };
        return Ok(json_response(200, &whole));
    }
    let mut events = match wire {
        Wire::OpenAi => reply.openai_stream(&body),
        Wire::Anthropic => reply.anthropic_stream(),
        Wire::Gemini => reply.gemini_stream(),
    };
    let broken = match fault {
        Some(ProviderFault::MidStreamError) => {
            events.truncate(2);
            events.push(match wire {
                Wire::Gemini => format!("data: {}\n\n", json!({"error": {"code": 503, "message": "The model is overloaded", "status": "UNAVAILABLE"}})),
                Wire::OpenAi => format!("data: {}\n\n", json!({"error": {"message": "The server had an error while processing your request", "type": "server_error", "param": null, "code": null}})),
                Wire::Anthropic => format!("event: error\ndata: {}\n\n", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
            });
            false
        }
        Some(ProviderFault::Drop) => {
            events.truncate(2);
            true
        }
        _ => false,
    };
    let total = events.len();
    let unfinished = Arc::new(Mutex::new(Unfinished(script.clone(), broken)));
    let items = events.into_iter().map(Some).chain(broken.then_some(None)).enumerate();
    let frames = futures_util::stream::iter(items).then(move |(i, event)| {
        let (script, unfinished) = (script.clone(), unfinished.clone());
        async move {
            tokio::time::sleep(pace).await;
            script.lock().unwrap_or_else(|p| p.into_inner()).events_sent += 1;
            if i + 1 == total {
                unfinished.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
            }
            match event {
                Some(event) => Ok(Frame::data(Bytes::from(event))),
                None => Err(std::io::Error::other("connection dropped on purpose")),
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert("content-type", "text/event-stream".parse().map_err(std::io::Error::other)?);
    Ok(response)
}

fn key_of(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    header("x-api-key")
        .or_else(|| header("api-key"))
        .or_else(|| header("x-goog-api-key"))
        .or_else(|| header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned)))
}

/// What the mock answers a chat request with.
struct Reply {
    /// Text pieces of a streamed answer.
    pieces: usize,
    model: String,
    text: String,
    /// The tool to call, when the request offers tools and no result came back yet.
    tool: Option<String>,
    thinking: bool,
    usage: UsageReport,
    cache_write: u64,
}

impl Reply {
    fn for_request(name: &str, wire: Wire, body: &Value) -> Reply {
        if wire == Wire::Gemini {
            return Reply::for_gemini(name, body);
        }
        let messages = body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
        let text_of = |content: &Value| match content {
            Value::String(text) => Some(text.clone()),
            Value::Array(parts) => parts.iter().rev().find_map(|p| {
                (p.get("type") == Some(&json!("text")))
                    .then(|| p.get("text").and_then(Value::as_str).map(str::to_owned))
                    .flatten()
            }),
            _ => None,
        };
        let last_user = messages
            .iter()
            .rev()
            .filter(|m| m.get("role") == Some(&json!("user")))
            .find_map(|m| text_of(m.get("content")?));
        let answered_tool = messages.last().is_some_and(|m| {
            m.get("role") == Some(&json!("tool"))
                || m.get("content")
                    .and_then(Value::as_array)
                    .is_some_and(|parts| parts.iter().any(|p| p.get("type") == Some(&json!("tool_result"))))
        });
        let first_tool =
            body.pointer("/tools/0/function/name").or_else(|| body.pointer("/tools/0/name")).and_then(Value::as_str);
        Reply {
            pieces: 3,
            model: body.get("model").and_then(Value::as_str).unwrap_or("mock").to_owned(),
            text: format!("Hello from {name}: {}", last_user.unwrap_or_default()),
            tool: first_tool.filter(|_| !answered_tool).map(str::to_owned),
            thinking: wire == Wire::Anthropic && body.get("thinking").is_some(),
            usage: UsageReport::Asked,
            cache_write: 0,
        }
    }

    fn for_gemini(name: &str, body: &Value) -> Reply {
        let contents = body.get("contents").and_then(Value::as_array).cloned().unwrap_or_default();
        let parts = |content: &Value| content.get("parts").and_then(Value::as_array).cloned().unwrap_or_default();
        let last_user =
            contents.iter().rev().filter(|c| c.get("role") == Some(&json!("user"))).find_map(|c| {
                parts(c).iter().rev().find_map(|p| p.get("text").and_then(Value::as_str).map(str::to_owned))
            });
        let answered_tool =
            contents.last().is_some_and(|c| parts(c).iter().any(|p| p.get("functionResponse").is_some()));
        let first_tool = body.pointer("/tools/0/functionDeclarations/0/name").and_then(Value::as_str);
        Reply {
            pieces: 3,
            model: String::new(),
            text: format!("Hello from {name}: {}", last_user.unwrap_or_default()),
            tool: first_tool.filter(|_| !answered_tool).map(str::to_owned),
            thinking: false,
            usage: UsageReport::Asked,
            cache_write: 0,
        }
    }

    fn gemini_parts(&self) -> Value {
        match &self.tool {
            Some(tool) => {
                json!([{"functionCall": {"name": tool, "args": {"city": "Paris"}}, "thoughtSignature": "Z2VtaW5pLXNpZw=="}])
            }
            None => json!([{"text": self.text}]),
        }
    }

    fn gemini(&self) -> Value {
        json!({"candidates": [{"content": {"role": "model", "parts": self.gemini_parts()}, "finishReason": "STOP", "index": 0}],
               "usageMetadata": gemini_usage(), "modelVersion": self.model, "responseId": "gem-mock1"})
    }

    fn gemini_stream(&self) -> Vec<String> {
        let chunk = |parts: Value, last: bool| {
            let mut chunk = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                                   "modelVersion": self.model, "responseId": "gem-mock1"});
            if last {
                chunk["candidates"][0]["finishReason"] = "STOP".into();
                chunk["usageMetadata"] = gemini_usage();
            }
            format!("data: {chunk}\r\n\r\n")
        };
        match &self.tool {
            Some(_) => vec![chunk(self.gemini_parts(), true)],
            None => {
                let pieces = split(&self.text, self.pieces);
                let last = pieces.len() - 1;
                pieces.iter().enumerate().map(|(i, piece)| chunk(json!([{"text": piece}]), i == last)).collect()
            }
        }
    }

    fn openai(&self, request: &Value) -> Value {
        let _ = request;
        let message = match &self.tool {
            Some(tool) => json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_mock1", "type": "function", "function": {"name": tool, "arguments": "{\"city\":\"Paris\"}"}}]}),
            None => json!({"role": "assistant", "content": self.text, "refusal": null}),
        };
        let finish = if self.tool.is_some() { "tool_calls" } else { "stop" };
        let mut answer = json!({"id": "chatcmpl-mock1", "object": "chat.completion", "created": 1700000000, "model": self.model,
               "system_fingerprint": "fp_mock", "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}]});
        if self.usage != UsageReport::Never {
            answer["usage"] = openai_usage();
        }
        answer
    }

    fn openai_stream(&self, request: &Value) -> Vec<String> {
        let asked = request.pointer("/stream_options/include_usage") == Some(&json!(true));
        let with_usage = asked && self.usage == UsageReport::Asked;
        let chunk = |delta: Value, finish: Value| {
            let mut chunk = json!({"id": "chatcmpl-mock1", "object": "chat.completion.chunk", "created": 1700000000, "model": self.model,
                                   "system_fingerprint": "fp_mock", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            if with_usage {
                chunk["usage"] = Value::Null;
            }
            if !finish.is_null() && self.usage == UsageReport::OnLastChoice {
                chunk["usage"] = openai_usage();
            }
            format!("data: {chunk}\n\n")
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null)];
        match &self.tool {
            Some(tool) => {
                events.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_mock1", "type": "function", "function": {"name": tool, "arguments": ""}}]}), Value::Null));
                for piece in ["{\"city\":", "\"Paris\"}"] {
                    events.push(chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
                events.push(chunk(json!({}), json!("tool_calls")));
            }
            None => {
                for piece in split(&self.text, self.pieces) {
                    events.push(chunk(json!({"content": piece}), Value::Null));
                }
                events.push(chunk(json!({}), json!("stop")));
            }
        }
        if with_usage {
            let usage = json!({"id": "chatcmpl-mock1", "object": "chat.completion.chunk", "created": 1700000000, "model": self.model,
                               "choices": [], "usage": openai_usage()});
            events.push(format!("data: {usage}\n\n"));
        }
        events.push("data: [DONE]\n\n".to_owned());
        events
    }

    fn anthropic_content(&self) -> Vec<Value> {
        let mut content = Vec::new();
        if self.thinking {
            content.push(json!({"type": "thinking", "thinking": "Let me think.", "signature": "c2lnbmF0dXJl+/=="}));
        }
        match &self.tool {
            Some(tool) => {
                content.push(json!({"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {"city": "Paris"}}))
            }
            None => content.push(json!({"type": "text", "text": self.text})),
        }
        content
    }

    fn anthropic(&self) -> Value {
        let stop = if self.tool.is_some() { "tool_use" } else { "end_turn" };
        json!({"id": "msg_mock1", "type": "message", "role": "assistant", "model": self.model, "content": self.anthropic_content(),
               "stop_reason": stop, "stop_sequence": null,
               "usage": {"input_tokens": 11, "output_tokens": 7, "cache_creation_input_tokens": self.cache_write, "cache_read_input_tokens": 3}})
    }

    fn anthropic_stream(&self) -> Vec<String> {
        let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        let mut events = vec![event(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_mock1", "type": "message", "role": "assistant", "content": [], "model": self.model,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 11, "output_tokens": 1, "cache_creation_input_tokens": self.cache_write, "cache_read_input_tokens": 3}}}),
        )];
        let mut index = 0;
        if self.thinking {
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})));
            events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": "Let me think."}})));
            events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl+/=="}})));
            events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
            index += 1;
        }
        match &self.tool {
            Some(tool) => {
                events.push(event("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {}}})));
                for piece in ["", "{\"city\": ", "\"Paris\"}"] {
                    events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})));
                }
            }
            None => {
                events.push(event("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})));
                events.push(event("ping", json!({"type": "ping"})));
                for piece in split(&self.text, self.pieces) {
                    events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})));
                }
            }
        }
        events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        let stop = if self.tool.is_some() { "tool_use" } else { "end_turn" };
        events.push(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 7}})));
        events.push(event("message_stop", json!({"type": "message_stop"})));
        events
    }
}

fn gemini_usage() -> Value {
    json!({"promptTokenCount": 14, "candidatesTokenCount": 7, "totalTokenCount": 21, "cachedContentTokenCount": 3})
}

fn openai_usage() -> Value {
    json!({"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21,
           "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

/// `text` in `pieces` pieces (fewer if it is shorter), split on character boundaries.
fn split(text: &str, pieces: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let step = chars.len().div_ceil(pieces).max(1);
    chars.chunks(step).map(|c| c.iter().collect()).collect()
}

fn embeddings(body: &Value) -> Response<Body> {
    if body.get("encoding_format").is_some() {
        return error(Wire::OpenAi, 400, "invalid_request_error", "encoding_format is not supported");
    }
    let inputs = match body.get("input") {
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    };
    let data: Vec<Value> =
        (0..inputs).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.5, -1.25, i as f64]})).collect();
    json_response(
        200,
        &json!({"object": "list", "data": data, "model": body.get("model"), "usage": {"prompt_tokens": 4, "total_tokens": 4}}),
    )
}

fn error(wire: Wire, status: u16, kind: &str, message: &str) -> Response<Body> {
    let body = match wire {
        Wire::Gemini => json!({"error": {"code": status, "message": message, "status": kind.to_ascii_uppercase()}}),
        Wire::OpenAi => json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        Wire::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    };
    let mut response = json_response(status, &body);
    if status == 429 {
        response.headers_mut().insert("retry-after", http::HeaderValue::from_static("1"));
    }
    response
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    let mut response =
        Response::new(BodyExt::boxed(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {})));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    response
}
