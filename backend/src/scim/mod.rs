//! The SCIM 2.0 service at `/scim/v2` (RFC 7643, RFC 7644): identity
//! providers provision a tenant's users and groups with the tenant's SCIM
//! token. The protocol (filters, PATCH, schemas) is `tollgate-scim`'s; this
//! module is the HTTP surface, the token check, and what provisioning does
//! to the tenant's members, groups, sessions and keys ([`provision`]).
//!
//! A token reaches its own tenant only: every look-up is bound to the
//! token's tenant, so another tenant's ids are 404 like ids that do not
//! exist. Errors are RFC 7644 §3.12 documents in `application/scim+json`.

mod bulk;
mod groups;
pub(crate) mod provision;
mod users;

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tollgate_identity::credentials::tenant_with_entitlements;
use tollgate_identity::principal::TenantStatus;
use tollgate_identity::secrets;
use tollgate_scim::schema::{self, GROUP, LIST_RESPONSE_SCHEMA, USER};
use tollgate_scim::{AttrPath, ScimError, ScimType};
use tollgate_store::{self as store, StoreError, now};

use crate::auth::principal::client_ip;
use crate::state::AppState;

/// The media type of every SCIM body.
pub const SCIM_JSON: &str = "application/scim+json";
/// The most results one page holds.
pub const MAX_RESULTS: i64 = 200;
/// The most operations one bulk request holds, and its largest body.
pub const MAX_BULK_OPERATIONS: usize = 100;
pub const MAX_BULK_BYTES: usize = 1024 * 1024;

/// A SCIM error as a response; store failures are logged and answered 500
/// without their detail.
#[derive(Debug)]
pub struct Failure(pub ScimError);

impl From<ScimError> for Failure {
    fn from(e: ScimError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error in a SCIM request");
        Self(ScimError::status(500, "internal error"))
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<crate::problem::ApiError> for Failure {
    fn from(e: crate::problem::ApiError) -> Self {
        use crate::problem::ApiError;
        Self(match e {
            ApiError::PlanLimit { limit, value, plan } => {
                ScimError::status(403, format!("the tenant's plan `{plan}` allows at most {value} ({limit})"))
            }
            ApiError::Conflict(detail) => ScimError::status(409, detail),
            ApiError::NotFound => ScimError::status(404, "not found"),
            other => {
                tracing::error!(error = %other, "unexpected error in a SCIM request");
                ScimError::status(500, "internal error")
            }
        })
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.0.document().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"scim\""));
        }
        response
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// A SCIM document answer, with its `ETag` and `Location` when it has them.
pub struct Scim {
    pub status: StatusCode,
    pub body: Value,
}

impl IntoResponse for Scim {
    fn into_response(self) -> Response {
        let etag = self.body.pointer("/meta/version").and_then(Value::as_str).map(str::to_owned);
        let location = (self.status == StatusCode::CREATED)
            .then(|| self.body.pointer("/meta/location").and_then(Value::as_str).map(str::to_owned))
            .flatten();
        let mut response = (self.status, self.body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
            headers.insert(header::ETAG, etag);
        }
        if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        response
    }
}

/// The tenant whose SCIM token authenticated the request.
#[derive(Debug, Clone)]
pub struct Client {
    pub tenant_id: String,
    /// Who acts, for the audit log: `ScimToken::<id>` (or the person whose
    /// settings change re-syncs the tenant).
    pub actor: String,
    pub ip: String,
    /// `https://host/scim/v2`, for `location`s.
    pub base: String,
}

fn unauthorized() -> Failure {
    Failure(ScimError::status(401, "a valid SCIM bearer token of the tenant is required"))
}

impl FromRequestParts<AppState> for Client {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let value = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(unauthorized)?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(unauthorized()),
        };
        let prefix = secrets::scim_token_prefix(token).ok_or_else(unauthorized)?;
        let mut tx = state.store.key_prefix_read_tx(prefix).await?;
        let row = store::scim_token_by_prefix(&mut tx, prefix).await?;
        tx.commit().await?;
        let row = row.filter(|r| r.revoked_at.is_none() && secrets::matches(token, &r.secret_hash));
        let row = row.ok_or_else(unauthorized)?;
        let mut tx = state.store.tenant_read_tx(&row.tenant_id).await?;
        let tenant = match store::tenant_by_id(&mut tx, &row.tenant_id).await? {
            Some(t) => tenant_with_entitlements(&mut tx, &state.lookups.catalog(), t).await?,
            None => return Err(unauthorized()),
        };
        tx.commit().await?;
        if tenant.status != TenantStatus::Active {
            return Err(Failure(ScimError::status(403, "the tenant is not active")));
        }
        if !tenant.entitlements.has_feature("scim", now()) {
            return Err(Failure(ScimError::status(
                403,
                format!("the tenant's plan `{}` does not include SCIM provisioning", tenant.plan),
            )));
        }
        if row.last_used_at.is_none_or(|t| t < now() - 60) {
            let mut tx = state.store.tenant_tx(&row.tenant_id).await?;
            store::touch_scim_token(&mut tx, &row.tenant_id, &row.id).await?;
            tx.commit().await?;
        }
        Ok(Client {
            tenant_id: row.tenant_id,
            actor: format!("ScimToken::{}", row.id),
            ip: client_ip(parts),
            base: format!("{}/scim/v2", state.config.issuer.trim_end_matches('/')),
        })
    }
}

