//! A whole configuration: global settings, every service, route and consumer, as one
//! document.
//!
//! This is the unit that is validated as a whole (names are unique, references resolve, no
//! two routes are indistinguishable), the shape of the YAML file, and what the store loads
//! to build a snapshot.

use crate::{
    AiBudget, AiModel, AiPrompt, AiProvider, Certificate, Consumer, Credential, Global, HostPattern, MethodSet,
    PathPattern, Policies, Problem, Problems, Route, Service,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Global settings and every service, route and consumer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Global::is_default")]
    pub global: Global,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ai_providers: Vec<AiProvider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ai_models: Vec<AiModel>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ai_budgets: Vec<AiBudget>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ai_prompts: Vec<AiPrompt>,
}

impl Config {
    /// Checks every entity and the rules that span entities.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if let Err(found) = self.global.validate() {
            problems.0.extend(found.nest("global").0);
        }
        let mut service_names = HashSet::new();
        for (i, service) in self.services.iter().enumerate() {
            if let Err(found) = service.validate() {
                problems.0.extend(found.nest(&format!("services[{i}]")).0);
            }
            if !service_names.insert(service.name.as_str()) {
                problems
                    .push(format!("services[{i}].name"), format!("a service named `{}` already exists", service.name));
            }
        }
        for (i, service) in self.services.iter().enumerate() {
            let fallback = service.circuit_breaker.as_ref().and_then(|b| b.fallback.as_ref());
            if let Some(other) = fallback.and_then(|f| f.service.as_ref()) {
                let path = format!("services[{i}].circuit_breaker.fallback.service");
                if other == &service.name {
                    problems.push(path, "a service cannot be its own fallback");
                } else if !service_names.contains(other.as_str()) {
                    problems.push(path, format!("no service is named `{other}`"));
                }
            }
        }
        let mut route_names = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            if let Err(found) = route.validate() {
                problems.0.extend(found.nest(&format!("routes[{i}]")).0);
            }
            if !route_names.insert(route.name.as_str()) {
                problems.push(format!("routes[{i}].name"), format!("a route named `{}` already exists", route.name));
            }
            let others =
                route.split.iter().enumerate().map(|(k, s)| (format!("routes[{i}].split[{k}].service"), &s.service));
            for (path, service) in
                others.chain(route.mirror.iter().map(|m| (format!("routes[{i}].mirror.service"), &m.service)))
            {
                if !service_names.contains(service.as_str()) {
                    problems.push(path, format!("no service is named `{service}`"));
                }
            }
            if let Some(service) = &route.service {
                if !service_names.contains(service.as_str()) {
                    problems.push(format!("routes[{i}].service"), format!("no service is named `{service}`"));
                }
            }
        }
        find_indistinguishable_routes(&self.routes, &mut problems);
        self.validate_consumers(&mut problems);
        self.validate_certificates(&mut problems);
        self.validate_ai(&mut problems);
        problems.into_result()
    }

    /// Providers and models are valid and uniquely named, models name providers that exist,
    /// and AI services name models that exist.
    fn validate_ai(&self, problems: &mut Problems) {
        let mut providers = HashSet::new();
        for (i, provider) in self.ai_providers.iter().enumerate() {
            if let Err(found) = provider.validate() {
                problems.0.extend(found.nest(&format!("ai_providers[{i}]")).0);
            }
            if !providers.insert(provider.name.as_str()) {
                problems.push(
                    format!("ai_providers[{i}].name"),
                    format!("a provider named `{}` already exists", provider.name),
                );
            }
        }
        let mut models = HashSet::new();
        for (i, model) in self.ai_models.iter().enumerate() {
            if let Err(found) = model.validate() {
                problems.0.extend(found.nest(&format!("ai_models[{i}]")).0);
            }
            if !models.insert(model.name.as_str()) {
                problems.push(format!("ai_models[{i}].name"), format!("a model named `{}` already exists", model.name));
            }
            for (k, target) in model.targets.iter().enumerate() {
                if !providers.contains(target.provider.as_str()) {
                    problems.push(
                        format!("ai_models[{i}].targets[{k}].provider"),
                        format!("no AI provider is named `{}`", target.provider),
                    );
                }
            }
        }
        self.validate_budgets(problems);
        self.validate_prompts(&models, problems);
        // An AI service answers itself: traffic cannot be split or mirrored to it.
        let ai_services: HashSet<&str> =
            self.services.iter().filter(|s| s.ai.is_some()).map(|s| s.name.as_str()).collect();
        for (i, route) in self.routes.iter().enumerate() {
            let splits =
                route.split.iter().enumerate().map(|(k, s)| (format!("routes[{i}].split[{k}].service"), &s.service));
            let mirror = route.mirror.iter().map(|m| (format!("routes[{i}].mirror.service"), &m.service));
            for (path, service) in splits.chain(mirror) {
                if ai_services.contains(service.as_str()) {
                    problems
                        .push(path, format!("`{service}` is an AI service: route to it, do not split or mirror to it"));
                }
            }
        }
        for (i, service) in self.services.iter().enumerate() {
            for (k, model) in service.ai.iter().flat_map(|ai| ai.models.iter()).enumerate() {
                if !models.contains(model.as_str()) {
                    problems.push(format!("services[{i}].ai.models[{k}]"), format!("no AI model is named `{model}`"));
                }
            }
        }
    }

    /// Certificates are valid, and no server name has two.
    fn validate_certificates(&self, problems: &mut Problems) {
        let mut names = HashSet::new();
        let mut snis: HashMap<String, &str> = HashMap::new();
        for (i, certificate) in self.certificates.iter().enumerate() {
            if let Err(found) = certificate.validate() {
                problems.0.extend(found.nest(&format!("certificates[{i}]")).0);
            }
            if !names.insert(certificate.name.as_str()) {
                let message = format!("a certificate named `{}` already exists", certificate.name);
                problems.push(format!("certificates[{i}].name"), message);
            }
            for (k, sni) in certificate.snis.iter().enumerate() {
                if let Some(other) = snis.insert(sni.to_ascii_lowercase(), &certificate.name) {
                    problems.push(
                        format!("certificates[{i}].snis[{k}]"),
                        format!("certificate `{other}` is already for `{sni}`"),
                    );
                }
            }
        }
    }

    /// Consumers are valid, their names and credentials unique, and access lists name
    /// consumers that exist.
    fn validate_consumers(&self, problems: &mut Problems) {
        let mut names = HashSet::new();
        let mut keys = HashMap::new();
        let mut usernames = HashMap::new();
        let mut certificates = HashMap::new();
        for (i, consumer) in self.consumers.iter().enumerate() {
            if let Err(found) = consumer.validate() {
                problems.0.extend(found.nest(&format!("consumers[{i}]")).0);
            }
            if !names.insert(consumer.name.as_str()) {
                problems.push(
                    format!("consumers[{i}].name"),
                    format!("a consumer named `{}` already exists", consumer.name),
                );
            }
            for (k, credential) in consumer.credentials.iter().enumerate() {
                let at = format!("consumers[{i}].credentials[{k}]");
                if let Some(digest) = credential.key_digest() {
                    if let Some(other) = keys.insert(digest, consumer.name.as_str()) {
                        problems.push(format!("{at}.key"), format!("consumer `{other}` already has this key"));
                    }
                }
                let certificate =
                    match credential {
                        Credential::Mtls(mtls) => mtls.common_name.clone().map(|cn| format!("cn:{cn}")).or_else(|| {
                            credential.fingerprint().map(|f| format!("sha256:{}", crate::consumer::hex(&f)))
                        }),
                        _ => None,
                    };
                if let Some(certificate) = certificate {
                    if let Some(other) = certificates.insert(certificate, consumer.name.as_str()) {
                        problems.push(at.clone(), format!("consumer `{other}` already has this credential"));
                    }
                }
                if let Credential::BasicAuth(basic) = credential {
                    if let Some(other) = usernames.insert(basic.username.as_str(), consumer.name.as_str()) {
                        problems
                            .push(format!("{at}.username"), format!("consumer `{other}` already uses this user name"));
                    }
                }
            }
        }
        for (at, policies) in self.attached_policies() {
            for name in policies.acl.iter().flat_map(|acl| acl.consumers()) {
                if !names.contains(name.as_str()) {
                    problems.push(format!("{at}.policies.acl"), format!("no consumer is named `{name}`"));
                }
            }
        }
    }

    /// Every place policies are attached to, with its field path.
    fn attached_policies(&self) -> impl Iterator<Item = (String, &Policies)> {
        let global = std::iter::once(("global".to_owned(), &self.global.policies));
        let services = self.services.iter().enumerate().map(|(i, s)| (format!("services[{i}]"), &s.policies));
        let routes = self.routes.iter().enumerate().map(|(i, r)| (format!("routes[{i}]"), &r.policies));
        global.chain(services).chain(routes)
    }

    /// Descriptions of the places whose access lists name consumer `name`.
    pub fn consumer_dependents(&self, name: &str) -> Vec<String> {
        let budgets = self.ai_budgets.iter().filter(|b| b.consumer.as_deref() == Some(name));
        self.attached_policies()
            .filter(|(_, p)| p.acl.iter().flat_map(|acl| acl.consumers()).any(|c| c == name))
            .map(|(at, _)| at)
            .chain(budgets.map(|b| format!("AI budget {}", b.name)))
            .collect()
    }

    /// Prompts are valid, uniquely named and ask for models that exist; a route's prompt
    /// exists, in the version it names, and its route goes to an AI service that serves the
    /// prompt's model.
    fn validate_prompts(&self, models: &HashSet<&str>, problems: &mut Problems) {
        let mut names = HashSet::new();
        for (i, prompt) in self.ai_prompts.iter().enumerate() {
            if let Err(found) = prompt.validate() {
                problems.0.extend(found.nest(&format!("ai_prompts[{i}]")).0);
            }
            if !names.insert(prompt.name.as_str()) {
                problems
                    .push(format!("ai_prompts[{i}].name"), format!("a prompt named `{}` already exists", prompt.name));
            }
            for (k, version) in prompt.versions.iter().enumerate() {
                if !models.contains(version.model.as_str()) {
                    let path = format!("ai_prompts[{i}].versions[{k}].model");
                    problems.push(path, format!("no AI model is named `{}`", version.model));
                }
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            let ai = route.service.as_deref().and_then(|s| self.service(s)).and_then(|s| s.ai.as_ref());
            if route.ai_cache.is_some() && ai.is_none() {
                problems.push(format!("routes[{i}].ai_cache"), "only a route to an AI service caches AI answers");
            }
            let Some(wanted) = &route.prompt else { continue };
            let path = format!("routes[{i}].prompt");
            let Some(prompt) = self.ai_prompts.iter().find(|p| p.name == wanted.name) else {
                problems.push(path, format!("no prompt is named `{}`", wanted.name));
                continue;
            };
            let Some(version) = prompt.version(wanted.version) else {
                problems.push(path, format!("prompt `{}` has no version {}", wanted.name, wanted.version));
                continue;
            };
            match route.service.as_deref().and_then(|s| self.service(s)).and_then(|s| s.ai.as_ref()) {
                None => problems.push(path, "a prompt API's route goes to an AI service"),
                Some(ai) if !ai.models.is_empty() && !ai.models.contains(&version.model) => problems.push(
                    path,
                    format!("the route's service does not serve model `{}`, which the prompt asks", version.model),
                ),
                Some(_) => {}
            }
        }
    }

    /// Budgets are valid and uniquely named, and name consumers and credentials that exist.
    fn validate_budgets(&self, problems: &mut Problems) {
        let mut names = HashSet::new();
        for (i, budget) in self.ai_budgets.iter().enumerate() {
            if let Err(found) = budget.validate() {
                problems.0.extend(found.nest(&format!("ai_budgets[{i}]")).0);
            }
            if !names.insert(budget.name.as_str()) {
                problems
                    .push(format!("ai_budgets[{i}].name"), format!("a budget named `{}` already exists", budget.name));
            }
            let Some(name) = &budget.consumer else { continue };
            match self.consumers.iter().find(|c| &c.name == name) {
                None => problems.push(format!("ai_budgets[{i}].consumer"), format!("no consumer is named `{name}`")),
                Some(consumer) => {
                    let Some(id) = &budget.credential else { continue };
                    let is_key = |c: &&Credential| matches!(c, Credential::KeyAuth(_)) && c.id() == id;
                    if !consumer.credentials.iter().any(|c| is_key(&c)) {
                        problems.push(
                            format!("ai_budgets[{i}].credential"),
                            format!("consumer `{name}` has no API key with id `{id}`"),
                        );
                    }
                }
            }
        }
    }

    /// The service with this name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Sorts entities by name so that exports and diffs are stable.
    pub fn sorted(mut self) -> Config {
        self.services.sort_by(|a, b| a.name.cmp(&b.name));
        self.routes.sort_by(|a, b| a.name.cmp(&b.name));
        self.consumers.sort_by(|a, b| a.name.cmp(&b.name));
        self.certificates.sort_by(|a, b| a.name.cmp(&b.name));
        self.ai_providers.sort_by(|a, b| a.name.cmp(&b.name));
        self.ai_models.sort_by(|a, b| a.name.cmp(&b.name));
        self.ai_budgets.sort_by(|a, b| a.name.cmp(&b.name));
        self.ai_prompts.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }
}

