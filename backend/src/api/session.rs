//! Sign-up, login with lockout, refresh-token rotation with reuse detection,
//! and logout.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Verb::Post;
use super::validate::{self, Checks};
use super::{Api, Auth};
use crate::auth::password;
use crate::problem::{ApiError, ApiJson};
use crate::state::AppState;
use crate::views;
use tollgate_identity::principal::{Tenant, TenantStatus, User};
use tollgate_identity::roles::ResolvedRole;
use tollgate_identity::secrets;
use tollgate_store::{
    self as store, LoginAttempts, LoginLimits, LoginThrottle, NewChallenge, NewSession, Reservation, now,
};

const LIMITS: LoginLimits = LoginLimits { per_client: LOCKOUT_THRESHOLD, per_email: LOCKOUT_THRESHOLD_ALL_CLIENTS };

/// Failures within this window count towards a lockout.
pub const LOCKOUT_WINDOW: i64 = 15 * 60;
/// Failures in the window that lock the email.
pub const LOCKOUT_THRESHOLD: i64 = 5;
/// Failures from all client addresses together that lock an email for all.
pub const LOCKOUT_THRESHOLD_ALL_CLIENTS: i64 = 10 * LOCKOUT_THRESHOLD;
/// How long a lockout lasts.
pub const LOCKOUT_DURATION: i64 = 15 * 60;
pub const REFRESH_COOKIE: &str = "tollgate_refresh";
const BAD_LOGIN: ApiError = ApiError::Unauthorized("invalid email or password");
const BAD_REFRESH: ApiError = ApiError::Unauthorized("invalid or expired refresh token");

