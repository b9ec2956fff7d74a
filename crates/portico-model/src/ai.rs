//! The AI gateway's configuration: model providers with their key pools, and the model
//! names clients ask for, each mapped to provider models tried in order or by weight.
//!
//! A service with `ai` set answers the OpenAI and Anthropic APIs itself, through these
//! (see `Service::ai`); routes to it get every policy of the ordinary gateway.

use crate::{validate_name, HoldsSecrets, Problems, Secret, MAX_WEIGHT};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A model provider: where it is, how it is spoken to, and the keys to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiProvider {
    /// Unique name; models refer to the provider by it.
    #[serde(default)]
    pub name: String,
    pub kind: ProviderKind,
    /// The API's base URL, up to and including the version (`https://api.openai.com/v1`).
    /// Default: the provider's public API; required for `azure` (the resource's
    /// `https://{resource}.openai.azure.com/openai`) and `openai_compatible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Azure OpenAI's `api-version` (default `2024-10-21`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The keys requests are signed with, chosen by weight. A key answered with 429 rests
    /// for the `Retry-After` the provider gave; one answered with 401 or 403 is taken out
    /// until the configuration changes. Ollama and OpenAI-compatible servers may need none.
    #[serde(default)]
    pub keys: Vec<ProviderKey>,
    /// Time allowed to open a connection.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed for the response to start, and between two pieces of a stream (a
    /// model's target can set its own).
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Prices of this provider's models, by the model name targets use. They take the
    /// place of Portico's list prices (`AiPrice::list`); a model priced by neither is
    /// reported as unpriced, never as free.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, AiPrice>,
}

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiPrice {
    /// Input tokens not read from or written to a prompt cache.
    pub input: f64,
    /// Output tokens, reasoning tokens included.
    pub output: f64,
    /// Input tokens read from the provider's prompt cache. Default: `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_read: Option<f64>,
    /// Input tokens written to the provider's prompt cache. Default: `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

/// Portico's list prices, by provider family and model (`ai_prices.yaml`).
type PriceList = BTreeMap<String, BTreeMap<String, AiPrice>>;

impl AiPrice {
    /// The list price of `model` as offered by providers of `kind`: Portico ships the
    /// published prices of common models; a dated name (`claude-sonnet-4-5-20250929`,
    /// `gpt-4o-2024-08-06`) takes its model's price.
    pub fn list(kind: ProviderKind, model: &str) -> Option<AiPrice> {
        static LIST: std::sync::OnceLock<PriceList> = std::sync::OnceLock::new();
        let list = LIST.get_or_init(|| {
            yaml_serde::from_str(include_str!("ai_prices.yaml")).expect("ai_prices.yaml is checked by a test")
        });
        let family = match kind {
            ProviderKind::Openai | ProviderKind::Azure => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Ollama | ProviderKind::OpenaiCompatible => return None,
        };
        let prices = list.get(family)?;
        prices.get(model).or_else(|| prices.get(undated(model)?)).copied()
    }

    fn validate(&self, problems: &mut Problems, path: &str) {
        let fields = [("input", Some(self.input)), ("output", Some(self.output))];
        let cached = [("cached_read", self.cached_read), ("cache_write", self.cache_write)];
        for (field, value) in fields.into_iter().chain(cached) {
            if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
                problems.push(format!("{path}.{field}"), "must be a price of 0 or more");
            }
        }
    }
}

/// `model` without a date at its end (`-20250929`, `-2024-08-06`), if it has one.
fn undated(model: &str) -> Option<&str> {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let (base, date) = model.rsplit_once('-')?;
    if date.len() == 8 && digits(date) {
        return Some(base);
    }
    // `-YYYY-MM-DD`: three dash-separated numbers.
    let (rest, day) = model.rsplit_once('-')?;
    let (rest, month) = rest.rsplit_once('-')?;
    let (base, year) = rest.rsplit_once('-')?;
    (year.len() == 4 && month.len() == 2 && day.len() == 2 && digits(year) && digits(month) && digits(day))
        .then_some(base)
}

