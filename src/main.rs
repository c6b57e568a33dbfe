//! The `tollgate` command: runs the services (`up`, `backend`), migrates the
//! store, rotates signing keys, reads the mail outbox, manages platform
//! administrators, and validates and tests policies.

mod config;
mod log_format;
mod log_writer;

/// Under load, glibc's allocator made the gateway's worker threads wait on
/// each other's arena locks (bench/RESULTS.md, 2026-11-26); mimalloc's
/// per-thread heaps do not. (Through a shim of our own: see its crate.)
#[global_allocator]
static ALLOCATOR: tollgate_allocator::MiMalloc = tollgate_allocator::MiMalloc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tollgate_backend::{AppState, BackendConfig};
use tollgate_gateway::caches::Caches;
use tollgate_gateway::config::{GatewayConfig, GatewayFile, ResourceFile, RouteFile, UpstreamFile};
use tollgate_gateway::pipeline::Gateway;
use tollgate_gateway::proxy::Listen;
use tollgate_gateway::quota::Meter;
use tollgate_gateway::route::RouteLimit;
use tollgate_identity::assertion::BACKEND_UPSTREAM;
use tollgate_identity::plans::LiveCatalog;
use tollgate_identity::tokens::{self, KeyRing};
use tollgate_policies::{LivePolicies, PolicyEngine, PolicyWatcher, ReloadOutcome, run_scenario_dir};
use tollgate_store::{self as store, DbKind, Store};

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
    /// Run the gateway alone, routing as the config file's `[gateway]` table
    /// (or a routes file) says.
    Gateway {
        #[command(flatten)]
        serve: ServeArgs,
        /// A routes file (TOML, the format of the `[gateway]` table) instead
        /// of the config file's table.
        #[arg(long)]
        routes: Option<PathBuf>,
    },
    /// Apply pending database migrations.
    Migrate(StoreArgs),
    /// Token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the outbox (invitations, verification and reset mail), newest first, with each mail's delivery status.
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
            serve(load_config(file, overrides)?, Role::Up).await?;
        }
        Command::Backend(args) => {
            let overrides = Overrides { listen: args.listen.clone(), ..store_overrides(&args.store) };
            serve(load_config(file, overrides)?, Role::Backend).await?;
        }
        Command::Gateway { serve: args, routes } => {
            let overrides = Overrides { listen: args.listen.clone(), ..store_overrides(&args.store) };
            serve(load_config(file, overrides)?, Role::Gateway { routes }).await?;
        }
        Command::Migrate(args) => {
            let config = load_config(file, store_overrides(&args))?;
            open_store(&config).await?;
            println!("migrations applied");
        }
        Command::Keys { command: KeysCommand::Rotate(args) } => {
            let config = load_config(file, store_overrides(&args))?;
            let store = open_store(&config).await?;
            let kid = tokens::rotate(&store, &config.data_dir.join("keys")).await?;
            println!("new signing key `{kid}`; this data dir's older keys stay published until their tokens expire");
        }
        Command::Outbox { to, limit, store: args } => {
            let config = load_config(file, store_overrides(&args))?;
            let store = open_store(&config).await?;
            let mut tx = store.tx().await?;
            let mails = store::outbox(&mut tx, to.as_deref(), limit.clamp(1, 1000)).await?;
            tx.commit().await?;
            for mail in mails {
                let status = match (mail.sent_at, mail.failed_at) {
                    (Some(_), _) => "sent".to_owned(),
                    (None, Some(_)) => format!("failed: {}", mail.last_error.as_deref().unwrap_or("")),
                    (None, None) if mail.attempts > 0 => {
                        format!("retrying ({} attempts): {}", mail.attempts, mail.last_error.as_deref().unwrap_or(""))
                    }
                    (None, None) => "queued".to_owned(),
                };
                println!("To: {}\nSubject: {}\nStatus: {status}\n\n{}\n---", mail.recipient, mail.subject, mail.body);
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

/// Logs go to stderr from a thread of their own, in batches (see
/// `log_writer`): a request's line is copied into a buffer, never written
/// on the request's thread. The returned guard writes what is buffered when
/// dropped (at the end of `serve`).
fn init_logging(format: LogFormat) -> Result<log_writer::Guard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) =
        log_writer::batch_writer(std::io::stderr(), "tollgate-log").context("cannot start the log writer")?;
    let dropped = writer.clone();
    tollgate_gateway::metrics::count_dropped_log_lines(move || dropped.dropped());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer.clone());
    match format {
        LogFormat::Json => {
            builder.fmt_fields(log_format::JsonFields).event_format(log_format::JsonLines).init();
            // The gateway's access lines, the same JSON without `tracing`'s
            // field visitors on every request.
            tollgate_gateway::access::write_to(log_format::JsonAccessLines(writer));
        }
        LogFormat::Pretty => builder.init(),
    }
    Ok(guard)
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
    backend.catalog = Arc::clone(&config.catalog);
    backend.sso_allow_http_loopback = config.sso_allow_http_loopback;
    backend.smtp = config.smtp.clone();
    if let Some(file) = &config.secrets_key_file {
        backend.secrets_key_file = file.clone();
    }
    Ok(tollgate_backend::build_state(store, engine, backend).await?)
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

