//! SCIM provisioning's rows: a tenant's SCIM tokens and settings, its SCIM
//! users (each the tenant's record of a person, linked to the account that
//! is its member) with the multi-valued attributes filters reach into, and
//! its SCIM groups' members. Lists are filtered by conditions planned from
//! SCIM filters against [`USER_COLUMNS`]-style mappings here, so a tenant's
//! users are never loaded to be filtered. Every function takes a
//! transaction opened for the tenant (token look-up by prefix aside).

use sqlx::FromRow;
use tollgate_scim::AttrPath;
use tollgate_scim::query::{Bind, Column, Condition, Dialect, Mapping, MultiValued};
use tollgate_scim::schema::{ENTERPRISE_USER_SCHEMA, Kind, USER};

use super::{DbKind, StoreError, Tx, new_id, now};

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn dialect(kind: DbKind) -> Dialect {
    match kind {
        DbKind::Sqlite => Dialect::Sqlite,
        DbKind::Postgres => Dialect::Postgres,
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct ScimTokenRow {
    pub id: String,
    pub tenant_id: String,
    pub prefix: String,
    pub secret_hash: String,
    pub name: String,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

macro_rules! token_columns {
    () => {
        "id, tenant_id, prefix, secret_hash, name, created_by, created_at, last_used_at, revoked_at"
    };
}

pub async fn insert_scim_token(
    tx: &mut Tx,
    tenant_id: &str,
    name: &str,
    prefix: &str,
    secret_hash: &str,
    created_by: &str,
) -> Result<ScimTokenRow, StoreError> {
    let row = ScimTokenRow {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        prefix: prefix.to_owned(),
        secret_hash: secret_hash.to_owned(),
        name: name.to_owned(),
        created_by: Some(created_by.to_owned()),
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO scim_tokens (id, tenant_id, prefix, secret_hash, name, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&row.id)
    .bind(tenant_id)
    .bind(prefix)
    .bind(secret_hash)
    .bind(name)
    .bind(created_by)
    .bind(row.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(row)
}

pub async fn scim_tokens(tx: &mut Tx, tenant_id: &str) -> Result<Vec<ScimTokenRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM scim_tokens WHERE tenant_id = $1 ORDER BY created_at, id"
    ))
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?)
}

pub async fn count_live_scim_tokens(tx: &mut Tx, tenant_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM scim_tokens WHERE tenant_id = $1 AND revoked_at IS NULL")
        .bind(tenant_id)
        .fetch_one(&mut **tx)
        .await?)
}

/// The token with `prefix` (in a transaction from `key_prefix_read_tx`).
pub async fn scim_token_by_prefix(tx: &mut Tx, prefix: &str) -> Result<Option<ScimTokenRow>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", token_columns!(), " FROM scim_tokens WHERE prefix = $1"))
        .bind(prefix)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Revokes a live token; false when there was none.
