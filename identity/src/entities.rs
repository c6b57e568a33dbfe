//! Cedar entities built from our domain types, and the one standard context
//! every decision carries: the gateway, the backend and the decision point
//! build the same entities for the same caller and the same facts for the
//! same request.

use serde_json::{Map, Value, json};
use tollgate_policies::{EntityRef, EntitySpec, Fact};

use crate::plans::LimitName;
use crate::principal::{Actor, Authn, KeyOwner, Principal, Tenant};
use crate::roles::{Builtin, ResolvedRole};

pub fn tenant_ref(id: &str) -> EntityRef {
    EntityRef::new("Tenant", id)
}

fn role_ref(role: Builtin) -> EntityRef {
    EntityRef::new("Role", role.name())
}

fn custom_role_ref(name: &str) -> EntityRef {
    EntityRef::new("Role", format!("custom:{name}"))
}

/// A tenant's entity, with the attributes policies see: its lifecycle
/// status, its plan, and the features and limits it has at `at`.
pub fn tenant_entity(tenant: &Tenant, at: i64) -> EntitySpec {
    let entitlements = &tenant.entitlements;
    let mut limits = Map::new();
    for limit in LimitName::ALL {
        if let Some(value) = entitlements.limit(limit, at) {
            limits.insert(limit.as_str().into(), json!(i64::try_from(value).unwrap_or(i64::MAX)));
        }
    }
    EntitySpec::new(tenant_ref(&tenant.id))
        .attr("status", json!(tenant.status.as_str()))
        .attr("plan", json!(tenant.plan))
        .attr("features", json!(entitlements.features(at)))
        .attr("limits", Value::Object(limits))
}

fn role_entities(role: &ResolvedRole, out: &mut Vec<EntitySpec>) {
    for builtin in Builtin::ALL {
        let mut entity = EntitySpec::new(role_ref(builtin));
        if let Some(below) = builtin.below() {
            entity = entity.parent(role_ref(below));
        }
        out.push(entity);
    }
    if role.custom {
        let mut entity = EntitySpec::new(custom_role_ref(&role.name));
        if let Some(base) = role.base {
            entity = entity.parent(role_ref(base));
        }
        out.push(entity);
    }
}

fn role_parent(role: &ResolvedRole) -> Option<EntityRef> {
    if role.custom { Some(custom_role_ref(&role.name)) } else { role.base.map(role_ref) }
}

/// The principal's entity and those it sits under: its role, its groups and
/// its tenant (with its entitlements at `at`).
pub fn principal_entities(p: &Principal, at: i64, out: &mut Vec<EntitySpec>) -> EntityRef {
    role_entities(&p.role, out);
    let tenant = tenant_ref(&p.tenant.id);
    out.push(tenant_entity(&p.tenant, at));
    for group in p.groups.iter() {
        out.push(EntitySpec::new(EntityRef::new("Group", group.clone())).parent(tenant.clone()));
    }
    let with_role = |mut entity: EntitySpec| {
        if let Some(role) = role_parent(&p.role) {
            entity = entity.parent(role);
        }
        for group in p.groups.iter() {
            entity = entity.parent(EntityRef::new("Group", group.clone()));
        }
        entity.parent(tenant.clone())
    };
    match &p.actor {
        Actor::User { user, .. } => {
            let uid = EntityRef::new("User", user.id.clone());
            out.push(with_role(
                EntitySpec::new(uid.clone())
                    .attr("email", json!(user.email))
                    .attr("platform_admin", json!(user.platform_admin))
                    .attr("role_rank", json!(p.role.rank())),
            ));
            uid
        }
        Actor::ApiKey { key } => {
            let uid = EntityRef::new("ApiKey", key.id.clone());
            let scopes: Vec<&str> = key.scopes.iter().collect();
            let entity = with_role(
                EntitySpec::new(uid.clone())
                    .entity_attr("tenant", &tenant)
                    .attr("scopes", json!(scopes))
                    .attr("role_rank", json!(p.role.rank())),
            );
            out.push(entity.parent(match &key.owner {
                KeyOwner::User(id) => EntityRef::new("User", id.clone()),
                KeyOwner::ServiceAccount(id) => EntityRef::new("ServiceAccount", id.clone()),
            }));
            uid
        }
    }
}

