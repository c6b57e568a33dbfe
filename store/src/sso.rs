//! Single sign-on's rows: a tenant's identity-provider connections (the
//! client secret stored sealed by the caller), the email domains each
//! claims, the provider subjects linked to accounts, and the sign-ins under
//! way. Every function takes a transaction opened for the tenant, but for
//! the look-ups by a domain or a state's hash, which find the tenant and
//! run in a transaction bound to that key (`Store::key_prefix_read_tx`).

use sqlx::FromRow;

use super::{StoreError, Tx, new_id, now};

#[derive(Debug, Clone, FromRow)]
pub struct SsoConnectionRow {
    pub id: String,
    pub tenant_id: String,
    pub kind: String,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    /// Sealed with the platform's secrets key.
    pub client_secret: String,
    /// Space-separated scopes asked for besides `openid`.
    pub scopes: String,
    /// JSON: which claim holds the email, its verification and the name.
    pub claims: String,
    pub default_role: String,
    pub allow_linking: i64,
    pub enabled: i64,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// SAML: the identity provider's metadata (XML).
    pub idp_metadata: Option<String>,
}

const CONNECTION_COLUMNS: &str = "id, tenant_id, kind, name, issuer, client_id, client_secret, scopes, claims, \
     default_role, allow_linking, enabled, created_by, created_at, updated_at, idp_metadata";

/// A connection's settings, for inserts and updates.
pub struct SsoConnectionFields<'a> {
    pub name: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub scopes: &'a str,
    pub claims: &'a str,
    pub default_role: &'a str,
    pub allow_linking: bool,
    pub enabled: bool,
    pub idp_metadata: Option<&'a str>,
}

pub async fn insert_sso_connection(
    tx: &mut Tx,
    tenant_id: &str,
    kind: &str,
    fields: &SsoConnectionFields<'_>,
    created_by: &str,
) -> Result<SsoConnectionRow, StoreError> {
    let id = new_id();
    let t = now();
    sqlx::query(
        "INSERT INTO sso_connections (id, tenant_id, kind, name, issuer, client_id, client_secret, scopes, claims, \
         default_role, allow_linking, enabled, created_by, created_at, updated_at, idp_metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(kind)
    .bind(fields.name)
    .bind(fields.issuer)
    .bind(fields.client_id)
    .bind(fields.client_secret)
    .bind(fields.scopes)
    .bind(fields.claims)
    .bind(fields.default_role)
    .bind(i64::from(fields.allow_linking))
    .bind(i64::from(fields.enabled))
    .bind(created_by)
    .bind(t)
    .bind(fields.idp_metadata)
    .execute(&mut **tx)
    .await?;
    sso_connection(tx, tenant_id, &id).await?.ok_or(StoreError::Corrupt("sso_connections"))
}

/// Replaces a connection's settings; `false` when it does not exist.
pub async fn update_sso_connection(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    fields: &SsoConnectionFields<'_>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE sso_connections SET name = $1, issuer = $2, client_id = $3, client_secret = $4, scopes = $5, \
         claims = $6, default_role = $7, allow_linking = $8, enabled = $9, updated_at = $10, idp_metadata = $11 \
         WHERE tenant_id = $12 AND id = $13",
    )
    .bind(fields.name)
    .bind(fields.issuer)
    .bind(fields.client_id)
    .bind(fields.client_secret)
    .bind(fields.scopes)
    .bind(fields.claims)
    .bind(fields.default_role)
    .bind(i64::from(fields.allow_linking))
    .bind(i64::from(fields.enabled))
    .bind(now())
    .bind(fields.idp_metadata)
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn sso_connection(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<Option<SsoConnectionRow>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CONNECTION_COLUMNS} FROM sso_connections WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The tenant's connections, oldest first.
pub async fn sso_connections(tx: &mut Tx, tenant_id: &str) -> Result<Vec<SsoConnectionRow>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CONNECTION_COLUMNS} FROM sso_connections WHERE tenant_id = $1 ORDER BY created_at, id"
    )))
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?)
}