pub fn routes(api: Api) -> Api {
    api.op(
        Post,
        "/auth/signup",
        "Create an account and its first tenant; the same answer whether or not the address has an account",
        Auth::Public,
        202,
        signup,
    )
    .body::<SignupBody>()
    .op(Post, "/auth/login", "Log in: an access token and a refresh token", Auth::Public, 200, login)
    .body::<LoginBody>()
    .op(Post, "/auth/refresh", "Rotate a refresh token for a new access token", Auth::Public, 200, refresh)
    .op(Post, "/auth/logout", "End the current session", Auth::Public, 204, logout)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SignupBody {
    email: String,
    password: String,
    name: String,
    tenant_name: Option<String>,
}

/// How long an email verification token is valid.
const VERIFICATION_TTL: i64 = 2 * 86_400;

/// Mails `email` a token that proves the mailbox when its account's owner,
/// signed in, sends it back (`POST /me/verify-email`).
pub(super) async fn send_verification(
    state: &AppState,
    tx: &mut store::Tx,
    user_id: &str,
    email: &str,
) -> Result<(), ApiError> {
    let token = secrets::new_verification_token();
    store::insert_email_verification(tx, user_id, email, &secrets::hash(&token), now() + VERIFICATION_TTL).await?;
    let body = format!(
        "Confirm that this address is yours: signed in to your account, send\n  POST {}/api/v1/me/verify-email\n  {{\"token\": \"{token}\"}}\n\nUntil then the account cannot accept invitations or join tenants. \
         If you did not sign up, ignore this mail: nobody can use your address without it.\n",
        state.config.issuer
    );
    store::enqueue_mail(tx, None, email, "Confirm your email address", &body).await?;
    Ok(())
}

/// What a signup answers, whether or not the address had an account: the
/// answer says nothing of who is registered.
fn signup_answer(email: &str) -> Response {
    let body = json!({"status": "verification_sent", "email": email});
    (StatusCode::ACCEPTED, ApiJson(body)).into_response()
}

/// Subject of the mail to an address that signed up again.
const ALREADY_REGISTERED: &str = "You already have an account";
/// At most one such mail per address in this many seconds.
const ALREADY_REGISTERED_EVERY: i64 = 3600;

async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<Response, ApiError> {
    let email = validate::normalize_email(&body.email);
    let name = body.name.trim().to_owned();
    let tenant_name =
        body.tenant_name.as_deref().map(str::trim).map_or_else(|| format!("{name}'s workspace"), str::to_owned);
    let mut checks = Checks::default();
    checks.check("email", validate::email(&email));
    checks.check("name", validate::name(&name));
    checks.check("password", validate::new_password(&body.password));
    checks.check("tenant_name", validate::name(&tenant_name));
    checks.finish()?;
    // Hashed whether or not the address is taken: both answers cost the same.
    let hash = state.hashing.hash(body.password).await?;
    let mut tx = state.store.tx().await?;
    state.store.serialize_on(&mut tx, &format!("signup:{email}")).await?;
    if let Some(existing) = store::user_by_email(&mut tx, &email).await? {
        already_registered(&state, &mut tx, &existing.id, &email, &ip).await?;
        tx.commit().await?;
        return Ok(signup_answer(&email));
    }
    let user = store::insert_user(&mut tx, &email, &name, Some(&hash), false).await?;
    let tenant = store::insert_tenant(&mut tx, &tenant_name, &validate::slugify(&tenant_name)).await?;
    state.store.bind_tenant(&mut tx, &tenant.id).await?;
    store::insert_membership(&mut tx, &tenant.id, &user.id, "owner").await?;
    store::security_event(&mut tx, Some(&tenant.id), Some(&user.id), "user.signup", &ip, json!({})).await?;
    send_verification(&state, &mut tx, &user.id, &user.email).await?;
    tx.commit().await?;
    Ok(signup_answer(&email))
}

/// Someone signed up with the address of an existing account: its owner is
/// told (at most once an hour, so signups cannot flood the mailbox), and
/// nothing about the account changes.
async fn already_registered(
    state: &AppState,
    tx: &mut store::Tx,
    user_id: &str,
    email: &str,
    ip: &str,
) -> Result<(), ApiError> {
    store::security_event(tx, None, Some(user_id), "user.signup_existing", ip, json!({})).await?;
    if store::mailed_since(tx, email, ALREADY_REGISTERED, now() - ALREADY_REGISTERED_EVERY).await? {
        return Ok(());
    }
    let body = format!(
        "Someone, perhaps you, tried to create an account with this address, which already has one.\n\n\
         If it was you, sign in; if you forgot your password, send\n  POST {}/api/v1/auth/password/forgot\n  \
         {{\"email\": \"{email}\"}}\n\nIf it was not you, ignore this mail: your account has not changed.\n",
        state.config.issuer
    );
    store::enqueue_mail(tx, None, email, ALREADY_REGISTERED, &body).await?;
    Ok(())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
    /// The tenant to act in, by slug or id; the oldest membership when absent.
    tenant: Option<String>,
    /// A label for the device, shown in the session list.
    device: Option<String>,
}

pub(super) fn user_agent(headers: &HeaderMap) -> String {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").chars().take(256).collect()
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    parts_ip: ClientIp,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let ip = parts_ip.0;
    let email = validate::normalize_email(&body.email);
    if body.password.len() > 4 * password::MAX_LENGTH || email.len() > 254 {
        return Err(BAD_LOGIN);
    }
    // The attempt is reserved (and counted as a failure) before the password
    // is checked, atomically with the throttle: parallel guesses get no more
    // checks than sequential ones.
    let mut tx = state.store.tx().await?;
    state.store.serialize_on(&mut tx, &format!("login:{email}")).await?;
    let reservation = LoginAttempts::reserve(&mut tx, &email, &ip, LOCKOUT_WINDOW, LOCKOUT_DURATION, LIMITS).await?;
    let attempt = match reservation {
        Reservation::Granted { id } => id,
        Reservation::Locked { until } => {
            tx.commit().await?;
            return Err(ApiError::TooManyRequests {
                detail: "too many failed logins; try again later".into(),
                retry_after: until - now(),
            });
        }
    };
    let user = store::user_by_email(&mut tx, &email).await?;
    tx.commit().await?;
    // Unknown emails and accounts without a password verify against a dummy
    // hash, so every failure costs the same time.
    let stored = user.as_ref().and_then(|u| u.password_hash.clone()).unwrap_or_else(|| state.dummy_hash.to_string());
    let verified = state.hashing.verify(body.password, stored).await?;
    let user = match user {
        Some(user) if verified && user.password_hash.is_some() => user,
        other => {
            let mut tx = state.store.tx().await?;
            state.store.serialize_on(&mut tx, &format!("login:{email}")).await?;
            let user_id = other.as_ref().map(|u| u.id.as_str());
            store::security_event(&mut tx, None, user_id, "login.failed", &ip, json!({})).await?;
            if let LoginThrottle::Open { failures } =
                LoginAttempts::throttle(&mut tx, &email, &ip, LOCKOUT_WINDOW, LOCKOUT_DURATION).await?
                && failures >= LOCKOUT_THRESHOLD
            {
                LoginAttempts::record(&mut tx, &email, &ip, "locked").await?;
                store::security_event(&mut tx, None, user_id, "login.locked", &ip, json!({})).await?;
            }
            tx.commit().await?;
            return Err(BAD_LOGIN);
        }
    };
    let mut tx = state.store.tx().await?;
    LoginAttempts::succeeded(&mut tx, attempt).await?;
    tx.commit().await?;
    // Only the password's holder learns that it must use single sign-on.
    if let Some(tenant) = super::sso_login::sso_required_for(&state, &User::from(user.clone())).await? {
        let mut tx = state.store.tx().await?;
        store::security_event(&mut tx, None, Some(&user.id), "login.sso_required", &ip, json!({"tenant": tenant}))
            .await?;
        tx.commit().await?;
        return Err(ApiError::forbidden(format!(
            "`{tenant}` requires single sign-on for this address: sign in at /api/v1/sso/{tenant}/login"
        )));
    }
    let device: String = body.device.unwrap_or_default().trim().chars().take(100).collect();
    let agent = user_agent(&headers);
    let mut tx = state.store.tx().await?;
    if super::mfa::has_second_factor(&mut tx, &user.id).await? {
        // The password was right; the session waits for the second factor.
        let new = NewChallenge {
            user_id: &user.id,
            tenant: body.tenant.as_deref(),
            device: &device,
            ip: &ip,
            user_agent: &agent,
            expires_at: now() + super::mfa::CHALLENGE_TTL,
        };
        let response = super::mfa::challenge(&mut tx, &new).await?;
        tx.commit().await?;
        return Ok(response);
    }
    tx.commit().await?;
    let sign_in = SignIn {
        user_id: &user.id,
        tenant: body.tenant.as_deref(),
        device: &device,
        ip: &ip,
        agent: &agent,
        amr: &["pwd"],
        sso_connection: None,
    };
    start_session(&state, &sign_in).await
}

/// How a person proved who they are, and where they want to act.
pub(super) struct SignIn<'a> {
    pub user_id: &'a str,
    /// The tenant asked for (slug or id); the oldest active one when absent.
    pub tenant: Option<&'a str>,
    pub device: &'a str,
    pub ip: &'a str,
    pub agent: &'a str,
    pub amr: &'a [&'a str],
    /// The SSO connection signed in through.
    pub sso_connection: Option<&'a str>,
}

