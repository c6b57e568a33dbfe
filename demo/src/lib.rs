//! The demo product: a small CRM (contacts and deals) that runs behind the
//! gateway. It trusts only the gateway's signed identity assertion, verified
//! at Tollgate's JWKS, keeps each tenant's data apart by the asserted tenant,
//! and asks Tollgate's decision point about ownership and large deals, with
//! the caller's own credential. Its data lives in memory: it is a demo.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::DecodingKey;
use serde::Serialize;
use serde_json::{Value, json};
use tollgate_gateway::config::{GatewayFile, ResourceFile, RouteFile, UpstreamFile};
use tollgate_identity::assertion::{assertion_kid, verify_assertion};

/// Where Tollgate is, as the demo sees it.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Base URL of Tollgate's backend (for the JWKS and the decision point).
    pub tollgate_url: String,
    /// The issuer of Tollgate's assertions.
    pub issuer: String,
    /// This upstream's name in the gateway's routes: the assertions' audience.
    pub audience: String,
}

#[derive(Debug, Clone, Serialize)]
struct Contact {
    id: String,
    name: String,
    email: String,
    owner: String,
}

#[derive(Debug, Clone, Serialize)]
struct Deal {
    id: String,
    title: String,
    amount: i64,
    owner: String,
    status: String,
}

#[derive(Debug, Default)]
struct TenantData {
    contacts: BTreeMap<String, Contact>,
    deals: BTreeMap<String, Deal>,
}

struct Demo {
    config: DemoConfig,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    data: Mutex<HashMap<String, TenantData>>,
}

type Shared = Arc<Demo>;

/// A refusal as problem+json.
struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({"type": "urn:tollgate:demo:problem", "title": self.0.canonical_reason().unwrap_or(""),
                          "status": self.0.as_u16(), "detail": self.1});
        (self.0, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
    }
}

fn problem(status: StatusCode, detail: &str) -> Problem {
    Problem(status, detail.to_owned())
}

/// The caller, as the gateway asserted it: a person, or a person's API key
/// acting for them.
struct Caller {
    tenant: String,
    /// The person the call acts for, who owns what it creates.
    user: String,
    authorization: String,
}

impl Demo {
    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        if let Ok(keys) = self.keys.read()
            && let Some(k) = keys.get(kid)
        {
            return Some(k.clone());
        }
        // An unknown kid: fetch the JWKS again (a rotation happened).
        let url = format!("{}/.well-known/jwks.json", self.config.tollgate_url);
        let jwks: Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
        let mut fresh = HashMap::new();
        for k in jwks["keys"].as_array()? {
            if let (Some(id), Some(x)) = (k["kid"].as_str(), k["x"].as_str())
                && let Ok(key) = DecodingKey::from_ed_components(x)
            {
                fresh.insert(id.to_owned(), key);
            }
        }
        let found = fresh.get(kid).cloned();
        if let Ok(mut keys) = self.keys.write() {
            *keys = fresh;
        }
        found
    }

    /// Asks Tollgate's decision point, as the caller, whether it may do
    /// `action` to `entity`. Fails closed.
    async fn allowed(&self, caller: &Caller, action: &str, entity: Value) -> Result<bool, Problem> {
        let uid = entity["uid"].clone();
        let question = json!({"action": action, "resource": uid, "entities": [entity]});
        let response = self
            .http
            .post(format!("{}/api/v1/authorize", self.config.tollgate_url))
            .header(header::AUTHORIZATION, &caller.authorization)
            .json(&question)
            .send()
            .await
            .map_err(|_| problem(StatusCode::SERVICE_UNAVAILABLE, "the decision point is unreachable"))?;
        if !response.status().is_success() {
            return Err(problem(StatusCode::FORBIDDEN, "the decision point refused the question"));
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|_| problem(StatusCode::SERVICE_UNAVAILABLE, "the decision point answered nonsense"))?;
        Ok(answer["decision"] == "allow")
    }
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, demo: &Shared) -> Result<Self, Problem> {
        let unauthorized = || problem(StatusCode::UNAUTHORIZED, "a valid gateway assertion is required");
        let assertion =
            parts.headers.get("x-tollgate-assertion").and_then(|v| v.to_str().ok()).ok_or_else(unauthorized)?;
        let kid = assertion_kid(assertion).map_err(|_| unauthorized())?;
        let key = demo.key(&kid).await.ok_or_else(unauthorized)?;
        let claims = verify_assertion(assertion, &key, &demo.config.issuer, &demo.config.audience)
            .map_err(|_| unauthorized())?;
        let tenant = claims.tid.ok_or_else(|| problem(StatusCode::FORBIDDEN, "a tenant is required"))?;
        let user = claims
            .user
            .as_deref()
            .and_then(|u| u.strip_prefix("user:"))
            .ok_or_else(|| problem(StatusCode::FORBIDDEN, "the CRM is for people and their API keys"))?
            .to_owned();
        let authorization =
            parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        Ok(Caller { tenant, user, authorization })
    }
}

