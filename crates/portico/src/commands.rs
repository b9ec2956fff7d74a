//! The commands other than `serve`: they work on the store or on files and exit.

use crate::cli::TokenCommand;
use anyhow::{bail, Context};
use portico_model::{parse_yaml, Config, HoldsSecrets, MasterKey};
use portico_store::{Actor, Role, Store};
use std::io::Write;
use std::path::Path;

/// `portico check`: prints every problem; Err if there is any.
pub fn check(file: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let config = read_config(file)?;
    let counted = |n: usize, noun: &str| match n {
        1 => format!(", 1 {noun}"),
        n => format!(", {n} {noun}s"),
    };
    let ai: String = [
        ("AI provider", config.ai_providers.len()),
        ("AI model", config.ai_models.len()),
        ("AI budget", config.ai_budgets.len()),
        ("prompt", config.ai_prompts.len()),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(noun, n)| counted(n, noun))
    .collect();
    writeln!(
        out,
        "{}: OK ({} services, {} routes, {} consumers{ai})",
        file.display(),
        config.services.len(),
        config.routes.len(),
        config.consumers.len()
    )?;
    Ok(())
}

fn read_config(file: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    parse_yaml(&text).map_err(|problems| {
        let count = problems.0.len();
        anyhow::anyhow!("{}: {count} problem{}:\n{problems}", file.display(), if count == 1 { "" } else { "s" })
    })
}

/// `portico apply`: shows the differences, then makes the store match the file.
pub async fn apply(
    store: &Store,
    file: &Path,
    dry_run: bool,
    master_key: Option<&MasterKey>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut wanted = read_config(file)?;
    let (_, current) = store.load().await?;
    seal_secrets(&mut wanted, &current, master_key)?;
    // Plain-text keys and passwords are stored as hashes; a password the store already holds
    // a matching hash for keeps it, so applying the same file twice changes nothing.
    for consumer in &mut wanted.consumers {
        let previous = current.consumers.iter().find(|c| c.name == consumer.name);
        consumer.seal_reusing(previous);
    }
    let changes = diff(&current, &wanted);
    if changes.is_empty() {
        writeln!(out, "no changes")?;
        return Ok(());
    }
    for change in &changes {
        writeln!(out, "{change}")?;
    }
    if dry_run {
        writeln!(out, "dry run: {} change(s) not applied", changes.len())?;
        return Ok(());
    }
    let revision = store.acting_as(cli_actor("portico apply")).replace_all(&wanted).await?;
    writeln!(out, "applied {} change(s); the store is at revision {revision}", changes.len())?;
    Ok(())
}

/// Seals secrets written in plain text (certificate keys, upstream client keys, JWT secrets). A secret the
/// store already holds sealed keeps its sealed text, so applying the same file twice changes
/// nothing.
fn seal_secrets(wanted: &mut Config, current: &Config, master_key: Option<&MasterKey>) -> anyhow::Result<()> {
    fn seal_all<E: HoldsSecrets + Clone>(
        wanted: &mut [E],
        current: &[E],
        name: fn(&E) -> &str,
        key: Option<&MasterKey>,
    ) -> anyhow::Result<()> {
        for entity in wanted {
            let mut previous = current.iter().find(|c| name(c) == name(entity)).cloned();
            let label = name(entity).to_owned();
            entity.seal_secrets(key, previous.as_mut()).map_err(|e| anyhow::anyhow!("`{label}`: {e}"))?;
        }
        Ok(())
    }
    seal_all(&mut wanted.certificates, &current.certificates, |c| &c.name, master_key)?;
    seal_all(&mut wanted.services, &current.services, |s| &s.name, master_key)?;
    seal_all(&mut wanted.routes, &current.routes, |r| &r.name, master_key)?;
    seal_all(&mut wanted.ai_providers, &current.ai_providers, |p| &p.name, master_key)?;
    seal_all(std::slice::from_mut(&mut wanted.global), std::slice::from_ref(&current.global), |_| "global", master_key)
}