pub async fn revoke_scim_token(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE scim_tokens SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now())
            .bind(tenant_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a use, at most once a minute per token.
pub async fn touch_scim_token(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<(), StoreError> {
    let t = now();
    sqlx::query(
        "UPDATE scim_tokens SET last_used_at = $1 WHERE tenant_id = $2 AND id = $3 \
         AND (last_used_at IS NULL OR last_used_at < $4)",
    )
    .bind(t)
    .bind(tenant_id)
    .bind(id)
    .bind(t - 60)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct ScimSettingsRow {
    pub default_role: String,
    /// JSON: lower-cased group display name -> role name.
    pub group_roles: String,
    pub updated_at: i64,
}

pub async fn scim_settings(tx: &mut Tx, tenant_id: &str) -> Result<Option<ScimSettingsRow>, StoreError> {
    Ok(sqlx::query_as("SELECT default_role, group_roles, updated_at FROM scim_settings WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn save_scim_settings(
    tx: &mut Tx,
    tenant_id: &str,
    default_role: &str,
    group_roles: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO scim_settings (tenant_id, default_role, group_roles, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET default_role = $2, group_roles = $3, updated_at = $4",
    )
    .bind(tenant_id)
    .bind(default_role)
    .bind(group_roles)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct ScimUserRow {
    pub id: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub email: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: i64,
    pub resource: String,
    pub version: i64,
    pub created_ms: i64,
    pub modified_ms: i64,
}

macro_rules! scim_user_columns {
    () => {
        "u.id, u.tenant_id, u.user_id, u.email, u.user_name, u.external_id, u.active, u.resource, u.version, \
         u.created_ms, u.modified_ms"
    };
}

/// One element of a multi-valued attribute, as filters see it.
#[derive(Debug, Clone)]
pub struct ScimValue {
    pub attr: &'static str,
    pub value: String,
    pub type_: Option<String>,
    pub display: Option<String>,
    pub primary: bool,
}

/// What a SCIM user's row holds besides its ids.
#[derive(Debug, Clone)]
pub struct ScimUserFields {
    /// The address of the linked account (the primary email).
    pub email: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub active: bool,
    /// The stored attributes, canonical JSON.
    pub resource: String,
    pub values: Vec<ScimValue>,
}

fn lower(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| s.to_lowercase())
}

/// Writes a user's multi-valued elements, replacing what it had unless `fresh`.
async fn write_values(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    values: &[ScimValue],
    fresh: bool,
) -> Result<(), StoreError> {
    if !fresh {
        sqlx::query("DELETE FROM scim_user_values WHERE tenant_id = $1 AND scim_user_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    for (position, v) in values.iter().enumerate() {
        sqlx::query(
            "INSERT INTO scim_user_values (tenant_id, scim_user_id, attr, position, value_lower, type_lower, \
             display_lower, is_primary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(v.attr)
        .bind(position as i64)
        .bind(v.value.to_lowercase())
        .bind(lower(&v.type_))
        .bind(lower(&v.display))
        .bind(i64::from(v.primary))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub async fn insert_scim_user(
    tx: &mut Tx,
    tenant_id: &str,
    user_id: Option<&str>,
    fields: &ScimUserFields,
) -> Result<ScimUserRow, StoreError> {
    let t = now_ms();
    let id = new_id();
    sqlx::query(
        "INSERT INTO scim_users (id, tenant_id, user_id, email, user_name, user_name_lower, external_id, \
         display_name_lower, given_name_lower, family_name_lower, active, resource, version, created_ms, modified_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $13)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(user_id)
    .bind(&fields.email)
    .bind(&fields.user_name)
    .bind(fields.user_name.to_lowercase())
    .bind(&fields.external_id)
    .bind(lower(&fields.display_name))
    .bind(lower(&fields.given_name))
    .bind(lower(&fields.family_name))
    .bind(i64::from(fields.active))
    .bind(&fields.resource)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    write_values(tx, tenant_id, &id, &fields.values, true).await?;
    Ok(ScimUserRow {
        id,
        tenant_id: tenant_id.to_owned(),
        user_id: user_id.map(str::to_owned),
        email: fields.email.clone(),
        user_name: fields.user_name.clone(),
        external_id: fields.external_id.clone(),
        active: i64::from(fields.active),
        resource: fields.resource.clone(),
        version: 1,
        created_ms: t,
        modified_ms: t,
    })
}

/// Replaces a SCIM user's attributes (its linked account stays); the
/// version moves on.
pub async fn update_scim_user(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    fields: &ScimUserFields,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE scim_users SET user_name = $1, user_name_lower = $2, external_id = $3, display_name_lower = $4, \
         given_name_lower = $5, family_name_lower = $6, active = $7, resource = $8, version = version + 1, \
         modified_ms = $9 WHERE tenant_id = $10 AND id = $11",
    )
    .bind(&fields.user_name)
    .bind(fields.user_name.to_lowercase())
    .bind(&fields.external_id)
    .bind(lower(&fields.display_name))
    .bind(lower(&fields.given_name))
    .bind(lower(&fields.family_name))
    .bind(i64::from(fields.active))
    .bind(&fields.resource)
    .bind(now_ms())
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    write_values(tx, tenant_id, id, &fields.values, false).await
}

/// Links a pending SCIM user to the account that accepted its invitation.
pub async fn link_scim_user(tx: &mut Tx, tenant_id: &str, id: &str, user_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE scim_users SET user_id = $1 WHERE tenant_id = $2 AND id = $3 AND user_id IS NULL")
        .bind(user_id)
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn scim_user(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<Option<ScimUserRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        scim_user_columns!(),
        " FROM scim_users u WHERE u.tenant_id = $1 AND u.id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The SCIM user linked to an account, if any.
pub async fn scim_user_of_account(
    tx: &mut Tx,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<ScimUserRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        scim_user_columns!(),
        " FROM scim_users u WHERE u.tenant_id = $1 AND u.user_id = $2"
    ))
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The SCIM users waiting for the account of `email` to accept an invitation.
pub async fn pending_scim_user(tx: &mut Tx, tenant_id: &str, email: &str) -> Result<Option<ScimUserRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        scim_user_columns!(),
        " FROM scim_users u WHERE u.tenant_id = $1 AND u.email = $2 AND u.user_id IS NULL ORDER BY u.created_ms LIMIT 1"
    ))
    .bind(tenant_id)
    .bind(email)
    .fetch_optional(&mut **tx)
    .await?)
}

pub async fn delete_scim_user(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM scim_users WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// How a list is ordered: an expression from the mapping, and the direction.
#[derive(Debug, Clone)]
pub struct SortBy {
    pub expr: String,
    pub descending: bool,
}

/// Binds a condition's values after what `query` has bound.
macro_rules! bind_condition {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for b in $binds {
            query = match b {
                Bind::Text(s) => query.bind(s.as_str()),
                Bind::Int(i) => query.bind(*i),
            };
        }
        query
    }};
}

/// How many rows of `scope` (a `FROM ... WHERE` naming the tenant as `$1`)
/// match `condition` (its parameters from `$2`).
async fn count_matching(
    tx: &mut Tx,
    scope: &str,
    tenant_id: &str,
    condition: Option<&Condition>,
) -> Result<i64, StoreError> {
    let filter = condition.map(|c| format!(" AND {}", c.sql)).unwrap_or_default();
    let binds: &[Bind] = condition.map(|c| c.binds.as_slice()).unwrap_or(&[]);
    let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {scope}{filter}")))
        .bind(tenant_id);
    Ok(bind_condition!(query, binds).fetch_one(&mut **tx).await?)
}

/// A page's query: which rows, of which table, in which order.
struct Page<'a> {
    /// The columns selected, prefixed with the table's alias.
    columns: &'a str,
    /// The table and its alias (`scim_users u`).
    table: &'a str,
    alias: &'a str,
    /// The rows of the tenant (named `$1`).
    scope: &'a str,
    order: String,
}

/// One page of `page` matching `condition` (parameters from `$2`). On
/// PostgreSQL a filtered page is read from the filtered rows (`OFFSET 0`
/// keeps them apart): with statistics its planner would rather walk the
/// sort order's index and filter, which reads nearly every row when the
/// matches cluster at one end (`meta.lastModified gt`, the delta query).
async fn page_matching<R>(
    tx: &mut Tx,
    dialect: Dialect,
    page: &Page<'_>,
    tenant_id: &str,
    condition: Option<&Condition>,
    offset: i64,
    limit: i64,
) -> Result<Vec<R>, StoreError>
where
    R: for<'r> FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let filter = condition.map(|c| format!(" AND {}", c.sql)).unwrap_or_default();
    let binds: &[Bind] = condition.map(|c| c.binds.as_slice()).unwrap_or(&[]);
    let n = binds.len();
    let Page { columns, table, alias, scope, order } = page;
    let rows = if condition.is_some() && dialect == Dialect::Postgres {
        format!("(SELECT {alias}.* FROM {table} WHERE {scope}{filter} OFFSET 0) {alias}")
    } else {
        format!("{table} WHERE {scope}{filter}")
    };
    let sql = format!("SELECT {columns} FROM {rows} ORDER BY {order} LIMIT ${} OFFSET ${}", n + 2, n + 3);
    let query = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql)).bind(tenant_id);
    Ok(bind_condition!(query, binds).bind(limit).bind(offset).fetch_all(&mut **tx).await?)
}

fn order_by(sort: Option<&SortBy>, default: &str, id: &str) -> String {
    match sort {
        Some(s) => format!("{} {}, {id}", s.expr, if s.descending { "DESC" } else { "ASC" }),
        None => format!("{default}, {id}"),
    }
}

/// How many of the tenant's SCIM users match `condition` (parameters from `$2`).
pub async fn count_scim_users(tx: &mut Tx, tenant_id: &str, condition: Option<&Condition>) -> Result<i64, StoreError> {
    count_matching(tx, "scim_users u WHERE u.tenant_id = $1", tenant_id, condition).await
}

/// A page of the tenant's SCIM users matching `condition`, ordered by
/// `sort` (else creation), then id.
pub async fn scim_users_page(
    tx: &mut Tx,
    dialect: Dialect,
    tenant_id: &str,
    condition: Option<&Condition>,
    sort: Option<&SortBy>,
    offset: i64,
    limit: i64,
) -> Result<Vec<ScimUserRow>, StoreError> {
    let page = Page {
        columns: scim_user_columns!(),
        table: "scim_users u",
        alias: "u",
        scope: "u.tenant_id = $1",
        order: order_by(sort, "u.created_ms", "u.id"),
    };
    page_matching(tx, dialect, &page, tenant_id, condition, offset, limit).await
}

/// The SCIM groups of some SCIM users: (user, group id, group name).
pub async fn scim_groups_of_users(
    tx: &mut Tx,
    tenant_id: &str,
    ids: &[String],
) -> Result<Vec<(String, String, String)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT m.scim_user_id, g.id, g.name FROM scim_group_members m \
         JOIN tenant_groups g ON g.tenant_id = m.tenant_id AND g.id = m.group_id \
         WHERE m.tenant_id = $1 AND m.scim_user_id IN ({}) ORDER BY g.name",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, (String, String, String)>(sqlx::AssertSqlSafe(sql)).bind(tenant_id);
    for id in ids {
        query = query.bind(id.as_str());
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

/// How an element subquery ends: on PostgreSQL with `OFFSET 0`, which keeps
/// the planner from merging it into the outer query, where row-level
/// security on `scim_users` would stop its `LIKE` from using the trigram
/// index (`LIKE` is not leakproof).
fn fence(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => ")",
        Dialect::Postgres => " OFFSET 0)",
    }
}

/// Where the User attributes are, for filters and sorting. Multi-valued
/// attributes are subqueries over the tenant's elements, which name the
/// tenant as `$1`: the list queries bind it there.
pub struct UserColumns(pub Dialect);

/// A single-valued attribute kept only in `resource`, read from the JSON.
fn json_column(dialect: Dialect, holder: &str, uri: Option<&str>, attr: &str, sub: Option<&str>) -> String {
    let mut keys: Vec<&str> = Vec::new();
    keys.extend(uri);
    keys.push(attr);
    keys.extend(sub);
    match dialect {
        Dialect::Sqlite => {
            let path: String = keys.iter().map(|k| format!(".\"{k}\"")).collect();
            format!("LOWER(json_extract({holder}, '${path}'))")
        }
        Dialect::Postgres => format!("LOWER(({holder})::jsonb #>> '{{{}}}')", keys.join(",")),
    }
}

impl Mapping for UserColumns {
    fn single(&self, path: &AttrPath) -> Option<Column> {
        let core = path.uri.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(USER.schema));
        let attr = path.attr.to_ascii_lowercase();
        let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
        if core {
            let known = match (attr.as_str(), sub.as_deref()) {
                ("id", None) => Some(Column::Exact("u.id".into())),
                ("externalid", None) => Some(Column::Exact("u.external_id".into())),
                ("username", None) => Some(Column::Folded("u.user_name_lower".into())),
                ("displayname", None) => Some(Column::Folded("u.display_name_lower".into())),
                ("name", Some("givenname")) => Some(Column::Folded("u.given_name_lower".into())),
                ("name", Some("familyname")) => Some(Column::Folded("u.family_name_lower".into())),
                ("active", None) => Some(Column::Bool("u.active".into())),
                ("meta", Some("created")) => Some(Column::TimeMs("u.created_ms".into())),
                ("meta", Some("lastmodified")) => Some(Column::TimeMs("u.modified_ms".into())),
                _ => None,
            };
            if known.is_some() {
                return known;
            }
        }
        // Any other single-valued string attribute of the schema.
        let found = USER.attr(path)?;
        let top = USER.attr(&AttrPath { uri: path.uri.clone(), attr: path.attr.clone(), sub: None })?;
        if top.multi || !matches!(found.kind, Kind::String | Kind::Reference) {
            return None;
        }
        let uri = (!core).then_some(ENTERPRISE_USER_SCHEMA);
        let sub_name = path.sub.as_ref().map(|_| found.name);
        Some(Column::Folded(json_column(self.0, "u.resource", uri, top.name, sub_name)))
    }

    fn multi(&self, path: &AttrPath) -> Option<MultiValued> {
        if path.uri.as_deref().is_some_and(|u| !u.eq_ignore_ascii_case(USER.schema)) {
            return None;
        }
        let opening = if path.is("emails") || path.is("phoneNumbers") {
            let attr = if path.is("emails") { "emails" } else { "phoneNumbers" };
            format!(
                "u.id IN (SELECT v.scim_user_id FROM scim_user_values v WHERE v.tenant_id = $1 AND v.attr = '{attr}'"
            )
        } else if path.is("groups") {
            "u.id IN (SELECT gm.scim_user_id FROM scim_group_members gm JOIN tenant_groups g2 \
             ON g2.tenant_id = gm.tenant_id AND g2.id = gm.group_id WHERE gm.tenant_id = $1"
                .to_owned()
        } else {
            return None;
        };
        Some(MultiValued { opening, closing: fence(self.0), default_sub: "value" })
    }

    fn element(&self, attr: &AttrPath, sub: &str) -> Option<Column> {
        let sub = sub.to_ascii_lowercase();
        if attr.is("groups") {
            return match sub.as_str() {
                "value" => Some(Column::Exact("gm.group_id".into())),
                "display" => Some(Column::Folded("LOWER(g2.name)".into())),
                _ => None,
            };
        }
        match sub.as_str() {
            "value" => Some(match self.0 {
                Dialect::Sqlite => Column::Grams {
                    expr: "v.value_lower".into(),
                    grams: "v.rowid IN (SELECT rowid FROM scim_value_grams WHERE scim_value_grams.value_lower LIKE {})"
                        .into(),
                },
                // The trigram index (pg_trgm) serves `LIKE` on the column itself.
                Dialect::Postgres => Column::Folded("v.value_lower".into()),
            }),
            "type" => Some(Column::Folded("v.type_lower".into())),
            "display" => Some(Column::Folded("v.display_lower".into())),
            "primary" => Some(Column::Bool("v.is_primary".into())),
            _ => None,
        }
    }
}

