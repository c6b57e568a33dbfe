//! `/Groups`: the tenant's groups provisioned over SCIM, whose members are
//! SCIM users of the tenant. A change of a group's members (or its name,
//! which the tenant's settings may map to a role) re-syncs each affected
//! member, so the Cedar principal's parents follow at the next decision
//! after the gateway's liveness bound.

use std::collections::BTreeSet;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tollgate_scim::patch::{self, PatchRequest};
use tollgate_scim::query;
use tollgate_scim::schema::{GROUP, GROUP_SCHEMA};
use tollgate_scim::{ScimError, ScimType, filter};
use tollgate_store::{self as store, GroupColumns, ScimGroupRow, Tx};

use super::{
    Ctx, Failure, ListQuery, Projection, Result, Scim, audit, etag, list_response, not_modified, not_modified_response,
    provision,
};
use crate::api::MAX_GROUPS;

fn not_found(id: &str) -> Failure {
    Failure(ScimError::status(404, format!("no group `{id}`")))
}

/// The group as served.
fn to_resource(row: &ScimGroupRow, members: Option<&[(String, String)]>, base: &str) -> Value {
    let mut resource = json!({
        "schemas": [GROUP_SCHEMA],
        "id": row.id,
        "displayName": row.name,
        "meta": {
            "resourceType": "Group",
            "created": query::format_time_ms(row.created_at * 1000),
            "lastModified": query::format_time_ms(row.updated_at * 1000),
            "location": format!("{base}/Groups/{}", row.id),
            "version": etag(row.version),
        },
    });
    if let Some(external_id) = &row.external_id {
        resource["externalId"] = json!(external_id);
    }
    if let Some(members) = members {
        resource["members"] = members
            .iter()
            .map(|(id, name)| json!({"value": id, "display": name, "$ref": format!("{base}/Users/{id}"), "type": "User"}))
            .collect();
    }
    resource
}

/// What a client sent, read: name, externalId, member ids.
struct Written {
    name: String,
    external_id: Option<String>,
    members: BTreeSet<String>,
}

fn read(body: &Value) -> Result<Written> {
    let attrs = GROUP.read(body)?;
    let name = attrs.get("displayName").and_then(Value::as_str).map(str::trim).unwrap_or_default().to_owned();
    let mut members = BTreeSet::new();
    for member in attrs.get("members").and_then(Value::as_array).into_iter().flatten() {
        if member.get("type").and_then(Value::as_str).is_some_and(|t| !t.eq_ignore_ascii_case("user")) {
            return Err(Failure(ScimError::typed(ScimType::InvalidValue, "members are users; groups do not nest")));
        }
        let Some(id) = member.get("value").and_then(Value::as_str) else {
            return Err(Failure(ScimError::typed(ScimType::InvalidValue, "each member needs a `value`")));
        };
        members.insert(id.to_owned());
    }
    Ok(Written { name, external_id: attrs.get("externalId").and_then(Value::as_str).map(str::to_owned), members })
}

/// Refuses a name or externalId another group of the tenant has.
async fn check_unique(tx: &mut Tx, tenant_id: &str, written: &Written, except: Option<&str>) -> Result<()> {
    let taken = |detail: String| Failure(ScimError::typed(ScimType::Uniqueness, detail));
    if let Some(other) = store::group_named(tx, tenant_id, &written.name).await?
        && Some(other.as_str()) != except
    {
        return Err(taken(format!("a group named `{}` exists", written.name)));
    }
    if let Some(external_id) = &written.external_id
        && let Some(other) = store::scim_group_with_external_id(tx, tenant_id, external_id).await?
        && Some(other.as_str()) != except
    {
        return Err(taken(format!("externalId `{external_id}` is already provisioned")));
    }
    Ok(())
}

/// Makes the group's members exactly `wanted`; the users whose groups
/// changed are re-synced. An id that is no user of the tenant (one deleted
/// meanwhile, or another tenant's) is left out, and returned: the answer
/// lists the members the group really has.
async fn set_members(ctx: &Ctx<'_>, tx: &mut Tx, group_id: &str, wanted: &BTreeSet<String>) -> Result<Vec<String>> {
    let tenant_id = &ctx.client.tenant_id;
    let current: BTreeSet<String> =
        store::scim_group_members(tx, tenant_id, group_id).await?.into_iter().map(|(id, _)| id).collect();
    let mut changed = Vec::new();
    let mut ignored = Vec::new();
    for id in wanted.difference(&current) {
        if store::scim_user(tx, tenant_id, id).await?.is_none() {
            ignored.push(id.clone());
            continue;
        }
        store::add_scim_group_member(tx, tenant_id, group_id, id).await?;
        changed.push(id.clone());
    }
    for id in current.difference(wanted) {
        store::remove_scim_group_member(tx, tenant_id, group_id, id).await?;
        changed.push(id.clone());
    }
    if !changed.is_empty() {
        store::touch_scim_group(tx, tenant_id, group_id).await?;
    }
    provision::sync_users(ctx, tx, &changed).await?;
    Ok(ignored)
}

