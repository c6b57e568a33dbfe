//! The plan catalog as seeded, entitlement overrides, usage counters and
//! products' usage reports, and the counts that plan limits bound. Every
//! function about a tenant takes a transaction opened for it.

use sqlx::FromRow;

use super::{StoreError, Tx, now};

/// A platform administrator's grant to one tenant on top of its plan.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OverrideRow {
    pub tenant_id: String,
    pub name: String,
    /// `feature` or `limit`.
    pub kind: String,
    /// A feature: 1 (on) or 0 (off); a limit: its value, `None` unlimited.
    pub value: Option<i64>,
    pub expires_at: Option<i64>,
    pub granted_by: String,
    pub created_at: i64,
}

pub async fn entitlement_overrides(tx: &mut Tx, tenant_id: &str) -> Result<Vec<OverrideRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, name, kind, value, expires_at, granted_by, created_at \
         FROM entitlement_overrides WHERE tenant_id = $1 ORDER BY name",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Replaces the tenant's overrides with `rows`.
pub async fn replace_entitlement_overrides(
    tx: &mut Tx,
    tenant_id: &str,
    rows: &[OverrideRow],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM entitlement_overrides WHERE tenant_id = $1").bind(tenant_id).execute(&mut **tx).await?;
    for row in rows {
        sqlx::query(
            "INSERT INTO entitlement_overrides (tenant_id, name, kind, value, expires_at, granted_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant_id)
        .bind(&row.name)
        .bind(&row.kind)
        .bind(row.value)
        .bind(row.expires_at)
        .bind(&row.granted_by)
        .bind(row.created_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Adds `quantity` to the tenant's `metric` in `period` and returns the new
/// total.
pub async fn add_usage(
    tx: &mut Tx,
    tenant_id: &str,
    metric: &str,
    period: &str,
    quantity: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO usage_counters (tenant_id, metric, period, quantity, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, metric, period) \
         DO UPDATE SET quantity = usage_counters.quantity + excluded.quantity, updated_at = excluded.updated_at \
         RETURNING quantity",
    )
    .bind(tenant_id)
    .bind(metric)
    .bind(period)
    .bind(quantity)
    .bind(now())
    .fetch_one(&mut **tx)
    .await?)
}

/// The tenant's total of `metric` in `period` (0 when nothing was counted).
pub async fn usage_of(tx: &mut Tx, tenant_id: &str, metric: &str, period: &str) -> Result<i64, StoreError> {
    let total: Option<i64> =
        sqlx::query_scalar("SELECT quantity FROM usage_counters WHERE tenant_id = $1 AND metric = $2 AND period = $3")
            .bind(tenant_id)
            .bind(metric)
            .bind(period)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(total.unwrap_or(0))
}

/// Every metric of the tenant in `period`, by name.
pub async fn usage_in_period(tx: &mut Tx, tenant_id: &str, period: &str) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT metric, quantity FROM usage_counters WHERE tenant_id = $1 AND period = $2 ORDER BY metric",
    )
    .bind(tenant_id)
    .bind(period)
    .fetch_all(&mut **tx)
    .await?)
}

/// A product's usage report, kept by its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct UsageReportRow {
    pub tenant_id: String,
    pub idempotency_key: String,
    pub metric: String,
    pub quantity: i64,
    pub period: String,
    pub reported_by: String,
    pub created_at: i64,
}

pub async fn usage_report(tx: &mut Tx, tenant_id: &str, key: &str) -> Result<Option<UsageReportRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, idempotency_key, metric, quantity, period, reported_by, created_at \
         FROM usage_reports WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Records a report under its idempotency key; a second report with the same
/// key fails with a unique violation (the caller answers from the first).
pub async fn insert_usage_report(tx: &mut Tx, row: &UsageReportRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO usage_reports (tenant_id, idempotency_key, metric, quantity, period, reported_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&row.tenant_id)
    .bind(&row.idempotency_key)
    .bind(&row.metric)
    .bind(row.quantity)
    .bind(&row.period)
    .bind(&row.reported_by)
    .bind(row.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many members the tenant has.
pub async fn count_members(tx: &mut Tx, tenant_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&mut **tx)
        .await?)
}

/// How many of the tenant's API keys still work (neither revoked nor expired).
pub async fn count_live_api_keys(tx: &mut Tx, tenant_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(tenant_id)
    .bind(now())
    .fetch_one(&mut **tx)
    .await?)
}

/// A plan of the catalog as stored (see migration 0014).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PlanRow {
    pub name: String,
    pub display_name: String,
    pub price_minor: i64,
    pub currency: String,
    pub period: String,
    /// JSON array of feature names.
    pub features: String,
    /// JSON object of limit names to values (null: unlimited).
    pub limits: String,
}

/// The stored catalog, by name.
pub async fn plans(tx: &mut Tx) -> Result<Vec<PlanRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT name, display_name, price_minor, currency, period, features, limits FROM plans ORDER BY name",
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Makes `rows` the stored catalog, whole.
pub async fn replace_plans(tx: &mut Tx, rows: &[PlanRow]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM plans").execute(&mut **tx).await?;
    let t = now();
    for row in rows {
        sqlx::query(
            "INSERT INTO plans (name, display_name, price_minor, currency, period, features, limits, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&row.name)
        .bind(&row.display_name)
        .bind(row.price_minor)
        .bind(&row.currency)
        .bind(&row.period)
        .bind(&row.features)
        .bind(&row.limits)
        .bind(t)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
