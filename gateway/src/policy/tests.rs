//! The policy stage against the built-in policies, with callers from the
//! in-memory look-ups: permits carry their upstream, denials explain
//! themselves to admins only, and tenant routes need a tenant.

use std::collections::BTreeMap;
use std::time::Duration;

use tollgate_identity::roles::Builtin;

use super::*;
use crate::authenticate::authenticate;
use crate::authenticate::tests::Memory;
use crate::config::Upstream;
use crate::route::RouteMatch;

pub(crate) fn routed(action: &str, resource_type: &str, resource_id: &str) -> Routed {
    let upstream = Upstream {
        name: "crm".into(),
        addresses: vec!["127.0.0.1:9".parse().unwrap()],
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
    };
    Routed {
        route: RouteMatch {
            route: 0,
            path: "/crm/contacts".into(),
            action: action.into(),
            resource_type: resource_type.into(),
            resource_id: resource_id.into(),
            params: BTreeMap::new(),
            forward_authorization: false,
            rate_limit: None,
        },
        target: Arc::new(Target::new(&upstream).unwrap()),
    }
}

const FACTS: Facts<'static> = Facts { method: "GET", source_ip: "10.0.0.9", time: 1_700_000_000 };

async fn member(m: &mut Memory, user: &str, role: Builtin) -> Caller {
    m.add_member(user, "t1", role);
    m.login(user, user, "t1");
    authenticate(&*m, Some(&format!("Bearer {user}")), "10.0.0.9").await.unwrap()
}

#[tokio::test]
async fn a_permit_carries_the_facts_and_the_upstream() {
    let mut m = Memory::two_tenants();
    let viewer = member(&mut m, "v1", Builtin::Viewer).await;
    let tenant = Some(Arc::clone(&m.tenants["t1"]));
    let engine = m.engine_for(tenant.as_deref()).await.unwrap();
    let permit = decide(&engine, &viewer, tenant, routed("crm.read", "CrmApi", "contacts"), &FACTS).unwrap();
    assert_eq!((permit.principal(), permit.user()), ("user:v1", Some("user:v1")));
    assert_eq!((permit.tenant().map(|t| t.id.as_str()), permit.roles()), (Some("t1"), &["viewer".to_owned()][..]));
    assert_eq!((permit.target().name.as_str(), permit.source_ip()), ("crm", "10.0.0.9"));
    assert!(permit.policies()[0].starts_with("crm.viewers-read: "), "{:?}", permit.policies());
}

#[tokio::test]
async fn denials_explain_themselves_to_admins_only() {
    let mut m = Memory::two_tenants();
    let tenant = Some(Arc::clone(&m.tenants["t1"]));
    let engine = m.engine_for(tenant.as_deref()).await.unwrap();
    let viewer = member(&mut m, "v1", Builtin::Viewer).await;
    let denial =
        decide(&engine, &viewer, tenant.clone(), routed("crm.write", "CrmApi", "contacts"), &FACTS).unwrap_err();
    assert_eq!((denial.reject.status(), denial.explain), (403, false));
    // An admin denied (the action does not apply to that resource) may see why.
    let admin = member(&mut m, "a1", Builtin::Admin).await;
    let denial = decide(&engine, &admin, tenant, routed("crm.write", "Platform", "tollgate"), &FACTS);
    assert!(denial.is_err(), "crm.write does not apply to the platform");
    let denial = denial.unwrap_err();
    assert!(denial.explain, "admins see the reasons");
}

#[tokio::test]
async fn tenant_resources_need_a_tenant_and_anonymous_callers_get_no_more() {
    let m = Memory::two_tenants();
    let engine = m.engine_for(None).await.unwrap();
    let denial =
        decide(&engine, &Caller::Anonymous, None, routed("crm.read", "CrmApi", "contacts"), &FACTS).unwrap_err();
    assert!(matches!(&denial.reject, Reject::Forbidden { detail, .. } if detail.contains("needs a tenant")));
    let tenant = Some(Arc::clone(&m.tenants["t1"]));
    let denial =
        decide(&engine, &Caller::Anonymous, tenant, routed("crm.read", "CrmApi", "contacts"), &FACTS).unwrap_err();
    assert_eq!(denial.reject.status(), 403, "anonymous callers do not read a tenant's CRM");
    let permit =
        decide(&engine, &Caller::Anonymous, None, routed("platform.api", "Platform", "tollgate"), &FACTS).unwrap();
    assert_eq!((permit.principal(), permit.user(), permit.tenant().is_none()), ("anonymous", None, true));
}
