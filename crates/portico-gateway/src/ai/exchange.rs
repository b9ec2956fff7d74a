//! One request to an AI service: which API it is, which model, which provider answers, and
//! the answer in the client's format.

use super::budget::BudgetSpent;
use super::cache::{AnswerCache, Cached};
use super::limits::Subject;
use super::meter::Pending;
use super::provider::{Ask, Operation};
use super::stream::{AiStream, Mode, StreamUsage};
use super::{embeddings, AiEndpoint, AiRoute, Caller, Meter, Model, Target};
use crate::observe::Trail;
use crate::proxy::{RequestBody, RequestContext, ResponseBody};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use portico_ai::{AiError, ChatRequest, Dialect, ErrorKind, Fields, Format, Usage};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest request body an AI route takes unless the route says otherwise (prompts with
/// images are large).
const DEFAULT_BODY_LIMIT: u64 = 32 << 20;
/// The largest whole answer Portico reads to translate it.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// The most of an error body Portico reads.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// What the client asked for.
enum Api {
    Chat(Format),
    Embeddings,
    /// Anthropic's `POST /v1/messages/count_tokens`.
    CountTokens,
    Models,
    Model(String),
}

/// Answers one request to an AI service; every failure is answered in the client's format.
pub(crate) async fn handle(
    request: Request<crate::server::ClientBody>,
    route: &AiRoute,
    body_limit: Option<u64>,
    caller: Caller<'_>,
    cx: &RequestContext<'_>,
    trail: &mut Trail,
) -> Response<ResponseBody> {
    let (endpoint, prompt) = (&*route.endpoint, route.prompt.as_deref());
    let (parts, body) = request.into_parts();
    let api = match prompt {
        Some(_) if parts.method != Method::POST => {
            let error = AiError::new(ErrorKind::InvalidRequest, "a prompt API takes POST with its variables");
            return error_response(Format::OpenAi, Some(StatusCode::METHOD_NOT_ALLOWED), &error);
        }
        Some(_) => Ok(Api::Chat(Format::OpenAi)),
        None => find_api(&parts.method, parts.uri.path()),
    };
    let api = match api {
        Ok(api) => api,
        Err((status, error)) => return error_response(Format::OpenAi, status, &error),
    };
    let (format, operation) = match api {
        Api::Chat(format) => (format, Operation::Chat),
        Api::Embeddings => (Format::OpenAi, Operation::Embeddings),
        Api::CountTokens => (Format::Anthropic, Operation::CountTokens),
        Api::Models => return models(endpoint, &parts.headers, None),
        Api::Model(id) => return models(endpoint, &parts.headers, Some(&id)),
    };
    let limit = body_limit.unwrap_or(DEFAULT_BODY_LIMIT);
    let body = match Limited::new(body, limit as usize).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            let error =
                AiError::new(ErrorKind::RequestTooLarge, format!("the request body is larger than {limit} bytes"));
            return error_response(format, None, &error);
        }
        Err(_) => {
            let error = AiError::new(ErrorKind::InvalidRequest, "the request body could not be read");
            return error_response(format, None, &error);
        }
    };
    let body = match prompt.map(|prompt| prompt.request(&body, &parts.uri, &parts.headers)) {
        None => body,
        Some(Ok(request)) => request,
        Some(Err(error)) => return error_response(format, None, &error),
    };
    let mut call = match Call::new(endpoint, format, body, &parts.headers, operation) {
        Ok(call) => call,
        Err(error) => return error_response(format, None, &error),
    };
    if let Some(event) = trail.event() {
        event.service = Some(endpoint.service.clone());
    }
    if operation == Operation::CountTokens {
        return match call.run(cx, trail).await {
            Ok(response) => response,
            Err((status, error)) => error_response(format, status, &error),
        };
    }
    // A whole answer may come from the route's cache: no provider call, nothing charged.
    let consumer = caller.consumer.map(|c| &*c.name);
    let cached = route.cache.as_ref().filter(|_| !call.stream);
    let cache_key = cached.and_then(|cache| {
        let api = format!("{} {:?}", operation.noun(), call.client);
        Some((cache, cache.key(&api, consumer, call.fields.body())?))
    });
    if let Some(hit) = cache_key.as_ref().and_then(|(cache, key)| cache.get(key)) {
        return cached_answer(hit);
    }
    if let Err(refusal) = govern(&mut call, endpoint, caller, cx, trail).await {
        return refusal;
    }
    let response = match call.run(cx, trail).await {
        Ok(mut response) => {
            if let Some((cache, key)) = cache_key {
                keep_answer(cache, key, &mut response);
            }
            response
        }
        Err((status, error)) => error_response(format, status, &error),
    };
    // The client's head is read; its map can serve the next head read.
    crate::proxy::recycle_map(parts.headers);
    response
}

