//! The gateway's caches over the store: everything the stages look up, so
//! the hot path does not wait on the database when caches are warm. Verified
//! tokens are cached by hash until they expire; liveness (sessions, keys,
//! memberships with their roles and groups, tenants with their status and
//! plan) is kept until the store's change feed names it (read once per
//! `FEED_EVERY`, see [`feed`]), so a revoked session or key stops working
//! within about a second, and at most [`LIVENESS_TTL`] in any case; the
//! principal of an access token (from its second request) or of an API key
//! is kept for its later requests (one look-up instead of four or five)
//! until the feed names any change, and never longer than the oldest
//! liveness fact it was built from; tenant policy sets follow the same
//! feed (handed each reading) and are at most `LAYER_TTL` stale.
//! Each cache miss loads once, however many requests wait for it.
//!
//! A hit is answered before any loader exists: what a miss runs (the store's
//! queries, the cache's loading machinery) is awaited in a box of its own.
//! Unboxed, those futures (kilobytes each) would be part of every request's
//! future, which pingora allocates and copies for each request, hit or miss.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use sha2::{Digest, Sha256};
use tollgate_identity::credentials::{
    KEY_USE_GRANULARITY_SECS, KeyRecord, Lookups, StoreLookups, bearer, principal_from_api_key, principal_from_claims,
};
use tollgate_identity::layers::{LAYER_UNAVAILABLE, TenantEngines};
use tollgate_identity::plans::{Catalog, LiveCatalog};
use tollgate_identity::principal::{Actor, ApiKey, Principal, Tenant, User};
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

mod feed;

/// How long a cached liveness fact is kept when the liveness feed names no
/// change to it: a safety net behind the feed (which bounds revocation).
pub const LIVENESS_TTL: Duration = Duration::from_secs(60);
/// How long a name with nothing behind it (a key prefix, a tenant hint) is
/// remembered: a key or tenant created under it is found after this.
const MISS_TTL: Duration = Duration::from_secs(5);
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
    tokens: FoundCache<[u8; 32], Arc<AccessClaims>>,
    sessions: FoundCache<String, Loaded<Option<Arc<SessionRow>>>>,
    users: FoundCache<String, Loaded<Option<Arc<User>>>>,
    /// Tenants by id, and by whatever a header or subdomain named them.
    tenants: FoundCache<String, Loaded<Option<Arc<Tenant>>>>,
    tenants_named: FoundCache<String, Loaded<Arc<Tenant>>>,
    /// Roles and groups of members and service accounts.
    standings: FoundCache<(String, String), Loaded<Option<Standing>>>,
    /// Principals of recent access tokens and API keys (by the hash of
    /// the credential), each until the oldest liveness fact it was built
    /// from expires. (A synchronous cache: a hit is one look-up, without
    /// the future cache's bookkeeping, on every authenticated request.)
    principals: moka::sync::Cache<[u8; 32], Arc<Known>, Found>,
    api_keys: FoundCache<String, Loaded<Arc<KeyRecord>>>,
    /// Names nothing was found under, by a client's hint or key prefix: kept
    /// apart (and bounded) so that a flood of made-up names never evicts the
    /// live entries above.
    tenant_misses: Cache<String, ()>,
    key_misses: Cache<String, ()>,
    /// Keys whose use was recorded within the last minute.
    key_uses: FoundCache<String, ()>,
    engines: TenantEngines,
    catalog: Arc<LiveCatalog>,
    issuers: Issuers,
    external: FoundCache<[u8; 32], Arc<ExternalIdentity>>,
    feed: feed::Feed,
    liveness_ttl: Duration,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

/// The hasher of the caches that hold only what the store or a verified
/// credential gave (seeded per process; a fraction of SipHash's cost on
/// every look-up). Names a client makes up are inserted only into the miss
/// caches, which keep SipHash.
type Found = foldhash::quality::RandomState;

/// A cache of what was found.
type FoundCache<K, V> = Cache<K, V, Found>;

