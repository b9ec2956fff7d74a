//! Consumers and their credentials, and the global settings.
//!
//! Consumers are ordinary entities, except that their secrets are hashed before they are
//! stored and never shown again. Credentials also have their own endpoints, so that a key can
//! be issued or revoked without editing the whole consumer; an issued key is shown once, in
//! the response that creates it.

use crate::entities::{self, prepared, versioned, Page, Versioned};
use crate::{AdminState, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use portico_model::{generate_key, Consumer, Credential, Global, KeyCredential};
use portico_store::{Precondition, StoreError, Stored, GLOBAL};
use serde::Serialize;
use utoipa::ToSchema;

/// List consumers.
#[utoipa::path(get, path = "/api/v1/consumers", tag = "consumers",
    params(("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("after" = Option<String>, Query, description = "Return names after this one (from `next`)")),
    responses((status = 200, body = Page<Consumer>), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn list_consumers(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<Consumer>>, ApiError> {
    entities::list::<Consumer>(state, query).await
}

/// Create a consumer. Keys and passwords given in plain text are stored only as hashes.
#[utoipa::path(post, path = "/api/v1/consumers", tag = "consumers", request_body = Consumer,
    responses((status = 201, body = Versioned<Consumer>), (status = 409, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create_consumer(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    entities::create::<Consumer>(state, body).await
}

/// Read a consumer; credentials are shown without their secrets.
#[utoipa::path(get, path = "/api/v1/consumers/{name}", tag = "consumers",
    responses((status = 200, body = Versioned<Consumer>), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn get_consumer(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    entities::get_one::<Consumer>(state, name).await
}

/// Create or update a consumer. Credentials sent back as read (without secrets) keep theirs.
#[utoipa::path(put, path = "/api/v1/consumers/{name}", tag = "consumers", request_body = Consumer,
    responses((status = 200, body = Versioned<Consumer>), (status = 201, body = Versioned<Consumer>),
              (status = 412, body = crate::problem::ProblemBody), (status = 422, body = crate::problem::ProblemBody),
              (status = 428, body = crate::problem::ProblemBody)))]
pub(crate) async fn put_consumer(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    entities::put::<Consumer>(state, name, headers, body).await
}

/// Delete a consumer that no access list names.
#[utoipa::path(delete, path = "/api/v1/consumers/{name}", tag = "consumers",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub(crate) async fn delete_consumer(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    entities::delete::<Consumer>(state, name, headers).await
}

/// A consumer's credentials, without their secrets.
#[utoipa::path(get, path = "/api/v1/consumers/{name}/credentials", tag = "consumers",
    responses((status = 200, body = Vec<Credential>), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn list_credentials(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<Credential>>, ApiError> {
    let mut consumer = entities::find::<Consumer>(&state, &name).await?.value;
    consumer.redact();
    Ok(Json(consumer.credentials))
}

/// A credential as created: a generated key is shown here, and never again.
#[derive(Serialize, ToSchema)]
pub(crate) struct IssuedCredential {
    #[serde(flatten)]
    credential: Credential,
    /// The generated API key; store it now, Portico keeps only its hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// Add a credential. `{"type": "key_auth"}` issues a random key, returned once;
/// `{"type": "basic_auth", "username": ..., "password": ...}` adds a password login.
#[utoipa::path(post, path = "/api/v1/consumers/{name}/credentials", tag = "consumers", request_body = Credential,
    responses((status = 201, body = IssuedCredential), (status = 404, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create_credential(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    entities::writable(&state)?;
    let mut credential: Credential = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
        .map_err(entities::shape_error)?;
    let mut issued = None;
    if let Credential::KeyAuth(KeyCredential { key: key @ None, key_sha256: None, .. }) = &mut credential {
        let new_key = generate_key();
        *key = Some(new_key.clone());
        issued = Some(new_key);
    }
    // The credential is checked on its own first, so that problems are reported relative
    // to it.
    let alone = Consumer { name: name.clone(), credentials: vec![credential.clone()], ..Consumer::default() };
    alone.validate().map_err(|problems| ApiError::invalid(problems.relative_to("credentials[0]")))?;
    // Another writer may change the consumer between our read and write; try again then.
    for _ in 0..5 {
        let stored = entities::find::<Consumer>(&state, &name).await?;
        let mut consumer = stored.value.clone();
        consumer.credentials.push(credential.clone());
        let index = consumer.credentials.len() - 1;
        let consumer = prepared(&state, consumer, Some(stored.value)).await?;
        match state.writer().put(consumer, Precondition::Version(stored.version)).await {
            Ok(mut saved) => {
                saved.value.redact();
                let credential = saved.value.credentials.swap_remove(index);
                let body = IssuedCredential { credential, key: issued };
                return Ok((StatusCode::CREATED, Json(body)).into_response());
            }
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(StoreError::Invalid(problems)) => {
                return Err(ApiError::invalid(problems.relative_to(&format!("credentials[{index}]"))))
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::new(StatusCode::CONFLICT, "conflict", "Busy", "the consumer kept changing; try again"))
}

/// Revoke a credential.
#[utoipa::path(delete, path = "/api/v1/consumers/{name}/credentials/{id}", tag = "consumers",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn delete_credential(
    State(state): State<AdminState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    entities::writable(&state)?;
    for _ in 0..5 {
        let stored = entities::find::<Consumer>(&state, &name).await?;
        let mut consumer = stored.value;
        let before = consumer.credentials.len();
        consumer.credentials.retain(|c| c.id() != id);
        if consumer.credentials.len() == before {
            return Err(StoreError::NotFound { kind: "credential", name: id }.into());
        }
        match state.writer().put(consumer, Precondition::Version(stored.version)).await {
            Ok(_) => return Ok(StatusCode::NO_CONTENT),
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::new(StatusCode::CONFLICT, "conflict", "Busy", "the consumer kept changing; try again"))
}

/// Read the global settings: trusted proxies and the policies every route gets.
#[utoipa::path(get, path = "/api/v1/global", tag = "global",
    responses((status = 200, body = Versioned<Global>)))]
pub(crate) async fn get_global(State(state): State<AdminState>) -> Result<Response, ApiError> {
    match entities::get_one::<Global>(state, GLOBAL.to_owned()).await {
        // Never written: the defaults, at version 0.
        Err(error) if error.status() == StatusCode::NOT_FOUND => {
            let stored = Stored { value: Global::default(), version: 0, created_at: 0, updated_at: 0 };
            Ok(Json(versioned(stored)).into_response())
        }
        other => other,
    }
}

/// Replace the global settings. Send `If-Match` with the version read (0 before the first
/// write).
#[utoipa::path(put, path = "/api/v1/global", tag = "global", request_body = Global,
    responses((status = 200, body = Versioned<Global>), (status = 201, body = Versioned<Global>),
              (status = 412, body = crate::problem::ProblemBody), (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn put_global(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    entities::put::<Global>(state, GLOBAL.to_owned(), headers, body).await
}