/// The caller's budgets and the service's rates: a refusal, or the call metered.
async fn govern(
    call: &mut Call<'_>,
    endpoint: &AiEndpoint,
    caller: Caller<'_>,
    cx: &RequestContext<'_>,
    trail: &mut Trail,
) -> Result<(), Response<ResponseBody>> {
    let budgets = endpoint.budgets.of(caller);
    if let Err(spent) = endpoint.budgets.check(&budgets).await {
        return Err(budget_spent(call.client, &spent));
    }
    let subject =
        Subject { consumer: caller.consumer.map(|c| &*c.name), client_ip: cx.client.ip, model: &call.model.name };
    let estimate = call.fields.body().len().div_ceil(4) as u64 + call.max_output;
    let reserved = match endpoint.limits.reserve(&subject, estimate).await {
        Ok(reserved) => reserved,
        Err(exceeded) => {
            let mut response = error_response(call.client, None, &exceeded.error);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(exceeded.retry_after));
            return Err(response);
        }
    };
    let meter = Arc::new(Meter::new(endpoint.budgets.clone(), budgets, reserved));
    trail.ai = Some(meter.clone());
    call.meter = Some(meter);
    Ok(())
}

/// Says whether an answer came from the route's cache.
static X_PORTICO_CACHE: http::HeaderName = http::HeaderName::from_static("x-portico-cache");
/// Which provider, and which of its models, answered.
static X_PORTICO_PROVIDER: http::HeaderName = http::HeaderName::from_static("x-portico-provider");
static X_PORTICO_MODEL: http::HeaderName = http::HeaderName::from_static("x-portico-model");
/// Tells a buffering proxy in front (nginx's name for it) to pass a stream on at once.
static X_ACCEL_BUFFERING: http::HeaderName = http::HeaderName::from_static("x-accel-buffering");
/// The headers a kept answer is given again with.
static KEPT_HEADERS: [&http::HeaderName; 3] = [&header::CONTENT_TYPE, &X_PORTICO_PROVIDER, &X_PORTICO_MODEL];

fn cached_answer(hit: Cached) -> Response<ResponseBody> {
    let age = hit.age();
    let mut response = Response::new(ResponseBody::full(hit.body));
    let headers = response.headers_mut();
    for (name, value) in hit.headers {
        headers.insert(name, value);
    }
    headers.insert(X_PORTICO_CACHE.clone(), HeaderValue::from_static("hit"));
    headers.insert(header::AGE, HeaderValue::from(age));
    response
}

/// Keeps a successful whole answer in the route's cache, and says it was a miss.
fn keep_answer(cache: &AnswerCache, key: [u8; 32], response: &mut Response<ResponseBody>) {
    let body = response.body().full_bytes().filter(|_| response.status() == StatusCode::OK).cloned();
    if let Some(body) = body {
        let headers = KEPT_HEADERS.iter().filter_map(|&name| Some((name, response.headers().get(name)?.clone())));
        cache.put(key, Cached::new(body, headers.collect()));
    }
    response.headers_mut().insert(X_PORTICO_CACHE.clone(), HeaderValue::from_static("miss"));
}

