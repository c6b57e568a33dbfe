//! Tenants, memberships, custom roles and invitations. Every function that
//! touches tenant data takes a transaction opened for that tenant.

use sqlx::FromRow;

use super::{StoreError, Tx, new_id, now};

#[derive(Debug, Clone, FromRow)]
pub struct TenantRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub status: String,
    /// The plan the tenant is on, as policies and entitlements see it.
    pub plan: String,
    pub settings: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub status_changed_at: i64,
}

/// The plan of a new tenant.
pub const DEFAULT_PLAN: &str = "free";

macro_rules! tenant_columns {
    () => {
        "id, slug, name, status, plan, settings, created_at, updated_at, status_changed_at"
    };
}

/// Creates a tenant with a free slug derived from `base_slug` (suffixed
/// `-2`, `-3`, ... when taken).
pub async fn insert_tenant(tx: &mut Tx, name: &str, base_slug: &str) -> Result<TenantRow, StoreError> {
    let id = new_id();
    let t = now();
    let taken: Vec<String> = sqlx::query_scalar("SELECT slug FROM tenants WHERE slug = $1 OR slug LIKE $2")
        .bind(base_slug)
        .bind(format!("{base_slug}-%"))
        .fetch_all(&mut **tx)
        .await?;
    let slug = (1..)
        .map(|n| if n == 1 { base_slug.to_owned() } else { format!("{base_slug}-{n}") })
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| format!("{base_slug}-{id}"));
    sqlx::query(
        "INSERT INTO tenants (id, slug, name, status, plan, settings, created_at, updated_at, status_changed_at) \
         VALUES ($1, $2, $3, 'active', $4, '{}', $5, $5, $5)",
    )
    .bind(&id)
    .bind(&slug)
    .bind(name)
    .bind(DEFAULT_PLAN)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(TenantRow {
        id,
        slug,
        name: name.to_owned(),
        status: "active".into(),
        plan: DEFAULT_PLAN.into(),
        settings: "{}".into(),
        created_at: t,
        updated_at: t,
        status_changed_at: t,
    })
}