pub async fn delete_sso_connection(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
    // Children first: SQLite enforces the cascade only with foreign keys on.
    for table in ["sso_domains", "sso_identities", "sso_logins", "sso_assertions"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE tenant_id = $1 AND connection_id = $2")))
            .bind(tenant_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    let done = sqlx::query("DELETE FROM sso_connections WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The domains the tenant's connections claim: (connection id, domain).
pub async fn sso_domains_of_tenant(tx: &mut Tx, tenant_id: &str) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as("SELECT connection_id, domain FROM sso_domains WHERE tenant_id = $1 ORDER BY domain")
        .bind(tenant_id)
        .fetch_all(&mut **tx)
        .await?)
}

/// Makes `domains` the ones connection `id` claims. A domain another
/// connection claims is a unique violation.
pub async fn replace_sso_domains(tx: &mut Tx, tenant_id: &str, id: &str, domains: &[String]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sso_domains WHERE tenant_id = $1 AND connection_id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    for domain in domains {
        sqlx::query("INSERT INTO sso_domains (domain, tenant_id, connection_id) VALUES ($1, $2, $3)")
            .bind(domain)
            .bind(tenant_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Who claims `domain`: (tenant id, connection id). Run in a transaction
/// bound to the domain as its look-up key.
pub async fn sso_domain(tx: &mut Tx, domain: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(sqlx::query_as("SELECT tenant_id, connection_id FROM sso_domains WHERE domain = $1")
        .bind(domain)
        .fetch_optional(&mut **tx)
        .await?)
}

/// The account linked to the provider's `subject`, and when it last signed in.
pub async fn sso_identity(
    tx: &mut Tx,
    tenant_id: &str,
    connection_id: &str,
    subject: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT user_id FROM sso_identities WHERE tenant_id = $1 AND connection_id = $2 AND subject = $3",
    )
    .bind(tenant_id)
    .bind(connection_id)
    .bind(subject)
    .fetch_optional(&mut **tx)
    .await?)
}

pub async fn insert_sso_identity(
    tx: &mut Tx,
    tenant_id: &str,
    connection_id: &str,
    subject: &str,
    user_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sso_identities (connection_id, subject, tenant_id, user_id, created_at, last_login_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(connection_id)
    .bind(subject)
    .bind(tenant_id)
    .bind(user_id)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn touch_sso_identity(
    tx: &mut Tx,
    tenant_id: &str,
    connection_id: &str,
    subject: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sso_identities SET last_login_at = $1 WHERE tenant_id = $2 AND connection_id = $3 AND subject = $4",
    )
    .bind(now())
    .bind(tenant_id)
    .bind(connection_id)
    .bind(subject)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct SsoLoginRow {
    pub id: String,
    pub connection_id: String,
    pub tenant_id: String,
    pub browser: String,
    pub nonce: String,
    pub verifier: String,
    pub return_to: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

const LOGIN_COLUMNS: &str =
    "id, connection_id, tenant_id, browser, nonce, verifier, return_to, created_at, expires_at, used_at";

/// A sign-in under way, keyed by the hash of its state.
pub struct NewSsoLogin<'a> {
    pub id: &'a str,
    pub connection_id: &'a str,
    pub tenant_id: &'a str,
    pub browser: &'a str,
    pub nonce: &'a str,
    pub verifier: &'a str,
    pub return_to: Option<&'a str>,
    pub expires_at: i64,
}

/// Records a sign-in under way, dropping the tenant's expired ones.
pub async fn insert_sso_login(tx: &mut Tx, new: &NewSsoLogin<'_>) -> Result<(), StoreError> {
    let t = now();
    sqlx::query("DELETE FROM sso_logins WHERE tenant_id = $1 AND expires_at < $2")
        .bind(new.tenant_id)
        .bind(t)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO sso_logins (id, connection_id, tenant_id, browser, nonce, verifier, return_to, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new.id)
    .bind(new.connection_id)
    .bind(new.tenant_id)
    .bind(new.browser)
    .bind(new.nonce)
    .bind(new.verifier)
    .bind(new.return_to)
    .bind(t)
    .bind(new.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The sign-in whose state hashes to `id`, used or not. Run in a
/// transaction bound to `id` as its look-up key.
pub async fn sso_login(tx: &mut Tx, id: &str) -> Result<Option<SsoLoginRow>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {LOGIN_COLUMNS} FROM sso_logins WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Marks the sign-in used, once: `false` when it was used already or has
/// expired (so two callbacks with one state cannot both proceed).
pub async fn take_sso_login(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
    let t = now();
    let done = sqlx::query(
        "UPDATE sso_logins SET used_at = $1 WHERE tenant_id = $2 AND id = $3 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(t)
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that the assertion with (hashed) id `id` was accepted, until
/// `expires_at`: `false` when it was accepted before (a replay). Drops the
/// tenant's expired records first.
pub async fn record_sso_assertion(
    tx: &mut Tx,
    tenant_id: &str,
    connection_id: &str,
    id: &str,
    expires_at: i64,
) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM sso_assertions WHERE tenant_id = $1 AND expires_at < $2")
        .bind(tenant_id)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query(
        "INSERT INTO sso_assertions (id, tenant_id, connection_id, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(connection_id)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the password sessions (those not signed in through SSO), in every
/// tenant, of the members of `tenant_id` whose email is of a domain its
/// connections claim, owners aside: what "SSO required" closes.
pub async fn revoke_password_sessions_of_claimed(tx: &mut Tx, tenant_id: &str) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = 'sso_required' \
         WHERE revoked_at IS NULL AND sso_connection_id IS NULL AND user_id IN ( \
           SELECT m.user_id FROM memberships m JOIN users u ON u.id = m.user_id \
           WHERE m.tenant_id = $2 AND m.role <> 'owner' AND EXISTS ( \
             SELECT 1 FROM sso_domains d WHERE d.tenant_id = $2 AND u.email LIKE '%@' || d.domain))",
    )
    .bind(now())
    .bind(tenant_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}
