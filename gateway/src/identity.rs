//! The authenticate stage: turns a request's credential into a caller, with
//! every store look-up cached so the hot path does not wait on the database
//! when caches are warm. Cached liveness (sessions, keys, memberships with
//! their roles and groups, tenants with their status and plan) is at most
//! [`LIVENESS_TTL`] old: a revoked session or key stops working within
//! that bound.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use sha2::{Digest, Sha256};
use tollgate_backend::auth::principal::{Actor, Principal};
use tollgate_backend::auth::secrets;
use tollgate_backend::auth::tokens::{AccessClaims, KeyRing};
use tollgate_backend::layers::{self, LAYER_TTL_SECS};
use tollgate_backend::roles::{Builtin, ResolvedRole, Standing};
use tollgate_backend::store::{self, ApiKeyRow, SessionRow, Store, StoreError, TenantRow, UserRow, now};
use tollgate_policies::{LivePolicies, PolicyEngine};

use crate::issuers::{ExternalError, ExternalIdentity, IssuerConfig, Issuers};
use crate::metrics;
use crate::reject::Reject;

/// How stale cached liveness may be: the bound on revocation.
pub const LIVENESS_TTL: Duration = Duration::from_secs(5);
const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const CACHE_CAPACITY: u64 = 100_000;

/// Who is calling, as far as the gateway can tell.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A user or API key acting in the tenant of its credential.
    Known(Box<Principal>),
    /// No credential: policies decide what anonymous callers may do.
    Anonymous,
}

/// The authenticate stage's state: keys, the store, and the caches.
pub struct Identity {
    keys: Arc<KeyRing>,
    database_url: String,
    /// Opened on first use, inside the runtime that serves requests.
    store: tokio::sync::OnceCell<Store>,
    tokens: Cache<[u8; 32], Arc<AccessClaims>>,
    sessions: Cache<String, Option<Arc<SessionRow>>>,
    users: Cache<String, Option<Arc<UserRow>>>,
    tenants: Cache<String, Option<Arc<TenantRow>>>,
    /// Roles and groups of members and service accounts.
    standings: Cache<(String, String), Option<Standing>>,
    api_keys: Cache<String, Option<Arc<ApiKeyRow>>>,
    /// Each tenant's engine (platform plus its layer), at most
    /// `LAYER_TTL_SECS` old.
    layers: Cache<String, Arc<PolicyEngine>>,
    issuers: Issuers,
    external: Cache<[u8; 32], Arc<ExternalIdentity>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

fn cache<K, V>(ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(ttl).build()
}

const BAD_TOKEN: Reject = Reject::Unauthenticated("invalid or expired access token");
const BAD_KEY: Reject = Reject::Unauthenticated("invalid, revoked or expired API key");

fn internal(e: impl std::fmt::Display) -> Reject {
    tracing::error!(error = %e, "store error in the gateway");
    Reject::Internal
}

impl Identity {
    /// The stage over the store at `database_url` (opened lazily, so its
    /// connections belong to the runtime that serves requests).
    pub fn new(keys: Arc<KeyRing>, database_url: String) -> Self {
        Self {
            keys,
            database_url,
            store: tokio::sync::OnceCell::new(),
            tokens: cache(TOKEN_TTL),
            sessions: cache(LIVENESS_TTL),
            users: cache(LIVENESS_TTL),
            tenants: cache(LIVENESS_TTL),
            standings: cache(LIVENESS_TTL),
            api_keys: cache(LIVENESS_TTL),
            layers: cache(Duration::from_secs(LAYER_TTL_SECS)),
            issuers: Issuers::new(Vec::new()),
            external: cache(TOKEN_TTL),
        }
    }

