//! The OpenAPI 3.1 document of the admin API, generated from the handlers' annotations.

use crate::entities::{self, Page, Versioned};
use crate::problem::ProblemBody;
use crate::registry;
use crate::system;
use crate::targets;
use axum::Json;
use portico_model::{
    ActiveCheck, Algorithm, Balance, Bulkhead, CircuitBreaker, Discovery, DnsDiscovery, Fallback, HashOn, Health,
    HostHeader, MockResponse, PassiveCheck, Problem, Retries, Route, Scheme, Service, Target,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Portico admin API", description = "Manage Portico's services and routes. Every endpoint but health and readiness needs `Authorization: Bearer <admin token>`."),
    paths(
        system::health, system::ready, system::status,
        entities::list_services, entities::create_service, entities::get_service, entities::put_service, entities::delete_service,
        targets::service_health,
        registry::register, registry::heartbeat, registry::deregister, registry::list,
        entities::list_routes, entities::create_route, entities::get_route, entities::put_route, entities::delete_route,
    ),
    components(schemas(Service, Target, Scheme, HostHeader, Balance, Algorithm, HashOn, Health, ActiveCheck, PassiveCheck, Retries, CircuitBreaker, Fallback, Bulkhead, Discovery, DnsDiscovery, Route, MockResponse, Problem, ProblemBody,
                       Versioned<Service>, Versioned<Route>, Page<Service>, Page<Route>)),
    modifiers(&BearerToken),
    security(("admin_token" = [])),
)]
struct AdminApi;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document.
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(AdminApi::openapi())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_endpoint() {
        let doc = serde_json::to_value(<super::AdminApi as utoipa::OpenApi>::openapi()).unwrap_or_default();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/api/v1/services",
            "/api/v1/services/{name}",
            "/api/v1/services/{name}/health",
            "/api/v1/routes",
            "/api/v1/routes/{name}",
            "/api/v1/health",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert!(doc["components"]["schemas"].get("Route").is_some());
    }
}
