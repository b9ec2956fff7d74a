//! Admin tokens and the audit log: for `admin` tokens only.

use crate::{AdminState, ApiError};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use portico_store::{AdminToken, AuditEntry, AuditQuery, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// List admin tokens (never their secrets), revoked ones included.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<AdminToken>)))]
pub(crate) async fn list(State(state): State<AdminState>) -> Result<Json<Vec<AdminToken>>, ApiError> {
    Ok(Json(state.store.list_tokens().await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTokenRequest {
    name: String,
    /// `admin`, `editor`, `viewer` or `registry`.
    role: Role,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    #[serde(flatten)]
    token: AdminToken,
    /// The token itself: shown here once, and never again.
    secret: String,
}

/// Create an admin token; its secret is in this response only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create(
    State(state): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let request: NewTokenRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("expected {{\"name\": ..., \"role\": \"admin|editor|viewer|registry\"}}: {e}"))
    })?;
    if request.name.trim().is_empty() || request.name.len() > 128 {
        return Err(ApiError::bad_request("a token needs a name of 1 to 128 characters"));
    }
    let new = state.writer().create_token(request.name.trim(), request.role).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token: new.token, secret: new.secret })))
}

/// Revoke an admin token by id.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn revoke(State(state): State<AdminState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let known = state.store.list_tokens().await?.into_iter().any(|t| t.id == id && t.revoked_at.is_none());
    if !known {
        return Err(portico_store::StoreError::NotFound { kind: "admin token", name: id }.into());
    }
    state.writer().revoke_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AuditPage {
    items: Vec<AuditEntry>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<String>,
}

const MAX_AUDIT_PAGE: i64 = 1000;

/// The audit log, newest first: every change made through the admin API or `portico apply`,
/// who made it, and the entity before and after (without secrets).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(("kind" = Option<String>, Query, description = "service, route, consumer, global or admin_token"),
           ("name" = Option<String>, Query, description = "The entity's name"),
           ("actor" = Option<String>, Query, description = "The id of the token that made the change, or `cli`"),
           ("since" = Option<i64>, Query, description = "Only changes at or after this time (ms since the epoch)"),
           ("until" = Option<i64>, Query, description = "Only changes before this time (ms since the epoch)"),
           ("before" = Option<String>, Query, description = "Only changes older than the one with this id (`next_before`)"),
           ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 100)")),
    responses((status = 200, body = AuditPage), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn audit(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let mut filter = AuditQuery { limit: 100, ..AuditQuery::default() };
    for pair in query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value.parse::<i64>().map_err(|_| ApiError::bad_request(format!("`{key}` must be a number, not `{value}`")))
        };
        match key {
            "kind" => filter.kind = Some(value.to_owned()),
            "name" => filter.name = Some(value.to_owned()),
            "actor" => filter.actor_id = Some(value.to_owned()),
            "since" => filter.since = Some(number()?),
            "until" => filter.until = Some(number()?),
            "before" => filter.before = Some(value.to_owned()),
            "limit" => {
                filter.limit = number()?;
                if !(1..=MAX_AUDIT_PAGE).contains(&filter.limit) {
                    return Err(ApiError::bad_request(format!("`limit` must be from 1 to {MAX_AUDIT_PAGE}")));
                }
            }
            other => return Err(ApiError::bad_request(format!("unknown query parameter `{other}`"))),
        }
    }
    let items = state.store.audit(&filter).await?;
    let next_before = (items.len() as i64 == filter.limit).then(|| items.last().map(|e| e.id.clone())).flatten();
    Ok(Json(AuditPage { items, next_before }))
}