/// A new session of the user in the tenant it asked for (or its oldest
/// active one), authenticated by `amr`, with its tokens.
pub(super) async fn start_session(state: &AppState, sign_in: &SignIn<'_>) -> Result<Response, ApiError> {
    let SignIn { user_id, tenant: wanted_tenant, device, ip, agent, amr, sso_connection } = *sign_in;
    let tenant = choose_tenant(state, user_id, wanted_tenant).await?;
    let mut tx = state.store.tenant_tx(&tenant.id).await?;
    let membership = store::membership(&mut tx, &tenant.id, user_id)
        .await?
        .ok_or_else(|| ApiError::forbidden("no membership in the requested tenant"))?;
    let role = ResolvedRole::load(&mut tx, &tenant.id, &membership.role).await?;
    let refresh_token = secrets::new_refresh_token();
    let session_id = store::insert_session(
        &mut tx,
        &NewSession {
            user_id,
            tenant_id: &tenant.id,
            device,
            ip,
            user_agent: agent,
            amr: &amr.join(" "),
            expires_at: now() + state.config.refresh_ttl,
            sso_connection,
        },
        &secrets::hash(&refresh_token),
    )
    .await?;
    store::security_event(
        &mut tx,
        Some(&tenant.id),
        Some(user_id),
        "login.succeeded",
        ip,
        json!({"session": session_id, "amr": amr, "sso_connection": sso_connection}),
    )
    .await?;
    tx.commit().await?;
    let amr: Vec<String> = amr.iter().map(|m| (*m).to_owned()).collect();
    token_response(state, user_id, &tenant, &session_id, &role, refresh_token, amr)
}

