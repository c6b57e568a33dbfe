//! Invitations: admins invite by email with a role (the mail goes to the
//! outbox); the invitee accepts with the token, creating an account if new.
//!
//! The token proves the mailbox, never an account: an address that already
//! belongs to a verified account is accepted only by that account, signed
//! in; an unverified claim on the address is honoured only when its account
//! is the one signed in (which then becomes verified), and otherwise taken
//! away from it in favour of the new account of the mailbox's owner.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Verb::{Delete, Get, Post};
use super::session::ClientIp;
use super::validate::{self, Checks};
use super::{Api, Auth, audit};
use crate::auth::principal::{Authenticated, PrincipalExt as _};
use crate::authz::{Action, Resource, authorize, open_tenant};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use crate::views;
use tollgate_identity::plans::LimitName;
use tollgate_identity::principal::{Tenant, TenantStatus, User};
use tollgate_identity::roles::ResolvedRole;
use tollgate_identity::secrets;
use tollgate_store::{self as store, now};

const BAD_INVITATION: &str = "invitation is invalid, expired or already used";

/// Records an invitation of `email` into `tenant` with `role` and mails
/// its token (through the outbox).
pub(crate) async fn invite(
    state: &AppState,
    tx: &mut store::Tx,
    tenant: &store::TenantRow,
    email: &str,
    role: &str,
    invited_by: &str,
) -> Result<store::InvitationRow, ApiError> {
    let token = secrets::new_invitation_token(&tenant.id);
    let invitation = store::insert_invitation(
        tx,
        &tenant.id,
        email,
        role,
        &secrets::hash(&token),
        invited_by,
        now() + state.config.invitation_ttl,
    )
    .await?;
    let body_text = format!(
        "You are invited to join {} on Tollgate as {role}.\n\nAccept with:\n  POST {}/api/v1/invitations/accept\n  {{\"token\": \"{token}\", \"name\": \"Your Name\", \"password\": \"...\"}}\n\nThe invitation expires in {} days.\n",
        tenant.name,
        state.config.issuer.trim_end_matches('/'),
        state.config.invitation_ttl / 86_400,
    );
    store::enqueue_mail(tx, Some(&tenant.id), email, &format!("Join {} on Tollgate", tenant.name), &body_text).await?;
    Ok(invitation)
}

pub fn routes(api: Api) -> Api {
    api.op(Post, "/tenants/{tenant_id}/invitations", "Invite someone by email with a role", Auth::Bearer, 201, create)
        .body::<CreateInvitation>()
        .op(Get, "/tenants/{tenant_id}/invitations", "Invitations of the tenant", Auth::Bearer, 200, list)
        .op(
            Delete,
            "/tenants/{tenant_id}/invitations/{invitation_id}",
            "Revoke a pending invitation",
            Auth::Bearer,
            204,
            revoke,
        )
        .op(
            Post,
            "/invitations/accept",
            "Accept an invitation, creating the account when new",
            Auth::Public,
            201,
            accept,
        )
        .body::<Accept>()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateInvitation {
    email: String,
    role: String,
}

async fn create(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateInvitation>,
) -> Result<Response, ApiError> {
    p.in_tenant(&tenant_id)?;
    let email = validate::normalize_email(&body.email);
    let mut checks = Checks::default();
    checks.check("email", validate::email(&email));
    checks.finish()?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    let role = ResolvedRole::load(&mut tx, &tenant_id, &body.role).await?;
    if role.base.is_none() {
        return Err(ApiError::field("role", format!("`{}` is not a role of this tenant", body.role)));
    }
    authorize(
        &state,
        &p,
        Action::InvitationCreate,
        Resource::Invitation { id: "new", rank: role.rank() },
        Some(role.rank()),
    )?;
    if let Some(existing) = store::user_by_email(&mut tx, &email).await?
        && store::membership(&mut tx, &tenant_id, &existing.id).await?.is_some()
    {
        return Err(ApiError::Conflict(format!("`{email}` is already a member")));
    }
    let tenant = store::tenant_by_id(&mut tx, &tenant_id).await?.ok_or(ApiError::NotFound)?;
    let invitation = invite(&state, &mut tx, &tenant, &email, &role.name, &p.actor_id()).await?;
    audit(&mut tx, &p, &tenant_id, None, "invitation.created", json!({"invitation": invitation.id, "role": role.name}))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(json!({"invitation": views::invitation(&invitation)}))).into_response())
}

