//! The entitlements stage: whether the tenant's plan (with its overrides in
//! force) includes the feature the route requires. It sits between the
//! tenant and policy stages, so a plan refusal (402, naming the feature and
//! the plans that include it) comes before any policy is evaluated.

use std::sync::Arc;

use tollgate_identity::plans::Catalog;
use tollgate_identity::principal::Tenant;

use crate::reject::Reject;
use crate::route::Route;

/// What the request may use under its tenant's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitled {
    /// The route requires no feature.
    Unconditionally,
    /// The tenant has the feature the route requires.
    ByPlan,
}

/// Checks the route's required feature against the tenant's entitlements at
/// `at` (seconds): overrides expire on the second.
pub fn check(route: &Route, tenant: Option<&Tenant>, catalog: &Catalog, at: i64) -> Result<Entitled, Reject> {
    let Some(feature) = route.feature.as_deref() else {
        return Ok(Entitled::Unconditionally);
    };
    let Some(tenant) = tenant else {
        return Err(Reject::Forbidden { detail: "this route needs a tenant".into(), policies: Arc::default() });
    };
    if tenant.entitlements.has_feature(feature, at) {
        Ok(Entitled::ByPlan)
    } else {
        crate::metrics::plan_refusal(feature);
        Err(Reject::PaymentRequired { feature: feature.to_owned(), plans: catalog.plans_with(feature) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tollgate_identity::principal::TenantStatus;
    use tollgate_store::OverrideRow;

    use super::*;
    use crate::authenticate::tests::tenant;
    use crate::config::GatewayConfig;

    fn reports_route() -> Route {
        let config = GatewayConfig::from_toml(
            r#"
            [upstreams.crm]
            addresses = ["127.0.0.1:9001"]
            [[routes]]
            name = "reports"
            path = "/crm/reports"
            upstream = "crm"
            methods = { GET = "crm.read" }
            resource = { type = "CrmApi", id = "reports" }
            feature = "reports"
            "#,
        )
        .unwrap();
        config.routes.get(0).unwrap().clone()
    }

    #[test]
    fn a_feature_route_needs_the_feature_until_an_override_expires() {
        let catalog = Catalog::builtin();
        let route = reports_route();
        let mut free = tenant("t1", "acme", TenantStatus::Active);
        let refused = check(&route, Some(&free), &catalog, 10).unwrap_err();
        assert_eq!(refused.status(), 402);
        let body: serde_json::Value = serde_json::from_slice(&refused.body("d", false)).unwrap();
        assert_eq!(
            (body["feature"].as_str(), body["plans"].clone()),
            (Some("reports"), serde_json::json!(["enterprise", "pro"]))
        );
        let grant = OverrideRow {
            tenant_id: "t1".into(),
            name: "reports".into(),
            kind: "feature".into(),
            value: Some(1),
            expires_at: Some(20),
            granted_by: "user:root".into(),
            created_at: 0,
        };
        free.entitlements = Arc::new(catalog.entitlements("free", &[grant]).unwrap());
        assert_eq!(check(&route, Some(&free), &catalog, 19), Ok(Entitled::ByPlan));
        assert_eq!(check(&route, Some(&free), &catalog, 20).unwrap_err().status(), 402);
        let mut pro = tenant("t2", "globex", TenantStatus::Active);
        pro.entitlements = Arc::new(catalog.plan_entitlements("pro"));
        assert_eq!(check(&route, Some(&pro), &catalog, 10), Ok(Entitled::ByPlan));
        assert_eq!(check(&route, None, &catalog, 10).unwrap_err().status(), 403);
    }
}