/// The tenant a login acts in: the named one (slug or id) among the user's
/// memberships, else the oldest active membership.
async fn choose_tenant(state: &AppState, user_id: &str, wanted: Option<&str>) -> Result<Tenant, ApiError> {
    let mut tx = state.store.user_tx(user_id).await?;
    let tenants = store::tenants_of_user(&mut tx, user_id).await?;
    tx.commit().await?;
    let tenant = match wanted {
        Some(w) => tenants
            .into_iter()
            .map(|(t, _)| Tenant::from(t))
            .find(|t| t.slug == w || t.id == w)
            .ok_or_else(|| ApiError::forbidden(format!("no membership in tenant `{w}`")))?,
        None => tenants
            .into_iter()
            .map(|(t, _)| Tenant::from(t))
            .find(|t| t.status != TenantStatus::Suspended)
            .ok_or_else(|| ApiError::forbidden("no membership in an active tenant"))?,
    };
    if tenant.status == TenantStatus::Suspended {
        return Err(ApiError::forbidden(format!("tenant `{}` is suspended", tenant.slug)));
    }
    Ok(tenant)
}

fn token_response(
    state: &AppState,
    user_id: &str,
    tenant: &Tenant,
    session_id: &str,
    role: &ResolvedRole,
    refresh_token: String,
    amr: Vec<String>,
) -> Result<Response, ApiError> {
    let (access_token, claims) = state.keys.issue(user_id, &tenant.id, session_id, vec![role.name.clone()], amr)?;
    let cookie = REFRESH.set(state, &refresh_token, state.config.refresh_ttl);
    let body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": claims.exp - claims.iat,
        "refresh_token": refresh_token,
        "session_id": session_id,
        "tenant": views::tenant(tenant, Some(&role.name)),
    });
    let mut response = (StatusCode::OK, ApiJson(body)).into_response();
    let headers = response.headers_mut();
    if let Some(v) = cookie {
        headers.insert(header::SET_COOKIE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The refresh token of a request: the JSON body's `refresh_token`, else the cookie.
fn presented_refresh(headers: &HeaderMap, body: &Bytes) -> Result<Option<String>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RefreshBody {
        refresh_token: Option<String>,
    }
    if !body.is_empty() {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let parsed: RefreshBody =
            serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
        if parsed.refresh_token.is_some() {
            return Ok(parsed.refresh_token);
        }
    }
    Ok(REFRESH.read(headers))
}

/// An HttpOnly cookie of the API: its name, the path it is sent to, and
/// its `SameSite`. `Secure` follows the configuration.
pub(super) struct CookieSpec {
    pub name: &'static str,
    pub path: &'static str,
    pub same_site: &'static str,
}

/// The refresh token, sent back to `/api/v1/auth` only.
const REFRESH: CookieSpec = CookieSpec { name: REFRESH_COOKIE, path: "/api/v1/auth", same_site: "Strict" };

impl CookieSpec {
    /// `Set-Cookie` for `value`, kept `max_age` seconds (0 clears it).
    pub(super) fn set(&self, state: &AppState, value: &str, max_age: i64) -> Option<HeaderValue> {
        let secure = if state.config.secure_cookies { " Secure;" } else { "" };
        let CookieSpec { name, path, same_site } = self;
        HeaderValue::from_str(&format!(
            "{name}={value}; HttpOnly;{secure} SameSite={same_site}; Path={path}; Max-Age={max_age}"
        ))
        .ok()
    }

    /// The value the request sends, when it sends one.
    pub(super) fn read(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == self.name)
            .map(|(_, value)| value.to_owned())
    }
}