async fn list(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open_tenant(&state, &p, &tenant_id, Action::InvitationList).await?;
    let rows = store::invitations(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    let items: Vec<Value> = rows.iter().map(views::invitation).collect();
    Ok(ApiJson(json!({"items": items})))
}

async fn revoke(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, invitation_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    p.in_tenant(&tenant_id)?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    let invitation = store::invitation_by_id(&mut tx, &tenant_id, &invitation_id).await?.ok_or(ApiError::NotFound)?;
    let rank = ResolvedRole::load(&mut tx, &tenant_id, &invitation.role).await?.rank();
    authorize(&state, &p, Action::InvitationRevoke, Resource::Invitation { id: &invitation.id, rank }, None)?;
    if !store::revoke_invitation(&mut tx, &tenant_id, &invitation_id).await? {
        return Err(ApiError::Conflict("invitation is no longer pending".into()));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Accept {
    token: String,
    name: Option<String>,
    password: Option<String>,
}

async fn accept(
    State(state): State<AppState>,
    caller: Option<Authenticated>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Accept>,
) -> Result<Response, ApiError> {
    let caller = caller.as_ref().map(|c| c.require_user()).transpose()?;
    let tenant_id =
        secrets::invitation_tenant(&body.token).ok_or_else(|| ApiError::BadRequest(BAD_INVITATION.into()))?.to_owned();
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    let invitation = store::invitation_by_token(&mut tx, &tenant_id, &secrets::hash(&body.token))
        .await?
        .filter(|i| i.accepted_at.is_none() && i.revoked_at.is_none() && i.expires_at > now())
        .ok_or_else(|| ApiError::BadRequest(BAD_INVITATION.into()))?;
    let tenant = store::tenant_by_id(&mut tx, &tenant_id)
        .await?
        .map(Tenant::from)
        .filter(|t| t.status == TenantStatus::Active)
        .ok_or_else(|| ApiError::BadRequest(BAD_INVITATION.into()))?;
    let mut existing = store::user_by_email(&mut tx, &invitation.email).await?;
    if let Some(holder) = existing.as_ref().filter(|u| u.email_verified_at.is_none())
        && caller.is_none_or(|c| c.id != holder.id)
    {
        // An unverified claim: the mailbox's owner (who holds this token)
        // wins it, unless the claiming account itself is accepting.
        store::release_unverified_email(&mut tx, &holder.id).await?;
        store::security_event(
            &mut tx,
            None,
            Some(&holder.id),
            "user.email_released",
            "",
            json!({"invitation": invitation.id}),
        )
        .await?;
        existing = None;
    }
    let (user, created) = match existing {
        Some(mut user) => {
            match caller {
                None => {
                    return Err(ApiError::Unauthorized(
                        "an account holds this address: sign in to it and accept with its access token",
                    ));
                }
                Some(c) if c.id != user.id => {
                    return Err(ApiError::forbidden("this invitation is for another account's address"));
                }
                Some(_) => {}
            }
            if store::membership(&mut tx, &tenant_id, &user.id).await?.is_some() {
                return Err(ApiError::Conflict("already a member of this tenant".into()));
            }
            // The token was mailed to the address: it is the account's now.
            store::mark_email_verified(&mut tx, &user.id).await?;
            user.email_verified_at.get_or_insert_with(now);
            (user, false)
        }
        None if caller.is_some() => {
            return Err(ApiError::forbidden("this invitation is for another account's address"));
        }
        None => {
            let name = body.name.as_deref().map(str::trim).unwrap_or_default().to_owned();
            let pw = body.password.clone().unwrap_or_default();
            let mut checks = Checks::default();
            checks.check("name", validate::name(&name));
            checks.check("password", validate::new_password(&pw));
            checks.finish()?;
            let hash = state.hashing.hash(pw).await?;
            (store::insert_user(&mut tx, &invitation.email, &name, Some(&hash), true).await?, true)
        }
    };
    super::plans::room_for_one_more(&state, &mut tx, &tenant_id, LimitName::MaxMembers).await?;
    if !store::accept_invitation(&mut tx, &invitation.id).await? {
        return Err(ApiError::BadRequest(BAD_INVITATION.into()));
    }
    store::insert_membership(&mut tx, &tenant_id, &user.id, &invitation.role).await?;
    crate::scim::provision::link_pending(&state, &mut tx, &tenant_id, &invitation.email, &user.id, &ip)
        .await
        .map_err(super::scim::from_scim)?;
    store::security_event(
        &mut tx,
        Some(&tenant_id),
        Some(&user.id),
        "invitation.accepted",
        "",
        json!({"invitation": invitation.id, "new_user": created}),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(
            json!({"user": views::user(&User::from(user)), "tenant": views::tenant(&tenant, Some(&invitation.role))}),
        ),
    )
        .into_response())
}
