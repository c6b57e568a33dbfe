//! Tollgate's policy engine facade: loads the Cedar schema and policies,
//! validates them, and evaluates requests built from Tollgate's own types.
//!
//! No Cedar type crosses this crate's boundary, and evaluation never fails
//! open: any error while building or evaluating a request is a deny that
//! carries the error for the decision log.

mod engine;
mod live;
mod scenario;

pub use engine::{
    BUILTIN_POLICIES, BUILTIN_SCHEMA, Decision, DeterminingPolicy, EntityRef, EntitySpec, Fact, LoadError, Outcome,
    PolicyEngine, PolicyRequest, PreparedEntities,
};
pub use live::{LivePolicies, PolicyWatcher, ReloadOutcome};
pub use scenario::{ScenarioError, ScenarioReport, run_scenario_dir, run_scenario_dir_trusted, run_scenario_text};
