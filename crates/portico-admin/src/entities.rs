//! CRUD for configuration entities (services, routes, consumers, the global settings), with
//! optimistic concurrency.
//!
//! Every entity is returned with its `version`, also sent as a strong `ETag`. An update must
//! say which version it was based on (`If-Match`, or a `version` field in the body); a
//! create-only write sends `If-None-Match: *` or uses POST. A stale version gets 412.

use crate::{AdminState, ApiError, ConfigSource};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use portico_model::{
    AiBudget, AiModel, AiPrompt, AiProvider, Certificate, Consumer, Global, HoldsSecrets, MasterKey, Problem, Problems,
    Route, Service,
};
use portico_store::{Entity, Kind, Precondition, Stored};
use serde::Serialize;
use utoipa::ToSchema;

/// An entity with the metadata the store keeps for it.
#[derive(Serialize, ToSchema)]
pub(crate) struct Versioned<T> {
    #[serde(flatten)]
    value: T,
    /// Grows by one with every change; send it back in `If-Match` to update.
    version: i64,
    /// Unix seconds.
    created_at: i64,
    /// Unix seconds.
    updated_at: i64,
}

/// One page of a listing, in name order.
#[derive(Serialize, ToSchema)]
pub(crate) struct Page<T> {
    items: Vec<Versioned<T>>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Fields of the response that a client may send back unchanged in a PUT body.
const METADATA_FIELDS: [&str; 3] = ["version", "created_at", "updated_at"];

/// How the admin API shows and prepares an entity: secrets sent in plain text are hashed
/// before they are stored, and hashes are never shown.
pub(crate) trait AdminEntity: Entity {
    /// Whether the entity holds secrets (and [`AdminEntity::seal`] has work to do).
    const HAS_SECRETS: bool = false;
    fn redact(&mut self) {}
    /// Gives back the secrets of `previous` to what was sent without them (as read).
    fn restore(&mut self, _previous: &Self) {}
    /// Hashes or encrypts plain-text secrets; slow, so it runs on a blocking thread.
    fn seal(&mut self, _previous: Option<&Self>, _key: Option<&MasterKey>) -> Result<(), String> {
        Ok(())
    }
}

impl AdminEntity for Consumer {
    const HAS_SECRETS: bool = true;
    fn redact(&mut self) {
        Consumer::redact(self)
    }
    fn restore(&mut self, previous: &Self) {
        self.keep_secrets(previous);
    }
    fn seal(&mut self, previous: Option<&Self>, _key: Option<&MasterKey>) -> Result<(), String> {
        self.seal_reusing(previous);
        Ok(())
    }
}

/// Services (their upstream client key), certificates (their private key), and routes and the
/// global settings (the HMAC secrets of their `jwt_auth` policy) hold secrets sealed with the
/// master key.
macro_rules! holds_secrets {
    ($($entity:ty),*) => {$(
        impl AdminEntity for $entity {
            const HAS_SECRETS: bool = true;
            fn redact(&mut self) {
                self.redact_secrets()
            }
            fn restore(&mut self, previous: &Self) {
                self.keep_secrets_of(&mut previous.clone());
            }
            fn seal(&mut self, previous: Option<&Self>, key: Option<&MasterKey>) -> Result<(), String> {
                self.seal_secrets(key, previous.cloned().as_mut())
            }
        }
    )*};
}
holds_secrets!(Service, Certificate, Route, Global, AiProvider);

impl AdminEntity for AiModel {}
impl AdminEntity for AiBudget {}
impl AdminEntity for AiPrompt {}

/// Restores kept secrets, checks the entity (plain text is checked before it is hashed away)
/// and hashes or encrypts its secrets off the async runtime.
pub(crate) async fn prepared<E: AdminEntity>(
    state: &AdminState,
    mut entity: E,
    previous: Option<E>,
) -> Result<E, ApiError> {
    if !E::HAS_SECRETS {
        return Ok(entity);
    }
    if let Some(previous) = &previous {
        entity.restore(previous);
    }
    entity.validate().map_err(ApiError::invalid)?;
    let key = state.master_key.clone();
    let sealed = tokio::task::spawn_blocking(move || entity.seal(previous.as_ref(), key.as_deref()).map(|()| entity))
        .await
        .map_err(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "hashing failed")
        })?;
    sealed.map_err(|message| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no-master-key", "Cannot store secrets", message)
    })
}

