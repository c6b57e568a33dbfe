//! The policy stage against the built-in policies, with callers from the
//! in-memory look-ups: permits carry their upstream, denials explain
//! themselves to admins only, and tenant routes need a tenant.

use std::time::Duration;

use tollgate_identity::roles::Builtin;

use super::*;
use crate::authenticate::authenticate;
use crate::authenticate::tests::{Memory, known};
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
            forward_authorization: false,
            rate_limit: None,
        },
        target: Arc::new(Target::new(&upstream).unwrap()),
    }
}

const FACTS: Facts<'static> = Facts { method: "GET", source_ip: "10.0.0.9", time: 1_700_000_000 };

/// One request decided on its own (nothing prepared before it), at [`FACTS`].
pub(crate) fn decide_alone(
    engine: &PolicyEngine,
    caller: &Caller,
    tenant: Option<Arc<Tenant>>,
    routed: Routed,
) -> Result<Permit, Box<Denial>> {
    decide(engine, &PreparedSets::default(), caller, tenant, routed, &FACTS)
}

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
    let permit = decide_alone(&engine, &viewer, tenant, routed("crm.read", "CrmApi", "contacts")).unwrap();
    assert_eq!((permit.principal().text(), permit.user().map(Name::text)), ("user:v1".into(), Some("user:v1".into())));
    assert_eq!((permit.tenant().map(|t| t.id.as_str()), permit.roles()), (Some("t1"), &["viewer".to_owned()][..]));
    assert_eq!((permit.target().name.as_str(), permit.source_ip()), ("crm", "10.0.0.9"));
    let first = &permit.policies()[0];
    assert_eq!(first.id, "crm.viewers-read", "{:?}", permit.policies());
    assert!(first.reason.as_ref().is_some_and(|r| !r.is_empty()), "{first:?}");
}

#[tokio::test]
async fn denials_explain_themselves_to_admins_only() {
    let mut m = Memory::two_tenants();
    let tenant = Some(Arc::clone(&m.tenants["t1"]));
    let engine = m.engine_for(tenant.as_deref()).await.unwrap();
    let viewer = member(&mut m, "v1", Builtin::Viewer).await;
    let denial = decide_alone(&engine, &viewer, tenant.clone(), routed("crm.write", "CrmApi", "contacts")).unwrap_err();
    assert_eq!((denial.reject.status(), denial.explain), (403, false));
    // An admin denied (the action does not apply to that resource) may see why.
    let admin = member(&mut m, "a1", Builtin::Admin).await;
    let denial = decide_alone(&engine, &admin, tenant, routed("crm.write", "Platform", "tollgate"));
    assert!(denial.is_err(), "crm.write does not apply to the platform");
    let denial = denial.unwrap_err();
    assert!(denial.explain, "admins see the reasons");
}

#[tokio::test]
async fn tenant_resources_need_a_tenant_and_anonymous_callers_get_no_more() {
    let m = Memory::two_tenants();
    let engine = m.engine_for(None).await.unwrap();
    let denial = decide_alone(&engine, &Caller::Anonymous, None, routed("crm.read", "CrmApi", "contacts")).unwrap_err();
    assert!(matches!(&denial.reject, Reject::Forbidden { detail, .. } if detail.contains("needs a tenant")));
    let tenant = Some(Arc::clone(&m.tenants["t1"]));
    let denial =
        decide_alone(&engine, &Caller::Anonymous, tenant, routed("crm.read", "CrmApi", "contacts")).unwrap_err();
    assert_eq!(denial.reject.status(), 403, "anonymous callers do not read a tenant's CRM");
    let permit =
        decide_alone(&engine, &Caller::Anonymous, None, routed("platform.api", "Platform", "tollgate")).unwrap();
    assert_eq!((permit.principal(), permit.user(), permit.tenant().is_none()), (Name::Anonymous, None, true));
}

/// A tenant `t1` as `m` has it, on the free plan with `api_write` granted
/// until `until`: a reload of the tenant, a new `Arc`.
fn reload_with_api_write(m: &mut Memory, until: i64) {
    let overrides = [tollgate_store::OverrideRow {
        tenant_id: "t1".into(),
        name: "api_write".into(),
        kind: "feature".into(),
        value: Some(1),
        expires_at: Some(until),
        granted_by: "user:admin".into(),
        created_at: 0,
    }];
    let mut tenant = (*m.tenants["t1"]).clone();
    tenant.entitlements =
        Arc::new(tollgate_identity::plans::Catalog::builtin().entitlements("free", &overrides).unwrap());
    m.tenants.insert("t1".into(), Arc::new(tenant));
}

/// One set of prepared entities across requests (as in the gateway), two
/// tenants, the time now and the platform's engine.
async fn preparing() -> (PreparedSets, Memory, i64, Arc<PolicyEngine>) {
    let m = Memory::two_tenants();
    let engine = m.engine_for(None).await.unwrap();
    (PreparedSets::default(), m, tollgate_store::now(), engine)
}

