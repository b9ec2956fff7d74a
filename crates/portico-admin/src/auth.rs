//! Admin authentication: `Authorization: Bearer <token>` on every protected route.

use crate::{AdminState, ApiError};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use portico_store::Scope;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

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
    let (token_id, scope) = match state.store.verify_token(secret).await {
        Ok(Some(token)) => {
            state.verified.remember(secret, &token.id, token.scope);
            (token.id, token.scope)
        }
        Ok(None) => return Err(ApiError::unauthorized("the admin token is unknown or revoked")),
        // With the store down, tokens verified before still open the admin API, so that an
        // operator can see what the gateway is doing (writes fail anyway). The store is the
        // authority again as soon as it answers, so revocations are never bypassed for long.
        Err(error) => match state.verified.recall(secret) {
            Some(known) => known,
            None => return Err(error.into()),
        },
    };
    // Registry tokens are for services announcing themselves, and nothing else.
    if scope == Scope::Registry && !request.uri().path().starts_with(crate::REGISTRY_PREFIX) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not allowed for this token",
            format!("a registry token may only use {}*", crate::REGISTRY_PREFIX),
        ));
    }
    tracing::debug!(token = %token_id, method = %request.method(), path = %request.uri().path(), "admin request");
    Ok(next.run(request).await)
}

/// Tokens the store has confirmed, by SHA-256 of the secret, for use while it is unreachable.
#[derive(Default)]
pub(crate) struct VerifiedTokens(Mutex<HashMap<[u8; 32], (String, Scope)>>);

impl VerifiedTokens {
    fn remember(&self, secret: &str, id: &str, scope: Scope) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(Sha256::digest(secret.as_bytes()).into(), (id.to_owned(), scope));
    }

    fn recall(&self, secret: &str) -> Option<(String, Scope)> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&<[u8; 32]>::from(Sha256::digest(secret.as_bytes()))).cloned()
    }
}
