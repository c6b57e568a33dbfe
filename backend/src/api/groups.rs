//! A tenant's groups and their members. Policies name a group by its id
//! (`principal in Group::"<id>"`); a change reaches decisions within the
//! gateway's liveness bound.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Verb::{Delete, Get, Patch, Post, Put};
use super::validate::{self, Checks};
use super::{Api, Auth, audit};
use crate::auth::principal::Authenticated;
use crate::authz::{Action, open_tenant};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use crate::views;
use tollgate_store as store;

/// How many groups a tenant may have.
pub const MAX_GROUPS: i64 = 1000;
const MAX_DESCRIPTION_CHARS: usize = 500;

pub fn routes(api: Api) -> Api {
    api.op(Get, "/tenants/{tenant_id}/groups", "The tenant's groups", Auth::Bearer, 200, list)
        .op(Post, "/tenants/{tenant_id}/groups", "Create a group", Auth::Bearer, 201, create)
        .body::<CreateGroup>()
        .op(Get, "/tenants/{tenant_id}/groups/{group_id}", "A group with its members", Auth::Bearer, 200, get)
        .op(
            Patch,
            "/tenants/{tenant_id}/groups/{group_id}",
            "Rename a group or change its description",
            Auth::Bearer,
            200,
            update,
        )
        .body::<UpdateGroup>()
        .op(Delete, "/tenants/{tenant_id}/groups/{group_id}", "Delete a group", Auth::Bearer, 204, delete)
        .op(
            Put,
            "/tenants/{tenant_id}/groups/{group_id}/members/{user_id}",
            "Add a member of the tenant to the group",
            Auth::Bearer,
            204,
            add_member,
        )
        .op(
            Delete,
            "/tenants/{tenant_id}/groups/{group_id}/members/{user_id}",
            "Take a member out of the group",
            Auth::Bearer,
            204,
            remove_member,
        )
}

fn check_description(checks: &mut Checks, description: &str) {
    let ok = description.chars().count() <= MAX_DESCRIPTION_CHARS && !description.chars().any(char::is_control);
    checks.check(
        "description",
        if ok {
            Ok(())
        } else {
            Err(format!("must be at most {MAX_DESCRIPTION_CHARS} characters, no control characters"))
        },
    );
}

/// Refuses changes to a group provisioned over SCIM: its identity provider
/// owns its name and members, and would undo them at its next push.
async fn not_provisioned(tx: &mut store::Tx, tenant_id: &str, group_id: &str) -> Result<(), ApiError> {
    if store::is_scim_group(tx, tenant_id, group_id).await? {
        return Err(ApiError::Conflict(
            "this group is provisioned by the tenant's identity provider (SCIM): change it there".into(),
        ));
    }
    Ok(())
}

fn name_taken(name: &str) -> ApiError {
    ApiError::Conflict(format!("a group named `{name}` already exists"))
}

async fn list(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::GroupList).await?;
    let groups = store::groups(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    Ok(ApiJson(json!({"items": groups.iter().map(views::group).collect::<Vec<_>>()})))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateGroup {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateGroup>,
) -> Result<Response, ApiError> {
    let mut checks = Checks::default();
    checks.check("name", validate::name(&body.name));
    check_description(&mut checks, &body.description);
    checks.finish()?;
    let name = body.name.trim();
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::GroupManage).await?;
    store::lock_tenant(&mut tx, &tenant_id).await?;
    if store::count_groups(&mut tx, &tenant_id).await? >= MAX_GROUPS {
        return Err(ApiError::Conflict(format!("a tenant has at most {MAX_GROUPS} groups")));
    }
    let group = match store::insert_group(&mut tx, &tenant_id, name, body.description.trim()).await {
        Ok(group) => group,
        Err(e) if e.is_unique_violation() => return Err(name_taken(name)),
        Err(e) => return Err(e.into()),
    };
    audit(&mut tx, &p, &tenant_id, None, "group.created", json!({"group": group.id, "name": group.name})).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(json!({"group": views::group(&group)}))).into_response())
}

async fn get(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, group_id)): ApiPath<(String, String)>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::GroupList).await?;
    let group = store::group_by_id(&mut tx, &tenant_id, &group_id).await?.ok_or(ApiError::NotFound)?;
    let members = store::group_members(&mut tx, &tenant_id, &group_id).await?;
    tx.commit().await?;
    let mut view = views::group(&group);
    view["members"] = members.iter().map(views::member).collect();
    Ok(ApiJson(json!({"group": view})))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateGroup {
    name: Option<String>,
    description: Option<String>,
}

async fn update(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, group_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateGroup>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut checks = Checks::default();
    if let Some(name) = &body.name {
        checks.check("name", validate::name(name));
    }
    if let Some(description) = &body.description {
        check_description(&mut checks, description);
    }
    checks.finish()?;
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::GroupManage).await?;
    not_provisioned(&mut tx, &tenant_id, &group_id).await?;
    let group = store::group_by_id(&mut tx, &tenant_id, &group_id).await?.ok_or(ApiError::NotFound)?;
    let name = body.name.as_deref().map_or(group.name.as_str(), str::trim);
    let description = body.description.as_deref().map_or(group.description.as_str(), str::trim);
    match store::update_group(&mut tx, &tenant_id, &group_id, name, description).await {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => return Err(name_taken(name)),
        Err(e) => return Err(e.into()),
    }
    let updated = store::group_by_id(&mut tx, &tenant_id, &group_id).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(ApiJson(json!({"group": views::group(&updated)})))
}

async fn delete(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, group_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::GroupManage).await?;
    not_provisioned(&mut tx, &tenant_id, &group_id).await?;
    if !store::delete_group(&mut tx, &tenant_id, &group_id).await? {
        return Err(ApiError::NotFound);
    }
    audit(&mut tx, &p, &tenant_id, None, "group.deleted", json!({"group": group_id})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_member(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, group_id, user_id)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::GroupManage).await?;
    not_provisioned(&mut tx, &tenant_id, &group_id).await?;
    store::group_by_id(&mut tx, &tenant_id, &group_id).await?.ok_or(ApiError::NotFound)?;
    // Only members of this tenant; anyone else's id looks like no id at all.
    store::membership(&mut tx, &tenant_id, &user_id).await?.ok_or(ApiError::NotFound)?;
    let added = match store::add_group_member(&mut tx, &tenant_id, &group_id, &user_id).await {
        Ok(added) => added,
        // The membership or the group went away since the checks above.
        Err(e) if e.is_foreign_key_violation() => return Err(ApiError::NotFound),
        Err(e) => return Err(e.into()),
    };
    if added {
        audit(&mut tx, &p, &tenant_id, Some(&user_id), "group.member_added", json!({"group": group_id})).await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_member(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, group_id, user_id)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::GroupManage).await?;
    not_provisioned(&mut tx, &tenant_id, &group_id).await?;
    if !store::remove_group_member(&mut tx, &tenant_id, &group_id, &user_id).await? {
        return Err(ApiError::NotFound);
    }
    audit(&mut tx, &p, &tenant_id, Some(&user_id), "group.member_removed", json!({"group": group_id})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