fn entity(kind: &str, id: &str, tenant: &str, owner: &str, amount: Option<i64>) -> Value {
    let mut attrs = json!({"tenant": {"__entity": {"type": "Tenant", "id": tenant}},
                           "owner": {"__entity": {"type": "User", "id": owner}}});
    if let Some(a) = amount {
        attrs["amount"] = json!(a);
    }
    json!({"uid": {"type": kind, "id": id}, "attrs": attrs, "parents": [{"type": "Tenant", "id": tenant}]})
}

fn text(value: &Value, field: &str, max: usize) -> Result<Option<String>, Problem> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(Problem(StatusCode::UNPROCESSABLE_ENTITY, format!("`{field}` must be 1 to {max} characters"))),
    }
}

fn with_data<T>(demo: &Demo, tenant: &str, f: impl FnOnce(&mut TenantData) -> T) -> Result<T, Problem> {
    let mut data = demo.data.lock().map_err(|_| problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    Ok(f(data.entry(tenant.to_owned()).or_default()))
}

async fn list_contacts(State(demo): State<Shared>, caller: Caller) -> Result<Json<Value>, Problem> {
    let items: Vec<Contact> = with_data(&demo, &caller.tenant, |d| d.contacts.values().cloned().collect())?;
    Ok(Json(json!({"items": items})))
}

async fn create_contact(
    State(demo): State<Shared>,
    caller: Caller,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let name =
        text(&body, "name", 100)?.ok_or_else(|| problem(StatusCode::UNPROCESSABLE_ENTITY, "`name` is required"))?;
    let email = text(&body, "email", 254)?.unwrap_or_default();
    let contact = Contact { id: uuid::Uuid::new_v4().to_string(), name, email, owner: caller.user.clone() };
    with_data(&demo, &caller.tenant, |d| d.contacts.insert(contact.id.clone(), contact.clone()))?;
    Ok((StatusCode::CREATED, Json(json!({"contact": contact}))))
}

fn find_contact(demo: &Demo, caller: &Caller, id: &str) -> Result<Contact, Problem> {
    with_data(demo, &caller.tenant, |d| d.contacts.get(id).cloned())?
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, "no such contact"))
}

async fn get_contact(
    State(demo): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"contact": find_contact(&demo, &caller, &id)?})))
}

async fn update_contact(
    State(demo): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, Problem> {
    let mut contact = find_contact(&demo, &caller, &id)?;
    let question = entity("Contact", &contact.id, &caller.tenant, &contact.owner, None);
    if !demo.allowed(&caller, "contact.update", question).await? {
        return Err(problem(StatusCode::FORBIDDEN, "not allowed to `contact.update`"));
    }
    if let Some(name) = text(&body, "name", 100)? {
        contact.name = name;
    }
    if let Some(email) = text(&body, "email", 254)? {
        contact.email = email;
    }
    with_data(&demo, &caller.tenant, |d| d.contacts.insert(contact.id.clone(), contact.clone()))?;
    Ok(Json(json!({"contact": contact})))
}

async fn delete_contact(
    State(demo): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let contact = find_contact(&demo, &caller, &id)?;
    let question = entity("Contact", &contact.id, &caller.tenant, &contact.owner, None);
    if !demo.allowed(&caller, "contact.delete", question).await? {
        return Err(problem(StatusCode::FORBIDDEN, "not allowed to `contact.delete`"));
    }
    with_data(&demo, &caller.tenant, |d| d.contacts.remove(&contact.id))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_deals(State(demo): State<Shared>, caller: Caller) -> Result<Json<Value>, Problem> {
    let items: Vec<Deal> = with_data(&demo, &caller.tenant, |d| d.deals.values().cloned().collect())?;
    Ok(Json(json!({"items": items})))
}

async fn create_deal(
    State(demo): State<Shared>,
    caller: Caller,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let title =
        text(&body, "title", 200)?.ok_or_else(|| problem(StatusCode::UNPROCESSABLE_ENTITY, "`title` is required"))?;
    let amount = body["amount"].as_i64().filter(|a| (0..=1_000_000_000).contains(a)).ok_or_else(|| {
        problem(StatusCode::UNPROCESSABLE_ENTITY, "`amount` must be a whole number from 0 to 1000000000")
    })?;
    let deal =
        Deal { id: uuid::Uuid::new_v4().to_string(), title, amount, owner: caller.user.clone(), status: "open".into() };
    with_data(&demo, &caller.tenant, |d| d.deals.insert(deal.id.clone(), deal.clone()))?;
    Ok((StatusCode::CREATED, Json(json!({"deal": deal}))))
}

fn find_deal(demo: &Demo, caller: &Caller, id: &str) -> Result<Deal, Problem> {
    with_data(demo, &caller.tenant, |d| d.deals.get(id).cloned())?
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, "no such deal"))
}