fn unique_violation(e: store::StoreError) -> Failure {
    if e.is_unique_violation() {
        Failure(ScimError::typed(ScimType::Uniqueness, "displayName or externalId is already provisioned"))
    } else {
        e.into()
    }
}

pub(super) async fn create_op(ctx: &Ctx<'_>, body: &Value) -> Result<Value> {
    let written = read(body)?;
    let tenant_id = &ctx.client.tenant_id;
    let mut tx = ctx.state.store.tenant_tx(tenant_id).await?;
    store::lock_tenant(&mut tx, tenant_id).await?;
    if store::count_groups(&mut tx, tenant_id).await? >= MAX_GROUPS {
        return Err(Failure(ScimError::status(403, format!("a tenant has at most {MAX_GROUPS} groups"))));
    }
    check_unique(&mut tx, tenant_id, &written, None).await?;
    let row = store::insert_scim_group(&mut tx, tenant_id, &written.name, written.external_id.as_deref())
        .await
        .map_err(unique_violation)?;
    let ignored = set_members(ctx, &mut tx, &row.id, &written.members).await?;
    audit(
        &mut tx,
        ctx.client,
        None,
        "scim.group_created",
        json!({"group": row.id, "name": row.name, "members": written.members.len(), "ignored_members": ignored}),
    )
    .await?;
    let members = store::scim_group_members(&mut tx, tenant_id, &row.id).await?;
    tx.commit().await?;
    Ok(to_resource(&row, Some(&members), &ctx.client.base))
}

async fn open(ctx: &Ctx<'_>, id: &str, if_match: Option<&str>) -> Result<(Tx, ScimGroupRow)> {
    let tenant_id = &ctx.client.tenant_id;
    let mut tx = ctx.state.store.tenant_tx(tenant_id).await?;
    store::lock_tenant(&mut tx, tenant_id).await?;
    let row = store::scim_group(&mut tx, tenant_id, id).await?.ok_or_else(|| not_found(id))?;
    super::check_version(if_match, row.version)?;
    Ok((tx, row))
}

/// Writes a group's new state (PUT, PATCH).
async fn write(ctx: &Ctx<'_>, tx: &mut Tx, row: &ScimGroupRow, written: Written, event: &str) -> Result<Value> {
    let tenant_id = &ctx.client.tenant_id;
    check_unique(tx, tenant_id, &written, Some(&row.id)).await?;
    store::update_scim_group(tx, tenant_id, &row.id, &written.name, written.external_id.as_deref())
        .await
        .map_err(unique_violation)?;
    let ignored = set_members(ctx, tx, &row.id, &written.members).await?;
    if !row.name.eq_ignore_ascii_case(&written.name) {
        // The name may map to a role: every member's role is recomputed.
        let all: Vec<String> = written.members.iter().cloned().collect();
        provision::sync_users(ctx, tx, &all).await?;
    }
    audit(
        tx,
        ctx.client,
        None,
        event,
        json!({"group": row.id, "name": written.name, "members": written.members.len(), "ignored_members": ignored}),
    )
    .await?;
    let updated = store::scim_group(tx, tenant_id, &row.id).await?.ok_or_else(|| not_found(&row.id))?;
    let members = store::scim_group_members(tx, tenant_id, &row.id).await?;
    Ok(to_resource(&updated, Some(&members), &ctx.client.base))
}

pub(super) async fn replace_op(ctx: &Ctx<'_>, id: &str, body: &Value, if_match: Option<&str>) -> Result<Value> {
    let written = read(body)?;
    let (mut tx, row) = open(ctx, id, if_match).await?;
    let resource = write(ctx, &mut tx, &row, written, "scim.group_replaced").await?;
    tx.commit().await?;
    Ok(resource)
}

