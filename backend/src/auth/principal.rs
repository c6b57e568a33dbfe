//! The `Principal` extractor: verifies the bearer credential (our access token
//! or an API key), checks its session or key is live, and loads the tenant it
//! acts in with the caller's role there. Its rejection is a problem response.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};

use crate::auth::secrets;
use crate::problem::ApiError;
use crate::roles::{ResolvedRole, Standing};
use crate::state::AppState;
use crate::store::{self, ApiKeyRow, Store, TenantRow, UserRow, now};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A person with an access token for one of their sessions.
    User { user: UserRow, session_id: String, amr: Vec<String> },
    /// An API key, owned by a user or a service account of the tenant.
    ApiKey { key: ApiKeyRow, scopes: Vec<String> },
}

/// An authenticated caller acting in one tenant with one role.
#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    /// Shared with the gateway's tenant cache, not copied per request.
    pub tenant: Arc<TenantRow>,
    pub role: ResolvedRole,
    /// The ids of the tenant's groups the caller belongs to (an API key:
    /// its owner's).
    pub groups: Arc<[String]>,
    pub client_ip: String,
}

impl Principal {
    /// The user behind the call, when a person (not an API key) is calling.
    pub fn user(&self) -> Option<&UserRow> {
        match &self.actor {
            Actor::User { user, .. } => Some(user),
            Actor::ApiKey { .. } => None,
        }
    }

    /// The user behind the call, or 403 for API keys.
    pub fn require_user(&self) -> Result<&UserRow, ApiError> {
        self.user().ok_or_else(|| ApiError::forbidden("this endpoint needs a person's access token, not an API key"))
    }

    /// How the caller authenticated, and whether with a second factor: the
    /// `authn` and `mfa` facts every policy context carries.
    pub fn authn_facts(&self) -> (&'static str, bool) {
        match &self.actor {
            Actor::User { amr, .. } => {
                let mfa = amr.iter().any(|m| m == "mfa" || m == "otp");
                if amr.iter().any(|m| m == "ext") { ("external", mfa) } else { ("password", mfa) }
            }
            Actor::ApiKey { .. } => ("api_key", false),
        }
    }

    /// A stable id of the caller for logs and `created_by` columns.
    pub fn actor_id(&self) -> String {
        match &self.actor {
            Actor::User { user, .. } => format!("user:{}", user.id),
            Actor::ApiKey { key, .. } => format!("apikey:{}", key.id),
        }
    }

    /// Fails with 404 unless `tenant_id` is the tenant the caller acts in, so
    /// another tenant's ids look exactly like ids that do not exist.
    pub fn in_tenant(&self, tenant_id: &str) -> Result<(), ApiError> {
        if self.tenant.id == tenant_id { Ok(()) } else { Err(ApiError::NotFound) }
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("authentication required"))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed authorization header"))?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized("malformed authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized("authorization must be a bearer token"));
    }
    Ok(token.trim())
}

/// The client's address: as the gateway in front saw it when the request
/// came with its verified assertion, else the connection's peer.
pub fn client_ip(parts: &Parts) -> String {
    if let Some(forwarded) = parts.extensions.get::<crate::ForwardedClient>() {
        return forwarded.0.clone();
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let ip = client_ip(parts);
        let principal = if token.starts_with(secrets::API_KEY_PREFIX) {
            from_api_key(state, token, ip).await?
        } else {
            from_access_token(state, token, ip).await?
        };
        check_tenant_state(&principal.tenant, &parts.method)?;
        Ok(principal)
    }
}

/// Why a tenant's lifecycle state refuses a request, if it does: suspended
/// tenants refuse everything, tenants pending deletion everything but reads.
/// The backend and the gateway both apply this one rule.
pub fn tenant_refusal(tenant: &TenantRow, read_only_request: bool) -> Option<String> {
    match tenant.status.as_str() {
        "active" => None,
        "pending_deletion" if read_only_request => None,
        "pending_deletion" => Some(format!("tenant `{}` is pending deletion and read-only", tenant.slug)),
        _ => Some(format!("tenant `{}` is suspended", tenant.slug)),
    }
}

fn check_tenant_state(tenant: &TenantRow, method: &Method) -> Result<(), ApiError> {
    match tenant_refusal(tenant, method == Method::GET || method == Method::HEAD) {
        None => Ok(()),
        Some(reason) => Err(ApiError::forbidden(reason)),
    }
}

