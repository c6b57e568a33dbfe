//! Scenario files: a set of entities and requests with their expected
//! decisions, run against an engine by `cargo test` and by the CLI.
//!
//! A scenario file is JSON:
//! `{"description": "..", "layer": ["cedar line", ..]?, "entities": [Cedar JSON entities],
//!   "requests": [{"name", "principal", "action", "resource", "context",
//!                 "decision": "allow" | "deny", "determining": ["policy-id"]?}]}`
//!
//! `layer`, when present, is a tenant layer (Cedar source, one string per
//! line) evaluated on top of the engine, as a tenant's active layer is; its
//! policy ids are prefixed with [`SCENARIO_LAYER_PREFIX`].

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::engine::{Decision, EntityRef, EntitySpec, PolicyEngine, PolicyRequest};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read `{path}`: {message}")]
    Read { path: String, message: String },
}

/// The id prefix of a scenario's own layer policies.
pub const SCENARIO_LAYER_PREFIX: &str = "layer:";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    layer: Vec<String>,
    #[serde(default)]
    entities: Vec<EntityJson>,
    requests: Vec<ScenarioRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityJson {
    uid: EntityRef,
    #[serde(default)]
    attrs: Map<String, Value>,
    #[serde(default)]
    parents: Vec<EntityRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioRequest {
    name: String,
    principal: EntityRef,
    action: String,
    resource: EntityRef,
    #[serde(default)]
    context: Map<String, Value>,
    decision: Decision,
    determining: Option<Vec<String>>,
}

/// What running a directory of scenarios found: how many requests passed and
/// a line for each that did not.
#[derive(Debug, Default)]
pub struct ScenarioReport {
    pub passed: usize,
    pub failures: Vec<String>,
}

/// Runs one scenario document (the JSON of a scenario file) named `name`.
pub fn run_scenario_text(engine: &PolicyEngine, name: &str, text: &str) -> ScenarioReport {
    let mut report = ScenarioReport::default();
    run_one(engine, name, text, &mut report, PolicyEngine::evaluate);
    report
}

/// Runs every `*.json` scenario file under `dir` (recursively) against `engine`.
pub fn run_scenario_dir(engine: &PolicyEngine, dir: &Path) -> Result<ScenarioReport, ScenarioError> {
    run_dir(engine, dir, PolicyEngine::evaluate)
}

/// Runs the scenario files as requests whose entities Tollgate built
/// ([`PolicyEngine::evaluate_trusted`]): the files' entities have the
/// shapes Tollgate builds, so both ways must decide alike.
pub fn run_scenario_dir_trusted(engine: &PolicyEngine, dir: &Path) -> Result<ScenarioReport, ScenarioError> {
    run_dir(engine, dir, PolicyEngine::evaluate_trusted)
}

pub(crate) type Evaluate = fn(&PolicyEngine, &PolicyRequest) -> crate::Outcome;

pub(crate) fn run_dir(engine: &PolicyEngine, dir: &Path, evaluate: Evaluate) -> Result<ScenarioReport, ScenarioError> {
    let mut files = Vec::new();
    collect_json(dir, &mut files)?;
    files.sort();
    let mut report = ScenarioReport::default();
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file)
            .map_err(|e| ScenarioError::Read { path: name.clone(), message: e.to_string() })?;
        run_one(engine, &name, &text, &mut report, evaluate);
    }
    Ok(report)
}

fn run_one(engine: &PolicyEngine, name: &str, text: &str, report: &mut ScenarioReport, evaluate: Evaluate) {
    let scenario: ScenarioFile = match serde_json::from_str(text) {
        Ok(s) => s,
        Err(e) => {
            report.failures.push(format!("{name}: invalid scenario file: {e}"));
            return;
        }
    };
    let label =
        if scenario.description.is_empty() { name.to_owned() } else { format!("{name} ({})", scenario.description) };
    let layered;
    let engine = if scenario.layer.is_empty() {
        engine
    } else {
        match engine.with_layer(SCENARIO_LAYER_PREFIX, &format!("{name} layer"), &scenario.layer.join("\n")) {
            Ok(e) => {
                layered = e;
                &layered
            }
            Err(e) => {
                report.failures.push(format!("{label}: invalid layer: {e}"));
                return;
            }
        }
    };
    let entities: Vec<EntitySpec> =
        scenario.entities.into_iter().map(|e| EntitySpec { uid: e.uid, attrs: e.attrs, parents: e.parents }).collect();
    for req in scenario.requests {
        let outcome = evaluate(
            engine,
            &PolicyRequest {
                principal: req.principal,
                action: req.action,
                resource: req.resource,
                context: req.context,
                entities: entities.clone(),
            },
        );
        let mut problems = Vec::new();
        if outcome.decision != req.decision {
            problems.push(format!(
                "expected {:?}, got {:?} (errors: {:?})",
                req.decision, outcome.decision, outcome.errors
            ));
        }
        if let Some(expected) = &req.determining {
            let mut got: Vec<&str> = outcome.determining.iter().map(|p| p.id.as_str()).collect();
            got.sort_unstable();
            let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
            want.sort_unstable();
            if got != want {
                problems.push(format!("expected determining {want:?}, got {got:?}"));
            }
        }
        if problems.is_empty() {
            report.passed += 1;
        } else {
            report.failures.push(format!("{label}: {}: {}", req.name, problems.join("; ")));
        }
    }
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ScenarioError> {
    let read_err = |e: std::io::Error| ScenarioError::Read { path: dir.display().to_string(), message: e.to_string() };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "json") {
            out.push(path);
        }
    }
    Ok(())
}
