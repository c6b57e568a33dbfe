//! The entitlements stage: whether the tenant's plan includes what the route
//! needs. It sits between the tenant and policy stages, so a plan refusal
//! (402) comes before any policy is evaluated.
//!
//! Plans are only names on tenants for now (the plan catalog with features
//! and limits is the next step), so no route can require a feature yet and
//! every routed request is entitled; the stage's place and its types stand.

use tollgate_identity::principal::Tenant;

use crate::reject::Reject;
use crate::route::RouteMatch;

/// What the request may use under its tenant's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitled {
    /// The route requires no feature.
    Unconditionally,
}

/// Checks the route's requirements against the tenant's plan.
pub fn check(_route: &RouteMatch, _tenant: Option<&Tenant>) -> Result<Entitled, Reject> {
    Ok(Entitled::Unconditionally)
}