/// How Portico speaks to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI (`Authorization: Bearer`).
    Openai,
    /// Azure OpenAI: the target's model is the deployment name (`api-key` header).
    Azure,
    /// Anthropic (`x-api-key`, `anthropic-version`).
    Anthropic,
    /// Mistral: OpenAI's format with its own words for a few fields.
    Mistral,
    /// Google Gemini (`generateContent`, `x-goog-api-key`).
    Gemini,
    /// Ollama's OpenAI-compatible API (default `http://127.0.0.1:11434/v1`).
    Ollama,
    /// Any server that speaks OpenAI's API: vLLM, DeepSeek, Groq, OpenRouter, ...
    OpenaiCompatible,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Ollama => "ollama",
            ProviderKind::OpenaiCompatible => "openai_compatible",
        }
    }

    /// The base URL of the provider's public API, for kinds that have one.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderKind::Mistral => Some("https://api.mistral.ai/v1"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            ProviderKind::Ollama => Some("http://127.0.0.1:11434/v1"),
            ProviderKind::Azure | ProviderKind::OpenaiCompatible => None,
        }
    }

    /// Whether requests need a key.
    pub fn needs_key(self) -> bool {
        !matches!(self, ProviderKind::Ollama | ProviderKind::OpenaiCompatible)
    }
}

/// One key of a provider's pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderKey {
    /// Names the key in the pool's state and in logs (the key itself never appears).
    pub name: String,
    /// The key. Stored sealed with the master key; never shown after it is written (send
    /// the provider back without `key` to keep the stored one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// Share of the requests relative to the other keys; 0 keeps the key unused.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// The Azure OpenAI API version used when a provider names none.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

impl AiProvider {
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if let Err(message) = validate_name(&self.name) {
            problems.push("name", message);
        }
        match (&self.base_url, self.kind.default_base_url()) {
            (None, None) => {
                problems.push("base_url", format!("a `{}` provider needs its base URL", self.kind.as_str()))
            }
            (Some(url), _) => {
                if let Err(message) = check_base_url(url) {
                    problems.push("base_url", message);
                }
            }
            (None, Some(_)) => {}
        }
        if self.api_version.is_some() && self.kind != ProviderKind::Azure {
            problems.push("api_version", "only `azure` providers take an API version");
        }
        if self.kind.needs_key() && self.keys.is_empty() {
            problems.push("keys", format!("a `{}` provider needs at least one key", self.kind.as_str()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            if let Err(message) = validate_name(&key.name) {
                problems.push(format!("keys[{i}].name"), message);
            }
            if !names.insert(key.name.as_str()) {
                problems.push(format!("keys[{i}].name"), format!("another key is named `{}`", key.name));
            }
            match &key.key {
                None => problems.push(format!("keys[{i}].key"), "give the key"),
                Some(secret) if !secret.is_sealed() && secret.reveal(None).unwrap_or_default().trim().is_empty() => {
                    problems.push(format!("keys[{i}].key"), "the key is empty")
                }
                Some(_) => {}
            }
            if key.weight > MAX_WEIGHT {
                problems.push(format!("keys[{i}].weight"), format!("must be at most {MAX_WEIGHT}"));
            }
        }
        if !self.keys.is_empty() && self.keys.iter().all(|k| k.weight == 0) {
            problems.push("keys", "at least one key needs a weight above 0");
        }
        problems.check_ms("connect_timeout_ms", self.connect_timeout_ms, 1);
        problems.check_ms("timeout_ms", self.timeout_ms, 1);
        for (model, price) in &self.prices {
            if model.trim().is_empty() {
                problems.push("prices", "a price needs a model name");
            }
            price.validate(&mut problems, &format!("prices.{model}"));
        }
        problems.into_result()
    }

    /// The price of `model` on this provider: its own, else Portico's list price.
    pub fn price(&self, model: &str) -> Option<AiPrice> {
        self.prices.get(model).copied().or_else(|| AiPrice::list(self.kind, model))
    }

    /// The base URL requests go to, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        self.base_url.as_deref().or(self.kind.default_base_url()).unwrap_or_default().trim_end_matches('/')
    }
}