/// What a request must look like to match one (host, path) rule of a route, reduced to the
/// parts precedence cannot tell apart. Two routes with rules of the same shape and
/// overlapping methods would match the same requests with nothing to choose between them.
#[derive(PartialEq, Eq, Hash)]
struct RuleShape {
    priority: i32,
    host: HostPattern,
    path: String,
    headers: Vec<(String, Vec<String>)>,
    /// Precedence prefers a route that names methods over one that matches any method.
    names_methods: bool,
}

fn find_indistinguishable_routes(routes: &[Route], problems: &mut Problems) {
    let mut seen: HashMap<RuleShape, Vec<(usize, MethodSet)>> = HashMap::new();
    let mut reported = HashSet::new();
    for (i, route) in routes.iter().enumerate() {
        let (Ok(methods), Ok(_)) = (route.method_set(), route.header_matches()) else { continue };
        let mut headers: Vec<_> = route.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), sorted(v))).collect();
        headers.sort();
        let paths: Vec<PathPattern> = route.path_patterns().into_iter().flatten().collect();
        for host in route.host_patterns().into_iter().flatten() {
            for path in &paths {
                let shape = RuleShape {
                    priority: route.priority,
                    host: host.clone(),
                    path: path.shape(),
                    headers: headers.clone(),
                    names_methods: !methods.is_any(),
                };
                let same = seen.entry(shape).or_default();
                for &(j, other_methods) in same.iter() {
                    if j != i && methods.overlaps(other_methods) && reported.insert((j, i)) {
                        problems.0.push(Problem {
                            path: format!("routes[{i}]"),
                            message: format!(
                                "route `{}` can never be told apart from route `{}`: both match host `{host}` and path `{path}` with the same priority, methods and headers; give one a different priority or a narrower match",
                                route.name, routes[j].name
                            ),
                            line: None,
                        });
                    }
                }
                same.push((i, methods));
            }
        }
    }
}

