//! Fixtures for the benchmarks: a realistic caller, tenant, route table and
//! policy sets, built the way the gateway builds them for a request.

use std::sync::Arc;

use serde_json::{Map, json};
use tollgate_backend::auth::principal::{Actor, Principal};
use tollgate_backend::authz::principal_entities;
use tollgate_backend::roles::{Builtin, ResolvedRole};
use tollgate_backend::store::{TenantRow, UserRow};
use tollgate_gateway::config::{ConfigError, GatewayConfig};
use tollgate_gateway::identity::Caller;
use tollgate_policies::{EntityRef, EntitySpec, LoadError, PolicyEngine, PolicyRequest};

pub const TENANT_ID: &str = "01a20a00-0000-7000-8000-000000000001";
pub const USER_ID: &str = "01a20a00-0000-7000-8000-0000000000aa";

/// An active tenant on the free plan.
pub fn tenant() -> Arc<TenantRow> {
    Arc::new(TenantRow {
        id: TENANT_ID.into(),
        slug: "acme".into(),
        name: "Acme".into(),
        status: "active".into(),
        plan: "free".into(),
        settings: "{}".into(),
        created_at: 0,
        updated_at: 0,
        status_changed_at: 0,
    })
}

/// The ids of `n` groups.
pub fn group_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("01a20a00-0000-7000-8000-{i:012}")).collect()
}

/// A member of [`tenant`] signed in with a password, in `groups` groups.
pub fn member(groups: usize) -> Caller {
    let user = UserRow {
        id: USER_ID.into(),
        email: "mia@acme.test".into(),
        name: "Mia".into(),
        password_hash: None,
        platform_admin: 0,
        created_at: 0,
        updated_at: 0,
    };
    Caller::Known(Box::new(Principal {
        actor: Actor::User { user, session_id: "s".into(), amr: vec!["pwd".into()] },
        tenant: tenant(),
        role: ResolvedRole::builtin(Builtin::Member),
        groups: group_ids(groups).into(),
        client_ip: "127.0.0.1".into(),
    }))
}

/// The demo CRM's gateway routes (upstream address irrelevant here).
pub fn crm_routes() -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::from_toml(&tollgate_demo::gateway_routes(std::net::SocketAddr::from(([127, 0, 0, 1], 9))))
}

/// A tenant layer of `n` policies naming groups, as a security team might
/// write one: each group may write, one is forbidden to close deals.
pub fn group_layer(n: usize) -> String {
    let mut out = String::new();
    for (i, g) in group_ids(n).iter().enumerate() {
        out.push_str(&format!(
            "@id(\"group-{i}-write\")\npermit (principal in Group::\"{g}\", action == Action::\"crm.write\", resource);\n"
        ));
    }
    out.push_str(
        "@id(\"no-close\")\nforbid (principal in Group::\"nobody\", action == Action::\"deal.close\", resource);\n",
    );
    out
}

/// The built-in platform and CRM policies, plus a tenant layer of `layer`
/// group policies when non-zero.
pub fn engine(layer: usize) -> Result<PolicyEngine, LoadError> {
    let base = PolicyEngine::builtin()?;
    if layer == 0 {
        Ok(base)
    } else {
        base.with_layer(&format!("tenant:{TENANT_ID}:"), "bench layer", &group_layer(layer))
    }
}

/// A ready Cedar request: the member's entities and a read of the CRM's
/// contacts, with the context the gateway supplies.
pub fn crm_read_request(caller: &Caller) -> PolicyRequest {
    let mut entities = Vec::new();
    let principal = match caller {
        Caller::Known(p) => principal_entities(p, &mut entities),
        Caller::Anonymous => EntityRef::new("Anonymous", "anonymous"),
    };
    let tenant = EntityRef::new("Tenant", TENANT_ID);
    let resource = EntityRef::new("CrmApi", "contacts");
    entities.push(EntitySpec::new(resource.clone()).entity_attr("tenant", &tenant).parent(tenant));
    let mut context = Map::new();
    for (k, v) in [
        ("authn", json!("password")),
        ("mfa", json!(false)),
        ("required_scope", json!("crm.read")),
        ("method", json!("GET")),
        ("path", json!("/crm/contacts")),
        ("source_ip", json!("127.0.0.1")),
        ("time", json!(1_795_000_000)),
    ] {
        context.insert(k.into(), v);
    }
    PolicyRequest { principal, action: "crm.read".into(), resource, context, entities }
}
