//! The gateway's caches over the store: everything the stages look up, so
//! the hot path does not wait on the database when caches are warm. Verified
//! tokens are cached by hash until they expire; liveness (sessions, keys,
//! memberships with their roles and groups, tenants with their status and
//! plan) is at most [`LIVENESS_TTL`] old, so a revoked session or key stops
//! working within that bound; tenant policy sets follow the store's change
//! feed and are at most `LAYER_TTL` stale.
//! Each cache miss loads once, however many requests wait for it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use sha2::{Digest, Sha256};
use tollgate_identity::credentials::{KEY_USE_GRANULARITY_SECS, KeyRecord, Lookups, StoreLookups};
use tollgate_identity::layers::{LAYER_UNAVAILABLE, TenantEngines};
use tollgate_identity::plans::{Catalog, LiveCatalog};
use tollgate_identity::principal::{ApiKey, Tenant, User};
use tollgate_identity::roles::Standing;
use tollgate_identity::tokens::{AccessClaims, KeyRing};
use tollgate_policies::{LivePolicies, PolicyEngine};
use tollgate_store::{SessionRow, Store, StoreError, now};

use crate::authenticate::Verifiers;
use crate::issuers::{ExternalError, ExternalIdentity, IssuerConfig, Issuers};
use crate::metrics::{self, Looked};
use crate::policy::Engines;
use crate::reject::Reject;
use crate::tenant::TenantDirectory;

/// How stale cached liveness may be: the bound on revocation.
pub const LIVENESS_TTL: Duration = Duration::from_secs(5);
const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const CACHE_CAPACITY: u64 = 100_000;
const MISSES_CAPACITY: u64 = 20_000;

/// Why a present-only cache has no entry: nothing was there, or the store failed.
#[derive(Debug)]
enum Absent {
    Missing,
    Fault(Arc<StoreError>),
}

const BAD_TOKEN: Reject = Reject::Unauthenticated("invalid or expired access token");

/// The store behind the gateway, with its caches.
pub struct Caches {
    keys: Arc<KeyRing>,
    database_url: String,
    /// Opened on first use, inside the runtime that serves requests.
    store: tokio::sync::OnceCell<StoreLookups>,
    tokens: Cache<[u8; 32], Arc<AccessClaims>>,
    sessions: Cache<String, Option<Arc<SessionRow>>>,
    users: Cache<String, Option<Arc<User>>>,
    /// Tenants by id, and by whatever a header or subdomain named them.
    tenants: Cache<String, Option<Arc<Tenant>>>,
    tenants_named: Cache<String, Arc<Tenant>>,
    /// Roles and groups of members and service accounts.
    standings: Cache<(String, String), Option<Standing>>,
    api_keys: Cache<String, Arc<KeyRecord>>,
    /// Names nothing was found under, by a client's hint or key prefix: kept
    /// apart (and bounded) so that a flood of made-up names never evicts the
    /// live entries above.
    tenant_misses: Cache<String, ()>,
    key_misses: Cache<String, ()>,
    /// Keys whose use was recorded within the last minute.
    key_uses: Cache<String, ()>,
    engines: TenantEngines,
    catalog: Arc<LiveCatalog>,
    issuers: Issuers,
    external: Cache<[u8; 32], Arc<ExternalIdentity>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

fn cache<K, V>(ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(ttl).build()
}

fn internal(e: impl std::fmt::Display) -> Reject {
    tracing::error!(error = %e, "store error in the gateway");
    Reject::Internal
}

impl Caches {
    /// Caches over the store at `database_url` (opened lazily, so its
    /// connections belong to the runtime that serves requests), verifying our
    /// tokens with `keys` and also those of the trusted `issuers`.
    pub fn new(
        keys: Arc<KeyRing>,
        database_url: String,
        policies: Arc<LivePolicies>,
        issuers: Vec<IssuerConfig>,
        catalog: Arc<LiveCatalog>,
    ) -> Self {
        Self::with_miss_capacity(keys, database_url, policies, issuers, catalog, MISSES_CAPACITY)
    }

    fn with_miss_capacity(
        keys: Arc<KeyRing>,
        database_url: String,
        policies: Arc<LivePolicies>,
        issuers: Vec<IssuerConfig>,
        catalog: Arc<LiveCatalog>,
        misses: u64,
    ) -> Self {
        Self {
            keys,
            database_url,
            store: tokio::sync::OnceCell::new(),
            tokens: cache(TOKEN_TTL),
            sessions: cache(LIVENESS_TTL),
            users: cache(LIVENESS_TTL),
            tenants: cache(LIVENESS_TTL),
            tenants_named: cache(LIVENESS_TTL),
            standings: cache(LIVENESS_TTL),
            api_keys: cache(LIVENESS_TTL),
            tenant_misses: Cache::builder().max_capacity(misses).time_to_live(LIVENESS_TTL).build(),
            key_misses: Cache::builder().max_capacity(misses).time_to_live(LIVENESS_TTL).build(),
            key_uses: cache(Duration::from_secs(KEY_USE_GRANULARITY_SECS as u64)),
            engines: TenantEngines::new(policies),
            catalog,
            issuers: Issuers::new(issuers),
            external: cache(TOKEN_TTL),
        }
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The signing keys, shared.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.keys)
    }

