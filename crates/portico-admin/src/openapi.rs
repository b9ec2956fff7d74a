//! The OpenAPI 3.1 document of the admin API, generated from the handlers' annotations.

use crate::analytics;
use crate::budgets;
use crate::consumers;
use crate::entities::{self, Page, Versioned};
use crate::logging;
use crate::problem::ProblemBody;
use crate::prompts;
use crate::registry;
use crate::system;
use crate::targets;
use crate::tokens;
use crate::{ai, certificates};
use axum::Json;
use portico_model::{
    Acl, ActiveCheck, Algorithm, Balance, BasicAuth, BasicCredential, Bulkhead, CircuitBreaker, Consumer, Cors,
    Credential, Discovery, DnsDiscovery, Fallback, Global, HashOn, Health, HostHeader, IpRestriction, KeyAuth,
    KeyCredential, Limit, LimitBy, MockResponse, PassiveCheck, Policies, Problem, RateLimit, Retries, Route, Scheme,
    Service, Target,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Portico admin API", description = "Manage Portico's services, routes, consumers and global settings. Every endpoint but health and readiness needs `Authorization: Bearer <admin token>`."),
    paths(
        system::health, system::ready, system::status, system::metrics, logging::get, logging::put,
        analytics::series, analytics::top,
        entities::list_services, entities::create_service, entities::get_service, entities::put_service, entities::delete_service,
        targets::service_health,
        registry::register, registry::heartbeat, registry::deregister, registry::list,
        entities::list_routes, entities::create_route, entities::get_route, entities::put_route, entities::delete_route,
        consumers::list_consumers, consumers::create_consumer, consumers::get_consumer, consumers::put_consumer, consumers::delete_consumer,
        consumers::list_credentials, consumers::create_credential, consumers::delete_credential,
        consumers::get_global, consumers::put_global,
        tokens::list, tokens::create, tokens::revoke, tokens::audit,
        certificates::list, certificates::create, certificates::get_one, certificates::put, certificates::delete,
        ai::provider_keys, ai::list_providers, ai::create_provider, ai::get_provider, ai::put_provider, ai::delete_provider,
        ai::list_models, ai::create_model, ai::get_model, ai::put_model, ai::delete_model,
        budgets::list, budgets::create, budgets::get_one, budgets::put, budgets::delete, budgets::usage,
        prompts::list, prompts::create, prompts::get_one, prompts::put, prompts::delete, prompts::render,
    ),
    components(schemas(Service, Target, Scheme, HostHeader, Balance, Algorithm, HashOn, Health, ActiveCheck, PassiveCheck, Retries, CircuitBreaker, Fallback, Bulkhead, Discovery, DnsDiscovery, Route, MockResponse, Problem, ProblemBody,
                       Policies, IpRestriction, Cors, KeyAuth, BasicAuth, Acl, RateLimit, LimitBy, Limit,
                       Consumer, Credential, KeyCredential, BasicCredential, Global, consumers::IssuedCredential,
                       Versioned<Service>, Versioned<Route>, Versioned<Consumer>, Versioned<Global>,
                       portico_model::Certificate, portico_model::Secret, Versioned<portico_model::Certificate>,
                       Page<portico_model::Certificate>,
                       ai::KeyPool, ai::KeyHealth, portico_model::AiProvider, portico_model::AiPrice, portico_model::ProviderKind, portico_model::ProviderKey,
                       portico_model::AiModel, portico_model::AiTarget, portico_model::AiRouting, portico_model::AiService,
                       Versioned<portico_model::AiProvider>, Page<portico_model::AiProvider>,
                       Versioned<portico_model::AiModel>, Page<portico_model::AiModel>,
                       portico_model::AiBudget, portico_model::BudgetPeriod, budgets::BudgetUsage,
                       Versioned<portico_model::AiBudget>, Page<portico_model::AiBudget>,
                       portico_model::AiPrompt, portico_model::PromptVersion, portico_model::PromptMessage,
                       portico_model::PromptRole, portico_model::RoutePrompt, prompts::Rendered, prompts::RenderedMessage,
                       Versioned<portico_model::AiPrompt>, Page<portico_model::AiPrompt>,
                       Page<Service>, Page<Route>, Page<Consumer>,
                       portico_store::AdminToken, portico_store::Role, portico_store::AuditEntry,
                       tokens::NewTokenRequest, tokens::CreatedToken, tokens::AuditPage,
                       analytics::Series, analytics::Top, analytics::Point, analytics::Ranked, analytics::Traffic,
                       analytics::Percentiles, analytics::AiTraffic)),
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
            "/api/v1/consumers/{name}/credentials",
            "/api/v1/global",
            "/api/v1/tokens",
            "/api/v1/audit",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert!(doc["components"]["schemas"].get("Route").is_some());
    }

    /// A client generated from the document must find every schema it refers to.
    #[test]
    fn every_schema_reference_resolves() {
        fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = serde_json::to_value(<super::AdminApi as utoipa::OpenApi>::openapi()).unwrap_or_default();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.iter().any(|r| r.ends_with("/JwtSecret")), "the JWT secret schema is referenced");
        for reference in found {
            let name = reference.trim_start_matches("#/components/schemas/");
            assert!(doc["components"]["schemas"].get(name).is_some(), "{reference} does not resolve");
        }
    }
}
