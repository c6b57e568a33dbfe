//! The policy stage: one Cedar evaluation per request, with entities built
//! from cached data and the request's facts as context. Only an allow builds
//! a [`Permit`], and only a `Permit` lets a request reach an upstream.

use std::sync::Arc;

use serde_json::{Map, json};
use tollgate_backend::auth::principal::Actor;
use tollgate_backend::authz::{principal_entities, tenant_entity};
use tollgate_backend::roles::Builtin;
use tollgate_backend::store::TenantRow;
use tollgate_policies::{EntityRef, EntitySpec, Outcome, PolicyEngine, PolicyRequest};

use crate::identity::Caller;
use crate::reject::Reject;
use crate::route::RouteMatch;

/// The facts of a request that policies may use.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub source_ip: &'a str,
}

/// Proof that the policy stage allowed a request: what the upstream is told.
/// Its fields are private; it is built only by [`decide`].
#[derive(Debug, Clone)]
pub struct Permit {
    decision_id: String,
    tenant: Option<Arc<TenantRow>>,
    principal: String,
    user: Option<String>,
    roles: Vec<String>,
    groups: Arc<[String]>,
    policies: Vec<String>,
    route: RouteMatch,
    source_ip: String,
}

impl Permit {
    pub fn decision_id(&self) -> &str {
        &self.decision_id
    }
    pub fn tenant(&self) -> Option<&TenantRow> {
        self.tenant.as_deref()
    }
    pub fn principal(&self) -> &str {
        &self.principal
    }
    /// `user:<id>` of the person the request acts for: the caller, or the
    /// owner of the caller's API key; `None` for service accounts and
    /// anonymous callers.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
    /// The ids of the tenant's groups the principal belongs to.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    pub fn policies(&self) -> &[String] {
        &self.policies
    }
    pub fn route(&self) -> &RouteMatch {
        &self.route
    }
    /// The client's address as the gateway saw it.
    pub fn source_ip(&self) -> &str {
        &self.source_ip
    }
}

/// A denial with what the decision log and an explaining response need.
#[derive(Debug, Clone)]
pub struct Denial {
    pub reject: Reject,
    pub decision_id: String,
    /// Whether the caller may see the determining policies (tenant admins).
    pub explain: bool,
}

fn principal_id(caller: &Caller) -> String {
    match caller {
        Caller::Known(p) => p.actor_id(),
        Caller::Anonymous => "anonymous".to_owned(),
    }
}

fn acting_user(caller: &Caller) -> Option<String> {
    match caller {
        Caller::Known(p) => match &p.actor {
            Actor::User { user, .. } => Some(format!("user:{}", user.id)),
            Actor::ApiKey { key, .. } => key.owner_user_id.as_ref().map(|id| format!("user:{id}")),
        },
        Caller::Anonymous => None,
    }
}

/// Evaluates the request; an error or a deny is a [`Denial`].
pub fn decide(
    engine: &PolicyEngine,
    caller: &Caller,
    tenant: Option<Arc<TenantRow>>,
    route: RouteMatch,
    facts: &RequestFacts<'_>,
) -> Result<Permit, Box<Denial>> {
    let decision_id = uuid::Uuid::new_v4().to_string();
    let mut entities = Vec::new();
    let (principal, authn, mfa, explain, roles, groups) = match caller {
        Caller::Known(p) => {
            let uid = principal_entities(p, &mut entities);
            let (authn, mfa) = p.authn_facts();
            let explain = p.role.base.is_some_and(|b| b >= Builtin::Admin);
            (uid, authn, mfa, explain, vec![p.role.name.clone()], Arc::clone(&p.groups))
        }
        Caller::Anonymous => {
            let uid = EntityRef::new("Anonymous", "anonymous");
            entities.push(EntitySpec::new(uid.clone()));
            (uid, "none", false, false, Vec::new(), Arc::from([]))
        }
    };
    let resource = EntityRef::new(&route.resource_type, route.resource_id.clone());
    let mut resource_entity = EntitySpec::new(resource.clone());
    if route.resource_type != "Platform" {
        // Tenant-owned resource types carry their tenant; without one the
        // request cannot be about a tenant's resource.
        let Some(t) = &tenant else {
            return Err(Box::new(Denial {
                reject: Reject::Forbidden { detail: "this route needs a tenant".into(), policies: Vec::new() },
                decision_id,
                explain: false,
            }));
        };
        let tenant_ref = EntityRef::new("Tenant", t.id.clone());
        if !matches!(caller, Caller::Known(_)) {
            entities.push(tenant_entity(t));
        }
        resource_entity = resource_entity.entity_attr("tenant", &tenant_ref).parent(tenant_ref);
    }
    entities.push(resource_entity);
    let mut context = Map::new();
    context.insert("authn".into(), json!(authn));
    context.insert("mfa".into(), json!(mfa));
    context.insert("required_scope".into(), json!(route.action));
    context.insert("method".into(), json!(facts.method));
    context.insert("path".into(), json!(route.path));
    context.insert("source_ip".into(), json!(facts.source_ip));
    context.insert("time".into(), json!(tollgate_backend::store::now()));
    let outcome: Outcome =
        engine.evaluate(&PolicyRequest { principal, action: route.action.clone(), resource, context, entities });
    let policies: Vec<String> = outcome.determining.iter().map(|d| d.id.clone()).collect();
    let principal_name = principal_id(caller);
    let reasons: Vec<String> = outcome
        .determining
        .iter()
        .map(|d| match &d.reason {
            Some(reason) => format!("{}: {reason}", d.id),
            None => d.id.clone(),
        })
        .collect();
    tracing::info!(
        decision_id = %decision_id,
        tenant = tenant.as_ref().map_or("", |t| t.id.as_str()),
        principal = %principal_name,
        action = %route.action,
        resource = %route.resource_id,
        decision = if outcome.is_allow() { "allow" } else { "deny" },
        policies = ?reasons,
        errors = ?outcome.errors,
        "gateway decision"
    );
    if outcome.is_allow() {
        Ok(Permit {
            decision_id,
            tenant,
            principal: principal_name,
            user: acting_user(caller),
            roles,
            groups,
            policies,
            route,
            source_ip: facts.source_ip.to_owned(),
        })
    } else {
        Err(Box::new(Denial {
            reject: Reject::Forbidden { detail: format!("not allowed to `{}`", route.action), policies: reasons },
            decision_id,
            explain,
        }))
    }
}
