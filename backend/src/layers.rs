//! Tenant policy layers: the engine a tenant's requests are evaluated with is
//! the platform snapshot plus the tenant's active layer. Shared by the
//! backend's decision point and the gateway (which caches it).

use std::sync::Arc;

use tollgate_policies::{LivePolicies, LoadError, PolicyEngine};

use crate::store::{self, Store, StoreError};

/// How long the gateway may serve a tenant's layer before looking again: the
/// bound within which an activation or rollback reaches every instance.
pub const LAYER_TTL_SECS: u64 = 2;

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
}

/// The platform snapshot with `source` as `tenant_id`'s layer.
pub fn combine(live: &LivePolicies, tenant_id: &str, version: i64, source: &str) -> Result<PolicyEngine, LoadError> {
    live.current().with_layer(&layer_prefix(tenant_id), &format!("tenant policies v{version}"), source)
}

/// The engine for a tenant's requests: the platform's alone when the tenant
/// has no active layer.
pub async fn tenant_engine(
    store: &Store,
    live: &LivePolicies,
    tenant_id: &str,
) -> Result<Arc<PolicyEngine>, LayerError> {
    let mut tx = store.tenant_tx(tenant_id).await?;
    let active = store::active_policy(&mut tx, tenant_id).await?;
    tx.commit().await.map_err(StoreError::from)?;
    match active {
        None => Ok(live.current()),
        Some(row) => combine(live, tenant_id, row.version, &row.source).map(Arc::new).map_err(LayerError::Invalid),
    }
}