pub(crate) fn versioned<E: AdminEntity>(mut stored: Stored<E>) -> Versioned<E> {
    stored.value.redact();
    Versioned {
        value: stored.value,
        version: stored.version,
        created_at: stored.created_at,
        updated_at: stored.updated_at,
    }
}

pub(crate) fn with_etag<E: AdminEntity>(status: StatusCode, stored: Stored<E>, location: Option<String>) -> Response {
    let etag = format!("\"{}\"", stored.version);
    let mut response = (status, Json(versioned(stored))).into_response();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn collection<E: Entity>() -> &'static str {
    match E::KIND {
        Kind::Service => "services",
        Kind::Route => "routes",
        Kind::Consumer => "consumers",
        Kind::Certificate => "certificates",
        Kind::AiProvider => "ai/providers",
        Kind::AiModel => "ai/models",
        Kind::AiBudget => "ai/budgets",
        Kind::AiPrompt => "ai/prompts",
        Kind::Global => "global",
    }
}

fn parse_page(query: Option<&str>) -> Result<(Option<String>, usize), ApiError> {
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("after", value) => after = Some(value.to_owned()),
            ("limit", value) => {
                limit =
                    value.parse().ok().filter(|l| (1..=MAX_PAGE).contains(l)).ok_or_else(|| {
                        ApiError::bad_request(format!("`limit` must be a number from 1 to {MAX_PAGE}"))
                    })?;
            }
            (other, _) => return Err(ApiError::bad_request(format!("unknown query parameter `{other}`"))),
        }
    }
    Ok((after, limit))
}

pub(crate) async fn list<E: AdminEntity>(state: AdminState, query: Option<String>) -> Result<Json<Page<E>>, ApiError> {
    let (after, limit) = parse_page(query.as_deref())?;
    let mut items: Vec<Versioned<E>> = match &state.source {
        ConfigSource::Store => {
            state.store.list::<E>(after.as_deref(), limit as i64 + 1).await?.into_iter().map(versioned).collect()
        }
        ConfigSource::File(config) => {
            let config = config.load();
            let mut all: Vec<&E> =
                E::all_in(&config).into_iter().filter(|e| after.as_deref().is_none_or(|a| e.name() > a)).collect();
            all.sort_by(|a, b| a.name().cmp(b.name()));
            all.into_iter().take(limit + 1).map(|e| versioned(from_file(e.clone()))).collect()
        }
    };
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.value.name().to_owned())
    } else {
        None
    };
    Ok(Json(Page { items, next }))
}

/// Entities read from a file have no history: they are version 1 of themselves.
fn from_file<E>(value: E) -> Stored<E> {
    Stored { value, version: 1, created_at: 0, updated_at: 0 }
}

/// The entity called `name`, from the store or the configuration file.
pub(crate) async fn find<E: AdminEntity>(state: &AdminState, name: &str) -> Result<Stored<E>, ApiError> {
    let found = match &state.source {
        ConfigSource::Store => state.store.get::<E>(name).await?,
        ConfigSource::File(config) => {
            E::all_in(&config.load()).into_iter().find(|e| e.name() == name).cloned().map(from_file)
        }
    };
    found.ok_or_else(|| portico_store::StoreError::NotFound { kind: E::KIND.as_str(), name: name.to_owned() }.into())
}

pub(crate) async fn get_one<E: AdminEntity>(state: AdminState, name: String) -> Result<Response, ApiError> {
    Ok(with_etag(StatusCode::OK, find::<E>(&state, &name).await?, None))
}