    async fn lookups(&self) -> Result<&StoreLookups, StoreError> {
        self.store
            .get_or_try_init(|| async {
                let store = Store::connect(&self.database_url).await?;
                Ok(StoreLookups::new(store, Arc::clone(&self.catalog)))
            })
            .await
    }

    /// `f` of the plans tenants can be on, as in force now.
    pub fn with_catalog<R>(&self, f: impl FnOnce(&Catalog) -> R) -> R {
        self.catalog.with(f)
    }

    /// The store, for what is counted rather than cached (usage).
    pub async fn store(&self) -> Result<&Store, Reject> {
        self.lookups().await.map(StoreLookups::store).map_err(internal)
    }

    /// A look-up through `cache`, loading from the store on a miss; both
    /// counted under `name`.
    async fn cached<K, V, F, Fut>(&self, cache: &Cache<K, V>, name: Looked, key: K, load: F) -> Result<V, StoreError>
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        F: FnOnce(StoreLookups) -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        // A pool handle: cheap to clone, owned by the loader.
        let lookups = self.lookups().await?.clone();
        metrics::cache_lookup(name);
        cache
            .try_get_with(key, async move {
                metrics::cache_miss(name);
                load(lookups).await
            })
            .await
            .map_err(StoreError::Shared)
    }
}

impl Caches {
    /// A look-up by a name a client chose: found entries in `cache`, names
    /// with nothing behind them in the separate, bounded `misses`.
    async fn cached_present<V, F, Fut>(
        &self,
        cache: &Cache<String, Arc<V>>,
        misses: &Cache<String, ()>,
        name: Looked,
        key: String,
        load: F,
    ) -> Result<Option<Arc<V>>, StoreError>
    where
        V: Send + Sync + 'static,
        F: FnOnce(StoreLookups) -> Fut,
        Fut: Future<Output = Result<Option<Arc<V>>, StoreError>>,
    {
        let lookups = self.lookups().await?.clone();
        metrics::cache_lookup(name);
        if misses.contains_key(&key) {
            return Ok(None);
        }
        let found = cache
            .try_get_with(key.clone(), async move {
                metrics::cache_miss(name);
                match load(lookups).await {
                    Ok(Some(value)) => Ok(value),
                    Ok(None) => Err(Absent::Missing),
                    Err(e) => Err(Absent::Fault(Arc::new(e))),
                }
            })
            .await;
        match found {
            Ok(value) => Ok(Some(value)),
            Err(absent) => match &*absent {
                Absent::Missing => {
                    misses.insert(key, ()).await;
                    Ok(None)
                }
                Absent::Fault(e) => Err(StoreError::Shared(Arc::clone(e))),
            },
        }
    }
}

impl Lookups for Caches {
    async fn session(&self, id: &str) -> Result<Option<Arc<SessionRow>>, StoreError> {
        self.cached(&self.sessions, Looked::Sessions, id.to_owned(), |l| async move { l.session(id).await }).await
    }

    async fn user(&self, id: &str) -> Result<Option<Arc<User>>, StoreError> {
        self.cached(&self.users, Looked::Users, id.to_owned(), |l| async move { l.user(id).await }).await
    }

    async fn tenant(&self, id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.cached(&self.tenants, Looked::Tenants, id.to_owned(), |l| async move { l.tenant(id).await }).await
    }

    async fn member_standing(&self, tenant_id: &str, user_id: &str) -> Result<Option<Standing>, StoreError> {
        let key = (tenant_id.to_owned(), user_id.to_owned());
        self.cached(
            &self.standings,
            Looked::Standings,
            key,
            |l| async move { l.member_standing(tenant_id, user_id).await },
        )
        .await
    }