/// An address for a listener that must be handed over as an address (the
/// gateway's, bound in pingora's own thread): the configured one, or a free
/// loopback port for port 0.
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

/// The platform's routes that anyone may call with a guess at a secret (and
/// most of them run a password hash): name, path, and the requests per
/// minute allowed per client address and in all.
const PASSWORD_ROUTES: [(&str, &str, u64, u64); 6] = [
    ("login", "/api/v1/auth/login", 20, 600),
    ("signup", "/api/v1/auth/signup", 10, 300),
    ("accept-invitation", "/api/v1/invitations/accept", 20, 600),
    ("mfa-verify", "/api/v1/auth/mfa/verify", 20, 600),
    ("password-forgot", "/api/v1/auth/password/forgot", 5, 300),
    ("password-reset", "/api/v1/auth/password/reset", 10, 300),
];

/// Single sign-on starts and callbacks per minute, per client address (an
/// office behind one NAT signs in through it) and in all.
const SSO_PER_IP: u64 = 120;
const SSO_GLOBAL: u64 = 3000;

const ALL_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn fixed_resource(type_name: &str, id: &str) -> ResourceFile {
    ResourceFile { type_name: type_name.to_owned(), param: None, id: Some(id.to_owned()) }
}

/// The gateway's routes in front of the platform's own backend, with the
/// pass-through action `platform.api` (the backend authorizes each call).
fn platform_routes(backend: SocketAddr) -> GatewayFile {
    // Named so the backend trusts the assertions the gateway sends it.
    let upstream = BACKEND_UPSTREAM.to_owned();
    let methods = |which: &[&str]| which.iter().map(|m| ((*m).to_owned(), "platform.api".to_owned())).collect();
    let mut routes: Vec<RouteFile> = [
        ("platform-api", "/api/v1/{rest*}", &ALL_METHODS[..]),
        ("jwks", "/.well-known/jwks.json", &["GET", "HEAD"][..]),
        ("healthz", "/healthz", &["GET", "HEAD"][..]),
        ("readyz", "/readyz", &["GET", "HEAD"][..]),
    ]
    .into_iter()
    .map(|(name, path, which)| RouteFile {
        name: name.to_owned(),
        path: path.to_owned(),
        upstream: upstream.clone(),
        methods: methods(which),
        resource: fixed_resource("Platform", "tollgate"),
        // The backend authenticates every call itself.
        forward_authorization: true,
        upstream_authenticates: false,
        feature: None,
        rate_limit: None,
    })
    .collect();
    // What anyone may call and costs a password hash: limited per client
    // address and in all, on top of the backend's lockouts and its bound on
    // concurrent hashing.
    for (name, path, per_ip, global) in PASSWORD_ROUTES {
        routes.push(RouteFile {
            name: name.to_owned(),
            path: path.to_owned(),
            upstream: upstream.clone(),
            methods: methods(&["POST"]),
            resource: fixed_resource("Platform", "tollgate"),
            forward_authorization: true,
            upstream_authenticates: false,
            feature: None,
            rate_limit: Some(RouteLimit { per_ip: Some(per_ip), global: Some(global), window_secs: 60 }),
        });
    }
    // Single sign-on: anyone may start one (each start stores a pending
    // sign-in and asks the identity provider), so it is limited like the
    // password routes.
    routes.push(RouteFile {
        name: "sso".to_owned(),
        path: "/api/v1/sso/{rest*}".to_owned(),
        upstream: upstream.clone(),
        // GET for starts, callbacks and metadata; POST for SAML responses.
        methods: methods(&["GET", "HEAD", "POST"]),
        resource: fixed_resource("Platform", "tollgate"),
        forward_authorization: true,
        upstream_authenticates: false,
        feature: None,
        rate_limit: Some(RouteLimit { per_ip: Some(SSO_PER_IP), global: Some(SSO_GLOBAL), window_secs: 60 }),
    });
    // Identity providers' SCIM pushes: the backend checks the tenant's SCIM
    // token (which the gateway would not take for a credential of its own);
    // limited like anonymous traffic, per client address.
    routes.push(RouteFile {
        name: "scim".to_owned(),
        path: "/scim/v2/{rest*}".to_owned(),
        upstream: upstream.clone(),
        methods: methods(&ALL_METHODS[..]),
        resource: fixed_resource("Platform", "tollgate"),
        forward_authorization: true,
        upstream_authenticates: true,
        feature: None,
        rate_limit: None,
    });
    GatewayFile {
        upstreams: [(upstream.clone(), UpstreamFile::at(backend))].into_iter().collect(),
        routes,
        ..GatewayFile::default()
    }
}

