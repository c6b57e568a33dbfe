//! A tenant's single sign-on connections, as its admins manage them: the
//! identity provider (an OIDC issuer, found by discovery when the
//! connection is saved, or a SAML provider's metadata, checked), the OIDC
//! client credentials (the secret sealed at rest, never shown again), the
//! claims read, the email domains the connection claims, the role people it
//! provisions get, and whether it may link existing accounts.
//!
//! A domain is claimed by one connection platform-wide, and only by an
//! admin whose own verified email is at that domain (or by a platform
//! administrator): the claim is what lets a provider provision and link
//! accounts of those addresses, and what `/sso/discover` and "SSO required"
//! act on, so nobody may claim an address space they have not shown to hold.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_identity::roles::ResolvedRole;
use tollgate_store::{self as store, SsoConnectionFields, SsoConnectionRow, now};

use super::Verb::{Delete, Get, Post, Put};
use super::validate::{self, Checks};
use super::{Api, Auth, audit};
use crate::auth::principal::Authenticated;
use crate::authz::{Action, open_tenant};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::saml::IdpMetadata;
use crate::sso::ClaimMap;
use crate::state::AppState;
use crate::views;

pub(super) const OIDC: &str = "oidc";
pub(super) const SAML: &str = "saml";
/// Largest SAML metadata document taken.
const MAX_METADATA_BYTES: usize = 256 * 1024;

/// How many connections a tenant may have.
pub const MAX_CONNECTIONS: usize = 10;
const MAX_DOMAINS: usize = 20;
const MAX_SCOPES: usize = 20;
/// Scopes asked for when a connection names none (`openid` is always asked).
const DEFAULT_SCOPES: [&str; 2] = ["email", "profile"];