async fn from_access_token(state: &AppState, token: &str, ip: String) -> Result<Principal, ApiError> {
    let claims = state.keys.verify(token).map_err(|_| ApiError::Unauthorized("invalid or expired access token"))?;
    let mut tx = state.store.tx().await?;
    let session = store::session_by_id(&mut tx, &claims.sid).await?;
    let live = session.as_ref().is_some_and(|s| s.is_live_for(&claims.sub, &claims.tid));
    if !live {
        return Err(ApiError::Unauthorized("session is no longer valid"));
    }
    let user =
        store::user_by_id(&mut tx, &claims.sub).await?.ok_or(ApiError::Unauthorized("session is no longer valid"))?;
    tx.commit().await?;
    let (tenant, standing) = tenant_and_member_standing(&state.store, &claims.tid, &user.id).await?;
    Ok(Principal {
        actor: Actor::User { user, session_id: claims.sid, amr: claims.amr },
        tenant: Arc::new(tenant),
        role: standing.role,
        groups: standing.groups,
        client_ip: ip,
    })
}

async fn tenant_and_member_standing(
    store: &Store,
    tenant_id: &str,
    user_id: &str,
) -> Result<(TenantRow, Standing), ApiError> {
    let mut tx = store.tenant_tx(tenant_id).await?;
    let tenant =
        store::tenant_by_id(&mut tx, tenant_id).await?.ok_or(ApiError::Unauthorized("tenant no longer exists"))?;
    let standing = Standing::of_member(&mut tx, tenant_id, user_id)
        .await?
        .ok_or(ApiError::Unauthorized("membership was removed"))?;
    tx.commit().await?;
    Ok((tenant, standing))
}

const INVALID_KEY: ApiError = ApiError::Unauthorized("invalid, revoked or expired API key");

async fn from_api_key(state: &AppState, token: &str, ip: String) -> Result<Principal, ApiError> {
    let prefix = secrets::api_key_prefix(token).ok_or(INVALID_KEY)?;
    let mut tx = state.store.key_prefix_tx(prefix).await?;
    let key = store::api_key_by_prefix(&mut tx, prefix).await?;
    tx.commit().await?;
    let key = key.ok_or(INVALID_KEY)?;
    if !key.accepts(token) {
        return Err(INVALID_KEY);
    }
    let scopes = key.scopes()?;
    let (tenant, standing) = match (&key.owner_user_id, &key.owner_service_account_id) {
        (Some(user_id), None) => {
            tenant_and_member_standing(&state.store, &key.tenant_id, user_id).await.map_err(|_| INVALID_KEY)?
        }
        (None, Some(sa_id)) => {
            let mut tx = state.store.tenant_tx(&key.tenant_id).await?;
            let tenant = store::tenant_by_id(&mut tx, &key.tenant_id).await?.ok_or(INVALID_KEY)?;
            let standing = Standing::of_service_account(&mut tx, &key.tenant_id, sa_id).await?.ok_or(INVALID_KEY)?;
            tx.commit().await?;
            (tenant, standing)
        }
        _ => return Err(INVALID_KEY),
    };
    if key.last_used_at.is_none_or(|t| t + 60 < now()) {
        let mut tx = state.store.tenant_tx(&key.tenant_id).await?;
        store::touch_api_key(&mut tx, &key.tenant_id, &key.id).await?;
        tx.commit().await?;
    }
    Ok(Principal {
        actor: Actor::ApiKey { key, scopes },
        tenant: Arc::new(tenant),
        role: standing.role,
        groups: standing.groups,
        client_ip: ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::Builtin;

    fn with_amr(amr: &[&str]) -> Principal {
        let user = UserRow {
            id: "u".into(),
            email: "u@x.test".into(),
            name: "U".into(),
            password_hash: None,
            platform_admin: 0,
            created_at: 0,
            updated_at: 0,
        };
        let tenant = TenantRow {
            id: "t".into(),
            slug: "t".into(),
            name: "T".into(),
            status: "active".into(),
            plan: "free".into(),
            settings: "{}".into(),
            created_at: 0,
            updated_at: 0,
            status_changed_at: 0,
        };
        Principal {
            actor: Actor::User { user, session_id: "s".into(), amr: amr.iter().map(|s| (*s).to_owned()).collect() },
            tenant: Arc::new(tenant),
            role: ResolvedRole::builtin(Builtin::Member),
            groups: Arc::from([]),
            client_ip: "127.0.0.1".into(),
        }
    }

    #[test]
    fn authn_facts_name_how_the_caller_authenticated() {
        assert_eq!(with_amr(&["pwd"]).authn_facts(), ("password", false));
        assert_eq!(with_amr(&["pwd", "otp"]).authn_facts(), ("password", true));
        assert_eq!(with_amr(&["ext"]).authn_facts(), ("external", false), "external issuers are not passwords");
    }
}
