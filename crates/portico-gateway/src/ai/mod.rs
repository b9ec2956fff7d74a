//! The AI gateway: services that answer the OpenAI and Anthropic APIs with configured
//! models, translating to and from each provider's format (`portico_ai`).
//!
//! A request to an AI service walks the ordinary pipeline (route, access policies, rate
//! limits, logs) and reaches [`exchange::handle`] in the upstream phase instead of a target.
//! There the model name picks the provider models to try: in order, or the first by weight;
//! a connection failure, a timeout, 429, 5xx or a refused key moves on to the next key or
//! target, as long as nothing has been sent to the client. A key answered with 429 rests, one
//! answered with 401 or 403 is taken out (`keys`). What each call used and cost is read
//! from the provider's answer and left in the request's trail (`meter`).

mod budget;
mod cache;
mod embeddings;
mod exchange;
mod keys;
mod limits;
mod meter;
mod prompt;
mod provider;
mod stream;

pub use budget::{BudgetReport, Spent};
pub(crate) use budget::{Budgets, Caller};
pub use cache::AnswerCache;
pub(crate) use exchange::{error_response, handle};
pub use keys::{KeyReport, KeyState};
pub use limits::RateCounts;
pub use meter::AiUsage;
pub(crate) use meter::{Billing, Meter};
pub(crate) use prompt::PromptApi;
pub(crate) use provider::Provider;

use crate::access::RedisLimits;
use crate::upstream::UpstreamStates;
use limits::{Limit, Limits};
use portico_model::{AiRouting, Config, MasterKey, Problem, Problems};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::time::Duration;

/// The format of a client of an AI service, by the API its path names.
pub(crate) fn client_format(path: &str) -> portico_ai::Format {
    if path.trim_end_matches('/').ends_with("/messages") {
        portico_ai::Format::Anthropic
    } else {
        portico_ai::Format::OpenAi
    }
}

/// An AI service, ready for the request path.
pub(crate) struct AiEndpoint {
    pub service: Arc<str>,
    /// The models the service answers, by the name clients send.
    pub models: FxHashMap<Box<str>, Arc<Model>>,
    /// Every AI budget of the snapshot.
    pub budgets: Arc<Budgets>,
    /// The service's token and request rates.
    pub limits: Limits,
}

/// A route to an AI service: the service, and the route's prompt API and answer cache.
pub(crate) struct AiRoute {
    pub endpoint: Arc<AiEndpoint>,
    pub prompt: Option<Arc<PromptApi>>,
    pub cache: Option<Arc<AnswerCache>>,
}

pub(crate) struct Model {
    pub name: Arc<str>,
    pub targets: Box<[Target]>,
    pub weighted: bool,
}

pub(crate) struct Target {
    pub provider: Arc<Provider>,
    pub model: Arc<str>,
    /// The model as the `x-portico-model` header of its answers.
    pub model_header: Option<http::HeaderValue>,
    /// The model as a JSON string, for the provider's request body.
    pub model_json: Box<str>,
    pub weight: u32,
    pub timeout: Duration,
    pub billing: Billing,
}

impl Model {
    /// The order to try the targets in: as listed, or with one chosen by weight first.
    pub fn order(&self) -> impl Iterator<Item = usize> {
        let count = self.targets.len();
        let first = if self.weighted { self.chosen_by_weight() } else { 0 };
        (count > 0).then_some(first).into_iter().chain((0..count).filter(move |&i| i != first))
    }

    /// A target picked with a chance in proportion to its weight (the first when all
    /// weigh nothing).
    fn chosen_by_weight(&self) -> usize {
        let total: u64 = self.targets.iter().map(|t| u64::from(t.weight)).sum();
        if total == 0 {
            return 0;
        }
        let mut point = fastrand::u64(..total);
        self.targets
            .iter()
            .position(|t| {
                let weight = u64::from(t.weight);
                let hit = point < weight;
                point = point.saturating_sub(weight);
                hit
            })
            .unwrap_or(0)
    }
}

/// The compiled AI configuration of one snapshot.
#[derive(Default)]
pub(crate) struct AiCompiled {
    /// By service name, for services with `ai`.
    pub endpoints: FxHashMap<Box<str>, Arc<AiEndpoint>>,
    /// Every provider, by name, for the admin API's key report.
    pub providers: FxHashMap<Box<str>, Arc<Provider>>,
    pub budgets: Arc<Budgets>,
}

