//! The `tollgate` command: runs the services (`up`, `backend`), migrates the
//! store, rotates signing keys, reads the mail outbox, manages platform
//! administrators, and validates and tests policies.

mod config;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tollgate_backend::auth::tokens::KeyRing;
use tollgate_backend::store::{self, DbKind, Store};
use tollgate_backend::{AppState, BackendConfig, auth};
use tollgate_gateway::config::GatewayConfig;
use tollgate_gateway::identity::Identity;
use tollgate_gateway::pipeline::Gateway;
use tollgate_policies::{LivePolicies, PolicyEngine, PolicyWatcher, ReloadOutcome, run_scenario_dir};

use config::{Config, LogFormat, Overrides};

#[derive(Parser)]
#[command(name = "tollgate", version, about = "Tollgate: an authorization gateway and SaaS platform backend")]
struct Cli {
    /// A TOML config file (also `TOLLGATE_CONFIG`).
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Default)]
struct StoreArgs {
    /// Where the SQLite file and signing keys live [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `sqlite:PATH` or `postgres://...` (also `TOLLGATE_DATABASE_URL`).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The public address [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on one address, on embedded SQLite unless configured otherwise.
    Up(ServeArgs),
    /// Run the backend API alone.
    Backend(ServeArgs),
    /// Run the gateway alone, routing as its config file says.
    Gateway {
        #[command(flatten)]
        serve: ServeArgs,
        /// The gateway's routes and upstreams (TOML).
        #[arg(long)]
        routes: PathBuf,
    },
    /// Apply pending database migrations.
    Migrate(StoreArgs),
    /// Token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print queued mail (invitations), newest first.
    Outbox {
        /// Only mail to this address.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 10)]
        limit: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Grant or revoke platform administration (suspending tenants).
    PlatformAdmin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Validate and test Cedar policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new signing key; older keys stay published until their tokens expire.
    Rotate(StoreArgs),
}

#[derive(Subcommand)]
enum AdminCommand {
    Grant {
        email: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    Revoke {
        email: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check the schema and every policy file of a policies directory.
    Validate {
        #[arg(long, default_value = "policies")]
        dir: PathBuf,
    },
    /// Run the scenario files under `<dir>/tests` against the policies of `<dir>`.
    Test {
        #[arg(long, default_value = "policies")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(file: Option<&Path>, overrides: Overrides) -> Result<Config> {
    Ok(Config::load(file, |k| std::env::var(k).ok(), &overrides)?)
}

fn store_overrides(args: &StoreArgs) -> Overrides {
    Overrides { data_dir: args.data_dir.clone(), database_url: args.database_url.clone(), listen: None }
}

async fn open_store(config: &Config) -> Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir `{}`", config.data_dir.display()))?;
    let store = Store::connect(&config.database_url).await.context("cannot open the database")?;
    store.migrate().await.context("cannot migrate the database")?;
    Ok(store)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let file = cli.config.as_deref();
    match cli.command {
        Command::Up(args) => {
            let overrides = Overrides { listen: args.listen.clone(), ..store_overrides(&args.store) };
            up(load_config(file, overrides)?).await?;
        }
        Command::Backend(args) => {
            let overrides = Overrides { listen: args.listen.clone(), ..store_overrides(&args.store) };
            serve(load_config(file, overrides)?).await?;
        }
        Command::Gateway { serve: args, routes } => {
            let overrides = Overrides { listen: args.listen.clone(), ..store_overrides(&args.store) };
            gateway_alone(load_config(file, overrides)?, &routes).await?;
        }
        Command::Migrate(args) => {
            let config = load_config(file, store_overrides(&args))?;
            open_store(&config).await?;
            println!("migrations applied");
        }
        Command::Keys { command: KeysCommand::Rotate(args) } => {
            let config = load_config(file, store_overrides(&args))?;
            let store = open_store(&config).await?;
            let kid = auth::tokens::rotate(&store, &config.data_dir.join("keys")).await?;
            println!("new signing key `{kid}`; older keys stay published until their tokens expire");
        }
        Command::Outbox { to, limit, store: args } => {
            let config = load_config(file, store_overrides(&args))?;
            let store = open_store(&config).await?;
            let mut tx = store.tx().await?;
            let mails = store::outbox(&mut tx, to.as_deref(), limit.clamp(1, 1000)).await?;
            tx.commit().await?;
            for mail in mails {
                println!("To: {}\nSubject: {}\n\n{}\n---", mail.recipient, mail.subject, mail.body);
            }
        }
        Command::PlatformAdmin { command } => {
            let (email, args, grant) = match command {
                AdminCommand::Grant { email, store } => (email, store, true),
                AdminCommand::Revoke { email, store } => (email, store, false),
            };
            let config = load_config(file, store_overrides(&args))?;
            let store = open_store(&config).await?;
            let mut tx = store.tx().await?;
            let email = email.trim().to_lowercase();
            if !store::set_platform_admin(&mut tx, &email, grant).await? {
                bail!("no account with email `{email}`");
            }
            tx.commit().await?;
            println!(
                "{} `{email}`",
                if grant { "granted platform administration to" } else { "revoked platform administration from" }
            );
        }
        Command::Policy { command } => return Ok(policy(command)),
    }
    Ok(ExitCode::SUCCESS)
}

fn policy(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Validate { dir } => match PolicyEngine::from_dir(&dir) {
            Ok(engine) => {
                println!("{} policies valid against the schema", engine.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        PolicyCommand::Test { dir } => {
            let engine = match PolicyEngine::from_dir(&dir) {
                Ok(engine) => engine,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match run_scenario_dir(&engine, &dir.join("tests")) {
                Ok(report) => {
                    for failure in &report.failures {
                        println!("FAIL {failure}");
                    }
                    println!("{} passed, {} failed", report.passed, report.failures.len());
                    if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_span_list(false).init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// The policies: built in, or a directory watched for changes (a valid
/// change is swapped in atomically, an invalid one refused with a log line
/// while the old set keeps serving).
fn load_engine(config: &Config) -> Result<(Arc<LivePolicies>, Option<PolicyWatcher>)> {
    let live = match &config.policies_dir {
        Some(dir) => LivePolicies::from_dir(dir),
        None => PolicyEngine::builtin().map(LivePolicies::fixed),
    }
    .context("cannot load policies")?;
    let live = Arc::new(live);
    let watcher = PolicyWatcher::start(Arc::clone(&live), |outcome| match outcome {
        ReloadOutcome::Swapped(n) => {
            tollgate_gateway::metrics::policy_reload("ok");
            tracing::info!(policies = n, "policies reloaded");
        }
        ReloadOutcome::Refused(e) => {
            tollgate_gateway::metrics::policy_reload("refused");
            tracing::error!(error = %e, "policy change refused; the previous policies keep serving");
        }
    })
    .context("cannot watch the policies directory")?;
    Ok((live, watcher))
}

/// The backend's state with the configured lifetimes, tokens issued by `issuer`.
async fn backend_state(config: &Config, store: Store, engine: Arc<LivePolicies>, issuer: &str) -> Result<AppState> {
    let mut backend = BackendConfig::new(config.data_dir.clone(), issuer.trim_end_matches('/').to_owned());
    backend.access_ttl = config.access_ttl_secs;
    backend.refresh_ttl = config.refresh_ttl_secs;
    backend.invitation_ttl = config.invitation_ttl_secs;
    backend.secure_cookies = config.secure_cookies;
    let state = tollgate_backend::build_state(store, engine, backend).await?;
    tollgate_backend::spawn_key_reload(Arc::clone(&state.keys), Duration::from_secs(config.key_reload_secs));
    Ok(state)
}

fn describe_store(config: &Config, store: &Store) -> String {
    let database = match store.kind() {
        DbKind::Sqlite => format!("embedded SQLite at {}", config.database_url.trim_start_matches("sqlite:")),
        DbKind::Postgres => "PostgreSQL".to_owned(),
    };
    format!("{database}, data in {}", config.data_dir.display())
}

fn print_endpoints(public: SocketAddr) {
    println!("  api      http://{public}/api/v1");
    println!("  openapi  http://{public}/api/v1/openapi.json");
    println!("  jwks     http://{public}/.well-known/jwks.json");
    println!("  health   http://{public}/healthz");
}

/// The backend alone on the configured address.
async fn serve(config: Config) -> Result<()> {
    init_logging(config.log_format);
    let (engine, _watcher) = load_engine(&config)?;
    let store = open_store(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    let issuer = config.public_url.clone().unwrap_or_else(|| format!("http://{bound}"));
    let state = backend_state(&config, store.clone(), engine, &issuer).await?;
    println!("Tollgate backend is up ({})", describe_store(&config, &store));
    print_endpoints(bound);
    tracing::info!(address = %bound, "backend listening");
    tollgate_backend::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// An address for a listener that must be handed over as an address (the
/// gateway's): the configured one, or a free loopback port for port 0.
fn concrete_address(listen: SocketAddr) -> Result<SocketAddr> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    let probe = std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    Ok(probe.local_addr()?)
}

/// Waits (bounded) until `addr` accepts connections: the gateway binds in its
/// own thread, and nothing is announced before it can be reached.
async fn wait_listening(addr: SocketAddr) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the gateway did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gateway's routes in front of the platform's own backend.
fn platform_routes(backend: SocketAddr) -> String {
    let all = r#"{ GET = "platform.api", HEAD = "platform.api", POST = "platform.api", PUT = "platform.api", PATCH = "platform.api", DELETE = "platform.api", OPTIONS = "platform.api" }"#;
    let read = r#"{ GET = "platform.api", HEAD = "platform.api" }"#;
    let platform = r#"{ type = "Platform", id = "tollgate" }"#;
    // Named so the backend trusts the assertions the gateway sends it.
    let name = tollgate_backend::auth::tokens::BACKEND_UPSTREAM;
    let mut out = format!("[upstreams.{name}]\naddresses = [\"{backend}\"]\n");
    for (route, path, methods) in [
        ("platform-api", "/api/v1/{rest*}", all),
        ("jwks", "/.well-known/jwks.json", read),
        ("healthz", "/healthz", read),
        ("readyz", "/readyz", read),
    ] {
        out.push_str(&format!(
            "[[routes]]\nname = \"{route}\"\npath = \"{path}\"\nupstream = \"{name}\"\nmethods = {methods}\nresource = {platform}\n"
        ));
    }
    out
}

/// Serves `/metrics` (Prometheus text) on the admin address; returns where.
async fn serve_metrics(listen: SocketAddr) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            ([("content-type", "text/plain; version=0.0.4")], tollgate_gateway::metrics::render())
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

/// Everything on one address: the gateway on the public address in front of
/// the backend on an internal loopback port.
async fn up(config: Config) -> Result<()> {
    init_logging(config.log_format);
    let (engine, _watcher) = load_engine(&config)?;
    let store = open_store(&config).await?;
    let public = concrete_address(config.listen)?;
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the backend's port")?;
    let backend_addr = internal.local_addr()?;
    let issuer = config.public_url.clone().unwrap_or_else(|| format!("http://{public}"));
    let state = backend_state(&config, store.clone(), Arc::clone(&engine), &issuer).await?;
    let crm = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the demo's port")?;
    let crm_addr = crm.local_addr()?;
    let demo = tollgate_demo::app(tollgate_demo::DemoConfig {
        tollgate_url: format!("http://{backend_addr}"),
        issuer: issuer.trim_end_matches('/').to_owned(),
        audience: "crm".into(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(crm, demo).await {
            tracing::error!(error = %e, "the demo product stopped");
        }
    });
    let routes = format!("{}{}", platform_routes(backend_addr), tollgate_demo::gateway_routes(crm_addr));
    let gateway_config = GatewayConfig::from_toml(&routes)?;
    let gateway = Arc::new(Gateway {
        config: gateway_config,
        engine,
        identity: Identity::new(Arc::clone(&state.keys), config.database_url.clone()),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let gateway_thread = tollgate_gateway::proxy::spawn(gateway, public, stopped)?;
    wait_listening(public).await?;
    let metrics = serve_metrics(config.metrics_listen).await?;
    println!("Tollgate is up ({})", describe_store(&config, &store));
    print_endpoints(public);
    println!("  crm      http://{public}/crm/contacts (the demo product)");
    println!("  metrics  http://{metrics}/metrics");
    println!("  backend  http://{backend_addr} (internal, behind the gateway)");
    tracing::info!(gateway = %public, backend = %backend_addr, "listening");
    tollgate_backend::serve(internal, state, shutdown_signal()).await?;
    let _ = stop.send(true);
    let _ = tokio::task::spawn_blocking(move || gateway_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// The gateway alone, with the routes of `routes`, verifying tokens with the
/// keys published in the store.
async fn gateway_alone(config: Config, routes: &Path) -> Result<()> {
    init_logging(config.log_format);
    let (engine, _watcher) = load_engine(&config)?;
    let store = open_store(&config).await?;
    let text = std::fs::read_to_string(routes).with_context(|| format!("cannot read `{}`", routes.display()))?;
    let gateway_config = GatewayConfig::from_toml(&text)?;
    let public = concrete_address(config.listen)?;
    let issuer = config.public_url.clone().unwrap_or_else(|| format!("http://{public}"));
    let keys =
        Arc::new(KeyRing::open(store.clone(), config.data_dir.join("keys"), issuer, config.access_ttl_secs).await?);
    tollgate_backend::spawn_key_reload(Arc::clone(&keys), Duration::from_secs(config.key_reload_secs));
    let identity = Identity::new(keys, config.database_url.clone()).with_issuers(gateway_config.issuers.clone());
    let gateway = Arc::new(Gateway { config: gateway_config, engine, identity });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let gateway_thread = tollgate_gateway::proxy::spawn(gateway, public, stopped)?;
    wait_listening(public).await?;
    let metrics = serve_metrics(config.metrics_listen).await?;
    println!("Tollgate gateway is up ({})", describe_store(&config, &store));
    println!("  gateway  http://{public}");
    println!("  metrics  http://{metrics}/metrics");
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = tokio::task::spawn_blocking(move || gateway_thread.join()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
