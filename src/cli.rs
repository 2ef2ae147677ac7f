//! The command line: `serve` (the default), `check-config`, and `fake-upstream` for demos and benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::{AppOptions, AppState};
use crate::config::{Config, DEFAULT_LISTEN, FakeSettings};
use crate::server::{ServeSettings, serve};

#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about = "An LLM gateway: one OpenAI-compatible endpoint, many providers.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file [default: config/switchyard.toml, else the embedded default].
    #[arg(long, env = "SWITCHYARD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: the config's server.listen, else 127.0.0.1:8080].
    #[arg(long, env = "SWITCHYARD_LISTEN", global = true)]
    listen: Option<String>,
    /// Threads serving requests [default: the config's server.workers, else one per CPU core].
    #[arg(long, env = "SWITCHYARD_WORKERS", global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Apply the database migrations (`DATABASE_URL`, default the SQLite file) and exit.
    Migrate,
    /// Manage virtual keys in the database (`DATABASE_URL`, default the SQLite file).
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Manage dashboard accounts in the database (`DATABASE_URL`, default the SQLite file).
    Accounts {
        #[command(subcommand)]
        action: AccountsCommand,
    },
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        /// The file to check [default: --config, else config/switchyard.toml].
        file: Option<PathBuf>,
    },
    /// Classify a labelled set of conversations with `auto` and print the confusion matrix, the
    /// misclassified ones and the cost per request.
    AutoEval {
        /// JSONL of `{"tier", "why", "request"}` [default: tests/auto/conversations.jsonl].
        file: Option<PathBuf>,
    },
    /// Run the fake OpenAI-compatible model server on its own (for demos and benchmarks).
    FakeUpstream {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
        /// Delay before each response or first streamed token, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Streaming pace; 0 sends all tokens at once.
        #[arg(long, default_value_t = 0.0)]
        tokens_per_second: f64,
        /// Tokens in each reply.
        #[arg(long, default_value_t = 24)]
        completion_tokens: u32,
        /// Also take scripted faults over HTTP (`POST /fake/faults`), for scripts testing a gateway.
        #[arg(long)]
        control: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print its secret (shown this once).
    Create {
        /// The organisation's id or exact name; an organisation of that name is created if none exists.
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "free")]
        plan: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a key by id; it stops working at once for gateways that reload their keys.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Create an account that signs in to the dashboard. The password is read from
    /// `SWITCHYARD_ACCOUNT_PASSWORD`, else from the first line of standard input.
    Create {
        #[arg(long)]
        email: String,
        /// admin (the whole gateway), org_admin (one organisation) or viewer (read only).
        #[arg(long, default_value = "admin")]
        role: String,
        /// The organisation's id (org_admin, and a viewer of one organisation).
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        // The calling thread is the first worker; `server::serve` starts the others, a runtime each.
        Command::Serve => run_on(tokio::runtime::Builder::new_current_thread(), run_serve(cli.serve)),
        Command::Keys { action } => run_async(keys_command(action)),
        Command::Accounts { action } => run_async(accounts_command(action)),
        Command::Migrate => run_async(async {
            let store = crate::store::Store::connect(std::env::var("DATABASE_URL").ok().as_deref()).await?;
            eprintln!("migrations applied ({})", store.backend());
            Ok(())
        }),
        Command::CheckConfig { file } => check_config(file.or(cli.serve.config)),
        Command::AutoEval { file } => auto_eval(file, cli.serve.config),
        Command::FakeUpstream { listen, latency_ms, tokens_per_second, completion_tokens, control } => {
            let settings = FakeSettings { latency_ms, tokens_per_second, completion_tokens };
            run_async(run_fake(listen, settings, control))
        }
    }
}

fn run_async(fut: impl Future<Output = anyhow::Result<()>> + Send + 'static) -> ExitCode {
    run_on(tokio::runtime::Builder::new_multi_thread(), fut)
}

