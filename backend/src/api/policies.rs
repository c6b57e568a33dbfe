//! A tenant's own policy layer: versions added (validated against the schema
//! together with the platform's policies on write), listed, validated, tested
//! against scenarios, activated and rolled back. Activation reaches every
//! gateway within [`LAYER_TTL`](tollgate_identity::layers::LAYER_TTL).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Verb::{Get, Post};
use super::{Api, Auth, audit};
use crate::auth::principal::{Authenticated, PrincipalExt as _};
use crate::authz::{Action, Resource, authorize, open_tenant};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use crate::views::ts;
use tollgate_identity::layers::combine;
use tollgate_identity::principal::Principal;
use tollgate_store::{self as store, PolicyVersionRow};

const MAX_SOURCE_BYTES: usize = 64 * 1024;

pub fn routes(api: Api) -> Api {
    api.op(Get, "/tenants/{tenant_id}/policies", "The tenant's policy versions", Auth::Bearer, 200, list)
        .op(
            Post,
            "/tenants/{tenant_id}/policies",
            "Add a policy version (validated, not yet active)",
            Auth::Bearer,
            201,
            create,
        )
        .body::<NewVersion>()
        .op(
            Post,
            "/tenants/{tenant_id}/policies/validate",
            "Validate policies without storing them",
            Auth::Bearer,
            200,
            validate,
        )
        .body::<NewVersion>()
        .op(Get, "/tenants/{tenant_id}/policies/{version}", "One version with its source", Auth::Bearer, 200, get)
        .op(
            Post,
            "/tenants/{tenant_id}/policies/{version}/test",
            "Run scenarios against a version",
            Auth::Bearer,
            200,
            test,
        )
        .op(
            Post,
            "/tenants/{tenant_id}/policies/{version}/activate",
            "Make a version the active one",
            Auth::Bearer,
            200,
            activate,
        )
        .op(
            Post,
            "/tenants/{tenant_id}/policies/rollback",
            "Go back to the previously active version",
            Auth::Bearer,
            200,
            rollback,
        )
}

fn view(v: &PolicyVersionRow, with_source: bool) -> Value {
    let mut out = json!({
        "version": v.version,
        "status": v.status,
        "description": v.description,
        "created_by": v.created_by,
        "created_at": ts(v.created_at),
        "activated_at": v.activated_at.map_or(Value::Null, ts),
    });
    if with_source {
        out["source"] = json!(v.source);
    }
    out
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewVersion {
    /// Cedar policies, each with an `@id` annotation.
    source: String,
    #[serde(default)]
    description: String,
}

fn check_source(state: &AppState, tenant_id: &str, body: &NewVersion) -> Result<(), ApiError> {
    if body.source.len() > MAX_SOURCE_BYTES {
        return Err(ApiError::field("source", format!("must be at most {MAX_SOURCE_BYTES} bytes")));
    }
    if body.description.chars().count() > 500 {
        return Err(ApiError::field("description", "must be at most 500 characters"));
    }
    combine(state.engines.live(), tenant_id, 0, &body.source)
        .map(|_| ())
        .map_err(|e| ApiError::field("source", e.to_string()))
}

async fn list(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::PolicyRead).await?;
    let rows = store::policy_versions(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    let active = rows.iter().find(|r| r.status == "active").map(|r| r.version);
    Ok(ApiJson(json!({"active_version": active, "items": rows.iter().map(|r| view(r, false)).collect::<Vec<_>>()})))
}

async fn create(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<NewVersion>,
) -> Result<Response, ApiError> {
    p.in_tenant(&tenant_id)?;
    authorize(&state, &p, Action::PolicyManage, Resource::Tenant(&p.tenant), None)?;
    check_source(&state, &tenant_id, &body)?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    store::lock_tenant(&mut tx, &tenant_id).await?;
    let row =
        store::insert_policy_version(&mut tx, &tenant_id, &body.source, body.description.trim(), &p.actor_id()).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(json!({"policy": view(&row, true)}))).into_response())
}