    /// Also accepts tokens of these trusted external issuers.
    pub fn with_issuers(mut self, issuers: Vec<IssuerConfig>) -> Self {
        self.issuers = Issuers::new(issuers);
        self
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    async fn store(&self) -> Result<&Store, Reject> {
        self.store.get_or_try_init(|| Store::connect(&self.database_url)).await.map_err(internal)
    }

    /// The caller of a request with this `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>, client_ip: &str) -> Result<Caller, Reject> {
        let Some(value) = authorization else {
            return Ok(Caller::Anonymous);
        };
        let (scheme, token) = value.split_once(' ').ok_or(Reject::Unauthenticated("malformed authorization header"))?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Reject::Unauthenticated("authorization must be a bearer token"));
        }
        let principal = if token.starts_with(secrets::API_KEY_PREFIX) {
            self.by_api_key(token, client_ip).await?
        } else if self.issuers.claims_trusted_issuer(token) {
            self.by_external_token(token, client_ip).await?
        } else {
            self.by_access_token(token, client_ip).await?
        };
        Ok(Caller::Known(Box::new(principal)))
    }

    async fn verified(&self, token: &str) -> Result<Arc<AccessClaims>, Reject> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        metrics::cache_lookup("tokens");
        let claims = match self.tokens.get(&digest).await {
            Some(claims) => claims,
            None => {
                metrics::cache_miss("tokens");
                let claims = Arc::new(self.keys.verify(token).map_err(|_| BAD_TOKEN)?);
                self.tokens.insert(digest, Arc::clone(&claims)).await;
                claims
            }
        };
        // Cached until expiry, never past it.
        if claims.exp <= now() {
            self.tokens.invalidate(&digest).await;
            return Err(BAD_TOKEN);
        }
        Ok(claims)
    }

    async fn by_access_token(&self, token: &str, client_ip: &str) -> Result<Principal, Reject> {
        let claims = self.verified(token).await?;
        let session = self.session(&claims.sid).await?.ok_or(BAD_TOKEN)?;
        let live = session.is_live_for(&claims.sub, &claims.tid);
        if !live {
            return Err(Reject::Unauthenticated("session is no longer valid"));
        }
        let user = self.user(&claims.sub).await?.ok_or(BAD_TOKEN)?;
        let tenant = self.tenant(&claims.tid).await?.ok_or(BAD_TOKEN)?;
        let standing = self
            .member_standing(&claims.tid, &claims.sub)
            .await?
            .ok_or(Reject::Unauthenticated("membership was removed"))?;
        Ok(Principal {
            actor: Actor::User { user: (*user).clone(), session_id: claims.sid.clone(), amr: claims.amr.clone() },
            tenant,
            role: standing.role,
            groups: standing.groups,
            client_ip: client_ip.to_owned(),
        })
    }

    /// A token of a trusted external issuer: the issuer vouches for the
    /// subject, its tenant (one of those the issuer may speak for) and its
    /// roles; the principal is `User::"<issuer>#<subject>"`.
    async fn by_external_token(&self, token: &str, client_ip: &str) -> Result<Principal, Reject> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        metrics::cache_lookup("external_tokens");
        let identity = match self.external.get(&digest).await {
            Some(identity) => identity,
            None => {
                metrics::cache_miss("external_tokens");
                let identity = Arc::new(self.issuers.verify(token).await.map_err(|e| match e {
                    ExternalError::ForeignTenant => Reject::Forbidden { detail: e.to_string(), policies: Vec::new() },
                    _ => BAD_TOKEN,
                })?);
                self.external.insert(digest, Arc::clone(&identity)).await;
                identity
            }
        };
        if identity.expires_at <= now() {
            self.external.invalidate(&digest).await;
            return Err(BAD_TOKEN);
        }
        let tenant = self.tenant(&identity.tenant).await?.ok_or(BAD_TOKEN)?;
        let role = identity
            .roles
            .iter()
            .filter_map(|r| Builtin::parse(r))
            .max()
            .map_or(ResolvedRole { name: "none".into(), base: None, custom: false }, ResolvedRole::builtin);
        let t = now();
        let user = UserRow {
            id: format!("{}#{}", identity.issuer, identity.subject),
            email: identity.email.clone(),
            name: identity.subject.clone(),
            password_hash: None,
            platform_admin: 0,
            created_at: t,
            updated_at: t,
        };
        Ok(Principal {
            actor: Actor::User { user, session_id: String::new(), amr: vec!["ext".into()] },
            tenant,
            role,
            groups: Arc::from([]),
            client_ip: client_ip.to_owned(),
        })
    }

    async fn by_api_key(&self, token: &str, client_ip: &str) -> Result<Principal, Reject> {
        let prefix = secrets::api_key_prefix(token).ok_or(BAD_KEY)?;
        let key = self.api_key(prefix).await?.ok_or(BAD_KEY)?;
        if !key.accepts(token) {
            return Err(BAD_KEY);
        }
        let tenant = self.tenant(&key.tenant_id).await?.ok_or(BAD_KEY)?;
        let standing = match (&key.owner_user_id, &key.owner_service_account_id) {
            (Some(user_id), None) => self.member_standing(&key.tenant_id, user_id).await?.ok_or(BAD_KEY)?,
            (None, Some(sa_id)) => self.service_account_standing(&key.tenant_id, sa_id).await?.ok_or(BAD_KEY)?,
            _ => return Err(BAD_KEY),
        };
        let scopes = key.scopes().map_err(internal)?;
        Ok(Principal {
            actor: Actor::ApiKey { key: (*key).clone(), scopes },
            tenant,
            role: standing.role,
            groups: standing.groups,
            client_ip: client_ip.to_owned(),
        })
    }

    /// The engine for a request in `tenant`: the platform's, plus the
    /// tenant's active layer. A layer that cannot be loaded refuses the
    /// request (fail closed), it is never silently skipped.
    pub async fn engine_for(
        &self,
        live: &LivePolicies,
        tenant: Option<&TenantRow>,
    ) -> Result<Arc<PolicyEngine>, Reject> {
        let Some(tenant) = tenant else {
            return Ok(live.current());
        };
        let store = self.store().await?;
        metrics::cache_lookup("layers");
        self.layers
            .try_get_with(tenant.id.clone(), async move {
                metrics::cache_miss("layers");
                layers::tenant_engine(store, live, &tenant.id).await
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, tenant = %tenant.id, "tenant policies cannot be loaded");
                Reject::Forbidden { detail: "the tenant's policies cannot be loaded".into(), policies: Vec::new() }
            })
    }

    /// A look-up through `cache`, loading from the store on a miss; both
    /// counted under `name`.
    async fn cached<K, V, F, Fut>(&self, cache: &Cache<K, V>, name: &'static str, key: K, load: F) -> Result<V, Reject>
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        F: FnOnce(Store) -> Fut,
        Fut: std::future::Future<Output = Result<V, StoreError>>,
    {
        // A pool handle: cheap to clone, owned by the loader.
        let store = self.store().await?.clone();
        metrics::cache_lookup(name);
        cache
            .try_get_with(key, async move {
                metrics::cache_miss(name);
                load(store).await
            })
            .await
            .map_err(internal)
    }

    async fn session(&self, id: &str) -> Result<Option<Arc<SessionRow>>, Reject> {
        self.cached(&self.sessions, "sessions", id.to_owned(), |store| async move {
            let mut tx = store.tx().await?;
            let row = store::session_by_id(&mut tx, id).await?;
            tx.commit().await?;
            Ok(row.map(Arc::new))
        })
        .await
    }

    async fn user(&self, id: &str) -> Result<Option<Arc<UserRow>>, Reject> {
        self.cached(&self.users, "users", id.to_owned(), |store| async move {
            let mut tx = store.tx().await?;
            let row = store::user_by_id(&mut tx, id).await?;
            tx.commit().await?;
            Ok(row.map(Arc::new))
        })
        .await
    }

    /// A tenant by id (or by slug when `id` is not one).
    pub async fn tenant(&self, id_or_slug: &str) -> Result<Option<Arc<TenantRow>>, Reject> {
        self.cached(&self.tenants, "tenants", id_or_slug.to_owned(), |store| async move {
            let mut tx = store.tenant_tx(id_or_slug).await?;
            let mut row = store::tenant_by_id(&mut tx, id_or_slug).await?;
            if row.is_none() {
                row = store::tenant_by_slug(&mut tx, id_or_slug).await?;
            }
            tx.commit().await?;
            Ok(row.map(Arc::new))
        })
        .await
    }

    /// A member's role and groups.
    async fn member_standing(&self, tenant_id: &str, user_id: &str) -> Result<Option<Standing>, Reject> {
        self.cached(&self.standings, "standings", (tenant_id.to_owned(), user_id.to_owned()), |store| async move {
            let mut tx = store.tenant_tx(tenant_id).await?;
            let standing = Standing::of_member(&mut tx, tenant_id, user_id).await?;
            tx.commit().await?;
            Ok(standing)
        })
        .await
    }

    async fn service_account_standing(&self, tenant_id: &str, sa_id: &str) -> Result<Option<Standing>, Reject> {
        let key = (tenant_id.to_owned(), format!("sa:{sa_id}"));
        self.cached(&self.standings, "standings", key, |store| async move {
            let mut tx = store.tenant_tx(tenant_id).await?;
            let standing = Standing::of_service_account(&mut tx, tenant_id, sa_id).await?;
            tx.commit().await?;
            Ok(standing)
        })
        .await
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<Arc<ApiKeyRow>>, Reject> {
        self.cached(&self.api_keys, "api_keys", prefix.to_owned(), |store| async move {
            let mut tx = store.key_prefix_tx(prefix).await?;
            let row = store::api_key_by_prefix(&mut tx, prefix).await?;
            tx.commit().await?;
            Ok(row.map(Arc::new))
        })
        .await
    }
}
