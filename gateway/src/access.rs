//! Each request's one access line. By default it is a `tracing` event
//! (target [`TARGET`], level INFO, message [`MESSAGE`]) like any other line;
//! a process that writes JSON lines itself can take them instead through
//! [`write_to`], so a request's line is formatted straight into that output
//! rather than through `tracing`'s field visitors (the same line, at a
//! fraction of the cost on every request). Either way the log filter
//! decides whether the line is written.

use std::fmt;
use std::sync::OnceLock;

use tollgate_identity::decision::reason_line;
use tollgate_identity::principal::Name;
use tollgate_policies::DeterminingPolicy;

/// The target access lines are logged under.
pub const TARGET: &str = "tollgate_gateway::proxy";
/// The message of every access line.
pub const MESSAGE: &str = "gateway request";

/// What the gateway records of a request.
#[derive(Clone, Copy)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The status sent (0: none was).
    pub status: u16,
    /// The decision id (empty before any decision).
    pub decision: &'a str,
    pub tenant: &'a str,
    /// Written empty when there is none.
    pub principal: Option<Name<'a>>,
    /// The route's action.
    pub route: &'a str,
    /// The determining policies, written `id: reason`.
    pub policies: &'a [DeterminingPolicy],
    /// Why forwarding failed, if it did.
    pub error: Option<&'a dyn fmt::Display>,
    pub latency_us: u64,
}

impl fmt::Debug for AccessLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLine").field("request_id", &self.request_id).finish_non_exhaustive()
    }
}

/// The determining policies as an access line lists them: each `id:
/// reason` (its id alone when it gives none), in `Debug` form.
struct Reasons<'a>(&'a [DeterminingPolicy]);

impl fmt::Debug for Reasons<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(reason_line)).finish()
    }
}

/// A value that may be missing, shown as nothing then.
struct Shown<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Shown<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => Ok(()),
        }
    }
}

/// Where access lines go instead of `tracing`.
pub trait AccessLog: Send + Sync {
    fn write(&self, line: &AccessLine<'_>);
}

static OUTPUT: OnceLock<Box<dyn AccessLog>> = OnceLock::new();

/// Sends every access line of this process to `output` from now on (once:
/// a second call changes nothing and returns `false`).
pub fn write_to(output: impl AccessLog + 'static) -> bool {
    OUTPUT.set(Box::new(output)).is_ok()
}

/// Records `line`, unless the log filter leaves access lines out.
pub fn record(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    if let Some(output) = OUTPUT.get() {
        output.write(line);
        return;
    }
    tracing::info!(
        target: TARGET,
        request_id = line.request_id,
        method = line.method,
        path = line.path,
        status = line.status,
        decision = line.decision,
        tenant = line.tenant,
        principal = %Shown(line.principal),
        route = line.route,
        policies = ?Reasons(line.policies),
        error = line.error.map(ToString::to_string).unwrap_or_default(),
        latency_us = line.latency_us,
        "{MESSAGE}"
    );
}
