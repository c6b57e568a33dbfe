//! What provisioning does to the tenant. A SCIM user linked to an account
//! and active makes the account a member, with the role its groups map to
//! (the tenant's SCIM settings) and the tenant's SCIM groups as its groups;
//! inactive or deleted, the membership goes at once with the account's
//! sessions and API keys in the tenant, so the gateway refuses it within
//! its liveness bound. An owner's role is never changed by provisioning,
//! and the tenant's last owner is never deprovisioned.

use serde_json::{Value, json};
use tollgate_identity::plans::LimitName;
use tollgate_identity::roles::ResolvedRole;
use tollgate_scim::ScimError;
use tollgate_store::{self as store, ScimUserRow, Tx};

use super::{Ctx, Failure, Result, audit};

/// The role of a SCIM user's account with no mapped group.
pub const DEFAULT_ROLE: &str = "member";

/// The tenant's settings: the default role and group name -> role.
pub async fn settings(tx: &mut Tx, tenant_id: &str) -> Result<(String, serde_json::Map<String, Value>)> {
    let Some(row) = store::scim_settings(tx, tenant_id).await? else {
        return Ok((DEFAULT_ROLE.to_owned(), serde_json::Map::new()));
    };
    let map = match serde_json::from_str(&row.group_roles) {
        Ok(Value::Object(map)) => map,
        _ => return Err(store::StoreError::Corrupt("scim_settings.group_roles").into()),
    };
    Ok((row.default_role, map))
}

/// The role a SCIM user's groups give it: the highest of the roles its
/// groups map to, else the default.
pub async fn role_for(tx: &mut Tx, tenant_id: &str, scim_user_id: &str) -> Result<String> {
    let (default, map) = settings(tx, tenant_id).await?;
    let groups = store::scim_groups_of_user(tx, tenant_id, scim_user_id).await?;
    let mut best: Option<ResolvedRole> = None;
    for (_, name) in groups {
        let Some(role) = map.get(&name.to_lowercase()).and_then(Value::as_str) else { continue };
        let resolved = ResolvedRole::load(tx, tenant_id, role).await?;
        if best.as_ref().is_none_or(|b| resolved.rank() > b.rank()) {
            best = Some(resolved);
        }
    }
    Ok(best.map_or(default, |r| r.name))
}

/// Makes the tenant reflect one SCIM user (after any change to it or to
/// the groups it is in).
pub async fn sync(ctx: &Ctx<'_>, tx: &mut Tx, row: &ScimUserRow) -> Result<()> {
    let Some(user_id) = row.user_id.as_deref() else {
        return Ok(());
    };
    let tenant_id = &ctx.client.tenant_id;
    if row.active == 0 {
        return deprovision(ctx, tx, row, user_id).await;
    }
    let role = role_for(tx, tenant_id, &row.id).await?;
    match store::membership(tx, tenant_id, user_id).await? {
        None => {
            crate::api::room_for_one_more(ctx.state, tx, tenant_id, LimitName::MaxMembers).await?;
            store::insert_membership(tx, tenant_id, user_id, &role).await?;
            audit(tx, ctx.client, Some(user_id), "scim.member_added", json!({"scim_user": row.id, "role": role}))
                .await?;
        }
        Some(m) if m.role != role && m.role != "owner" => {
            store::set_member_role(tx, tenant_id, user_id, &role).await?;
            audit(
                tx,
                ctx.client,
                Some(user_id),
                "scim.role_changed",
                json!({"scim_user": row.id, "from": m.role, "to": role}),
            )
            .await?;
        }
        Some(_) => {}
    }
    store::sync_scim_group_members(tx, tenant_id, &row.id, user_id).await?;
    Ok(())
}

/// Takes the account out of the tenant: membership, sessions, keys.
pub async fn deprovision(ctx: &Ctx<'_>, tx: &mut Tx, row: &ScimUserRow, user_id: &str) -> Result<()> {
    let tenant_id = &ctx.client.tenant_id;
    let Some(member) = store::membership(tx, tenant_id, user_id).await? else {
        return Ok(());
    };
    if member.role == "owner" && store::count_role(tx, tenant_id, "owner").await? <= 1 {
        return Err(Failure(ScimError::status(
            409,
            "the tenant's last owner cannot be deprovisioned; make another member owner first",
        )));
    }
    store::lock_tenant(tx, tenant_id).await?;
    store::delete_membership(tx, tenant_id, user_id).await?;
    let sessions = store::revoke_sessions_in_tenant(tx, tenant_id, user_id, "deprovisioned").await?;
    let keys = store::revoke_keys_of_user(tx, tenant_id, user_id).await?;
    audit(
        tx,
        ctx.client,
        Some(user_id),
        "scim.member_removed",
        json!({"scim_user": row.id, "sessions_revoked": sessions, "keys_revoked": keys}),
    )
    .await
}

/// Re-syncs every SCIM user in a group (its name or members changed).
pub async fn sync_users(ctx: &Ctx<'_>, tx: &mut Tx, scim_user_ids: &[String]) -> Result<()> {
    for id in scim_user_ids {
        if let Some(row) = store::scim_user(tx, &ctx.client.tenant_id, id).await? {
            sync(ctx, tx, &row).await?;
        }
    }
    Ok(())
}

/// When an account accepts an invitation into the tenant: links the SCIM
/// user that waited for the account of that address, if any, and syncs it
/// (its role and groups apply; inactive, the membership goes again).
pub async fn link_pending(
    state: &crate::state::AppState,
    tx: &mut Tx,
    tenant_id: &str,
    email: &str,
    user_id: &str,
    ip: &str,
) -> Result<()> {
    let Some(pending) = store::pending_scim_user(tx, tenant_id, email).await? else {
        return Ok(());
    };
    if store::scim_user_of_account(tx, tenant_id, user_id).await?.is_some() {
        return Ok(());
    }
    store::link_scim_user(tx, tenant_id, &pending.id, user_id).await?;
    let client = super::Client {
        tenant_id: tenant_id.to_owned(),
        actor: format!("User::{user_id}"),
        ip: ip.to_owned(),
        base: format!("{}/scim/v2", state.config.issuer.trim_end_matches('/')),
    };
    let ctx = Ctx { state, client: &client };
    let linked = store::scim_user(tx, tenant_id, &pending.id)
        .await?
        .ok_or_else(|| Failure(ScimError::status(404, "the provisioned user vanished")))?;
    audit(tx, &client, Some(user_id), "scim.user_linked", json!({"scim_user": linked.id})).await?;
    sync(&ctx, tx, &linked).await
}