fn check_base_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => {}
        _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
    }
    if uri.query().is_some() {
        return Err("a base URL takes no query".into());
    }
    Ok(())
}

impl HoldsSecrets for AiProvider {
    fn secret_slots(&mut self) -> Vec<(String, &mut Option<Secret>)> {
        self.keys.iter_mut().map(|k| (format!("keys.{}", k.name), &mut k.key)).collect()
    }
}

/// A model name clients ask for, and the provider models that answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiModel {
    /// The name clients send as `model` (`gpt-4o`, `claude-sonnet`, `llama3.1:8b`).
    #[serde(default)]
    pub name: String,
    /// The provider models behind the name.
    pub targets: Vec<AiTarget>,
    /// `fallback` (default): the first target answers, the next ones when it fails before
    /// answering; `weighted`: a target is chosen by weight, the others are the fallbacks.
    #[serde(default)]
    pub routing: AiRouting,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AiRouting {
    #[default]
    Fallback,
    Weighted,
}

/// One provider model behind a model name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiTarget {
    /// The provider's name.
    pub provider: String,
    /// The model as the provider names it (for Azure, the deployment).
    pub model: String,
    /// Share of the requests with `weighted` routing.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// The provider's `timeout_ms`, for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl AiModel {
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if let Err(message) = validate_model_name(&self.name) {
            problems.push("name", message);
        }
        if self.targets.is_empty() {
            problems.push("targets", "a model needs at least one target");
        }
        for (i, target) in self.targets.iter().enumerate() {
            if target.model.trim().is_empty() || target.model.len() > 256 {
                problems.push(format!("targets[{i}].model"), "must be 1 to 256 characters long");
            }
            if target.weight > MAX_WEIGHT {
                problems.push(format!("targets[{i}].weight"), format!("must be at most {MAX_WEIGHT}"));
            }
            if let Some(timeout) = target.timeout_ms {
                problems.check_ms(format!("targets[{i}].timeout_ms"), timeout, 1);
            }
        }
        if self.routing == AiRouting::Weighted && self.targets.iter().all(|t| t.weight == 0) {
            problems.push("targets", "at least one target needs a weight above 0");
        }
        problems.into_result()
    }
}

