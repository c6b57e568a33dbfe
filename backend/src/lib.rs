//! Tollgate's backend, the control plane: the `/api/v1` HTTP API (identity,
//! tenants, members, invitations, API keys), its store on SQLite or
//! PostgreSQL, token signing keys, and authorization of every call through
//! the policy engine.

pub mod api;
pub mod auth;
pub mod authz;
pub mod problem;
pub mod roles;
pub mod state;
pub mod store;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tollgate_policies::PolicyEngine;

pub use state::{AppState, BackendConfig};
use auth::tokens::{KeyError, KeyRing};
use store::Store;

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot prepare the dummy password hash")]
    Hash,
}

/// Opens the signing keys (creating the first one) and assembles the state.
pub async fn build_state(store: Store, engine: Arc<PolicyEngine>, config: BackendConfig) -> Result<AppState, StartError> {
    let keys = KeyRing::open(store.clone(), config.key_dir(), config.issuer.clone(), config.access_ttl).await?;
    let dummy = auth::password::hash(&auth::secrets::random_token()).map_err(|_| StartError::Hash)?;
    Ok(AppState {
        store,
        engine,
        keys: Arc::new(keys),
        config: Arc::new(config),
        dummy_hash: dummy.into(),
    })
}

/// The whole HTTP surface of the backend.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .nest("/api/v1", api::router())
        .route("/.well-known/jwks.json", get(api::jwks))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Reloads the signing keys periodically so a rotation by `tollgate keys
/// rotate` (another process) is picked up without restart.
pub fn spawn_key_reload(keys: Arc<KeyRing>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.tick().await;
        loop {
            interval.tick().await;
            if let Err(e) = keys.reload().await {
                tracing::warn!(error = %e, "signing key reload failed");
            }
        }
    })
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