/// A body of the wrong shape: 422 with the path of the offending field.
pub(crate) fn shape_error<T: std::fmt::Display>(error: serde_path_to_error::Error<T>) -> ApiError {
    let path = error.path().to_string();
    ApiError::invalid(Problems(vec![Problem {
        path: if path == "." { String::new() } else { path },
        message: error.into_inner().to_string(),
        line: None,
    }]))
}

/// Parses a request body into an entity. Syntax errors are 400; a document of the wrong
/// shape is 422 with the path of the offending field. The response metadata fields are
/// accepted so that a GET → edit → PUT cycle works; `version` counts as `If-Match`.
pub(crate) fn parse_body<E: Entity>(body: &Bytes) -> Result<(E, Option<i64>), ApiError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let object = value.as_object_mut().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let version = match object.remove(METADATA_FIELDS[0]) {
        None => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::invalid(Problems(vec![Problem {
                path: "version".into(),
                message: "must be an integer".into(),
                line: None,
            }]))
        })?),
    };
    for field in &METADATA_FIELDS[1..] {
        object.remove(*field);
    }
    let entity = serde_path_to_error::deserialize(value).map_err(shape_error)?;
    Ok((entity, version))
}

pub(crate) fn writable(state: &AdminState) -> Result<(), ApiError> {
    match state.source {
        ConfigSource::Store => Ok(()),
        ConfigSource::File(_) => Err(ApiError::read_only()),
    }
}

pub(crate) async fn create<E: AdminEntity>(state: AdminState, body: Bytes) -> Result<Response, ApiError> {
    writable(&state)?;
    let (entity, _) = parse_body::<E>(&body)?;
    let entity = prepared(&state, entity, None).await?;
    let name = entity.name().to_owned();
    let stored = state.writer().put(entity, Precondition::Absent).await?;
    Ok(with_etag(StatusCode::CREATED, stored, Some(format!("/api/v1/{}/{name}", collection::<E>()))))
}

/// The precondition a write states through `If-Match` / `If-None-Match` or the body.
fn precondition(headers: &HeaderMap, body_version: Option<i64>) -> Result<Option<Precondition>, ApiError> {
    if let Some(value) = headers.get(header::IF_MATCH) {
        let text = value.to_str().unwrap_or("").trim();
        if text == "*" {
            return Ok(Some(Precondition::None));
        }
        let version = text
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse()
            .map_err(|_| ApiError::bad_request("`If-Match` must be the entity's ETag, such as \"3\", or *"))?;
        return Ok(Some(version_precondition(version)));
    }
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == "*") {
        return Ok(Some(Precondition::Absent));
    }
    Ok(body_version.map(version_precondition))
}

pub(crate) async fn put<E: AdminEntity>(
    state: AdminState,
    name: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    writable(&state)?;
    let (mut entity, body_version) = parse_body::<E>(&body)?;
    if entity.name().is_empty() {
        entity.set_name(name.clone());
    } else if entity.name() != name {
        return Err(ApiError::invalid(Problems(vec![Problem {
            path: "name".into(),
            message: format!(
                "`{}` differs from the name in the URL, `{name}`; renaming is not supported",
                entity.name()
            ),
            line: None,
        }])));
    }
    let previous = match E::HAS_SECRETS {
        true => state.store.get::<E>(&name).await?.map(|stored| stored.value),
        false => None,
    };
    let entity = prepared(&state, entity, previous).await?;
    match precondition(&headers, body_version)? {
        Some(precondition) => {
            let created = precondition == Precondition::Absent;
            let stored = state.writer().put(entity, precondition).await?;
            let status = if created || stored.version == 1 { StatusCode::CREATED } else { StatusCode::OK };
            Ok(with_etag(status, stored, None))
        }
        // Without a stated version, a PUT may only create: overwriting something the caller
        // has not seen is how concurrent edits get lost.
        None => match state.writer().put(entity, Precondition::Absent).await {
            Ok(stored) => Ok(with_etag(StatusCode::CREATED, stored, None)),
            Err(portico_store::StoreError::AlreadyExists { kind, name }) => Err(ApiError::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "Version required",
                format!("{kind} `{name}` exists; send `If-Match` with the ETag you read (or `version` in the body) to update it"),
            )),
            Err(other) => Err(other.into()),
        },
    }
}

