//! The `/api/v1` HTTP API. Routes are registered through [`Api`], which
//! builds the axum router and records each operation, so the OpenAPI document
//! is generated from the same table that serves requests.

mod accounts;
mod authorize;
mod groups;
mod invitations;
mod keys;
mod members;
mod mfa;
mod plans;
mod policies;
mod reset;
mod scim;
mod session;
mod sso;
mod sso_login;
mod system;
mod tenants;
mod usage;
pub(crate) mod validate;

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use serde_json::{Map, Value, json};

use crate::state::AppState;

pub(crate) use groups::MAX_GROUPS;
pub(crate) use invitations::invite;
pub(crate) use mfa::totp_context;
pub(crate) use plans::room_for_one_more;
pub use system::{healthz, jwks, readyz};

/// Whether an operation needs a bearer credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Public,
    Bearer,
}

/// Records in the tenant's security events that the caller did `event`,
/// about `subject` when the change concerns a user, with `details` and who
/// did it (`by`).
async fn audit(
    tx: &mut tollgate_store::Tx,
    p: &tollgate_identity::principal::Principal,
    tenant_id: &str,
    subject: Option<&str>,
    event: &str,
    mut details: Value,
) -> Result<(), crate::problem::ApiError> {
    details["by"] = json!(p.actor_id());
    tollgate_store::security_event(tx, Some(tenant_id), subject, event, &p.client_ip, details).await?;
    Ok(())
}

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

#[derive(Debug, Clone)]
struct Operation {
    method: Verb,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    auth: Auth,
    success: u16,
    body: Option<Value>,
}

/// Routes being registered, with their descriptions.
pub struct Api {
    router: Router<AppState>,
    operations: Vec<Operation>,
    tag: &'static str,
}

impl Api {
    fn new() -> Self {
        Self { router: Router::new(), operations: Vec::new(), tag: "" }
    }

    fn tag(mut self, tag: &'static str) -> Self {
        self.tag = tag;
        self
    }

    /// Registers `handler` for `method` (`get`, `post`, `put`, `patch`, `delete`)
    /// on `path`, answering `success` when it succeeds.
    fn op<H, T>(
        mut self,
        method: Verb,
        path: &'static str,
        summary: &'static str,
        auth: Auth,
        success: u16,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.router = self.router.route(path, on(method.filter(), handler));
        self.operations.push(Operation { method, path, tag: self.tag, summary, auth, success, body: None });
        self
    }

    /// Declares the JSON body of the operation registered last, for the
    /// OpenAPI document (the handler's extractor enforces it).
    fn body<B: schemars::JsonSchema>(mut self) -> Self {
        if let Some(op) = self.operations.last_mut() {
            op.body = serde_json::to_value(schemars::schema_for!(B)).ok();
        }
        self
    }

    /// The OpenAPI 3.1 document of the registered operations.
    fn openapi(&self) -> Value {
        let mut paths = Map::new();
        for op in &self.operations {
            let params: Vec<Value> = op
                .path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
                .collect();
            let mut responses = Map::new();
            responses.insert(op.success.to_string(), json!({"description": "success"}));
            responses.insert(
                "default".into(),
                json!({"description": "an RFC 9457 problem",
                       "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}),
            );
            let mut operation = json!({
                "operationId": format!("{}_{}", op.method.name(), op.path.replace(['/', '{', '}', '-', '.'], "_").trim_matches('_')),
                "summary": op.summary,
                "tags": [op.tag],
                "parameters": params,
                "responses": responses,
            });
            if op.auth == Auth::Bearer {
                operation["security"] = json!([{"bearer": []}]);
            }
            if let Some(schema) = &op.body {
                operation["requestBody"] =
                    json!({"required": true, "content": {"application/json": {"schema": schema}}});
            }
            let entry = paths.entry(format!("/api/v1{}", op.path)).or_insert_with(|| json!({}));
            entry[op.method.name()] = operation;
        }
        json!({
            "openapi": "3.1.0",
            "info": {"title": "Tollgate API", "version": env!("CARGO_PKG_VERSION")},
            "paths": paths,
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                    "description": "an access token from /auth/login or an API key (`tg_...`)"}},
                "schemas": {"Problem": {"type": "object", "required": ["type", "title", "status", "detail"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                        "status": {"type": "integer"}, "detail": {"type": "string"},
                        "errors": {"type": "array", "items": {"type": "object",
                            "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
                        "decision_id": {"type": "string"}}}}
            }
        })
    }
}

/// The `/api/v1` router (paths relative to it) with `/openapi.json`.
pub fn router() -> Router<AppState> {
    let api = Api::new();
    let api = session::routes(api.tag("auth"));
    let api = accounts::routes(api.tag("me"));
    let api = tenants::routes(api.tag("tenants"));
    let api = members::routes(api.tag("members"));
    let api = invitations::routes(api.tag("invitations"));
    let api = keys::routes(api.tag("keys"));
    let api = authorize::routes(api.tag("authorize"));
    let api = policies::routes(api.tag("policies"));
    let api = groups::routes(api.tag("groups"));
    let api = plans::routes(api.tag("plans"));
    let api = usage::routes(api.tag("usage"));
    let api = mfa::routes(api.tag("mfa"));
    let api = reset::routes(api.tag("auth"));
    let api = scim::routes(api.tag("scim"));
    let api = sso::routes(api.tag("sso"));
    let api = sso_login::routes(api.tag("sso"));
    let document = api.openapi();
    api.router.route("/openapi.json", axum::routing::get(move || async move { axum::Json(document) }))
}

#[cfg(test)]
mod tests;