pub fn routes(api: Api) -> Api {
    api.op(
        Post,
        "/tenants/{tenant_id}/sso/connections",
        "Connect an identity provider for single sign-on",
        Auth::Bearer,
        201,
        create,
    )
    .body::<ConnectionBody>()
    .op(Get, "/tenants/{tenant_id}/sso/connections", "The tenant's SSO connections", Auth::Bearer, 200, list)
    .op(Get, "/tenants/{tenant_id}/sso/connections/{connection_id}", "One SSO connection", Auth::Bearer, 200, show)
    .op(
        Put,
        "/tenants/{tenant_id}/sso/connections/{connection_id}",
        "Replace an SSO connection's settings (the secret is kept when not given)",
        Auth::Bearer,
        200,
        replace,
    )
    .body::<ConnectionBody>()
    .op(
        Delete,
        "/tenants/{tenant_id}/sso/connections/{connection_id}",
        "Remove an SSO connection and its linked identities",
        Auth::Bearer,
        204,
        remove,
    )
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConnectionBody {
    /// `oidc` or `saml`.
    #[serde(rename = "type")]
    kind: String,
    name: String,
    /// OIDC: the OpenID provider's issuer URL; its discovery document must answer.
    issuer: Option<String>,
    /// OIDC.
    client_id: Option<String>,
    /// OIDC: required when creating; kept when absent on replace.
    client_secret: Option<String>,
    /// OIDC: scopes besides `openid` (default `email profile`).
    scopes: Option<Vec<String>>,
    /// SAML: the identity provider's metadata (XML), or
    idp_metadata: Option<String>,
    /// SAML: where to fetch it (https).
    idp_metadata_url: Option<String>,
    /// Which claims (OIDC) or attributes (SAML) hold the email, its
    /// verification (OIDC) and the name.
    claims: Option<ClaimMap>,
    /// The email domains the connection provisions and links.
    domains: Vec<String>,
    /// The role of people it provisions (default `member`; never `owner`).
    default_role: Option<String>,
    /// Whether an existing account with a verified email of a claimed
    /// domain is linked on its first sign-in (default false).
    allow_linking: Option<bool>,
    /// Default true.
    enabled: Option<bool>,
}

/// A connection as the API shows it (never its secret).
pub(super) fn connection_view(state: &AppState, c: &SsoConnectionRow, domains: &[String]) -> Value {
    let claims: Value = serde_json::from_str(&c.claims).unwrap_or(Value::Null);
    let base = state.config.issuer.trim_end_matches('/');
    let mut view = json!({
        "id": c.id,
        "type": c.kind,
        "name": c.name,
        "claims": claims,
        "domains": domains,
        "default_role": c.default_role,
        "allow_linking": c.allow_linking != 0,
        "enabled": c.enabled != 0,
        "login_url": format!("{base}/api/v1/sso/{}/login?connection={}", c.tenant_id, c.id),
        "created_at": views::ts(c.created_at),
        "updated_at": views::ts(c.updated_at),
    });
    if c.kind == SAML {
        let sso_url = c.idp_metadata.as_deref().and_then(|xml| IdpMetadata::parse(xml).ok()).map(|m| m.sso_url);
        view["idp_entity_id"] = json!(c.issuer);
        view["idp_sso_url"] = json!(sso_url);
        view["sp_entity_id"] = json!(super::sso_login::sp_entity_id(state, &c.tenant_id));
        view["acs_url"] = json!(format!("{base}{}", super::sso_login::ACS_PATH));
        view["sp_metadata_url"] = json!(super::sso_login::sp_entity_id(state, &c.tenant_id));
    } else {
        view["issuer"] = json!(c.issuer);
        view["client_id"] = json!(c.client_id);
        view["client_secret_set"] = json!(!c.client_secret.is_empty());
        view["scopes"] = json!(c.scopes.split(' ').filter(|s| !s.is_empty()).collect::<Vec<_>>());
        view["redirect_uri"] = json!(format!("{base}{}", super::sso_login::CALLBACK_PATH));
    }
    view
}

/// Opens the tenant for `sso.manage`, refusing (402) a plan without SSO.
async fn open(state: &AppState, p: &Authenticated, tenant_id: &str) -> Result<store::Tx, ApiError> {
    let tx = open_tenant(state, p, tenant_id, Action::SsoManage).await?;
    if !p.tenant.entitlements.has_feature("sso", now()) {
        return Err(ApiError::FeatureMissing { feature: "sso", plans: state.lookups.catalog().plans_with("sso") });
    }
    Ok(tx)
}

/// The context a connection's client secret is sealed under.
pub(super) fn secret_context(tenant_id: &str) -> String {
    format!("sso-client:{tenant_id}")
}

/// A domain name: lowercase labels of letters, digits and hyphens.
fn domain(value: &str) -> Result<(), String> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if value.len() <= 253 && value.contains('.') && value.split('.').all(label) {
        Ok(())
    } else {
        Err(format!("`{value}` is not a domain name"))
    }
}

/// The body, checked, as the columns it becomes (the secret still plain).
struct Checked {
    kind: &'static str,
    name: String,
    /// OIDC: the issuer URL; SAML: the provider's entity id.
    issuer: String,
    client_id: String,
    scopes: String,
    claims: String,
    domains: Vec<String>,
    default_role: String,
    allow_linking: bool,
    enabled: bool,
    idp_metadata: Option<String>,
}

/// What was learnt from the provider before the connection is checked:
/// OIDC, that discovery answers; SAML, its metadata (fetched when given by
/// URL). Outside any transaction: the provider may be slow. What is not
/// acceptable as a URL is left to [`check`] to report.
enum Prepared {
    Oidc,
    Saml(Option<Box<IdpMetadata>>, Option<String>),
}

