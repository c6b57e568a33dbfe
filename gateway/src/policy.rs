//! The policy stage: one Cedar evaluation per request, against the platform's
//! policies plus the tenant's layer, with the identity core's entities and
//! standard context. Only an allow builds a [`Permit`], and only a `Permit`
//! lets a request reach an upstream: it carries everything forwarding needs,
//! the resolved upstream included.

use std::future::Future;
use std::sync::Arc;

use tollgate_identity::decision::DecisionId;
use tollgate_identity::entities::{RequestFacts, TIME_FACT, standard_facts};
use tollgate_identity::principal::{Authn, Name, Tenant};
use tollgate_identity::roles::Builtin;
use tollgate_policies::{DeterminingPolicy, Outcome, PolicyEngine};

use crate::authenticate::Caller;
use crate::forward::{Signed, Target};
use crate::quota::Within;
use crate::reject::Reject;
use crate::route::RouteMatch;

/// The policy sets requests are evaluated with.
pub trait Engines: Sync {
    /// The platform's policies plus `tenant`'s layer (the platform's alone
    /// without a tenant). A layer that cannot be loaded refuses the request.
    fn engine_for(&self, tenant: Option<&Tenant>) -> impl Future<Output = Result<Arc<PolicyEngine>, Reject>> + Send;
}

/// A routed request: the route it matched and the upstream serving it.
#[derive(Debug, Clone)]
pub struct Routed {
    pub route: RouteMatch,
    pub target: Arc<Target>,
}

/// Proof that the policy stage allowed a request: what the upstream is told
/// and where it goes. Its fields are private; it is built only by [`decide`].
/// What was decided is shared by the requests a kept admission serves: each
/// has only its own decision id and rate-limit standing.
#[derive(Debug, Clone)]
pub struct Permit {
    decision_id: DecisionId,
    decided: Arc<Decided>,
    /// The tightest rate limit the request stands under, set by the quota stage.
    pub within: Within,
}

/// What the policy stage allowed, for whom and where it goes.
#[derive(Debug, Clone)]
struct Decided {
    tenant: Option<Arc<Tenant>>,
    /// Who called (its name, role and groups, read from it rather than
    /// copied for every request).
    caller: Caller,
    /// Shared with the remembered decision.
    policies: Arc<[DeterminingPolicy]>,
    routed: Routed,
    source_ip: String,
    /// Until when (seconds since the Unix epoch, exclusive) the same
    /// request would be decided the same, at most: when the prepared
    /// entities' tenant entitlements change, or the next second if a policy
    /// reads the time.
    until: Option<i64>,
    /// The request's signed assertion, when it was kept with the admission.
    signed: Option<Arc<Signed>>,
}

impl Permit {
    /// The same permit for another request: a decision id of its own, no
    /// rate-limit standing yet.
    pub fn again(&self) -> Self {
        Self { decision_id: DecisionId::new(), decided: Arc::clone(&self.decided), within: Within(None) }
    }
    pub fn decided_until(&self) -> Option<i64> {
        self.decided.until
    }
    /// The assertion kept with the admission this permit repeats.
    pub fn assertion(&self) -> Option<&Arc<Signed>> {
        self.decided.signed.as_ref()
    }
    /// Keeps `signed` (this permit's own assertion) with it.
    pub fn keep_assertion(&mut self, signed: Arc<Signed>) {
        Arc::make_mut(&mut self.decided).signed = Some(signed);
    }
    pub fn decision(&self) -> &DecisionId {
        &self.decision_id
    }
    pub fn tenant(&self) -> Option<&Tenant> {
        self.decided.tenant.as_deref()
    }
    /// The tenant as the caches handed it out.
    pub fn shared_tenant(&self) -> Option<&Arc<Tenant>> {
        self.decided.tenant.as_ref()
    }
    pub fn caller(&self) -> &Caller {
        &self.decided.caller
    }
    pub fn principal(&self) -> Name<'_> {
        self.decided.caller.name()
    }
    /// `user:<id>` of the person the request acts for (see
    /// [`Caller::acting_user`]).
    pub fn user(&self) -> Option<Name<'_>> {
        self.decided.caller.acting_user()
    }
    pub fn roles(&self) -> &[String] {
        self.decided.caller.roles()
    }
    /// The ids of the tenant's groups the principal belongs to.
    pub fn groups(&self) -> &[String] {
        self.decided.caller.groups()
    }
    pub fn policies(&self) -> &[DeterminingPolicy] {
        &self.decided.policies
    }
    pub fn route(&self) -> &RouteMatch {
        &self.decided.routed.route
    }
    /// The upstream the request is forwarded to.
    pub fn target(&self) -> &Target {
        &self.decided.routed.target
    }
    /// The client's address as the gateway saw it.
    pub fn source_ip(&self) -> &str {
        &self.decided.source_ip
    }
    /// The matched route's own rate limits.
    pub fn route_limit(&self) -> Option<crate::route::RouteLimit> {
        self.decided.routed.route.rate_limit
    }
}

