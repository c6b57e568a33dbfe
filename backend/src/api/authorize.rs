//! The policy decision point for product services: `POST /authorize` (and a
//! batch form) evaluates a product's own action against the same engine the
//! gateway uses, inside the caller's tenant.
//!
//! The product supplies its resource entities; identities never come from the
//! request: the principal must be a member of the caller's tenant and its
//! entity (roles, tenant) is built from the store. Entity types Tollgate owns
//! cannot be supplied, another tenant cannot be named, and platform actions
//! are not answered here.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tollgate_identity::credentials::Lookups as _;
use tollgate_identity::decision::{Decided, DecidedBy, log_decision, new_decision_id};
use tollgate_identity::entities::{RequestFacts, STANDARD_FACTS, principal_entities, standard_context};
use tollgate_identity::layers::LAYER_UNAVAILABLE;
use tollgate_identity::principal::{Actor, Authn, Principal};
use tollgate_policies::{EntityRef, EntitySpec, PolicyRequest};

use super::Verb::Post;
use super::{Api, Auth};
use crate::auth::principal::Authenticated;
use crate::authz::{Action, Resource, authorize};
use crate::problem::{ApiError, ApiJson};
use crate::state::AppState;
use tollgate_store::now;

/// Entity types whose truth is Tollgate's, never a product's.
const RESERVED_TYPES: &[&str] = &[
    "User",
    "Role",
    "Group",
    "Tenant",
    "ApiKey",
    "ServiceAccount",
    "Member",
    "Invitation",
    "Platform",
    "Anonymous",
    "Action",
];
const MAX_BATCH: usize = 100;
const MAX_ENTITIES: usize = 1000;