/// Model names may also hold `:` and `/` (`llama3.1:8b`, `meta-llama/Llama-3-8B`), as
/// providers' model names do.
pub fn validate_model_name(name: &str) -> Result<(), String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/');
    if name.is_empty() || name.len() > 128 {
        return Err("must be 1 to 128 characters long".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(valid) {
        return Err(format!(
            "`{name}` is not a valid model name: use ASCII letters, digits, '.', '_', '-', ':' and '/', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// What makes a service an AI service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiService {
    /// The models clients of this service may ask for (default: every model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Token and request rates per minute, each consumer's or each model's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<AiLimit>,
}

/// Tokens and requests per minute. Before a call, its tokens are reserved from an estimate
/// (the request's size and its `max_tokens`); when it ends, the reservation is settled with
/// the tokens it used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiLimit {
    /// What the rates are counted by: each `consumer` (callers without one by client IP), or
    /// each `model` clients ask for.
    pub by: AiLimitBy,
    /// Input and output tokens a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Calls a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Count across the cluster through Redis (`--redis-url`), instead of on each node.
    #[serde(default)]
    pub cluster: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AiLimitBy {
    Consumer,
    Model,
}

impl AiService {
    pub fn validate(&self, problems: &mut Problems) {
        for (i, limit) in self.limits.iter().enumerate() {
            if limit.tokens_per_minute.is_none() && limit.requests_per_minute.is_none() {
                problems.push(format!("ai.limits[{i}]"), "give tokens_per_minute, requests_per_minute, or both");
            }
            if limit.tokens_per_minute == Some(0) || limit.requests_per_minute == Some(0) {
                problems.push(format!("ai.limits[{i}]"), "a rate of 0 would refuse every call");
            }
        }
    }
}

mod defaults {
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn timeout_ms() -> u64 {
        120_000
    }
    pub fn weight() -> u32 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(yaml: &str) -> AiProvider {
        yaml_serde::from_str(yaml).expect("yaml")
    }

    fn paths(result: Result<(), Problems>) -> Vec<String> {
        result.err().map(|p| p.0.into_iter().map(|p| p.path).collect()).unwrap_or_default()
    }

    #[test]
    fn providers_need_what_their_kind_needs() {
        let openai = provider("{name: openai, kind: openai, keys: [{name: a, key: sk-1}]}");
        assert_eq!(paths(openai.validate()), Vec::<String>::new());
        assert_eq!(openai.base_url(), "https://api.openai.com/v1");
        assert_eq!(paths(provider("{name: az, kind: azure, keys: [{name: a, key: k}]}").validate()), ["base_url"]);
        assert_eq!(paths(provider("{name: o, kind: openai}").validate()), ["keys"]);
        assert!(provider("{name: local, kind: ollama}").validate().is_ok());
        let bad = provider(
            "{name: x, kind: openai_compatible, base_url: 'ftp://h', api_version: v, connect_timeout_ms: 0,
              keys: [{name: a, key: ''}, {name: a, key: k, weight: 0}]}",
        );
        assert_eq!(
            paths(bad.validate()),
            ["base_url", "api_version", "keys[0].key", "keys[1].name", "connect_timeout_ms"]
        );
    }

    #[test]
    fn every_list_price_reads_and_is_sound() {
        let list: PriceList = yaml_serde::from_str(include_str!("ai_prices.yaml")).expect("ai_prices.yaml");
        assert_eq!(list.keys().map(String::as_str).collect::<Vec<_>>(), ["anthropic", "gemini", "mistral", "openai"]);
        for (family, prices) in &list {
            for (model, price) in prices {
                let mut problems = Problems::default();
                price.validate(&mut problems, model);
                assert!(problems.0.is_empty(), "{family}/{model}: {problems:?}");
                assert!(price.input > 0.0, "{family}/{model} is listed as free");
            }
        }
    }

    #[test]
    fn a_providers_own_prices_come_before_the_list_and_unknown_models_have_none() {
        let openai =
            provider("{name: o, kind: openai, keys: [{name: a, key: k}], prices: {gpt-4o: {input: 1, output: 2}}}");
        assert_eq!(openai.price("gpt-4o").map(|p| p.input), Some(1.0));
        let listed = openai.price("gpt-4o-mini").expect("listed");
        assert_eq!((listed.input, listed.cached_read, listed.output), (0.15, Some(0.075), 0.6));
        // Dated names take their model's price.
        assert_eq!(openai.price("gpt-4o-mini-2024-07-18"), Some(listed));
        let claude = AiPrice::list(ProviderKind::Anthropic, "claude-sonnet-4-5-20250929").expect("listed");
        assert_eq!(claude.cache_write, Some(3.75));
        assert_eq!(openai.price("gpt-unheard-of"), None);
        assert_eq!(AiPrice::list(ProviderKind::Ollama, "gpt-4o"), None);
        assert_eq!(undated("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(undated("o3-mini"), None);
        let bad = provider("{name: o, kind: ollama, prices: {m: {input: -1, output: .nan}}}");
        assert_eq!(paths(bad.validate()), ["prices.m.input", "prices.m.output"]);
    }

    #[test]
    fn models_need_targets_and_sound_names() {
        let model: AiModel =
            yaml_serde::from_str("{name: 'llama3.1:8b', targets: [{provider: local, model: 'llama3.1:8b'}]}")
                .expect("yaml");
        assert!(model.validate().is_ok());
        let bad: AiModel = yaml_serde::from_str(
            "{name: '-x', routing: weighted, targets: [{provider: p, model: '', weight: 0, timeout_ms: 0}]}",
        )
        .expect("yaml");
        assert_eq!(paths(bad.validate()), ["name", "targets[0].model", "targets[0].timeout_ms", "targets"]);
    }
}