/// The anonymous caller's entity.
pub fn anonymous_entity(out: &mut Vec<EntitySpec>) -> EntityRef {
    let uid = EntityRef::new("Anonymous", "anonymous");
    out.push(EntitySpec::new(uid.clone()));
    uid
}

/// What the gateway knows of an HTTP request it decides.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The normalized path.
    pub path: &'a str,
    pub source_ip: &'a str,
    /// Seconds since the Unix epoch when the request was decided.
    pub time: i64,
}

/// The names of the standard facts, which only Tollgate sets.
pub const STANDARD_FACTS: [&str; 7] = ["authn", "mfa", "required_scope", "method", "path", "source_ip", TIME_FACT];

/// The standard fact of the request's time (seconds since the Unix epoch):
/// the one fact of a request that changes while nothing else does.
pub const TIME_FACT: &str = "time";

/// The one standard context: how the caller authenticated, with a second
/// factor or not, and the scope the action needs (the schema's
/// `RequestContext`); with the facts of an HTTP request added, the
/// `GatewayContext` of gateway routes and product actions. Typed, in the
/// order of [`STANDARD_FACTS`].
pub fn standard_facts<'a>(
    authn: Authn,
    mfa: bool,
    required_scope: &'a str,
    request: Option<&RequestFacts<'a>>,
) -> Vec<(&'static str, Fact<'a>)> {
    let mut facts = Vec::with_capacity(STANDARD_FACTS.len());
    facts.extend([
        ("authn", Fact::Str(authn.as_str())),
        ("mfa", Fact::Bool(mfa)),
        ("required_scope", Fact::Str(required_scope)),
    ]);
    if let Some(r) = request {
        facts.extend([
            ("method", Fact::Str(r.method)),
            ("path", Fact::Str(r.path)),
            ("source_ip", Fact::Str(r.source_ip)),
            (TIME_FACT, Fact::Long(r.time)),
        ]);
    }
    facts
}

/// [`standard_facts`] as a JSON object, for requests written as JSON.
pub fn standard_context(
    authn: Authn,
    mfa: bool,
    required_scope: &str,
    request: Option<&RequestFacts<'_>>,
) -> Map<String, Value> {
    standard_facts(authn, mfa, required_scope, request)
        .into_iter()
        .map(|(name, fact)| (name.to_owned(), fact.to_json()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::tests::person;

    #[test]
    fn a_person_sits_under_role_groups_and_tenant() {
        let mut p = person("u1", "t1", Builtin::Admin, &["pwd"]);
        p.groups = std::sync::Arc::from(["g1".to_owned()]);
        let mut entities = Vec::new();
        let uid = principal_entities(&p, 0, &mut entities);
        assert_eq!(uid, EntityRef::new("User", "u1"));
        let user = entities.iter().find(|e| e.uid == uid).unwrap();
        for parent in [EntityRef::new("Role", "admin"), EntityRef::new("Group", "g1"), tenant_ref("t1")] {
            assert!(user.parents.contains(&parent), "{parent:?}");
        }
        assert!(entities.iter().any(|e| e.uid == tenant_ref("t1") && e.attrs["status"] == "active"));
    }

    #[test]
    fn the_standard_context_has_the_gateway_facts_only_for_requests() {
        let api = standard_context(Authn::ApiKey, false, "keys:read", None);
        assert_eq!(api.len(), 3);
        let facts = RequestFacts { method: "GET", path: "/x", source_ip: "10.0.0.1", time: 7 };
        let gateway = standard_context(Authn::Password, true, "crm.read", Some(&facts));
        let mut names: Vec<&str> = gateway.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected = STANDARD_FACTS.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected, "the standard facts are exactly the gateway's context");
    }
}
