//! A person's second factor (TOTP, RFC 6238): enrolment with a secret, its
//! `otpauth://` URI and a QR code, confirmation with a first code (which
//! turns it on and hands out ten single-use recovery codes), removal with
//! the password, and the second step of a login: a challenge answered with
//! a code or a recovery code.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Verb::{Delete, Post};
use super::session::{ClientIp, SignIn, start_session, user_agent};
use super::{Api, Auth};
use crate::auth::principal::{Authenticated, PrincipalExt as _};
use crate::authz::{Action, Resource, authorize};
use crate::problem::{ApiError, ApiJson};
use crate::state::AppState;
use tollgate_identity::sealed::Sealer;
use tollgate_identity::secrets;
use tollgate_identity::totp::{self, Secret};
use tollgate_store::{self as store, NewChallenge, now};

/// How long a login challenge waits for its second factor.
pub const CHALLENGE_TTL: i64 = 5 * 60;
/// Wrong codes a challenge takes before it is spent.
const CHALLENGE_ATTEMPTS: i64 = 5;
const BAD_CHALLENGE: ApiError = ApiError::Unauthorized("the login challenge is invalid, used or expired");

pub fn routes(api: Api) -> Api {
    api.op(
        Post,
        "/me/mfa/totp",
        "Start TOTP enrolment: a secret, its otpauth URI and a QR code (SVG)",
        Auth::Bearer,
        201,
        enrol,
    )
    .op(
        Post,
        "/me/mfa/totp/confirm",
        "Turn TOTP on with a first code; answers ten single-use recovery codes",
        Auth::Bearer,
        200,
        confirm,
    )
    .body::<Code>()
    .op(Delete, "/me/mfa/totp", "Turn TOTP off (with the account's password)", Auth::Bearer, 204, disable)
    .body::<Reauthenticate>()
    .op(
        Post,
        "/auth/mfa/verify",
        "The second step of a login: the challenge and a TOTP or recovery code",
        Auth::Public,
        200,
        verify,
    )
    .body::<Verify>()
}

/// What a person's TOTP secret is sealed for: their row alone.
pub(crate) fn totp_context(user_id: &str) -> String {
    format!("totp:{user_id}")
}

/// A person's TOTP secret from its stored form: sealed, or base32 from
/// before sealing (sealed at the next start).
fn stored_secret(state: &AppState, user_id: &str, stored: &str) -> Result<Secret, ApiError> {
    let base32 = if Sealer::is_sealed(stored) {
        state.sealer.open(stored, &totp_context(user_id)).map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        stored.to_owned()
    };
    Secret::from_base32(&base32).ok_or_else(|| ApiError::Internal("stored TOTP secret".into()))
}

