//! The pipeline: route -> authenticate -> tenant -> entitlements -> policy ->
//! quota, each stage refusing with a [`Reject`] before any upstream is chosen.
//! Entitlements and quotas have their place here and arrive with plans.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tollgate_policies::LivePolicies;

use crate::config::GatewayConfig;
use crate::identity::Identity;
use crate::metrics;
use crate::policy::{Denial, Permit, RequestFacts, decide};
use crate::reject::Reject;
use crate::tenant::{self, TenantHints};

pub use tollgate_backend::auth::tokens::ASSERTION_TYPE;
/// How long an assertion is valid: one request's worth.
pub const ASSERTION_TTL: i64 = 60;
/// The prefix of every identity header; clients never get to send one.
pub const IDENTITY_HEADER_PREFIX: &str = "x-tollgate-";

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

/// The gateway: its configuration, the policy engine and identity caches.
#[derive(Debug)]
pub struct Gateway {
    pub config: GatewayConfig,
    /// The policies in force; each request holds one snapshot.
    pub engine: Arc<LivePolicies>,
    pub identity: Identity,
}

fn early(reject: Reject) -> Box<Denial> {
    Box::new(Denial { reject, decision_id: uuid::Uuid::new_v4().to_string(), explain: false })
}

impl Gateway {
    /// Runs the stages in order; only an allow yields a [`Permit`].
    pub async fn admit(&self, req: &Incoming<'_>) -> Result<Permit, Box<Denial>> {
        let mut clock = Instant::now();
        let mut lap = |stage: &str| {
            metrics::stage(stage, clock.elapsed().as_secs_f64());
            clock = Instant::now();
        };
        let route = self.config.routes.route(req.method, req.path).map_err(|e| early(e.into()));
        lap("route");
        let route = route?;
        let caller = self.identity.authenticate(req.authorization, req.client_ip).await.map_err(early);
        lap("authenticate");
        let caller = caller?;
        let hints = TenantHints { header: req.tenant_header, host: req.host };
        let tenant = tenant::resolve(
            &self.identity,
            &self.config.tenant_from,
            self.config.base_domain.as_deref(),
            &caller,
            hints,
            req.method,
        )
        .await
        .map_err(early);
        lap("tenant");
        let tenant = tenant?;
        let facts = RequestFacts { method: req.method, source_ip: req.client_ip };
        let engine = self.identity.engine_for(&self.engine, tenant.as_deref()).await.map_err(early)?;
        let decision = decide(&engine, &caller, tenant, route, &facts);
        lap("policy");
        decision
    }

    /// The identity headers an upstream receives for a permitted request,
    /// with a short-lived signed assertion of the same facts.
    pub fn identity_headers(&self, permit: &Permit) -> Result<Vec<(String, String)>, Reject> {
        let route = permit.route();
        let upstream = self.config.routes.get(route.route).map(|r| r.upstream.as_str()).unwrap_or_default();
        let now = tollgate_backend::store::now();
        let claims = json!({
            "iss": self.identity.keys().issuer(),
            "aud": upstream,
            "sub": permit.principal(),
            "user": permit.user(),
            "tid": permit.tenant().map(|t| t.id.as_str()),
            "roles": permit.roles(),
            "groups": permit.groups(),
            "ip": permit.source_ip(),
            "act": route.action,
            "decision": permit.decision_id(),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_TTL,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let assertion = self.identity.keys().sign(ASSERTION_TYPE, &claims).map_err(|e| {
            tracing::error!(error = %e, "cannot sign an assertion");
            Reject::Internal
        })?;
        let mut headers = vec![
            ("x-tollgate-principal".to_owned(), permit.principal().to_owned()),
            ("x-tollgate-roles".to_owned(), permit.roles().join(",")),
            ("x-tollgate-groups".to_owned(), permit.groups().join(",")),
            ("x-tollgate-decision".to_owned(), permit.decision_id().to_owned()),
            ("x-tollgate-assertion".to_owned(), assertion),
        ];
        if let Some(t) = permit.tenant() {
            headers.push(("x-tollgate-tenant".to_owned(), t.id.clone()));
            headers.push(("x-tollgate-tenant-slug".to_owned(), t.slug.clone()));
        }
        Ok(headers)
    }
}
