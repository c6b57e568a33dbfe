//! Groups of a tenant's members. Policies name a group by its id
//! (`principal in Group::"<id>"`), so renaming a group never changes a
//! decision. Every function takes a transaction opened for the tenant.

use sqlx::FromRow;

use super::{MemberRow, StoreError, Tx, new_id, now};

#[derive(Debug, Clone, FromRow)]
pub struct GroupRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// How many members the group has.
    pub member_count: i64,
}

macro_rules! group_select {
    () => {
        "SELECT g.id, g.tenant_id, g.name, g.description, g.created_at, g.updated_at, \
         (SELECT COUNT(*) FROM group_members gm WHERE gm.tenant_id = g.tenant_id AND gm.group_id = g.id) \
         AS member_count FROM tenant_groups g"
    };
}

pub async fn insert_group(tx: &mut Tx, tenant_id: &str, name: &str, description: &str) -> Result<GroupRow, StoreError> {
    let t = now();
    let row = GroupRow {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        name: name.to_owned(),
        description: description.to_owned(),
        created_at: t,
        updated_at: t,
        member_count: 0,
    };
    sqlx::query(
        "INSERT INTO tenant_groups (id, tenant_id, name, description, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&row.id)
    .bind(tenant_id)
    .bind(name)
    .bind(description)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(row)
}

pub async fn groups(tx: &mut Tx, tenant_id: &str) -> Result<Vec<GroupRow>, StoreError> {
    Ok(sqlx::query_as(concat!(group_select!(), " WHERE g.tenant_id = $1 ORDER BY g.name, g.id"))
        .bind(tenant_id)
        .fetch_all(&mut **tx)
        .await?)
}

pub async fn count_groups(tx: &mut Tx, tenant_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tenant_groups WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&mut **tx)
        .await?)
}

pub async fn group_by_id(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<Option<GroupRow>, StoreError> {
    Ok(sqlx::query_as(concat!(group_select!(), " WHERE g.tenant_id = $1 AND g.id = $2"))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn update_group(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    name: &str,
    description: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE tenant_groups SET name = $1, description = $2, updated_at = $3 WHERE tenant_id = $4 AND id = $5",
    )
    .bind(name)
    .bind(description)
    .bind(now())
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a group and its memberships; false when there was none.
pub async fn delete_group(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM tenant_groups WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Adds a member of the tenant to one of its groups; false when they were
/// already in it. The database refuses a user who is not a member.
pub async fn add_group_member(tx: &mut Tx, tenant_id: &str, group_id: &str, user_id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO group_members (tenant_id, group_id, user_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (group_id, user_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(user_id)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes a user out of a group; false when they were not in it.
pub async fn remove_group_member(
    tx: &mut Tx,
    tenant_id: &str,
    group_id: &str,
    user_id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2 AND user_id = $3")
        .bind(tenant_id)
        .bind(group_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A group's members, ordered by email.
pub async fn group_members(tx: &mut Tx, tenant_id: &str, group_id: &str) -> Result<Vec<MemberRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT m.user_id, u.email, u.name, m.role, gm.created_at FROM group_members gm \
         JOIN memberships m ON m.tenant_id = gm.tenant_id AND m.user_id = gm.user_id \
         JOIN users u ON u.id = gm.user_id \
         WHERE gm.tenant_id = $1 AND gm.group_id = $2 ORDER BY u.email",
    )
    .bind(tenant_id)
    .bind(group_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// The ids of the groups a member belongs to, in a stable order.
pub async fn group_ids_of_member(tx: &mut Tx, tenant_id: &str, user_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT group_id FROM group_members WHERE tenant_id = $1 AND user_id = $2 ORDER BY group_id")
        .bind(tenant_id)
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await?)
}