pub(super) async fn patch_op(ctx: &Ctx<'_>, id: &str, body: &Value, if_match: Option<&str>) -> Result<Value> {
    let request: PatchRequest = serde_json::from_value(body.clone())
        .map_err(|e| ScimError::typed(ScimType::InvalidSyntax, format!("not a PatchOp request: {e}")))?;
    let (mut tx, row) = open(ctx, id, if_match).await?;
    let members = store::scim_group_members(&mut tx, &ctx.client.tenant_id, &row.id).await?;
    let current = to_resource(&row, Some(&members), &ctx.client.base);
    let patched = patch::apply(&current, &request, &GROUP)?;
    let written = read(&patched)?;
    let resource = write(ctx, &mut tx, &row, written, "scim.group_patched").await?;
    tx.commit().await?;
    Ok(resource)
}

pub(super) async fn delete_op(ctx: &Ctx<'_>, id: &str, if_match: Option<&str>) -> Result<()> {
    let (mut tx, row) = open(ctx, id, if_match).await?;
    let tenant_id = &ctx.client.tenant_id;
    let members: Vec<String> =
        store::scim_group_members(&mut tx, tenant_id, &row.id).await?.into_iter().map(|(id, _)| id).collect();
    store::delete_group(&mut tx, tenant_id, &row.id).await?;
    provision::sync_users(ctx, &mut tx, &members).await?;
    audit(&mut tx, ctx.client, None, "scim.group_deleted", json!({"group": row.id, "name": row.name})).await?;
    tx.commit().await?;
    Ok(())
}

/// A page of a list or search.
pub(super) async fn page(ctx: &Ctx<'_>, q: &ListQuery) -> Result<Scim> {
    let tenant_id = &ctx.client.tenant_id;
    let dialect = store::dialect(ctx.state.store.kind());
    let condition = match &q.filter {
        Some(text) => Some(query::plan(&filter::parse(text)?, &GroupColumns, dialect, 2)?),
        None => None,
    };
    let sort = match &q.sort_by {
        Some(name) => Some(super::users::sort_by(&GroupColumns, name, q.descending)?),
        None => None,
    };
    let projection = q.projection();
    let db = &ctx.state.store;
    // As for users: the count and the page at once.
    let counting = async {
        let mut tx = db.tenant_read_tx(tenant_id).await?;
        let total = store::count_scim_groups(&mut tx, tenant_id, condition.as_ref()).await?;
        tx.commit().await?;
        Ok::<_, store::StoreError>(total)
    };
    let paging = async {
        let mut resources = Vec::new();
        if q.count == 0 {
            return Ok(resources);
        }
        let mut tx = db.tenant_read_tx(tenant_id).await?;
        let rows = store::scim_groups_page(
            &mut tx,
            store::dialect(db.kind()),
            tenant_id,
            condition.as_ref(),
            sort.as_ref(),
            q.start_index - 1,
            q.count,
        )
        .await?;
        for row in &rows {
            let members = if projection.omits("members") {
                None
            } else {
                Some(store::scim_group_members(&mut tx, tenant_id, &row.id).await?)
            };
            let mut resource = to_resource(row, members.as_deref(), &ctx.client.base);
            projection.apply(&mut resource);
            resources.push(resource);
        }
        tx.commit().await?;
        Ok::<_, store::StoreError>(resources)
    };
    let (total, resources) = tokio::join!(counting, paging);
    let (total, resources) = (total?, resources?);
    Ok(list_response(resources, total, q.start_index))
}

/// One resource (GET), or 304 when `If-None-Match` names its version.
pub(super) async fn get_op(ctx: &Ctx<'_>, id: &str, projection: &Projection, headers: &HeaderMap) -> Result<Response> {
    let mut tx = ctx.state.store.tenant_read_tx(&ctx.client.tenant_id).await?;
    let row = store::scim_group(&mut tx, &ctx.client.tenant_id, id).await?.ok_or_else(|| not_found(id))?;
    if not_modified(headers, row.version) {
        return Ok(not_modified_response(row.version));
    }
    let members = if projection.omits("members") {
        None
    } else {
        Some(store::scim_group_members(&mut tx, &ctx.client.tenant_id, &row.id).await?)
    };
    tx.commit().await?;
    let mut resource = to_resource(&row, members.as_deref(), &ctx.client.base);
    projection.apply(&mut resource);
    Ok(Scim { status: StatusCode::OK, body: resource }.into_response())
}