/// Compiles providers, models and AI services; key state comes from `states`, which then
/// forgets keys no longer configured.
pub(crate) fn compile(
    config: &Config,
    states: &UpstreamStates,
    redis: Option<Arc<RedisLimits>>,
    master_key: Option<&MasterKey>,
) -> Result<AiCompiled, Problems> {
    let mut providers = FxHashMap::default();
    for provider in &config.ai_providers {
        let compiled = Provider::compile(provider, states, master_key).map_err(|message| {
            Problems(vec![Problem { path: format!("ai_providers.{}", provider.name), message, line: None }])
        })?;
        providers.insert(Box::from(provider.name.as_str()), Arc::new(compiled));
    }
    let live: FxHashSet<&str> = providers.values().flat_map(|p| p.keys.keys.iter().map(|k| k.id.as_ref())).collect();
    states.retain_keys(|id| live.contains(id));
    let mut models = FxHashMap::default();
    for model in &config.ai_models {
        let targets = model
            .targets
            .iter()
            .filter_map(|t| {
                let provider: Arc<Provider> = providers.get(t.provider.as_str())?.clone();
                let timeout = Duration::from_millis(t.timeout_ms.unwrap_or(provider.timeout.as_millis() as u64));
                let model: Arc<str> = t.model.as_str().into();
                let price = config.ai_providers.iter().find(|p| p.name == t.provider).and_then(|p| p.price(&t.model));
                let billing = Billing { provider: provider.name.clone(), model: model.clone(), price };
                let model_header = http::HeaderValue::from_str(&model).ok();
                let model_json = serde_json::to_string(&*model).unwrap_or_default().into();
                Some(Target { provider, model, model_header, model_json, weight: t.weight, timeout, billing })
            })
            .collect();
        let compiled =
            Model { name: model.name.as_str().into(), targets, weighted: model.routing == AiRouting::Weighted };
        models.insert(model.name.as_str(), Arc::new(compiled));
    }
    if config.ai_budgets.iter().any(|b| b.max_usd.is_some()) {
        let unpriced: Vec<String> = models
            .values()
            .flat_map(|m| m.targets.iter())
            .filter(|t| t.billing.price.is_none())
            .map(|t| format!("{}/{}", t.provider.name, t.model))
            .collect();
        if !unpriced.is_empty() {
            tracing::warn!(models = %unpriced.join(", "),
                "these models have no price: budgets in dollars count their tokens but not their cost; give them prices");
        }
    }
    let mut live = FxHashSet::default();
    let budgets = Budgets::compile(
        &config.ai_budgets,
        |id| {
            live.insert(id.to_owned());
            states.budget(id)
        },
        redis.clone(),
    );
    states.retain_budgets(|id| live.contains(id));
    let budgets = Arc::new(budgets);
    let mut endpoints = FxHashMap::default();
    let mut live_rates = FxHashSet::default();
    for service in &config.services {
        let Some(ai) = &service.ai else { continue };
        let served: FxHashMap<Box<str>, Arc<Model>> = models
            .iter()
            .filter(|(name, _)| ai.models.is_empty() || ai.models.iter().any(|m| m == *name))
            .map(|(name, model)| (Box::from(*name), model.clone()))
            .collect();
        let limits = ai.limits.iter().enumerate().map(|(i, limit)| {
            let limit = Limit::compile(&service.name, i, limit, |scope| states.ai_rate(scope), redis.as_ref());
            live_rates.insert(limit.scope().to_owned());
            Arc::new(limit)
        });
        let limits = Limits(limits.collect());
        let endpoint =
            AiEndpoint { service: service.name.as_str().into(), models: served, budgets: budgets.clone(), limits };
        endpoints.insert(Box::from(service.name.as_str()), Arc::new(endpoint));
    }
    states.retain_ai_rates(|scope| live_rates.contains(scope));
    Ok(AiCompiled { endpoints, providers, budgets })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(yaml: &str) -> Arc<Model> {
        let config: Config = yaml_serde::from_str(yaml).expect("yaml");
        let compiled = compile(&config, &UpstreamStates::default(), None, None).expect("compiles");
        compiled.endpoints["llm"].models["m"].clone()
    }

    const PROVIDERS: &str = "ai_providers: [{name: a, kind: ollama}, {name: b, kind: ollama}, {name: c, kind: ollama}]
services: [{name: llm, ai: {}}]
";

    #[test]
    fn targets_are_tried_in_order_or_with_the_weighted_choice_first() {
        let listed = model(&format!(
            "{PROVIDERS}ai_models: [{{name: m, targets: [{{provider: a, model: x}}, {{provider: b, model: y}}, {{provider: c, model: z}}]}}]"
        ));
        assert_eq!(listed.order().collect::<Vec<_>>(), [0, 1, 2]);
        // Only the third weighs anything: it is chosen first, the others follow as listed.
        let weighted = model(&format!(
            "{PROVIDERS}ai_models: [{{name: m, routing: weighted, targets: [{{provider: a, model: x, weight: 0}}, {{provider: b, model: y, weight: 0}}, {{provider: c, model: z, weight: 3}}]}}]"
        ));
        for _ in 0..20 {
            assert_eq!(weighted.order().collect::<Vec<_>>(), [2, 0, 1]);
        }
    }
}
