//! The plan catalog, tenants' effective entitlements and platform
//! administrators' overrides, and the count limits (members, API keys) the
//! backend enforces where they bite.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Verb::{Get, Put};
use super::tenants::platform_target;
use super::{Api, Auth, audit};
use crate::auth::principal::Authenticated;
use crate::authz::{Action, Resource, authorize};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use crate::views;
use tollgate_identity::credentials::tenant_with_entitlements;
use tollgate_identity::plans::{Catalog, Entitlements, Grant, LimitName, Override, Plan, Source, is_identifier};
use tollgate_identity::principal::Tenant;
use tollgate_store::{self as store, Tx, now};

pub fn routes(api: Api) -> Api {
    api.op(Get, "/plans", "The plans tenants can be on, with their features and limits", Auth::Public, 200, list)
        .op(
            Get,
            "/tenants/{tenant_id}/entitlements",
            "The tenant's effective features and limits, each with where it comes from",
            Auth::Bearer,
            200,
            get,
        )
        .op(
            Put,
            "/tenants/{tenant_id}/entitlements",
            "Replace the tenant's overrides of its plan (platform administrators)",
            Auth::Bearer,
            200,
            put,
        )
        .body::<PutOverrides>()
}

fn limit_value(value: Option<u64>) -> Value {
    value.map_or(Value::Null, Value::from)
}

fn plan_view(plan: &Plan) -> Value {
    let limits: Map<String, Value> =
        LimitName::ALL.iter().map(|l| (l.as_str().to_owned(), limit_value(plan.limits.get(*l)))).collect();
    json!({
        "name": plan.name,
        "display_name": plan.display_name,
        "price": {"amount_minor": plan.price_minor, "currency": plan.currency},
        "billing_period": plan.period.as_str(),
        "features": plan.features,
        "limits": limits,
    })
}

async fn list(State(state): State<AppState>) -> ApiJson<Value> {
    let items: Vec<Value> = state.lookups.catalog().plans().map(|p| plan_view(p)).collect();
    ApiJson(json!({"items": items}))
}

fn source_view(source: Source) -> Value {
    match source {
        Source::Plan => json!({"source": "plan"}),
        Source::Override { expires_at } => {
            json!({"source": "override", "expires_at": expires_at.map_or(Value::Null, views::ts)})
        }
        Source::UnknownPlan => json!({"source": "unknown_plan"}),
    }
}

/// Every feature the catalog or the tenant's overrides speak of, with the
/// tenant's value and its source, and every limit likewise.
fn entitlements_view(tenant_id: &str, catalog: &Catalog, e: &Entitlements, at: i64) -> Value {
    let mut names: BTreeSet<String> = catalog.plans().flat_map(|p| p.features.iter().cloned()).collect();
    names.extend(e.all_features(at).into_keys());
    let features: Map<String, Value> = names
        .into_iter()
        .map(|name| {
            let (enabled, source) = e.feature(&name, at);
            let mut entry = source_view(source);
            entry["enabled"] = json!(enabled);
            (name, entry)
        })
        .collect();
    let limits: Map<String, Value> = LimitName::ALL
        .iter()
        .map(|l| {
            let (value, source) = e.limit_with_source(*l, at);
            let mut entry = source_view(source);
            entry["value"] = limit_value(value);
            (l.as_str().to_owned(), entry)
        })
        .collect();
    let overrides: Vec<Value> = e
        .overrides()
        .iter()
        .map(|o| {
            let (kind, value) = match o.grant {
                Grant::Feature(on) => ("feature", json!(on)),
                Grant::Limit(_, v) => ("limit", limit_value(v)),
            };
            json!({"name": o.name, "kind": kind, "value": value, "in_force": o.in_force(at),
                   "expires_at": o.expires_at.map_or(Value::Null, views::ts)})
        })
        .collect();
    json!({
        "tenant_id": tenant_id,
        "plan": e.plan_name(),
        "features": features,
        "limits": limits,
        "overrides": overrides,
    })
}

/// The tenant `tenant_id` with its entitlements, for a caller in it (with
/// `in_tenant`) or a platform administrator (`tenant.set_plan` on it).
pub(super) async fn entitled_target(
    state: &AppState,
    p: &Authenticated,
    tenant_id: &str,
    in_tenant: Action,
) -> Result<Tenant, ApiError> {
    let target = platform_target(state, p, tenant_id).await?;
    let action = if p.is_in_tenant(tenant_id) { in_tenant } else { Action::TenantSetPlan };
    authorize(state, p, action, Resource::Tenant(&target), None)?;
    let mut tx = state.store.tenant_tx(tenant_id).await?;
    let row = store::tenant_by_id(&mut tx, tenant_id).await?.ok_or(ApiError::NotFound)?;
    let tenant = tenant_with_entitlements(&mut tx, &state.lookups.catalog(), row).await?;
    tx.commit().await?;
    Ok(tenant)
}

async fn get(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let tenant = entitled_target(&state, &p, &tenant_id, Action::TenantRead).await?;
    Ok(ApiJson(entitlements_view(&tenant_id, &state.lookups.catalog(), &tenant.entitlements, now())))
}

/// A feature override: on or off, until `expires_at` when given.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FeatureOverride {
    enabled: bool,
    /// RFC 3339; absent for no expiry.
    expires_at: Option<String>,
}