/// The API a method and path ask for; the path may have any prefix (`/v1/chat/completions`,
/// `/openai/v1/chat/completions`).
fn find_api(method: &Method, path: &str) -> Result<Api, (Option<StatusCode>, AiError)> {
    let post = |api: Api| {
        if method == Method::POST {
            Ok(api)
        } else {
            Err((Some(StatusCode::METHOD_NOT_ALLOWED), AiError::new(ErrorKind::InvalidRequest, "use POST")))
        }
    };
    let path = path.trim_end_matches('/');
    if path.ends_with("/chat/completions") {
        post(Api::Chat(Format::OpenAi))
    } else if path.ends_with("/messages/count_tokens") {
        post(Api::CountTokens)
    } else if path.ends_with("/messages") {
        post(Api::Chat(Format::Anthropic))
    } else if path.ends_with("/embeddings") {
        post(Api::Embeddings)
    } else if method == Method::GET && path.ends_with("/models") {
        Ok(Api::Models)
    } else if let (&Method::GET, Some((_, id))) = (method, path.rsplit_once("/models/")) {
        Ok(Api::Model(id.to_owned()))
    } else {
        let error =
            AiError::new(ErrorKind::NotFound, format!("`{method} {path}` is not an API Portico's AI gateway serves"));
        Err((Some(StatusCode::NOT_FOUND), error))
    }
}

/// One call: the client's body, the model it names, and the tries that answer it.
struct Call<'a> {
    client: Format,
    model: &'a Model,
    /// The client's body as sent, read at its top level.
    fields: Fields,
    headers: &'a HeaderMap,
    operation: Operation,
    stream: bool,
    /// The client asked for usage at the end of its stream (`stream_options.include_usage`).
    include_usage: bool,
    /// The most output tokens the client asks for (`max_tokens`, `max_completion_tokens`).
    max_output: u64,
    /// Embeddings: the client wants base64.
    base64: bool,
    /// Where what the call used is left for the request's trail.
    meter: Option<Arc<Meter>>,
    /// The request in neutral form, made when a provider of another format needs it.
    neutral: Option<Result<ChatRequest, AiError>>,
}

/// How a try ended, when it did not answer.
enum Miss {
    /// Try the next key of the same provider.
    NextKey(AiError),
    /// Try the next target.
    NextTarget(AiError),
    /// Answer the client with this.
    Final(Option<StatusCode>, AiError),
}