/// Versions start at 1, so version 0 is what a caller saw of an entity that does not exist
/// yet (the global settings before their first write).
fn version_precondition(version: i64) -> Precondition {
    match version {
        0 => Precondition::Absent,
        n => Precondition::Version(n),
    }
}

pub(crate) async fn delete<E: Entity>(
    state: AdminState,
    name: String,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    writable(&state)?;
    let precondition = precondition(&headers, None)?.unwrap_or(Precondition::None);
    state.writer().delete::<E>(&name, precondition).await?;
    Ok(StatusCode::NO_CONTENT)
}

// The concrete handlers below exist for the OpenAPI document; each forwards to the generic one.

/// List services.
#[utoipa::path(get, path = "/api/v1/services", tag = "services",
    params(("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("after" = Option<String>, Query, description = "Return names after this one (from `next`)")),
    responses((status = 200, body = Page<Service>), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn list_services(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<Service>>, ApiError> {
    list::<Service>(state, query).await
}

/// Create a service.
#[utoipa::path(post, path = "/api/v1/services", tag = "services", request_body = Service,
    responses((status = 201, body = Versioned<Service>), (status = 409, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create_service(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    create::<Service>(state, body).await
}

/// Read a service.
#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "services",
    responses((status = 200, body = Versioned<Service>), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn get_service(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    get_one::<Service>(state, name).await
}

/// Create or update a service. Updates need `If-Match` (or `version` in the body).
#[utoipa::path(put, path = "/api/v1/services/{name}", tag = "services", request_body = Service,
    responses((status = 200, body = Versioned<Service>), (status = 201, body = Versioned<Service>),
              (status = 412, body = crate::problem::ProblemBody), (status = 422, body = crate::problem::ProblemBody),
              (status = 428, body = crate::problem::ProblemBody)))]
pub(crate) async fn put_service(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    put::<Service>(state, name, headers, body).await
}

/// Delete a service that no route uses.
#[utoipa::path(delete, path = "/api/v1/services/{name}", tag = "services",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub(crate) async fn delete_service(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    delete::<Service>(state, name, headers).await
}

/// List routes.
#[utoipa::path(get, path = "/api/v1/routes", tag = "routes",
    params(("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("after" = Option<String>, Query, description = "Return names after this one (from `next`)")),
    responses((status = 200, body = Page<Route>), (status = 400, body = crate::problem::ProblemBody)))]
pub(crate) async fn list_routes(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<Route>>, ApiError> {
    list::<Route>(state, query).await
}

/// Create a route.
#[utoipa::path(post, path = "/api/v1/routes", tag = "routes", request_body = Route,
    responses((status = 201, body = Versioned<Route>), (status = 409, body = crate::problem::ProblemBody),
              (status = 422, body = crate::problem::ProblemBody)))]
pub(crate) async fn create_route(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    create::<Route>(state, body).await
}

/// Read a route.
#[utoipa::path(get, path = "/api/v1/routes/{name}", tag = "routes",
    responses((status = 200, body = Versioned<Route>), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn get_route(State(state): State<AdminState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    get_one::<Route>(state, name).await
}

/// Create or update a route. Updates need `If-Match` (or `version` in the body).
#[utoipa::path(put, path = "/api/v1/routes/{name}", tag = "routes", request_body = Route,
    responses((status = 200, body = Versioned<Route>), (status = 201, body = Versioned<Route>),
              (status = 412, body = crate::problem::ProblemBody), (status = 422, body = crate::problem::ProblemBody),
              (status = 428, body = crate::problem::ProblemBody)))]
pub(crate) async fn put_route(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    put::<Route>(state, name, headers, body).await
}

/// Delete a route.
#[utoipa::path(delete, path = "/api/v1/routes/{name}", tag = "routes",
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody)))]
pub(crate) async fn delete_route(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    delete::<Route>(state, name, headers).await
}