fn run_on(
    mut builder: tokio::runtime::Builder,
    fut: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> ExitCode {
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Spawned, not run in `block_on`: on a multi-threaded runtime the future then runs on a worker
    // instead of waking the main thread; a panic in it becomes an error instead of an abort.
    let outcome = runtime.block_on(async move {
        tokio::spawn(fut).await.unwrap_or_else(|e| Err(anyhow::anyhow!("the server task failed: {e}")))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn auto_eval(file: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    use crate::routing::auto::{TIERS, Thresholds, evaluate};
    let thresholds = match Config::load(config.as_deref()) {
        Ok(c) => Thresholds { economy_below: c.router.auto_economy_below, premium_from: c.router.auto_premium_from },
        Err(_) => Thresholds::default(),
    };
    let path = file.unwrap_or_else(|| PathBuf::from("tests/auto/conversations.jsonl"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchyard: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let e = match evaluate(&text, thresholds, true) {
        Ok(e) => e,
        Err(why) => {
            eprintln!("switchyard: {}: {why}", path.display());
            return ExitCode::FAILURE;
        }
    };
    say(&format!(
        "auto on {} conversations (economy below {}, premium from {}): {} right, accuracy {:.1}%",
        e.total,
        thresholds.economy_below,
        thresholds.premium_from,
        e.correct,
        100.0 * e.correct as f64 / e.total.max(1) as f64
    ));
    say(&format!("{:>10} | {:>8} {:>8} {:>8}   (rows: label, columns: chosen)", "", TIERS[0], TIERS[1], TIERS[2]));
    for (label, row) in TIERS.iter().zip(e.matrix) {
        say(&format!("{label:>10} | {:>8} {:>8} {:>8}", row[0], row[1], row[2]));
    }
    for (line, label, chosen, score, why) in &e.misses {
        say(&format!("  line {line}: {label} ({why}) classified {chosen} at {score:.3}"));
    }
    say(&format!(
        "cost: {:.1} us per conversation of the set, {:.1} us for a 2 KiB one",
        e.ns_per_request / 1000.0,
        e.ns_per_2kib / 1000.0
    ));
    ExitCode::SUCCESS
}

fn check_config(file: Option<PathBuf>) -> ExitCode {
    match Config::load(file.as_deref()) {
        Ok(config) => {
            eprintln!("configuration is valid: {} providers, {} models", config.providers.len(), config.models.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let source = crate::config::ConfigSource::resolve(args.config.as_deref());
    let config = source.load()?;
    crate::logging::init(&config.log);
    let opts = AppOptions { config_source: Some(source), ..AppOptions::default() };
    let (state, master) = AppState::new(&config, &opts).await?;
    reload_on_hangup(state.clone());
    // The tokenizer takes a moment to build; do it now rather than in the first request that needs it.
    tokio::task::spawn_blocking(crate::routing::tokens::warm_up);
    if master.generated {
        // Printed once, to the terminal only: never through the logger.
        eprintln!(
            "\n  No master key was set ({} is empty), so this run uses a generated one:\n\n      {}\n\n  Send it as `Authorization: Bearer <key>`. Set {} to choose your own.\n",
            config.auth.master_key_env,
            master.key.expose(),
            config.auth.master_key_env
        );
    }
    for p in &state.live().providers {
        if let Some(why) = p.unavailable_reason() {
            tracing::info!(provider = %p.name, "{why}");
        }
    }
    let listen =
        args.listen.or_else(|| config.listen_addr().map(str::to_owned)).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let workers = args
        .workers
        .map(usize::from)
        .or(config.server.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    let listener =
        crate::server::bind(&listen, workers).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, models = state.live().catalog.models().len(), workers, "switchyard is listening");
    serve(listener, workers, state, ServeSettings::from_config(&config), shutdown_signal()).await;
    Ok(())
}

async fn run_fake(listen: String, settings: FakeSettings, control: bool) -> anyhow::Result<()> {
    crate::logging::init(&Default::default());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(address = %listener.local_addr()?, control, "fake upstream is listening");
    let state = Arc::new(crate::fake::FakeState::new(settings));
    let mut app = crate::fake::router(state.clone());
    if control {
        app = app.merge(crate::fake::control_router(state.clone()));
    }
    crate::fake::serve_router(listener, state, app).await?;
    Ok(())
}

/// `SIGHUP` reads the configuration again, as `POST /admin/v1/reload` does; the outcome is logged.
/// The handler is installed before this returns (before the socket listens), so an early `SIGHUP`
/// cannot take its default action and end the process.
fn reload_on_hangup(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/v1/reload");
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let _ = crate::http::admin::reload_config(&state, "signal").await;
            }
        });
    }
    #[cfg(not(unix))]
    drop(state);
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Writes a line for the operator on stdout (the CLI's output proper, not a log).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

async fn keys_command(action: KeysCommand) -> anyhow::Result<()> {
    let store = crate::store::Store::connect(std::env::var("DATABASE_URL").ok().as_deref()).await?;
    for plan in crate::tenancy::default_plans() {
        store.seed_plan(&plan).await?;
    }
    match action {
        KeysCommand::Create { org, plan, name } => {
            let org_id = match store.organization(&org).await? {
                Some(o) => o.id,
                None => {
                    let found = store
                        .organizations(Some(&org), crate::store::Sort::default(), 500, 0)
                        .await?
                        .into_iter()
                        .find(|o| o.name == org);
                    match found {
                        Some(o) => o.id,
                        None => {
                            let spec = crate::tenancy::OrgSpec::named(org.clone());
                            let row = crate::tenancy::create_organization(&store, spec, "cli").await?;
                            say(&format!("created organization {} ({})", row.name, row.id));
                            row.id
                        }
                    }
                }
            };
            let spec =
                crate::tenancy::KeySpec { organization_id: org_id, name, plan: Some(plan), ..Default::default() };
            let (row, secret) = crate::tenancy::create_key(&store, spec).await?;
            let view = serde_json::json!({"id": row.id, "organization_id": row.organization_id, "plan": row.plan,
                                          "display_prefix": row.display_prefix});
            crate::tenancy::audit(&store, "cli", "key.create", ("api_key", &row.id), None, Some(&view)).await;
            say(&format!("key {} (plan {}, organization {})", row.id, row.plan, row.organization_id));
            say(secret.expose());
        }
        KeysCommand::List { org } => {
            for k in store.keys(org.as_deref(), None, crate::store::Sort::default(), 500, 0).await? {
                say(&format!(
                    "{}  {}…  {:8}  {:10}  {}  {}",
                    k.id, k.display_prefix, k.status, k.plan, k.organization_id, k.name
                ));
            }
        }
        KeysCommand::Revoke { id } => {
            if store.revoke_key(&id, crate::tenancy::now_ms()).await? {
                crate::tenancy::audit(&store, "cli", "key.revoke", ("api_key", &id), None, None).await;
                say(&format!("revoked {id}"));
            } else {
                anyhow::bail!("no active key with id {id}");
            }
        }
    }
    Ok(())
}

async fn accounts_command(action: AccountsCommand) -> anyhow::Result<()> {
    let store = crate::store::Store::connect(std::env::var("DATABASE_URL").ok().as_deref()).await?;
    match action {
        AccountsCommand::Create { email, role, org, name } => {
            let password = match std::env::var("SWITCHYARD_ACCOUNT_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            // The command line is the gateway's operator: the same checks and audit row as the admin API's.
            let cli = crate::http::auth::Principal { actor: "cli".into(), ..crate::http::auth::Principal::master() };
            let req = crate::http::accounts::NewAccount { email, name, password, role, organization_id: org };
            let row = crate::http::accounts::new_account(&store, &cli, req)
                .await
                .map_err(|e| anyhow::anyhow!(e.message.to_string()))?;
            say(&format!("account {} ({}, {})", row.id, row.email, row.role));
        }
    }
    Ok(())
}