impl<'a> Call<'a> {
    fn new(
        endpoint: &'a AiEndpoint,
        client: Format,
        body: Bytes,
        headers: &'a HeaderMap,
        operation: Operation,
    ) -> Result<Call<'a>, AiError> {
        // Only the top level is read: a body passed through is never parsed whole.
        let fields = Fields::parse(body)?;
        let name = fields.string("model")?.ok_or_else(|| AiError::invalid("model", "is required"))?;
        let model = endpoint.models.get(name.as_str()).ok_or_else(|| {
            AiError::new(ErrorKind::NotFound, format!("The model `{name}` does not exist or is not served here"))
                .with_code("model_not_found")
        })?;
        let base64 = if operation == Operation::Embeddings { embeddings::prepare(&fields)? } else { false };
        let stream = fields.boolean("stream")?.unwrap_or(false);
        let include_usage = stream_options(&fields).get("include_usage") == Some(&Value::Bool(true));
        let number = |key: &str| fields.get(key).and_then(|text| text.parse::<u64>().ok());
        let max_output = number("max_completion_tokens").or_else(|| number("max_tokens")).unwrap_or(0);
        Ok(Call {
            client,
            model,
            fields,
            headers,
            operation,
            stream,
            include_usage,
            max_output,
            base64,
            meter: None,
            neutral: None,
        })
    }

    /// Whether Portico asks the provider for a usage chunk the client did not ask for:
    /// OpenAI-format streams carry usage only when asked (Anthropic's and Gemini's always do).
    fn asks_for_usage(&self, target: &Target) -> bool {
        self.stream && !self.include_usage && target.provider.dialect.passes_through(Format::OpenAi)
    }

    async fn run(
        mut self,
        cx: &RequestContext<'_>,
        trail: &mut Trail,
    ) -> Result<Response<ResponseBody>, (Option<StatusCode>, AiError)> {
        // Why the last try failed; written only when one does.
        let mut last = None;
        for index in self.model.order() {
            let target = &self.model.targets[index];
            if !target.provider.can(self.operation) {
                let (provider, what) = (&target.provider.name, self.operation.noun());
                last = Some(AiError::invalid("model", format!("provider `{provider}` does not serve {what}")));
                continue;
            }
            let body = match self.provider_body(target) {
                Ok(body) => Bytes::from(body),
                Err(error) => {
                    last = Some(error);
                    continue;
                }
            };
            let mut tried = Vec::new();
            while let Some(key) = target.provider.keys.pick(&tried) {
                tried.push(key);
                match self.attempt(target, key, body.clone(), cx, trail).await {
                    Ok(response) => return Ok(response),
                    Err(Miss::NextKey(error)) => last = Some(error),
                    Err(Miss::NextTarget(error)) => {
                        last = Some(error);
                        break;
                    }
                    Err(Miss::Final(status, error)) => return Err((status, error)),
                }
            }
            if tried.is_empty() {
                last = Some(AiError::new(
                    ErrorKind::RateLimited,
                    format!("every key of provider `{}` is resting or disabled", target.provider.name),
                ));
            }
        }
        let name = &self.model.name;
        Err((
            None,
            last.unwrap_or_else(|| AiError::new(ErrorKind::Unreachable, format!("no provider could answer `{name}`"))),
        ))
    }

    /// The body `target`'s provider gets: the client's own with the model replaced when the
    /// formats agree, a translation when they do not.
    fn provider_body(&mut self, target: &Target) -> Result<Vec<u8>, AiError> {
        let model = &*target.model_json;
        if self.operation == Operation::Embeddings {
            return Ok(embeddings::request_body(&self.fields, model));
        }
        if target.provider.dialect.passes_through(self.client) {
            let fields = &self.fields;
            if self.asks_for_usage(target) {
                let mut options = stream_options(fields);
                options.insert("include_usage".into(), Value::Bool(true));
                let options = Value::Object(options).to_string();
                return Ok(fields.rewrite(&[("model", Some(model)), ("stream_options", Some(&options))]));
            }
            return Ok(fields.rewrite(&[("model", Some(model))]));
        }
        let (client, body) = (self.client, self.fields.body());
        let neutral = self.neutral.get_or_insert_with(|| client.parse_request(&portico_ai::parse_body(body)?));
        let neutral = neutral.as_ref().map_err(Clone::clone)?;
        target.provider.dialect.write_request(neutral, &target.model)
    }

    async fn attempt(
        &self,
        target: &Target,
        key: usize,
        body: Bytes,
        cx: &RequestContext<'_>,
        trail: &mut Trail,
    ) -> Result<Response<ResponseBody>, Miss> {
        let provider = &target.provider;
        let request = provider
            .request(
                Ask { operation: self.operation, model: &target.model, stream: self.stream },
                key,
                body,
                self.headers,
                cx.request_id,
            )
            .map_err(|message| Miss::Final(None, AiError::new(ErrorKind::Api, message)))?;
        let request = request.map(|body| RequestBody::replayed(vec![body]));
        let pool = cx.pools.pool_with(provider.connect_timeout, None);
        let key_state = &provider.keys.keys[key].state;
        key_state.used();
        trail.set_target(&provider.authority);
        let started = Instant::now();
        let sent = tokio::time::timeout(
            target.timeout,
            pool.send(&provider.scheme, &provider.authority, request, &[], started.into()),
        )
        .await;
        trail.record_try(started, started.elapsed());
        let response = match sent {
            Err(_) => {
                let message =
                    format!("provider `{}` did not answer within {} ms", provider.name, target.timeout.as_millis());
                return Err(Miss::NextTarget(AiError::new(ErrorKind::Timeout, message)));
            }
            Ok(Err(failure)) => {
                tracing::debug!(provider = %provider.name, error = ?failure.error, "AI provider unreachable");
                let message = format!("provider `{}` could not be reached", provider.name);
                return Err(Miss::NextTarget(AiError::new(ErrorKind::Unreachable, message)));
            }
            Ok(Ok(answer)) => answer,
        };
        let status = response.status();
        let dialect = provider.dialect;
        let (parts, incoming) = response.into_parts();
        let body = ResponseBody::upstream(incoming, target.timeout, None);
        if !status.is_success() {
            let text = read(body, MAX_ERROR_BYTES).await.unwrap_or_default();
            let error = dialect.parse_error(status.as_u16(), &text);
            return Err(match status.as_u16() {
                429 => {
                    key_state.rest(retry_after(&parts.headers));
                    Miss::NextKey(error)
                }
                401 | 403 => {
                    let key_name = &provider.keys.keys[key].name;
                    tracing::warn!(provider = %provider.name, key = %key_name, status = status.as_u16(),
                                   message = %error.message, "AI provider key refused; it is disabled");
                    key_state.disable(format!("{}: {}", status.as_u16(), error.message));
                    Miss::NextKey(error)
                }
                // 404: this target's model or deployment does not exist; another may.
                404 | 408 | 500..=599 => Miss::NextTarget(error),
                _ => Miss::Final(Some(status), error),
            });
        }
        let streamed =
            parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        // The provider's headers are not passed on; their map, emptied, holds the answer's.
        let mut headers = parts.headers;
        headers.clear();
        let answer = if self.stream && streamed {
            let mode = match (dialect.passes_through(self.client), &self.neutral) {
                (true, _) if self.asks_for_usage(target) => Mode::PassWithoutUsage,
                (true, _) => Mode::Pass,
                (false, Some(Ok(neutral))) => Mode::Translate(self.client.stream_writer(neutral)),
                (false, _) => {
                    return Err(Miss::Final(None, AiError::new(ErrorKind::Api, "the request was not translated")))
                }
            };
            let metered = self.meter.clone().map(|meter| StreamUsage {
                meter,
                billing: target.billing.clone(),
                request_bytes: self.fields.body().len(),
            });
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(&X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
            ResponseBody::boxed(AiStream::new(body, dialect, self.client, mode, metered))
        } else {
            let text = read(body, MAX_ANSWER_BYTES).await.map_err(Miss::NextTarget)?;
            // Waited for, so that the caller's next call sees it on every node.
            futures_util::future::join_all(self.meter_answer(target, &text)).await;
            let text = self.translate_answer(dialect, text).map_err(|error| Miss::Final(None, error))?;
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            ResponseBody::full(text)
        };
        if let Some(name) = &provider.name_header {
            headers.insert(&X_PORTICO_PROVIDER, name.clone());
        }
        if let Some(model) = &target.model_header {
            headers.insert(&X_PORTICO_MODEL, model.clone());
        }
        let mut answer = Response::new(answer);
        *answer.headers_mut() = headers;
        Ok(answer)
    }

    /// Records what a whole answer used: its reported usage, or an estimate from the
    /// request's size and the answer's text.
    fn meter_answer(&self, target: &Target, text: &[u8]) -> Vec<Pending> {
        let Some(meter) = &self.meter else { return Vec::new() };
        let dialect = target.provider.dialect;
        let record = target.billing.usage(dialect.read_usage(text), || {
            let written = match self.operation {
                Operation::Chat => dialect.parse_response(text).map_or(0, |answer| answer.written_bytes()),
                Operation::Embeddings | Operation::CountTokens => 0,
            };
            Usage::estimate(self.fields.body().len(), written)
        });
        meter.record(record)
    }

    /// A whole answer in the client's format.
    fn translate_answer(&self, dialect: Dialect, text: Bytes) -> Result<Bytes, AiError> {
        if self.operation == Operation::Embeddings {
            return embeddings::answer(&text, self.base64).map(Bytes::from);
        }
        if dialect.passes_through(self.client) {
            return Ok(text);
        }
        let mut answer = dialect.parse_response(&text)?;
        if let Some(Ok(neutral)) = &self.neutral {
            if neutral.wants_json() {
                answer.unwrap_json_tool();
            }
        }
        Ok(self.client.write_response(&answer).into())
    }
}

