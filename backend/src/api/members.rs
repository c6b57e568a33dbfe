//! A tenant's members (search, cursor pagination, role changes, removal) and
//! its custom roles.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Verb::{Delete, Get, Patch, Post};
use super::validate::{self, Checks};
use super::{Api, Auth, audit};
use crate::auth::principal::{Authenticated, PrincipalExt as _};
use crate::authz::{Action, Resource, authorize, open_tenant};
use crate::problem::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::views;
use tollgate_identity::roles::{Builtin, ResolvedRole};
use tollgate_store::{self as store, Tx};

pub fn routes(api: Api) -> Api {
    api.op(
        Get,
        "/tenants/{tenant_id}/members",
        "Members, searchable by email or name, paginated by cursor",
        Auth::Bearer,
        200,
        list,
    )
    .op(Patch, "/tenants/{tenant_id}/members/{user_id}", "Change a member's role", Auth::Bearer, 200, change_role)
    .body::<ChangeRole>()
    .op(Delete, "/tenants/{tenant_id}/members/{user_id}", "Remove a member", Auth::Bearer, 204, remove)
    .op(Get, "/tenants/{tenant_id}/roles", "Built-in and custom roles", Auth::Bearer, 200, list_roles)
    .op(
        Post,
        "/tenants/{tenant_id}/roles",
        "Create a custom role extending a built-in one",
        Auth::Bearer,
        201,
        create_role,
    )
    .body::<CreateRole>()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<Value>, ApiError> {
    p.in_tenant(&tenant_id)?;
    authorize(&state, &p, Action::MemberList, Resource::Tenant(&p.tenant), None)?;
    let limit = validate::limit(query.limit)?;
    let after = match &query.cursor {
        None => None,
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor from this list"))?,
        ),
    };
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if search.is_some_and(|q| q.chars().count() > 100) {
        return Err(ApiError::field("q", "must be at most 100 characters"));
    }
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    let mut rows = store::members(&mut tx, &tenant_id, search, after.as_deref(), limit + 1).await?;
    tx.commit().await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = match rows.last() {
        Some(last) if more => json!(URL_SAFE_NO_PAD.encode(&last.email)),
        _ => Value::Null,
    };
    let items: Vec<Value> = rows.iter().map(views::member).collect();
    Ok(ApiJson(json!({"items": items, "next_cursor": next_cursor})))
}

/// A role name valid in the tenant: built-in, or an existing custom role.
async fn existing_role(tx: &mut Tx, tenant_id: &str, name: &str) -> Result<ResolvedRole, ApiError> {
    let role = ResolvedRole::load(tx, tenant_id, name).await?;
    if role.base.is_none() {
        return Err(ApiError::field("role", format!("`{name}` is not a role of this tenant")));
    }
    Ok(role)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ChangeRole {
    role: String,
}

/// Fails when the change would leave the tenant without an owner.
async fn keep_an_owner(tx: &mut Tx, tenant_id: &str, member_role: &str) -> Result<(), ApiError> {
    if member_role == "owner" && store::count_role(tx, tenant_id, "owner").await? <= 1 {
        return Err(ApiError::Conflict("the last owner cannot be demoted or removed".into()));
    }
    Ok(())
}

async fn change_role(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, user_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ChangeRole>,
) -> Result<ApiJson<Value>, ApiError> {
    p.in_tenant(&tenant_id)?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    store::lock_tenant(&mut tx, &tenant_id).await?;
    let member = store::member(&mut tx, &tenant_id, &user_id).await?.ok_or(ApiError::NotFound)?;
    let current = ResolvedRole::load(&mut tx, &tenant_id, &member.role).await?;
    let new_role = existing_role(&mut tx, &tenant_id, &body.role).await?;
    authorize(
        &state,
        &p,
        Action::MemberUpdateRole,
        Resource::Member { user_id: &user_id, rank: current.rank() },
        Some(new_role.rank()),
    )?;
    if new_role.name != "owner" {
        keep_an_owner(&mut tx, &tenant_id, &member.role).await?;
    }
    store::set_member_role(&mut tx, &tenant_id, &user_id, &new_role.name).await?;
    let change = json!({"from": member.role, "to": new_role.name});
    audit(&mut tx, &p, &tenant_id, Some(&user_id), "member.role_changed", change).await?;
    let updated = store::member(&mut tx, &tenant_id, &user_id).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(ApiJson(json!({"member": views::member(&updated)})))
}

async fn remove(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, user_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    p.in_tenant(&tenant_id)?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    store::lock_tenant(&mut tx, &tenant_id).await?;
    let member = store::member(&mut tx, &tenant_id, &user_id).await?.ok_or(ApiError::NotFound)?;
    let current = ResolvedRole::load(&mut tx, &tenant_id, &member.role).await?;
    authorize(&state, &p, Action::MemberRemove, Resource::Member { user_id: &user_id, rank: current.rank() }, None)?;
    keep_an_owner(&mut tx, &tenant_id, &member.role).await?;
    store::delete_membership(&mut tx, &tenant_id, &user_id).await?;
    audit(&mut tx, &p, &tenant_id, Some(&user_id), "member.removed", json!({})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_roles(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::RoleList).await?;
    let custom = store::roles(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    let builtin: Vec<Value> =
        Builtin::ALL.iter().map(|r| json!({"name": r.name(), "builtin": true, "rank": r.rank()})).collect();
    let custom: Vec<Value> = custom.iter().map(views::role).collect();
    Ok(ApiJson(json!({"builtin": builtin, "custom": custom})))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateRole {
    name: String,
    base_role: String,
    #[serde(default)]
    description: String,
}

async fn create_role(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateRole>,
) -> Result<Response, ApiError> {
    p.in_tenant(&tenant_id)?;
    let mut checks = Checks::default();
    checks.check("name", validate::identifier(&body.name));
    if Builtin::parse(&body.name).is_some() {
        checks.check("name", Err("must not be a built-in role".into()));
    }
    let base = Builtin::parse(&body.base_role);
    if base.is_none() {
        checks.check("base_role", Err("must be `owner`, `admin`, `member` or `viewer`".into()));
    }
    if body.description.chars().count() > 500 {
        checks.check("description", Err("must be at most 500 characters".into()));
    }
    checks.finish()?;
    let rank = base.map_or(0, Builtin::rank);
    authorize(&state, &p, Action::RoleCreate, Resource::Tenant(&p.tenant), Some(rank))?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    let role = match store::insert_role(&mut tx, &tenant_id, &body.name, &body.base_role, body.description.trim()).await
    {
        Ok(role) => role,
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::Conflict(format!("role `{}` already exists", body.name)));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(json!({"role": views::role(&role)}))).into_response())
}
