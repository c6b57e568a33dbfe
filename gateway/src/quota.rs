//! The quota stage: rate limits per client address, key, user and tenant,
//! and the tenant's monthly quota, checked after the policy stage allowed a
//! request and before it is forwarded, so denied requests spend nothing.
//!
//! No limits are configured yet (they arrive with the plan catalog), so
//! every permitted request is within quota; the stage's place and its types
//! stand.

use crate::policy::Permit;
use crate::reject::Reject;

/// How a permitted request stands against its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Within {
    /// No limit applies to the request.
    Unlimited,
}

/// Counts the request against the limits that apply to it.
pub fn check(_permit: &Permit) -> Result<Within, Reject> {
    Ok(Within::Unlimited)
}
