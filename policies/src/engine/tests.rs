//! Engine tests: loading, validation refusals, fail-closed evaluation, and the
//! scenario files under `policies/tests/`.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::run_scenario_dir;

fn ctx() -> Map<String, Value> {
    let Value::Object(map) = json!({"authn": "password", "mfa": false, "required_scope": "tenant:read"}) else {
        unreachable!("literal is an object")
    };
    map
}

#[test]
fn builtin_policies_load_and_validate() {
    let engine = PolicyEngine::builtin().unwrap();
    assert!(engine.len() >= 10, "loaded {} policies", engine.len());
}

#[test]
fn policies_directory_matches_builtin() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let engine = PolicyEngine::from_dir(dir).unwrap();
    assert_eq!(engine.len(), PolicyEngine::builtin().unwrap().len());
}

#[test]
fn scenario_files_pass() {
    let engine = PolicyEngine::builtin().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let report = run_scenario_dir(&engine, &dir).unwrap();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(report.passed >= 29, "ran {} requests", report.passed);
}

#[test]
fn scenario_runner_reports_a_wrong_expectation() {
    let dir = std::env::temp_dir().join(format!("tg-scenario-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("wrong.json"),
        r#"{"entities": [{"uid": {"type": "Tenant", "id": "t"}, "attrs": {"status": "active", "plan": "free"}},
            {"uid": {"type": "User", "id": "u"}, "attrs": {"email": "u@x", "platform_admin": false, "role_rank": 1}}],
           "requests": [{"name": "stranger", "principal": {"type": "User", "id": "u"}, "action": "tenant.read",
             "resource": {"type": "Tenant", "id": "t"}, "context": {"authn": "password", "mfa": false, "required_scope": "x"},
             "decision": "allow"}]}"#,
    )
    .unwrap();
    let report = run_scenario_dir(&PolicyEngine::builtin().unwrap(), &dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(report.passed, 0);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(report.failures[0].contains("expected Allow, got Deny"));
}

#[test]
fn policy_not_matching_schema_is_refused() {
    let err = PolicyEngine::from_sources(
        BUILTIN_SCHEMA,
        [("bad.cedar", "@id(\"bad\") permit(principal, action, resource) when { principal.nonexistent == 1 };")],
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Validation(_)), "{err}");
}

#[test]
fn policy_without_id_is_refused() {
    let err =
        PolicyEngine::from_sources(BUILTIN_SCHEMA, [("x.cedar", "permit(principal, action, resource);")]).unwrap_err();
    assert!(matches!(err, LoadError::MissingId { .. }), "{err}");
}

#[test]
fn duplicate_ids_are_refused() {
    let p = "@id(\"same\") permit(principal, action, resource);";
    let err = PolicyEngine::from_sources(BUILTIN_SCHEMA, [("a.cedar", p), ("b.cedar", p)]).unwrap_err();
    assert!(matches!(err, LoadError::DuplicateId(id) if id == "same"));
}

#[test]
fn malformed_request_denies_with_error() {
    let engine = PolicyEngine::builtin().unwrap();
    // A user entity missing required attributes: the request cannot be built.
    let outcome = engine.evaluate(&PolicyRequest {
        principal: EntityRef::new("User", "u"),
        action: "tenant.read".into(),
        resource: EntityRef::new("Tenant", "t"),
        context: ctx(),
        entities: vec![
            EntitySpec::new(EntityRef::new("User", "u")).parent(EntityRef::new("Tenant", "t")),
            EntitySpec::new(EntityRef::new("Tenant", "t")).attr("status", json!("active")).attr("plan", json!("free")),
        ],
    });
    assert_eq!(outcome.decision, Decision::Deny);
    assert!(!outcome.errors.is_empty());
}

#[test]
fn unknown_action_denies() {
    let engine = PolicyEngine::builtin().unwrap();
    let outcome = engine.evaluate(&PolicyRequest {
        principal: EntityRef::new("User", "u"),
        action: "tenant.obliterate".into(),
        resource: EntityRef::new("Tenant", "t"),
        context: ctx(),
        entities: vec![],
    });
    assert_eq!(outcome.decision, Decision::Deny);
    assert!(!outcome.errors.is_empty());
}

#[test]
fn evaluation_error_in_a_guardrail_denies() {
    // A forbid that errors at runtime (overflow) must not let the permit through.
    let schema = "entity U; entity R; action \"go\" appliesTo { principal: [U], resource: [R], context: { n: Long } };";
    let engine = PolicyEngine::from_sources(
        schema,
        [(
            "p.cedar",
            "@id(\"allow\") permit(principal, action, resource);\n\
             @id(\"guard\") forbid(principal, action, resource) when { context.n + 9223372036854775807 > 0 };",
        )],
    )
    .unwrap();
    let Value::Object(context) = json!({"n": 1}) else { unreachable!("object") };
    let outcome = engine.evaluate(&PolicyRequest {
        principal: EntityRef::new("U", "u"),
        action: "go".into(),
        resource: EntityRef::new("R", "r"),
        context,
        entities: vec![],
    });
    assert_eq!(outcome.decision, Decision::Deny, "{outcome:?}");
    assert!(!outcome.errors.is_empty());
}

#[test]
fn layers_add_policies_with_prefixed_ids_and_cannot_override_guardrails() {
    let base = PolicyEngine::builtin().unwrap();
    let layer = PolicyEngine::builtin()
        .unwrap()
        .with_layer(
            "tenant:t:",
            "layer",
            "@id(\"everyone-reads\") permit(principal, action == Action::\"tenant.read\", resource);",
        )
        .unwrap();
    assert_eq!(layer.len(), base.len() + 1);
    // A stranger to tenant `t` is still refused: the isolation guardrail wins.
    let outcome = layer.evaluate(&PolicyRequest {
        principal: EntityRef::new("User", "u"),
        action: "tenant.read".into(),
        resource: EntityRef::new("Tenant", "t"),
        context: ctx(),
        entities: vec![
            EntitySpec::new(EntityRef::new("User", "u"))
                .attr("email", json!("u@x"))
                .attr("platform_admin", json!(false))
                .attr("role_rank", json!(1)),
            EntitySpec::new(EntityRef::new("Tenant", "t")).attr("status", json!("active")).attr("plan", json!("free")),
        ],
    });
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(outcome.determining[0].id, "platform.tenant-isolation");
    for bad in [
        "permit(principal, action, resource);",
        "@id(\"x\") permit(principal, action, resource) when { resource.nope };",
        "@id(\"t\") permit(principal == ?principal, action, resource);",
    ] {
        assert!(base.with_layer("tenant:t:", "layer", bad).is_err(), "{bad}");
    }
}