async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    ip: ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = presented_refresh(&headers, &body)?.ok_or(BAD_REFRESH)?;
    let hash = secrets::hash(&token);
    let mut tx = state.store.tx().await?;
    let (session_id, used_at) = store::refresh_by_hash(&mut tx, &hash).await?.ok_or(BAD_REFRESH)?;
    let session = store::session_by_id(&mut tx, &session_id).await?.ok_or(BAD_REFRESH)?;
    if session.revoked_at.is_some() || session.expires_at <= now() {
        return Err(BAD_REFRESH);
    }
    // A used token presented again means it was copied: end the whole family.
    if used_at.is_some() || !store::mark_refresh_used(&mut tx, &hash).await? {
        store::revoke_session(&mut tx, &session.user_id, &session.id, "refresh_token_reuse").await?;
        store::security_event(
            &mut tx,
            Some(&session.tenant_id),
            Some(&session.user_id),
            "session.refresh_reuse",
            &ip.0,
            json!({"session": session.id}),
        )
        .await?;
        tx.commit().await?;
        return Err(BAD_REFRESH);
    }
    let new_token = secrets::new_refresh_token();
    store::insert_refresh(&mut tx, &session.id, &secrets::hash(&new_token)).await?;
    store::touch_session(&mut tx, &session.id, &ip.0).await?;
    tx.commit().await?;
    let mut tx = state.store.tenant_tx(&session.tenant_id).await?;
    let tenant = Tenant::from(store::tenant_by_id(&mut tx, &session.tenant_id).await?.ok_or(BAD_REFRESH)?);
    let membership = store::membership(&mut tx, &tenant.id, &session.user_id).await?;
    let role = match &membership {
        Some(m) => Some(ResolvedRole::load(&mut tx, &tenant.id, &m.role).await?),
        None => None,
    };
    tx.commit().await?;
    let Some(role) = role else {
        let mut tx = state.store.tx().await?;
        store::revoke_session(&mut tx, &session.user_id, &session.id, "membership_removed").await?;
        tx.commit().await?;
        return Err(BAD_REFRESH);
    };
    if tenant.status == TenantStatus::Suspended {
        return Err(ApiError::forbidden(format!("tenant `{}` is suspended", tenant.slug)));
    }
    // The refreshed tokens say how the session was authenticated.
    let amr = session.methods().map(str::to_owned).collect();
    token_response(&state, &session.user_id, &tenant, &session.id, &role, new_token, amr)
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    ip: ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut tx = state.store.tx().await?;
    let session = if let Some(token) = presented_refresh(&headers, &body)? {
        let (session_id, _) = store::refresh_by_hash(&mut tx, &secrets::hash(&token)).await?.ok_or(BAD_REFRESH)?;
        store::session_by_id(&mut tx, &session_id).await?
    } else {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized("a refresh token or an access token is required"))?;
        let claims =
            state.keys.verify(bearer.trim()).map_err(|_| ApiError::Unauthorized("invalid or expired access token"))?;
        store::session_by_id(&mut tx, &claims.sid).await?
    };
    let session = session.ok_or(BAD_REFRESH)?;
    store::revoke_session(&mut tx, &session.user_id, &session.id, "logout").await?;
    store::security_event(
        &mut tx,
        Some(&session.tenant_id),
        Some(&session.user_id),
        "session.logout",
        &ip.0,
        json!({"session": session.id}),
    )
    .await?;
    tx.commit().await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = REFRESH.set(&state, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// The client's address, for attempts, sessions and events.
pub struct ClientIp(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(crate::auth::principal::client_ip(parts)))
    }
}
