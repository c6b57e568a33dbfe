//! A request's Cedar entities are its caller's (with its role, groups and
//! tenant), the tenant it acts in and the route's resource. Requests that
//! would build the same entities share one set, converted and closed once:
//! a request then costs a Cedar evaluation, not a conversion of its
//! entities with their transitive closure.
//!
//! The key holds everything the entities are built from. Tenants are
//! compared by address: the gateway's caches hand out one `Arc` per tenant
//! until it is reloaded (every `LIVENESS_TTL`), and the key holds that
//! `Arc`, so its address cannot be reused while the entry lives. A tenant
//! reloaded (a new plan, status or override) is a new key.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tollgate_identity::entities::{anonymous_entity, principal_entities, tenant_entity, tenant_ref};
use tollgate_identity::principal::{Actor, KeyOwner, Scopes, Tenant};
use tollgate_identity::roles::ResolvedRole;
use tollgate_policies::{EntityRef, EntitySpec, PolicyEngine, PreparedEntities};

use crate::authenticate::Caller;
use crate::caches::LIVENESS_TTL;
use crate::route::RouteMatch;

/// How long a prepared set is kept: its tenants are reloaded within the
/// liveness bound, after which its key (holding the old tenant) never
/// matches again.
const TTL: Duration = LIVENESS_TTL;
/// At most this many sets (about 10 KiB each): callers beyond it within
/// [`TTL`] have their entities prepared again, as every request once did.
const CAPACITY: u64 = 10_000;

/// An `Arc` compared and hashed by address.
#[derive(Debug, Clone)]
struct Same<T>(Arc<T>);

impl<T> PartialEq for Same<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Eq for Same<T> {}

impl<T> Hash for Same<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

/// The caller's part of the entities: what `principal_entities` reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    User { id: String, email: String, platform_admin: bool, standing: Standing },
    Key { id: String, scopes: Scopes, owner: KeyOwner, standing: Standing },
}

/// A known caller's role, groups and tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Standing {
    role: ResolvedRole,
    groups: Arc<[String]>,
    tenant: Same<Tenant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    who: Who,
    /// The tenant the request acts in, on routes about a tenant's resource.
    tenant: Option<Same<Tenant>>,
    resource_type: String,
    resource_id: String,
}

impl Key {
    fn of(caller: &Caller, tenant: Option<&Arc<Tenant>>, route: &RouteMatch) -> Self {
        let who = match caller {
            Caller::Anonymous => Who::Anonymous,
            Caller::Known(p) => {
                let standing = Standing {
                    role: p.role.clone(),
                    groups: Arc::clone(&p.groups),
                    tenant: Same(Arc::clone(&p.tenant)),
                };
                match &p.actor {
                    Actor::User { user, .. } => Who::User {
                        id: user.id.clone(),
                        email: user.email.clone(),
                        platform_admin: user.platform_admin,
                        standing,
                    },
                    Actor::ApiKey { key } => {
                        Who::Key { id: key.id.clone(), scopes: key.scopes.clone(), owner: key.owner.clone(), standing }
                    }
                }
            }
        };
        Self {
            who,
            tenant: tenant.filter(|_| route.needs_tenant()).map(|t| Same(Arc::clone(t))),
            resource_type: route.resource_type.clone(),
            resource_id: route.resource_id.clone(),
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

/// The prepared entity sets of recent requests.
pub struct PreparedSets {
    cache: moka::sync::Cache<Key, Arc<Prepared>>,
}

impl std::fmt::Debug for PreparedSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSets").field("entries", &self.cache.entry_count()).finish()
    }
}

impl Default for PreparedSets {
    fn default() -> Self {
        Self { cache: moka::sync::Cache::builder().max_capacity(CAPACITY).time_to_live(TTL).build() }
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
    let resource = EntityRef::new(&route.resource_type, route.resource_id.clone());
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
