//! Reading and writing configuration entities with optimistic concurrency.

use crate::audit::{record, Change};
use crate::store::{load_config, now};
use crate::{Store, StoreError};
use portico_model::{
    AiBudget, AiModel, AiPrompt, AiProvider, Certificate, Config, Consumer, Global, HoldsSecrets, Problems, Route,
    Service,
};
use serde::{de::DeserializeOwned, Serialize};
use sqlx::Row;
use std::collections::HashMap;

/// The kinds of configuration entity the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Service,
    Route,
    Consumer,
    Certificate,
    AiProvider,
    AiModel,
    AiBudget,
    AiPrompt,
    /// The gateway-wide settings: one entity, named [`GLOBAL`].
    Global,
}

/// The name of the one [`Kind::Global`] entity.
pub const GLOBAL: &str = "global";

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Route => "route",
            Kind::Consumer => "consumer",
            Kind::Certificate => "certificate",
            Kind::AiProvider => "ai_provider",
            Kind::AiModel => "ai_model",
            Kind::AiBudget => "ai_budget",
            Kind::AiPrompt => "ai_prompt",
            Kind::Global => "global",
        }
    }

    pub(crate) fn parse(raw: &str) -> Option<Kind> {
        match raw {
            "service" => Some(Kind::Service),
            "route" => Some(Kind::Route),
            "consumer" => Some(Kind::Consumer),
            "certificate" => Some(Kind::Certificate),
            "ai_provider" => Some(Kind::AiProvider),
            "ai_model" => Some(Kind::AiModel),
            "ai_budget" => Some(Kind::AiBudget),
            "ai_prompt" => Some(Kind::AiPrompt),
            "global" => Some(Kind::Global),
            _ => None,
        }
    }
}

/// A configuration entity the store can keep.
pub trait Entity: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: Kind;
    /// The field of [`Config`] that holds entities of this kind.
    const COLLECTION: &'static str;
    /// Checks the entity on its own.
    fn validate(&self) -> Result<(), Problems>;
    fn name(&self) -> &str;
    fn set_name(&mut self, name: String);
    /// The entities of this kind in a [`Config`].
    fn all_in(config: &Config) -> Vec<&Self>;
    /// Puts the entity into `config`, replacing the one with its name; returns its field path.
    fn place(self, config: &mut Config) -> String;
    /// Names of the entities that refer to the entity called `name`.
    fn dependents(_config: &Config, _name: &str) -> Vec<String> {
        Vec::new()
    }
    /// Whether the entity is fit to store: no secret in plain text.
    fn sealed(&self) -> bool {
        true
    }
}

/// Replaces the entity with the same name in `all`, or appends it; returns its index.
fn place_in<E: Entity>(all: &mut Vec<E>, entity: E) -> usize {
    match all.iter().position(|e| e.name() == entity.name()) {
        Some(index) => {
            all[index] = entity;
            index
        }
        None => {
            all.push(entity);
            all.len() - 1
        }
    }
}

