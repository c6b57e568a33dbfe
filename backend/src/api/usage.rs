//! Usage: products report what their tenants used (`POST /usage`, counted
//! once per idempotency key), and tenants read the current month's usage
//! against their limits. The gateway counts forwarded requests itself
//! (`api_calls` to products, `platform_calls` to the platform's API), so
//! products cannot report those metrics.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Verb::{Get, Post};
use super::validate::Checks;
use super::{Api, Auth};
use crate::auth::principal::Authenticated;
use crate::authz::{Action, Resource, authorize};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use crate::views;
use tollgate_identity::plans::{LimitName, month_of};
use tollgate_store::{self as store, UsageReportRow, now};

/// The metric the gateways count against the monthly quota: requests
/// forwarded to products.
pub const API_CALLS: &str = "api_calls";
/// The metric the gateways count for the platform's own API (never limited).
pub const PLATFORM_CALLS: &str = "platform_calls";

pub fn routes(api: Api) -> Api {
    api.op(
        Post,
        "/usage",
        "Report usage for the caller's tenant (API keys with `usage:write`; `Idempotency-Key` counts it once)",
        Auth::Bearer,
        201,
        report,
    )
    .body::<Report>()
    .op(
        Get,
        "/tenants/{tenant_id}/usage",
        "The tenant's usage this month against its limits",
        Auth::Bearer,
        200,
        current,
    )
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Report {
    /// 1 to 64 of a-z, 0-9, `_`, `.` and `-`, starting with a letter.
    metric: String,
    /// 1 to 1,000,000,000.
    quantity: i64,
}

const MAX_QUANTITY: i64 = 1_000_000_000;

fn metric_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        Err("must be 1 to 64 characters of a-z, 0-9, `_`, `.` and `-`, starting with a letter".into())
    } else if name == API_CALLS || name == PLATFORM_CALLS {
        Err(format!("`{name}` is counted by the gateway"))
    } else {
        Ok(())
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad =
        || ApiError::BadRequest("`Idempotency-Key` must be one value of 1 to 255 visible ASCII characters".into());
    if values.next().is_some() {
        return Err(bad());
    }
    let text = value.to_str().map_err(|_| bad())?;
    let text = text.trim_matches('"');
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

fn report_view(row: &UsageReportRow) -> Value {
    json!({"usage": {
        "metric": row.metric,
        "quantity": row.quantity,
        "period": row.period,
        "recorded_at": views::ts(row.created_at),
        "idempotency_key": if row.idempotency_key.starts_with(' ') { Value::Null } else { json!(row.idempotency_key) },
    }})
}

fn replayed(row: &UsageReportRow) -> Response {
    let mut response = (StatusCode::CREATED, ApiJson(report_view(row))).into_response();
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

async fn report(
    State(state): State<AppState>,
    p: Authenticated,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Report>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let mut checks = Checks::default();
    checks.check("metric", metric_name(&body.metric));
    if !(1..=MAX_QUANTITY).contains(&body.quantity) {
        checks.check("quantity", Err(format!("must be between 1 and {MAX_QUANTITY}")));
    }
    checks.finish()?;
    let tenant_id = p.tenant.id.clone();
    authorize(&state, &p, Action::UsageReport, Resource::Tenant(&p.tenant), None)?;
    let at = now();
    let row = UsageReportRow {
        tenant_id: tenant_id.clone(),
        // Without a key, a report of its own that nothing can repeat (a
        // client's key has no spaces).
        idempotency_key: key.clone().unwrap_or_else(|| format!(" {}", store::new_id())),
        metric: body.metric,
        quantity: body.quantity,
        period: month_of(at).0,
        reported_by: p.actor_id(),
        created_at: at,
    };
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    match store::insert_usage_report(&mut tx, &row).await {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            tx.rollback().await?;
            let mut tx = state.store.tenant_tx(&tenant_id).await?;
            let first =
                store::usage_report(&mut tx, &tenant_id, &row.idempotency_key).await?.ok_or(ApiError::NotFound)?;
            tx.commit().await?;
            if (first.metric.as_str(), first.quantity) != (row.metric.as_str(), row.quantity) {
                return Err(ApiError::field(
                    "Idempotency-Key",
                    "was used before for a different report: use a new key for a new report",
                ));
            }
            return Ok(replayed(&first));
        }
        Err(e) => return Err(e.into()),
    }
    store::add_usage(&mut tx, &tenant_id, &row.metric, &row.period, row.quantity).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(report_view(&row))).into_response())
}

fn used_against(used: i64, limit: Option<u64>) -> Value {
    json!({"used": used, "limit": limit.map_or(Value::Null, Value::from)})
}

async fn current(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let tenant = super::plans::entitled_target(&state, &p, &tenant_id, Action::UsageRead).await?;
    let at = now();
    let (period, ends) = month_of(at);
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    let counters = store::usage_in_period(&mut tx, &tenant_id, &period).await?;
    let members = store::count_members(&mut tx, &tenant_id).await?;
    let keys = store::count_live_api_keys(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    let e = &tenant.entitlements;
    let mut metrics = Map::new();
    metrics.insert(API_CALLS.into(), used_against(0, e.limit(LimitName::ApiCallsPerMonth, at)));
    for (metric, quantity) in counters {
        let limit = if metric == API_CALLS { e.limit(LimitName::ApiCallsPerMonth, at) } else { None };
        metrics.insert(metric, used_against(quantity, limit));
    }
    Ok(ApiJson(json!({
        "tenant_id": tenant_id,
        "plan": tenant.plan,
        "period": period,
        "period_ends_at": views::ts(ends),
        "metrics": metrics,
        "counts": {
            "members": used_against(members, e.limit(LimitName::MaxMembers, at)),
            "api_keys": used_against(keys, e.limit(LimitName::MaxApiKeys, at)),
        },
        "rate_limits": {
            "requests_per_second": e.limit(LimitName::RequestsPerSecond, at),
            "requests_per_second_per_key": e.limit(LimitName::RequestsPerSecondPerKey, at),
        },
    })))
}
