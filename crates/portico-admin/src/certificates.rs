//! TLS certificates. Private keys are sealed with the master key before they are stored and
//! never shown again.

use crate::entities::{self, Page, Versioned};
use crate::{AdminState, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use portico_model::Certificate;

/// List certificates (without their keys).
#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates",
    params(("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("after" = Option<String>, Query, description = "Return names after this one (from `next`)")),
    responses((status = 200, body = Page<Certificate>), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn list(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<Certificate>>, ApiError> {
    entities::list::<Certificate>(state, query).await
}

/// Add a certificate; its key is sealed with the master key (422 without one).
#[utoipa::path(post, path = "/api/v1/certificates", tag = "certificates", request_body = Certificate,
    responses((status = 201, body = Versioned<Certificate>), (status = 409, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    entities::create::<Certificate>(state, body).await
}

/// Read a certificate (without its key).
#[utoipa::path(get, path = "/api/v1/certificates/{name}", tag = "certificates",
    responses((status = 200, body = Versioned<Certificate>), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn get_one(State(state): State<AdminState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    entities::get_one::<Certificate>(state, name).await
}

/// Replace a certificate; the TLS listener presents the new one from the next handshake.
/// Without `key`, the stored key is kept.
#[utoipa::path(put, path = "/api/v1/certificates/{name}", tag = "certificates", request_body = Certificate,
    responses((status = 200, body = Versioned<Certificate>), (status = 201, body = Versioned<Certificate>),
              (status = 412, body = crate::problem::ProblemBody), (status = 422, body = crate::problem::ProblemBody),
              (status = 428, body = crate::problem::ProblemBody)))]
pub(crate) async fn put(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    entities::put::<Certificate>(state, name, headers, body).await
}

/// Delete a certificate.
#[utoipa::path(delete, path = "/api/v1/certificates/{name}", tag = "certificates",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    entities::delete::<Certificate>(state, name, headers).await
}