/// `portico secrets rotate-key`: re-seals every stored secret with `new`, in one
/// transaction. Returns how many secrets were re-sealed.
pub async fn rotate_key(store: &Store, old: Option<&MasterKey>, new: &MasterKey) -> anyhow::Result<usize> {
    let (_, mut config) = store.load().await?;
    let mut count = 0;
    for certificate in &mut config.certificates {
        count += certificate.reseal_secrets(old, new).with_context(|| format!("certificate `{}`", certificate.name))?;
    }
    for service in &mut config.services {
        count += service.reseal_secrets(old, new).with_context(|| format!("service `{}`", service.name))?;
    }
    for route in &mut config.routes {
        count += route.reseal_secrets(old, new).with_context(|| format!("route `{}`", route.name))?;
    }
    for provider in &mut config.ai_providers {
        count += provider.reseal_secrets(old, new).with_context(|| format!("AI provider `{}`", provider.name))?;
    }
    count += config.global.reseal_secrets(old, new).context("the global settings")?;
    store.acting_as(cli_actor("portico secrets rotate-key")).replace_all(&config).await?;
    Ok(count)
}

/// One line per added (+), changed (~) or removed (-) entity, services first.
pub fn diff(current: &Config, wanted: &Config) -> Vec<String> {
    fn compare<T: PartialEq>(
        kind: &str,
        current: &[T],
        wanted: &[T],
        name: impl Fn(&T) -> &str,
        out: &mut Vec<String>,
    ) {
        for w in wanted {
            match current.iter().find(|c| name(c) == name(w)) {
                None => out.push(format!("+ {kind} {}", name(w))),
                Some(c) if c != w => out.push(format!("~ {kind} {}", name(w))),
                Some(_) => {}
            }
        }
        for c in current {
            if !wanted.iter().any(|w| name(w) == name(c)) {
                out.push(format!("- {kind} {}", name(c)));
            }
        }
    }
    let mut out = Vec::new();
    compare("service", &current.services, &wanted.services, |s| &s.name, &mut out);
    compare("route", &current.routes, &wanted.routes, |r| &r.name, &mut out);
    compare("consumer", &current.consumers, &wanted.consumers, |c| &c.name, &mut out);
    compare("certificate", &current.certificates, &wanted.certificates, |c| &c.name, &mut out);
    compare("AI provider", &current.ai_providers, &wanted.ai_providers, |p| &p.name, &mut out);
    compare("AI model", &current.ai_models, &wanted.ai_models, |m| &m.name, &mut out);
    compare("AI budget", &current.ai_budgets, &wanted.ai_budgets, |b| &b.name, &mut out);
    compare("AI prompt", &current.ai_prompts, &wanted.ai_prompts, |p| &p.name, &mut out);
    if current.global != wanted.global {
        out.push("~ global settings".into());
    }
    out
}

/// Changes made from the command line are recorded as the CLI's, with the OS user's name.
fn cli_actor(command: &str) -> Actor {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown user".into());
    Actor { id: "cli".into(), name: format!("{command} ({user})") }
}

/// `portico export`: the store's configuration as YAML.
pub async fn export(store: &Store) -> anyhow::Result<String> {
    let (_, config) = store.load().await?;
    Ok(yaml_serde::to_string(&config.sorted())?)
}

/// `portico admin token ...`.
pub async fn token(store: &Store, command: &TokenCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, role } => {
            if name.trim().is_empty() {
                bail!("a token needs a name");
            }
            let role = Role::parse(role).unwrap_or(Role::Viewer);
            let new = store.acting_as(cli_actor("portico admin token create")).create_token(name, role).await?;
            writeln!(out, "{}", new.secret)?;
            eprintln!("Created {} token {} ({name}). It is shown only this once.", role.as_str(), new.token.id);
        }
        TokenCommand::List => {
            writeln!(out, "{:<14} {:<24} {:<9} {:<12} STATUS", "ID", "NAME", "ROLE", "CREATED")?;
            for token in store.list_tokens().await? {
                let status = if token.revoked_at.is_some() { "revoked" } else { "active" };
                let role = token.role.as_str();
                writeln!(out, "{:<14} {:<24} {role:<9} {:<12} {status}", token.id, token.name, token.created_at)?;
            }
        }
        TokenCommand::Revoke { id_or_name } => {
            let count = store.acting_as(cli_actor("portico admin token revoke")).revoke_token(id_or_name).await?;
            writeln!(out, "revoked {count} token(s)")?;
        }
    }
    Ok(())
}
