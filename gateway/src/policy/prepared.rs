//! A request's Cedar entities are its caller's (with its role, groups and
//! tenant), the tenant it acts in and the route's resource. Requests that
//! would build the same entities share one set, converted and closed once:
//! a request then costs a Cedar evaluation, not a conversion of its
//! entities with their transitive closure.
//!
//! The key holds everything the entities are built from. A tenant is the
//! same when it is the same `Arc` (the gateway's caches hand out one per
//! tenant until it is reloaded: when the liveness feed names it, or after
//! `LIVENESS_TTL`) or, reloaded, equal in every field: a tenant reloaded
//! unchanged (the feed names a change again for a few seconds after it was
//! made) keeps its sets, and one reloaded with a new plan, status, override
//! or anything else is a new key.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tollgate_identity::entities::{anonymous_entity, principal_entities, tenant_entity, tenant_ref};
use tollgate_identity::principal::{self, KeyOwner, Principal, Scopes, Tenant};
use tollgate_identity::roles::ResolvedRole;
use tollgate_policies::{EntityRef, EntitySpec, PolicyEngine, PreparedEntities};

use crate::authenticate::Caller;
use crate::caches::LIVENESS_TTL;
use crate::route::RouteMatch;

/// How long a prepared set is kept unused or not: as long as the tenants
/// it holds are kept by the caches at most.
const TTL: Duration = LIVENESS_TTL;
/// At most this many sets (about 10 KiB each): callers beyond it within
/// [`TTL`] have their entities prepared again, as every request once did.
const CAPACITY: u64 = 10_000;

/// A tenant in a key: equal when it is the same `Arc` (compared first, by
/// address) or equal in every field; hashed by its id.
#[derive(Debug, Clone)]
struct TenantKey(Arc<Tenant>);

impl PartialEq for TenantKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for TenantKey {}

impl Hash for TenantKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// The caller's part of the entities: a principal, compared by what
/// `principal_entities` reads of it (held, not copied: a request's key
/// costs reference counts, not strings). The same `Arc` is the same
/// principal without reading further; the hash takes only the actor's id
/// and tenant (equal facts have equal ids), which is all that tells the
/// callers of one moment apart.
#[derive(Debug, Clone)]
enum Who {
    Anonymous,
    Known(Arc<Principal>),
}

/// What the entities are built from, borrowed from a principal.
#[derive(PartialEq, Eq, Hash)]
enum Actor<'a> {
    User { id: &'a str, email: &'a str, platform_admin: bool },
    Key { id: &'a str, scopes: &'a Scopes, owner: &'a KeyOwner },
}

impl Who {
    fn facts(&self) -> Option<(Actor<'_>, &ResolvedRole, &[String], &Arc<Tenant>)> {
        let Who::Known(p) = self else {
            return None;
        };
        let actor = match &p.actor {
            principal::Actor::User { user, .. } => {
                Actor::User { id: &user.id, email: &user.email, platform_admin: user.platform_admin }
            }
            principal::Actor::ApiKey { key } => Actor::Key { id: &key.id, scopes: &key.scopes, owner: &key.owner },
        };
        Some((actor, &p.role, &p.groups, &p.tenant))
    }
}

// The principal's tenant is compared as [`TenantKey`] does (an `Arc` of an
// `Eq` type compares addresses first).
impl PartialEq for Who {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Who::Known(a), Who::Known(b)) if Arc::ptr_eq(a, b) => true,
            _ => self.facts() == other.facts(),
        }
    }
}

impl Eq for Who {}

