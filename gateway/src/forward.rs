//! The forward stage: where a permitted request goes and what it carries.
//! Each upstream is a [`Target`] (health-checked round robin over its
//! addresses) resolved once per route at start-up; the upstream request
//! loses every client-sent `X-Tollgate-*` header and gains the identity
//! headers and a signed assertion of the same facts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::lb::LoadBalancer;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use tollgate_identity::assertion::{ASSERTION_TTL, Assertion, MAX_ASSERTED_GROUPS};
use tollgate_identity::decision::new_decision_id;
use tollgate_identity::tokens::KeyRing;
use tollgate_store::now;

use crate::config::Upstream;
use crate::policy::Permit;
use crate::reject::Reject;

/// The prefix of every identity header; clients never get to send one.
pub const IDENTITY_HEADER_PREFIX: &str = "x-tollgate-";
/// Headers a client may not pass to an upstream: who the client is, as
/// proxies say it (the gateway says it itself), and method overrides
/// (the method was authorized as sent).
const CLIENT_HEADERS_DROPPED: [&str; 5] =
    ["forwarded", "x-real-ip", "x-http-method-override", "x-http-method", "x-method-override"];

/// Whether a header must not pass from the client to an upstream: any
/// spelling of an identity header (`X-Tollgate_Tenant` too: some servers
/// read `_` as `-`), any `X-Forwarded-*`, and [`CLIENT_HEADERS_DROPPED`].
fn dropped(name: &str) -> bool {
    // Header names arrive lower-cased; `_` compares as `-`.
    let same = |a: u8, b: u8| a == b || (a == b'_' && b == b'-');
    let starts = |prefix: &str| name.len() >= prefix.len() && name.bytes().zip(prefix.bytes()).all(|(a, b)| same(a, b));
    let is = |whole: &str| name.len() == whole.len() && starts(whole);
    starts(IDENTITY_HEADER_PREFIX) || starts("x-forwarded-") || CLIENT_HEADERS_DROPPED.iter().any(|h| is(h))
}

