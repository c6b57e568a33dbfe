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

/// How long a tenant's engine may serve before it is loaded again: the bound
/// within which an activation or rollback reaches every instance.
pub const LAYER_TTL: Duration = Duration::from_secs(2);
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
}

/// What every side answers when a tenant's layer cannot be loaded.
pub const LAYER_UNAVAILABLE: &str = "the tenant's policies cannot be loaded";

/// The platform snapshot with `source` as `tenant_id`'s layer.
pub fn combine(live: &LivePolicies, tenant_id: &str, version: i64, source: &str) -> Result<PolicyEngine, LoadError> {
    live.current().with_layer(&layer_prefix(tenant_id), &format!("tenant policies v{version}"), source)
}

/// The engine for a tenant's requests, straight from the store: the
/// platform's alone when the tenant has no active layer. Parsing and
/// validating the layer is CPU work: it runs on the blocking pool, never on
/// the workers that serve requests.
pub async fn load_tenant_engine(
    store: &Store,
    live: &Arc<LivePolicies>,
    tenant_id: &str,
) -> Result<Arc<PolicyEngine>, LayerError> {
    let mut tx = store.tenant_read_tx(tenant_id).await?;
    let active = store::active_policy(&mut tx, tenant_id).await?;
    tx.commit().await.map_err(StoreError::from)?;
    let Some(row) = active else {
        return Ok(live.current());
    };
    let (live, tenant_id) = (Arc::clone(live), tenant_id.to_owned());
    tokio::task::spawn_blocking(move || combine(&live, &tenant_id, row.version, &row.source))
        .await
        .map_err(|_| LayerError::Interrupted)?
        .map(Arc::new)
        .map_err(LayerError::Invalid)
}

/// Each tenant's engine, built at most once per [`LAYER_TTL`] however many
/// requests or questions need it.
pub struct TenantEngines {
    live: Arc<LivePolicies>,
    /// Failures are cached as long as engines: a layer that does not load is
    /// not read and parsed again on every request.
    cache: Cache<String, Result<Arc<PolicyEngine>, Arc<LayerError>>>,
}

impl std::fmt::Debug for TenantEngines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantEngines").field("cached", &self.cache.entry_count()).finish_non_exhaustive()
    }
}

impl TenantEngines {
    pub fn new(live: Arc<LivePolicies>) -> Self {
        Self { live, cache: Cache::builder().max_capacity(CAPACITY).time_to_live(LAYER_TTL).build() }
    }

    /// The platform's policies in force.
    pub fn platform(&self) -> Arc<PolicyEngine> {
        self.live.current()
    }

    pub fn live(&self) -> &Arc<LivePolicies> {
        &self.live
    }

    /// Forgets `tenant_id`'s engine, so this instance serves a change of its
    /// layer at once (other instances within [`LAYER_TTL`]).
    pub async fn invalidate(&self, tenant_id: &str) {
        self.cache.invalidate(tenant_id).await;
    }

    /// The engine for `tenant_id`'s requests; `on_miss` runs when it has to
    /// be loaded. The error is logged here; callers answer
    /// [`LAYER_UNAVAILABLE`].
    pub async fn for_tenant(
        &self,
        store: &Store,
        tenant_id: &str,
        on_miss: impl FnOnce() + Send,
    ) -> Result<Arc<PolicyEngine>, Arc<LayerError>> {
        self.cache
            .get_with(tenant_id.to_owned(), async move {
                on_miss();
                load_tenant_engine(store, &self.live, tenant_id).await.map_err(|e| {
                    tracing::error!(error = %e, tenant = %tenant_id, "tenant policies cannot be loaded");
                    Arc::new(e)
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tollgate_policies::PolicyEngine;
    use tollgate_store::testing::databases;

    use super::*;

    /// A layer that does not load is refused, and the refusal is cached as
    /// long as an engine would be: a broken layer is not read and parsed
    /// again for every request.
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
            assert_eq!(loads.load(Ordering::SeqCst), 2, "{}: invalidation loads again", db.label);
        }
    }
}