async fn prepare(state: &AppState, body: &ConnectionBody) -> Result<Prepared, ApiError> {
    if body.kind == SAML {
        let xml = match (&body.idp_metadata, &body.idp_metadata_url) {
            (Some(xml), None) => Some(xml.clone()),
            (None, Some(url)) => match state.sso.fetch_document(url.trim(), MAX_METADATA_BYTES).await {
                Ok(xml) => Some(xml),
                Err(e) => {
                    tracing::info!(url = %url, error = %e, "saml metadata fetch failed");
                    return Err(ApiError::field("idp_metadata_url", format!("no metadata could be read from `{url}`")));
                }
            },
            _ => None,
        };
        let parsed = match &xml {
            Some(xml) if xml.len() <= MAX_METADATA_BYTES => match IdpMetadata::parse(xml) {
                Ok(parsed) => Some(Box::new(parsed)),
                Err(e) => return Err(ApiError::field("idp_metadata", e.to_string())),
            },
            _ => None,
        };
        return Ok(Prepared::Saml(parsed, xml));
    }
    if body.kind == OIDC
        && let Some(issuer) = &body.issuer
    {
        let issuer = issuer.trim().trim_end_matches('/');
        if state.sso.check_issuer(issuer).is_ok()
            && let Err(e) = state.sso.metadata(issuer).await
        {
            tracing::info!(issuer = %issuer, error = %e, "sso discovery failed");
            return Err(ApiError::field("issuer", format!("no OpenID provider answers discovery at `{issuer}`")));
        }
    }
    Ok(Prepared::Oidc)
}

async fn check(
    state: &AppState,
    p: &Authenticated,
    tx: &mut store::Tx,
    tenant_id: &str,
    body: &ConnectionBody,
    prepared: Prepared,
) -> Result<Checked, ApiError> {
    let mut checks = Checks::default();
    let kind = match body.kind.as_str() {
        OIDC => OIDC,
        SAML => SAML,
        other => {
            checks.check("type", Err(format!("`{other}` is not a connection type; use `oidc` or `saml`")));
            OIDC
        }
    };
    checks.check("name", validate::name(&body.name));
    let printable = |v: &str, max: usize| !v.is_empty() && v.len() <= max && !v.chars().any(char::is_control);
    let mut scopes: Vec<String> = Vec::new();
    let (issuer, client_id, idp_metadata) = match prepared {
        Prepared::Saml(parsed, xml) => {
            for (field, given) in [
                ("issuer", body.issuer.is_some()),
                ("client_id", body.client_id.is_some()),
                ("client_secret", body.client_secret.is_some()),
                ("scopes", body.scopes.is_some()),
            ] {
                if given {
                    checks.check(field, Err("is for `oidc` connections".into()));
                }
            }
            if body.idp_metadata.is_some() == body.idp_metadata_url.is_some() {
                checks.check(
                    "idp_metadata",
                    Err("give the provider's metadata or `idp_metadata_url`, one of them".into()),
                );
            } else if xml.as_ref().is_some_and(|x| x.len() > MAX_METADATA_BYTES) {
                checks.check("idp_metadata", Err(format!("must be at most {MAX_METADATA_BYTES} bytes")));
            }
            let entity_id = parsed.map(|m| m.entity_id).unwrap_or_default();
            (entity_id, String::new(), xml)
        }
        Prepared::Oidc => {
            for (field, given) in
                [("idp_metadata", body.idp_metadata.is_some()), ("idp_metadata_url", body.idp_metadata_url.is_some())]
            {
                if given {
                    checks.check(field, Err("is for `saml` connections".into()));
                }
            }
            let issuer = body.issuer.as_deref().unwrap_or("").trim().trim_end_matches('/').to_owned();
            let issuer_ok = state.sso.check_issuer(&issuer).map(|_| ()).map_err(|_| {
                "must be the provider's https URL (its discovery document is at `/.well-known/openid-configuration` under it)"
                    .to_owned()
            });
            checks.check("issuer", issuer_ok);
            let client_id = body.client_id.clone().unwrap_or_default();
            checks.check(
                "client_id",
                if printable(&client_id, 255) { Ok(()) } else { Err("must be 1 to 255 printable characters".into()) },
            );
            if let Some(secret) = &body.client_secret {
                checks.check(
                    "client_secret",
                    if printable(secret, 1024) { Ok(()) } else { Err("must be 1 to 1024 printable characters".into()) },
                );
            }
            scopes = match &body.scopes {
                None => DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                Some(list) => list.iter().filter(|s| s.as_str() != "openid").cloned().collect(),
            };
            let scope_ok = |s: &String| {
                !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:./".contains(&b))
            };
            if scopes.len() > MAX_SCOPES || !scopes.iter().all(scope_ok) {
                checks.check("scopes", Err(format!("at most {MAX_SCOPES} scopes of letters, digits and `_-:./`")));
            }
            (issuer, client_id, None)
        }
    };
    let claims = body.claims.clone().unwrap_or_default();
    for (field, claim) in [("email", &claims.email), ("email_verified", &claims.email_verified), ("name", &claims.name)]
    {
        let ok = !claim.is_empty() && claim.len() <= 256 && claim.bytes().all(|b| b.is_ascii_graphic());
        checks.check(&format!("claims.{field}"), if ok { Ok(()) } else { Err("must be a claim name".into()) });
    }
    let mut domains: Vec<String> = body.domains.iter().map(|d| d.trim().to_lowercase()).collect();
    domains.sort();
    domains.dedup();
    if domains.is_empty() || domains.len() > MAX_DOMAINS {
        checks.check("domains", Err(format!("name 1 to {MAX_DOMAINS} email domains the provider speaks for")));
    }
    for d in &domains {
        checks.check("domains", domain(d));
    }
    // A claim needs proof: the caller's own verified address at the domain.
    let proven = p.user().filter(|u| u.email_verified).and_then(|u| u.email.rsplit_once('@')).map(|(_, d)| d);
    let platform_admin = p.user().is_some_and(|u| u.platform_admin);
    for d in &domains {
        if !platform_admin && proven != Some(d.as_str()) {
            checks.check(
                "domains",
                Err(format!(
                    "`{d}` is not the domain of your verified email address; a platform administrator can claim it"
                )),
            );
        }
    }
    let default_role = body.default_role.clone().unwrap_or_else(|| "member".to_owned());
    let resolved = ResolvedRole::load(tx, tenant_id, &default_role).await?;
    checks.check(
        "default_role",
        match resolved.base {
            None => Err(format!("`{default_role}` is not a role of this tenant")),
            Some(_) if default_role == "owner" => Err("single sign-on never makes owners".to_owned()),
            Some(_) => Ok(()),
        },
    );
    checks.finish()?;
    Ok(Checked {
        kind,
        name: body.name.trim().to_owned(),
        issuer,
        client_id,
        scopes: scopes.join(" "),
        claims: serde_json::to_string(&claims).unwrap_or_default(),
        domains,
        default_role,
        allow_linking: body.allow_linking.unwrap_or(false),
        enabled: body.enabled.unwrap_or(true),
        idp_metadata,
    })
}

