//! The forward stage: where a permitted request goes and what it carries.
//! Each upstream is a [`Target`] (health-checked round robin over its
//! addresses) resolved once per route at start-up; the upstream request
//! loses every client-sent `X-Tollgate-*` header and gains the identity
//! headers and a signed assertion of the same facts.

use std::collections::BTreeMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthObserve, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use tollgate_identity::assertion::{ASSERTION_TTL, Assertion, MAX_ASSERTED_GROUPS};
use tollgate_identity::decision::{DecisionId, new_decision_id};
use tollgate_identity::principal::{Name, Tenant};
use tollgate_identity::tokens::KeyRing;
use tollgate_store::now;

use crate::authenticate::Caller;
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

/// Edits a pingora header through its `http` parts, where the header map
/// can be reserved and takes names built once (pingora's own methods parse
/// every name again and keep a second map of the names' case). The header
/// comes back without that case map: it is written with canonical names,
/// which HTTP reads case-insensitively (RFC 9110, section 5.1).
pub fn edit_parts<H, P>(header: &mut H, empty: P, edit: impl FnOnce(&mut P))
where
    H: From<P>,
    P: From<H>,
{
    let mut parts = P::from(std::mem::replace(header, H::from(empty)));
    edit(&mut parts);
    *header = H::from(parts);
}

