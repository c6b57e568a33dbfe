//! Tenant policy layers: the engine a tenant's requests are evaluated with is
//! the platform snapshot plus the tenant's active layer. One cache of those
//! engines serves the gateway and the decision point alike, so both answer a
//! layer that cannot be loaded the same way: the tenant's requests are
//! refused (fail closed), never evaluated without the layer.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tollgate_policies::{LivePolicies, LoadError, PolicyEngine};
use tollgate_store::{self as store, Store, StoreError};

use crate::feed::{ChangeFeed, Reading};

/// The bound within which an activation or rollback reaches every instance:
/// each follows the store's change feed once per [`FEED_EVERY`](crate::feed::FEED_EVERY).
pub const LAYER_TTL: Duration = Duration::from_secs(2);
/// How long a tenant's active version is trusted without the feed (a safety
/// net; the feed invalidates it at once).
const VERSION_TTL: Duration = Duration::from_secs(300);
const VERSIONS_CAPACITY: u64 = 200_000;
const CAPACITY: u64 = 10_000;

/// The id prefix of a tenant's policies, so they never collide with the
/// platform's or another tenant's.
pub fn layer_prefix(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}:")
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the tenant's active policies no longer validate: {0}")]
    Invalid(LoadError),
    #[error("loading the tenant's policies was interrupted")]
    Interrupted,
    #[error("the tenant's active policy version is missing")]
    Missing,
}

/// What every side answers when a tenant's layer cannot be loaded.
pub const LAYER_UNAVAILABLE: &str = "the tenant's policies cannot be loaded";

/// The platform snapshot with `source` as `tenant_id`'s layer.
pub fn combine(live: &LivePolicies, tenant_id: &str, version: i64, source: &str) -> Result<PolicyEngine, LoadError> {
    live.current().with_layer(&layer_prefix(tenant_id), &format!("tenant policies v{version}"), source)
}

/// A tenant's combined engine, with the platform snapshot it extends (a
/// reload of the platform's policies makes it stale); a layer that does not
/// validate is kept as its error, so it is not parsed again per request.
#[derive(Clone)]
struct Built {
    base: Arc<PolicyEngine>,
    engine: Result<Arc<PolicyEngine>, Arc<LayerError>>,
}

/// Each tenant's engine: the platform's for tenants without a layer (most),
/// else the combined engine of the tenant's active version, built once per
/// version and platform snapshot however many requests or questions need it.
/// Active versions are read once per tenant and then trusted until the
/// store's change feed (read once per [`FEED_EVERY`](crate::feed::FEED_EVERY)) names the tenant: no
/// per-tenant store round trip while nothing changes, whatever the number
/// of tenants.
pub struct TenantEngines {
    live: Arc<LivePolicies>,
    /// Keyed by the ids of tenants that exist (callers resolve the tenant
    /// first), so a seeded fast hash will do.
    versions: Cache<String, Option<i64>, foldhash::quality::RandomState>,
    engines: Cache<(String, i64), Built, foldhash::quality::RandomState>,
    /// The change feed this instance follows, unless its owner follows it
    /// and hands the readings over ([`TenantEngines::apply`]).
    feed: Option<ChangeFeed>,
}

impl std::fmt::Debug for TenantEngines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantEngines").field("engines", &self.engines.entry_count()).finish_non_exhaustive()
    }
}

/// A key of [`TenantEngines::engines`] borrowed from the request: it hashes
/// as the owned `(String, i64)` does, so a look-up copies no tenant id.
#[derive(Hash)]
struct EngineKey<'a>(&'a str, i64);