#[tokio::test]
async fn shared_entities_follow_the_callers_role_tenant_and_expiring_overrides() {
    let (prepared, mut m, at, engine) = preparing().await;
    let allowed = |caller: &Caller, m: &Memory, time: i64| {
        let tenant = Some(Arc::clone(&m.tenants["t1"]));
        let facts = Facts { time, ..FACTS };
        decide(&engine, &prepared, caller, tenant, routed("crm.write", "CrmApi", "contacts"), &facts).is_ok()
    };

    // A member writes; made a viewer (a new standing), the same person no
    // longer does, while the member's own entities still stand.
    let as_member = member(&mut m, "u1", Builtin::Member).await;
    assert!(allowed(&as_member, &m, at));
    m.standings.get_mut(&("t1".to_owned(), "u1".to_owned())).unwrap().role =
        tollgate_identity::roles::ResolvedRole::builtin(Builtin::Viewer);
    let as_viewer = authenticate(&m, Some("Bearer u1"), "10.0.0.9").await.unwrap();
    assert!(!allowed(&as_viewer, &m, at), "the role changed, the entities with it");
    assert!(allowed(&as_member, &m, at));

    // An API key writes only with `api_write`, which the free plan lacks.
    m.standings.get_mut(&("t1".to_owned(), "u1".to_owned())).unwrap().role =
        tollgate_identity::roles::ResolvedRole::builtin(Builtin::Member);
    let secret = m.add_key("u1", "t1", false, None);
    let bearer = format!("Bearer {secret}");
    let key = authenticate(&m, Some(&bearer), "10.0.0.9").await.unwrap();
    assert!(!allowed(&key, &m, at));
    // The tenant reloaded with the feature granted for 100 seconds: the
    // key writes, until the grant expires, with the same tenant loaded.
    reload_with_api_write(&mut m, at + 100);
    let key = authenticate(&m, Some(&bearer), "10.0.0.9").await.unwrap();
    assert!(allowed(&key, &m, at), "a reloaded tenant is a new entity");
    assert!(allowed(&key, &m, at + 99));
    assert!(!allowed(&key, &m, at + 100), "the grant expired: the entities are rebuilt");
}

/// A prepared set is found again by the next request of the same caller,
/// tenant and resource (or every request would prepare its entities
/// again), and only by such a request.
#[tokio::test]
async fn a_callers_second_request_finds_the_set_its_first_prepared() {
    let (prepared, mut m, at, engine) = preparing().await;
    let ann = member(&mut m, "u1", Builtin::Member).await;
    let bob = member(&mut m, "u2", Builtin::Member).await;
    let t1 = Arc::clone(&m.tenants["t1"]);
    let set = |caller: &Caller, tenant: &Arc<Tenant>, id: &str| {
        let route = routed("crm.read", "CrmApi", id).route;
        prepared.entities(&engine, caller, Some(tenant), &route, at).unwrap()
    };
    let first = set(&ann, &t1, "contacts");
    assert!(Arc::ptr_eq(&first, &set(&ann, &t1, "contacts")), "found again");
    // The same person signed in again (another principal, equal facts).
    let ann_again = authenticate(&m, Some("Bearer u1"), "10.0.0.9").await.unwrap();
    assert!(Arc::ptr_eq(&first, &set(&ann_again, &t1, "contacts")), "equal facts, the same set");
    assert!(!Arc::ptr_eq(&first, &set(&bob, &t1, "contacts")), "another caller");
    assert!(!Arc::ptr_eq(&first, &set(&ann, &t1, "deals")), "another resource");
    // The tenant reloaded unchanged (as when the feed names a change of it
    // again) is the same tenant; reloaded with anything changed, another.
    let reloaded = Arc::new((*t1).clone());
    assert!(Arc::ptr_eq(&first, &set(&ann, &reloaded, "contacts")), "a tenant reloaded unchanged");
    let renamed = Arc::new(Tenant { name: "Renamed".into(), ..(*t1).clone() });
    assert!(!Arc::ptr_eq(&first, &set(&ann, &renamed, "contacts")), "a tenant reloaded changed");
    let suspended = Arc::new(Tenant { status: tollgate_identity::principal::TenantStatus::Suspended, ..(*t1).clone() });
    assert!(!Arc::ptr_eq(&first, &set(&ann, &suspended, "contacts")), "a tenant suspended");
    // The caller's own tenant, reloaded changed, too.
    let mut moved = known(Ok(ann.clone()));
    moved.tenant = Arc::clone(&renamed);
    assert!(
        !Arc::ptr_eq(&first, &set(&Caller::Known(Arc::new(moved)), &t1, "contacts")),
        "the caller's tenant changed"
    );
    let mut same = known(Ok(ann.clone()));
    same.tenant = Arc::clone(&reloaded);
    assert!(
        Arc::ptr_eq(&first, &set(&Caller::Known(Arc::new(same)), &t1, "contacts")),
        "the caller's tenant unchanged"
    );
    assert!(!Arc::ptr_eq(&first, &set(&Caller::Anonymous, &t1, "contacts")), "no caller");
}

/// A permit says until when the same request would be decided the same:
/// when an override its entities hold expires, and the next second when a
/// policy reads the time (a kept admission is handed out only before it).
#[tokio::test]
async fn a_permit_says_until_when_its_decision_holds() {
    let (prepared, mut m, at, platform) = preparing().await;
    let caller = member(&mut m, "u1", Builtin::Member).await;
    let until = |engine: &PolicyEngine, m: &Memory| {
        let tenant = Some(Arc::clone(&m.tenants["t1"]));
        let facts = Facts { time: at, ..FACTS };
        let permit = decide(engine, &prepared, &caller, tenant, routed("crm.read", "CrmApi", "contacts"), &facts);
        permit.unwrap().decided_until()
    };
    assert!(!platform.reads_context(TIME_FACT), "the built-in policies do not read the time");
    assert_eq!(until(&platform, &m), None, "nothing it was decided on changes with time");
    let timed = platform
        .with_layer(
            &tollgate_identity::layers::layer_prefix("t1"),
            "hours.cedar",
            "@id(\"hours\") forbid (principal, action == Action::\"crm.read\", resource) when { context.time < 0 };",
        )
        .unwrap();
    assert_eq!(until(&timed, &m), Some(at + 1), "a policy reads the time");
    reload_with_api_write(&mut m, at + 100);
    assert_eq!(until(&platform, &m), Some(at + 100), "the tenant's override expires");
    assert_eq!(until(&timed, &m), Some(at + 1), "whichever comes first");
}
