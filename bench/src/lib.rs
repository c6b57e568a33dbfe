//! Fixtures for the benchmarks: a realistic caller, tenant, route table and
//! policy sets, built the way the gateway builds them for a request.

use std::sync::Arc;

use tollgate_gateway::authenticate::Caller;
use tollgate_gateway::config::{ConfigError, GatewayConfig};
use tollgate_identity::entities::{RequestFacts, anonymous_entity, principal_entities, standard_context, tenant_ref};
use tollgate_identity::principal::{Actor, Authn, Principal, Tenant, TenantStatus, User};
use tollgate_identity::roles::{Builtin, ResolvedRole};
use tollgate_policies::{EntityRef, EntitySpec, LoadError, PolicyEngine, PolicyRequest};

pub const TENANT_ID: &str = "01a20a00-0000-7000-8000-000000000001";
pub const USER_ID: &str = "01a20a00-0000-7000-8000-0000000000aa";

/// An active tenant on the free plan.
pub fn tenant() -> Arc<Tenant> {
    Arc::new(Tenant {
        id: TENANT_ID.into(),
        slug: "acme".into(),
        name: "Acme".into(),
        status: TenantStatus::Active,
        plan: "free".into(),
        entitlements: Arc::new(tollgate_identity::plans::Catalog::builtin().plan_entitlements("free")),
        mfa_required: false,
        sso_required: false,
        settings: "{}".into(),
        created_at: 0,
        updated_at: 0,
    })
}

/// The ids of `n` groups.
pub fn group_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("01a20a00-0000-7000-8000-{i:012}")).collect()
}

/// A member of [`tenant`] signed in with a password, in `groups` groups.
pub fn member(groups: usize) -> Caller {
    let user = User {
        id: USER_ID.into(),
        email: "mia@acme.test".into(),
        name: "Mia".into(),
        platform_admin: false,
        email_verified: true,
        created_at: 0,
        updated_at: 0,
    };
    Caller::Known(Arc::new(Principal {
        actor: Actor::User { user, session_id: "s".into(), amr: vec!["pwd".into()] },
        tenant: tenant(),
        role: ResolvedRole::builtin(Builtin::Member),
        groups: group_ids(groups).into(),
        client_ip: "127.0.0.1".into(),
    }))
}

/// The demo CRM's gateway routes (upstream address irrelevant here).
pub fn crm_routes() -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::from_file(tollgate_demo::gateway_routes(std::net::SocketAddr::from(([127, 0, 0, 1], 9))))
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
    let (mut request, caller_entities) = crm_read_question(caller);
    request.entities.extend(caller_entities);
    request
}

/// The same read as the decision point asks it: the request with the
/// resource's entity only (what a product gives), and the caller's entities
/// (Tollgate's own) beside it.
pub fn crm_read_question(caller: &Caller) -> (PolicyRequest, Vec<EntitySpec>) {
    let mut caller_entities = Vec::new();
    let principal = match caller {
        Caller::Known(p) => principal_entities(p, 1_795_000_000, &mut caller_entities),
        Caller::Anonymous => anonymous_entity(&mut caller_entities),
    };
    let tenant = tenant_ref(TENANT_ID);
    let resource = EntityRef::new("CrmApi", "contacts");
    let entities = vec![EntitySpec::new(resource.clone()).entity_attr("tenant", &tenant).parent(tenant)];
    let facts = RequestFacts { method: "GET", path: "/crm/contacts", source_ip: "127.0.0.1", time: 1_795_000_000 };
    let context = standard_context(Authn::Password, false, "crm.read", Some(&facts));
    (PolicyRequest { principal, action: "crm.read".into(), resource, context, entities }, caller_entities)
}
