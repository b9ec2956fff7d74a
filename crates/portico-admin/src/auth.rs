//! Admin authentication: `Authorization: Bearer <token>` on every protected route.

use crate::{AdminState, ApiError};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

pub(crate) async fn require_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(secret) = presented else {
        return Err(ApiError::unauthorized("send an admin token as `Authorization: Bearer <token>`"));
    };
    match state.store.verify_token(secret).await? {
        Some(token) => {
            tracing::debug!(token = %token.id, method = %request.method(), path = %request.uri().path(), "admin request");
            Ok(next.run(request).await)
        }
        None => Err(ApiError::unauthorized("the admin token is unknown or revoked")),
    }
}
