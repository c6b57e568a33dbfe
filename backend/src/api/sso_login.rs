//! Signing in through a tenant's identity provider. The start
//! (`/sso/{tenant}/login`, or `/sso/discover?email=` by the address's
//! domain) records the sign-in, binds it to the browser with a cookie, and
//! redirects: to an OpenID provider with PKCE, state and nonce, or to a
//! SAML provider with an AuthnRequest (redirect binding) and the state as
//! `RelayState`. The way back (`/sso/oidc/callback`, or the SAML ACS
//! `/sso/saml/acs` by the POST binding) checks the state against the
//! browser that started it, has the provider's answer checked (`crate::sso`,
//! `crate::saml`), spends the state once (and a SAML assertion's id for
//! good), then finds, links or provisions the account and opens a session.
//! `/sso/{tenant}/saml/metadata` is our SAML SP metadata.
//!
//! The account rules, so that no provider can take over an account:
//! - a provider subject already linked to an account signs in as it;
//! - otherwise the email the provider asserts must be of a domain the
//!   connection claims (a claim needs proof, see `api::sso`);
//! - an existing account of that email is linked only when the provider
//!   says the email is verified, and either the tenant's SCIM made the
//!   account (passwordless, provisioned by this tenant) or the connection
//!   allows linking and the account's owner verified the address too (an
//!   unverified account may be someone else's pre-registration of it);
//! - else a new account is made (its email verified when the provider says so);
//! - a person who is not yet a member joins with the connection's default
//!   role, unless the tenant provisions its people by SCIM: then only its
//!   provisioned members sign in, and one SCIM deprovisioned cannot.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tollgate_identity::plans::LimitName;
use tollgate_identity::principal::{Tenant, TenantStatus, User};
use tollgate_identity::secrets;
use tollgate_store::{self as store, NewSsoLogin, SsoConnectionRow, SsoLoginRow, now};

use super::Verb::{Get, Post};
use super::session::{ClientIp, CookieSpec, SignIn, start_session, user_agent};
use super::sso::{OIDC, SAML, secret_context};
use super::validate;
use super::{Api, Auth};
use crate::problem::{ApiError, ApiPath, ApiQuery};
use crate::saml::{IdpMetadata, Sp};
use crate::sso::{ClaimMap, Identity, Provider};
use crate::state::AppState;

/// Where providers send the browser back, under the public base URL.
pub const CALLBACK_PATH: &str = "/api/v1/sso/oidc/callback";
/// Where SAML providers post their responses.
pub const ACS_PATH: &str = "/api/v1/sso/saml/acs";
/// The cookies binding a sign-in to the browser that started it.
/// OIDC's comes back on the provider's redirect, a top-level navigation
/// (Lax); SAML's on the provider's form POST, which only `None` lets through.
const OIDC_BINDING: CookieSpec = CookieSpec { name: "tollgate_sso", path: "/api/v1/sso", same_site: "Lax" };
const SAML_BINDING: CookieSpec = CookieSpec { name: "tollgate_saml", path: ACS_PATH, same_site: "None" };
/// Largest SAMLResponse taken (base64).
const MAX_SAML_RESPONSE: usize = 512 * 1024;
/// How long a sign-in may take at the provider.
const LOGIN_TTL: i64 = 10 * 60;
const BAD_STATE: ApiError = ApiError::Unauthorized("unknown, expired or already used sign-in; start again");
const FAILED: ApiError = ApiError::Unauthorized("sign-in through the identity provider failed");