fn fields<'a>(c: &'a Checked, sealed_secret: &'a str) -> SsoConnectionFields<'a> {
    SsoConnectionFields {
        name: &c.name,
        issuer: &c.issuer,
        client_id: &c.client_id,
        client_secret: sealed_secret,
        scopes: &c.scopes,
        claims: &c.claims,
        default_role: &c.default_role,
        allow_linking: c.allow_linking,
        enabled: c.enabled,
        idp_metadata: c.idp_metadata.as_deref(),
    }
}

/// Claims `domains` for connection `id`, answering 409 for one another
/// connection holds.
async fn claim_domains(tx: &mut store::Tx, tenant_id: &str, id: &str, domains: &[String]) -> Result<(), ApiError> {
    match store::replace_sso_domains(tx, tenant_id, id, domains).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_unique_violation() => {
            Err(ApiError::Conflict("a domain is already claimed by another single sign-on connection".into()))
        }
        Err(e) => Err(e.into()),
    }
}

async fn domains_of(tx: &mut store::Tx, tenant_id: &str, id: &str) -> Result<Vec<String>, ApiError> {
    Ok(store::sso_domains_of_tenant(tx, tenant_id)
        .await?
        .into_iter()
        .filter(|(c, _)| c == id)
        .map(|(_, d)| d)
        .collect())
}