/// A limit override: `value` (null for unlimited), until `expires_at` when given.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct LimitOverride {
    value: Option<u64>,
    /// RFC 3339; absent for no expiry.
    expires_at: Option<String>,
}

/// The tenant's overrides, replacing those it had: features by name
/// (`reports`), limits by name (`max_members`, `max_api_keys`,
/// `api_calls_per_month`, `requests_per_second`, `requests_per_second_per_key`).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct PutOverrides {
    #[serde(default)]
    features: BTreeMap<String, FeatureOverride>,
    #[serde(default)]
    limits: BTreeMap<String, LimitOverride>,
}

/// The largest number of overrides a tenant may have.
const MAX_OVERRIDES: usize = 64;

fn expiry(field: &str, text: Option<&str>, at: i64, errors: &mut Vec<(String, String)>) -> Option<i64> {
    let text = text?;
    match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(t) if t.unix_timestamp() > at => Some(t.unix_timestamp()),
        Ok(_) => {
            errors.push((field.to_owned(), "must be in the future".into()));
            None
        }
        Err(_) => {
            errors.push((field.to_owned(), "must be an RFC 3339 time like 2027-01-31T00:00:00Z".into()));
            None
        }
    }
}

fn overrides_of(body: &PutOverrides, at: i64) -> Result<Vec<Override>, ApiError> {
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    if body.features.len() + body.limits.len() > MAX_OVERRIDES {
        errors.push(("features".into(), format!("at most {MAX_OVERRIDES} overrides in all")));
    }
    for (name, f) in &body.features {
        let field = format!("features.{name}");
        if !is_identifier(name) || LimitName::parse(name).is_some() {
            errors.push((field.clone(), "must be a feature name (a-z, 0-9, _ and -)".into()));
        }
        let expires_at = expiry(&format!("{field}.expires_at"), f.expires_at.as_deref(), at, &mut errors);
        out.push(Override { name: name.clone(), grant: Grant::Feature(f.enabled), expires_at });
    }
    for (name, l) in &body.limits {
        let field = format!("limits.{name}");
        let Some(limit) = LimitName::parse(name) else {
            let known: Vec<&str> = LimitName::ALL.iter().map(|l| l.as_str()).collect();
            errors.push((field, format!("must be one of {}", known.join(", "))));
            continue;
        };
        if l.value.is_some_and(|v| v > i64::MAX as u64) {
            errors.push((format!("{field}.value"), "is too large".into()));
        }
        let expires_at = expiry(&format!("{field}.expires_at"), l.expires_at.as_deref(), at, &mut errors);
        out.push(Override { name: name.clone(), grant: Grant::Limit(limit, l.value), expires_at });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::Validation(
            errors.into_iter().map(|(field, message)| crate::problem::FieldError { field, message }).collect(),
        ))
    }
}

async fn put(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<PutOverrides>,
) -> Result<ApiJson<Value>, ApiError> {
    let at = now();
    let overrides = overrides_of(&body, at)?;
    let target = platform_target(&state, &p, &tenant_id).await?;
    authorize(&state, &p, Action::TenantSetPlan, Resource::Tenant(&target), None)?;
    let by = p.actor_id();
    let rows: Vec<_> = overrides.iter().map(|o| o.to_row(&tenant_id, &by, at)).collect();
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    store::lock_tenant(&mut tx, &tenant_id).await?;
    store::replace_entitlement_overrides(&mut tx, &tenant_id, &rows).await?;
    let row = store::tenant_by_id(&mut tx, &tenant_id).await?.ok_or(ApiError::NotFound)?;
    let tenant = tenant_with_entitlements(&mut tx, &state.lookups.catalog(), row).await?;
    let view = entitlements_view(&tenant_id, &state.lookups.catalog(), &tenant.entitlements, at);
    let details = json!({"overrides": view["overrides"].clone()});
    audit(&mut tx, &p, &tenant_id, None, "tenant.entitlements_changed", details).await?;
    tx.commit().await?;
    Ok(ApiJson(view))
}

/// Refuses (402) adding one more of what `limit` counts to the tenant when
/// it already has as many as its entitlements allow. Takes the tenant's
/// lock first, so concurrent additions are counted one after the other and
/// cannot overshoot; the caller adds in the same transaction.
pub(crate) async fn room_for_one_more(
    state: &AppState,
    tx: &mut Tx,
    tenant_id: &str,
    limit: LimitName,
) -> Result<(), ApiError> {
    store::lock_tenant(tx, tenant_id).await?;
    let row = store::tenant_by_id(tx, tenant_id).await?.ok_or(ApiError::NotFound)?;
    let tenant = tenant_with_entitlements(tx, &state.lookups.catalog(), row).await?;
    let Some(max) = tenant.entitlements.limit(limit, now()) else {
        return Ok(());
    };
    let count = match limit {
        LimitName::MaxMembers => store::count_members(tx, tenant_id).await?,
        LimitName::MaxApiKeys => store::count_live_api_keys(tx, tenant_id).await?,
        _ => return Ok(()),
    };
    if u64::try_from(count).unwrap_or(0) >= max {
        return Err(ApiError::PlanLimit { limit: limit.as_str(), value: max, plan: tenant.plan.clone() });
    }
    Ok(())
}
