//! Tollgate's backend, the control plane: the `/api/v1` HTTP API (identity,
//! tenants, members, invitations, API keys), its store on SQLite or
//! PostgreSQL, token signing keys, and authorization of every call through
//! the policy engine.

pub mod api;
pub mod auth;
pub mod authz;
pub mod mail;
pub mod problem;
pub mod saml;
pub mod scim;
pub mod sso;
pub mod state;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use tollgate_identity::credentials::StoreLookups;
use tollgate_policies::LivePolicies;

pub use state::{AppState, BackendConfig};
use tollgate_identity::assertion::BACKEND_UPSTREAM;
use tollgate_identity::layers::TenantEngines;
use tollgate_identity::plans::{LiveCatalog, seed_catalog};
use tollgate_identity::sealed::Sealer;
use tollgate_identity::tokens::{KeyError, KeyRing};
use tollgate_store::{Store, StoreError};

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot prepare the dummy password hash")]
    Hash,
    #[error(transparent)]
    Sealed(#[from] tollgate_identity::sealed::SealError),
}

/// Opens the signing keys (creating the first one) and assembles the state.
pub async fn build_state(
    store: Store,
    engine: Arc<LivePolicies>,
    config: BackendConfig,
) -> Result<AppState, StartError> {
    let keys = KeyRing::open(store.clone(), config.key_dir(), config.issuer.clone(), config.access_ttl).await?;
    let config_allow_http_loopback = config.sso_allow_http_loopback;
    let dummy = auth::password::hash(&tollgate_identity::secrets::random_token()).map_err(|_| StartError::Hash)?;
    let sealer = Arc::new(Sealer::load_or_create(&config.secrets_key_file)?);
    seal_legacy_secrets(&store, &sealer).await?;
    // The configured catalog becomes the store's, for every process on it.
    seed_catalog(&store, &config.catalog).await?;
    let catalog = Arc::new(LiveCatalog::new((*config.catalog).clone()));
    Arc::clone(&catalog).spawn_refresh(store.clone(), |_| {});
    Ok(AppState {
        lookups: StoreLookups::new(store.clone(), catalog),
        store,
        engines: Arc::new(TenantEngines::new(engine)),
        keys: Arc::new(keys),
        config: Arc::new(config),
        dummy_hash: dummy.into(),
        hashing: auth::password::Hashing::for_this_machine(),
        sealer,
        sso: Arc::new(sso::Providers::new(config_allow_http_loopback)),
    })
}

/// Seals the TOTP secrets stored before secrets were sealed at rest.
async fn seal_legacy_secrets(store: &Store, sealer: &Sealer) -> Result<(), StoreError> {
    let mut tx = store.tx().await?;
    for (user_id, secret) in tollgate_store::unsealed_totp_secrets(&mut tx).await? {
        let sealed = sealer.seal(&secret, &api::totp_context(&user_id));
        tollgate_store::replace_totp_secret(&mut tx, &user_id, &secret, &sealed).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The whole HTTP surface of the backend.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .nest("/api/v1", api::router())
        .nest("/scim/v2", scim::router())
        .route("/.well-known/jwks.json", get(api::jwks))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), request_log))
        .with_state(state)
}

fn request_id(headers: &HeaderMap) -> String {
    tollgate_identity::decision::request_id_or_new(headers.get("x-request-id").and_then(|v| v.to_str().ok()))
}

/// The client's address as the gateway in front saw it, from a verified
/// assertion; handlers prefer it to the connection's peer (the gateway).
#[derive(Debug, Clone)]
pub struct ForwardedClient(pub String);

/// One structured log line per request, with its id echoed in `X-Request-Id`.
/// A request from the gateway carries its signed assertion: when it verifies
/// (ours, addressed to the backend, unexpired), the client address it names
/// replaces the gateway's own, and the gateway's decision id joins the log
/// span of everything the request does, so the two decisions of one platform
/// call can be found together.
async fn request_log(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    use tracing::Instrument as _;
    let started = Instant::now();
    let id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let assertion = req
        .headers()
        .get("x-tollgate-assertion")
        .and_then(|v| v.to_str().ok())
        .and_then(|token| state.keys.verify_assertion(token, BACKEND_UPSTREAM).ok());
    // The decision id travels beside the assertion (which serves many
    // requests); believed only with a verified assertion, as the gateway
    // sets it and strips any client's.
    let gateway_decision = match &assertion {
        Some(_) => req.headers().get("x-tollgate-decision").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned(),
        None => String::new(),
    };
    if let Some(ip) = assertion.and_then(|a| a.ip) {
        req.extensions_mut().insert(ForwardedClient(ip));
    }
    let span = tracing::info_span!("request", request_id = %id, gateway_decision = %gateway_decision);
    let mut response = next.run(req).instrument(span.clone()).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    span.in_scope(|| {
        tracing::info!(
            method = %method,
            path = %path,
            status = response.status().as_u16(),
            latency_us = started.elapsed().as_micros() as u64,
            "request"
        );
    });
    response
}

/// Serves the backend on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown).await
}