async fn get_deal(State(demo): State<Shared>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"deal": find_deal(&demo, &caller, &id)?})))
}

async fn close_deal(
    State(demo): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let mut deal = find_deal(&demo, &caller, &id)?;
    if deal.status != "open" {
        return Err(problem(StatusCode::CONFLICT, "the deal is already closed"));
    }
    let question = entity("Deal", &deal.id, &caller.tenant, &deal.owner, Some(deal.amount));
    if !demo.allowed(&caller, "deal.close", question).await? {
        return Err(problem(StatusCode::FORBIDDEN, "not allowed to `deal.close`"));
    }
    deal.status = "won".into();
    with_data(&demo, &caller.tenant, |d| d.deals.insert(deal.id.clone(), deal.clone()))?;
    Ok(Json(json!({"deal": deal})))
}

/// The pipeline report: what the tenant's deals add up to, by status. The
/// gateway lets only tenants whose plan has the `reports` feature here.
async fn pipeline_report(State(demo): State<Shared>, caller: Caller) -> Result<Json<Value>, Problem> {
    let (contacts, by_status) = with_data(&demo, &caller.tenant, |d| {
        let mut by_status: std::collections::BTreeMap<String, (u64, i64)> = std::collections::BTreeMap::new();
        for deal in d.deals.values() {
            let entry = by_status.entry(deal.status.clone()).or_default();
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(deal.amount);
        }
        (d.contacts.len(), by_status)
    })?;
    let deals: serde_json::Map<String, Value> = by_status
        .into_iter()
        .map(|(status, (count, amount))| (status, json!({"count": count, "amount": amount})))
        .collect();
    Ok(Json(json!({"contacts": contacts, "deals": deals})))
}

async fn fallback() -> Problem {
    problem(StatusCode::NOT_FOUND, "no such resource")
}

/// The CRM's routes.
pub fn app(config: DemoConfig) -> Router {
    let demo = Arc::new(Demo {
        config,
        http: reqwest::Client::new(),
        keys: RwLock::new(HashMap::new()),
        data: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/crm/contacts", get(list_contacts).post(create_contact))
        .route("/crm/contacts/{id}", get(get_contact).patch(update_contact).delete(delete_contact))
        .route("/crm/deals", get(list_deals).post(create_deal))
        .route("/crm/deals/{id}", get(get_deal))
        .route("/crm/deals/{id}/close", post(close_deal))
        .route("/crm/reports/pipeline", get(pipeline_report))
        .fallback(fallback)
        .with_state(demo)
}

/// The CRM's upstream name: the audience of the assertions it accepts.
pub const UPSTREAM: &str = "crm";

/// The gateway routes for the CRM at `addr`: coarse `crm.read` / `crm.write`
/// checks on the product's API (resource type `CrmApi`); the CRM asks the
/// decision point about ownership itself.
pub fn gateway_routes(addr: std::net::SocketAddr) -> GatewayFile {
    let resource = |param: Option<&str>, id: Option<&str>| ResourceFile {
        type_name: "CrmApi".to_owned(),
        param: param.map(str::to_owned),
        id: id.map(str::to_owned),
    };
    let routes = [
        (
            "crm-contacts",
            "/crm/contacts",
            &[("GET", "crm.read"), ("POST", "crm.write")][..],
            resource(None, Some("contacts")),
        ),
        (
            "crm-contact",
            "/crm/contacts/{id}",
            &[("GET", "crm.read"), ("PATCH", "crm.write"), ("DELETE", "crm.write")][..],
            resource(Some("id"), None),
        ),
        ("crm-deals", "/crm/deals", &[("GET", "crm.read"), ("POST", "crm.write")][..], resource(None, Some("deals"))),
        ("crm-deal", "/crm/deals/{id}", &[("GET", "crm.read")][..], resource(Some("id"), None)),
        ("crm-deal-close", "/crm/deals/{id}/close", &[("POST", "crm.write")][..], resource(Some("id"), None)),
        ("crm-reports", "/crm/reports/pipeline", &[("GET", "crm.read")][..], resource(None, Some("reports"))),
    ]
    .into_iter()
    .map(|(name, path, methods, resource)| RouteFile {
        // Reports are a paid feature.
        feature: (name == "crm-reports").then(|| "reports".to_owned()),
        rate_limit: None,
        name: name.to_owned(),
        path: path.to_owned(),
        upstream: UPSTREAM.to_owned(),
        methods: methods.iter().map(|(m, a)| ((*m).to_owned(), (*a).to_owned())).collect(),
        resource,
        // The CRM asks the decision point as the caller, with its credential.
        forward_authorization: true,
        upstream_authenticates: false,
    })
    .collect();
    GatewayFile {
        upstreams: [(UPSTREAM.to_owned(), UpstreamFile::at(addr))].into_iter().collect(),
        routes,
        ..GatewayFile::default()
    }
}
