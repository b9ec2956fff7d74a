//! The service registry's endpoints: instances register, heartbeat and deregister
//! themselves. A registry-scoped token is enough for these (and only these).

use crate::problem::{ApiError, ProblemBody};
use crate::AdminState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use portico_model::{validate_name, Problems, MAX_MS, MAX_WEIGHT};
use portico_store::{now_ms, Instance};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A registration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Registration {
    /// `host:port` where the instance takes requests.
    address: String,
    #[serde(default = "one")]
    weight: u32,
    /// The instance leaves the rotation when no heartbeat came for this long.
    #[serde(default = "thirty_seconds")]
    ttl_ms: u64,
}

fn one() -> u32 {
    1
}

fn thirty_seconds() -> u64 {
    30_000
}

/// A registered instance.
#[derive(Serialize, ToSchema)]
pub(crate) struct InstanceBody {
    /// Use it to heartbeat and deregister.
    id: String,
    service: String,
    address: String,
    weight: u32,
    ttl_ms: u64,
    /// Time left before the instance lapses without a heartbeat.
    expires_in_ms: i64,
}

impl From<Instance> for InstanceBody {
    fn from(instance: Instance) -> InstanceBody {
        InstanceBody {
            expires_in_ms: (instance.expires_at - now_ms()).max(0),
            id: instance.id,
            service: instance.service,
            address: instance.address,
            weight: instance.weight,
            ttl_ms: instance.ttl_ms,
        }
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|message| ApiError::bad_request(format!("registry name: {message}")))
}

/// Registers an instance of `name` (or refreshes the registration of the same address).
#[utoipa::path(post, path = "/api/v1/registry/{name}/instances", tag = "registry", request_body = Registration,
    params(("name" = String, Path, description = "Registry name, as services' `discovery.registry` use it")),
    responses((status = 201, body = InstanceBody), (status = 422, body = ProblemBody)))]
pub(crate) async fn register(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<InstanceBody>), ApiError> {
    check_name(&name)?;
    let registration: Registration = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut problems = Problems::default();
    if let Err(message) = portico_model::parse_address(&registration.address) {
        problems.push("address", message);
    }
    if registration.weight == 0 || registration.weight > MAX_WEIGHT {
        problems.push("weight", format!("must be between 1 and {MAX_WEIGHT}"));
    }
    if !(100..=MAX_MS).contains(&registration.ttl_ms) {
        problems.push("ttl_ms", format!("must be between 100 and {MAX_MS} milliseconds"));
    }
    problems.into_result().map_err(ApiError::invalid)?;
    let instance =
        state.store.register_instance(&name, &registration.address, registration.weight, registration.ttl_ms).await?;
    Ok((StatusCode::CREATED, Json(instance.into())))
}

/// Keeps an instance alive for another TTL. A lapsed instance gets 404 and must register
/// again.
#[utoipa::path(put, path = "/api/v1/registry/{name}/instances/{id}/heartbeat", tag = "registry",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = InstanceBody), (status = 404, body = ProblemBody)))]
pub(crate) async fn heartbeat(
    State(state): State<AdminState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<InstanceBody>, ApiError> {
    Ok(Json(state.store.heartbeat(&name, &id).await?.into()))
}

/// Takes an instance out of the registry at once (on shutdown, say).
#[utoipa::path(delete, path = "/api/v1/registry/{name}/instances/{id}", tag = "registry",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemBody)))]
pub(crate) async fn deregister(
    State(state): State<AdminState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.deregister(&name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The live instances of `name`.
#[utoipa::path(get, path = "/api/v1/registry/{name}/instances", tag = "registry",
    params(("name" = String, Path)),
    responses((status = 200, body = [InstanceBody])))]
pub(crate) async fn list(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<InstanceBody>>, ApiError> {
    let instances = state.store.live_instances(Some(&name)).await?;
    Ok(Json(instances.into_iter().map(InstanceBody::from).collect()))
}
