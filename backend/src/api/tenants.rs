//! Tenants: the caller's list, creation, reading and updating, the owner's
//! deletion request, and platform administrators' suspension and plan changes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Verb::{Delete, Get, Patch, Post, Put};
use super::validate::{self, Checks};
use super::{Api, Auth, audit};
use crate::auth::principal::{Authenticated, PrincipalExt as _};
use crate::authz::{Action, Resource, authorize};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use crate::views;
use tollgate_identity::principal::{Actor, Principal, Tenant, TenantStatus, security_flag};
use tollgate_store as store;

const MAX_SETTINGS_BYTES: usize = 16 * 1024;

pub fn routes(api: Api) -> Api {
    api.op(Get, "/tenants", "Tenants the caller belongs to", Auth::Bearer, 200, list)
        .op(Post, "/tenants", "Create a tenant owned by the caller", Auth::Bearer, 201, create)
        .body::<CreateTenant>()
        .op(Get, "/tenants/{tenant_id}", "A tenant", Auth::Bearer, 200, get)
        .op(Patch, "/tenants/{tenant_id}", "Rename a tenant or replace its settings", Auth::Bearer, 200, update)
        .body::<UpdateTenant>()
        .op(
            Delete,
            "/tenants/{tenant_id}",
            "Request deletion (owner only): the tenant turns read-only",
            Auth::Bearer,
            202,
            delete,
        )
        .op(
            Post,
            "/tenants/{tenant_id}/suspend",
            "Suspend a tenant (platform administrators)",
            Auth::Bearer,
            200,
            suspend,
        )
        .op(
            Post,
            "/tenants/{tenant_id}/reactivate",
            "Reactivate a tenant (platform administrators)",
            Auth::Bearer,
            200,
            reactivate,
        )
        .op(
            Put,
            "/tenants/{tenant_id}/plan",
            "Change a tenant's plan (platform administrators)",
            Auth::Bearer,
            200,
            set_plan,
        )
        .body::<SetPlan>()
}

async fn list(State(state): State<AppState>, p: Authenticated) -> Result<ApiJson<Value>, ApiError> {
    let items = match &p.actor {
        Actor::User { user, .. } => {
            authorize(&state, &p, Action::AccountRead, Resource::Account(&user.id), None)?;
            let mut tx = state.store.user_tx(&user.id).await?;
            let tenants = store::tenants_of_user(&mut tx, &user.id).await?;
            tx.commit().await?;
            tenants.into_iter().map(|(t, role)| views::tenant(&Tenant::from(t), Some(&role))).collect()
        }
        Actor::ApiKey { .. } => {
            authorize(&state, &p, Action::TenantRead, Resource::Tenant(&p.tenant), None)?;
            vec![views::tenant(&p.tenant, Some(&p.role.name))]
        }
    };
    Ok(ApiJson(json!({"items": items})))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    slug: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    p: Authenticated,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<Response, ApiError> {
    let user = p.require_user()?;
    authorize(&state, &p, Action::TenantCreate, Resource::Platform, None)?;
    let name = body.name.trim().to_owned();
    let mut checks = Checks::default();
    checks.check("name", validate::name(&name));
    if let Some(slug) = &body.slug {
        checks.check("slug", validate::slug(slug));
    }
    checks.finish()?;
    let mut tx = state.store.tx().await?;
    if let Some(slug) = &body.slug
        && store::tenant_by_slug(&mut tx, slug).await?.is_some()
    {
        return Err(ApiError::Conflict(format!("slug `{slug}` is taken")));
    }
    let base = body.slug.clone().unwrap_or_else(|| validate::slugify(&name));
    let tenant = match store::insert_tenant(&mut tx, &name, &base).await {
        Ok(t) => t,
        Err(e) if e.is_unique_violation() => return Err(ApiError::Conflict(format!("slug `{base}` is taken"))),
        Err(e) => return Err(e.into()),
    };
    state.store.bind_tenant(&mut tx, &tenant.id).await?;
    store::insert_membership(&mut tx, &tenant.id, &user.id, "owner").await?;
    store::security_event(&mut tx, Some(&tenant.id), Some(&user.id), "tenant.created", &p.client_ip, json!({})).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(json!({"tenant": views::tenant(&Tenant::from(tenant), Some("owner"))})))
        .into_response())
}

async fn get(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    p.in_tenant(&tenant_id)?;
    authorize(&state, &p, Action::TenantRead, Resource::Tenant(&p.tenant), None)?;
    Ok(ApiJson(json!({"tenant": views::tenant(&p.tenant, Some(&p.role.name))})))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    name: Option<String>,
    settings: Option<Value>,
}