/// A JSON body sent as `application/scim+json` or `application/json`.
pub struct Body(pub Value);

impl FromRequest<AppState> for Body {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !media.is_empty() && media != SCIM_JSON && media != "application/json" {
            return Err(Failure(ScimError::status(415, format!("send `{SCIM_JSON}` or `application/json`"))));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Failure(ScimError::status(413, format!("a request body is at most {MAX_BULK_BYTES} bytes")))
            } else {
                Failure(ScimError::typed(ScimType::InvalidSyntax, "the body could not be read"))
            }
        })?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| Failure(ScimError::typed(ScimType::InvalidSyntax, format!("the body is not JSON: {e}"))))?;
        Ok(Body(value))
    }
}

/// `W/"<version>"`.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// Refuses a write whose `If-Match` (or bulk `version`) names another
/// version of the resource (412).
pub fn check_version(if_match: Option<&str>, version: i64) -> Result<()> {
    match if_match {
        Some(wanted) if !etag_matches(wanted, version) => {
            Err(Failure(ScimError::status(412, "the resource has changed since that version (If-Match)")))
        }
        _ => Ok(()),
    }
}

/// The `If-Match` header of a write.
pub fn if_match(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
}

/// Whether a list of entity tags (or `*`) names `version`, weakly compared.
fn etag_matches(list: &str, version: i64) -> bool {
    let current = etag(version);
    list.split(',').map(str::trim).any(|t| t == "*" || t == current || t == current.trim_start_matches("W/"))
}

/// Whether a read's `If-None-Match` names the current version (304).
pub fn not_modified(headers: &HeaderMap, version: i64) -> bool {
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|l| etag_matches(l, version))
}

pub fn not_modified_response(version: i64) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// A list or search request: filter, sorting, page, projection.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub filter: Option<String>,
    pub sort_by: Option<String>,
    pub descending: bool,
    pub start_index: i64,
    pub count: i64,
    pub attributes: Vec<AttrPath>,
    pub excluded: Vec<AttrPath>,
}

/// `attributes` and `excludedAttributes` of a read.
#[derive(Debug, Default, Clone)]
pub struct Projection {
    pub attributes: Vec<AttrPath>,
    pub excluded: Vec<AttrPath>,
}

impl Projection {
    pub fn from_query(query: &HashMap<String, String>) -> Result<Self> {
        let get = |name: &str| query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        Ok(Self {
            attributes: schema::attribute_list(get("attributes"))?,
            excluded: schema::attribute_list(get("excludedAttributes"))?,
        })
    }

    pub fn apply(&self, resource: &mut Value) {
        schema::project(resource, &self.attributes, &self.excluded);
    }

