//! Credential loaders: from a bearer credential to a [`Principal`], the same
//! steps for the gateway and the backend. An access token (already verified)
//! leads to its session, user, tenant and the user's standing there; an API
//! key to its stored record, its tenant and its owner's standing. Every
//! look-up goes through [`Lookups`]: the backend answers them straight from
//! the store ([`StoreLookups`]), the gateway through its caches, and tests
//! from memory.

use std::future::Future;
use std::sync::Arc;

use tollgate_store::{self as store, ApiKeyRow, SessionRow, Store, StoreError, TenantRow, Tx, now};

use crate::plans::{Catalog, LiveCatalog};

use crate::principal::{Actor, ApiKey, KeyOwner, Principal, Tenant, User};
use crate::roles::Standing;
use crate::secrets;
use crate::tokens::AccessClaims;

/// Why a credential does not authenticate anyone. Everything but
/// [`CredentialError::Store`] is the caller's problem (401).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("malformed authorization header")]
    Malformed,
    #[error("authorization must be a bearer token")]
    NotBearer,
    #[error("invalid or expired access token")]
    BadToken,
    #[error("session is no longer valid")]
    SessionEnded,
    #[error("membership was removed")]
    MembershipRemoved,
    #[error("invalid, revoked or expired API key")]
    BadKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: &str) -> Result<&str, CredentialError> {
    let (scheme, token) = value.split_once(' ').ok_or(CredentialError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(CredentialError::NotBearer);
    }
    Ok(token)
}

/// Whether a bearer token is shaped as one of our API keys (`tg_...`) rather
/// than a JWT.
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(secrets::API_KEY_PREFIX)
}

/// A stored API key with what checking a presented secret needs.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key: ApiKey,
    secret_hash: String,
    revoked: bool,
}

impl KeyRecord {
    pub fn from_row(row: &ApiKeyRow) -> Result<Self, StoreError> {
        Ok(Self {
            key: ApiKey::try_from(row)?,
            secret_hash: row.secret_hash.clone(),
            revoked: row.revoked_at.is_some(),
        })
    }

    /// Whether `presented` is this key's secret (compared in constant time)
    /// and the key is neither revoked nor expired.
    pub fn accepts(&self, presented: &str) -> bool {
        secrets::matches(presented, &self.secret_hash) && !self.revoked && self.key.expires_at.is_none_or(|e| e > now())
    }
}

/// How often a key's `last_used_at` is written at most.
pub const KEY_USE_GRANULARITY_SECS: i64 = 60;

