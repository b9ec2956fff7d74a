//! The AI gateway's configuration: providers (with their key pools, sealed with the master
//! key and never shown again) and models.

use crate::entities::{self, Page, Versioned};
use crate::{AdminState, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use portico_model::{AiModel, AiProvider};

/// List AI providers (without their keys).
#[utoipa::path(get, path = "/api/v1/ai/providers", tag = "ai",
    params(("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("after" = Option<String>, Query, description = "Return names after this one (from `next`)")),
    responses((status = 200, body = Page<AiProvider>), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn list_providers(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<AiProvider>>, ApiError> {
    entities::list::<AiProvider>(state, query).await
}

/// Add an AI provider; its keys are sealed with the master key (422 without one).
#[utoipa::path(post, path = "/api/v1/ai/providers", tag = "ai", request_body = AiProvider,
    responses((status = 201, body = Versioned<AiProvider>), (status = 409, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create_provider(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    entities::create::<AiProvider>(state, body).await
}

/// Read an AI provider (without its keys).
#[utoipa::path(get, path = "/api/v1/ai/providers/{name}", tag = "ai",
    responses((status = 200, body = Versioned<AiProvider>), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn get_provider(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    entities::get_one::<AiProvider>(state, name).await
}

/// Replace an AI provider. A key sent without `key` keeps its stored value.
#[utoipa::path(put, path = "/api/v1/ai/providers/{name}", tag = "ai", request_body = AiProvider,
    responses((status = 200, body = Versioned<AiProvider>), (status = 201, body = Versioned<AiProvider>),
              (status = 412, body = crate::problem::ProblemBody), (status = 422, body = crate::problem::ProblemBody),
              (status = 428, body = crate::problem::ProblemBody)))]
pub(crate) async fn put_provider(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    entities::put::<AiProvider>(state, name, headers, body).await
}

/// Delete an AI provider (409 while a model uses it).
#[utoipa::path(delete, path = "/api/v1/ai/providers/{name}", tag = "ai",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub(crate) async fn delete_provider(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    entities::delete::<AiProvider>(state, name, headers).await
}

/// List AI models.
#[utoipa::path(get, path = "/api/v1/ai/models", tag = "ai",
    params(("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("after" = Option<String>, Query, description = "Return names after this one (from `next`)")),
    responses((status = 200, body = Page<AiModel>), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn list_models(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<AiModel>>, ApiError> {
    entities::list::<AiModel>(state, query).await
}

/// Add an AI model: a name clients ask for, and the provider models behind it.
#[utoipa::path(post, path = "/api/v1/ai/models", tag = "ai", request_body = AiModel,
    responses((status = 201, body = Versioned<AiModel>), (status = 409, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create_model(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    entities::create::<AiModel>(state, body).await
}

/// Read an AI model.
#[utoipa::path(get, path = "/api/v1/ai/models/{name}", tag = "ai",
    responses((status = 200, body = Versioned<AiModel>), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn get_model(State(state): State<AdminState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    entities::get_one::<AiModel>(state, name).await
}

/// Replace an AI model.
#[utoipa::path(put, path = "/api/v1/ai/models/{name}", tag = "ai", request_body = AiModel,
    responses((status = 200, body = Versioned<AiModel>), (status = 201, body = Versioned<AiModel>),
              (status = 412, body = crate::problem::ProblemBody), (status = 422, body = crate::problem::ProblemBody),
              (status = 428, body = crate::problem::ProblemBody)))]
pub(crate) async fn put_model(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    entities::put::<AiModel>(state, name, headers, body).await
}

/// Delete an AI model (409 while an AI service lists it).
#[utoipa::path(delete, path = "/api/v1/ai/models/{name}", tag = "ai",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub(crate) async fn delete_model(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    entities::delete::<AiModel>(state, name, headers).await
}

/// The run-time state of a provider's key pool.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct KeyPool {
    provider: String,
    keys: Vec<KeyHealth>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct KeyHealth {
    name: String,
    weight: u32,
    /// The key may be used now: it is neither resting nor disabled.
    available: bool,
    /// The provider refused the key (401 or 403); it stays out until the configuration changes.
    disabled: bool,
    /// The provider's status and message when it refused the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_because: Option<String>,
    /// How long the key still rests after a 429 (the provider's `Retry-After`).
    resting_for_ms: u64,
    /// Requests sent with the key since Portico started.
    requests: u64,
    /// 429 answers the key got.
    rate_limited: u64,
}

/// The state of an AI provider's keys: which may be used, which rest after a 429, which were
/// refused. Key values never appear.
#[utoipa::path(get, path = "/api/v1/ai/providers/{name}/keys", tag = "ai",
    responses((status = 200, body = KeyPool), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn provider_keys(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<KeyPool>, ApiError> {
    let keys = state.snapshots.load().ai_keys(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no AI provider `{name}` is being served"),
        )
    })?;
    let keys = keys
        .into_iter()
        .map(|k| KeyHealth {
            name: k.name,
            weight: k.weight,
            available: k.available,
            disabled: k.disabled,
            disabled_because: k.disabled_because,
            resting_for_ms: k.resting_for_ms,
            requests: k.requests,
            rate_limited: k.rate_limited,
        })
        .collect();
    Ok(Json(KeyPool { provider: name, keys }))
}