async fn validate(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<NewVersion>,
) -> Result<ApiJson<Value>, ApiError> {
    p.in_tenant(&tenant_id)?;
    authorize(&state, &p, Action::PolicyRead, Resource::Tenant(&p.tenant), None)?;
    Ok(ApiJson(match check_source(&state, &tenant_id, &body) {
        Ok(()) => json!({"valid": true, "errors": []}),
        Err(ApiError::Validation(errors)) => json!({"valid": false, "errors": errors}),
        Err(e) => return Err(e),
    }))
}

async fn version_row(state: &AppState, tenant_id: &str, version: &str) -> Result<PolicyVersionRow, ApiError> {
    let version: i64 = version.parse().map_err(|_| ApiError::NotFound)?;
    let mut tx = state.store.tenant_tx(tenant_id).await?;
    let row = store::policy_version(&mut tx, tenant_id, version).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(row)
}

async fn get(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, version)): ApiPath<(String, String)>,
) -> Result<ApiJson<Value>, ApiError> {
    p.in_tenant(&tenant_id)?;
    authorize(&state, &p, Action::PolicyRead, Resource::Tenant(&p.tenant), None)?;
    Ok(ApiJson(json!({"policy": view(&version_row(&state, &tenant_id, &version).await?, true)})))
}

async fn test(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, version)): ApiPath<(String, String)>,
    ApiJson(scenario): ApiJson<Value>,
) -> Result<ApiJson<Value>, ApiError> {
    p.in_tenant(&tenant_id)?;
    authorize(&state, &p, Action::PolicyRead, Resource::Tenant(&p.tenant), None)?;
    let row = version_row(&state, &tenant_id, &version).await?;
    let engine = combine(state.engines.live(), &tenant_id, row.version, &row.source)
        .map_err(|e| ApiError::Conflict(format!("this version no longer validates: {e}")))?;
    let report = tollgate_policies::run_scenario_text(&engine, "scenario", &scenario.to_string());
    Ok(ApiJson(json!({"passed": report.passed, "failed": report.failures.len(), "failures": report.failures})))
}

async fn switch_to(
    state: &AppState,
    p: &Principal,
    tenant_id: &str,
    target: Option<&PolicyVersionRow>,
) -> Result<(), ApiError> {
    let mut tx = state.store.tenant_tx(tenant_id).await?;
    store::lock_tenant(&mut tx, tenant_id).await?;
    match target {
        Some(row) => {
            // The platform's policies may have changed since it was written.
            combine(state.engines.live(), tenant_id, row.version, &row.source)
                .map_err(|e| ApiError::Conflict(format!("version {} no longer validates: {e}", row.version)))?;
            store::activate_policy(&mut tx, tenant_id, row.version).await?;
        }
        None => store::deactivate_policies(&mut tx, tenant_id).await?,
    }
    let version = json!({"version": target.map(|r| r.version)});
    audit(&mut tx, p, tenant_id, p.user().map(|u| u.id.as_str()), "policy.activated", version).await?;
    tx.commit().await?;
    state.engines.invalidate(tenant_id).await;
    Ok(())
}

async fn activate(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, version)): ApiPath<(String, String)>,
) -> Result<ApiJson<Value>, ApiError> {
    p.in_tenant(&tenant_id)?;
    authorize(&state, &p, Action::PolicyManage, Resource::Tenant(&p.tenant), None)?;
    let row = version_row(&state, &tenant_id, &version).await?;
    switch_to(&state, &p, &tenant_id, Some(&row)).await?;
    Ok(ApiJson(json!({"active_version": row.version})))
}

async fn rollback(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::PolicyManage).await?;
    let rows = store::policy_versions(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    let active =
        rows.iter().find(|r| r.status == "active").ok_or_else(|| ApiError::Conflict("no version is active".into()))?;
    // Back down the history: the highest earlier version that has been
    // active; none (the platform's policies alone) when there is none.
    let previous =
        rows.iter().filter(|r| r.version < active.version && r.activated_at.is_some()).max_by_key(|r| r.version);
    switch_to(&state, &p, &tenant_id, previous).await?;
    Ok(ApiJson(json!({"active_version": previous.map(|r| r.version)})))
}
