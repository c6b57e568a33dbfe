//! `/Users`. A SCIM user is the tenant's record of a person; the account it
//! links to is found by its address (the primary email, else the first,
//! else an email-shaped `userName`):
//!
//! - no account holds the address: one is created (no password, address
//!   unverified) and made a member;
//! - the account is already a member of the tenant: it is linked;
//! - an account of another tenant holds it: nothing of it is touched; the
//!   address is mailed an invitation, and the SCIM user links to the account
//!   once its owner accepts it signed in (an identity provider never takes
//!   over an account it does not own).
//!
//! Later changes of `userName` or `emails` change the tenant's record, not
//! the account's sign-in address.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tollgate_scim::patch::{self, PatchRequest};
use tollgate_scim::query::{self, Mapping};
use tollgate_scim::schema::{ENTERPRISE_USER_SCHEMA, USER, USER_SCHEMA};
use tollgate_scim::{AttrPath, ScimError, ScimType, filter};
use tollgate_store::{self as store, ScimUserFields, ScimUserRow, ScimValue, SortBy, Tx, UserColumns};

use super::{
    Ctx, Failure, ListQuery, Projection, Result, Scim, audit, etag, list_response, not_modified, not_modified_response,
    provision,
};
use crate::api::validate;

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The address of the account a SCIM user stands for, when it has one.
fn account_email(attrs: &Value) -> Option<String> {
    let emails = attrs.get("emails").and_then(Value::as_array).cloned().unwrap_or_default();
    let pick = emails
        .iter()
        .find(|e| e.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| emails.iter().find(|e| e.get("type").and_then(Value::as_str) == Some("work")))
        .or_else(|| emails.first())
        .and_then(|e| text(e, "value"))
        .or_else(|| text(attrs, "userName").filter(|u| u.contains('@')))?;
    let email = validate::normalize_email(&pick);
    validate::email(&email).is_ok().then_some(email)
}

/// The row fields of a user's attributes (read by `USER.read`).
fn fields_of(attrs: &Value) -> Result<ScimUserFields> {
    let mut values = Vec::new();
    for attr in ["emails", "phoneNumbers"] {
        for item in attrs.get(attr).and_then(Value::as_array).into_iter().flatten() {
            let Some(value) = text(item, "value") else { continue };
            values.push(ScimValue {
                attr,
                value,
                type_: text(item, "type"),
                display: text(item, "display"),
                primary: item.get("primary") == Some(&Value::Bool(true)),
            });
        }
    }
    let name = attrs.get("name").cloned().unwrap_or(Value::Null);
    Ok(ScimUserFields {
        email: account_email(attrs).unwrap_or_default(),
        user_name: text(attrs, "userName")
            .ok_or_else(|| ScimError::typed(ScimType::InvalidValue, "`userName` is required"))?,
        external_id: text(attrs, "externalId"),
        display_name: text(attrs, "displayName"),
        given_name: text(&name, "givenName"),
        family_name: text(&name, "familyName"),
        active: attrs.get("active").and_then(Value::as_bool).unwrap_or(true),
        resource: attrs.to_string(),
        values,
    })
}