/// An id as a header value, in one allocation that its clones share (a
/// value made from a `String` allocates again when first cloned).
pub fn id_value(id: DecisionId) -> HeaderValue {
    // A hyphenated UUID: always a valid value.
    HeaderValue::from_maybe_shared(Bytes::from_owner(id)).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

const DECISION: HeaderName = HeaderName::from_static("x-tollgate-decision");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Turns the client's request into the upstream's: only the routed path
/// (with the query), none of the client's identity, proxy or
/// method-override headers, the `Authorization` header only where the route
/// forwards it, and the gateway's identity headers, assertion, client
/// address (`X-Forwarded-For`) and request id.
///
/// The upstream's headers start as a copy of the assertion's (built once
/// with it, see [`Signed`]) and take the client's headers that pass after
/// them: a copy of a map costs no hashing, where inserting each identity
/// header into the client's map hashed its name every time. (Fields of
/// different names carry no meaning in their order: RFC 9110, 5.3.)
pub fn prepare_upstream_request(
    request: &mut RequestHeader,
    permit: &Permit,
    assertions: &Assertions,
    request_id: &HeaderValue,
) -> Result<(), Reject> {
    // Everything that can fail, before the request is taken apart.
    let signed = match permit.assertion() {
        Some(kept) => Arc::clone(kept),
        None => assertions.signed(permit)?,
    };
    let decision = id_value(*permit.decision());
    // The upstream gets exactly the path that was routed (the request's
    // own when it was routed as sent).
    let uri = &request.uri;
    let routed_uri = if uri.scheme().is_some() || uri.authority().is_some() || uri.path() != permit.route().path {
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        Some(format!("{}{query}", permit.route().path).parse::<http::Uri>().map_err(|_| Reject::Internal)?)
    } else {
        None
    };
    let forward_authorization = permit.route().forward_authorization;
    let passes = |name: &HeaderName| {
        !dropped(name.as_str())
            && *name != REQUEST_ID
            && (forward_authorization || *name != http::header::AUTHORIZATION)
    };
    let send_end_stream = request.send_end_stream();
    edit_parts(request, http::Request::new(()).into_parts().0, |parts| {
        let sent = std::mem::replace(&mut parts.headers, signed.headers.clone());
        let headers = &mut parts.headers;
        // Room for the client's headers (the per-request ones are in the
        // copy already, set in place by `fill`).
        headers.reserve(sent.len());
        // A name is given with its first value only; the rest follow unnamed.
        let mut name: Option<HeaderName> = None;
        for (named, value) in sent {
            if named.is_some() {
                name = named.filter(passes);
            }
            if let Some(name) = &name {
                headers.append(name.clone(), value);
            }
        }
        fill(headers, decision, request_id.clone());
        if let Some(uri) = routed_uri {
            parts.uri = uri;
        }
    });
    if let Some(send) = send_end_stream {
        request.set_send_end_stream(send);
    }
    Ok(())
}

/// Sets the per-request headers of a copy of a [`Signed`]'s map: its first
/// two entries, in place (no name hashed again), as long as they are those
/// two; otherwise inserted by name. No client value is ever appended to
/// either name.
fn fill(headers: &mut http::HeaderMap, decision: HeaderValue, request_id: HeaderValue) {
    let (decision, request_id) = {
        let mut entries = headers.iter_mut();
        match (entries.next(), entries.next()) {
            (Some((first, d)), Some((second, r))) if *first == DECISION && *second == REQUEST_ID => {
                *d = decision;
                *r = request_id;
                return;
            }
            _ => (decision, request_id),
        }
    };
    headers.insert(DECISION, decision);
    headers.insert(REQUEST_ID, request_id);
}

/// How often each upstream address is health checked (TCP connect).
pub const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// An upstream, ready to forward to.
pub struct Target {
    pub name: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// The addresses and their health checks, which the server runs as a
    /// background service.
    pub balancer: Arc<LoadBalancer<RoundRobin>>,
    /// What the checks last said of each address, read per request.
    health: Arc<Health>,
    /// The round robin's next turn.
    turn: AtomicUsize,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The addresses of an upstream (each once, in order) and whether each
/// failed its health check, as the check reports each change: a request
/// reads a flag, where asking the balancer hashed the address into its
/// readiness map (and cloned its set of addresses) every time. An address
/// is ready until a check fails, as it is for the balancer.
#[derive(Debug)]
struct Health {
    addresses: Vec<SocketAddr>,
    down: Vec<AtomicBool>,
}

impl Health {
    fn new(addresses: &[SocketAddr]) -> Self {
        let addresses: Vec<SocketAddr> =
            addresses.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let down = addresses.iter().map(|_| AtomicBool::new(false)).collect();
        Self { addresses, down }
    }

    fn set(&self, address: SocketAddr, healthy: bool) {
        if let Some(i) = self.addresses.iter().position(|a| *a == address) {
            self.down[i].store(!healthy, Ordering::Relaxed);
        }
    }

    fn ready(&self, i: usize) -> bool {
        !self.down[i].load(Ordering::Relaxed)
    }
}

/// Tells [`Health`] each change the health check sees.
struct Observer(Arc<Health>);

#[async_trait::async_trait]
impl HealthObserve for Observer {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if let Some(address) = target.addr.as_inet() {
            self.0.set(*address, healthy);
        }
    }
}

impl Target {
    pub fn new(upstream: &Upstream) -> std::io::Result<Self> {
        let mut balancer = LoadBalancer::<RoundRobin>::try_from_iter(upstream.addresses.iter().copied())?;
        let health = Arc::new(Health::new(&upstream.addresses));
        let mut check = TcpHealthCheck::new();
        check.health_changed_callback = Some(Box::new(Observer(Arc::clone(&health))));
        balancer.set_health_check(check);
        balancer.health_check_frequency = Some(HEALTH_CHECK_EVERY);
        Ok(Self {
            name: upstream.name.clone(),
            connect_timeout: upstream.connect_timeout,
            read_timeout: upstream.read_timeout,
            balancer: Arc::new(balancer),
            health,
            turn: AtomicUsize::new(0),
        })
    }

    /// The address whose turn it is, among those passing their health
    /// check (or not checked yet), if any does. While the address in turn
    /// is ready this reads one flag; otherwise the turn goes to one of the
    /// ready addresses, so they share an unready one's turns evenly.
    pub fn next_address(&self) -> Option<SocketAddr> {
        let health = &*self.health;
        let count = health.addresses.len();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let in_turn = turn % count.max(1);
        if count > 0 && health.ready(in_turn) {
            return Some(health.addresses[in_turn]);
        }
        let ready: Vec<usize> = (0..count).filter(|&i| health.ready(i)).collect();
        ready.get(turn % ready.len().max(1)).map(|&i| health.addresses[i])
    }
}

/// A target per configured upstream, by name.
pub fn targets(upstreams: &BTreeMap<String, Upstream>) -> std::io::Result<BTreeMap<String, Arc<Target>>> {
    upstreams.values().map(|u| Ok((u.name.clone(), Arc::new(Target::new(u)?)))).collect()
}

/// What an assertion says (everything but its times and id), with the
/// tenant's slug said beside it: read from the caller and tenant it holds
/// (so no other caller or tenant takes their addresses while it is kept),
/// plus the upstream, client address and action. Requests that would say
/// the same share one signed assertion and the identity headers built with
/// it.
#[derive(Debug)]
struct Asserted {
    caller: Caller,
    tenant: Option<Arc<Tenant>>,
    aud: String,
    ip: String,
    act: Arc<str>,
}

/// The group ids an assertion and its headers name, and whether some were
/// left out.
fn shown_groups(groups: &[String]) -> (&[String], bool) {
    (&groups[..groups.len().min(MAX_ASSERTED_GROUPS)], groups.len() > MAX_ASSERTED_GROUPS)
}

impl Asserted {
    fn of(permit: &Permit) -> Self {
        Self {
            caller: permit.caller().clone(),
            tenant: permit.shared_tenant().cloned(),
            aud: permit.target().name.clone(),
            ip: permit.source_ip().to_owned(),
            act: Arc::clone(&permit.route().action),
        }
    }

    fn groups(&self) -> (&[String], bool) {
        shown_groups(self.caller.groups())
    }

    /// Where `permit`'s facts are remembered: a hash of the ones that tell
    /// the assertions of one moment apart (who, in which tenant, from
    /// where, doing what, at which upstream); requests saying the same hash
    /// the same, whichever copy of the caller they come from. The roles
    /// and groups, which go with the caller, are compared, not hashed.
    fn slot(hasher: &foldhash::quality::RandomState, permit: &Permit) -> u64 {
        use std::hash::BuildHasher as _;
        hasher.hash_one((
            permit.principal(),
            permit.tenant().map(|t| &t.id),
            &permit.target().name,
            permit.source_ip(),
            &*permit.route().action,
        ))
    }

    /// Whether `permit` says exactly this: for the same upstream, client
    /// address and action, read from the same caller and tenant (so the
    /// same principal, roles, groups and tenant), or else from a caller
    /// and tenant saying the same fact by fact.
    fn is_of(&self, permit: &Permit) -> bool {
        let (caller, tenant) = (permit.caller(), permit.tenant());
        let same_request =
            self.aud == permit.target().name && self.ip == permit.source_ip() && *self.act == *permit.route().action;
        let same_source = self.caller.address() == caller.address()
            && self.tenant.as_ref().map(Arc::as_ptr) == permit.shared_tenant().map(Arc::as_ptr);
        same_request
            && (same_source
                || (self.caller.name() == caller.name()
                    && self.caller.acting_user() == caller.acting_user()
                    && self.tenant.as_ref().map(|t| (&t.id, &t.slug)) == tenant.map(|t| (&t.id, &t.slug))
                    && self.caller.roles() == caller.roles()
                    && self.groups() == shown_groups(caller.groups())))
    }
}

/// A signed assertion with the identity headers saying the same, and until
/// when they are handed out again.
#[derive(Debug)]
pub struct Signed {
    asserted: Asserted,
    /// The start of the headers of every upstream request it serves: first
    /// the per-request ones (the decision id and request id, empty here,
    /// set on each request's copy by [`fill`]), then every identity header,
    /// the assertion, `X-Forwarded-For` and `X-Forwarded-Proto` (its index
    /// with room for the client's, see [`TEMPLATE_ROOM`]).
    headers: http::HeaderMap,
    reuse_until: i64,
}

/// The identity headers' names.
const PRINCIPAL: HeaderName = HeaderName::from_static("x-tollgate-principal");
const ROLES: HeaderName = HeaderName::from_static("x-tollgate-roles");
const GROUPS: HeaderName = HeaderName::from_static("x-tollgate-groups");
const GROUPS_TRUNCATED: HeaderName = HeaderName::from_static("x-tollgate-groups-truncated");
const ASSERTION: HeaderName = HeaderName::from_static("x-tollgate-assertion");
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const TENANT: HeaderName = HeaderName::from_static("x-tollgate-tenant");
const TENANT_SLUG: HeaderName = HeaderName::from_static("x-tollgate-tenant-slug");
/// The room in the index of an assertion's headers: its own eleven and a
/// client's usual few, so that appending a request's headers to a copy
/// seldom indexes the map again.
const TEMPLATE_ROOM: usize = 24;

impl Signed {
    /// Until when it is handed out again (seconds since the Unix epoch).
    pub fn reuse_until(&self) -> i64 {
        self.reuse_until
    }

    fn new(asserted: Asserted, token: String, reuse_until: i64) -> Result<Self, Reject> {
        let text = |value: String| HeaderValue::try_from(value).map_err(|_| Reject::Internal);
        let a = &asserted;
        let (groups, truncated) = a.groups();
        let mut headers = http::HeaderMap::with_capacity(TEMPLATE_ROOM);
        // The per-request headers first, to be set in place (see `fill`).
        headers.insert(DECISION, HeaderValue::from_static(""));
        headers.insert(REQUEST_ID, HeaderValue::from_static(""));
        headers.insert(PRINCIPAL, text(a.caller.name().text())?);
        headers.insert(ROLES, text(a.caller.roles().join(","))?);
        headers.insert(GROUPS, text(groups.join(","))?);
        headers.insert(GROUPS_TRUNCATED, HeaderValue::from_static(if truncated { "true" } else { "false" }));
        headers.insert(ASSERTION, text(token)?);
        headers.insert(FORWARDED_FOR, text(a.ip.clone())?);
        headers.insert(FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(tenant) = &a.tenant {
            headers.insert(TENANT, text(tenant.id.clone())?);
            headers.insert(TENANT_SLUG, text(tenant.slug.clone())?);
        }
        // A copy keeps the room in the map's index but holds its entries
        // without the spare ones (as each request's copy does): about 1.4
        // KB less per cached assertion.
        Ok(Self { asserted, headers: headers.clone(), reuse_until })
    }

    /// The value of one of the identity headers.
    #[cfg(test)]
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The signed assertions of recent requests: the same caller, tenant, roles,
/// groups, client address, action and upstream get the same assertion (and
/// identity headers) for half its lifetime, so a request costs a signature
/// only when what it asserts changed (or every [`REUSE_SECS`]). The
/// per-request facts (the decision id, the request id) travel in headers
/// beside it.
pub struct Assertions {
    keys: Arc<KeyRing>,
    cache: moka::sync::Cache<u64, Arc<Signed>, BuildHasherDefault<SlotHasher>>,
    /// Seeded per process; a slot only says where to look (what is found
    /// there is compared with the permit), so a fast hash does (SipHash
    /// was most of the look-up).
    hasher: foldhash::quality::RandomState,
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertions").finish_non_exhaustive()
    }
}

/// The hash of a slot, which is a seeded hash already: the slot itself
/// (hashing it again, with SipHash by default, cost a tenth of the
/// assertion's look-up).
#[derive(Debug, Default)]
struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Not used for slots; any other input is still mixed in.
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, slot: u64) {
        self.0 = slot;
    }
}