/// Turns the client's request into the upstream's: only the routed path
/// (with the query), none of the client's identity, proxy or
/// method-override headers, the `Authorization` header only where the route
/// forwards it, and the gateway's identity headers, assertion, client
/// address (`X-Forwarded-For`) and request id.
pub fn prepare_upstream_request(
    request: &mut RequestHeader,
    permit: &Permit,
    keys: &KeyRing,
    request_id: &str,
) -> Result<(), Reject> {
    let unwanted: Vec<String> = request.headers.keys().map(|n| n.as_str().to_owned()).filter(|n| dropped(n)).collect();
    for name in unwanted {
        request.remove_header(&name);
    }
    if !permit.route().forward_authorization {
        request.remove_header("authorization");
    }
    // The upstream gets exactly the path that was routed.
    let query = request.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let uri = format!("{}{query}", permit.route().path).parse().map_err(|_| Reject::Internal)?;
    request.set_uri(uri);
    let set = |request: &mut RequestHeader, name: &'static str, value: String| {
        request.insert_header(name, value).map_err(|_| Reject::Internal)
    };
    for (name, value) in identity_headers(keys, permit)? {
        set(request, name, value)?;
    }
    set(request, "x-forwarded-for", permit.source_ip().to_owned())?;
    set(request, "x-forwarded-proto", "http".to_owned())?;
    set(request, "x-request-id", request_id.to_owned())
}
/// How often each upstream address is health checked (TCP connect).
pub const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// An upstream, ready to forward to.
pub struct Target {
    pub name: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Round robin over the addresses passing their health check; the
    /// server runs the checks as a background service.
    pub balancer: Arc<LoadBalancer<RoundRobin>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Target {
    pub fn new(upstream: &Upstream) -> std::io::Result<Self> {
        let mut balancer = LoadBalancer::<RoundRobin>::try_from_iter(upstream.addresses.iter().copied())?;
        balancer.set_health_check(TcpHealthCheck::new());
        balancer.health_check_frequency = Some(HEALTH_CHECK_EVERY);
        Ok(Self {
            name: upstream.name.clone(),
            connect_timeout: upstream.connect_timeout,
            read_timeout: upstream.read_timeout,
            balancer: Arc::new(balancer),
        })
    }
}

/// A target per configured upstream, by name.
pub fn targets(upstreams: &BTreeMap<String, Upstream>) -> std::io::Result<BTreeMap<String, Arc<Target>>> {
    upstreams.values().map(|u| Ok((u.name.clone(), Arc::new(Target::new(u)?)))).collect()
}

/// The identity headers an upstream receives for a permitted request, with
/// a short-lived signed assertion of the same facts.
pub fn identity_headers(keys: &KeyRing, permit: &Permit) -> Result<Vec<(&'static str, String)>, Reject> {
    let t = now();
    let assertion = Assertion {
        iss: keys.issuer().to_owned(),
        aud: permit.target().name.clone(),
        sub: permit.principal().to_owned(),
        user: permit.user().map(str::to_owned),
        tid: permit.tenant().map(|t| t.id.clone()),
        roles: permit.roles().to_vec(),
        groups: permit.groups().iter().take(MAX_ASSERTED_GROUPS).cloned().collect(),
        groups_truncated: permit.groups().len() > MAX_ASSERTED_GROUPS,
        ip: Some(permit.source_ip().to_owned()),
        act: permit.route().action.clone(),
        decision: permit.decision_id().to_owned(),
        iat: t,
        nbf: t,
        exp: t + ASSERTION_TTL,
        jti: new_decision_id(),
    };
    let signed = keys.sign_assertion(&assertion).map_err(|e| {
        tracing::error!(error = %e, "cannot sign an assertion");
        Reject::Internal
    })?;
    let mut headers = vec![
        ("x-tollgate-principal", assertion.sub),
        ("x-tollgate-roles", assertion.roles.join(",")),
        ("x-tollgate-groups", assertion.groups.join(",")),
        ("x-tollgate-groups-truncated", assertion.groups_truncated.to_string()),
        ("x-tollgate-decision", assertion.decision),
        ("x-tollgate-assertion", signed),
    ];
    if let Some(t) = permit.tenant() {
        headers.push(("x-tollgate-tenant", t.id.clone()));
        headers.push(("x-tollgate-tenant-slug", t.slug.clone()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pingora::http::RequestHeader;
    use tollgate_identity::roles::Builtin;
    use tollgate_store::Store;

    use super::*;
    use crate::authenticate::authenticate;
    use crate::authenticate::tests::Memory;
    use crate::policy::tests::routed;
    use crate::policy::{Engines as _, Facts, decide};

    async fn keys(dir: &std::path::Path) -> KeyRing {
        let store = Store::connect(&format!("sqlite:{}", dir.join("t.db").display())).await.unwrap();
        store.migrate().await.unwrap();
        KeyRing::open(store, dir.join("keys"), "https://tollgate.test".into(), 900).await.unwrap()
    }

    /// A permit for a member of t1 in `groups` groups.
    async fn permit(groups: usize) -> Permit {
        let mut m = Memory::two_tenants();
        m.add_member("g1", "t1", Builtin::Member);
        let key = ("t1".to_owned(), "g1".to_owned());
        let ids: Vec<String> = (0..groups).map(|i| format!("group-{i:04}")).collect();
        m.standings.get_mut(&key).unwrap().groups = ids.into();
        m.login("tok", "g1", "t1");
        let caller = authenticate(&m, Some("Bearer tok"), "10.1.2.3").await.unwrap();
        let tenant = Some(Arc::clone(&m.tenants["t1"]));
        let engine = m.engine_for(tenant.as_deref()).await.unwrap();
        let facts = Facts { method: "GET", source_ip: "10.1.2.3", time: 0 };
        decide(&engine, &caller, tenant, routed("crm.read", "CrmApi", "contacts"), &facts).unwrap()
    }

    fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
        req.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn the_upstream_request_carries_the_gateways_facts_only() {
        let dir = tollgate_store::testing::temp_dir("forward");
        let keys = keys(&dir).await;
        let permit = permit(3).await;
        let mut req = RequestHeader::build("GET", b"/crm//contacts?x=1", None).unwrap();
        for (name, value) in [
            ("x-tollgate-tenant", "t2"),
            ("X-Tollgate_Principal", "user:root"),
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=203.0.113.1"),
            ("x-http-method-override", "DELETE"),
            ("authorization", "Bearer tok"),
        ] {
            req.append_header(name, value).unwrap();
        }
        prepare_upstream_request(&mut req, &permit, &keys, "req-1").unwrap();
        assert_eq!(req.uri.to_string(), "/crm/contacts?x=1", "the routed path, with the query");
        assert_eq!(header(&req, "x-tollgate-tenant"), Some("t1"));
        assert_eq!(header(&req, "x-tollgate-principal"), Some("user:g1"));
        assert_eq!(header(&req, "x-forwarded-for"), Some("10.1.2.3"));
        assert_eq!(header(&req, "x-request-id"), Some("req-1"));
        for gone in ["x-tollgate_principal", "forwarded", "x-http-method-override", "authorization"] {
            assert!(header(&req, gone).is_none(), "{gone}");
        }
        let claims = keys.verify_assertion(header(&req, "x-tollgate-assertion").unwrap(), "crm").unwrap();
        assert_eq!((claims.tid.as_deref(), claims.groups.len(), claims.groups_truncated), (Some("t1"), 3, false));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn group_ids_are_capped_and_the_cap_is_said() {
        let dir = tollgate_store::testing::temp_dir("forward-groups");
        let keys = keys(&dir).await;
        let permit = permit(1000).await;
        let headers = identity_headers(&keys, &permit).unwrap();
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap();
        assert_eq!(get("x-tollgate-groups").split(',').count(), MAX_ASSERTED_GROUPS);
        assert_eq!(get("x-tollgate-groups-truncated"), "true");
        let claims = keys.verify_assertion(get("x-tollgate-assertion"), "crm").unwrap();
        assert_eq!((claims.groups.len(), claims.groups_truncated), (MAX_ASSERTED_GROUPS, true));
        assert!(get("x-tollgate-assertion").len() < 8 * 1024, "the assertion stays small");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