/// What one process runs.
enum Role {
    /// The gateway in front of the backend on an internal port (and the demo).
    Up,
    /// The backend API alone.
    Backend,
    /// The gateway alone, with these routes (else the config file's).
    Gateway { routes: Option<PathBuf> },
}

/// A gateway running in its own thread.
struct RunningGateway {
    public: SocketAddr,
    metrics: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
    flusher: tokio::task::JoinHandle<()>,
    meter: Arc<Meter>,
    store: Store,
}

impl RunningGateway {
    async fn start(
        config: &Config,
        gateway_config: GatewayConfig,
        keys: Arc<KeyRing>,
        engine: Arc<LivePolicies>,
        store: Store,
    ) -> Result<Self> {
        let public = concrete_address(config.listen)?;
        let metrics = concrete_address(config.metrics_listen)?;
        // The store's catalog (seeded by the backend) when there is one,
        // read again every few seconds; else this process's configuration.
        let catalog = Arc::new(LiveCatalog::new((*config.catalog).clone()));
        catalog.reload(&store).await?;
        tollgate_gateway::metrics::plan_limits(&catalog.get());
        Arc::clone(&catalog).spawn_refresh(store.clone(), tollgate_gateway::metrics::plan_limits);
        let caches = Caches::new(keys, config.database_url.clone(), engine, gateway_config.issuers.clone(), catalog);
        let gateway = Arc::new(Gateway::new(gateway_config, caches).context("cannot prepare the upstreams")?);
        let meter = Arc::clone(gateway.quotas.meter());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let flusher = tokio::spawn(flush_usage(Arc::clone(&meter), store.clone(), stopped.clone()));
        let thread = tollgate_gateway::proxy::spawn(gateway, Listen { proxy: public, metrics }, stopped)?;
        wait_listening(public).await?;
        wait_listening(metrics).await?;
        Ok(Self { public, metrics, stop, thread, flusher, meter, store })
    }

    /// Stops the proxy, then writes the usage it counted since the last
    /// flush, so a graceful stop loses none.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        let _ = self.flusher.await;
        for _ in 0..5 {
            match self.meter.flush(&self.store, tollgate_store::now()).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "cannot write usage counts at shutdown"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::error!(lost = self.meter.unflushed(), "usage counts not written at shutdown");
    }
}

/// Writes the gateway's usage counts to the store every
/// [`tollgate_gateway::quota::FLUSH_INTERVAL`] until `stop` turns true; a
/// failed flush keeps the counts for the next one.
async fn flush_usage(meter: Arc<Meter>, store: Store, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(tollgate_gateway::quota::FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = meter.flush(&store, tollgate_store::now()).await {
            tracing::warn!(error = %e, "cannot write usage counts; kept for the next flush");
        }
    }
}