impl Entity for Service {
    const KIND: Kind = Kind::Service;
    const COLLECTION: &'static str = "services";
    fn validate(&self) -> Result<(), Problems> {
        Service::validate(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn all_in(config: &Config) -> Vec<&Self> {
        config.services.iter().collect()
    }
    fn sealed(&self) -> bool {
        !self.clone().has_plain_secrets()
    }
    fn place(self, config: &mut Config) -> String {
        format!("services[{}]", place_in(&mut config.services, self))
    }
    fn dependents(config: &Config, name: &str) -> Vec<String> {
        let uses = |r: &&Route| {
            r.service.as_deref() == Some(name)
                || r.split.iter().any(|s| s.service == name)
                || r.mirror.as_ref().is_some_and(|m| m.service == name)
        };
        let routes = config.routes.iter().filter(uses).map(|r| r.name.clone());
        let falling_back = config
            .services
            .iter()
            .filter(|s| {
                let fallback = s.circuit_breaker.as_ref().and_then(|b| b.fallback.as_ref());
                fallback.and_then(|f| f.service.as_deref()) == Some(name)
            })
            .map(|s| format!("service {}", s.name));
        routes.chain(falling_back).collect()
    }
}

impl Entity for Route {
    const KIND: Kind = Kind::Route;
    const COLLECTION: &'static str = "routes";
    fn validate(&self) -> Result<(), Problems> {
        Route::validate(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn all_in(config: &Config) -> Vec<&Self> {
        config.routes.iter().collect()
    }
    fn sealed(&self) -> bool {
        !self.clone().has_plain_secrets()
    }
    fn place(self, config: &mut Config) -> String {
        format!("routes[{}]", place_in(&mut config.routes, self))
    }
}

impl Entity for Consumer {
    const KIND: Kind = Kind::Consumer;
    const COLLECTION: &'static str = "consumers";
    fn validate(&self) -> Result<(), Problems> {
        Consumer::validate(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn all_in(config: &Config) -> Vec<&Self> {
        config.consumers.iter().collect()
    }
    fn place(self, config: &mut Config) -> String {
        format!("consumers[{}]", place_in(&mut config.consumers, self))
    }
    fn dependents(config: &Config, name: &str) -> Vec<String> {
        config.consumer_dependents(name)
    }
    fn sealed(&self) -> bool {
        !self.needs_sealing()
    }
}

impl Entity for Certificate {
    const KIND: Kind = Kind::Certificate;
    const COLLECTION: &'static str = "certificates";
    fn validate(&self) -> Result<(), Problems> {
        Certificate::validate(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn all_in(config: &Config) -> Vec<&Self> {
        config.certificates.iter().collect()
    }
    fn place(self, config: &mut Config) -> String {
        format!("certificates[{}]", place_in(&mut config.certificates, self))
    }
    fn sealed(&self) -> bool {
        !self.clone().has_plain_secrets()
    }
}

impl Entity for AiProvider {
    const KIND: Kind = Kind::AiProvider;
    const COLLECTION: &'static str = "ai_providers";
    fn validate(&self) -> Result<(), Problems> {
        AiProvider::validate(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn all_in(config: &Config) -> Vec<&Self> {
        config.ai_providers.iter().collect()
    }
    fn place(self, config: &mut Config) -> String {
        format!("ai_providers[{}]", place_in(&mut config.ai_providers, self))
    }
    fn dependents(config: &Config, name: &str) -> Vec<String> {
        let uses = |m: &&AiModel| m.targets.iter().any(|t| t.provider == name);
        config.ai_models.iter().filter(uses).map(|m| format!("model {}", m.name)).collect()
    }
    fn sealed(&self) -> bool {
        !self.clone().has_plain_secrets()
    }
}

impl Entity for AiModel {
    const KIND: Kind = Kind::AiModel;
    const COLLECTION: &'static str = "ai_models";
    fn validate(&self) -> Result<(), Problems> {
        AiModel::validate(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn all_in(config: &Config) -> Vec<&Self> {
        config.ai_models.iter().collect()
    }
    fn place(self, config: &mut Config) -> String {
        format!("ai_models[{}]", place_in(&mut config.ai_models, self))
    }
    fn dependents(config: &Config, name: &str) -> Vec<String> {
        let uses = |s: &&Service| s.ai.as_ref().is_some_and(|ai| ai.models.iter().any(|m| m == name));
        config.services.iter().filter(uses).map(|s| format!("service {}", s.name)).collect()
    }
}

impl Entity for AiBudget {
    const KIND: Kind = Kind::AiBudget;
    const COLLECTION: &'static str = "ai_budgets";
    fn validate(&self) -> Result<(), Problems> {
        AiBudget::validate(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn all_in(config: &Config) -> Vec<&Self> {
        config.ai_budgets.iter().collect()
    }
    fn place(self, config: &mut Config) -> String {
        format!("ai_budgets[{}]", place_in(&mut config.ai_budgets, self))
    }
}

impl Entity for AiPrompt {
    const KIND: Kind = Kind::AiPrompt;
    const COLLECTION: &'static str = "ai_prompts";
    fn validate(&self) -> Result<(), Problems> {
        AiPrompt::validate(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn all_in(config: &Config) -> Vec<&Self> {
        config.ai_prompts.iter().collect()
    }
    fn place(self, config: &mut Config) -> String {
        format!("ai_prompts[{}]", place_in(&mut config.ai_prompts, self))
    }
    fn dependents(config: &Config, name: &str) -> Vec<String> {
        let uses = |r: &&Route| r.prompt.as_ref().is_some_and(|p| p.name == name);
        config.routes.iter().filter(uses).map(|r| format!("route {}", r.name)).collect()
    }
}

impl Entity for Global {
    const KIND: Kind = Kind::Global;
    const COLLECTION: &'static str = "global";
    fn validate(&self) -> Result<(), Problems> {
        Global::validate(self)
    }
    fn name(&self) -> &str {
        GLOBAL
    }
    fn set_name(&mut self, _name: String) {}
    fn all_in(config: &Config) -> Vec<&Self> {
        vec![&config.global]
    }
    fn sealed(&self) -> bool {
        !self.clone().has_plain_secrets()
    }
    fn place(self, config: &mut Config) -> String {
        config.global = self;
        "global".into()
    }
}

/// An entity as stored, with the version that guards concurrent updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<T> {
    pub value: T,
    /// Starts at 1 and grows by one with every update.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What the caller believes about the entity before writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there (used by `apply`, which owns the whole configuration).
    None,
    /// The entity must not exist yet (create).
    Absent,
    /// The entity must be at exactly this version (update or delete after a read).
    Version(i64),
}

impl Store {
    /// One page of entities in name order, starting after `after`.
    pub async fn list<E: Entity>(&self, after: Option<&str>, limit: i64) -> Result<Vec<Stored<E>>, StoreError> {
        let rows = sqlx::query(
            "SELECT spec, version, created_at, updated_at FROM entities \
             WHERE kind = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(E::KIND.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(stored_from_row).collect()
    }

    pub async fn get<E: Entity>(&self, name: &str) -> Result<Option<Stored<E>>, StoreError> {
        let row =
            sqlx::query("SELECT spec, version, created_at, updated_at FROM entities WHERE kind = $1 AND name = $2")
                .bind(E::KIND.as_str())
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        row.as_ref().map(stored_from_row).transpose()
    }

    /// Creates or replaces an entity, after checking `precondition` and validating the whole
    /// configuration as it would be after the write.
    pub async fn put<E: Entity>(&self, entity: E, precondition: Precondition) -> Result<Stored<E>, StoreError> {
        entity.validate().map_err(StoreError::Invalid)?;
        if !entity.sealed() {
            return Err(StoreError::Unsealed);
        }
        let (mut tx, revision) = self.begin_write().await?;
        let name = entity.name().to_owned();
        let current = current_version(&mut tx, E::KIND, &name).await?;
        check(E::KIND, &name, current.map(|(v, _)| v), precondition)?;

        let mut config = load_config(&mut tx).await?;
        let before = match current {
            Some(_) => E::all_in(&config).into_iter().find(|e| e.name() == name).map(to_json).transpose()?,
            None => None,
        };
        // Problems are reported relative to the entity written, not to the whole configuration.
        let this_entity = entity.clone().place(&mut config);
        config.validate().map_err(|problems| StoreError::Invalid(problems.relative_to(&this_entity)))?;

        let spec = to_json(&entity)?;
        let now = now();
        let version = current.map_or(1, |(v, _)| v + 1);
        let created_at = current.map_or(now, |(_, c)| c);
        upsert(&mut tx, E::KIND, &name, &spec, version, created_at, now).await?;
        let action = if before.is_some() { "update" } else { "create" };
        let kind = E::KIND.as_str();
        let change = Change {
            revision: Some(revision),
            action,
            kind,
            name: &name,
            before: before.as_deref(),
            after: Some(&spec),
        };
        record(&mut tx, self.actor(), change).await?;
        self.commit(tx, revision).await?;
        Ok(Stored { value: entity, version, created_at, updated_at: now })
    }

    /// Deletes an entity, unless others still refer to it.
    pub async fn delete<E: Entity>(&self, name: &str, precondition: Precondition) -> Result<(), StoreError> {
        let (mut tx, revision) = self.begin_write().await?;
        let current = current_version(&mut tx, E::KIND, name).await?;
        if current.is_none() {
            return Err(StoreError::NotFound { kind: E::KIND.as_str(), name: name.to_owned() });
        }
        check(E::KIND, name, current.map(|(v, _)| v), precondition)?;
        let config = load_config(&mut tx).await?;
        let dependents = E::dependents(&config, name);
        if !dependents.is_empty() {
            return Err(StoreError::InUse(format!(
                "{} `{name}` is still used by {}: change or delete them first",
                E::KIND.as_str(),
                dependents.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ")
            )));
        }
        let before = E::all_in(&config).into_iter().find(|e| e.name() == name).map(to_json).transpose()?;
        sqlx::query("DELETE FROM entities WHERE kind = $1 AND name = $2")
            .bind(E::KIND.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let kind = E::KIND.as_str();
        let change =
            Change { revision: Some(revision), action: "delete", kind, name, before: before.as_deref(), after: None };
        record(&mut tx, self.actor(), change).await?;
        self.commit(tx, revision).await
    }

    /// Makes the stored configuration exactly `config`, in one transaction: entities that did
    /// not change keep their version, changed ones get the next version, missing ones go.
    /// Returns the new revision.
    pub async fn replace_all(&self, config: &Config) -> Result<i64, StoreError> {
        config.validate().map_err(StoreError::Invalid)?;
        let unsealed = config.consumers.iter().any(|c| !c.sealed())
            || config.certificates.iter().any(|c| !c.sealed())
            || config.services.iter().any(|s| !s.sealed())
            || config.routes.iter().any(|r| !r.sealed())
            || config.ai_providers.iter().any(|p| !p.sealed())
            || !config.global.sealed();
        if unsealed {
            return Err(StoreError::Unsealed);
        }
        let (mut tx, revision) = self.begin_write().await?;
        let rows =
            sqlx::query("SELECT kind, name, spec, version, created_at FROM entities").fetch_all(&mut *tx).await?;
        let mut existing: HashMap<(String, String), (String, i64, i64)> = HashMap::new();
        for row in rows {
            existing.insert((row.try_get(0)?, row.try_get(1)?), (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?));
        }
        let mut wanted = Vec::new();
        for service in &config.services {
            wanted.push((Kind::Service, service.name.clone(), to_json(service)?));
        }
        for route in &config.routes {
            wanted.push((Kind::Route, route.name.clone(), to_json(route)?));
        }
        for consumer in &config.consumers {
            wanted.push((Kind::Consumer, consumer.name.clone(), to_json(consumer)?));
        }
        for certificate in &config.certificates {
            wanted.push((Kind::Certificate, certificate.name.clone(), to_json(certificate)?));
        }
        for provider in &config.ai_providers {
            wanted.push((Kind::AiProvider, provider.name.clone(), to_json(provider)?));
        }
        for model in &config.ai_models {
            wanted.push((Kind::AiModel, model.name.clone(), to_json(model)?));
        }
        for budget in &config.ai_budgets {
            wanted.push((Kind::AiBudget, budget.name.clone(), to_json(budget)?));
        }
        for prompt in &config.ai_prompts {
            wanted.push((Kind::AiPrompt, prompt.name.clone(), to_json(prompt)?));
        }
        if !config.global.is_default() {
            wanted.push((Kind::Global, GLOBAL.to_owned(), to_json(&config.global)?));
        }
        let now = now();
        let revision_made = Some(revision);
        for (kind, name, spec) in wanted {
            let (action, before) = match existing.remove(&(kind.as_str().to_owned(), name.clone())) {
                Some((old_spec, _, _)) if same_json(&old_spec, &spec) => continue,
                Some((old_spec, version, created_at)) => {
                    upsert(&mut tx, kind, &name, &spec, version + 1, created_at, now).await?;
                    ("update", Some(old_spec))
                }
                None => {
                    upsert(&mut tx, kind, &name, &spec, 1, now, now).await?;
                    ("create", None)
                }
            };
            let change = Change {
                revision: revision_made,
                action,
                kind: kind.as_str(),
                name: &name,
                before: before.as_deref(),
                after: Some(&spec),
            };
            record(&mut tx, self.actor(), change).await?;
        }
        for ((kind, name), (old_spec, _, _)) in existing {
            sqlx::query("DELETE FROM entities WHERE kind = $1 AND name = $2")
                .bind(&kind)
                .bind(&name)
                .execute(&mut *tx)
                .await?;
            let change = Change {
                revision: revision_made,
                action: "delete",
                kind: &kind,
                name: &name,
                before: Some(&old_spec),
                after: None,
            };
            record(&mut tx, self.actor(), change).await?;
        }
        self.commit(tx, revision).await?;
        Ok(revision)
    }
}

fn check(kind: Kind, name: &str, current: Option<i64>, precondition: Precondition) -> Result<(), StoreError> {
    let kind = kind.as_str();
    match (precondition, current) {
        (Precondition::None, _) => Ok(()),
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists { kind, name: name.to_owned() }),
        (Precondition::Version(_), None) => Err(StoreError::NotFound { kind, name: name.to_owned() }),
        (Precondition::Version(expected), Some(current)) if expected != current => {
            Err(StoreError::VersionMismatch { kind, name: name.to_owned(), expected, current })
        }
        (Precondition::Version(_), Some(_)) => Ok(()),
    }
}

async fn current_version(
    conn: &mut sqlx::AnyConnection,
    kind: Kind,
    name: &str,
) -> Result<Option<(i64, i64)>, StoreError> {
    let row = sqlx::query("SELECT version, created_at FROM entities WHERE kind = $1 AND name = $2")
        .bind(kind.as_str())
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
        None => None,
    })
}

async fn upsert(
    conn: &mut sqlx::AnyConnection,
    kind: Kind,
    name: &str,
    spec: &str,
    version: i64,
    created_at: i64,
    updated_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO entities (kind, name, spec, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (kind, name) DO UPDATE SET spec = $3, version = $4, updated_at = $6",
    )
    .bind(kind.as_str())
    .bind(name)
    .bind(spec)
    .bind(version)
    .bind(created_at)
    .bind(updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn stored_from_row<E: Entity>(row: &sqlx::any::AnyRow) -> Result<Stored<E>, StoreError> {
    let spec: String = row.try_get(0)?;
    let value = serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(format!("{}: {e}", E::KIND.as_str())))?;
    Ok(Stored { value, version: row.try_get(1)?, created_at: row.try_get(2)?, updated_at: row.try_get(3)? })
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Compares two stored documents by meaning, not by byte layout.
fn same_json(a: &str, b: &str) -> bool {
    match (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
