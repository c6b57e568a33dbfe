//! Service accounts, API keys (stored as prefix + SHA-256 of the secret) and
//! the public halves of token signing keys.

use sqlx::FromRow;

use super::{StoreError, Tx, new_id, now};

#[derive(Debug, Clone, FromRow)]
pub struct ServiceAccountRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
}

pub async fn insert_service_account(
    tx: &mut Tx,
    tenant_id: &str,
    name: &str,
    role: &str,
    created_by: &str,
) -> Result<ServiceAccountRow, StoreError> {
    let row = ServiceAccountRow {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        name: name.to_owned(),
        role: role.to_owned(),
        created_at: now(),
    };
    sqlx::query(
        "INSERT INTO service_accounts (id, tenant_id, name, role, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.name)
    .bind(&row.role)
    .bind(created_by)
    .bind(row.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(row)
}

pub async fn service_accounts(tx: &mut Tx, tenant_id: &str) -> Result<Vec<ServiceAccountRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, name, role, created_at FROM service_accounts WHERE tenant_id = $1 ORDER BY name",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?)
}

pub async fn service_account(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<Option<ServiceAccountRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, name, role, created_at FROM service_accounts WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?)
}

#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant_id: String,
    pub prefix: String,
    pub secret_hash: String,
    pub name: String,
    pub scopes: String,
    pub owner_user_id: Option<String>,
    pub owner_service_account_id: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

macro_rules! key_columns {
    () => {
        "id, tenant_id, prefix, secret_hash, name, scopes, owner_user_id, owner_service_account_id, \
                           created_at, expires_at, last_used_at, revoked_at"
    };
}

pub struct NewApiKey<'a> {
    pub tenant_id: &'a str,
    pub prefix: &'a str,
    pub secret_hash: &'a str,
    pub name: &'a str,
    pub scopes: &'a [String],
    pub owner_user_id: Option<&'a str>,
    pub owner_service_account_id: Option<&'a str>,
    pub created_by: &'a str,
    pub expires_at: Option<i64>,
}

pub async fn insert_api_key(tx: &mut Tx, new: &NewApiKey<'_>) -> Result<ApiKeyRow, StoreError> {
    let row = ApiKeyRow {
        id: new_id(),
        tenant_id: new.tenant_id.to_owned(),
        prefix: new.prefix.to_owned(),
        secret_hash: new.secret_hash.to_owned(),
        name: new.name.to_owned(),
        scopes: serde_json::to_string(new.scopes).map_err(|_| StoreError::Corrupt("api_keys.scopes"))?,
        owner_user_id: new.owner_user_id.map(str::to_owned),
        owner_service_account_id: new.owner_service_account_id.map(str::to_owned),
        created_at: now(),
        expires_at: new.expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, prefix, secret_hash, name, scopes, owner_user_id, owner_service_account_id, \
         created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.prefix)
    .bind(&row.secret_hash)
    .bind(&row.name)
    .bind(&row.scopes)
    .bind(&row.owner_user_id)
    .bind(&row.owner_service_account_id)
    .bind(new.created_by)
    .bind(row.created_at)
    .bind(row.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(row)
}

pub async fn api_keys(tx: &mut Tx, tenant_id: &str) -> Result<Vec<ApiKeyRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?)
}

pub async fn api_key(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// The key with `prefix` (needs a key-prefix transaction on PostgreSQL).
pub async fn api_key_by_prefix(tx: &mut Tx, prefix: &str) -> Result<Option<ApiKeyRow>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE prefix = $1"))
        .bind(prefix)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn touch_api_key(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(now())
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn revoke_api_key(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now())
            .bind(tenant_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, Clone, FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    pub public_key: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

pub async fn signing_keys(tx: &mut Tx) -> Result<Vec<SigningKeyRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kid, algorithm, public_key, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC",
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Publishes a new signing key. Keys other instances sign with stay as they
/// are: each instance retires only its own (see [`retire_signing_keys`]).
pub async fn add_signing_key(tx: &mut Tx, kid: &str, algorithm: &str, public_key: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO signing_keys (kid, algorithm, public_key, created_at) VALUES ($1, $2, $3, $4)")
        .bind(kid)
        .bind(algorithm)
        .bind(public_key)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Retires the current keys among `kids`: they sign nothing more and stay
/// published until the tokens they signed have expired.
pub async fn retire_signing_keys(tx: &mut Tx, kids: &[String]) -> Result<(), StoreError> {
    let t = now();
    for kid in kids {
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL")
            .bind(t)
            .bind(kid)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