/// A display name for a new account.
fn account_name(attrs: &Value, fields: &ScimUserFields) -> String {
    let name = attrs.get("name").cloned().unwrap_or(Value::Null);
    let joined = [text(&name, "givenName"), text(&name, "familyName")].into_iter().flatten().collect::<Vec<_>>();
    let chosen = fields
        .display_name
        .clone()
        .or_else(|| text(&name, "formatted"))
        .or_else(|| (!joined.is_empty()).then(|| joined.join(" ")))
        .unwrap_or_else(|| fields.user_name.clone());
    chosen.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// The stored attributes with `active` always present.
fn with_active(mut attrs: Value) -> Value {
    if attrs.get("active").is_none() {
        attrs["active"] = Value::Bool(true);
    }
    attrs
}

/// The resource as served: the stored attributes with `id`, `schemas`,
/// `groups` and `meta`.
pub(super) fn to_resource(row: &ScimUserRow, groups: &[(String, String)], base: &str) -> Value {
    let mut resource = serde_json::from_str::<Value>(&row.resource).unwrap_or_else(|_| json!({}));
    let mut schemas = vec![USER_SCHEMA];
    if resource.get(ENTERPRISE_USER_SCHEMA).is_some() {
        schemas.push(ENTERPRISE_USER_SCHEMA);
    }
    resource["schemas"] = json!(schemas);
    resource["id"] = json!(row.id);
    resource["active"] = json!(row.active == 1);
    if !groups.is_empty() {
        resource["groups"] = groups
            .iter()
            .map(|(id, name)| {
                json!({"value": id, "display": name, "$ref": format!("{base}/Groups/{id}"), "type": "direct"})
            })
            .collect();
    }
    resource["meta"] = json!({
        "resourceType": "User",
        "created": query::format_time_ms(row.created_ms),
        "lastModified": query::format_time_ms(row.modified_ms),
        "location": format!("{base}/Users/{}", row.id),
        "version": etag(row.version),
    });
    resource
}

fn not_found(id: &str) -> Failure {
    Failure(ScimError::status(404, format!("no user `{id}`")))
}

/// Refuses a `userName` or `externalId` another SCIM user of the tenant has.
async fn check_unique(tx: &mut Tx, tenant_id: &str, fields: &ScimUserFields, except: Option<&str>) -> Result<()> {
    if let Some(other) = store::scim_user_named(tx, tenant_id, &fields.user_name.to_lowercase()).await?
        && Some(other.as_str()) != except
    {
        return Err(Failure(ScimError::typed(
            ScimType::Uniqueness,
            format!("userName `{}` is already provisioned", fields.user_name),
        )));
    }
    if let Some(external_id) = &fields.external_id
        && let Some(other) = store::scim_user_with_external_id(tx, tenant_id, external_id).await?
        && Some(other.as_str()) != except
    {
        return Err(Failure(ScimError::typed(
            ScimType::Uniqueness,
            format!("externalId `{external_id}` is already provisioned"),
        )));
    }
    Ok(())
}

fn unique_violation(e: store::StoreError) -> Failure {
    if e.is_unique_violation() {
        Failure(ScimError::typed(ScimType::Uniqueness, "userName or externalId is already provisioned"))
    } else {
        e.into()
    }
}

/// Creates a user (POST, and bulk).
pub(super) async fn create_op(ctx: &Ctx<'_>, body: &Value) -> Result<Value> {
    let attrs = with_active(USER.read(body)?);
    let fields = fields_of(&attrs)?;
    if fields.email.is_empty() {
        return Err(Failure(ScimError::typed(
            ScimType::InvalidValue,
            "a user needs an email address: in `emails`, or as the `userName`",
        )));
    }
    let tenant_id = &ctx.client.tenant_id;
    let mut tx = ctx.state.store.tenant_tx(tenant_id).await?;
    store::lock_tenant(&mut tx, tenant_id).await?;
    check_unique(&mut tx, tenant_id, &fields, None).await?;
    let account = store::user_by_email(&mut tx, &fields.email).await?;
    let user_id = match account {
        None => {
            let name = account_name(&attrs, &fields);
            Some(store::insert_user(&mut tx, &fields.email, &name, None, false).await?.id)
        }
        Some(u) if store::membership(&mut tx, tenant_id, &u.id).await?.is_some() => {
            if store::scim_user_of_account(&mut tx, tenant_id, &u.id).await?.is_some() {
                return Err(Failure(ScimError::typed(
                    ScimType::Uniqueness,
                    format!("the member with `{}` is already provisioned as another user", fields.email),
                )));
            }
            Some(u.id)
        }
        // Another tenant's person: invited, never taken over.
        Some(_) => None,
    };
    let row =
        store::insert_scim_user(&mut tx, tenant_id, user_id.as_deref(), &fields).await.map_err(unique_violation)?;
    provision::sync(ctx, &mut tx, &row).await?;
    let pending = row.user_id.is_none();
    invite_if_pending(ctx, &mut tx, &row).await?;
    audit(
        &mut tx,
        ctx.client,
        row.user_id.as_deref(),
        "scim.user_created",
        json!({"scim_user": row.id, "user_name": row.user_name, "awaiting_invitation": pending}),
    )
    .await?;
    tx.commit().await?;
    Ok(to_resource(&row, &[], &ctx.client.base))
}

/// Invites the account a pending, active SCIM user waits for, unless an
/// invitation is out already (one that expired is sent again at the next
/// change of the user).
async fn invite_if_pending(ctx: &Ctx<'_>, tx: &mut Tx, row: &ScimUserRow) -> Result<()> {
    let tenant_id = &ctx.client.tenant_id;
    if row.user_id.is_some() || row.active == 0 || store::has_live_invitation(tx, tenant_id, &row.email).await? {
        return Ok(());
    }
    let role = provision::role_for(tx, tenant_id, &row.id).await?;
    let tenant = store::tenant_by_id(tx, tenant_id).await?.ok_or_else(|| not_found(tenant_id))?;
    crate::api::invite(ctx.state, tx, &tenant, &row.email, &role, &ctx.client.actor).await?;
    Ok(())
}

/// Writes new attributes over a user (PUT, PATCH) and re-syncs the tenant.
async fn write(ctx: &Ctx<'_>, tx: &mut Tx, row: &ScimUserRow, attrs: Value, event: &str) -> Result<ScimUserRow> {
    let tenant_id = &ctx.client.tenant_id;
    let fields = fields_of(&attrs)?;
    check_unique(tx, tenant_id, &fields, Some(&row.id)).await?;
    store::update_scim_user(tx, tenant_id, &row.id, &fields).await.map_err(unique_violation)?;
    let updated = store::scim_user(tx, tenant_id, &row.id).await?.ok_or_else(|| not_found(&row.id))?;
    provision::sync(ctx, tx, &updated).await?;
    invite_if_pending(ctx, tx, &updated).await?;
    let mut details = json!({"scim_user": row.id});
    if (row.active == 1) != fields.active {
        details["active"] = json!(fields.active);
    }
    audit(tx, ctx.client, updated.user_id.as_deref(), event, details).await?;
    Ok(updated)
}

async fn open(ctx: &Ctx<'_>, id: &str, if_match: Option<&str>) -> Result<(Tx, ScimUserRow)> {
    let tenant_id = &ctx.client.tenant_id;
    let mut tx = ctx.state.store.tenant_tx(tenant_id).await?;
    store::lock_tenant(&mut tx, tenant_id).await?;
    let row = store::scim_user(&mut tx, tenant_id, id).await?.ok_or_else(|| not_found(id))?;
    super::check_version(if_match, row.version)?;
    Ok((tx, row))
}

async fn served(ctx: &Ctx<'_>, tx: &mut Tx, row: &ScimUserRow) -> Result<Value> {
    let groups = store::scim_groups_of_user(tx, &ctx.client.tenant_id, &row.id).await?;
    Ok(to_resource(row, &groups, &ctx.client.base))
}

/// Replaces a user (PUT, and bulk).
pub(super) async fn replace_op(ctx: &Ctx<'_>, id: &str, body: &Value, if_match: Option<&str>) -> Result<Value> {
    let attrs = with_active(USER.read(body)?);
    let (mut tx, row) = open(ctx, id, if_match).await?;
    let updated = write(ctx, &mut tx, &row, attrs, "scim.user_replaced").await?;
    let resource = served(ctx, &mut tx, &updated).await?;
    tx.commit().await?;
    Ok(resource)
}

/// Patches a user (PATCH, and bulk).
pub(super) async fn patch_op(ctx: &Ctx<'_>, id: &str, body: &Value, if_match: Option<&str>) -> Result<Value> {
    let request: PatchRequest = serde_json::from_value(body.clone())
        .map_err(|e| ScimError::typed(ScimType::InvalidSyntax, format!("not a PatchOp request: {e}")))?;
    let (mut tx, row) = open(ctx, id, if_match).await?;
    let current = serde_json::from_str::<Value>(&row.resource).map_err(|_| store::StoreError::Corrupt("scim_users"))?;
    let patched = patch::apply(&current, &request, &USER)?;
    let attrs = with_active(USER.read(&patched)?);
    let updated = write(ctx, &mut tx, &row, attrs, "scim.user_patched").await?;
    let resource = served(ctx, &mut tx, &updated).await?;
    tx.commit().await?;
    Ok(resource)
}

/// Deletes a user (DELETE, and bulk): the account leaves the tenant.
pub(super) async fn delete_op(ctx: &Ctx<'_>, id: &str, if_match: Option<&str>) -> Result<()> {
    let (mut tx, row) = open(ctx, id, if_match).await?;
    if let Some(user_id) = row.user_id.as_deref() {
        provision::deprovision(ctx, &mut tx, &row, user_id).await?;
    }
    let groups: Vec<String> =
        store::scim_groups_of_user(&mut tx, &ctx.client.tenant_id, &row.id).await?.into_iter().map(|g| g.0).collect();
    store::delete_scim_user(&mut tx, &ctx.client.tenant_id, &row.id).await?;
    for group in groups {
        store::touch_scim_group(&mut tx, &ctx.client.tenant_id, &group).await?;
    }
    audit(
        &mut tx,
        ctx.client,
        row.user_id.as_deref(),
        "scim.user_deleted",
        json!({"scim_user": row.id, "user_name": row.user_name}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A page of users for a list or search.
/// A page of a list or search.
pub(super) async fn page(ctx: &Ctx<'_>, q: &ListQuery) -> Result<Scim> {
    let tenant_id = &ctx.client.tenant_id;
    let columns = UserColumns(store::dialect(ctx.state.store.kind()));
    let condition = match &q.filter {
        Some(text) => Some(query::plan(&filter::parse(text)?, &columns, columns.0, 2)?),
        None => None,
    };
    let sort = match &q.sort_by {
        Some(name) => Some(sort_by(&columns, name, q.descending)?),
        None => None,
    };
    let projection = q.projection();
    let db = &ctx.state.store;
    // The count and the page are independent reads: both at once, each in
    // its own read transaction (the total may miss a change made between).
    let counting = async {
        let mut tx = db.tenant_read_tx(tenant_id).await?;
        let total = store::count_scim_users(&mut tx, tenant_id, condition.as_ref()).await?;
        tx.commit().await?;
        Ok::<_, store::StoreError>(total)
    };
    let paging = async {
        if q.count == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut tx = db.tenant_read_tx(tenant_id).await?;
        let rows = store::scim_users_page(
            &mut tx,
            store::dialect(db.kind()),
            tenant_id,
            condition.as_ref(),
            sort.as_ref(),
            q.start_index - 1,
            q.count,
        )
        .await?;
        let memberships = if projection.omits("groups") {
            Vec::new()
        } else {
            let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
            store::scim_groups_of_users(&mut tx, tenant_id, &ids).await?
        };
        tx.commit().await?;
        Ok::<_, store::StoreError>((rows, memberships))
    };
    let (total, page) = tokio::join!(counting, paging);
    let (total, (rows, memberships)) = (total?, page?);
    let resources = rows
        .iter()
        .map(|row| {
            let groups: Vec<(String, String)> = memberships
                .iter()
                .filter(|(user, _, _)| *user == row.id)
                .map(|(_, id, name)| (id.clone(), name.clone()))
                .collect();
            let mut resource = to_resource(row, &groups, &ctx.client.base);
            projection.apply(&mut resource);
            resource
        })
        .collect();
    Ok(list_response(resources, total, q.start_index))
}

/// The column a `sortBy` names (single-valued attributes).
pub(super) fn sort_by(columns: &dyn Mapping, name: &str, descending: bool) -> Result<SortBy> {
    let path = AttrPath::parse(name.trim())
        .ok_or_else(|| ScimError::typed(ScimType::InvalidValue, format!("`{name}` is not an attribute")))?;
    let column = columns.single(&path).ok_or_else(|| {
        ScimError::typed(ScimType::InvalidValue, format!("`{name}` is not an attribute that can be sorted on"))
    })?;
    let expr = column.expr().to_owned();
    Ok(SortBy { expr, descending })
}

/// One resource (GET), or 304 when `If-None-Match` names its version.
pub(super) async fn get_op(ctx: &Ctx<'_>, id: &str, projection: &Projection, headers: &HeaderMap) -> Result<Response> {
    let mut tx = ctx.state.store.tenant_read_tx(&ctx.client.tenant_id).await?;
    let row = store::scim_user(&mut tx, &ctx.client.tenant_id, id).await?.ok_or_else(|| not_found(id))?;
    if not_modified(headers, row.version) {
        return Ok(not_modified_response(row.version));
    }
    let mut resource = served(ctx, &mut tx, &row).await?;
    tx.commit().await?;
    projection.apply(&mut resource);
    Ok(Scim { status: StatusCode::OK, body: resource }.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_address_is_the_primary_email_else_the_user_name() {
        let attrs = json!({"userName": "bjensen", "emails": [
            {"value": "home@example.com", "type": "home"},
            {"value": "Work@Example.com", "type": "work", "primary": true}]});
        assert_eq!(account_email(&attrs).as_deref(), Some("work@example.com"));
        assert_eq!(account_email(&json!({"userName": "ann@example.com"})).as_deref(), Some("ann@example.com"));
        assert_eq!(account_email(&json!({"userName": "ann"})), None);
        let fields = fields_of(&json!({"userName": "Ann", "active": false, "emails": [{"value": "a@x.io"}]})).unwrap();
        assert_eq!((fields.active, fields.values.len(), fields.values[0].attr), (false, 1, "emails"));
    }
}
