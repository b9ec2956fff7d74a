//! `GET/PUT /api/v1/logging`: the filter of Portico's own log, changed while it runs.

use crate::{AdminState, ApiError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Changes what Portico's own log records, while it runs.
pub trait LogFilter: Send + Sync {
    /// The filter now, in `PORTICO_LOG` syntax.
    fn current(&self) -> String;
    /// Replaces the filter; fails, changing nothing, when `directives` do not parse.
    fn set(&self, directives: &str) -> Result<(), String>;
}

/// The log filter, in `PORTICO_LOG` syntax: a level (`debug`), or levels by module
/// (`info,portico_gateway=debug`).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Logging {
    filter: String,
}

fn installed(state: &AdminState) -> Result<&dyn LogFilter, ApiError> {
    state.log_filter.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            "this Portico runs inside another program, which owns the log",
        )
    })
}

/// The log filter now.
#[utoipa::path(get, path = "/api/v1/logging", tag = "system", responses((status = 200, body = Logging)))]
pub(crate) async fn get(State(state): State<AdminState>) -> Result<Json<Logging>, ApiError> {
    Ok(Json(Logging { filter: installed(&state)?.current() }))
}

/// Replaces the log filter, at once and until the next change or restart.
#[utoipa::path(put, path = "/api/v1/logging", tag = "system", request_body = Logging,
    responses((status = 200, body = Logging), (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn put(State(state): State<AdminState>, body: Bytes) -> Result<Json<Logging>, ApiError> {
    let filter = installed(&state)?;
    let wanted: Logging = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
        .map_err(crate::entities::shape_error)?;
    filter.set(wanted.filter.trim()).map_err(|message| {
        let problems =
            portico_model::Problems(vec![portico_model::Problem { path: "filter".into(), message, line: None }]);
        ApiError::invalid(problems)
    })?;
    Ok(Json(Logging { filter: filter.current() }))
}
