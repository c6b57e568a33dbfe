//! Forgotten passwords: a single-use reset token mailed through the outbox
//! (the same answer whether or not an account holds the address), and the
//! reset itself, which ends every session of the account.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Verb::Post;
use super::session::ClientIp;
use super::validate::{self, Checks};
use super::{Api, Auth};
use crate::problem::{ApiError, ApiJson};
use crate::state::AppState;
use tollgate_identity::secrets;
use tollgate_store::{self as store, now};

/// How long a reset token is good.
const RESET_TTL: i64 = 60 * 60;
/// At most one reset mail per account this often (a mailbox is not flooded).
const RESET_MAIL_EVERY: i64 = 60;
const SENT: &str = "if an account holds this address, a reset token is on its way to it";
const BAD_TOKEN: &str = "the reset token is invalid, used or expired";

pub fn routes(api: Api) -> Api {
    api.op(
        Post,
        "/auth/password/forgot",
        "Mail a password reset token (the same answer for every address)",
        Auth::Public,
        202,
        forgot,
    )
    .body::<Forgot>()
    .op(
        Post,
        "/auth/password/reset",
        "Set a new password with a mailed reset token; every session ends",
        Auth::Public,
        200,
        reset,
    )
    .body::<Reset>()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Forgot {
    email: String,
}

async fn forgot(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Forgot>,
) -> Result<Response, ApiError> {
    let email = validate::normalize_email(&body.email);
    let mut checks = Checks::default();
    checks.check("email", validate::email(&email));
    checks.finish()?;
    let mut tx = state.store.tx().await?;
    state.store.serialize_on(&mut tx, &format!("reset:{email}")).await?;
    if let Some(user) = store::user_by_email(&mut tx, &email).await? {
        let recent = store::live_password_reset(&mut tx, &user.id)
            .await?
            .is_some_and(|r| r.created_at + RESET_MAIL_EVERY > now());
        if !recent {
            let token = secrets::new_password_reset_token();
            store::insert_password_reset(&mut tx, &user.id, &secrets::hash(&token), now() + RESET_TTL).await?;
            let mail = format!(
                "Someone asked to reset the password of your account. If it was you, send within an hour\n  \
                 POST {}/api/v1/auth/password/reset\n  {{\"token\": \"{token}\", \"password\": \"<a new password>\"}}\n\n\
                 Every session of the account ends. If it was not you, ignore this mail: your password stays.\n",
                state.config.issuer
            );
            store::enqueue_mail(&mut tx, None, &user.email, "Reset your password", &mail).await?;
            store::security_event(&mut tx, None, Some(&user.id), "user.password_reset_requested", &ip, json!({}))
                .await?;
        }
    }
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, ApiJson(json!({"status": SENT}))).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Reset {
    token: String,
    password: String,
}

async fn reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Reset>,
) -> Result<Response, ApiError> {
    let mut checks = Checks::default();
    checks.check("password", validate::new_password(&body.password));
    checks.finish()?;
    if !body.token.starts_with(secrets::PASSWORD_RESET_PREFIX) || body.token.len() > 128 {
        return Err(ApiError::BadRequest(BAD_TOKEN.into()));
    }
    let hash = state.hashing.hash(body.password).await?;
    let mut tx = state.store.tx().await?;
    let reset = store::password_reset_by_token(&mut tx, &secrets::hash(&body.token))
        .await?
        .filter(|r| r.used_at.is_none() && r.expires_at > now())
        .ok_or_else(|| ApiError::BadRequest(BAD_TOKEN.into()))?;
    if !store::spend_password_resets(&mut tx, &reset.user_id, &reset.id).await? {
        return Err(ApiError::BadRequest(BAD_TOKEN.into()));
    }
    store::set_password(&mut tx, &reset.user_id, &hash).await?;
    // The token came through the mailbox: the address is the account's.
    store::mark_email_verified(&mut tx, &reset.user_id).await?;
    let ended = store::revoke_other_sessions(&mut tx, &reset.user_id, None, "password_reset").await?;
    store::security_event(
        &mut tx,
        None,
        Some(&reset.user_id),
        "user.password_reset",
        &ip,
        json!({"sessions_ended": ended}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::OK, ApiJson(json!({"status": "the password is changed; sign in with it"}))).into_response())
}
