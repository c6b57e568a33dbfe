//! The pipeline: route -> authenticate -> tenant -> entitlements -> policy ->
//! quota, each stage in its own module, refusing with a [`Reject`] before any
//! upstream is chosen. Only an allow yields a [`Permit`]; this file only
//! sequences the stages and times them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tollgate_store::now;

use crate::admissions::{Admissions, Asked, Began};
use crate::authenticate::{Caller, authenticate};
use crate::caches::Caches;
use crate::config::GatewayConfig;
use crate::forward::{Assertions, Target, targets};
use crate::metrics::{RouteMetrics, Stage};
use crate::policy::{Denial, Engines as _, Facts, Permit, PreparedSets, Routed, decide};
use crate::quota::Quotas;
use crate::reject::Reject;
use crate::tenant::{self, TenantHints};
use crate::{entitlements, metrics};
use tollgate_identity::principal::SECOND_FACTOR_REQUIRED;

/// What the pipeline reads of a request.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub tenant_header: Option<&'a str>,
    pub host: Option<&'a str>,
    pub client_ip: &'a str,
}

/// The gateway: its configuration, the upstream of each route, and the
/// caches every stage looks things up in.
#[derive(Debug)]
pub struct Gateway {
    pub config: GatewayConfig,
    /// Every upstream by name, health checked by the server.
    pub targets: BTreeMap<String, Arc<Target>>,
    /// What serves each route, by the route's index in the table.
    by_route: Vec<Served>,
    pub caches: Caches,
    pub quotas: Quotas,
    /// Signed assertions for upstreams, shared by requests asserting the same.
    pub assertions: Assertions,
    /// Cedar entities of recent callers, shared by their requests.
    prepared: PreparedSets,
    /// Recent requests' admissions, for the requests repeating them.
    pub(crate) admissions: Admissions,
}

/// A route's upstream and its latency handles.
#[derive(Debug)]
struct Served {
    target: Arc<Target>,
    metrics: RouteMetrics,
}

impl Gateway {
    pub fn new(config: GatewayConfig, caches: Caches) -> std::io::Result<Self> {
        let targets = targets(&config.upstreams)?;
        let by_route = (0..config.routes.len())
            .map(|i| {
                let route = config.routes.get(i)?;
                let target = Arc::clone(targets.get(&route.upstream)?);
                Some(Served { target, metrics: RouteMetrics::new(&route.name, &route.upstream) })
            })
            .collect::<Option<_>>()
            .ok_or_else(|| std::io::Error::other("a route names an upstream that is not configured"))?;
        let quotas = Quotas::new(config.rate_limits);
        let assertions = Assertions::new(caches.key_ring());
        Ok(Self {
            config,
            targets,
            by_route,
            caches,
            quotas,
            assertions,
            prepared: PreparedSets::default(),
            admissions: Admissions::default(),
        })
    }

    /// The same gateway, handing out kept admissions up to `max_age` old.
    #[cfg(test)]
    pub(crate) fn keeping_admissions_for(mut self, max_age: std::time::Duration) -> Self {
        self.admissions = Admissions::with_max_age(max_age);
        self
    }

    /// The latency handles of the route at `index` (of no route: `None`).
    pub fn route_metrics(&self, index: Option<usize>) -> &RouteMetrics {
        match index.and_then(|i| self.by_route.get(i)) {
            Some(served) => &served.metrics,
            None => RouteMetrics::unrouted(),
        }
    }

