//! The shared state of the backend's handlers and its validated configuration.

use std::path::PathBuf;
use std::sync::Arc;

use tollgate_identity::credentials::StoreLookups;
use tollgate_identity::layers::TenantEngines;
use tollgate_identity::plans::Catalog;
use tollgate_identity::tokens::KeyRing;
use tollgate_store::Store;

/// The backend's settings, validated by the CLI before it starts.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Where signing keys and the SQLite file live.
    pub data_dir: PathBuf,
    /// The `iss` of our tokens: the public base URL.
    pub issuer: String,
    /// Access token lifetime in seconds.
    pub access_ttl: i64,
    /// Refresh token (session) lifetime in seconds.
    pub refresh_ttl: i64,
    /// Invitation lifetime in seconds.
    pub invitation_ttl: i64,
    /// Whether the refresh cookie carries `Secure`.
    pub secure_cookies: bool,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The plans tenants can be on.
    pub catalog: Arc<Catalog>,
    /// The key that seals secrets the platform reads back (TOTP seeds);
    /// made on first start when absent. Instances sharing a database share it.
    pub secrets_key_file: PathBuf,
    /// Whether SSO connections may name a plain-http issuer on a loopback
    /// address (a provider run locally by tests); never in production.
    pub sso_allow_http_loopback: bool,
    /// The SMTP relay that delivers the outbox; mail stays in the outbox
    /// when there is none.
    pub smtp: Option<crate::mail::SmtpConfig>,
}

impl BackendConfig {
    pub fn new(data_dir: PathBuf, issuer: String) -> Self {
        Self {
            secrets_key_file: data_dir.join("secrets.key"),
            data_dir,
            issuer,
            access_ttl: 15 * 60,
            refresh_ttl: 30 * 24 * 3600,
            invitation_ttl: 7 * 24 * 3600,
            secure_cookies: true,
            max_body_bytes: 64 * 1024,
            catalog: Arc::new(Catalog::builtin()),
            sso_allow_http_loopback: false,
            smtp: None,
        }
    }

    pub fn key_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }
}

/// What every handler shares: cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    /// Credential look-ups, straight on the store.
    pub lookups: StoreLookups,
    /// The platform's policies in force (swapped whole when their files
    /// change) and each tenant's engine with its layer.
    pub engines: Arc<TenantEngines>,
    pub keys: Arc<KeyRing>,
    pub config: Arc<BackendConfig>,
    /// A hash verified against when the email is unknown, so that unknown
    /// emails cost the same time as wrong passwords.
    pub dummy_hash: Arc<str>,
    /// Every password hash and verification runs through this bound.
    pub hashing: crate::auth::password::Hashing,
    /// Seals TOTP secrets and SSO client secrets at rest.
    pub sealer: Arc<tollgate_identity::sealed::Sealer>,
    /// The OpenID providers of tenants' SSO connections.
    pub sso: Arc<crate::sso::Providers>,
}