    /// Whether the projection leaves `attr` out (so it need not be loaded).
    pub fn omits(&self, attr: &str) -> bool {
        self.excluded.iter().any(|p| p.is(attr) && p.sub.is_none())
            || (!self.attributes.is_empty() && !self.attributes.iter().any(|p| p.is(attr)))
    }
}

fn number(value: Option<&Value>, name: &str) -> Result<Option<i64>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad_number(name)),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad_number(name)),
        Some(_) => Err(bad_number(name)),
    }
}

fn bad_number(name: &str) -> Failure {
    Failure(ScimError::typed(ScimType::InvalidValue, format!("`{name}` must be an integer")))
}

impl ListQuery {
    /// From URL parameters (GET) or a SearchRequest body (POST `.search`),
    /// both read as JSON members by case-insensitive name.
    fn from_members(get: &dyn Fn(&str) -> Option<Value>) -> Result<Self> {
        let text = |name: &str| -> Result<Option<String>> {
            match get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(Value::Array(items)) if name.ends_with("ttributes") => {
                    Ok(Some(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")))
                }
                Some(_) => Err(Failure(ScimError::typed(ScimType::InvalidValue, format!("`{name}` must be a string")))),
            }
        };
        let descending = match text("sortOrder")?.as_deref() {
            None => false,
            Some(o) if o.eq_ignore_ascii_case("ascending") => false,
            Some(o) if o.eq_ignore_ascii_case("descending") => true,
            Some(_) => {
                return Err(Failure(ScimError::typed(
                    ScimType::InvalidValue,
                    "`sortOrder` is `ascending` or `descending`",
                )));
            }
        };
        Ok(Self {
            filter: text("filter")?.filter(|f| !f.trim().is_empty()),
            sort_by: text("sortBy")?.filter(|s| !s.trim().is_empty()),
            descending,
            // RFC 7644 §3.4.2.4: below 1 means 1; a negative count means 0.
            start_index: number(get("startIndex").as_ref(), "startIndex")?.unwrap_or(1).max(1),
            count: number(get("count").as_ref(), "count")?.unwrap_or(100).clamp(0, MAX_RESULTS),
            attributes: schema::attribute_list(text("attributes")?.as_deref())?,
            excluded: schema::attribute_list(text("excludedAttributes")?.as_deref())?,
        })
    }

    pub fn from_url(query: &HashMap<String, String>) -> Result<Self> {
        Self::from_members(&|name| {
            query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| Value::String(v.clone()))
        })
    }

    pub fn from_search(body: &Value) -> Result<Self> {
        let Value::Object(map) = body else {
            return Err(Failure(ScimError::typed(ScimType::InvalidSyntax, "a SearchRequest is a JSON object")));
        };
        Self::from_members(&|name| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()))
    }

    pub fn projection(&self) -> Projection {
        Projection { attributes: self.attributes.clone(), excluded: self.excluded.clone() }
    }
}

/// A ListResponse of one page.
pub fn list_response(resources: Vec<Value>, total: i64, start_index: i64) -> Scim {
    Scim {
        status: StatusCode::OK,
        body: json!({
            "schemas": [LIST_RESPONSE_SCHEMA],
            "totalResults": total,
            "startIndex": start_index,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    }
}

/// The `/scim/v2` router (paths relative to it).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema_by_id))
        .route("/Users", get(|s, c, p| list(Kind::Users, s, c, p)).post(|s, c, b| create(Kind::Users, s, c, b)))
        .route("/Users/.search", post(|s, c, b| search(Kind::Users, s, c, b)))
        .route(
            "/Users/{id}",
            get(|s, c, i, p, h| read(Kind::Users, s, c, i, p, h))
                .put(|s, c, i, h, b| replace(Kind::Users, s, c, i, h, b))
                .patch(|s, c, i, h, b| patch(Kind::Users, s, c, i, h, b))
                .delete(|s, c, i, h| delete(Kind::Users, s, c, i, h)),
        )
        .route("/Groups", get(|s, c, p| list(Kind::Groups, s, c, p)).post(|s, c, b| create(Kind::Groups, s, c, b)))
        .route("/Groups/.search", post(|s, c, b| search(Kind::Groups, s, c, b)))
        .route(
            "/Groups/{id}",
            get(|s, c, i, p, h| read(Kind::Groups, s, c, i, p, h))
                .put(|s, c, i, h, b| replace(Kind::Groups, s, c, i, h, b))
                .patch(|s, c, i, h, b| patch(Kind::Groups, s, c, i, h, b))
                .delete(|s, c, i, h| delete(Kind::Groups, s, c, i, h)),
        )
        .route("/Bulk", post(bulk::bulk))
        .fallback(|| async { Failure(ScimError::status(404, "no such SCIM endpoint")) })
        .method_not_allowed_fallback(|| async { Failure(ScimError::status(405, "method not allowed here")) })
        .layer(DefaultBodyLimit::max(MAX_BULK_BYTES))
}

/// The two resource types: every operation, for the endpoints and for
/// bulk alike, goes through here to the type's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Users,
    Groups,
}