/// The client's `stream_options` object (empty when it sent none).
fn stream_options(fields: &Fields) -> serde_json::Map<String, Value> {
    let options = fields.get("stream_options").and_then(|text| serde_json::from_str::<Value>(text).ok());
    match options {
        Some(Value::Object(options)) => options,
        _ => serde_json::Map::new(),
    }
}

/// Reads a whole body, up to `limit` bytes.
async fn read(body: ResponseBody, limit: usize) -> Result<Bytes, AiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(AiError::new(ErrorKind::Api, "the provider's answer could not be read whole")),
    }
}

/// How long a provider asked to wait: `retry-after-ms` or `retry-after` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok().filter(|n| *n >= 0.0);
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

/// `GET /v1/models` and `GET /v1/models/{id}`: the models this service answers, in
/// Anthropic's shape for Anthropic clients (they send `anthropic-version`).
fn models(endpoint: &AiEndpoint, headers: &HeaderMap, id: Option<&str>) -> Response<ResponseBody> {
    let anthropic = headers.contains_key("anthropic-version");
    let format = if anthropic { Format::Anthropic } else { Format::OpenAi };
    let describe = |name: &str| {
        if anthropic {
            json!({"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"})
        } else {
            json!({"id": name, "object": "model", "created": 0, "owned_by": "portico"})
        }
    };
    let body = match id {
        Some(id) => match endpoint.models.get(id) {
            Some(model) => describe(&model.name),
            None => {
                let error =
                    AiError::new(ErrorKind::NotFound, format!("The model `{id}` does not exist or is not served here"))
                        .with_code("model_not_found");
                return error_response(format, None, &error);
            }
        },
        None => {
            let mut names: Vec<&str> = endpoint.models.keys().map(|n| &**n).collect();
            names.sort_unstable();
            let data: Vec<Value> = names.iter().map(|n| describe(n)).collect();
            if anthropic {
                json!({"data": data, "has_more": false, "first_id": names.first(), "last_id": names.last()})
            } else {
                json!({"object": "list", "data": data})
            }
        }
    };
    let mut response = Response::new(ResponseBody::full(serde_json::to_vec(&body).unwrap_or_default().into()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A call refused for a spent budget: 429 that the official SDKs do not retry
/// (`x-should-retry: false`), since the budget renews only at `retry-after`.
fn budget_spent(format: Format, spent: &BudgetSpent) -> Response<ResponseBody> {
    let mut response = error_response(format, None, &spent.error);
    let headers = response.headers_mut();
    headers.insert("x-should-retry", HeaderValue::from_static("false"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from(spent.renews_in.max(1)));
    response
}

/// `error` as a client of `format` expects it, with `status` or the one its kind maps to.
pub(crate) fn error_response(format: Format, status: Option<StatusCode>, error: &AiError) -> Response<ResponseBody> {
    let status = status
        .or_else(|| StatusCode::from_u16(error.kind.status(format)).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(ResponseBody::full(format.write_error(error).into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
