//! Prompt APIs: prompt templates with the JSON schema of their variables, in numbered
//! versions; a route serves one version. A version can be tried (rendered with sample
//! variables, without calling a model) before a route is moved to it.

use crate::entities::{self, Page, Versioned};
use crate::{AdminState, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use portico_model::{AiPrompt, Problem, Problems};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// List prompts.
#[utoipa::path(get, path = "/api/v1/ai/prompts", tag = "ai",
    params(("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("after" = Option<String>, Query, description = "Return names after this one (from `next`)")),
    responses((status = 200, body = Page<AiPrompt>), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn list(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<AiPrompt>>, ApiError> {
    entities::list::<AiPrompt>(state, query).await
}

/// Add a prompt; its templates and variable schemas are checked.
#[utoipa::path(post, path = "/api/v1/ai/prompts", tag = "ai", request_body = AiPrompt,
    responses((status = 201, body = Versioned<AiPrompt>), (status = 409, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    entities::create::<AiPrompt>(state, body).await
}

/// Read a prompt.
#[utoipa::path(get, path = "/api/v1/ai/prompts/{name}", tag = "ai",
    responses((status = 200, body = Versioned<AiPrompt>), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn get_one(State(state): State<AdminState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    entities::get_one::<AiPrompt>(state, name).await
}

/// Replace a prompt (add a version by sending the prompt with it).
#[utoipa::path(put, path = "/api/v1/ai/prompts/{name}", tag = "ai", request_body = AiPrompt,
    responses((status = 200, body = Versioned<AiPrompt>), (status = 201, body = Versioned<AiPrompt>),
              (status = 412, body = crate::problem::ProblemBody), (status = 422, body = crate::problem::ProblemBody),
              (status = 428, body = crate::problem::ProblemBody)))]
pub(crate) async fn put(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    entities::put::<AiPrompt>(state, name, headers, body).await
}

/// Delete a prompt (409 while a route serves it).
#[utoipa::path(delete, path = "/api/v1/ai/prompts/{name}", tag = "ai",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub(crate) async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    entities::delete::<AiPrompt>(state, name, headers).await
}

/// One message of a rendered prompt.
#[derive(Serialize, ToSchema)]
pub(crate) struct RenderedMessage {
    role: &'static str,
    content: String,
}

/// What a version of a prompt sends for some variables.
#[derive(Serialize, ToSchema)]
pub(crate) struct Rendered {
    model: String,
    messages: Vec<RenderedMessage>,
}

/// Try a version: the messages it would send for the variables in the body (a JSON
/// object), without calling a model; variables the schema refuses get a 422 naming each.
#[utoipa::path(post, path = "/api/v1/ai/prompts/{name}/versions/{version}/render", tag = "ai",
    request_body = Object,
    responses((status = 200, body = Rendered), (status = 404, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn render(
    State(state): State<AdminState>,
    Path((name, version)): Path<(String, u32)>,
    body: Bytes,
) -> Result<Json<Rendered>, ApiError> {
    let prompt = entities::find::<AiPrompt>(&state, &name).await?.value;
    let found = prompt.version(version).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("prompt `{name}` has no version {version}"),
        )
    })?;
    let compiled = found.compile().map_err(ApiError::invalid)?;
    let variables: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let messages = compiled.render(variables).map_err(|problems| {
        let problems = problems.into_iter().map(|message| Problem { path: "variables".into(), message, line: None });
        ApiError::invalid(Problems(problems.collect()))
    })?;
    let messages = messages.into_iter().map(|(role, content)| RenderedMessage { role: role.as_str(), content });
    Ok(Json(Rendered { model: found.model.clone(), messages: messages.collect() }))
}
