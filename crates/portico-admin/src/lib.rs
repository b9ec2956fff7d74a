//! Portico's admin REST API, served under `/api/v1` on the admin listener.
//!
//! This crate is the only one that knows the admin JSON shapes. It reads and writes through
//! the store (or, in file mode, reads the configuration file's contents and refuses writes),
//! and describes itself in an OpenAPI 3.1 document generated from the handlers.
//!
//! Every route requires an admin token except those in [`PUBLIC_PATHS`]; what a token may do
//! depends on its role (see `auth`). Every change is recorded in the audit log as the
//! token's.

mod ai;
mod analytics;
mod auth;
mod budgets;
mod certificates;
mod consumers;
mod entities;
mod logging;
mod openapi;
mod problem;
mod prompts;
mod registry;
mod state;
mod system;
mod targets;
mod tokens;

pub use logging::LogFilter;
pub use problem::ApiError;
pub use state::{AdminState, ConfigSource, RuntimeStatus};

use axum::routing::{get, post};
use axum::Router;

/// Where the service registry lives; registry-scoped tokens may use nothing else.
pub const REGISTRY_PREFIX: &str = "/api/v1/registry/";

/// The only paths that answer without a token: probes for load balancers and orchestrators.
pub const PUBLIC_PATHS: &[&str] = &["/api/v1/health", "/api/v1/ready"];

/// The admin API, ready to serve.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/api/v1/status", get(system::status))
        .route("/metrics", get(system::metrics))
        .route("/api/v1/logging", get(logging::get).put(logging::put))
        .route("/api/v1/analytics/series", get(analytics::series))
        .route("/api/v1/analytics/top", get(analytics::top))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/services", get(entities::list_services).post(entities::create_service))
        .route(
            "/api/v1/services/{name}",
            get(entities::get_service).put(entities::put_service).delete(entities::delete_service),
        )
        .route("/api/v1/services/{name}/health", get(targets::service_health))
        .route("/api/v1/routes", get(entities::list_routes).post(entities::create_route))
        .route(
            "/api/v1/routes/{name}",
            get(entities::get_route).put(entities::put_route).delete(entities::delete_route),
        )
        .route("/api/v1/consumers", get(consumers::list_consumers).post(consumers::create_consumer))
        .route(
            "/api/v1/consumers/{name}",
            get(consumers::get_consumer).put(consumers::put_consumer).delete(consumers::delete_consumer),
        )
        .route(
            "/api/v1/consumers/{name}/credentials",
            get(consumers::list_credentials).post(consumers::create_credential),
        )
        .route("/api/v1/consumers/{name}/credentials/{id}", axum::routing::delete(consumers::delete_credential))
        .route("/api/v1/certificates", get(certificates::list).post(certificates::create))
        .route(
            "/api/v1/certificates/{name}",
            get(certificates::get_one).put(certificates::put).delete(certificates::delete),
        )
        .route("/api/v1/ai/providers", get(ai::list_providers).post(ai::create_provider))
        .route("/api/v1/ai/providers/{name}", get(ai::get_provider).put(ai::put_provider).delete(ai::delete_provider))
        .route("/api/v1/ai/providers/{name}/keys", get(ai::provider_keys))
        .route("/api/v1/ai/models", get(ai::list_models).post(ai::create_model))
        .route("/api/v1/ai/models/{name}", get(ai::get_model).put(ai::put_model).delete(ai::delete_model))
        .route("/api/v1/ai/budgets", get(budgets::list).post(budgets::create))
        .route("/api/v1/ai/budgets/{name}", get(budgets::get_one).put(budgets::put).delete(budgets::delete))
        .route("/api/v1/ai/budgets/{name}/usage", get(budgets::usage))
        .route("/api/v1/ai/prompts", get(prompts::list).post(prompts::create))
        .route("/api/v1/ai/prompts/{name}", get(prompts::get_one).put(prompts::put).delete(prompts::delete))
        .route("/api/v1/ai/prompts/{name}/versions/{version}/render", post(prompts::render))
        .route("/api/v1/global", get(consumers::get_global).put(consumers::put_global))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/api/v1/audit", get(tokens::audit))
        .route("/api/v1/registry/{name}/instances", get(registry::list).post(registry::register))
        .route("/api/v1/registry/{name}/instances/{id}", axum::routing::delete(registry::deregister))
        .route("/api/v1/registry/{name}/instances/{id}/heartbeat", axum::routing::put(registry::heartbeat))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    let public = Router::new().route(PUBLIC_PATHS[0], get(system::health)).route(PUBLIC_PATHS[1], get(system::ready));
    public
        .merge(protected)
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .with_state(state)
}