async fn update(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> Result<ApiJson<Value>, ApiError> {
    p.in_tenant(&tenant_id)?;
    authorize(&state, &p, Action::TenantUpdate, Resource::Tenant(&p.tenant), None)?;
    let mut checks = Checks::default();
    if let Some(name) = &body.name {
        checks.check("name", validate::name(name));
    }
    if let Some(settings) = &body.settings {
        let ok = settings.is_object() && settings.to_string().len() <= MAX_SETTINGS_BYTES;
        checks.check(
            "settings",
            if ok { Ok(()) } else { Err(format!("must be an object of at most {MAX_SETTINGS_BYTES} bytes")) },
        );
        for flag in ["mfa_required", "sso_required"] {
            if settings.pointer(&format!("/security/{flag}")).is_some_and(|v| !v.is_boolean()) {
                checks.check(&format!("settings.security.{flag}"), Err("must be true or false".into()));
            }
        }
    }
    checks.finish()?;
    // Requiring SSO or a second factor is an `sso` plan feature; a tenant
    // that loses it keeps what it required (security never lapses with a
    // downgrade), but cannot newly require it.
    let wants = |flag| body.settings.as_ref().is_some_and(|s| security_flag(s, flag));
    let newly_required =
        (wants("sso_required") && !p.tenant.sso_required) || (wants("mfa_required") && !p.tenant.mfa_required);
    if newly_required && !p.tenant.entitlements.has_feature("sso", tollgate_store::now()) {
        return Err(ApiError::FeatureMissing { feature: "sso", plans: state.lookups.catalog().plans_with("sso") });
    }
    let name = body.name.as_deref().map_or(p.tenant.name.as_str(), str::trim);
    let settings = body.settings.map_or_else(|| p.tenant.settings.clone(), |s| s.to_string());
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    store::update_tenant(&mut tx, &tenant_id, name, &settings).await?;
    let tenant = Tenant::from(store::tenant_by_id(&mut tx, &tenant_id).await?.ok_or(ApiError::NotFound)?);
    // Requiring SSO ends the password sessions it closes, not only new ones.
    if tenant.sso_required && !p.tenant.sso_required {
        let ended = store::revoke_password_sessions_of_claimed(&mut tx, &tenant_id).await?;
        super::audit(&mut tx, &p, &tenant_id, None, "tenant.sso_required", json!({"password_sessions_ended": ended}))
            .await?;
    }
    tx.commit().await?;
    Ok(ApiJson(json!({"tenant": views::tenant(&tenant, Some(&p.role.name))})))
}

async fn delete(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.in_tenant(&tenant_id)?;
    authorize(&state, &p, Action::TenantDelete, Resource::Tenant(&p.tenant), None)?;
    let change = TenantChange::Status(TenantStatus::PendingDeletion);
    let tenant = change_tenant(&state, &p, &tenant_id, change, "tenant.deletion_requested", json!({})).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(json!({"tenant": views::tenant(&tenant, Some(&p.role.name))}))).into_response())
}

/// What a lifecycle or plan change writes to a tenant's row.
enum TenantChange<'a> {
    Status(TenantStatus),
    Plan(&'a str),
}

/// Applies `change` to the tenant, records `event` with `details`, and
/// returns the tenant as it now is.
async fn change_tenant(
    state: &AppState,
    p: &Principal,
    tenant_id: &str,
    change: TenantChange<'_>,
    event: &str,
    details: Value,
) -> Result<Tenant, ApiError> {
    let mut tx = state.store.tenant_tx(tenant_id).await?;
    match change {
        TenantChange::Status(status) => store::set_tenant_status(&mut tx, tenant_id, status.as_str()).await?,
        TenantChange::Plan(plan) => store::set_tenant_plan(&mut tx, tenant_id, plan).await?,
    }
    let tenant = store::tenant_by_id(&mut tx, tenant_id).await?.ok_or(ApiError::NotFound)?;
    audit(&mut tx, p, tenant_id, p.user().map(|u| u.id.as_str()), event, details).await?;
    tx.commit().await?;
    Ok(tenant.into())
}

/// The target of a platform action: any tenant for platform administrators;
/// for everyone else another tenant's id is indistinguishable from none.
pub(super) async fn platform_target(state: &AppState, p: &Principal, tenant_id: &str) -> Result<Tenant, ApiError> {
    let admin = p.user().is_some_and(|u| u.platform_admin);
    if !admin {
        p.in_tenant(tenant_id)?;
    }
    let mut tx = state.store.tenant_tx(tenant_id).await?;
    let tenant = store::tenant_by_id(&mut tx, tenant_id).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(tenant.into())
}

async fn suspend(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    change_lifecycle(&state, &p, &tenant_id, Action::TenantSuspend, TenantStatus::Suspended, "tenant.suspended").await
}

async fn reactivate(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    change_lifecycle(&state, &p, &tenant_id, Action::TenantReactivate, TenantStatus::Active, "tenant.reactivated").await
}

/// A platform administrator's change of a tenant's lifecycle status.
async fn change_lifecycle(
    state: &AppState,
    p: &Authenticated,
    tenant_id: &str,
    action: Action,
    status: TenantStatus,
    event: &str,
) -> Result<ApiJson<Value>, ApiError> {
    let target = platform_target(state, p, tenant_id).await?;
    authorize(state, p, action, Resource::Tenant(&target), None)?;
    if target.status == status {
        return Err(ApiError::Conflict(format!("tenant is already {}", status.as_str())));
    }
    let tenant = change_tenant(state, p, tenant_id, TenantChange::Status(status), event, json!({})).await?;
    Ok(ApiJson(json!({"tenant": views::tenant(&tenant, None)})))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetPlan {
    /// The plan's name, as policies see it in `resource.tenant.plan`.
    plan: String,
}

async fn set_plan(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<SetPlan>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut checks = Checks::default();
    checks.check("plan", validate::identifier(&body.plan));
    let catalog = state.lookups.catalog();
    if catalog.plan(&body.plan).is_none() {
        let names: Vec<&str> = catalog.plans().map(|p| p.name.as_str()).collect();
        checks.check("plan", Err(format!("must be a plan of the catalog: {}", names.join(", "))));
    }
    checks.finish()?;
    let target = platform_target(&state, &p, &tenant_id).await?;
    authorize(&state, &p, Action::TenantSetPlan, Resource::Tenant(&target), None)?;
    let details = json!({"from": target.plan, "to": body.plan});
    let tenant =
        change_tenant(&state, &p, &tenant_id, TenantChange::Plan(&body.plan), "tenant.plan_changed", details).await?;
    Ok(ApiJson(json!({"tenant": views::tenant(&tenant, None)})))
}