impl Kind {
    /// The type a bulk path names (`/Users`, `Groups`).
    pub fn named(segment: &str) -> Option<Self> {
        match segment {
            "Users" => Some(Kind::Users),
            "Groups" => Some(Kind::Groups),
            _ => None,
        }
    }

    pub async fn create(self, ctx: &Ctx<'_>, body: &Value) -> Result<Value> {
        match self {
            Kind::Users => users::create_op(ctx, body).await,
            Kind::Groups => groups::create_op(ctx, body).await,
        }
    }

    pub async fn replace(self, ctx: &Ctx<'_>, id: &str, body: &Value, if_match: Option<&str>) -> Result<Value> {
        match self {
            Kind::Users => users::replace_op(ctx, id, body, if_match).await,
            Kind::Groups => groups::replace_op(ctx, id, body, if_match).await,
        }
    }

    pub async fn patch(self, ctx: &Ctx<'_>, id: &str, body: &Value, if_match: Option<&str>) -> Result<Value> {
        match self {
            Kind::Users => users::patch_op(ctx, id, body, if_match).await,
            Kind::Groups => groups::patch_op(ctx, id, body, if_match).await,
        }
    }

    pub async fn delete(self, ctx: &Ctx<'_>, id: &str, if_match: Option<&str>) -> Result<()> {
        match self {
            Kind::Users => users::delete_op(ctx, id, if_match).await,
            Kind::Groups => groups::delete_op(ctx, id, if_match).await,
        }
    }

    async fn page(self, ctx: &Ctx<'_>, q: &ListQuery) -> Result<Scim> {
        match self {
            Kind::Users => users::page(ctx, q).await,
            Kind::Groups => groups::page(ctx, q).await,
        }
    }

    async fn read(self, ctx: &Ctx<'_>, id: &str, projection: &Projection, headers: &HeaderMap) -> Result<Response> {
        match self {
            Kind::Users => users::get_op(ctx, id, projection, headers).await,
            Kind::Groups => groups::get_op(ctx, id, projection, headers).await,
        }
    }
}

async fn list(kind: Kind, State(state): State<AppState>, client: Client, params: Params) -> Result<Scim> {
    let q = ListQuery::from_url(&params.0)?;
    kind.page(&Ctx { state: &state, client: &client }, &q).await
}

async fn search(kind: Kind, State(state): State<AppState>, client: Client, Body(body): Body) -> Result<Scim> {
    let q = ListQuery::from_search(&body)?;
    kind.page(&Ctx { state: &state, client: &client }, &q).await
}