impl moka::Equivalent<(String, i64)> for EngineKey<'_> {
    fn equivalent(&self, key: &(String, i64)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

impl TenantEngines {
    /// Engines that follow the change feed themselves.
    pub fn new(live: Arc<LivePolicies>) -> Self {
        Self { feed: Some(ChangeFeed::default()), ..Self::fed(live) }
    }

    /// Engines whose owner reads the change feed (before asking for an
    /// engine) and hands each reading to [`TenantEngines::apply`].
    pub fn fed(live: Arc<LivePolicies>) -> Self {
        Self {
            live,
            versions: Cache::builder()
                .max_capacity(VERSIONS_CAPACITY)
                .time_to_live(VERSION_TTL)
                .build_with_hasher(Default::default()),
            engines: Cache::builder()
                .max_capacity(CAPACITY)
                .support_invalidation_closures()
                .build_with_hasher(Default::default()),
            feed: None,
        }
    }

    /// The platform's policies in force.
    pub fn platform(&self) -> Arc<PolicyEngine> {
        self.live.current()
    }

    pub fn live(&self) -> &Arc<LivePolicies> {
        &self.live
    }

    /// Forgets `tenant_id`'s active version and engines, so this instance
    /// serves a change of its layer at once (other instances within
    /// [`LAYER_TTL`]).
    pub async fn invalidate(&self, tenant_id: &str) {
        self.versions.invalidate(tenant_id).await;
        let tenant = tenant_id.to_owned();
        if self.engines.invalidate_entries_if(move |(t, _), _| *t == tenant).is_err() {
            self.engines.invalidate_all();
        }
    }

    /// Reads the change feed when it is due, if this instance follows it.
    async fn follow(&self, store: &Store) {
        if let Some(feed) = &self.feed
            && feed.due()
        {
            // Boxed: the reading is not part of the future of the requests
            // that find the feed read recently (see `for_tenant`).
            Box::pin(feed.follow(store, |reading| async move { self.apply(&reading).await })).await;
        }
    }

    /// Applies a reading of the change feed: every tenant whose layer it
    /// names is read again; when the feed could not be read, every tenant.
    pub async fn apply(&self, reading: &Reading) {
        match reading {
            Ok((_, changes)) => {
                for change in changes.iter().filter(|c| c.kind == "layer") {
                    self.versions.invalidate(&change.id).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the change feed; reading every tenant's layer again");
                self.versions.invalidate_all();
            }
        }
    }

    /// The engine for `tenant_id`'s requests; `on_miss` runs when something
    /// has to be read from the store. The error is logged here; callers
    /// answer [`LAYER_UNAVAILABLE`].
    pub async fn for_tenant(
        &self,
        store: &Store,
        tenant_id: &str,
        on_miss: impl FnOnce() + Send,
    ) -> Result<Arc<PolicyEngine>, Arc<LayerError>> {
        self.follow(store).await;
        let mut on_miss = Some(on_miss);
        // Found (the usual case): no owned key, no loader built. What a miss
        // runs is boxed, so that it is not part of the future of every
        // request (kilobytes, allocated and copied for each request).
        let version = match self.versions.get(tenant_id).await {
            Some(version) => version,
            None => Box::pin(self.version(store, tenant_id, &mut on_miss)).await?,
        };
        let Some(version) = version else {
            return Ok(self.live.current());
        };
        let base = self.live.current();
        if let Some(built) = self.engines.get(&EngineKey(tenant_id, version)).await
            && Arc::ptr_eq(&built.base, &base)
        {
            return built.engine;
        }
        let key = (tenant_id.to_owned(), version);
        if let Some(f) = on_miss.take() {
            f();
        }
        let built = Box::pin(self.build(store, tenant_id, version, base)).await.map_err(|e| {
            tracing::error!(error = %e, tenant = %tenant_id, "tenant policies cannot be loaded");
            Arc::new(e)
        })?;
        if let Err(e) = &built.engine {
            tracing::error!(error = %e, tenant = %tenant_id, "tenant policies cannot be loaded");
        }
        self.engines.insert(key, built.clone()).await;
        built.engine
    }

    /// The tenant's active layer version, read once however many requests
    /// wait for it (`on_miss` runs when it is read).
    async fn version(
        &self,
        store: &Store,
        tenant_id: &str,
        on_miss: &mut Option<impl FnOnce() + Send>,
    ) -> Result<Option<i64>, Arc<LayerError>> {
        self.versions
            .try_get_with(tenant_id.to_owned(), async {
                if let Some(f) = on_miss.take() {
                    f();
                }
                let mut tx = store.tenant_read_tx(tenant_id).await?;
                let version = store::active_policy_version(&mut tx, tenant_id).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(version)
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, tenant = %tenant_id, "tenant policies cannot be loaded");
                Arc::new(LayerError::Store(StoreError::Shared(e)))
            })
    }

    /// Reads `version` of the tenant's layer and combines it with `base` on
    /// the blocking pool. A store failure is an error (not kept); a layer
    /// that does not validate is a built result (kept).
    async fn build(
        &self,
        store: &Store,
        tenant_id: &str,
        version: i64,
        base: Arc<PolicyEngine>,
    ) -> Result<Built, LayerError> {
        let mut tx = store.tenant_read_tx(tenant_id).await?;
        let row = store::policy_version(&mut tx, tenant_id, version).await?;
        tx.commit().await.map_err(StoreError::from)?;
        // Versions are never deleted (only with their tenant): a missing one
        // refuses, and is read again next time.
        let row = row.ok_or(LayerError::Missing)?;
        let (layer_base, tenant) = (Arc::clone(&base), tenant_id.to_owned());
        let combined = tokio::task::spawn_blocking(move || {
            layer_base.with_layer(&layer_prefix(&tenant), &format!("tenant policies v{version}"), &row.source)
        })
        .await
        .map_err(|_| LayerError::Interrupted)?;
        Ok(Built { base, engine: combined.map(Arc::new).map_err(|e| Arc::new(LayerError::Invalid(e))) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tollgate_policies::PolicyEngine;
    use tollgate_store::testing::databases;

    use super::*;

    /// A layer that does not load is refused, and the refusal is kept like
    /// an engine: a broken layer is not read and parsed again per request.
    #[tokio::test]
    async fn a_broken_layer_is_refused_once_per_ttl() {
        for db in databases().await {
            let mut tx = db.store.tx().await.unwrap();
            let tenant = store::insert_tenant(&mut tx, "Broken", "broken").await.unwrap();
            db.store.bind_tenant(&mut tx, &tenant.id).await.unwrap();
            store::insert_policy_version(&mut tx, &tenant.id, "forbid (principal, action", "", "test").await.unwrap();
            store::activate_policy(&mut tx, &tenant.id, 1).await.unwrap();
            tx.commit().await.unwrap();
            let engines = TenantEngines::new(Arc::new(LivePolicies::fixed(PolicyEngine::builtin().unwrap())));
            let loads = AtomicUsize::new(0);
            for _ in 0..3 {
                let result =
                    engines.for_tenant(&db.store, &tenant.id, || _ = loads.fetch_add(1, Ordering::SeqCst)).await;
                assert!(matches!(result.as_ref().map_err(|e| &**e), Err(LayerError::Invalid(_))), "{}", db.label);
            }
            assert_eq!(loads.load(Ordering::SeqCst), 1, "{}: loaded once", db.label);
            engines.invalidate(&tenant.id).await;
            assert!(
                engines.for_tenant(&db.store, &tenant.id, || _ = loads.fetch_add(1, Ordering::SeqCst)).await.is_err()
            );
            assert_eq!(loads.load(Ordering::SeqCst), 2, "{}: invalidation reads the version again", db.label);
        }
    }

    /// Another instance's activation and rollback reach this one through the
    /// store's change feed within the bound, with no invalidation here; while
    /// nothing changes, a tenant costs no store round trip.
    #[tokio::test]
    async fn layer_changes_reach_every_instance_through_the_feed() {
        for db in databases().await {
            let l = db.label;
            let mut tx = db.store.tx().await.unwrap();
            let tenant = store::insert_tenant(&mut tx, "Fed", "fed").await.unwrap();
            let quiet = store::insert_tenant(&mut tx, "Quiet", "quiet").await.unwrap();
            db.store.bind_tenant(&mut tx, &tenant.id).await.unwrap();
            let layer = "@id(\"extra\") permit (principal, action == Action::\"crm.read\", resource);";
            store::insert_policy_version(&mut tx, &tenant.id, layer, "", "test").await.unwrap();
            tx.commit().await.unwrap();
            let live = Arc::new(LivePolicies::fixed(PolicyEngine::builtin().unwrap()));
            let platform = live.current().len();
            let engines = TenantEngines::new(Arc::clone(&live));
            let reads = AtomicUsize::new(0);
            let count = || _ = reads.fetch_add(1, Ordering::SeqCst);
            assert_eq!(engines.for_tenant(&db.store, &tenant.id, count).await.unwrap().len(), platform, "{l}");
            for _ in 0..20 {
                engines.for_tenant(&db.store, &quiet.id, count).await.unwrap();
            }
            assert_eq!(reads.load(Ordering::SeqCst), 2, "{l}: one read per tenant while nothing changes");

            // Activated elsewhere (no invalidation here): seen within the bound.
            let mut tx = db.store.tenant_tx(&tenant.id).await.unwrap();
            store::activate_policy(&mut tx, &tenant.id, 1).await.unwrap();
            tx.commit().await.unwrap();
            let started = std::time::Instant::now();
            while engines.for_tenant(&db.store, &tenant.id, || {}).await.unwrap().len() == platform {
                assert!(started.elapsed() < LAYER_TTL, "{l}: the activation did not arrive in time");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut tx = db.store.tenant_tx(&tenant.id).await.unwrap();
            store::deactivate_policies(&mut tx, &tenant.id).await.unwrap();
            tx.commit().await.unwrap();
            let started = std::time::Instant::now();
            while engines.for_tenant(&db.store, &tenant.id, || {}).await.unwrap().len() != platform {
                assert!(started.elapsed() < LAYER_TTL, "{l}: the rollback did not arrive in time");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