async fn create(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<ConnectionBody>,
) -> Result<Response, ApiError> {
    drop(open(&state, &p, &tenant_id).await?);
    if body.kind == OIDC && body.client_secret.is_none() {
        return Err(ApiError::field("client_secret", "is required"));
    }
    let prepared = prepare(&state, &body).await?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    store::lock_tenant(&mut tx, &tenant_id).await?;
    let checked = check(&state, &p, &mut tx, &tenant_id, &body, prepared).await?;
    if store::sso_connections(&mut tx, &tenant_id).await?.len() >= MAX_CONNECTIONS {
        return Err(ApiError::Conflict(format!("a tenant has at most {MAX_CONNECTIONS} SSO connections")));
    }
    let sealed = match &body.client_secret {
        Some(secret) => state.sealer.seal(secret, &secret_context(&tenant_id)),
        None => String::new(),
    };
    let row =
        store::insert_sso_connection(&mut tx, &tenant_id, checked.kind, &fields(&checked, &sealed), &p.actor_id())
            .await?;
    claim_domains(&mut tx, &tenant_id, &row.id, &checked.domains).await?;
    audit(
        &mut tx,
        &p,
        &tenant_id,
        None,
        "sso.connection_created",
        json!({"connection": row.id, "issuer": row.issuer, "domains": checked.domains}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(connection_view(&state, &row, &checked.domains))).into_response())
}

async fn list(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open(&state, &p, &tenant_id).await?;
    let rows = store::sso_connections(&mut tx, &tenant_id).await?;
    let claimed = store::sso_domains_of_tenant(&mut tx, &tenant_id).await?;
    tx.commit().await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|c| {
            let domains: Vec<String> = claimed.iter().filter(|(id, _)| *id == c.id).map(|(_, d)| d.clone()).collect();
            connection_view(&state, c, &domains)
        })
        .collect();
    Ok(ApiJson(json!({"items": items})))
}

async fn show(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, id)): ApiPath<(String, String)>,
) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = open(&state, &p, &tenant_id).await?;
    let row = store::sso_connection(&mut tx, &tenant_id, &id).await?.ok_or(ApiError::NotFound)?;
    let domains = domains_of(&mut tx, &tenant_id, &id).await?;
    tx.commit().await?;
    Ok(ApiJson(connection_view(&state, &row, &domains)))
}

async fn replace(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ConnectionBody>,
) -> Result<ApiJson<Value>, ApiError> {
    drop(open(&state, &p, &tenant_id).await?);
    let prepared = prepare(&state, &body).await?;
    let mut tx = state.store.tenant_tx(&tenant_id).await?;
    store::lock_tenant(&mut tx, &tenant_id).await?;
    let old = store::sso_connection(&mut tx, &tenant_id, &id).await?.ok_or(ApiError::NotFound)?;
    if old.kind != body.kind {
        return Err(ApiError::field("type", format!("a `{}` connection stays one", old.kind)));
    }
    let checked = check(&state, &p, &mut tx, &tenant_id, &body, prepared).await?;
    let sealed = match &body.client_secret {
        Some(secret) => state.sealer.seal(secret, &secret_context(&tenant_id)),
        None => old.client_secret.clone(),
    };
    store::update_sso_connection(&mut tx, &tenant_id, &id, &fields(&checked, &sealed)).await?;
    claim_domains(&mut tx, &tenant_id, &id, &checked.domains).await?;
    let row = store::sso_connection(&mut tx, &tenant_id, &id).await?.ok_or(ApiError::NotFound)?;
    audit(
        &mut tx,
        &p,
        &tenant_id,
        None,
        "sso.connection_updated",
        json!({"connection": id, "issuer": row.issuer, "domains": checked.domains,
               "secret_replaced": body.client_secret.is_some(), "enabled": checked.enabled}),
    )
    .await?;
    tx.commit().await?;
    Ok(ApiJson(connection_view(&state, &row, &checked.domains)))
}

async fn remove(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath((tenant_id, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut tx = open(&state, &p, &tenant_id).await?;
    if !store::delete_sso_connection(&mut tx, &tenant_id, &id).await? {
        return Err(ApiError::NotFound);
    }
    audit(&mut tx, &p, &tenant_id, None, "sso.connection_deleted", json!({"connection": id})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