pub fn routes(api: Api) -> Api {
    api.op(Get, "/sso/{tenant}/login", "Sign in through the tenant's identity provider", Auth::Public, 303, login)
        .op(
            Get,
            "/sso/discover",
            "Sign in through the identity provider of an email's domain",
            Auth::Public,
            303,
            discover,
        )
        .op(Get, "/sso/oidc/callback", "Where the identity provider returns the browser", Auth::Public, 200, callback)
        .op(Post, "/sso/saml/acs", "Where a SAML identity provider posts its response", Auth::Public, 200, acs)
        .op(
            Get,
            "/sso/{tenant}/saml/metadata",
            "The tenant's SAML service provider metadata",
            Auth::Public,
            200,
            metadata,
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginQuery {
    /// Which connection, when the tenant has several.
    connection: Option<String>,
    /// A path on this site to send the browser to once signed in (the
    /// refresh cookie set); without it the callback answers the tokens.
    return_to: Option<String>,
    /// Passed to the provider as `login_hint`.
    login_hint: Option<String>,
}

/// A local path only (`/...`, never `//host` or `/\host`): no open redirect.
fn local_path(value: &str) -> Result<(), String> {
    let ok = value.starts_with('/')
        && !value.starts_with("//")
        && !value.starts_with("/\\")
        && value.len() <= 512
        && !value.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\');
    if ok { Ok(()) } else { Err("must be a path on this site, like `/app`".into()) }
}

fn callback_url(state: &AppState) -> String {
    format!("{}{CALLBACK_PATH}", state.config.issuer.trim_end_matches('/'))
}

fn provider<'a>(
    row: &'a SsoConnectionRow,
    secret: &'a str,
    scopes: &'a [String],
    claims: &'a ClaimMap,
) -> Provider<'a> {
    Provider { issuer: &row.issuer, client_id: &row.client_id, client_secret: secret, scopes, claims }
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Our SAML entity id in `tenant_id`: where its SP metadata is.
pub(super) fn sp_entity_id(state: &AppState, tenant_id: &str) -> String {
    format!("{}/api/v1/sso/{tenant_id}/saml/metadata", state.config.issuer.trim_end_matches('/'))
}

fn acs_url(state: &AppState) -> String {
    format!("{}{ACS_PATH}", state.config.issuer.trim_end_matches('/'))
}

/// The tenant named by slug or id, active and with `sso` in its plan.
async fn sso_tenant(state: &AppState, tenant_ref: &str) -> Result<Arc<Tenant>, ApiError> {
    let tenant = state.lookups.tenant_named(tenant_ref).await?.ok_or(ApiError::NotFound)?;
    if tenant.status == TenantStatus::Suspended {
        return Err(ApiError::forbidden(format!("tenant `{}` is suspended", tenant.slug)));
    }
    if !tenant.entitlements.has_feature("sso", now()) {
        return Err(ApiError::FeatureMissing { feature: "sso", plans: state.lookups.catalog().plans_with("sso") });
    }
    Ok(tenant)
}

async fn login(
    State(state): State<AppState>,
    ApiPath(tenant_ref): ApiPath<String>,
    ApiQuery(q): ApiQuery<LoginQuery>,
) -> Result<Response, ApiError> {
    if let Some(path) = &q.return_to {
        local_path(path).map_err(|m| ApiError::field("return_to", m))?;
    }
    if q.login_hint.as_deref().is_some_and(|h| h.len() > 254 || h.chars().any(char::is_control)) {
        return Err(ApiError::field("login_hint", "must be at most 254 printable characters"));
    }
    let tenant = sso_tenant(&state, &tenant_ref).await?;
    let mut tx = state.store.tenant_read_tx(&tenant.id).await?;
    let connections: Vec<SsoConnectionRow> = store::sso_connections(&mut tx, &tenant.id)
        .await?
        .into_iter()
        .filter(|c| c.enabled != 0 && q.connection.as_ref().is_none_or(|id| *id == c.id))
        .collect();
    tx.commit().await?;
    let connection = match connections.as_slice() {
        [one] => one,
        [] => return Err(ApiError::NotFound),
        _ => {
            return Err(ApiError::BadRequest(
                "the tenant has several SSO connections: name one with `connection`".into(),
            ));
        }
    };
    if connection.kind == SAML {
        return saml_login(&state, &tenant.id, connection, q.return_to.as_deref()).await;
    }
    let secret = state
        .sealer
        .open(&connection.client_secret, &secret_context(&tenant.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let scopes: Vec<String> = connection.scopes.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let claims: ClaimMap = serde_json::from_str(&connection.claims).unwrap_or_default();
    let authorization = state
        .sso
        .authorize(&provider(connection, &secret, &scopes, &claims), &callback_url(&state), q.login_hint.as_deref())
        .await
        .map_err(|e| {
            tracing::warn!(connection = %connection.id, error = %e, "sso provider unreachable");
            ApiError::BadGateway("the identity provider cannot be reached")
        })?;
    let id = secrets::hash(&authorization.state);
    let verifier = state.sealer.seal(&authorization.verifier, &login_context(&id));
    let pending =
        Pending { id: &id, nonce: &authorization.nonce, verifier: &verifier, return_to: q.return_to.as_deref() };
    remember(&state, connection, &pending, &authorization.url, &OIDC_BINDING).await
}

/// A sign-in about to leave for the provider: the hash of its state, the
/// nonce (OIDC) or request id (SAML), the sealed PKCE verifier (OIDC).
struct Pending<'a> {
    id: &'a str,
    nonce: &'a str,
    verifier: &'a str,
    return_to: Option<&'a str>,
}

/// Records the sign-in, bound to a new cookie `cookie` of this browser,
/// and sends the browser to the provider at `url`.
async fn remember(
    state: &AppState,
    connection: &SsoConnectionRow,
    pending: &Pending<'_>,
    url: &str,
    cookie: &CookieSpec,
) -> Result<Response, ApiError> {
    let browser = secrets::random_token();
    let mut tx = state.store.tenant_tx(&connection.tenant_id).await?;
    store::insert_sso_login(
        &mut tx,
        &NewSsoLogin {
            id: pending.id,
            connection_id: &connection.id,
            tenant_id: &connection.tenant_id,
            browser: &secrets::hash(&browser),
            nonce: pending.nonce,
            verifier: pending.verifier,
            return_to: pending.return_to,
            expires_at: now() + LOGIN_TTL,
        },
    )
    .await?;
    tx.commit().await?;
    let mut response = see_other(url);
    if let Some(cookie) = cookie.set(state, &browser, LOGIN_TTL) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The provider's metadata of a SAML connection, as saved (and checked).
fn idp_of(connection: &SsoConnectionRow) -> Result<IdpMetadata, ApiError> {
    IdpMetadata::parse(connection.idp_metadata.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::Internal(format!("stored SAML metadata: {e}")))
}

/// Sends the browser to the SAML provider with an AuthnRequest (redirect
/// binding) whose id the response must answer, the state as `RelayState`.
async fn saml_login(
    state: &AppState,
    tenant_id: &str,
    connection: &SsoConnectionRow,
    return_to: Option<&str>,
) -> Result<Response, ApiError> {
    let idp = idp_of(connection)?;
    let relay_state = secrets::random_token();
    let request_id = format!("_{}", secrets::hash(&secrets::random_token()));
    let entity_id = sp_entity_id(state, tenant_id);
    let acs = acs_url(state);
    let sp = Sp { entity_id: &entity_id, acs_url: &acs, idp: &idp };
    let url = sp.authn_request(&request_id, &relay_state).map_err(|e| ApiError::Internal(e.to_string()))?;
    let id = secrets::hash(&relay_state);
    let pending = Pending { id: &id, nonce: &request_id, verifier: "", return_to };
    remember(state, connection, &pending, &url, &SAML_BINDING).await
}

fn login_context(id: &str) -> String {
    format!("sso-login:{id}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverQuery {
    email: String,
}

async fn discover(State(state): State<AppState>, ApiQuery(q): ApiQuery<DiscoverQuery>) -> Result<Response, ApiError> {
    let email = validate::normalize_email(&q.email);
    validate::email(&email).map_err(|m| ApiError::field("email", m))?;
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    let mut tx = state.store.key_prefix_read_tx(domain).await?;
    let claim = store::sso_domain(&mut tx, domain).await?;
    tx.commit().await?;
    let Some((tenant_id, connection_id)) = claim else {
        return Err(ApiError::NotFound);
    };
    let mut tx = state.store.tenant_read_tx(&tenant_id).await?;
    let connection = store::sso_connection(&mut tx, &tenant_id, &connection_id).await?;
    tx.commit().await?;
    if connection.is_none_or(|c| c.enabled == 0) {
        return Err(ApiError::NotFound);
    }
    let base = state.config.issuer.trim_end_matches('/');
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/v1/sso/{tenant_id}/login"),
        [("connection", connection_id.as_str()), ("login_hint", email.as_str())],
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(see_other(url.as_str()))
}

/// What a provider sends back; providers add parameters of their own.
#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// RFC 9207: the issuer of the answer, checked when sent.
    iss: Option<String>,
}

/// Whether the request carries the cookie that binds `pending` to the
/// browser that started it.
fn same_browser(headers: &HeaderMap, cookie: &CookieSpec, pending: &SsoLoginRow) -> bool {
    cookie.read(headers).is_some_and(|b| bool::from(secrets::hash(&b).as_bytes().ct_eq(pending.browser.as_bytes())))
}

/// The sign-in a browser comes back with (its state, or SAML's
/// `RelayState`), and its connection, when the sign-in is known, was
/// started by this browser (its `cookie`), and is of a live connection of
/// `kind`. Whether it was used already is the caller's to settle.
async fn returning(
    state: &AppState,
    headers: &HeaderMap,
    ip: &str,
    presented: Option<&str>,
    cookie: &CookieSpec,
    kind: &str,
) -> Result<(SsoLoginRow, SsoConnectionRow), ApiError> {
    let presented = presented.filter(|s| !s.is_empty() && s.len() <= 512).ok_or(BAD_STATE)?;
    let id = secrets::hash(presented);
    let mut tx = state.store.key_prefix_read_tx(&id).await?;
    let pending = store::sso_login(&mut tx, &id).await?;
    tx.commit().await?;
    let pending = pending.ok_or(BAD_STATE)?;
    // The browser that comes back must be the one that started: else a
    // victim could be made to finish a sign-in an attacker started.
    if !same_browser(headers, cookie, &pending) {
        let reason = "the sign-in was started in another browser";
        failed(state, &pending.tenant_id, None, ip, &pending.connection_id, reason).await?;
        return Err(BAD_STATE);
    }
    let mut tx = state.store.tenant_read_tx(&pending.tenant_id).await?;
    let connection = store::sso_connection(&mut tx, &pending.tenant_id, &pending.connection_id).await?;
    tx.commit().await?;
    let connection = connection.filter(|c| c.enabled != 0 && c.kind == kind).ok_or(BAD_STATE)?;
    Ok((pending, connection))
}

/// Records a failed sign-in in the tenant's audit trail.
async fn failed(
    state: &AppState,
    tenant_id: &str,
    user_id: Option<&str>,
    ip: &str,
    connection: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let mut tx = state.store.tenant_tx(tenant_id).await?;
    store::security_event(
        &mut tx,
        Some(tenant_id),
        user_id,
        "sso.login_failed",
        ip,
        json!({"connection": connection, "reason": reason}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    let (pending, connection) = returning(&state, &headers, &ip, q.state.as_deref(), &OIDC_BINDING, OIDC).await?;
    let (id, tenant_id, connection_id) = (&pending.id, &pending.tenant_id, &pending.connection_id);
    let mut tx = state.store.tenant_tx(tenant_id).await?;
    let taken = store::take_sso_login(&mut tx, tenant_id, id).await?;
    tx.commit().await?;
    if !taken {
        failed(&state, tenant_id, None, &ip, connection_id, "the state was used already or expired").await?;
        return Err(BAD_STATE);
    }
    if let Some(error) = &q.error {
        let reason = format!(
            "the provider answered `{}`: {}",
            error.chars().take(64).collect::<String>(),
            q.error_description.as_deref().unwrap_or("").chars().take(256).collect::<String>()
        );
        failed(&state, tenant_id, None, &ip, connection_id, &reason).await?;
        return Err(FAILED);
    }
    if q.iss.as_deref().is_some_and(|iss| iss.trim_end_matches('/') != connection.issuer) {
        failed(&state, tenant_id, None, &ip, connection_id, "the answer names another issuer").await?;
        return Err(FAILED);
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty() && c.len() <= 2048) else {
        failed(&state, tenant_id, None, &ip, connection_id, "the provider sent no code").await?;
        return Err(FAILED);
    };
    let verifier =
        state.sealer.open(&pending.verifier, &login_context(id)).map_err(|e| ApiError::Internal(e.to_string()))?;
    let secret = state
        .sealer
        .open(&connection.client_secret, &secret_context(tenant_id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let scopes: Vec<String> = connection.scopes.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let claims: ClaimMap = serde_json::from_str(&connection.claims).unwrap_or_default();
    let identity = match state
        .sso
        .finish(
            &provider(&connection, &secret, &scopes, &claims),
            &callback_url(&state),
            code,
            &verifier,
            &pending.nonce,
        )
        .await
    {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(connection = %connection_id, error = %e, "sso sign-in refused");
            failed(&state, tenant_id, None, &ip, connection_id, &e.to_string()).await?;
            return Err(FAILED);
        }
    };
    finish_sign_in(&state, &headers, &ip, &connection, &identity, pending.return_to.as_deref(), &OIDC_BINDING).await
}

/// The end of every sign-in through a provider: the account (found,
/// linked or provisioned, or refused), its session, and the answer: the
/// tokens, or a redirect to `return_to` with the refresh cookie. The
/// browser's binding cookie `cookie` is cleared.
async fn finish_sign_in(
    state: &AppState,
    headers: &HeaderMap,
    ip: &str,
    connection: &SsoConnectionRow,
    identity: &Identity,
    return_to: Option<&str>,
    cookie: &CookieSpec,
) -> Result<Response, ApiError> {
    let (tenant_id, connection_id) = (&connection.tenant_id, &connection.id);
    let user_id = match account(state, connection, identity, ip).await? {
        Ok(user_id) => user_id,
        Err(refusal) => {
            failed(state, tenant_id, refusal.user_id.as_deref(), ip, connection_id, refusal.reason).await?;
            return Err(ApiError::forbidden(refusal.reason));
        }
    };
    let amr: &[&str] = if identity.mfa { &["sso", "mfa"] } else { &["sso"] };
    let agent = user_agent(headers);
    let sign_in = SignIn {
        user_id: &user_id,
        tenant: Some(tenant_id),
        device: &connection.name,
        ip,
        agent: &agent,
        amr,
        sso_connection: Some(connection_id),
    };
    let mut response = start_session(state, &sign_in).await?;
    if let Some(path) = return_to {
        // The refresh cookie goes with the redirect; the page gets its
        // access token from `/auth/refresh`. No token travels in a URL.
        let cookies: Vec<HeaderValue> = response.headers().get_all(header::SET_COOKIE).iter().cloned().collect();
        response = see_other(path);
        for cookie in cookies {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    if let Some(clear) = cookie.set(state, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    Ok(response)
}

/// A SAML provider's answer (POST binding).
#[derive(Deserialize)]
struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: String,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

async fn acs(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    form: Result<axum::Form<AcsForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ApiError> {
    let axum::Form(form) =
        form.map_err(|_| ApiError::BadRequest("expected a form with `SAMLResponse` and `RelayState`".into()))?;
    let (pending, connection) =
        returning(&state, &headers, &ip, form.relay_state.as_deref(), &SAML_BINDING, SAML).await?;
    let (id, tenant_id, connection_id) = (&pending.id, &pending.tenant_id, &pending.connection_id);
    if form.saml_response.len() > MAX_SAML_RESPONSE {
        failed(&state, tenant_id, None, &ip, connection_id, "the response is too large").await?;
        return Err(FAILED);
    }
    let idp = idp_of(&connection)?;
    let entity_id = sp_entity_id(&state, tenant_id);
    let acs = acs_url(&state);
    let sp = Sp { entity_id: &entity_id, acs_url: &acs, idp: &idp };
    let claims: ClaimMap = serde_json::from_str(&connection.claims).unwrap_or_default();
    // The response must answer this sign-in's request (`InResponseTo`).
    let verified = match sp.verify(&form.saml_response, &pending.nonce, &claims.email, &claims.name) {
        Ok(verified) => verified,
        Err(e) => {
            tracing::info!(connection = %connection_id, error = %e, "saml sign-in refused");
            failed(&state, tenant_id, None, &ip, connection_id, &e.to_string()).await?;
            return Err(FAILED);
        }
    };
    let mut tx = state.store.tenant_tx(tenant_id).await?;
    let assertion = secrets::hash(&format!("{connection_id}:{}", verified.assertion_id));
    let first_use =
        store::record_sso_assertion(&mut tx, tenant_id, connection_id, &assertion, verified.valid_until).await?;
    let taken = first_use && store::take_sso_login(&mut tx, tenant_id, id).await?;
    tx.commit().await?;
    if !first_use {
        failed(&state, tenant_id, None, &ip, connection_id, "the assertion was used before").await?;
        return Err(FAILED);
    }
    if !taken {
        failed(&state, tenant_id, None, &ip, connection_id, "the state was used already or expired").await?;
        return Err(BAD_STATE);
    }
    // A provider of the tenant's claimed domains vouches for its addresses.
    let identity = Identity {
        subject: verified.subject,
        email: verified.email,
        email_verified: true,
        name: verified.name,
        mfa: false,
    };
    finish_sign_in(&state, &headers, &ip, &connection, &identity, pending.return_to.as_deref(), &SAML_BINDING).await
}

async fn metadata(State(state): State<AppState>, ApiPath(tenant_ref): ApiPath<String>) -> Result<Response, ApiError> {
    let tenant = sso_tenant(&state, &tenant_ref).await?;
    let xml = crate::saml::sp_metadata(&sp_entity_id(&state, &tenant.id), &acs_url(&state));
    let mut response = xml.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/samlmetadata+xml"));
    Ok(response)
}

/// Why a verified provider identity gets no session.
struct Refusal {
    user_id: Option<String>,
    reason: &'static str,
}

fn refuse(user_id: Option<&str>, reason: &'static str) -> Result<Result<String, Refusal>, ApiError> {
    Ok(Err(Refusal { user_id: user_id.map(str::to_owned), reason }))
}

/// The account the provider's identity signs in as, linked or provisioned
/// by the rules in this module's documentation, a member of the tenant.
async fn account(
    state: &AppState,
    connection: &SsoConnectionRow,
    identity: &Identity,
    ip: &str,
) -> Result<Result<String, Refusal>, ApiError> {
    let tenant_id = &connection.tenant_id;
    let mut tx = state.store.tenant_tx(tenant_id).await?;
    state.store.serialize_on(&mut tx, &format!("sso:{}:{}", connection.id, identity.subject)).await?;
    let linked = store::sso_identity(&mut tx, tenant_id, &connection.id, &identity.subject).await?;
    let user_id = match linked {
        Some(user_id) => {
            store::touch_sso_identity(&mut tx, tenant_id, &connection.id, &identity.subject).await?;
            user_id
        }
        None => {
            let email = identity.email.as_deref().map(validate::normalize_email).unwrap_or_default();
            if validate::email(&email).is_err() {
                return refuse(None, "the identity provider sent no usable email address");
            }
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            let claimed = store::sso_domains_of_tenant(&mut tx, tenant_id).await?;
            if !claimed.iter().any(|(c, d)| *c == connection.id && d == domain) {
                return refuse(None, "the email's domain is not one this connection claims");
            }
            match store::user_by_email(&mut tx, &email).await? {
                Some(existing) => {
                    // An account this tenant's SCIM made (no password, never
                    // anyone else's) is the tenant's own to link.
                    let provisioned_here = existing.password_hash.is_none()
                        && store::scim_user_of_account(&mut tx, tenant_id, &existing.id).await?.is_some();
                    if !identity.email_verified {
                        return refuse(
                            Some(&existing.id),
                            "an account with this email exists and the provider does not say the address is verified",
                        );
                    }
                    if !provisioned_here {
                        if connection.allow_linking == 0 {
                            return refuse(
                                Some(&existing.id),
                                "an account with this email exists and this connection does not link accounts",
                            );
                        }
                        if existing.email_verified_at.is_none() {
                            return refuse(
                                Some(&existing.id),
                                "an account with this email exists whose owner has not verified the address",
                            );
                        }
                    }
                    store::insert_sso_identity(&mut tx, tenant_id, &connection.id, &identity.subject, &existing.id)
                        .await?;
                    store::security_event(
                        &mut tx,
                        Some(tenant_id),
                        Some(&existing.id),
                        "sso.linked",
                        ip,
                        json!({"connection": connection.id}),
                    )
                    .await?;
                    existing.id
                }
                None => {
                    let name = identity
                        .name
                        .as_deref()
                        .map(str::trim)
                        .filter(|n| validate::name(n).is_ok())
                        .unwrap_or_else(|| email.split('@').next().unwrap_or_default())
                        .to_owned();
                    let user = store::insert_user(&mut tx, &email, &name, None, identity.email_verified).await?;
                    store::insert_sso_identity(&mut tx, tenant_id, &connection.id, &identity.subject, &user.id).await?;
                    store::security_event(
                        &mut tx,
                        Some(tenant_id),
                        Some(&user.id),
                        "sso.provisioned",
                        ip,
                        json!({"connection": connection.id}),
                    )
                    .await?;
                    user.id
                }
            }
        }
    };
    if store::membership(&mut tx, tenant_id, &user_id).await?.is_none() {
        if store::count_live_scim_tokens(&mut tx, tenant_id).await? > 0 {
            // Nothing of the refused sign-in stays (the transaction rolls back).
            return refuse(
                Some(&user_id),
                "this tenant provisions its people by SCIM and has not provisioned this one",
            );
        }
        super::room_for_one_more(state, &mut tx, tenant_id, LimitName::MaxMembers).await?;
        store::insert_membership(&mut tx, tenant_id, &user_id, &connection.default_role).await?;
        store::security_event(
            &mut tx,
            Some(tenant_id),
            Some(&user_id),
            "sso.member_added",
            ip,
            json!({"connection": connection.id, "role": connection.default_role}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Ok(user_id))
}

/// Whether password sign-in is closed to `user`: a tenant it belongs to
/// requires single sign-on and one of its connections claims the user's
/// email domain. Answers that tenant's slug. The tenant's owners keep their
/// password (break-glass: a broken provider must not lock the tenant out).
pub(super) async fn sso_required_for(state: &AppState, user: &User) -> Result<Option<String>, ApiError> {
    let Some((_, domain)) = user.email.rsplit_once('@') else {
        return Ok(None);
    };
    let mut tx = state.store.user_tx(&user.id).await?;
    let tenants = store::tenants_of_user(&mut tx, &user.id).await?;
    tx.commit().await?;
    for (row, role) in tenants {
        let tenant = Tenant::from(row);
        if role == "owner" || !tenant.sso_required {
            continue;
        }
        let mut tx = state.store.tenant_read_tx(&tenant.id).await?;
        let claimed = store::sso_domains_of_tenant(&mut tx, &tenant.id).await?;
        tx.commit().await?;
        if claimed.iter().any(|(_, d)| d == domain) {
            return Ok(Some(tenant.slug));
        }
    }
    Ok(None)
}