/// How long a signed assertion is handed out: an upstream always receives
/// one with at least `ASSERTION_TTL - REUSE_SECS` seconds left.
pub const REUSE_SECS: i64 = ASSERTION_TTL / 2;
const ASSERTIONS_CAPACITY: u64 = 100_000;

impl Assertions {
    pub fn new(keys: Arc<KeyRing>) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(ASSERTIONS_CAPACITY)
            .time_to_live(Duration::from_secs(REUSE_SECS as u64))
            .build_with_hasher(BuildHasherDefault::default());
        Self { keys, cache, hasher: foldhash::quality::RandomState::default() }
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The signed assertion of `permit` and its identity headers: recent
    /// ones saying exactly the same, or new ones.
    pub fn signed(&self, permit: &Permit) -> Result<Arc<Signed>, Reject> {
        let slot = Asserted::slot(&self.hasher, permit);
        let t = now();
        if let Some(signed) = self.cache.get(&slot)
            && signed.reuse_until > t
            && signed.asserted.is_of(permit)
        {
            return Ok(signed);
        }
        let asserted = Asserted::of(permit);
        let a = &asserted;
        let (groups, groups_truncated) = a.groups();
        let assertion = Assertion {
            iss: self.keys.issuer().to_owned(),
            aud: a.aud.clone(),
            sub: a.caller.name().text(),
            user: a.caller.acting_user().map(Name::text),
            tid: a.tenant.as_ref().map(|t| t.id.clone()),
            roles: a.caller.roles().to_vec(),
            groups: groups.to_vec(),
            groups_truncated,
            ip: Some(a.ip.clone()),
            act: a.act.to_string(),
            decision: None,
            iat: t,
            nbf: t,
            exp: t + ASSERTION_TTL,
            jti: new_decision_id(),
        };
        let token = self.keys.sign_assertion(&assertion).map_err(|e| {
            tracing::error!(error = %e, "cannot sign an assertion");
            Reject::Internal
        })?;
        let signed = Arc::new(Signed::new(asserted, token, t + REUSE_SECS)?);
        self.cache.insert(slot, Arc::clone(&signed));
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pingora::http::RequestHeader;
    use tollgate_identity::roles::Builtin;
    use tollgate_store::Store;

    use super::*;
    use crate::authenticate::tests::Memory;
    use crate::authenticate::{Caller, authenticate};
    use crate::policy::tests::routed;
    use crate::policy::{Engines as _, Facts, PreparedSets, decide};

    async fn keys(dir: &std::path::Path) -> Assertions {
        let store = Store::connect(&format!("sqlite:{}", dir.join("t.db").display())).await.unwrap();
        store.migrate().await.unwrap();
        let keys = KeyRing::open(store, dir.join("keys"), "https://tollgate.test".into(), 900).await.unwrap();
        Assertions::new(Arc::new(keys))
    }

    /// A permit for a member of t1 in `groups` groups.
    async fn permit(groups: usize) -> Permit {
        permit_from(groups, "10.1.2.3").await
    }

    async fn permit_from(groups: usize, ip: &str) -> Permit {
        let (m, caller) = caller_in_groups(groups, ip).await;
        permit_of(&m, &caller, ip).await
    }

    /// A member of t1 in `groups` groups, signed in from `ip`.
    async fn caller_in_groups(groups: usize, ip: &str) -> (Memory, Caller) {
        let mut m = Memory::two_tenants();
        m.add_member("g1", "t1", Builtin::Member);
        let key = ("t1".to_owned(), "g1".to_owned());
        let ids: Vec<String> = (0..groups).map(|i| format!("group-{i:04}")).collect();
        m.standings.get_mut(&key).unwrap().groups = ids.into();
        m.login("tok", "g1", "t1");
        let caller = authenticate(&m, Some("Bearer tok"), ip).await.unwrap();
        (m, caller)
    }

    /// A request of `caller` from `ip`, permitted.
    async fn permit_of(m: &Memory, caller: &Caller, ip: &str) -> Permit {
        let tenant = Some(Arc::clone(&m.tenants["t1"]));
        let engine = m.engine_for(tenant.as_deref()).await.unwrap();
        let facts = Facts { method: "GET", source_ip: ip, time: 0 };
        decide(&engine, &PreparedSets::default(), caller, tenant, routed("crm.read", "CrmApi", "contacts"), &facts)
            .unwrap()
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
            ("X-Trace-Context", "abc"),
            ("x-request-id", "client-chosen"),
            // Repeated: every value of a header that passes, in order;
            // none of one that does not.
            ("x-forwarded-for", "198.51.100.7"),
            ("x-trace-context", "def"),
            ("x-request-id", "client-chosen-too"),
        ] {
            req.append_header(name, value).unwrap();
        }
        prepare_upstream_request(&mut req, &permit, &keys, &HeaderValue::from_static("req-1")).unwrap();
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        for line in ["x-trace-context: abc\r\n", "x-tollgate-tenant: t1\r\n", "x-request-id: req-1\r\n"] {
            assert_eq!(wire.matches(line).count(), 1, "{line:?} once in {wire}");
        }
        let all = |name: &str| req.headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(all("x-trace-context"), ["abc", "def"]);
        assert_eq!(all("x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(all("x-request-id"), ["req-1"]);
        for name in ["x-forwarded-for", "x-tollgate-principal", "x-tollgate-assertion", "x-request-id"] {
            assert_eq!(wire.matches(&format!("{name}: ")).count(), 1, "{name} once in {wire}");
        }
        assert_eq!(req.uri.to_string(), "/crm/contacts?x=1", "the routed path, with the query");
        assert_eq!(header(&req, "x-tollgate-tenant"), Some("t1"));
        assert_eq!(header(&req, "x-tollgate-principal"), Some("user:g1"));
        assert_eq!(header(&req, "x-forwarded-for"), Some("10.1.2.3"));
        assert_eq!(header(&req, "x-request-id"), Some("req-1"));
        for gone in ["x-tollgate_principal", "forwarded", "x-http-method-override", "authorization"] {
            assert!(header(&req, gone).is_none(), "{gone}");
        }
        let claims = keys.keys().verify_assertion(header(&req, "x-tollgate-assertion").unwrap(), "crm").unwrap();
        assert_eq!((claims.tid.as_deref(), claims.groups.len(), claims.groups_truncated), (Some("t1"), 3, false));
        assert_eq!(header(&req, "x-tollgate-decision"), Some(permit.decision().as_str()));
        assert_eq!(claims.decision, None, "the decision id is the request's, in its header");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A request routed as sent keeps its target; any other form (another
    /// spelling of the path, or an absolute URI naming a host) is replaced
    /// by the routed path.
    #[tokio::test]
    async fn the_upstream_gets_the_routed_path_in_origin_form() {
        let dir = tollgate_store::testing::temp_dir("forward-uri");
        let keys = keys(&dir).await;
        let permit = permit(0).await;
        for (sent, forwarded) in [
            ("/crm/contacts?a=1&b=%20", "/crm/contacts?a=1&b=%20"),
            ("/crm/contacts", "/crm/contacts"),
            ("/crm/./contacts?q", "/crm/contacts?q"),
            ("http://elsewhere.test/crm/contacts?q", "/crm/contacts?q"),
        ] {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.set_uri(sent.parse().unwrap());
            prepare_upstream_request(&mut req, &permit, &keys, &HeaderValue::from_static("req-1")).unwrap();
            assert_eq!(req.uri.to_string(), forwarded, "{sent}");
            assert_eq!((req.uri.scheme(), req.uri.authority()), (None, None), "{sent}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn requests_asserting_the_same_share_one_signature() {
        let dir = tollgate_store::testing::temp_dir("forward-reuse");
        let assertions = keys(&dir).await;
        let token =
            |permit: &Permit| assertions.signed(permit).unwrap().header("x-tollgate-assertion").unwrap().to_owned();
        // Requests of one caller (as the caches hand it out) share one.
        let (m, caller) = caller_in_groups(3, "10.1.2.3").await;
        let (first, second) = (permit_of(&m, &caller, "10.1.2.3").await, permit_of(&m, &caller, "10.1.2.3").await);
        assert_ne!(first.decision(), second.decision());
        assert_eq!(token(&first), token(&second), "one signature for the same facts");
        // So do the same facts read again by the caches (another copy of
        // the principal, as a new token of the same person gives).
        assert_eq!(token(&permit(3).await), token(&first), "one signature for another copy of the same facts");
        let elsewhere = permit_from(3, "10.9.9.9").await;
        let other = token(&elsewhere);
        assert_ne!(other, token(&first), "another client address is another assertion");
        let claims = assertions.keys().verify_assertion(&other, "crm").unwrap();
        assert_eq!(claims.ip.as_deref(), Some("10.9.9.9"));
        assert!(claims.exp - tollgate_store::now() > ASSERTION_TTL - REUSE_SECS - 1, "never handed out half-spent");
        assert_ne!(token(&permit(4).await), token(&first), "other groups, another assertion");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The per-request headers are set in place when a map begins with
    /// them, and inserted by name into any other: once each either way.
    #[test]
    fn the_per_request_headers_are_set_once_in_place_or_by_name() {
        let value = HeaderValue::from_static;
        let mut headed = http::HeaderMap::new();
        headed.insert(DECISION, value(""));
        headed.insert(REQUEST_ID, value(""));
        headed.insert(PRINCIPAL, value("user:u1"));
        let mut other = http::HeaderMap::new();
        other.insert(PRINCIPAL, value("user:u1"));
        other.insert(DECISION, value("stale"));
        for mut headers in [headed, other] {
            fill(&mut headers, value("d-1"), value("r-1"));
            assert_eq!(headers.len(), 3, "{headers:?}");
            let all = |name| headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
            assert_eq!((all(&DECISION), all(&REQUEST_ID)), (vec!["d-1"], vec!["r-1"]));
        }
    }

    #[test]
    fn an_id_value_reads_as_its_id_and_so_do_its_clones() {
        let id = DecisionId::new();
        let value = id_value(id);
        let copy = value.clone();
        assert_eq!((value.to_str().unwrap(), copy.to_str().unwrap()), (id.as_str(), id.as_str()));
        assert_ne!(id_value(DecisionId::new()), value);
    }

    #[tokio::test]
    async fn round_robin_takes_turns_over_the_ready_addresses_only() {
        let addresses: Vec<SocketAddr> =
            ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"].iter().map(|a| a.parse().unwrap()).collect();
        let upstream = Upstream {
            name: "crm".into(),
            addresses: addresses.clone(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        };
        let target = Target::new(&upstream).unwrap();
        let picks = |n: usize| (0..n).map(|_| target.next_address().unwrap()).collect::<Vec<_>>();
        let first = picks(6);
        for address in &addresses {
            assert_eq!(first.iter().filter(|a| *a == address).count(), 2, "{address} in {first:?}");
        }
        assert!(first.windows(2).all(|w| w[0] != w[1]), "turns: {first:?}");
        // An address out of the rotation (as a failed health check takes it) is passed over.
        let observer = Observer(Arc::clone(&target.health));
        let backend = |address: SocketAddr| Backend::new(&address.to_string()).unwrap();
        observer.observe(&backend(addresses[1]), false).await;
        let rest = picks(6);
        assert!(!rest.contains(&addresses[1]), "{rest:?}");
        for address in [addresses[0], addresses[2]] {
            assert_eq!(rest.iter().filter(|a| **a == address).count(), 3, "{address} in {rest:?}");
        }
        for address in &addresses {
            observer.observe(&backend(*address), false).await;
        }
        assert_eq!(target.next_address(), None, "no address ready, none picked");
        // A check that passes again puts it back.
        observer.observe(&backend(addresses[2]), true).await;
        assert_eq!(picks(3), [addresses[2]; 3]);
    }

    #[tokio::test]
    async fn group_ids_are_capped_and_the_cap_is_said() {
        let dir = tollgate_store::testing::temp_dir("forward-groups");
        let keys = keys(&dir).await;
        let permit = permit(1000).await;
        let signed = keys.signed(&permit).unwrap();
        let get = |name: &str| signed.header(name).unwrap();
        assert_eq!(get("x-tollgate-groups").split(',').count(), MAX_ASSERTED_GROUPS);
        assert_eq!(get("x-tollgate-groups-truncated"), "true");
        let claims = keys.keys().verify_assertion(get("x-tollgate-assertion"), "crm").unwrap();
        assert_eq!((claims.groups.len(), claims.groups_truncated), (MAX_ASSERTED_GROUPS, true));
        assert!(get("x-tollgate-assertion").len() < 8 * 1024, "the assertion stays small");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