    /// Runs the stages in order; only an allow yields a [`Permit`]. A
    /// request repeating a recent one is admitted as it was while all it
    /// was admitted on holds (see [`crate::admissions`]); its quota is
    /// checked all the same. (Stage timings are of admissions made anew.)
    pub async fn admit(&self, req: &Incoming<'_>) -> Result<Permit, Box<Denial>> {
        let asked = Asked::of(req);
        if let Some(asked) = &asked
            && let Some((permit, at)) = self.admissions.recall(&self.caches, asked, req.client_ip).await
        {
            return self.within_quota(permit, at).await;
        }
        let began = asked.as_ref().map(|_| Began::now(&self.caches));
        let mut clock = Instant::now();
        // One reading of the clock per stage: it ends one and starts the next.
        let mut lap = |stage: Stage| {
            let now = Instant::now();
            metrics::stage(stage, now.duration_since(clock));
            clock = now;
        };
        let decided = self.decide(req, &mut lap).await;
        let (mut permit, at) = decided?;
        if let (Some(asked), Some(began)) = (asked, began) {
            self.admissions.keep(&self.caches, &self.assertions, asked, began, &mut permit);
        }
        let within = self.within_quota(permit, at).await;
        lap(Stage::Quota);
        within
    }

    /// The stages up to the policy's decision, each timed by `lap`; with
    /// the time (seconds) the request was decided at.
    async fn decide(&self, req: &Incoming<'_>, lap: &mut impl FnMut(Stage)) -> Result<(Permit, i64), Box<Denial>> {
        let route = self.config.routes.route(req.method, req.path).map_err(|e| Denial::early(e.into()));
        lap(Stage::Route);
        let route = route?;
        let target = self
            .by_route
            .get(route.route)
            .map(|s| Arc::clone(&s.target))
            .ok_or_else(|| Denial::early(Reject::Internal))?;
        let route_def = self.config.routes.get(route.route).ok_or_else(|| Denial::early(Reject::Internal))?;
        // A credential the upstream checks itself is not the gateway's to read.
        let authorization = if route_def.upstream_authenticates { None } else { req.authorization };
        let caller = authenticate(&self.caches, authorization, req.client_ip).await.map_err(Denial::early);
        lap(Stage::Authenticate);
        let caller = caller?;
        // Routes about no tenant's resource take no hint of one (the
        // credential's tenant still applies): a header or host naming a
        // tenant costs no look-up there and reveals nothing.
        let hints = if route.needs_tenant() {
            TenantHints { header: req.tenant_header, host: req.host }
        } else {
            TenantHints::default()
        };
        let config = &self.config;
        let tenant = tenant::resolve(
            &self.caches,
            &config.tenant_from,
            config.base_domain.as_deref(),
            &caller,
            hints,
            req.method,
        )
        .await
        .map_err(Denial::early);
        lap(Stage::Tenant);
        let tenant = tenant?;
        // A tenant that requires a second factor serves its products only
        // to people who signed in with one (the platform's routes let them
        // enrol; the backend applies the same rule to the rest of its API).
        if let (Caller::Known(p), true) = (&caller, route.needs_tenant())
            && p.second_factor_missing()
        {
            return Err(Denial::early(Reject::Forbidden {
                detail: SECOND_FACTOR_REQUIRED.into(),
                policies: Arc::default(),
            }));
        }
        let at = now();
        let entitled = self
            .caches
            .with_catalog(|c| entitlements::check(route_def, tenant.as_deref(), c, at))
            .map_err(Denial::early);
        lap(Stage::Entitlements);
        entitled?;
        // A tenant's layer applies to its resources; the platform's own
        // routes are decided per call by the backend, with the layer.
        let layered = tenant.as_deref().filter(|_| route.needs_tenant());
        let engine = self.caches.engine_for(layered).await.map_err(Denial::early)?;
        let facts = Facts { method: req.method, source_ip: req.client_ip, time: at };
        let permit = decide(&engine, &self.prepared, &caller, tenant, Routed { route, target }, &facts);
        lap(Stage::Policy);
        Ok((permit?, at))
    }

    /// `permit` once the quota stage lets the request through at `at`.
    async fn within_quota(&self, mut permit: Permit, at: i64) -> Result<Permit, Box<Denial>> {
        let refused = |reject| Box::new(Denial { reject, decision_id: *permit.decision(), explain: false });
        let within = match self.caches.store().await {
            Ok(store) => self.quotas.check(&permit, store, at).await.map_err(refused),
            Err(reject) => Err(refused(reject)),
        };
        permit.within = within?;
        Ok(permit)
    }
}