    async fn service_account_standing(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> Result<Option<Standing>, StoreError> {
        let key = (tenant_id.to_owned(), format!("sa:{account_id}"));
        self.cached(&self.standings, Looked::Standings, key, |l| async move {
            l.service_account_standing(tenant_id, account_id).await
        })
        .await
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.cached_present(&self.api_keys, &self.key_misses, Looked::ApiKeys, prefix.to_owned(), |l| async move {
            l.api_key(prefix).await
        })
        .await
    }

    /// Records the use off the request path, at most once a minute per key
    /// per gateway (the cached record's own `last_used_at` goes stale).
    async fn key_used(&self, key: &ApiKey) {
        if self.key_uses.contains_key(&key.id) {
            return;
        }
        self.key_uses.insert(key.id.clone(), ()).await;
        let Ok(lookups) = self.lookups().await.cloned() else {
            return;
        };
        let mut key = key.clone();
        key.last_used_at = None;
        tokio::spawn(async move { lookups.key_used(&key).await });
    }
}

/// A verified token's content and when it stops being valid.
trait Expiring {
    fn expires_at(&self) -> i64;
}

impl Expiring for AccessClaims {
    fn expires_at(&self) -> i64 {
        self.exp
    }
}

impl Expiring for ExternalIdentity {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

/// A token verified once and then served from `cache` by its hash until it
/// expires, never past it.
async fn verified_once<T: Expiring + Send + Sync + 'static>(
    cache: &Cache<[u8; 32], Arc<T>>,
    name: Looked,
    token: &str,
    verify: impl Future<Output = Result<T, Reject>>,
) -> Result<Arc<T>, Reject> {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    metrics::cache_lookup(name);
    let verified = match cache.get(&digest).await {
        Some(verified) => verified,
        None => {
            metrics::cache_miss(name);
            let verified = Arc::new(verify.await?);
            cache.insert(digest, Arc::clone(&verified)).await;
            verified
        }
    };
    if verified.expires_at() <= now() {
        cache.invalidate(&digest).await;
        return Err(BAD_TOKEN);
    }
    Ok(verified)
}

impl Verifiers for Caches {
    async fn access_token(&self, token: &str) -> Result<Arc<AccessClaims>, Reject> {
        verified_once(&self.tokens, Looked::Tokens, token, async { self.keys.verify(token).map_err(|_| BAD_TOKEN) })
            .await
    }

    fn is_external(&self, token: &str) -> bool {
        self.issuers.claims_trusted_issuer(token)
    }

    async fn external_token(&self, token: &str) -> Result<Arc<ExternalIdentity>, Reject> {
        verified_once(&self.external, Looked::ExternalTokens, token, async {
            self.issuers.verify(token).await.map_err(|e| match e {
                ExternalError::ForeignTenant => Reject::Forbidden { detail: e.to_string(), policies: Vec::new() },
                _ => BAD_TOKEN,
            })
        })
        .await
    }
}

impl TenantDirectory for Caches {
    async fn tenant_named(&self, id_or_slug: &str) -> Result<Option<Arc<Tenant>>, Reject> {
        self.cached_present(
            &self.tenants_named,
            &self.tenant_misses,
            Looked::Tenants,
            id_or_slug.to_owned(),
            |l| async move { l.tenant_named(id_or_slug).await },
        )
        .await
        .map_err(internal)
    }
}

impl Engines for Caches {
    async fn engine_for(&self, tenant: Option<&Tenant>) -> Result<Arc<PolicyEngine>, Reject> {
        let Some(tenant) = tenant else {
            return Ok(self.engines.platform());
        };
        let lookups = self.lookups().await.map_err(internal)?;
        metrics::cache_lookup(Looked::Layers);
        self.engines
            .for_tenant(lookups.store(), &tenant.id, || metrics::cache_miss(Looked::Layers))
            .await
            .map_err(|_| Reject::Forbidden { detail: LAYER_UNAVAILABLE.into(), policies: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made-up key prefixes and tenant hints are remembered as misses, in a
    /// cache of their own with a bound, and never in the live caches.
    #[tokio::test]
    async fn made_up_key_prefixes_and_tenant_hints_stay_within_the_miss_bound() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let keys = KeyRing::open(db.store.clone(), db.dir.join("keys"), "https://tollgate.test".into(), 900)
                .await
                .unwrap();
            let policies = Arc::new(LivePolicies::fixed(PolicyEngine::builtin().unwrap()));
            let catalog = Arc::new(LiveCatalog::new(Catalog::builtin()));
            let caches = Caches::with_miss_capacity(Arc::new(keys), db.url.clone(), policies, Vec::new(), catalog, 100);
            for i in 0..400 {
                assert!(caches.api_key(&format!("{i:012x}")).await.unwrap().is_none(), "{l}");
                assert!(caches.tenant_named(&format!("made-up-{i}")).await.unwrap().is_none(), "{l}");
            }
            caches.key_misses.run_pending_tasks().await;
            caches.tenant_misses.run_pending_tasks().await;
            assert!(caches.key_misses.entry_count() <= 100, "{l}: {}", caches.key_misses.entry_count());
            assert!(caches.tenant_misses.entry_count() <= 100, "{l}: {}", caches.tenant_misses.entry_count());
            caches.api_keys.run_pending_tasks().await;
            caches.tenants_named.run_pending_tasks().await;
            assert_eq!((caches.api_keys.entry_count(), caches.tenants_named.entry_count()), (0, 0), "{l}");
        }
    }
}