pub fn routes(api: Api) -> Api {
    api.op(Post, "/authorize", "Ask the decision point about a product action", Auth::Bearer, 200, one)
        .body::<Question>()
        .op(Post, "/authorize/batch", "Ask the decision point up to 100 questions", Auth::Bearer, 200, batch)
        .body::<Batch>()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct EntityName {
    #[serde(rename = "type")]
    type_name: String,
    id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProductEntity {
    uid: EntityName,
    #[serde(default)]
    attrs: Map<String, Value>,
    #[serde(default)]
    parents: Vec<EntityName>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Question {
    /// A user of the caller's tenant (`{"type": "User", "id": ...}`); the
    /// caller itself when absent.
    principal: Option<EntityName>,
    action: String,
    resource: EntityName,
    #[serde(default)]
    context: Map<String, Value>,
    #[serde(default)]
    entities: Vec<ProductEntity>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Batch {
    requests: Vec<Question>,
}

async fn one(
    State(state): State<AppState>,
    p: Authenticated,
    ApiJson(q): ApiJson<Question>,
) -> Result<ApiJson<Value>, ApiError> {
    authorize(&state, &p, Action::PdpQuery, Resource::Tenant(&p.tenant), None)?;
    Ok(ApiJson(answer(&state, &p, q).await?))
}

async fn batch(
    State(state): State<AppState>,
    p: Authenticated,
    ApiJson(b): ApiJson<Batch>,
) -> Result<ApiJson<Value>, ApiError> {
    authorize(&state, &p, Action::PdpQuery, Resource::Tenant(&p.tenant), None)?;
    if b.requests.is_empty() || b.requests.len() > MAX_BATCH {
        return Err(ApiError::field("requests", format!("must hold 1 to {MAX_BATCH} questions")));
    }
    let mut results = Vec::with_capacity(b.requests.len());
    for q in b.requests {
        results.push(answer(&state, &p, q).await?);
    }
    Ok(ApiJson(json!({"results": results})))
}

/// Refuses references to another tenant anywhere in a product's JSON value.
fn names_other_tenant(value: &Value, tenant_id: &str) -> bool {
    match value {
        Value::Object(map) => {
            let is_foreign_tenant = map.get("type").and_then(Value::as_str) == Some("Tenant")
                && map.get("id").and_then(Value::as_str).is_some_and(|id| id != tenant_id);
            is_foreign_tenant || map.values().any(|v| names_other_tenant(v, tenant_id))
        }
        Value::Array(items) => items.iter().any(|v| names_other_tenant(v, tenant_id)),
        _ => false,
    }
}

async fn answer(state: &AppState, authenticated: &Authenticated, q: Question) -> Result<Value, ApiError> {
    let caller = &authenticated.principal;
    if Action::ALL.iter().any(|a| a.name() == q.action) || q.action == "platform.api" {
        return Err(ApiError::field("action", "platform actions are decided by Tollgate, not answered here"));
    }
    if q.entities.len() > MAX_ENTITIES {
        return Err(ApiError::field("entities", format!("at most {MAX_ENTITIES} entities")));
    }
    if RESERVED_TYPES.contains(&q.resource.type_name.as_str()) {
        return Err(ApiError::field("resource", "must be an entity of the product"));
    }
    let tenant_id = caller.tenant.id.as_str();
    let mut entities = Vec::with_capacity(q.entities.len());
    for e in q.entities {
        if RESERVED_TYPES.contains(&e.uid.type_name.as_str()) {
            return Err(ApiError::field(
                "entities",
                format!("`{}` entities come from Tollgate, not from the request", e.uid.type_name),
            ));
        }
        let parents_foreign = e.parents.iter().any(|p| p.type_name == "Tenant" && p.id != tenant_id);
        if parents_foreign || names_other_tenant(&Value::Object(e.attrs.clone()), tenant_id) {
            return Err(ApiError::NotFound);
        }
        let mut spec = EntitySpec::new(EntityRef::new(&e.uid.type_name, e.uid.id));
        spec.attrs = e.attrs;
        spec.parents = e.parents.into_iter().map(|p| EntityRef::new(&p.type_name, p.id)).collect();
        entities.push(spec);
    }
    if names_other_tenant(&Value::Object(q.context.clone()), tenant_id) {
        return Err(ApiError::NotFound);
    }
    // The principal: a member of the caller's tenant, built from the store.
    let subject = match q.principal {
        None => caller.clone(),
        Some(name) if name.type_name == "User" => {
            let standing = state.lookups.member_standing(tenant_id, &name.id).await?.ok_or(ApiError::NotFound)?;
            let user = state.lookups.user(&name.id).await?.ok_or(ApiError::NotFound)?;
            Principal {
                actor: Actor::User { user: (*user).clone(), session_id: String::new(), amr: Vec::new() },
                tenant: caller.tenant.clone(),
                role: standing.role,
                groups: standing.groups,
                client_ip: caller.client_ip.clone(),
            }
        }
        Some(_) => return Err(ApiError::field("principal", "must be a `User` of the tenant")),
    };
    // Tollgate's own entities, beside the product's: only the product's
    // are checked against the schema on each question.
    let mut trusted = Vec::with_capacity(8);
    let principal = principal_entities(&subject, now(), &mut trusted);
    // The standard facts (those the gateway supplies) are Tollgate's; the
    // product may add its own but not override these.
    if let Some(name) = STANDARD_FACTS.iter().find(|n| q.context.contains_key(**n)) {
        return Err(ApiError::field("context", format!("`{name}` is set by Tollgate")));
    }
    let request = RequestFacts { method: "", path: "", source_ip: &caller.client_ip, time: now() };
    let mut context = standard_context(Authn::DecisionPoint, false, &q.action, Some(&request));
    context.extend(q.context);
    // The caller's tenant layer applies here as at the gateway (the engine
    // the extractor loaded), and a layer that cannot be loaded is refused
    // the same way.
    let engine = authenticated
        .engine
        .clone()
        .ok_or_else(|| ApiError::Forbidden { detail: LAYER_UNAVAILABLE.into(), decision: None })?;
    let resource = EntityRef::new(&q.resource.type_name, q.resource.id);
    let outcome = engine.evaluate_beside_trusted(
        &PolicyRequest { principal, action: q.action.clone(), resource: resource.clone(), context, entities },
        &trusted,
    );
    let decision_id = new_decision_id();
    log_decision(
        &Decided {
            by: DecidedBy::DecisionPoint,
            decision_id: &decision_id,
            tenant: tenant_id,
            principal: &subject.actor_id(),
            action: &q.action,
            resource: &resource.id,
        },
        &outcome,
    );
    Ok(json!({
        "decision": outcome.decision,
        "decision_id": decision_id,
        "policies": &*outcome.determining,
        "errors": outcome.errors,
    }))
}
