//! API keys (the secret shown once; owned by a user or a service account of
//! the tenant) and service accounts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Verb::{Delete, Get, Post};
use super::validate::{self, Checks};
use super::{Api, Auth, audit};
use crate::auth::principal::{Authenticated, PrincipalExt as _};
use crate::authz::{Action, KeyOwner, Resource, SCOPES, authorize, is_valid_scope, open_tenant};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use crate::views;
use tollgate_identity::plans::LimitName;
use tollgate_identity::principal::{Actor, KeyOwner as CallerKeyOwner, Scopes};
use tollgate_identity::roles::ResolvedRole;
use tollgate_identity::secrets;
use tollgate_store::{self as store, NewApiKey, now};

pub fn routes(api: Api) -> Api {
    api.op(
        Post,
        "/tenants/{tenant_id}/api-keys",
        "Create an API key; the secret is shown once",
        Auth::Bearer,
        201,
        create_key,
    )
    .body::<CreateKey>()
    .op(
        Get,
        "/tenants/{tenant_id}/api-keys",
        "API keys of the tenant (never their secrets)",
        Auth::Bearer,
        200,
        list_keys,
    )
    .op(Delete, "/tenants/{tenant_id}/api-keys/{key_id}", "Revoke an API key", Auth::Bearer, 204, revoke_key)
    .op(
        Post,
        "/tenants/{tenant_id}/service-accounts",
        "Create a service account with a role",
        Auth::Bearer,
        201,
        create_account,
    )
    .body::<CreateAccount>()
    .op(
        Get,
        "/tenants/{tenant_id}/service-accounts",
        "Service accounts of the tenant",
        Auth::Bearer,
        200,
        list_accounts,
    )
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    scopes: Vec<String>,
    expires_in_days: Option<i64>,
    service_account_id: Option<String>,
}

async fn create_key(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    p.in_tenant(&tenant_id)?;
    let mut checks = Checks::default();
    checks.check("name", validate::name(&body.name));
    let unknown: Vec<&str> = body.scopes.iter().map(String::as_str).filter(|s| !is_valid_scope(s)).collect();
    if body.scopes.is_empty() || !unknown.is_empty() {
        checks.check(
            "scopes",
            Err(format!("must be a non-empty list of product actions (`contact.read`) or of: {}", SCOPES.join(", "))),
        );
    }
    if let Some(days) = body.expires_in_days
        && !(1..=365).contains(&days)
    {
        checks.check("expires_in_days", Err("must be between 1 and 365".into()));
    }
    checks.finish()?;
    if let Actor::ApiKey { key } = &p.actor
        && !key.scopes.contains("*")
        && !body.scopes.iter().all(|s| key.scopes.contains(s))
    {
        return Err(ApiError::forbidden("an API key cannot create a key with scopes it does not have"));
    }
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    let (owner_user, owner_account, rank) = match (&body.service_account_id, &p.actor) {
        (Some(sa_id), _) => {
            let account = store::service_account(&mut tx, &tenant_id, sa_id)
                .await?
                .ok_or_else(|| ApiError::field("service_account_id", "is not a service account of this tenant"))?;
            let rank = ResolvedRole::load(&mut tx, &tenant_id, &account.role).await?.rank();
            (None, Some(account.id), rank)
        }
        (None, Actor::User { user, .. }) => (Some(user.id.clone()), None, p.role.rank()),
        (None, Actor::ApiKey { key }) => match &key.owner {
            CallerKeyOwner::User(id) => (Some(id.clone()), None, p.role.rank()),
            CallerKeyOwner::ServiceAccount(id) => (None, Some(id.clone()), p.role.rank()),
        },
    };
    let owner = match (&owner_user, &owner_account) {
        (Some(u), _) => KeyOwner::User(u),
        (None, Some(s)) => KeyOwner::ServiceAccount(s),
        (None, None) => return Err(ApiError::Internal("api key without owner".into())),
    };
    authorize(
        &state,
        &p,
        Action::ApiKeyCreate,
        Resource::ApiKey { id: "new", owner, scopes: &body.scopes, rank },
        Some(rank),
    )?;
    super::plans::room_for_one_more(&state, &mut tx, &tenant_id, LimitName::MaxApiKeys).await?;
    let (prefix, secret) = secrets::new_api_key();
    let row = store::insert_api_key(
        &mut tx,
        &NewApiKey {
            tenant_id: &tenant_id,
            prefix: &prefix,
            secret_hash: &secrets::hash(&secret),
            name: body.name.trim(),
            scopes: &body.scopes,
            owner_user_id: owner_user.as_deref(),
            owner_service_account_id: owner_account.as_deref(),
            created_by: &p.actor_id(),
            expires_at: body.expires_in_days.map(|d| now() + d * 86_400),
        },
    )
    .await?;
    audit(&mut tx, &p, &tenant_id, owner_user.as_deref(), "api_key.created", json!({"key": row.id})).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(json!({"api_key": views::api_key(&row), "secret": secret}))).into_response())
}

async fn list_keys(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::ApiKeyList).await?;
    let rows = store::api_keys(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    let items: Vec<Value> = rows.iter().map(views::api_key).collect();
    Ok(ApiJson(json!({"items": items})))
}

async fn revoke_key(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, key_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    p.in_tenant(&tenant_id)?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    let key = store::api_key(&mut tx, &tenant_id, &key_id).await?.ok_or(ApiError::NotFound)?;
    let owner = match (&key.owner_user_id, &key.owner_service_account_id) {
        (Some(u), _) => KeyOwner::User(u),
        (None, Some(s)) => KeyOwner::ServiceAccount(s),
        (None, None) => return Err(ApiError::Internal("api key without owner".into())),
    };
    let scopes: Vec<String> = Scopes::from_json(&key.scopes)?.iter().map(str::to_owned).collect();
    authorize(
        &state,
        &p,
        Action::ApiKeyRevoke,
        Resource::ApiKey { id: &key.id, owner, scopes: &scopes, rank: 0 },
        None,
    )?;
    if !store::revoke_api_key(&mut tx, &tenant_id, &key_id).await? {
        return Err(ApiError::Conflict("API key is already revoked".into()));
    }
    audit(&mut tx, &p, &tenant_id, key.owner_user_id.as_deref(), "api_key.revoked", json!({"key": key.id})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    name: String,
    role: String,
}

async fn create_account(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateAccount>,
) -> Result<Response, ApiError> {
    p.in_tenant(&tenant_id)?;
    let mut checks = Checks::default();
    checks.check("name", validate::identifier(&body.name));
    checks.finish()?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    let role = ResolvedRole::load(&mut tx, &tenant_id, &body.role).await?;
    if role.base.is_none() {
        return Err(ApiError::field("role", format!("`{}` is not a role of this tenant", body.role)));
    }
    authorize(&state, &p, Action::ServiceAccountCreate, Resource::Tenant(&p.tenant), Some(role.rank()))?;
    let account = match store::insert_service_account(&mut tx, &tenant_id, &body.name, &role.name, &p.actor_id()).await
    {
        Ok(a) => a,
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::Conflict(format!("service account `{}` already exists", body.name)));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(json!({"service_account": views::service_account(&account)}))).into_response())
}

async fn list_accounts(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::ServiceAccountList).await?;
    let rows = store::service_accounts(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    let items: Vec<Value> = rows.iter().map(views::service_account).collect();
    Ok(ApiJson(json!({"items": items})))
}
