//! AI budgets: caps on what a consumer, a team or one API key may spend on AI calls per day
//! or month, and where each stands in its current period.

use crate::entities::{self, Page, Versioned};
use crate::{AdminState, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use portico_model::AiBudget;
use serde::Serialize;
use utoipa::ToSchema;

/// List AI budgets.
#[utoipa::path(get, path = "/api/v1/ai/budgets", tag = "ai",
    params(("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("after" = Option<String>, Query, description = "Return names after this one (from `next`)")),
    responses((status = 200, body = Page<AiBudget>), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn list(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<AiBudget>>, ApiError> {
    entities::list::<AiBudget>(state, query).await
}

/// Add an AI budget for a consumer, a team, or one of a consumer's API keys.
#[utoipa::path(post, path = "/api/v1/ai/budgets", tag = "ai", request_body = AiBudget,
    responses((status = 201, body = Versioned<AiBudget>), (status = 409, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    entities::create::<AiBudget>(state, body).await
}

/// Read an AI budget.
#[utoipa::path(get, path = "/api/v1/ai/budgets/{name}", tag = "ai",
    responses((status = 200, body = Versioned<AiBudget>), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn get_one(State(state): State<AdminState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    entities::get_one::<AiBudget>(state, name).await
}

/// Replace an AI budget. What it has spent in the current period is kept as long as it
/// counts the same calls over the same period.
#[utoipa::path(put, path = "/api/v1/ai/budgets/{name}", tag = "ai", request_body = AiBudget,
    responses((status = 200, body = Versioned<AiBudget>), (status = 201, body = Versioned<AiBudget>),
              (status = 412, body = crate::problem::ProblemBody), (status = 422, body = crate::problem::ProblemBody),
              (status = 428, body = crate::problem::ProblemBody)))]
pub(crate) async fn put(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    entities::put::<AiBudget>(state, name, headers, body).await
}

/// Delete an AI budget.
#[utoipa::path(delete, path = "/api/v1/ai/budgets/{name}", tag = "ai",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    entities::delete::<AiBudget>(state, name, headers).await
}

/// Where a budget stands in its current period.
#[derive(Serialize, ToSchema)]
pub(crate) struct BudgetUsage {
    budget: String,
    /// The current period, in milliseconds since the epoch (UTC days or months).
    period_start: i64,
    period_end: i64,
    spent_usd: f64,
    /// Input and output tokens.
    spent_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    /// The budget is spent: its calls are refused until `period_end`.
    spent: bool,
}

/// What a budget has spent in its current period, across the cluster when Portico shares
/// budgets through Redis.
#[utoipa::path(get, path = "/api/v1/ai/budgets/{name}/usage", tag = "ai",
    responses((status = 200, body = BudgetUsage), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn usage(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<BudgetUsage>, ApiError> {
    let snapshot = state.snapshots.load();
    let report = snapshot.ai_budget(&name).await.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", "Not found", format!("no AI budget `{name}` is being served"))
    })?;
    Ok(Json(BudgetUsage {
        budget: name,
        period_start: report.period_start * 1000,
        period_end: report.period_end * 1000,
        spent_usd: report.spent_usd,
        spent_tokens: report.spent_tokens,
        max_usd: report.max_usd,
        max_tokens: report.max_tokens,
        spent: report.spent,
    }))
}