fn cache<K, V>(ttl: Duration) -> FoundCache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(ttl).build_with_hasher(Found::default())
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
        Self::with_bounds(keys, database_url, policies, issuers, catalog, MISSES_CAPACITY, LIVENESS_TTL)
    }

    /// Remembering at most `misses` made-up names, and keeping liveness
    /// facts the feed names no change to for `liveness_ttl`.
    fn with_bounds(
        keys: Arc<KeyRing>,
        database_url: String,
        policies: Arc<LivePolicies>,
        issuers: Vec<IssuerConfig>,
        catalog: Arc<LiveCatalog>,
        misses: u64,
        liveness_ttl: Duration,
    ) -> Self {
        Self {
            keys,
            database_url,
            store: tokio::sync::OnceCell::new(),
            tokens: cache(TOKEN_TTL),
            sessions: cache(liveness_ttl),
            users: cache(liveness_ttl),
            tenants: cache(liveness_ttl),
            tenants_named: cache(liveness_ttl),
            // Dropped per tenant when the feed names its standings.
            standings: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(liveness_ttl)
                .support_invalidation_closures()
                .build_with_hasher(Found::default()),
            principals: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(liveness_ttl)
                .build_with_hasher(Found::default()),
            api_keys: cache(liveness_ttl),
            tenant_misses: Cache::builder().max_capacity(misses).time_to_live(MISS_TTL).build(),
            key_misses: Cache::builder().max_capacity(misses).time_to_live(MISS_TTL).build(),
            key_uses: cache(Duration::from_secs(KEY_USE_GRANULARITY_SECS as u64)),
            // Fed from this gateway's one reading of the change feed.
            engines: TenantEngines::fed(policies),
            catalog,
            issuers: Issuers::new(issuers),
            external: cache(TOKEN_TTL),
            feed: feed::Feed::default(),
            liveness_ttl,
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
        if let Some(lookups) = self.store.get() {
            return Ok(lookups);
        }
        Box::pin(self.store.get_or_try_init(|| async {
            let store = Store::connect(&self.database_url).await?;
            Ok(StoreLookups::new(store, Arc::clone(&self.catalog)))
        }))
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
    /// counted under `name`. The value comes with when it was loaded.
    async fn cached<K, V, F, Fut>(
        &self,
        cache: &FoundCache<K, Loaded<V>>,
        name: Looked,
        key: K,
        load: F,
    ) -> Result<Loaded<V>, StoreError>
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        F: FnOnce(StoreLookups) -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        self.follow().await;
        metrics::cache_lookup(name);
        if let Some(found) = cache.get(&key).await {
            return Ok(found);
        }
        Box::pin(async move {
            // A pool handle: cheap to clone, owned by the loader.
            let lookups = self.lookups().await?.clone();
            cache
                .try_get_with(key, async move {
                    metrics::cache_miss(name);
                    let value = load(lookups).await?;
                    Ok(Loaded { at: Instant::now(), value })
                })
                .await
                .map_err(StoreError::Shared)
        })
        .await
    }

    async fn loaded_session(&self, id: &str) -> Result<Loaded<Option<Arc<SessionRow>>>, StoreError> {
        self.cached(&self.sessions, Looked::Sessions, id.to_owned(), |l| async move { l.session(id).await }).await
    }

    async fn loaded_user(&self, id: &str) -> Result<Loaded<Option<Arc<User>>>, StoreError> {
        self.cached(&self.users, Looked::Users, id.to_owned(), |l| async move { l.user(id).await }).await
    }

    async fn loaded_tenant(&self, id: &str) -> Result<Loaded<Option<Arc<Tenant>>>, StoreError> {
        self.cached(&self.tenants, Looked::Tenants, id.to_owned(), |l| async move { l.tenant(id).await }).await
    }

    async fn loaded_member_standing(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> Result<Loaded<Option<Standing>>, StoreError> {
        let key = (tenant_id.to_owned(), user_id.to_owned());
        self.cached(
            &self.standings,
            Looked::Standings,
            key,
            |l| async move { l.member_standing(tenant_id, user_id).await },
        )
        .await
    }

    async fn loaded_api_key(&self, prefix: &str) -> Result<Option<Loaded<Arc<KeyRecord>>>, StoreError> {
        self.cached_present(&self.api_keys, &self.key_misses, Looked::ApiKeys, prefix.to_owned(), |l| async move {
            l.api_key(prefix).await
        })
        .await
    }

    async fn loaded_service_account_standing(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> Result<Loaded<Option<Standing>>, StoreError> {
        let key = (tenant_id.to_owned(), format!("sa:{account_id}"));
        self.cached(&self.standings, Looked::Standings, key, |l| async move {
            l.service_account_standing(tenant_id, account_id).await
        })
        .await
    }
}

impl Caches {
    /// A look-up by a name a client chose: found entries in `cache` (with
    /// when they were loaded), names with nothing behind them in the
    /// separate, bounded `misses`.
    async fn cached_present<V, F, Fut>(
        &self,
        cache: &FoundCache<String, Loaded<Arc<V>>>,
        misses: &Cache<String, ()>,
        name: Looked,
        key: String,
        load: F,
    ) -> Result<Option<Loaded<Arc<V>>>, StoreError>
    where
        V: Send + Sync + 'static,
        F: FnOnce(StoreLookups) -> Fut,
        Fut: Future<Output = Result<Option<Arc<V>>, StoreError>>,
    {
        self.follow().await;
        metrics::cache_lookup(name);
        if misses.contains_key(&key) {
            return Ok(None);
        }
        if let Some(found) = cache.get(&key).await {
            return Ok(Some(found));
        }
        Box::pin(async move {
            let lookups = self.lookups().await?.clone();
            let found = cache
                .try_get_with(key.clone(), async move {
                    metrics::cache_miss(name);
                    match load(lookups).await {
                        Ok(Some(value)) => Ok(Loaded { at: Instant::now(), value }),
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
        })
        .await
    }
}

impl Lookups for Caches {
    async fn session(&self, id: &str) -> Result<Option<Arc<SessionRow>>, StoreError> {
        self.loaded_session(id).await.map(|l| l.value)
    }

    async fn user(&self, id: &str) -> Result<Option<Arc<User>>, StoreError> {
        self.loaded_user(id).await.map(|l| l.value)
    }

    async fn tenant(&self, id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.loaded_tenant(id).await.map(|l| l.value)
    }

    async fn member_standing(&self, tenant_id: &str, user_id: &str) -> Result<Option<Standing>, StoreError> {
        self.loaded_member_standing(tenant_id, user_id).await.map(|l| l.value)
    }

    async fn service_account_standing(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> Result<Option<Standing>, StoreError> {
        self.loaded_service_account_standing(tenant_id, account_id).await.map(|l| l.value)
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.loaded_api_key(prefix).await.map(|found| found.map(|l| l.value))
    }

    /// Records the use off the request path, at most once a minute per key
    /// per gateway (the cached record's own `last_used_at` goes stale).
    async fn key_used(&self, key: &ApiKey) {
        if self.key_uses.contains_key(&key.id) {
            return;
        }
        Box::pin(async {
            self.key_uses.insert(key.id.clone(), ()).await;
            let Ok(lookups) = self.lookups().await.cloned() else {
                return;
            };
            let mut key = key.clone();
            key.last_used_at = None;
            tokio::spawn(async move { lookups.key_used(&key).await });
        })
        .await;
    }
}

/// A cached liveness fact and when it was loaded from the store (its cache
/// drops it when the liveness feed names it, or [`LIVENESS_TTL`] later).
#[derive(Debug, Clone)]
struct Loaded<V> {
    at: Instant,
    value: V,
}

/// The caches' look-ups, remembering the load time of the oldest fact read
/// and the feed's generation before the first.
struct Timed<'a> {
    caches: &'a Caches,
    generation: u64,
    /// The oldest load time seen (`None` if the lock was poisoned: nothing
    /// is kept then).
    oldest: std::sync::Mutex<Option<Instant>>,
}

impl<'a> Timed<'a> {
    fn new(caches: &'a Caches) -> Self {
        Self { caches, generation: caches.feed.generation(), oldest: std::sync::Mutex::new(Some(Instant::now())) }
    }

    fn saw<V>(&self, loaded: Loaded<V>) -> V {
        match self.oldest.lock() {
            Ok(mut oldest) => *oldest = oldest.map(|o| o.min(loaded.at)),
            Err(poisoned) => *poisoned.into_inner() = None,
        }
        loaded.value
    }

    /// Until when what was read is as fresh as the caches promise.
    fn fresh_until(&self) -> Option<Instant> {
        self.oldest.lock().ok().and_then(|o| *o).map(|o| o + self.caches.liveness_ttl)
    }
}

impl Lookups for Timed<'_> {
    async fn session(&self, id: &str) -> Result<Option<Arc<SessionRow>>, StoreError> {
        self.caches.loaded_session(id).await.map(|l| self.saw(l))
    }

    async fn user(&self, id: &str) -> Result<Option<Arc<User>>, StoreError> {
        self.caches.loaded_user(id).await.map(|l| self.saw(l))
    }

    async fn tenant(&self, id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.caches.loaded_tenant(id).await.map(|l| self.saw(l))
    }

    async fn member_standing(&self, tenant_id: &str, user_id: &str) -> Result<Option<Standing>, StoreError> {
        self.caches.loaded_member_standing(tenant_id, user_id).await.map(|l| self.saw(l))
    }

    async fn service_account_standing(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> Result<Option<Standing>, StoreError> {
        self.caches.loaded_service_account_standing(tenant_id, account_id).await.map(|l| self.saw(l))
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.caches.loaded_api_key(prefix).await.map(|found| found.map(|l| self.saw(l)))
    }

    async fn key_used(&self, key: &ApiKey) {
        self.caches.key_used(key).await;
    }
}

/// The principal of an access token or API key, as built for requests from
/// one client address, and until when it may be handed out again: the
/// credential's expiry, the expiry of the oldest liveness fact it was built
/// from, and the feed's next change (its generation moving on), so that
/// keeping it never stretches the bound on revocation.
#[derive(Debug)]
struct Known {
    principal: Arc<Principal>,
    expires_at: i64,
    fresh_until: Instant,
    generation: u64,
}

/// A principal as kept for its credential, with what bounds its keeping:
/// what is made for it may be kept as long as [`Caches::still_kept`] holds.
#[derive(Debug, Clone)]
pub struct KeptPrincipal(Arc<Known>);

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

/// A token verified once and then served from `cache` by its hash
/// (`digest`) until it expires, never past it; with whether it was found
/// there (verified by an earlier request).
async fn verified_once<T: Expiring + Send + Sync + 'static>(
    cache: &FoundCache<[u8; 32], Arc<T>>,
    name: Looked,
    digest: [u8; 32],
    verify: impl Future<Output = Result<T, Reject>>,
) -> Result<(Arc<T>, bool), Reject> {
    metrics::cache_lookup(name);
    let (verified, seen) = match cache.get(&digest).await {
        Some(verified) => (verified, true),
        None => {
            metrics::cache_miss(name);
            let verified = Arc::new(verify.await?);
            cache.insert(digest, Arc::clone(&verified)).await;
            (verified, false)
        }
    };
    if verified.expires_at() <= now() {
        cache.invalidate(&digest).await;
        return Err(BAD_TOKEN);
    }
    Ok((verified, seen))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The hash its principal is kept by, of the credential in an
/// `Authorization` header value (`None` when it holds no bearer credential).
pub fn credential_digest(authorization: &str) -> Option<[u8; 32]> {
    bearer(authorization).ok().map(digest)
}

impl Caches {
    /// One of our access tokens, verified (or found verified) by its hash.
    async fn our_token(&self, token: &str, digest: [u8; 32]) -> Result<(Arc<AccessClaims>, bool), Reject> {
        verified_once(&self.tokens, Looked::Tokens, digest, async { self.keys.verify(token).map_err(|_| BAD_TOKEN) })
            .await
    }
}

impl Caches {
    /// The principal kept for a credential with this hash, for a request
    /// from `client_ip`, while it is fresh and the credential unexpired.
    fn kept(&self, digest: &[u8; 32], client_ip: &str) -> Option<Arc<Principal>> {
        metrics::cache_lookup(Looked::Principals);
        if let Some(known) = self.principals.get(digest)
            && self.holds(&known, client_ip, Instant::now(), now())
        {
            return Some(Arc::clone(&known.principal));
        }
        metrics::cache_miss(Looked::Principals);
        None
    }

    /// Whether `known` may still be handed out for a request from
    /// `client_ip` at `instant` (`at` in seconds): no change read from the
    /// feed since it was built, its facts fresh and its credential unexpired.
    fn holds(&self, known: &Known, client_ip: &str, instant: Instant, at: i64) -> bool {
        known.generation == self.feed.generation()
            && known.fresh_until > instant
            && known.expires_at > at
            && known.principal.client_ip == client_ip
    }

    /// The principal kept for the credential with this hash, if it is
    /// `principal` and may still be handed out: what an admission made for
    /// it may be kept by (see [`Self::still_kept`]).
    pub fn kept_as(&self, digest: &[u8; 32], principal: &Arc<Principal>) -> Option<KeptPrincipal> {
        let known = self.principals.get(digest)?;
        (Arc::ptr_eq(&known.principal, principal) && self.holds(&known, &principal.client_ip, Instant::now(), now()))
            .then_some(KeptPrincipal(known))
    }

    /// Whether `kept` may still be handed out for a request from
    /// `client_ip` at `instant` (`at` in seconds), the feed read first when
    /// it is due (so what it names ends `kept` as it ends the principal's
    /// cache entry).
    pub async fn still_kept(&self, kept: &KeptPrincipal, client_ip: &str, instant: Instant, at: i64) -> bool {
        self.follow().await;
        self.holds(&kept.0, client_ip, instant, at)
    }

    /// The platform's policies in force.
    pub fn platform(&self) -> Arc<PolicyEngine> {
        self.engines.platform()
    }

    /// Whether `platform` is still the platform's policy set in force.
    pub fn is_platform(&self, platform: &Arc<PolicyEngine>) -> bool {
        self.engines.live().is_current(platform)
    }

    /// Keeps `principal` for the credential with this hash, until it
    /// expires (`expires_at`) or the oldest fact `timed` read does.
    fn keep(&self, digest: [u8; 32], principal: &Arc<Principal>, expires_at: i64, timed: &Timed<'_>) {
        if let Some(fresh_until) = timed.fresh_until() {
            let known =
                Known { principal: Arc::clone(principal), expires_at, fresh_until, generation: timed.generation };
            self.principals.insert(digest, Arc::new(known));
        }
    }
}

impl Verifiers for Caches {
    async fn access_token(&self, token: &str) -> Result<Arc<AccessClaims>, Reject> {
        self.our_token(token, digest(token)).await.map(|(claims, _)| claims)
    }

    /// One look-up for a token's recent requests from the same address;
    /// otherwise the token verified (or found verified) and its principal
    /// built from the liveness caches, then kept as long as those facts
    /// from the token's second request on (a token used once, as by a
    /// client that signs in per call, fills no entry).
    async fn token_principal(&self, token: &str, client_ip: &str) -> Result<Arc<Principal>, Reject> {
        self.follow().await;
        let digest = digest(token);
        if let Some(principal) = self.kept(&digest, client_ip) {
            return Ok(principal);
        }
        Box::pin(async {
            let (claims, seen) = self.our_token(token, digest).await?;
            let timed = Timed::new(self);
            let principal = Arc::new(principal_from_claims(&timed, &claims, client_ip).await?);
            if seen {
                self.keep(digest, &principal, claims.exp, &timed);
            }
            Ok(principal)
        })
        .await
    }

    /// One look-up for a key's recent requests from the same address (its
    /// use still recorded); otherwise its record checked and its principal
    /// built from the liveness caches, then kept as long as those facts
    /// (the record's included) and the key.
    async fn key_principal(&self, key: &str, client_ip: &str) -> Result<Arc<Principal>, Reject> {
        self.follow().await;
        let digest = digest(key);
        if let Some(principal) = self.kept(&digest, client_ip) {
            if let Actor::ApiKey { key } = &principal.actor {
                self.key_used(key).await;
            }
            return Ok(principal);
        }
        Box::pin(async {
            let timed = Timed::new(self);
            let principal = Arc::new(principal_from_api_key(&timed, key, client_ip).await?);
            if let Actor::ApiKey { key } = &principal.actor {
                self.keep(digest, &principal, key.expires_at.unwrap_or(i64::MAX), &timed);
            }
            Ok(principal)
        })
        .await
    }

    fn is_external(&self, token: &str) -> bool {
        self.issuers.claims_trusted_issuer(token)
    }

    async fn external_token(&self, token: &str) -> Result<Arc<ExternalIdentity>, Reject> {
        verified_once(&self.external, Looked::ExternalTokens, digest(token), async {
            self.issuers.verify(token).await.map_err(|e| match e {
                ExternalError::ForeignTenant => Reject::Forbidden { detail: e.to_string(), policies: Arc::default() },
                _ => BAD_TOKEN,
            })
        })
        .await
        .map(|(identity, _)| identity)
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
        .map(|found| found.map(|l| l.value))
        .map_err(internal)
    }
}

impl Engines for Caches {
    async fn engine_for(&self, tenant: Option<&Tenant>) -> Result<Arc<PolicyEngine>, Reject> {
        let Some(tenant) = tenant else {
            return Ok(self.engines.platform());
        };
        self.follow().await;
        let lookups = self.lookups().await.map_err(internal)?;
        metrics::cache_lookup(Looked::Layers);
        self.engines
            .for_tenant(lookups.store(), &tenant.id, || metrics::cache_miss(Looked::Layers))
            .await
            .map_err(|_| Reject::Forbidden { detail: LAYER_UNAVAILABLE.into(), policies: Arc::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Caches over `db` with the built-in policies and plans, remembering
    /// at most `misses` made-up names.
    async fn caches_on(db: &tollgate_store::testing::TestDb, misses: u64) -> Caches {
        caches_with(db, misses, LIVENESS_TTL, Arc::new(LiveCatalog::new(Catalog::builtin()))).await
    }

    async fn caches_with(
        db: &tollgate_store::testing::TestDb,
        misses: u64,
        liveness_ttl: Duration,
        catalog: Arc<LiveCatalog>,
    ) -> Caches {
        let keys =
            KeyRing::open(db.store.clone(), db.dir.join("keys"), "https://tollgate.test".into(), 900).await.unwrap();
        let policies = Arc::new(LivePolicies::fixed(PolicyEngine::builtin().unwrap()));
        Caches::with_bounds(Arc::new(keys), db.url.clone(), policies, Vec::new(), catalog, misses, liveness_ttl)
    }

    /// A person who is a member of a new tenant, written in `tx` (bound to
    /// that tenant from then on, as row-level security needs).
    async fn new_member(
        db: &tollgate_store::testing::TestDb,
        tx: &mut tollgate_store::Tx,
        name: &str,
    ) -> (tollgate_store::UserRow, tollgate_store::TenantRow) {
        let email = format!("{}@tollgate.test", name.to_lowercase());
        let user = tollgate_store::insert_user(tx, &email, name, None, true).await.unwrap();
        let tenant = tollgate_store::insert_tenant(tx, name, &name.to_lowercase()).await.unwrap();
        db.store.bind_tenant(tx, &tenant.id).await.unwrap();
        tollgate_store::insert_membership(tx, &tenant.id, &user.id, "member").await.unwrap();
        (user, tenant)
    }

    /// A new API key of `user_id` in `tenant_id` with the scope `crm.read`,
    /// written in `tx`: its row, prefix and secret.
    async fn new_key(
        tx: &mut tollgate_store::Tx,
        tenant_id: &str,
        user_id: &str,
    ) -> (tollgate_store::ApiKeyRow, String, String) {
        let (prefix, secret) = tollgate_identity::secrets::new_api_key();
        let scopes = ["crm.read".to_owned()];
        let new = tollgate_store::NewApiKey {
            tenant_id,
            prefix: &prefix,
            secret_hash: &tollgate_identity::secrets::hash(&secret),
            name: "kept",
            scopes: &scopes,
            owner_user_id: Some(user_id),
            owner_service_account_id: None,
            created_by: user_id,
            expires_at: None,
        };
        let row = tollgate_store::insert_api_key(tx, &new).await.unwrap();
        (row, prefix, secret)
    }

    /// A member of a new tenant with a live session, and an access token of it.
    async fn signed_in(caches: &Caches, db: &tollgate_store::testing::TestDb, name: &str) -> SignedIn {
        let mut tx = db.store.tx().await.unwrap();
        let (user, tenant) = new_member(db, &mut tx, name).await;
        let new = tollgate_store::testing::new_session(&user.id, &tenant.id);
        let session = tollgate_store::insert_session(&mut tx, &new, &format!("refresh-{name}")).await.unwrap();
        tx.commit().await.unwrap();
        let (token, _) =
            caches.keys().issue(&user.id, &tenant.id, &session, vec!["member".into()], vec!["pwd".into()]).unwrap();
        SignedIn { user, tenant, session, token }
    }

    struct SignedIn {
        user: tollgate_store::UserRow,
        tenant: tollgate_store::TenantRow,
        session: String,
        token: String,
    }

    /// Waits until the liveness feed is due again (the next look-up reads it).
    async fn sleep_past_the_feed() {
        tokio::time::sleep(tollgate_identity::feed::FEED_EVERY + Duration::from_millis(200)).await;
    }

    /// A principal kept for a token's requests (from its second one, per
    /// address) ends when its session is revoked, at the first request
    /// after the liveness feed is next read: within about a second.
    #[tokio::test]
    async fn a_revoked_session_ends_its_kept_principal_at_the_next_feed_reading() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let caches = caches_on(&db, MISSES_CAPACITY).await;
            let s = signed_in(&caches, &db, "Kept").await;
            let first = caches.token_principal(&s.token, "10.0.0.1").await.unwrap();
            assert_eq!((first.tenant.id.as_str(), first.client_ip.as_str()), (s.tenant.id.as_str(), "10.0.0.1"), "{l}");
            assert!(!caches.principals.contains_key(&digest(&s.token)), "{l}: a token's first request keeps nothing");
            let elsewhere = caches.token_principal(&s.token, "10.0.0.2").await.unwrap();
            assert_eq!(elsewhere.client_ip, "10.0.0.2", "{l}: each address its own principal");
            assert!(caches.principals.contains_key(&digest(&s.token)), "{l}: its second request keeps it");
            let mut tx = db.store.tx().await.unwrap();
            assert!(tollgate_store::revoke_session(&mut tx, &s.user.id, &s.session, "test").await.unwrap(), "{l}");
            tx.commit().await.unwrap();
            sleep_past_the_feed().await;
            let after = caches.token_principal(&s.token, "10.0.0.2").await;
            assert!(matches!(after, Err(Reject::Unauthenticated(_))), "{l}: {after:?}");
        }
    }

    /// A key's principal is kept from its first request (its use still
    /// recorded on every one), until the feed names the key's revocation.
    #[tokio::test]
    async fn a_revoked_key_ends_its_kept_principal_at_the_next_feed_reading() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let caches = caches_on(&db, MISSES_CAPACITY).await;
            let mut tx = db.store.tx().await.unwrap();
            let (user, tenant) = new_member(&db, &mut tx, "Keyed").await;
            let (row, prefix, secret) = new_key(&mut tx, &tenant.id, &user.id).await;
            tx.commit().await.unwrap();

            let first = caches.key_principal(&secret, "10.0.0.1").await.unwrap();
            assert_eq!(first.tenant.id, tenant.id, "{l}");
            assert!(caches.principals.contains_key(&digest(&secret)), "{l}: kept from the first request");
            let wrong = format!("{prefix}_{}", "A".repeat(43));
            assert!(caches.key_principal(&wrong, "10.0.0.1").await.is_err(), "{l}: another secret, same prefix");
            caches.key_uses.invalidate(&row.id).await;
            let again = caches.key_principal(&secret, "10.0.0.1").await.unwrap();
            assert_eq!(again.actor_id(), first.actor_id(), "{l}");
            assert!(caches.key_uses.contains_key(&row.id), "{l}: a kept principal's request records the key's use");
            // Its use written to the store (not a change of the key) keeps it.
            let mut tx = db.store.tx().await.unwrap();
            db.store.bind_tenant(&mut tx, &tenant.id).await.unwrap();
            tollgate_store::touch_api_key(&mut tx, &tenant.id, &row.id).await.unwrap();
            tx.commit().await.unwrap();
            sleep_past_the_feed().await;
            caches.key_principal(&secret, "10.0.0.1").await.unwrap();
            assert!(caches.api_keys.contains_key(&prefix), "{l}: a key's use is no change of it");

            let mut tx = db.store.tx().await.unwrap();
            db.store.bind_tenant(&mut tx, &tenant.id).await.unwrap();
            assert!(tollgate_store::revoke_api_key(&mut tx, &tenant.id, &row.id).await.unwrap(), "{l}");
            tx.commit().await.unwrap();
            sleep_past_the_feed().await;
            let after = caches.key_principal(&secret, "10.0.0.1").await;
            assert!(matches!(after, Err(Reject::Unauthenticated(_))), "{l}: {after:?}");
        }
    }

    /// Standings and tenants follow the feed too: a member removed, a
    /// tenant suspended, another's role changed each show at the next
    /// reading, while the facts of callers nobody changed stay cached.
    #[tokio::test]
    async fn standings_and_tenants_follow_the_feed_and_the_rest_stays_cached() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let caches = caches_on(&db, MISSES_CAPACITY).await;
            let removed = signed_in(&caches, &db, "Removed").await;
            let suspended = signed_in(&caches, &db, "Suspended").await;
            let promoted = signed_in(&caches, &db, "Promoted").await;
            let untouched = signed_in(&caches, &db, "Untouched").await;
            for s in [&removed, &suspended, &promoted, &untouched] {
                let p = caches.token_principal(&s.token, "10.0.0.1").await.unwrap();
                assert_eq!(p.role.name, "member", "{l}");
            }
            let mut tx = db.store.tx().await.unwrap();
            db.store.bind_tenant(&mut tx, &removed.tenant.id).await.unwrap();
            tollgate_store::delete_membership(&mut tx, &removed.tenant.id, &removed.user.id).await.unwrap();
            tx.commit().await.unwrap();
            let mut tx = db.store.tx().await.unwrap();
            tollgate_store::set_tenant_status(&mut tx, &suspended.tenant.id, "suspended").await.unwrap();
            tx.commit().await.unwrap();
            let mut tx = db.store.tx().await.unwrap();
            db.store.bind_tenant(&mut tx, &promoted.tenant.id).await.unwrap();
            tollgate_store::set_member_role(&mut tx, &promoted.tenant.id, &promoted.user.id, "admin").await.unwrap();
            tx.commit().await.unwrap();
            sleep_past_the_feed().await;

            let gone = caches.token_principal(&removed.token, "10.0.0.1").await;
            assert!(matches!(gone, Err(Reject::Unauthenticated(_))), "{l}: {gone:?}");
            let p = caches.token_principal(&suspended.token, "10.0.0.1").await.unwrap();
            assert_eq!(p.tenant.status, tollgate_identity::principal::TenantStatus::Suspended, "{l}");
            let p = caches.token_principal(&promoted.token, "10.0.0.1").await.unwrap();
            assert_eq!(p.role.name, "admin", "{l}");
            // Nothing about the untouched member changed: its facts were not
            // loaded again (the principal itself is built again from them).
            caches.sessions.run_pending_tasks().await;
            assert!(caches.sessions.contains_key(&untouched.session), "{l}");
            assert!(caches.users.contains_key(&untouched.user.id), "{l}");
            assert!(caches.tenants.contains_key(&untouched.tenant.id), "{l}");
            caches.token_principal(&untouched.token, "10.0.0.1").await.unwrap();
        }
    }

    /// The bound behind the feed: a change the feed never names (as a write
    /// past the triggers would be) is not seen while the facts are kept,
    /// however often the feed is read, and is seen once they expire.
    #[tokio::test]
    async fn a_change_the_feed_misses_shows_when_the_facts_expire() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let ttl = Duration::from_secs(3);
            let caches = caches_with(&db, MISSES_CAPACITY, ttl, Arc::new(LiveCatalog::new(Catalog::builtin()))).await;
            let s = signed_in(&caches, &db, "Missed").await;
            let looked_up = Instant::now();
            caches.token_principal(&s.token, "10.0.0.1").await.unwrap();
            caches.token_principal(&s.token, "10.0.0.1").await.unwrap();
            let mut tx = db.store.tx().await.unwrap();
            assert!(tollgate_store::revoke_session(&mut tx, &s.user.id, &s.session, "test").await.unwrap(), "{l}");
            tollgate_store::prune_liveness_changes(&mut tx, i64::MAX).await.unwrap();
            tx.commit().await.unwrap();
            sleep_past_the_feed().await;
            let kept = caches.token_principal(&s.token, "10.0.0.1").await;
            assert!(kept.is_ok(), "{l}: the feed named nothing, so the session is still cached: {kept:?}");
            let past = looked_up + ttl + Duration::from_millis(300);
            tokio::time::sleep(past.saturating_duration_since(Instant::now())).await;
            let after = caches.token_principal(&s.token, "10.0.0.1").await;
            assert!(matches!(after, Err(Reject::Unauthenticated(_))), "{l}: {after:?}");
        }
    }

    /// A new plan catalog reaches cached tenants: they are loaded again
    /// with it at the next reading of the feed.
    #[tokio::test]
    async fn a_new_plan_catalog_reloads_cached_tenants() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let catalog = Arc::new(LiveCatalog::new(Catalog::builtin()));
            let caches = caches_with(&db, MISSES_CAPACITY, LIVENESS_TTL, Arc::clone(&catalog)).await;
            let s = signed_in(&caches, &db, "Planned").await;
            let before = caches.token_principal(&s.token, "10.0.0.1").await.unwrap();
            // The platform renames a plan; the catalog in force is reloaded.
            let mut rows = Catalog::builtin().to_rows();
            rows[0].display_name.push_str(" (renamed)");
            let mut tx = db.store.tx().await.unwrap();
            tollgate_store::replace_plans(&mut tx, &rows).await.unwrap();
            tx.commit().await.unwrap();
            assert!(catalog.reload(&db.store).await.unwrap(), "{l}: another catalog is in force");
            sleep_past_the_feed().await;
            let after = caches.token_principal(&s.token, "10.0.0.1").await.unwrap();
            assert!(!Arc::ptr_eq(&before.tenant, &after.tenant), "{l}: the tenant was loaded again");
        }
    }

    /// Readers prune the feed (off the request's path): changes older than
    /// an hour go, recent ones stay.
    #[tokio::test]
    async fn a_reading_prunes_changes_older_than_an_hour() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let caches = caches_on(&db, MISSES_CAPACITY).await;
            let old = signed_in(&caches, &db, "Old").await;
            tollgate_store::testing::backdate_liveness_changes(&db.store, 2 * 3600).await;
            let recent = signed_in(&caches, &db, "Recent").await;
            assert_eq!(tollgate_store::testing::count_liveness_changes(&db.store).await, 2, "{l}: two memberships");
            caches.token_principal(&old.token, "10.0.0.1").await.unwrap();
            caches.token_principal(&recent.token, "10.0.0.1").await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while tollgate_store::testing::count_liveness_changes(&db.store).await > 1 {
                assert!(Instant::now() < deadline, "{l}: the old change is still there");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                tollgate_store::testing::count_liveness_changes(&db.store).await,
                1,
                "{l}: the recent one stays"
            );
        }
    }

    /// The tenant engines follow the same reading: a layer activated and
    /// rolled back elsewhere (no invalidation here) reaches this gateway
    /// within `LAYER_TTL`.
    #[tokio::test]
    async fn layer_changes_reach_the_gateway_through_its_one_reading() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let caches = caches_on(&db, MISSES_CAPACITY).await;
            let s = signed_in(&caches, &db, "Layered").await;
            let tenant = caches.tenant(&s.tenant.id).await.unwrap().unwrap();
            let platform = caches.engine_for(Some(&tenant)).await.unwrap().len();
            let mut tx = db.store.tenant_tx(&s.tenant.id).await.unwrap();
            let layer = "@id(\"extra\") permit (principal, action == Action::\"crm.read\", resource);";
            tollgate_store::insert_policy_version(&mut tx, &s.tenant.id, layer, "", &s.user.id).await.unwrap();
            tollgate_store::activate_policy(&mut tx, &s.tenant.id, 1).await.unwrap();
            tx.commit().await.unwrap();
            let started = Instant::now();
            while caches.engine_for(Some(&tenant)).await.unwrap().len() == platform {
                assert!(started.elapsed() < tollgate_identity::layers::LAYER_TTL, "{l}: the activation did not arrive");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut tx = db.store.tenant_tx(&s.tenant.id).await.unwrap();
            tollgate_store::deactivate_policies(&mut tx, &s.tenant.id).await.unwrap();
            tx.commit().await.unwrap();
            let started = Instant::now();
            while caches.engine_for(Some(&tenant)).await.unwrap().len() != platform {
                assert!(started.elapsed() < tollgate_identity::layers::LAYER_TTL, "{l}: the rollback did not arrive");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A feed that cannot be read is not trusted: everything cached is dropped.
    #[tokio::test]
    async fn a_feed_that_cannot_be_read_drops_every_cached_fact() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let caches = caches_on(&db, MISSES_CAPACITY).await;
            let s = signed_in(&caches, &db, "Unread").await;
            caches.token_principal(&s.token, "10.0.0.1").await.unwrap();
            caches.token_principal(&s.token, "10.0.0.1").await.unwrap();
            let generation = caches.feed.generation();
            // The gateway's connections to the store end.
            caches.lookups().await.unwrap().store().pool().close().await;
            sleep_past_the_feed().await;
            caches.follow().await;
            assert!(caches.feed.generation() > generation, "{l}");
            caches.sessions.run_pending_tasks().await;
            assert!(!caches.sessions.contains_key(&s.session), "{l}");
            assert!(!caches.users.contains_key(&s.user.id), "{l}");
            assert!(caches.kept(&digest(&s.token), "10.0.0.1").is_none(), "{l}");
            let refused = caches.token_principal(&s.token, "10.0.0.1").await;
            assert!(matches!(refused, Err(Reject::Internal)), "{l}: {refused:?}");
            let failed = crate::metrics::render()
                .lines()
                .find_map(|line| line.strip_prefix("tollgate_gateway_liveness_feed_readings_total{result=\"failed\"} "))
                .and_then(|n| n.parse::<u64>().ok());
            assert!(failed.is_some_and(|n| n >= 1), "{l}: {failed:?}");
        }
    }

    /// Made-up key prefixes and tenant hints are remembered as misses, in a
    /// cache of their own with a bound, and never in the live caches.
    #[tokio::test]
    async fn made_up_key_prefixes_and_tenant_hints_stay_within_the_miss_bound() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let caches = caches_on(&db, 100).await;
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

    /// A gateway over `caches` with one route, `GET /tenant/...`: `crm.read`
    /// of a tenant's `CrmApi`.
    fn tenant_route_gateway(caches: Caches) -> crate::pipeline::Gateway {
        let config = crate::config::GatewayConfig::from_toml(
            "[upstreams.origin]\naddresses = [\"127.0.0.1:9\"]\n\
             [[routes]]\nname = \"tenant\"\npath = \"/tenant/{rest*}\"\nupstream = \"origin\"\n\
             methods = { GET = \"crm.read\" }\nresource = { type = \"CrmApi\", id = \"x\" }\n",
        )
        .unwrap();
        crate::pipeline::Gateway::new(config, caches).unwrap()
    }

    /// A request to the tenant route with this `Authorization` value.
    fn tenant_request(authorization: &str) -> crate::pipeline::Incoming<'_> {
        crate::pipeline::Incoming {
            method: "GET",
            path: "/tenant/x",
            authorization: Some(authorization),
            tenant_header: None,
            host: Some("gateway.test"),
            client_ip: "10.0.0.1",
        }
    }

    /// Whether `permit` was made for the principal at `principal`.
    fn made_for(permit: &crate::policy::Permit, principal: *const Principal) -> bool {
        std::ptr::eq(permit.caller().address(), principal)
    }

    /// A credential's repeated requests are admitted as the request that
    /// kept the admission was, with ids of their own (and a key's use still
    /// recorded), while its principal may be handed out: any change read
    /// from the feed ends it, and the feed is read when due by the requests
    /// it serves, so it ends with the principal's session at the feed's
    /// next reading. (Its principal dropped from the principals' cache,
    /// with nothing changed, shows the admission was handed out whole: the
    /// stages would build the principal again.)
    #[tokio::test]
    async fn a_kept_admission_serves_repeated_requests_and_ends_with_its_principal() {
        for db in tollgate_store::testing::databases().await {
            let l = db.label;
            let caches = caches_on(&db, MISSES_CAPACITY).await;
            let s = signed_in(&caches, &db, "Whole").await;
            let mut tx = db.store.tx().await.unwrap();
            db.store.bind_tenant(&mut tx, &s.tenant.id).await.unwrap();
            let (key, _, secret) = new_key(&mut tx, &s.tenant.id, &s.user.id).await;
            tx.commit().await.unwrap();
            // Kept for a minute here: what ends an admission below is what
            // it was made from, not its age.
            let gateway = tenant_route_gateway(caches).keeping_admissions_for(Duration::from_secs(60));
            let caches = &gateway.caches;

            let bearer = format!("Bearer {}", s.token);
            let req = tenant_request(&bearer);
            gateway.admit(&req).await.unwrap();
            // Its second request keeps the principal, and the admission.
            let second = gateway.admit(&req).await.unwrap();
            caches.principals.invalidate_all();
            let third = gateway.admit(&req).await.unwrap();
            assert!(made_for(&third, second.caller().address()), "{l}: handed out whole");
            assert_ne!(third.decision(), second.decision(), "{l}: a decision id of its own");
            assert_eq!(third.route().path, "/tenant/x", "{l}");
            // Another address is another request.
            let elsewhere = gateway.admit(&crate::pipeline::Incoming { client_ip: "10.0.0.2", ..req }).await.unwrap();
            assert!(!made_for(&elsewhere, second.caller().address()), "{l}");

            // A key's admission is kept from its first request, which
            // records the key's use (a record of minutes: the requests the
            // admission serves, within a second, add nothing to it).
            let key_bearer = format!("Bearer {secret}");
            let key_req = tenant_request(&key_bearer);
            let first = gateway.admit(&key_req).await.unwrap();
            assert!(caches.key_uses.contains_key(&key.id), "{l}: the key's use is recorded");
            caches.principals.invalidate_all();
            let again = gateway.admit(&key_req).await.unwrap();
            assert!(made_for(&again, first.caller().address()), "{l}: handed out whole");
            // Any change read from the feed ends every kept admission.
            caches.feed.bump();
            let after_change = gateway.admit(&key_req).await.unwrap();
            assert!(!made_for(&after_change, first.caller().address()), "{l}: admitted anew");
            gateway.admit(&req).await.unwrap();
            gateway.admit(&req).await.unwrap();

            let mut tx = db.store.tx().await.unwrap();
            assert!(tollgate_store::revoke_session(&mut tx, &s.user.id, &s.session, "test").await.unwrap(), "{l}");
            tx.commit().await.unwrap();
            sleep_past_the_feed().await;
            let after = gateway.admit(&req).await.map(|_| ()).map_err(|d| d.reject.status());
            assert_eq!(after, Err(401), "{l}: the session ended");
            assert!(gateway.admit(&key_req).await.is_ok(), "{l}: the key's own session was not ended");
        }
    }

    /// A reload of the platform's policies ends every kept admission,
    /// whatever the feed says; with a policy that reads the time, an
    /// admission holds only within the second it was made in.
    #[tokio::test]
    async fn a_kept_admission_ends_with_a_policy_reload() {
        let db = tollgate_store::testing::databases().await.swap_remove(0);
        let dir = db.dir.join("policies");
        std::fs::create_dir_all(dir.join("platform")).unwrap();
        std::fs::create_dir_all(dir.join("products")).unwrap();
        std::fs::write(dir.join("schema.cedarschema"), tollgate_policies::BUILTIN_SCHEMA).unwrap();
        for (name, text) in tollgate_policies::BUILTIN_POLICIES {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let live = Arc::new(LivePolicies::from_dir(&dir).unwrap());
        let keys =
            KeyRing::open(db.store.clone(), db.dir.join("keys"), "https://tollgate.test".into(), 900).await.unwrap();
        let catalog = Arc::new(LiveCatalog::new(Catalog::builtin()));
        let caches = Caches::new(Arc::new(keys), db.url.clone(), Arc::clone(&live), Vec::new(), catalog);
        let s = signed_in(&caches, &db, "Reloaded").await;
        let gateway = tenant_route_gateway(caches).keeping_admissions_for(Duration::from_secs(60));
        let bearer = format!("Bearer {}", s.token);
        let req = tenant_request(&bearer);
        gateway.admit(&req).await.unwrap();
        let kept = gateway.admit(&req).await.unwrap();
        gateway.caches.principals.invalidate_all();
        assert!(made_for(&gateway.admit(&req).await.unwrap(), kept.caller().address()), "handed out whole");
        assert!(matches!(live.reload(), tollgate_policies::ReloadOutcome::Swapped(_)));
        let after = gateway.admit(&req).await.unwrap();
        assert!(!made_for(&after, kept.caller().address()), "admitted anew, with the new snapshot");

        // A policy reading the time: an admission holds within its second.
        let clock =
            "@id(\"clock\") forbid (principal, action == Action::\"crm.read\", resource) when { context.time < 0 };";
        std::fs::write(dir.join("platform/clock.cedar"), clock).unwrap();
        assert!(matches!(live.reload(), tollgate_policies::ReloadOutcome::Swapped(_)));
        // Early in a second, so that the next two requests share it.
        let into_second = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis();
        tokio::time::sleep(Duration::from_millis(u64::from(1_010 - into_second))).await;
        let kept = gateway.admit(&req).await.unwrap();
        let at = now();
        gateway.caches.principals.invalidate_all();
        assert!(made_for(&gateway.admit(&req).await.unwrap(), kept.caller().address()), "within its second");
        let asked = crate::admissions::Asked::of(&req).unwrap();
        assert_eq!(gateway.admissions.until(&asked), Some(at + 1), "not past it");
    }

    /// Kept admissions are bounded in bytes: a caller sending ever new
    /// paths of the longest length routed fills the bound, and no more.
    #[tokio::test]
    async fn kept_admissions_stay_within_their_bound_in_bytes() {
        let db = tollgate_store::testing::databases().await.swap_remove(0);
        let caches = caches_on(&db, MISSES_CAPACITY).await;
        let s = signed_in(&caches, &db, "Paths").await;
        let gateway = tenant_route_gateway(caches).keeping_admissions_for(Duration::from_secs(60));
        let bearer = format!("Bearer {}", s.token);
        let long = "a".repeat(crate::route::MAX_PATH - 16);
        for i in 0..4_000 {
            let path = format!("/tenant/{long}{i}");
            // Allowed; the free plan's rate limit refuses most, after the
            // decision (which is what is kept).
            let admitted = gateway.admit(&crate::pipeline::Incoming { path: &path, ..tenant_request(&bearer) }).await;
            assert!(admitted.as_ref().map_or_else(|d| d.reject.status() == 429, |_| true), "{admitted:?}");
        }
        let (entries, bytes) = gateway.admissions.size();
        // Each weighs at least its path twice and an entry's own bytes.
        let least = 2 * (long.len() as u64 + 8) + crate::admissions::ENTRY_BYTES as u64;
        assert!(entries * least <= crate::admissions::CAPACITY_BYTES, "{entries} kept, weighing {bytes} bytes");
        assert!(entries >= 2_000, "the bound still holds thousands: {entries} in {bytes} bytes");
    }

    /// What a request's admission holds while it waits, which pingora
    /// allocates and copies for every request: the loaders behind each
    /// cache miss are boxed apart, so it stays small. (Unboxed, they made
    /// it over 6 KiB.)
    #[tokio::test]
    async fn the_admission_of_a_request_holds_no_loader() {
        let db = tollgate_store::testing::databases().await.swap_remove(0);
        let gateway = tenant_route_gateway(caches_on(&db, MISSES_CAPACITY).await);
        let incoming = crate::pipeline::Incoming {
            method: "GET",
            path: "/tenant/x",
            authorization: Some("Bearer tg_key"),
            tenant_header: Some("acme"),
            host: None,
            client_ip: "127.0.0.1",
        };
        let admission = gateway.admit(&incoming);
        let size = std::mem::size_of_val(&admission);
        // About 2 KiB: the stages' own state, with the request's key for
        // the kept admissions and when it began.
        assert!(size <= 2304, "the admission future takes {size} bytes");
    }
}