/// Starts what `role` runs, announces where, serves until a shutdown signal,
/// and stops everything: one path for `up`, `backend` and `gateway`.
async fn serve(config: Config, role: Role) -> Result<()> {
    let _log_writer = init_logging(config.log_format)?;
    let (engine, _watcher) = load_engine(&config)?;
    let store = open_store(&config).await?;
    // The backend listens publicly alone, internally behind the gateway.
    let backend_listen = match role {
        Role::Up => Some("127.0.0.1:0".parse::<SocketAddr>()?),
        Role::Backend => Some(config.listen),
        Role::Gateway { .. } => None,
    };
    let backend = match backend_listen {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?)
        }
        None => None,
    };
    let public = match (&role, &backend) {
        (Role::Backend, Some(listener)) => listener.local_addr()?,
        _ => concrete_address(config.listen)?,
    };
    let issuer = config.public_url.clone().unwrap_or_else(|| format!("http://{public}"));
    let issuer = issuer.trim_end_matches('/').to_owned();
    let state = match &backend {
        Some(_) => Some(backend_state(&config, store.clone(), Arc::clone(&engine), &issuer).await?),
        None => None,
    };
    let keys = match &state {
        Some(state) => Arc::clone(&state.keys),
        None => Arc::new(
            KeyRing::open(store.clone(), config.data_dir.join("keys"), issuer.clone(), config.access_ttl_secs).await?,
        ),
    };
    KeyRing::spawn_reload(Arc::clone(&keys), Duration::from_secs(config.key_reload_secs));
    let mut config = config;
    config.listen = public;
    let gateway_config = match &role {
        Role::Backend => None,
        Role::Gateway { routes: Some(path) } => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            Some(GatewayConfig::from_toml(&text)?)
        }
        Role::Gateway { routes: None } => Some(GatewayConfig::from_file(config.gateway.clone())?),
        Role::Up => {
            let backend_addr = backend.as_ref().map(|l| l.local_addr()).transpose()?;
            let mut reserved = platform_routes(backend_addr.context("the backend has no address")?);
            if config.demo {
                let crm = start_demo(&issuer, backend_addr).await?;
                reserved = reserved.with_reserved(tollgate_demo::gateway_routes(crm))?;
            }
            Some(GatewayConfig::from_file(config.gateway.clone().with_reserved(reserved)?)?)
        }
    };
    let gateway = match gateway_config {
        Some(g) => Some(RunningGateway::start(&config, g, Arc::clone(&keys), engine, store.clone()).await?),
        None => None,
    };
    let what = match role {
        Role::Up => "Tollgate is up",
        Role::Backend => "Tollgate backend is up",
        Role::Gateway { .. } => "Tollgate gateway is up",
    };
    println!("{what} ({})", describe_store(&config, &store));
    match (&role, &gateway) {
        (Role::Gateway { .. }, Some(g)) => println!("  gateway  http://{}", g.public),
        _ => print_endpoints(public),
    }
    if matches!(role, Role::Up) && config.demo {
        println!("  crm      http://{public}/crm/contacts (the demo product)");
    }
    if let Some(g) = &gateway {
        println!("  metrics  http://{}/metrics", g.metrics);
    }
    if let (Role::Up, Some(listener)) = (&role, &backend) {
        println!("  backend  http://{} (internal, behind the gateway)", listener.local_addr()?);
    }
    // The backend's process delivers the outbox when a relay is configured.
    let (stop_relay, relay_stopped) = tokio::sync::watch::channel(false);
    let relay = match state.as_ref().and_then(|s| s.config.smtp.clone()) {
        Some(smtp) => {
            let relay = tollgate_backend::mail::Relay::new(&smtp, store.clone())?;
            println!("  smtp     {}:{} (delivers the outbox)", smtp.host, smtp.port);
            Some(tokio::spawn(relay.run(relay_stopped)))
        }
        None => None,
    };
    tracing::info!(address = %public, "listening");
    match (backend, state) {
        (Some(listener), Some(state)) => tollgate_backend::serve(listener, state, shutdown_signal()).await?,
        _ => shutdown_signal().await,
    }
    let _ = stop_relay.send(true);
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    if let Some(g) = gateway {
        g.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs the demo CRM on an internal port; it reaches Tollgate's JWKS and
/// decision point at the backend.
async fn start_demo(issuer: &str, backend: Option<SocketAddr>) -> Result<SocketAddr> {
    let backend = backend.context("the demo needs the backend")?;
    let crm = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the demo's port")?;
    let addr = crm.local_addr()?;
    let demo = tollgate_demo::app(tollgate_demo::DemoConfig {
        tollgate_url: format!("http://{backend}"),
        issuer: issuer.to_owned(),
        audience: tollgate_demo::UPSTREAM.into(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(crm, demo).await {
            tracing::error!(error = %e, "the demo product stopped");
        }
    });
    Ok(addr)
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
