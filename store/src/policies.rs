//! Tenants' policy layers: numbered versions, one of them active.

use sqlx::FromRow;

use super::{StoreError, Tx, new_id, now};

#[derive(Debug, Clone, FromRow)]
pub struct PolicyVersionRow {
    pub id: String,
    pub tenant_id: String,
    pub version: i64,
    pub source: String,
    pub description: String,
    pub status: String,
    pub created_by: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
}

macro_rules! version_columns {
    () => {
        "id, tenant_id, version, source, description, status, created_by, created_at, activated_at"
    };
}

/// Stores a new draft version, numbered after the last.
pub async fn insert_policy_version(
    tx: &mut Tx,
    tenant_id: &str,
    source: &str,
    description: &str,
    created_by: &str,
) -> Result<PolicyVersionRow, StoreError> {
    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM tenant_policies WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&mut **tx)
        .await?;
    let row = PolicyVersionRow {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        version: last.unwrap_or(0) + 1,
        source: source.to_owned(),
        description: description.to_owned(),
        status: "draft".into(),
        created_by: created_by.to_owned(),
        created_at: now(),
        activated_at: None,
    };
    sqlx::query(
        "INSERT INTO tenant_policies (id, tenant_id, version, source, description, status, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'draft', $6, $7)",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(row.version)
    .bind(&row.source)
    .bind(&row.description)
    .bind(&row.created_by)
    .bind(row.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(row)
}

pub async fn policy_versions(tx: &mut Tx, tenant_id: &str) -> Result<Vec<PolicyVersionRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        version_columns!(),
        " FROM tenant_policies WHERE tenant_id = $1 ORDER BY version DESC"
    ))
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?)
}

pub async fn policy_version(
    tx: &mut Tx,
    tenant_id: &str,
    version: i64,
) -> Result<Option<PolicyVersionRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        version_columns!(),
        " FROM tenant_policies WHERE tenant_id = $1 AND version = $2"
    ))
    .bind(tenant_id)
    .bind(version)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The active version of a tenant's layer, if any.
pub async fn active_policy(tx: &mut Tx, tenant_id: &str) -> Result<Option<PolicyVersionRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        version_columns!(),
        " FROM tenant_policies WHERE tenant_id = $1 AND status = 'active'"
    ))
    .bind(tenant_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Makes `version` the active one and retires the one it replaces.
pub async fn activate_policy(tx: &mut Tx, tenant_id: &str, version: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenant_policies SET status = 'retired' WHERE tenant_id = $1 AND status = 'active'")
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE tenant_policies SET status = 'active', activated_at = $1 WHERE tenant_id = $2 AND version = $3",
    )
    .bind(now())
    .bind(tenant_id)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Turns the layer off: no version active.
pub async fn deactivate_policies(tx: &mut Tx, tenant_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenant_policies SET status = 'retired' WHERE tenant_id = $1 AND status = 'active'")
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The version of the tenant's active layer, if one is active.
pub async fn active_policy_version(tx: &mut Tx, tenant_id: &str) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar("SELECT version FROM tenant_policies WHERE tenant_id = $1 AND status = 'active'")
        .bind(tenant_id)
        .fetch_optional(&mut **tx)
        .await?)
}