/// A group provisioned over SCIM.
#[derive(Debug, Clone, FromRow)]
pub struct ScimGroupRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub external_id: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! scim_group_columns {
    () => {
        "g.id, g.tenant_id, g.name, g.external_id, g.version, g.created_at, g.updated_at"
    };
}

pub async fn insert_scim_group(
    tx: &mut Tx,
    tenant_id: &str,
    name: &str,
    external_id: Option<&str>,
) -> Result<ScimGroupRow, StoreError> {
    let t = now();
    let id = new_id();
    sqlx::query(
        "INSERT INTO tenant_groups (id, tenant_id, name, description, created_at, updated_at, external_id, scim, version) \
         VALUES ($1, $2, $3, '', $4, $4, $5, 1, 1)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(name)
    .bind(t)
    .bind(external_id)
    .execute(&mut **tx)
    .await?;
    Ok(ScimGroupRow {
        id,
        tenant_id: tenant_id.to_owned(),
        name: name.to_owned(),
        external_id: external_id.map(str::to_owned),
        version: 1,
        created_at: t,
        updated_at: t,
    })
}

pub async fn scim_group(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<Option<ScimGroupRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        scim_group_columns!(),
        " FROM tenant_groups g WHERE g.tenant_id = $1 AND g.id = $2 AND g.scim = 1"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Renames a SCIM group and moves its version on.
pub async fn update_scim_group(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    name: &str,
    external_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE tenant_groups SET name = $1, external_id = $2, version = version + 1, updated_at = $3 \
         WHERE tenant_id = $4 AND id = $5 AND scim = 1",
    )
    .bind(name)
    .bind(external_id)
    .bind(now())
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many of the tenant's SCIM groups match `condition`.
pub async fn count_scim_groups(tx: &mut Tx, tenant_id: &str, condition: Option<&Condition>) -> Result<i64, StoreError> {
    count_matching(tx, "tenant_groups g WHERE g.tenant_id = $1 AND g.scim = 1", tenant_id, condition).await
}

/// A page of the tenant's SCIM groups matching `condition`.
pub async fn scim_groups_page(
    tx: &mut Tx,
    dialect: Dialect,
    tenant_id: &str,
    condition: Option<&Condition>,
    sort: Option<&SortBy>,
    offset: i64,
    limit: i64,
) -> Result<Vec<ScimGroupRow>, StoreError> {
    let page = Page {
        columns: scim_group_columns!(),
        table: "tenant_groups g",
        alias: "g",
        scope: "g.tenant_id = $1 AND g.scim = 1",
        order: order_by(sort, "g.created_at", "g.id"),
    };
    page_matching(tx, dialect, &page, tenant_id, condition, offset, limit).await
}

/// Where the Group attributes are, for filters and sorting.
pub struct GroupColumns;

impl Mapping for GroupColumns {
    fn single(&self, path: &AttrPath) -> Option<Column> {
        if path.uri.as_deref().is_some_and(|u| !u.to_ascii_lowercase().contains(":core:2.0:group")) {
            return None;
        }
        let attr = path.attr.to_ascii_lowercase();
        let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
        Some(match (attr.as_str(), sub.as_deref()) {
            ("id", None) => Column::Exact("g.id".into()),
            ("externalid", None) => Column::Exact("g.external_id".into()),
            ("displayname", None) => Column::Folded("LOWER(g.name)".into()),
            ("meta", Some("created")) => Column::TimeMs("(g.created_at * 1000)".into()),
            ("meta", Some("lastmodified")) => Column::TimeMs("(g.updated_at * 1000)".into()),
            _ => return None,
        })
    }

    fn multi(&self, path: &AttrPath) -> Option<MultiValued> {
        path.is("members").then(|| MultiValued {
            opening: "g.id IN (SELECT m.group_id FROM scim_group_members m WHERE m.tenant_id = $1".into(),
            closing: ")",
            default_sub: "value",
        })
    }

    fn element(&self, _attr: &AttrPath, sub: &str) -> Option<Column> {
        sub.eq_ignore_ascii_case("value").then(|| Column::Exact("m.scim_user_id".into()))
    }
}

/// A SCIM group's members: (SCIM user id, its display name or userName).
pub async fn scim_group_members(
    tx: &mut Tx,
    tenant_id: &str,
    group_id: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT u.id, u.user_name FROM scim_group_members m \
         JOIN scim_users u ON u.tenant_id = m.tenant_id AND u.id = m.scim_user_id \
         WHERE m.tenant_id = $1 AND m.group_id = $2 ORDER BY u.user_name_lower",
    )
    .bind(tenant_id)
    .bind(group_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Adds a SCIM user to a SCIM group; false when already in it.
pub async fn add_scim_group_member(
    tx: &mut Tx,
    tenant_id: &str,
    group_id: &str,
    scim_user_id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO scim_group_members (tenant_id, group_id, scim_user_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (group_id, scim_user_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(scim_user_id)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn remove_scim_group_member(
    tx: &mut Tx,
    tenant_id: &str,
    group_id: &str,
    scim_user_id: &str,
) -> Result<bool, StoreError> {
    let done =
        sqlx::query("DELETE FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 AND scim_user_id = $3")
            .bind(tenant_id)
            .bind(group_id)
            .bind(scim_user_id)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The SCIM groups a SCIM user is in: (id, name).
pub async fn scim_groups_of_user(
    tx: &mut Tx,
    tenant_id: &str,
    scim_user_id: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT g.id, g.name FROM scim_group_members m JOIN tenant_groups g ON g.tenant_id = m.tenant_id \
         AND g.id = m.group_id WHERE m.tenant_id = $1 AND m.scim_user_id = $2 ORDER BY g.name",
    )
    .bind(tenant_id)
    .bind(scim_user_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Makes the account's membership in the tenant's SCIM groups what its SCIM
/// user's is (the account must be a member of the tenant).
pub async fn sync_scim_group_members(
    tx: &mut Tx,
    tenant_id: &str,
    scim_user_id: &str,
    user_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM group_members WHERE tenant_id = $1 AND user_id = $2 \
         AND group_id IN (SELECT id FROM tenant_groups WHERE tenant_id = $1 AND scim = 1) \
         AND group_id NOT IN (SELECT group_id FROM scim_group_members WHERE tenant_id = $1 AND scim_user_id = $3)",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(scim_user_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO group_members (tenant_id, group_id, user_id, created_at) \
         SELECT $1, group_id, $2, $4 FROM scim_group_members WHERE tenant_id = $1 AND scim_user_id = $3 \
         ON CONFLICT (group_id, user_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(scim_user_id)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends an account's sessions in one tenant; how many were live.
pub async fn revoke_sessions_in_tenant(
    tx: &mut Tx,
    tenant_id: &str,
    user_id: &str,
    reason: &str,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND tenant_id = $4 AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(reason)
    .bind(user_id)
    .bind(tenant_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Revokes an account's API keys in one tenant; how many were live.
pub async fn revoke_keys_of_user(tx: &mut Tx, tenant_id: &str, user_id: &str) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND owner_user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(tenant_id)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// The SCIM user with a `userName` (lower-cased), if any: its id.
pub async fn scim_user_named(
    tx: &mut Tx,
    tenant_id: &str,
    user_name_lower: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM scim_users WHERE tenant_id = $1 AND user_name_lower = $2")
        .bind(tenant_id)
        .bind(user_name_lower)
        .fetch_optional(&mut **tx)
        .await?)
}

/// The SCIM user with an `externalId`, if any: its id.
pub async fn scim_user_with_external_id(
    tx: &mut Tx,
    tenant_id: &str,
    external_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM scim_users WHERE tenant_id = $1 AND external_id = $2")
        .bind(tenant_id)
        .bind(external_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// The SCIM group with an `externalId`, if any: its id.
pub async fn scim_group_with_external_id(
    tx: &mut Tx,
    tenant_id: &str,
    external_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM tenant_groups WHERE tenant_id = $1 AND external_id = $2")
        .bind(tenant_id)
        .bind(external_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Moves a SCIM group's version on (its members changed).
pub async fn touch_scim_group(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenant_groups SET version = version + 1, updated_at = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(now())
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether a group of the tenant is provisioned over SCIM (its members are
/// then the identity provider's to change).
pub async fn is_scim_group(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
    let scim: Option<i64> = sqlx::query_scalar("SELECT scim FROM tenant_groups WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(scim == Some(1))
}

/// Every SCIM user of the tenant linked to an account: their ids.
pub async fn linked_scim_users(tx: &mut Tx, tenant_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM scim_users WHERE tenant_id = $1 AND user_id IS NOT NULL ORDER BY id")
        .bind(tenant_id)
        .fetch_all(&mut **tx)
        .await?)
}

/// The group of the tenant with a name (ignoring case), if any: its id.
pub async fn group_named(tx: &mut Tx, tenant_id: &str, name: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM tenant_groups WHERE tenant_id = $1 AND LOWER(name) = LOWER($2) LIMIT 1")
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Whether `email` has an invitation into the tenant that can still be accepted.
pub async fn has_live_invitation(tx: &mut Tx, tenant_id: &str, email: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM invitations WHERE tenant_id = $1 AND email = $2 AND accepted_at IS NULL \
         AND revoked_at IS NULL AND expires_at > $3",
    )
    .bind(tenant_id)
    .bind(email)
    .bind(now())
    .fetch_one(&mut **tx)
    .await?;
    Ok(n > 0)
}
