use anyhow::Context;
use clap::Parser;
use portico::cli::{AdminCommand, Cli, Command, SecretsCommand};
use portico::{commands, Settings};
use portico_store::Store;
use std::io::Write;

// The proxy allocates small, short-lived buffers on every request; mimalloc's per-thread
// free lists serve those far faster than the system allocator (see bench/RESULTS.md). Its
// v2 line (the `v2` feature) costs fewer instructions per request here than v3, whose
// path for allocations aligned above 16 bytes is slower. `.cargo/config.toml` builds it to
// commit its arena on demand, which halves idle memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::resolve(&cli.settings)?;
    portico::logging::init(settings.log_format);
    // The control plane needs little: the proxy runs on its own worker threads.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(run(cli.command, settings))
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Serve { config } => serve(settings, config).await,
        Command::Check { file } => commands::check(&file, &mut out),
        Command::Apply { file, dry_run } => {
            let key = settings.master_key.as_deref();
            commands::apply(&open(&settings).await?, &file, dry_run, key, &mut out).await
        }
        Command::Export { output } => {
            let yaml = commands::export(&open(&settings).await?).await?;
            match output {
                Some(path) => std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display())),
                None => Ok(out.write_all(yaml.as_bytes())?),
            }
        }
        Command::Migrate => {
            open(&settings).await?;
            writeln!(out, "the store at {} is up to date", settings.store)?;
            Ok(())
        }
        Command::Admin { command: AdminCommand::Token { command } } => {
            commands::token(&open(&settings).await?, &command, &mut out).await
        }
        Command::Secrets { command: SecretsCommand::GenerateKey } => {
            Ok(writeln!(out, "{}", portico_model::MasterKey::generate())?)
        }
        Command::Secrets { command: SecretsCommand::RotateKey { new_key_file } } => {
            let text = std::fs::read_to_string(&new_key_file)
                .with_context(|| format!("cannot read {}", new_key_file.display()))?;
            let new = portico_model::MasterKey::parse(&text).map_err(anyhow::Error::msg)?;
            let count = commands::rotate_key(&open(&settings).await?, settings.master_key.as_deref(), &new).await?;
            writeln!(out, "re-sealed {count} secret(s) with key {}; start Portico with the new key now", new.id())?;
            Ok(())
        }
    }
}

async fn open(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.store).await.with_context(|| format!("cannot open the store {}", settings.store))
}

async fn serve(settings: Settings, config: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let running = portico::start(&settings, config).await?;
    if let Some(token) = &running.initial_token {
        eprintln!(
            "\nCreated the first admin token. It is shown only this once; keep it safe:\n\n    {token}\n\n\
             Use it as `Authorization: Bearer <token>` on the admin API at http://{}/api/v1\n",
            running.admin_addr
        );
    }
    tracing::info!(proxy = %running.proxy_addr, admin = %running.admin_addr, workers = settings.workers, "Portico is serving");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => running.reload(),
        }
    }
    tracing::info!("shutting down: draining requests in flight");
    running.shutdown().await;
    Ok(())
}