/// The look-ups credential resolution needs.
pub trait Lookups: Sync {
    fn session(&self, id: &str) -> impl Future<Output = Result<Option<Arc<SessionRow>>, StoreError>> + Send;
    fn user(&self, id: &str) -> impl Future<Output = Result<Option<Arc<User>>, StoreError>> + Send;
    /// A tenant by id.
    fn tenant(&self, id: &str) -> impl Future<Output = Result<Option<Arc<Tenant>>, StoreError>> + Send;
    /// A member's role and groups; `None` when the user is not a member.
    fn member_standing(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<Standing>, StoreError>> + Send;
    /// A service account's role; `None` when it does not exist.
    fn service_account_standing(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> impl Future<Output = Result<Option<Standing>, StoreError>> + Send;
    /// The API key with this lookup prefix.
    fn api_key(&self, prefix: &str) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send;
    /// Records that `key` authenticated a request, at most once per
    /// [`KEY_USE_GRANULARITY_SECS`]; a failure to record is logged, never a
    /// refusal.
    fn key_used(&self, key: &ApiKey) -> impl Future<Output = ()> + Send;
}

/// The principal of a verified access token: its session must be live and
/// belong to the token's user and tenant, and the user must still be a member.
pub async fn principal_from_claims(
    lookups: &impl Lookups,
    claims: &AccessClaims,
    client_ip: &str,
) -> Result<Principal, CredentialError> {
    let session = lookups.session(&claims.sid).await?;
    if !session.is_some_and(|s| s.is_live_for(&claims.sub, &claims.tid)) {
        return Err(CredentialError::SessionEnded);
    }
    let user = lookups.user(&claims.sub).await?.ok_or(CredentialError::SessionEnded)?;
    let tenant = lookups.tenant(&claims.tid).await?.ok_or(CredentialError::SessionEnded)?;
    let standing =
        lookups.member_standing(&claims.tid, &claims.sub).await?.ok_or(CredentialError::MembershipRemoved)?;
    Ok(Principal {
        actor: Actor::User { user: (*user).clone(), session_id: claims.sid.clone(), amr: claims.amr.clone() },
        tenant,
        role: standing.role,
        groups: standing.groups,
        client_ip: client_ip.to_owned(),
    })
}

/// The principal of a presented API key (`tg_<prefix>_<secret>`): found by
/// prefix, checked in constant time, acting with its owner's standing.
pub async fn principal_from_api_key(
    lookups: &impl Lookups,
    presented: &str,
    client_ip: &str,
) -> Result<Principal, CredentialError> {
    let prefix = secrets::api_key_prefix(presented).ok_or(CredentialError::BadKey)?;
    let record = lookups.api_key(prefix).await?.ok_or(CredentialError::BadKey)?;
    if !record.accepts(presented) {
        return Err(CredentialError::BadKey);
    }
    let key = &record.key;
    let tenant = lookups.tenant(&key.tenant_id).await?.ok_or(CredentialError::BadKey)?;
    let standing = match &key.owner {
        KeyOwner::User(user_id) => lookups.member_standing(&key.tenant_id, user_id).await?,
        KeyOwner::ServiceAccount(account_id) => lookups.service_account_standing(&key.tenant_id, account_id).await?,
    }
    .ok_or(CredentialError::BadKey)?;
    lookups.key_used(key).await;
    Ok(Principal {
        actor: Actor::ApiKey { key: key.clone() },
        tenant,
        role: standing.role,
        groups: standing.groups,
        client_ip: client_ip.to_owned(),
    })
}

/// Look-ups answered straight from the store, each in its own short
/// read-only transaction scoped as row-level security needs.
#[derive(Debug, Clone)]
pub struct StoreLookups {
    store: Store,
    catalog: Arc<LiveCatalog>,
}

/// A tenant with its entitlements (its plan from `catalog` and its
/// overrides), read in `tx`.
pub async fn tenant_with_entitlements(tx: &mut Tx, catalog: &Catalog, row: TenantRow) -> Result<Tenant, StoreError> {
    let overrides = store::entitlement_overrides(tx, &row.id).await?;
    let entitlements = catalog.entitlements(&row.plan, &overrides)?;
    let mut tenant = Tenant::from(row);
    tenant.entitlements = Arc::new(entitlements);
    Ok(tenant)
}

impl StoreLookups {
    pub fn new(store: Store, catalog: Arc<LiveCatalog>) -> Self {
        Self { store, catalog }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The plans tenants can be on, as in force now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.get()
    }

    /// A tenant by id, or by slug when no tenant has that id.
    pub async fn tenant_named(&self, id_or_slug: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        let mut tx = self.store.tenant_read_tx(id_or_slug).await?;
        let mut row = store::tenant_by_id(&mut tx, id_or_slug).await?;
        if row.is_none() {
            row = store::tenant_by_slug(&mut tx, id_or_slug).await?;
        }
        let tenant = match row {
            Some(row) => Some(Arc::new(tenant_with_entitlements(&mut tx, &self.catalog.get(), row).await?)),
            None => None,
        };
        tx.commit().await?;
        Ok(tenant)
    }
}

impl Lookups for StoreLookups {
    async fn session(&self, id: &str) -> Result<Option<Arc<SessionRow>>, StoreError> {
        let mut tx = self.store.read_tx().await?;
        let row = store::session_by_id(&mut tx, id).await?;
        tx.commit().await?;
        Ok(row.map(Arc::new))
    }

    async fn user(&self, id: &str) -> Result<Option<Arc<User>>, StoreError> {
        let mut tx = self.store.read_tx().await?;
        let row = store::user_by_id(&mut tx, id).await?;
        tx.commit().await?;
        Ok(row.map(|r| Arc::new(User::from(r))))
    }

    async fn tenant(&self, id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        let mut tx = self.store.tenant_read_tx(id).await?;
        let tenant = match store::tenant_by_id(&mut tx, id).await? {
            Some(row) => Some(Arc::new(tenant_with_entitlements(&mut tx, &self.catalog.get(), row).await?)),
            None => None,
        };
        tx.commit().await?;
        Ok(tenant)
    }

    async fn member_standing(&self, tenant_id: &str, user_id: &str) -> Result<Option<Standing>, StoreError> {
        let mut tx = self.store.tenant_read_tx(tenant_id).await?;
        let standing = Standing::of_member(&mut tx, tenant_id, user_id).await?;
        tx.commit().await?;
        Ok(standing)
    }

    async fn service_account_standing(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> Result<Option<Standing>, StoreError> {
        let mut tx = self.store.tenant_read_tx(tenant_id).await?;
        let standing = Standing::of_service_account(&mut tx, tenant_id, account_id).await?;
        tx.commit().await?;
        Ok(standing)
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let mut tx = self.store.key_prefix_read_tx(prefix).await?;
        let row = store::api_key_by_prefix(&mut tx, prefix).await?;
        tx.commit().await?;
        row.map(|r| KeyRecord::from_row(&r).map(Arc::new)).transpose()
    }

    async fn key_used(&self, key: &ApiKey) {
        if key.last_used_at.is_some_and(|t| t + KEY_USE_GRANULARITY_SECS >= now()) {
            return;
        }
        let result: Result<(), StoreError> = async {
            let mut tx = self.store.tenant_tx(&key.tenant_id).await?;
            store::touch_api_key(&mut tx, &key.tenant_id, &key.id).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, key = %key.id, "cannot record an API key's use");
        }
    }
}
