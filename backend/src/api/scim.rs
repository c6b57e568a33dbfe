//! A tenant's SCIM provisioning, as its admins manage it: the bearer tokens
//! identity providers use at `/scim/v2` (the secret shown once, stored
//! hashed) and the settings that map provisioned groups to roles.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use tollgate_identity::roles::ResolvedRole;
use tollgate_identity::secrets;
use tollgate_store::{self as store, ScimTokenRow, now};

use super::Verb::{Delete, Get, Post, Put};
use super::validate::{self, Checks};
use super::{Api, Auth, audit};
use crate::auth::principal::Authenticated;
use crate::authz::{Action, open_tenant};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::scim::{Client, Ctx, provision};
use crate::state::AppState;
use crate::views;

/// How many live SCIM tokens a tenant may have.
pub const MAX_SCIM_TOKENS: i64 = 10;
/// How many groups may map to roles.
const MAX_GROUP_ROLES: usize = 100;

pub fn routes(api: Api) -> Api {
    api.op(
        Post,
        "/tenants/{tenant_id}/scim-tokens",
        "Create a SCIM token (the secret is shown once)",
        Auth::Bearer,
        201,
        create_token,
    )
    .body::<CreateToken>()
    .op(Get, "/tenants/{tenant_id}/scim-tokens", "The tenant's SCIM tokens", Auth::Bearer, 200, list_tokens)
    .op(Delete, "/tenants/{tenant_id}/scim-tokens/{token_id}", "Revoke a SCIM token", Auth::Bearer, 204, revoke_token)
    .op(Get, "/tenants/{tenant_id}/scim/settings", "How provisioned groups map to roles", Auth::Bearer, 200, settings)
    .op(
        Put,
        "/tenants/{tenant_id}/scim/settings",
        "Set the default role and the group-to-role mapping of provisioning",
        Auth::Bearer,
        200,
        save_settings,
    )
    .body::<Settings>()
}

fn token_view(t: &ScimTokenRow) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "prefix": t.prefix,
        "created_at": views::ts(t.created_at),
        "last_used_at": t.last_used_at.map(views::ts),
        "revoked_at": t.revoked_at.map(views::ts),
    })
}

/// Opens the tenant for `scim.manage`, refusing (402) a plan without SCIM.
async fn open(state: &AppState, p: &Authenticated, tenant_id: &str) -> Result<store::Tx, ApiError> {
    let tx = open_tenant(state, p, tenant_id, Action::ScimManage).await?;
    if !p.tenant.entitlements.has_feature("scim", now()) {
        return Err(ApiError::FeatureMissing { feature: "scim", plans: state.lookups.catalog().plans_with("scim") });
    }
    Ok(tx)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    /// What the token is for (e.g. the identity provider's name).
    name: String,
}

async fn create_token(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<Response, ApiError> {
    let mut checks = Checks::default();
    checks.check("name", validate::name(&body.name));
    checks.finish()?;
    let mut tx = open(&state, &p, &tenant_id).await?;
    store::lock_tenant(&mut tx, &tenant_id).await?;
    if store::count_live_scim_tokens(&mut tx, &tenant_id).await? >= MAX_SCIM_TOKENS {
        return Err(ApiError::Conflict(format!("a tenant has at most {MAX_SCIM_TOKENS} live SCIM tokens")));
    }
    let (prefix, secret) = secrets::new_scim_token();
    let row = store::insert_scim_token(
        &mut tx,
        &tenant_id,
        body.name.trim(),
        &prefix,
        &secrets::hash(&secret),
        &p.actor_id(),
    )
    .await?;
    audit(&mut tx, &p, &tenant_id, None, "scim.token_created", json!({"token": row.id, "name": row.name})).await?;
    tx.commit().await?;
    let mut view = token_view(&row);
    view["secret"] = json!(secret);
    Ok((StatusCode::CREATED, ApiJson(view)).into_response())
}

async fn list_tokens(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::ScimManage).await?;
    let rows = store::scim_tokens(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    Ok(ApiJson(json!({"items": rows.iter().map(token_view).collect::<Vec<_>>()})))
}

async fn revoke_token(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, token_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::ScimManage).await?;
    if !store::revoke_scim_token(&mut tx, &tenant_id, &token_id).await? {
        return Err(ApiError::NotFound);
    }
    audit(&mut tx, &p, &tenant_id, None, "scim.token_revoked", json!({"token": token_id})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn settings(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::ScimManage).await?;
    let (default_role, group_roles) = provision::settings(&mut tx, &tenant_id).await.map_err(from_scim)?;
    tx.commit().await?;
    Ok(ApiJson(json!({"default_role": default_role, "group_roles": group_roles})))
}

/// Provisioning's roles: what a SCIM user without a mapped group gets, and
/// group display names (any case) to roles; the highest mapped role wins.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Settings {
    default_role: String,
    #[serde(default)]
    group_roles: BTreeMap<String, String>,
}

pub(super) fn from_scim(f: crate::scim::Failure) -> ApiError {
    match f.0.status {
        409 => ApiError::Conflict(f.0.detail),
        403 => ApiError::forbidden(f.0.detail),
        _ => ApiError::Internal(f.0.detail),
    }
}

async fn save_settings(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<Settings>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open(&state, &p, &tenant_id).await?;
    store::lock_tenant(&mut tx, &tenant_id).await?;
    if body.group_roles.len() > MAX_GROUP_ROLES {
        return Err(ApiError::field("group_roles", format!("at most {MAX_GROUP_ROLES} groups map to roles")));
    }
    // A role provisioning may give: one of the tenant's, never owner.
    let mut errors = Checks::default();
    let mut roles = vec![("default_role".to_owned(), body.default_role.clone())];
    roles.extend(body.group_roles.iter().map(|(group, role)| (format!("group_roles.{group}"), role.clone())));
    for (field, role) in &roles {
        let resolved = ResolvedRole::load(&mut tx, &tenant_id, role).await?;
        let outcome = match resolved.base {
            None => Err(format!("`{role}` is not a role of this tenant")),
            Some(_) if role == "owner" => Err("provisioning never makes owners".to_owned()),
            Some(_) => Ok(()),
        };
        errors.check(field, outcome);
    }
    errors.finish()?;
    let mapping: Map<String, Value> =
        body.group_roles.iter().map(|(group, role)| (group.trim().to_lowercase(), json!(role))).collect();
    store::save_scim_settings(&mut tx, &tenant_id, &body.default_role, &Value::Object(mapping.clone()).to_string())
        .await?;
    // Every provisioned member's role follows the new mapping at once.
    let client = Client {
        tenant_id: tenant_id.clone(),
        actor: p.actor_id(),
        ip: p.principal.client_ip.clone(),
        base: format!("{}/scim/v2", state.config.issuer.trim_end_matches('/')),
    };
    let ctx = Ctx { state: &state, client: &client };
    let linked = store::linked_scim_users(&mut tx, &tenant_id).await?;
    provision::sync_users(&ctx, &mut tx, &linked).await.map_err(from_scim)?;
    audit(
        &mut tx,
        &p,
        &tenant_id,
        None,
        "scim.settings_changed",
        json!({"default_role": body.default_role, "group_roles": mapping}),
    )
    .await?;
    tx.commit().await?;
    Ok(ApiJson(json!({"default_role": body.default_role, "group_roles": mapping})))
}