pub async fn tenant_by_id(tx: &mut Tx, id: &str) -> Result<Option<TenantRow>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn tenant_by_slug(tx: &mut Tx, slug: &str) -> Result<Option<TenantRow>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE slug = $1"))
        .bind(slug)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn update_tenant(tx: &mut Tx, id: &str, name: &str, settings: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenants SET name = $1, settings = $2, updated_at = $3 WHERE id = $4")
        .bind(name)
        .bind(settings)
        .bind(now())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn set_tenant_status(tx: &mut Tx, id: &str, status: &str) -> Result<(), StoreError> {
    let t = now();
    sqlx::query("UPDATE tenants SET status = $1, status_changed_at = $2, updated_at = $2 WHERE id = $3")
        .bind(status)
        .bind(t)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn set_tenant_plan(tx: &mut Tx, id: &str, plan: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenants SET plan = $1, updated_at = $2 WHERE id = $3")
        .bind(plan)
        .bind(now())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Serializes membership changes of one tenant: takes the tenant row's write
/// lock for the rest of the transaction (a row lock on PostgreSQL, the
/// database write lock on SQLite), so "last owner" checks cannot race.
pub async fn lock_tenant(tx: &mut Tx, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenants SET updated_at = updated_at WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct MembershipRow {
    pub tenant_id: String,
    pub user_id: String,
    pub role: String,
    pub created_at: i64,
}

pub async fn insert_membership(tx: &mut Tx, tenant_id: &str, user_id: &str, role: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant_id)
        .bind(user_id)
        .bind(role)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn membership(tx: &mut Tx, tenant_id: &str, user_id: &str) -> Result<Option<MembershipRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, user_id, role, created_at FROM memberships WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The tenants a user belongs to, with the role in each (needs a user transaction).
pub async fn tenants_of_user(tx: &mut Tx, user_id: &str) -> Result<Vec<(TenantRow, String)>, StoreError> {
    let memberships: Vec<MembershipRow> = sqlx::query_as(
        "SELECT tenant_id, user_id, role, created_at FROM memberships WHERE user_id = $1 ORDER BY created_at, tenant_id",
    )
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(memberships.len());
    for m in memberships {
        if let Some(tenant) = tenant_by_id(tx, &m.tenant_id).await? {
            out.push((tenant, m.role));
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, FromRow)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
}

/// One page of a tenant's members ordered by email, after `after_email`,
/// optionally filtered by a case-insensitive substring of email or name.
pub async fn members(
    tx: &mut Tx,
    tenant_id: &str,
    search: Option<&str>,
    after_email: Option<&str>,
    limit: i64,
) -> Result<Vec<MemberRow>, StoreError> {
    let pattern = search.map(|s| format!("%{}%", escape_like(&s.to_lowercase())));
    Ok(sqlx::query_as(
        "SELECT m.user_id, u.email, u.name, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.tenant_id = $1 \
           AND ($2 IS NULL OR LOWER(u.email) LIKE $2 ESCAPE '\\' OR LOWER(u.name) LIKE $2 ESCAPE '\\') \
           AND ($3 IS NULL OR u.email > $3) \
         ORDER BY u.email LIMIT $4",
    )
    .bind(tenant_id)
    .bind(pattern)
    .bind(after_email)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

pub async fn member(tx: &mut Tx, tenant_id: &str, user_id: &str) -> Result<Option<MemberRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT m.user_id, u.email, u.name, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.tenant_id = $1 AND m.user_id = $2",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?)
}

pub async fn count_role(tx: &mut Tx, tenant_id: &str, role: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE tenant_id = $1 AND role = $2")
        .bind(tenant_id)
        .bind(role)
        .fetch_one(&mut **tx)
        .await?)
}

pub async fn set_member_role(tx: &mut Tx, tenant_id: &str, user_id: &str, role: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE memberships SET role = $1 WHERE tenant_id = $2 AND user_id = $3")
        .bind(role)
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn delete_membership(tx: &mut Tx, tenant_id: &str, user_id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct CustomRoleRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub base_role: String,
    pub description: String,
    pub created_at: i64,
}

pub async fn insert_role(
    tx: &mut Tx,
    tenant_id: &str,
    name: &str,
    base_role: &str,
    description: &str,
) -> Result<CustomRoleRow, StoreError> {
    let row = CustomRoleRow {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        name: name.to_owned(),
        base_role: base_role.to_owned(),
        description: description.to_owned(),
        created_at: now(),
    };
    sqlx::query(
        "INSERT INTO roles (id, tenant_id, name, base_role, description, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.name)
    .bind(&row.base_role)
    .bind(&row.description)
    .bind(row.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(row)
}

pub async fn roles(tx: &mut Tx, tenant_id: &str) -> Result<Vec<CustomRoleRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, name, base_role, description, created_at FROM roles WHERE tenant_id = $1 ORDER BY name",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?)
}

pub async fn role_by_name(tx: &mut Tx, tenant_id: &str, name: &str) -> Result<Option<CustomRoleRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, name, base_role, description, created_at FROM roles WHERE tenant_id = $1 AND name = $2",
    )
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?)
}

#[derive(Debug, Clone, FromRow)]
pub struct InvitationRow {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub role: String,
    pub invited_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

macro_rules! invitation_columns {
    () => {
        "id, tenant_id, email, role, invited_by, created_at, expires_at, accepted_at, revoked_at"
    };
}

pub async fn insert_invitation(
    tx: &mut Tx,
    tenant_id: &str,
    email: &str,
    role: &str,
    token_hash: &str,
    invited_by: &str,
    expires_at: i64,
) -> Result<InvitationRow, StoreError> {
    let row = InvitationRow {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        email: email.to_owned(),
        role: role.to_owned(),
        invited_by: Some(invited_by.to_owned()),
        created_at: now(),
        expires_at,
        accepted_at: None,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO invitations (id, tenant_id, email, role, token_hash, invited_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.email)
    .bind(&row.role)
    .bind(token_hash)
    .bind(invited_by)
    .bind(row.created_at)
    .bind(row.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(row)
}

pub async fn invitations(tx: &mut Tx, tenant_id: &str) -> Result<Vec<InvitationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        invitation_columns!(),
        " FROM invitations WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?)
}

pub async fn invitation_by_id(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<Option<InvitationRow>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", invitation_columns!(), " FROM invitations WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn invitation_by_token(
    tx: &mut Tx,
    tenant_id: &str,
    token_hash: &str,
) -> Result<Option<InvitationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        invitation_columns!(),
        " FROM invitations WHERE tenant_id = $1 AND token_hash = $2"
    ))
    .bind(tenant_id)
    .bind(token_hash)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Marks an invitation accepted; false when it was already used or revoked.
pub async fn accept_invitation(tx: &mut Tx, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE invitations SET accepted_at = $1 WHERE id = $2 AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn revoke_invitation(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE invitations SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
