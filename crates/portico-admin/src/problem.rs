//! Errors as RFC 9457 problem details (`application/problem+json`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use portico_model::{Problem, Problems};
use portico_store::StoreError;
use serde::Serialize;

/// An error the admin API answers with.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    /// A short identifier, also the last part of the problem `type`.
    kind: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<Problem>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ProblemBody {
    /// `urn:portico:problem:<kind>`.
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    /// One entry per field that is wrong, with its path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<Problem>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, kind, title, detail: detail.into(), errors: Vec::new() }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn invalid(problems: Problems) -> ApiError {
        let detail = match problems.0.len() {
            1 => "1 field is invalid".to_owned(),
            n => format!("{n} fields are invalid"),
        };
        ApiError {
            errors: problems.0,
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "Invalid configuration", detail)
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Admin token required", detail)
    }

    pub fn read_only() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only",
            "Read-only in file mode",
            "Portico serves a configuration file; change the file (or use `portico apply` with a store) instead",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let detail = error.to_string();
        match error {
            StoreError::Invalid(problems) => ApiError::invalid(problems),
            StoreError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail),
            StoreError::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already-exists", "Already exists", detail)
            }
            StoreError::VersionMismatch { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version-mismatch",
                "Changed by someone else",
                format!("{detail}; read it again and reapply your change"),
            ),
            StoreError::InUse(_) => ApiError::new(StatusCode::CONFLICT, "in-use", "Still in use", detail),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Store unavailable",
                    "the store could not complete the request; the gateway keeps serving its current configuration",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: format!("urn:portico:problem:{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "Not found", "no admin API endpoint at this path")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not support this method",
    )
}