/// A denial with what the decision log and an explaining response need.
#[derive(Debug, Clone)]
pub struct Denial {
    pub reject: Reject,
    pub decision_id: DecisionId,
    /// Whether the caller may see the determining policies (tenant admins).
    pub explain: bool,
}

impl Denial {
    /// A refusal before any policy was evaluated.
    pub fn early(reject: Reject) -> Box<Self> {
        Box::new(Self { reject, decision_id: DecisionId::new(), explain: false })
    }
}

/// The facts of a request that policies may use.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub method: &'a str,
    pub source_ip: &'a str,
    /// Seconds since the Unix epoch.
    pub time: i64,
}

/// Evaluates the request on the entities `prepared` holds for its caller,
/// tenant and resource; an error or a deny is a [`Denial`].
pub fn decide(
    engine: &PolicyEngine,
    prepared: &PreparedSets,
    caller: &Caller,
    tenant: Option<Arc<Tenant>>,
    routed: Routed,
    facts: &Facts<'_>,
) -> Result<Permit, Box<Denial>> {
    let route = &routed.route;
    let decision_id = DecisionId::new();
    if route.needs_tenant() && tenant.is_none() {
        // Tenant-owned resource types carry their tenant; without one the
        // request cannot be about a tenant's resource.
        return Err(Box::new(Denial {
            reject: Reject::Forbidden { detail: "this route needs a tenant".into(), policies: Arc::default() },
            decision_id,
            explain: false,
        }));
    }
    let (authn, mfa, explain) = match caller {
        Caller::Known(p) => {
            let (authn, mfa) = p.authn_facts();
            (authn, mfa, p.role.base.is_some_and(|b| b >= Builtin::Admin))
        }
        Caller::Anonymous => (Authn::Anonymous, false, false),
    };
    let request =
        RequestFacts { method: facts.method, path: &route.path, source_ip: facts.source_ip, time: facts.time };
    let context = standard_facts(authn, mfa, &route.action, Some(&request));
    let (outcome, mut decided_until) = match prepared.entities(engine, caller, tenant.as_ref(), route, facts.time) {
        Ok(entities) => (engine.evaluate_prepared(&entities.entities, &route.action, &context), entities.until()),
        Err(error) => (Outcome::denied_by(error), None),
    };
    if engine.reads_context(TIME_FACT) {
        decided_until = Some(decided_until.map_or(facts.time + 1, |until| until.min(facts.time + 1)));
    }
    // No log line here: the request's one access line carries the decision,
    // its determining policies and any evaluation errors.
    if !outcome.errors.is_empty() {
        tracing::warn!(decision_id = %decision_id, errors = ?outcome.errors, "policy evaluation errors (denied)");
    }
    if outcome.is_allow() {
        let decided = Decided {
            tenant,
            caller: caller.clone(),
            policies: Arc::clone(&outcome.determining),
            routed,
            source_ip: facts.source_ip.to_owned(),
            until: decided_until,
            signed: None,
        };
        Ok(Permit { decision_id, decided: Arc::new(decided), within: Within(None) })
    } else {
        Err(Box::new(Denial {
            reject: Reject::Forbidden {
                detail: format!("not allowed to `{}`", route.action),
                policies: outcome.determining,
            },
            decision_id,
            explain,
        }))
    }
}

mod prepared;
pub use prepared::PreparedSets;

#[cfg(test)]
pub(crate) mod tests;