impl Hash for Who {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Who::Anonymous => state.write_u8(0),
            Who::Known(p) => {
                p.actor_name().hash(state);
                p.tenant.id.hash(state);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    who: Who,
    /// The tenant the request acts in, on routes about a tenant's resource.
    tenant: Option<TenantKey>,
    resource_type: Arc<str>,
    resource_id: Arc<str>,
}

impl Key {
    fn of(caller: &Caller, tenant: Option<&Arc<Tenant>>, route: &RouteMatch) -> Self {
        let who = match caller {
            Caller::Anonymous => Who::Anonymous,
            Caller::Known(p) => Who::Known(Arc::clone(p)),
        };
        Self {
            who,
            tenant: tenant.filter(|_| route.needs_tenant()).map(|t| TenantKey(Arc::clone(t))),
            resource_type: Arc::clone(&route.resource_type),
            resource_id: Arc::clone(&route.resource_id),
        }
    }
}

/// Entities prepared for one key, good until `until` (when an override of
/// one of its tenants expires and the tenant's entity says otherwise).
#[derive(Debug)]
pub struct Prepared {
    pub entities: PreparedEntities,
    until: Option<i64>,
}

impl Prepared {
    /// When the entities stop holding (an override of a tenant expires).
    pub fn until(&self) -> Option<i64> {
        self.until
    }
}

/// The prepared entity sets of recent requests.
pub struct PreparedSets {
    /// Keyed by a seeded fast hash (foldhash's, in its quality mode for keys
    /// that carry request data); with SipHash, hashing was most of the
    /// look-up.
    cache: moka::sync::Cache<Key, Arc<Prepared>, foldhash::quality::RandomState>,
}

impl std::fmt::Debug for PreparedSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSets").field("entries", &self.cache.entry_count()).finish()
    }
}

impl Default for PreparedSets {
    fn default() -> Self {
        let cache = moka::sync::Cache::builder().max_capacity(CAPACITY).time_to_live(TTL);
        Self { cache: cache.build_with_hasher(foldhash::quality::RandomState::default()) }
    }
}

impl PreparedSets {
    /// The entities of a request by `caller` about `route`'s resource in
    /// `tenant` (which a tenant route has), prepared at most once while
    /// they stay the same; `at` is the request's time.
    pub fn entities(
        &self,
        engine: &PolicyEngine,
        caller: &Caller,
        tenant: Option<&Arc<Tenant>>,
        route: &RouteMatch,
        at: i64,
    ) -> Result<Arc<Prepared>, String> {
        let key = Key::of(caller, tenant, route);
        if let Some(prepared) = self.cache.get(&key)
            && prepared.until.is_none_or(|until| until > at)
        {
            return Ok(prepared);
        }
        let prepared = Arc::new(build(engine, caller, key.tenant.as_ref().map(|t| &t.0), route, at)?);
        self.cache.insert(key, Arc::clone(&prepared));
        Ok(prepared)
    }
}

/// The entities of the request, as the identity core builds them for
/// everyone who decides (the gateway, the backend, the decision point).
fn build(
    engine: &PolicyEngine,
    caller: &Caller,
    tenant: Option<&Arc<Tenant>>,
    route: &RouteMatch,
    at: i64,
) -> Result<Prepared, String> {
    let mut specs = Vec::new();
    let mut tenants = Vec::new();
    let principal = match caller {
        Caller::Known(p) => {
            tenants.push(&p.tenant);
            principal_entities(p, at, &mut specs)
        }
        Caller::Anonymous => anonymous_entity(&mut specs),
    };
    let resource = EntityRef::new(&route.resource_type, &*route.resource_id);
    let mut resource_entity = EntitySpec::new(resource.clone());
    if let Some(t) = tenant {
        if matches!(caller, Caller::Anonymous) {
            specs.push(tenant_entity(t, at));
        }
        tenants.push(t);
        let tenant = tenant_ref(&t.id);
        resource_entity = resource_entity.entity_attr("tenant", &tenant).parent(tenant);
    }
    specs.push(resource_entity);
    let entities = engine.prepare(&principal, &resource, &specs)?;
    let until = tenants.iter().filter_map(|t| t.entitlements.next_change(at)).min();
    Ok(Prepared { entities, until })
}