async fn read(
    kind: Kind,
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response> {
    let projection = Projection::from_query(&params.0)?;
    kind.read(&Ctx { state: &state, client: &client }, &id, &projection, &headers).await
}

async fn create(kind: Kind, State(state): State<AppState>, client: Client, Body(body): Body) -> Result<Scim> {
    let resource = kind.create(&Ctx { state: &state, client: &client }, &body).await?;
    Ok(Scim { status: StatusCode::CREATED, body: resource })
}

async fn replace(
    kind: Kind,
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Scim> {
    let resource = kind.replace(&Ctx { state: &state, client: &client }, &id, &body, if_match(&headers)).await?;
    Ok(Scim { status: StatusCode::OK, body: resource })
}

async fn patch(
    kind: Kind,
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Scim> {
    let resource = kind.patch(&Ctx { state: &state, client: &client }, &id, &body, if_match(&headers)).await?;
    Ok(Scim { status: StatusCode::OK, body: resource })
}

async fn delete(
    kind: Kind,
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    kind.delete(&Ctx { state: &state, client: &client }, &id, if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn service_provider_config(client: Client) -> Scim {
    Scim {
        status: StatusCode::OK,
        body: json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": true, "maxOperations": MAX_BULK_OPERATIONS, "maxPayloadSize": MAX_BULK_BYTES},
            "filter": {"supported": true, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": false},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "The tenant's SCIM token (`tgs_...`), created by a tenant admin at /api/v1/tenants/{id}/scim-tokens",
                "primary": true,
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{}/ServiceProviderConfig", client.base)},
        }),
    }
}

fn all_schemas(base: &str) -> Vec<Value> {
    let mut docs = vec![USER.schema_document(base)];
    docs.extend(USER.extension_document(base));
    docs.push(GROUP.schema_document(base));
    docs
}

async fn resource_types(client: Client) -> Scim {
    let types = vec![USER.resource_type_document(&client.base), GROUP.resource_type_document(&client.base)];
    let total = types.len() as i64;
    list_response(types, total, 1)
}

async fn resource_type(client: Client, Path(id): Path<String>) -> Result<Scim> {
    [USER, GROUP]
        .into_iter()
        .find(|t| t.name == id)
        .map(|t| Scim { status: StatusCode::OK, body: t.resource_type_document(&client.base) })
        .ok_or_else(|| Failure(ScimError::status(404, format!("no resource type `{id}`"))))
}

async fn schemas(client: Client) -> Scim {
    let docs = all_schemas(&client.base);
    let total = docs.len() as i64;
    list_response(docs, total, 1)
}

async fn schema_by_id(client: Client, Path(id): Path<String>) -> Result<Scim> {
    all_schemas(&client.base)
        .into_iter()
        .find(|d| d["id"] == id.as_str())
        .map(|body| Scim { status: StatusCode::OK, body })
        .ok_or_else(|| Failure(ScimError::status(404, format!("no schema `{id}`"))))
}

/// URL parameters, as a map.
pub type Params = Query<HashMap<String, String>>;

/// The state and client of a SCIM request, shared by the endpoints and bulk.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub client: &'a Client,
}

/// Records a SCIM change in the tenant's audit log.
pub async fn audit(
    tx: &mut store::Tx,
    client: &Client,
    subject: Option<&str>,
    event: &str,
    mut details: Value,
) -> Result<()> {
    details["by"] = json!(client.actor);
    store::security_event(tx, Some(&client.tenant_id), subject, event, &client.ip, details).await?;
    Ok(())
}

/// A `State` extractor alias for handlers.
pub type St = State<AppState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags_compare_weakly() {
        assert!(etag_matches("W/\"3\"", 3));
        assert!(etag_matches("\"3\"", 3));
        assert!(etag_matches("W/\"1\", W/\"3\"", 3));
        assert!(etag_matches("*", 9));
        assert!(!etag_matches("W/\"2\"", 3));
    }

    #[test]
    fn list_parameters_follow_the_rfc() {
        let q = |pairs: &[(&str, &str)]| {
            ListQuery::from_url(&pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
        };
        let l = q(&[("startIndex", "0"), ("count", "-4"), ("SORTORDER", "descending")]).unwrap();
        assert_eq!((l.start_index, l.count, l.descending), (1, 0, true));
        assert_eq!(q(&[("count", "100000")]).unwrap().count, MAX_RESULTS);
        assert!(q(&[("count", "many")]).is_err());
        assert!(q(&[("sortOrder", "sideways")]).is_err());
        let s = ListQuery::from_search(&json!({"filter": "userName eq \"a\"", "attributes": ["userName", "emails"]}))
            .unwrap();
        assert_eq!(s.attributes.len(), 2);
    }
}