async fn enrol(State(state): State<AppState>, p: Authenticated) -> Result<Response, ApiError> {
    let user = p.require_user()?;
    authorize(&state, &p, Action::AccountUpdate, Resource::Account(&user.id), None)?;
    let secret = Secret::generate();
    let mut tx = state.store.tx().await?;
    state.store.serialize_on(&mut tx, &format!("mfa:{}", user.id)).await?;
    if store::totp_of(&mut tx, &user.id).await?.is_some_and(|t| t.confirmed_at.is_some()) {
        return Err(ApiError::Conflict("a second factor is on already: turn it off first".into()));
    }
    let sealed = state.sealer.seal(&secret.to_base32(), &totp_context(&user.id));
    store::begin_totp(&mut tx, &user.id, &sealed).await?;
    tx.commit().await?;
    let issuer = state.config.issuer.trim_start_matches("https://").trim_start_matches("http://");
    let uri = secret.otpauth_uri(&format!("Tollgate ({issuer})"), &user.email);
    let qr = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| ApiError::Internal(format!("cannot draw the QR code: {e}")))?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    let body = json!({"secret": secret.to_base32(), "otpauth_uri": uri, "qr_svg": qr});
    Ok((StatusCode::CREATED, ApiJson(body)).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Code {
    /// The six digits the authenticator app shows.
    code: String,
}

async fn confirm(
    State(state): State<AppState>,
    p: Authenticated,
    ApiJson(body): ApiJson<Code>,
) -> Result<ApiJson<Value>, ApiError> {
    let user = p.require_user()?;
    authorize(&state, &p, Action::AccountUpdate, Resource::Account(&user.id), None)?;
    let mut tx = state.store.tx().await?;
    state.store.serialize_on(&mut tx, &format!("mfa:{}", user.id)).await?;
    let enrolment = store::totp_of(&mut tx, &user.id)
        .await?
        .filter(|t| t.confirmed_at.is_none())
        .ok_or_else(|| ApiError::Conflict("no enrolment to confirm: start one first".into()))?;
    let secret = stored_secret(&state, &user.id, &enrolment.secret)?;
    let step = secret
        .verify(&body.code, now(), enrolment.last_step)
        .ok_or_else(|| ApiError::field("code", "is not the current code of the authenticator app"))?;
    if !store::use_totp_step(&mut tx, &user.id, step, true).await? {
        return Err(ApiError::field("code", "was used already"));
    }
    let codes = totp::new_recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| secrets::hash(&totp::normalize_recovery_code(c))).collect();
    store::replace_recovery_codes(&mut tx, &user.id, &hashes).await?;
    store::security_event(&mut tx, Some(&p.tenant.id), Some(&user.id), "mfa.enabled", &p.client_ip, json!({})).await?;
    tx.commit().await?;
    Ok(ApiJson(json!({"enabled": true, "recovery_codes": codes})))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Reauthenticate {
    /// The account's password.
    password: String,
}

async fn disable(
    State(state): State<AppState>,
    p: Authenticated,
    ApiJson(body): ApiJson<Reauthenticate>,
) -> Result<StatusCode, ApiError> {
    let user = p.require_user()?;
    authorize(&state, &p, Action::AccountUpdate, Resource::Account(&user.id), None)?;
    let mut tx = state.store.tx().await?;
    let stored = store::user_by_id(&mut tx, &user.id).await?.and_then(|u| u.password_hash);
    tx.commit().await?;
    let stored = stored.unwrap_or_else(|| state.dummy_hash.to_string());
    if !state.hashing.verify(body.password, stored).await? {
        return Err(ApiError::forbidden("the password is not the account's"));
    }
    let mut tx = state.store.tx().await?;
    state.store.serialize_on(&mut tx, &format!("mfa:{}", user.id)).await?;
    if store::totp_of(&mut tx, &user.id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    store::remove_totp(&mut tx, &user.id).await?;
    store::security_event(&mut tx, Some(&p.tenant.id), Some(&user.id), "mfa.disabled", &p.client_ip, json!({})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether `user_id` has a confirmed second factor.
pub(super) async fn has_second_factor(tx: &mut store::Tx, user_id: &str) -> Result<bool, ApiError> {
    Ok(store::totp_of(tx, user_id).await?.is_some_and(|t| t.confirmed_at.is_some()))
}

/// The first step of a login with a second factor: a challenge, answered
/// at `POST /auth/mfa/verify`.
pub(super) async fn challenge(tx: &mut store::Tx, new: &NewChallenge<'_>) -> Result<Response, ApiError> {
    let token = secrets::new_mfa_challenge();
    store::insert_challenge(tx, new, &secrets::hash(&token)).await?;
    store::security_event(tx, None, Some(new.user_id), "login.mfa_challenged", new.ip, json!({})).await?;
    let body = json!({"mfa_required": true, "challenge": token, "expires_in": CHALLENGE_TTL});
    Ok((StatusCode::OK, ApiJson(body)).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Verify {
    /// From the login's answer.
    challenge: String,
    /// Six digits from the authenticator app, or a recovery code.
    code: String,
}

async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Verify>,
) -> Result<Response, ApiError> {
    if body.challenge.len() > 128 || body.code.len() > 64 {
        return Err(BAD_CHALLENGE);
    }
    let mut tx = state.store.tx().await?;
    let found = store::challenge_by_token(&mut tx, &secrets::hash(&body.challenge)).await?;
    let challenge = found
        .filter(|c| c.used_at.is_none() && c.expires_at > now() && c.attempts < CHALLENGE_ATTEMPTS)
        .ok_or(BAD_CHALLENGE)?;
    // One answer at a time per person: a code is checked and spent together.
    state.store.serialize_on(&mut tx, &format!("mfa:{}", challenge.user_id)).await?;
    let is_totp = body.code.trim().len() == totp::DIGITS as usize;
    let accepted = match store::totp_of(&mut tx, &challenge.user_id).await?.filter(|t| t.confirmed_at.is_some()) {
        None => false,
        Some(totp_row) if is_totp => {
            let secret = stored_secret(&state, &challenge.user_id, &totp_row.secret)?;
            match secret.verify(&body.code, now(), totp_row.last_step) {
                Some(step) => store::use_totp_step(&mut tx, &challenge.user_id, step, false).await?,
                None => false,
            }
        }
        Some(_) => {
            let hash = secrets::hash(&totp::normalize_recovery_code(&body.code));
            store::use_recovery_code(&mut tx, &challenge.user_id, &hash).await?
        }
    };
    if !accepted {
        store::challenge_failed(&mut tx, &challenge.id).await?;
        store::security_event(&mut tx, None, Some(&challenge.user_id), "login.mfa_failed", &ip, json!({})).await?;
        tx.commit().await?;
        return Err(ApiError::Unauthorized("wrong or used code"));
    }
    if !store::spend_challenge(&mut tx, &challenge.id).await? {
        return Err(BAD_CHALLENGE);
    }
    let method = if is_totp { "otp" } else { "recovery_code" };
    store::security_event(&mut tx, None, Some(&challenge.user_id), "login.mfa_passed", &ip, json!({"method": method}))
        .await?;
    tx.commit().await?;
    let device = challenge.device.clone();
    let agent = if challenge.user_agent.is_empty() { user_agent(&headers) } else { challenge.user_agent.clone() };
    let sign_in = SignIn {
        user_id: &challenge.user_id,
        tenant: challenge.tenant.as_deref(),
        device: &device,
        ip: &ip,
        agent: &agent,
        amr: &["pwd", "otp"],
        sso_connection: None,
    };
    start_session(&state, &sign_in).await
}