fn sorted(values: &[String]) -> Vec<String> {
    let mut values = values.to_vec();
    values.sort();
    values
}

/// Parses a YAML configuration document and validates it. Syntax and shape errors carry the
/// line they were found on.
pub fn parse_yaml(text: &str) -> Result<Config, Problems> {
    let deserializer = yaml_serde::Deserializer::from_str(text);
    let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let line = inner.location().map(|l| l.line());
        let message = inner.to_string();
        // The YAML error repeats its position at the end; the line is reported separately.
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        Problems(vec![Problem { path: if path == "." { String::new() } else { path }, message, line }])
    })?;
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
services:
  - name: users
    targets:
      - address: 127.0.0.1:9001
routes:
  - name: users
    paths: ["/users/{id}"]
    service: users
  - name: hello
    paths: ["/hello"]
    mock: { status: 200, body: "hi" }
"#;

    #[test]
    fn a_good_document_parses() {
        let config = parse_yaml(GOOD).expect("valid");
        assert_eq!(config.services[0].connect_timeout_ms, 5_000);
        assert_eq!(config.routes.len(), 2);
    }

    #[test]
    fn unknown_fields_are_reported_with_path_and_line() {
        let text = GOOD.replace("    service: users", "    service: users\n    servce: typo");
        let problems = parse_yaml(&text).err().unwrap_or_default();
        assert_eq!(problems.0.len(), 1, "{problems}");
        assert_eq!(problems.0[0].path, "routes[0].servce");
        assert_eq!(problems.0[0].line, Some(10));
        assert!(problems.0[0].message.contains("unknown field"), "{problems}");
    }

    #[test]
    fn references_and_duplicates_are_checked() {
        let text = GOOD.replace("service: users", "service: nobody").replace("name: hello", "name: users");
        let problems = parse_yaml(&text).err().unwrap_or_default();
        let paths: Vec<_> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["routes[0].service", "routes[1].name"], "{problems}");
    }

    #[test]
    fn indistinguishable_routes_are_rejected_naming_both() {
        let text = format!("{GOOD}  - name: people\n    paths: [\"/users/{{user}}\"]\n    service: users\n");
        let problems = parse_yaml(&text).err().unwrap_or_default();
        assert_eq!(problems.0.len(), 1, "{problems}");
        assert!(problems.0[0].message.contains("`people`") && problems.0[0].message.contains("`users`"));
        // A different priority, or methods that do not overlap, tell them apart.
        assert!(parse_yaml(&text.replace("  - name: people\n", "  - name: people\n    priority: 1\n")).is_ok());
        let split =
            text.replace("    paths: [\"/users/{id}\"]\n", "    paths: [\"/users/{id}\"]\n    methods: [GET]\n");
        let split =
            split.replace("    paths: [\"/users/{user}\"]\n", "    paths: [\"/users/{user}\"]\n    methods: [POST]\n");
        assert!(parse_yaml(&split).is_ok());
    }
}
