//! Engine tests: loading, validation refusals, fail-closed evaluation, and the
//! scenario files under `policies/tests/`.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::{run_scenario_dir, run_scenario_dir_trusted};

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

/// The scenario files' directory.
fn scenarios() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// A run of every scenario file: nothing failed, and all of them ran.
fn assert_all_passed(report: crate::ScenarioReport) {
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(report.passed >= 29, "ran {} requests", report.passed);
}

/// Every scenario file, decided `evaluate`'s way, passes.
fn all_pass(evaluate: crate::scenario::Evaluate) {
    assert_all_passed(crate::scenario::run_dir(&PolicyEngine::builtin().unwrap(), &scenarios(), evaluate).unwrap());
}

#[test]
fn scenario_files_pass() {
    assert_all_passed(run_scenario_dir(&PolicyEngine::builtin().unwrap(), &scenarios()).unwrap());
}

/// The gateway and the API evaluate the entities they build without the
/// per-request schema check: on every scenario it must decide the same.
#[test]
fn scenario_files_pass_with_trusted_entities() {
    assert_all_passed(run_scenario_dir_trusted(&PolicyEngine::builtin().unwrap(), &scenarios()).unwrap());
}

#[test]
fn scenario_runner_reports_a_wrong_expectation() {
    let dir = std::env::temp_dir().join(format!("tg-scenario-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("wrong.json"),
        r#"{"entities": [{"uid": {"type": "Tenant", "id": "t"}, "attrs": {"status": "active", "plan": "free", "features": [], "limits": {}}},
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

/// A scenario's request as the gateway decides it: its entities prepared,
/// its context as typed facts.
fn evaluate_prepared(engine: &PolicyEngine, request: &PolicyRequest) -> Outcome {
    let facts: Option<Vec<(&str, Fact<'_>)>> =
        request.context.iter().map(|(name, value)| Some((name.as_str(), Fact::from_json(value)?))).collect();
    let Some(facts) = facts else { return Outcome::denied_by("a context richer than facts".into()) };
    match engine.prepare(&request.principal, &request.resource, &request.entities) {
        Ok(prepared) => engine.evaluate_prepared(&prepared, &request.action, &facts),
        Err(error) => Outcome::denied_by(error),
    }
}

/// The gateway evaluates prepared entities with typed facts: on every
/// scenario it must decide as the checked evaluation does.
#[test]
fn scenario_files_pass_with_prepared_entities() {
    all_pass(evaluate_prepared);
}

/// The decision point's way: the request's resource as a product gives it
/// (checked), the rest beside it as Tollgate builds it (trusted).
fn evaluate_beside_trusted(engine: &PolicyEngine, request: &PolicyRequest) -> Outcome {
    let mut given = request.clone();
    let (resource, trusted): (Vec<_>, Vec<_>) = given.entities.drain(..).partition(|e| e.uid == request.resource);
    given.entities = resource;
    engine.evaluate_beside_trusted(&given, &trusted)
}

/// Checking only what a product gave decides, on every scenario, as
/// checking everything does.
#[test]
fn scenario_files_pass_beside_trusted_entities() {
    all_pass(evaluate_beside_trusted);
}

#[test]
fn a_prepared_request_the_action_does_not_apply_to_denies() {
    let engine = PolicyEngine::builtin().unwrap();
    let (user, platform) = (EntityRef::new("Anonymous", "anonymous"), EntityRef::new("Platform", "tollgate"));
    let prepared = engine.prepare(&user, &platform, &[EntitySpec::new(user.clone())]).unwrap();
    let facts = [("authn", Fact::Str("anonymous")), ("mfa", Fact::Bool(false)), ("required_scope", Fact::Str("x"))];
    for action in ["tenant.delete", "tenant.obliterate"] {
        let outcome = engine.evaluate_prepared(&prepared, action, &facts);
        assert_eq!(outcome.decision, Decision::Deny, "{action}");
        assert!(outcome.errors[0].starts_with("invalid request"), "{action}: {:?}", outcome.errors);
    }
}

/// An engine whose one policy permits the actions of the `read` group:
/// `view` is in it, `edit` is not.
fn read_group_engine() -> PolicyEngine {
    let schema = "entity U; entity R; action \"read\"; \
                  action \"view\" in [\"read\"] appliesTo { principal: [U], resource: [R], context: {} }; \
                  action \"edit\" appliesTo { principal: [U], resource: [R], context: {} };";
    let policies = "@id(\"readers\") permit (principal, action in Action::\"read\", resource);";
    PolicyEngine::from_sources(schema, [("p.cedar", policies)]).unwrap()
}

/// Action groups hold for Tollgate's own entities too (the API's platform
/// decisions): a forbid or permit naming a group applies to its actions.
#[test]
fn trusted_requests_see_action_groups() {
    let engine = read_group_engine();
    let (u, r) = (EntityRef::new("U", "u"), EntityRef::new("R", "r"));
    let ask = |action: &str| {
        engine.evaluate_trusted(&PolicyRequest {
            principal: u.clone(),
            action: action.into(),
            resource: r.clone(),
            context: Map::new(),
            entities: vec![EntitySpec::new(u.clone()), EntitySpec::new(r.clone())],
        })
    };
    assert!(ask("view").is_allow(), "view is in the read group");
    assert!(!ask("edit").is_allow());
}

#[test]
fn prepared_requests_see_action_groups() {
    let engine = read_group_engine();
    let (u, r) = (EntityRef::new("U", "u"), EntityRef::new("R", "r"));
    let prepared = engine.prepare(&u, &r, &[EntitySpec::new(u.clone()), EntitySpec::new(r.clone())]).unwrap();
    assert!(engine.evaluate_prepared(&prepared, "view", &[]).is_allow(), "view is in the read group");
    assert!(!engine.evaluate_prepared(&prepared, "edit", &[]).is_allow());
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
            EntitySpec::new(EntityRef::new("Tenant", "t"))
                .attr("status", json!("active"))
                .attr("plan", json!("free"))
                .attr("features", json!([]))
                .attr("limits", json!({})),
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
            EntitySpec::new(EntityRef::new("Tenant", "t"))
                .attr("status", json!("active"))
                .attr("plan", json!("free"))
                .attr("features", json!([]))
                .attr("limits", json!({})),
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

#[test]
fn contexts_are_checked_against_the_schema_on_every_path() {
    let engine = PolicyEngine::builtin().unwrap();
    let request = |context: Value| {
        let Value::Object(context) = context else { unreachable!("object") };
        PolicyRequest {
            principal: EntityRef::new("User", "u"),
            action: "account.read".into(),
            resource: EntityRef::new("User", "u"),
            context,
            entities: vec![
                EntitySpec::new(EntityRef::new("User", "u"))
                    .attr("email", json!("u@x.test"))
                    .attr("platform_admin", json!(false))
                    .attr("role_rank", json!(1)),
            ],
        }
    };
    let good = engine.evaluate(&request(json!({"authn": "password", "mfa": false, "required_scope": "x"})));
    assert!(good.is_allow(), "{good:?}");
    for bad in [
        json!({"authn": "password", "required_scope": "x"}),
        json!({"authn": "password", "mfa": "no", "required_scope": "x"}),
        json!({"authn": "password", "mfa": false, "required_scope": "x", "extra": 1}),
        json!({"authn": "password", "mfa": false, "required_scope": ["x"]}),
        json!({"authn": "password", "mfa": false, "required_scope": "x", "n": 1.5}),
    ] {
        let outcome = engine.evaluate(&request(bad.clone()));
        assert_eq!(outcome.decision, Decision::Deny, "{bad}");
        assert!(!outcome.errors.is_empty(), "{bad}: {outcome:?}");
    }
}

#[test]
fn evaluating_only_the_policies_of_the_action_changes_no_decision() {
    // `act` is in the action group `writes`; policies scope actions every way.
    let schema = "entity U; entity R;\n\
        action \"writes\";\n\
        action \"act\" in [\"writes\"] appliesTo { principal: [U], resource: [R] };\n\
        action \"other\" appliesTo { principal: [U], resource: [R] };";
    let engine = PolicyEngine::from_sources(
        schema,
        [(
            "p.cedar",
            "@id(\"eq\") permit(principal, action == Action::\"act\", resource);\n\
             @id(\"group\") forbid(principal, action in [Action::\"writes\"], resource);\n\
             @id(\"any\") permit(principal, action, resource);\n\
             @id(\"other\") forbid(principal, action == Action::\"other\", resource);",
        )],
    )
    .unwrap();
    let ask = |action: &str| {
        engine.evaluate(&PolicyRequest {
            principal: EntityRef::new("U", "u"),
            action: action.into(),
            resource: EntityRef::new("R", "r"),
            context: Map::new(),
            entities: vec![],
        })
    };
    let ids = |o: &Outcome| {
        let mut ids: Vec<String> = o.determining.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        ids
    };
    let act = ask("act");
    assert_eq!((act.decision, ids(&act)), (Decision::Deny, vec!["group".to_owned()]), "{act:?}");
    let other = ask("other");
    assert_eq!((other.decision, ids(&other)), (Decision::Deny, vec!["other".to_owned()]), "{other:?}");
    assert_eq!(engine.by_action["act"].policies().count(), 3, "eq, group and any apply to `act`");
    assert_eq!(engine.by_action["other"].policies().count(), 2, "any and other apply to `other`");
}

/// User `u`, a member of tenant `t` with `role_rank`.
fn member(role_rank: Value) -> EntitySpec {
    EntitySpec::new(EntityRef::new("User", "u"))
        .attr("email", json!("u@x.test"))
        .attr("platform_admin", json!(false))
        .attr("role_rank", role_rank)
        .parent(EntityRef::new("Role", "member"))
        .parent(EntityRef::new("Tenant", "t"))
}

/// `user`'s entities as Tollgate builds them: its roles, its tenant, itself.
fn with_roles_and_tenant(user: EntitySpec) -> Vec<EntitySpec> {
    vec![
        EntitySpec::new(EntityRef::new("Role", "member")).parent(EntityRef::new("Role", "viewer")),
        EntitySpec::new(EntityRef::new("Role", "viewer")),
        EntitySpec::new(EntityRef::new("Tenant", "t"))
            .attr("status", json!("active"))
            .attr("plan", json!("free"))
            .attr("features", json!([]))
            .attr("limits", json!({})),
        user,
    ]
}

/// `u`'s update of contact `c`, with `entities`.
fn contact_update(entities: Vec<EntitySpec>) -> PolicyRequest {
    let Value::Object(context) = json!({"authn": "password", "mfa": false, "required_scope": "x",
        "method": "PATCH", "path": "/crm/contacts/c", "source_ip": "127.0.0.1", "time": 0})
    else {
        unreachable!("object")
    };
    PolicyRequest {
        principal: EntityRef::new("User", "u"),
        action: "contact.update".into(),
        resource: EntityRef::new("Contact", "c"),
        context,
        entities,
    }
}

#[test]
fn entities_are_checked_against_the_schema_on_every_path() {
    let engine = PolicyEngine::builtin().unwrap();
    let tenant = EntityRef::new("Tenant", "t");
    let contact = |owner: Value, tenant_attr: Value| {
        EntitySpec::new(EntityRef::new("Contact", "c"))
            .attr("tenant", tenant_attr)
            .attr("owner", owner)
            .parent(tenant.clone())
    };
    let ask = |user: EntitySpec, contact: EntitySpec| {
        let mut entities = with_roles_and_tenant(user);
        entities.push(contact);
        engine.evaluate(&contact_update(entities))
    };
    let user = member;
    let explicit = |id: &str| json!({"__entity": {"type": "User", "id": id}});
    let t = json!({"__entity": {"type": "Tenant", "id": "t"}});
    assert!(ask(user(json!(2)), contact(explicit("u"), t.clone())).is_allow(), "plain entities");
    assert!(
        plain_entities(
            &TypeNames::default(),
            &[EntitySpec::new(EntityRef::new("Tenant", "t")).attr("limits", json!({"max_members": 5}))]
        )
        .is_some(),
        "records of plain values are plain too"
    );
    assert!(
        plain_entities(
            &TypeNames::default(),
            &[EntitySpec::new(EntityRef::new("Contact", "c")).attr("owner", json!({"type": "User", "id": "u"}))]
        )
        .is_none(),
        "what the schema may read as a reference is not"
    );
    // A product's implicit reference, which only the schema makes an entity.
    let implicit = json!({"type": "User", "id": "u"});
    let outcome = ask(user(json!(2)), contact(implicit, json!({"type": "Tenant", "id": "t"})));
    assert!(outcome.is_allow(), "implicit references: {outcome:?}");
    for (name, outcome) in [
        ("a string for a Long", ask(user(json!("2")), contact(explicit("u"), t.clone()))),
        (
            "an entity of the wrong type",
            ask(user(json!(2)), contact(json!({"__entity": {"type": "Tenant", "id": "u"}}), t.clone())),
        ),
        (
            "a missing attribute",
            ask(user(json!(2)), EntitySpec::new(EntityRef::new("Contact", "c")).attr("tenant", t.clone())),
        ),
        ("an undeclared attribute", ask(user(json!(2)).attr("extra", json!(true)), contact(explicit("u"), t.clone()))),
    ] {
        assert_eq!(outcome.decision, Decision::Deny, "{name}");
        assert!(!outcome.errors.is_empty(), "{name}: {outcome:?}");
    }
}

#[test]
fn the_context_attributes_policies_read_are_found() {
    let reads = |text: &str| memo::ContextReads::of(&PolicySet::from_str(text).unwrap());
    let only = |names: &[&str]| memo::ContextReads::Only(names.iter().map(|n| (*n).to_owned()).collect());
    assert_eq!(reads("permit (principal, action, resource);"), only(&[]));
    assert_eq!(
        reads(
            "permit (principal, action, resource) when { context.path == \"/x\" && context has mfa }; \
             forbid (principal, action, resource) when { ip(context.source_ip).isInRange(ip(\"10.0.0.0/8\")) }; \
             permit (principal == ?principal, action, resource) when { context[\"time\"] > 5 };"
        ),
        only(&["mfa", "path", "source_ip", "time"])
    );
    assert_eq!(reads("permit (principal, action, resource) when { context == {} };"), memo::ContextReads::All);
    assert_eq!(
        reads("permit (principal, action, resource) when { principal.tags.contains(context) };"),
        memo::ContextReads::All
    );
}

const TIMED_SCHEMA: &str = "entity U; entity R; \
    action \"read\" appliesTo { principal: [U], resource: [R], context: { path: String, time: Long } };";

fn timed_engine(policy: &str) -> PolicyEngine {
    PolicyEngine::from_sources(TIMED_SCHEMA, [("p.cedar", policy)]).unwrap()
}

fn timed_prepared(engine: &PolicyEngine) -> PreparedEntities {
    let (u, r) = (EntityRef::new("U", "u"), EntityRef::new("R", "r"));
    engine.prepare(&u, &r, &[EntitySpec::new(u.clone()), EntitySpec::new(r.clone())]).unwrap()
}

#[test]
fn remembered_decisions_follow_the_facts_policies_read() {
    let engine = timed_engine("@id(\"early\") permit (principal, action, resource) when { context.time < 100 };");
    let prepared = timed_prepared(&engine);
    let at = |path, time| {
        engine.evaluate_prepared(&prepared, "read", &[("path", Fact::Str(path)), ("time", Fact::Long(time))])
    };
    assert!(at("/a", 50).is_allow());
    assert!(at("/b", 50).is_allow(), "the path is read by no policy");
    assert!(!at("/a", 150).is_allow(), "the time is read: a decision at another time is not reused");
    assert!(at("/a", 50).is_allow());
    let twice = engine.evaluate_prepared(&prepared, "read", &[("time", Fact::Long(50)), ("time", Fact::Long(150))]);
    assert!(!twice.is_allow());
    assert!(twice.errors[0].contains("given twice"), "{:?}", twice.errors);
}

#[test]
fn remembered_decisions_belong_to_their_policy_snapshot() {
    let base = timed_engine("@id(\"late\") forbid (principal, action, resource) when { context.time > 1000 };");
    let layered = base.with_layer("t", "t.cedar", "@id(\"all\") permit (principal, action, resource);").unwrap();
    let prepared = timed_prepared(&base);
    let facts = [("path", Fact::Str("/a")), ("time", Fact::Long(5))];
    assert!(!base.evaluate_prepared(&prepared, "read", &facts).is_allow());
    assert!(layered.evaluate_prepared(&prepared, "read", &facts).is_allow(), "the layer's permit");
    assert!(!base.evaluate_prepared(&prepared, "read", &facts).is_allow(), "the base still denies");
}

#[test]
fn a_set_remembers_few_decisions_and_no_long_facts() {
    let memo = memo::Memo::default();
    fn asked<'a>(generation: u64, action: &'a str, context: &'a [(&'a str, Fact<'a>)]) -> memo::Asked<'a> {
        memo::Asked { generation, action, reads: &memo::ContextReads::All, context }
    }
    let allow = Outcome { decision: Decision::Allow, determining: Arc::default(), errors: Vec::new() };
    let long = "x".repeat(300);
    memo.remember(asked(1, "read", &[("path", Fact::Str(&long))]), &allow);
    assert!(memo.recall(asked(1, "read", &[("path", Fact::Str(&long))])).is_none());
    for n in 0..9 {
        memo.remember(asked(1, "read", &[("time", Fact::Long(n))]), &allow);
    }
    assert!(memo.recall(asked(1, "read", &[("time", Fact::Long(0))])).is_none(), "the oldest is forgotten");
    assert!(memo.recall(asked(1, "read", &[("time", Fact::Long(8))])).is_some());
    assert!(memo.recall(asked(2, "read", &[("time", Fact::Long(8))])).is_none(), "another snapshot");
    assert!(memo.recall(asked(1, "write", &[("time", Fact::Long(8))])).is_none(), "another action");
    assert!(memo.recall(asked(1, "read", &[("time", Fact::Long(8)), ("path", Fact::Str("/"))])).is_none());
}

#[test]
fn a_name_given_twice_is_found_wherever_it_is() {
    // Names sharing a length and a last byte share a mark; others may too.
    let names = ["ab", "cb", "b", "time", "path", "mfa", "source_ip", "x", "xb", "authn"];
    let quadratic = |context: &[(&'static str, Fact<'static>)]| {
        context
            .iter()
            .enumerate()
            .find_map(|(i, (name, _))| context[..i].iter().find(|(e, _)| e == name).map(|_| *name))
    };
    // Every sequence of up to four names from the list, repeats included.
    let mut sequences: Vec<Vec<&str>> = vec![Vec::new()];
    for _ in 0..4 {
        let longer: Vec<Vec<&str>> =
            sequences.iter().flat_map(|s| names.iter().map(move |n| [s.as_slice(), &[*n]].concat())).collect();
        sequences.extend(longer.into_iter().filter(|s| s.len() <= 4));
        sequences.sort();
        sequences.dedup();
    }
    assert!(sequences.len() > 10_000, "{}", sequences.len());
    for sequence in &sequences {
        let context: Vec<(&str, Fact<'_>)> = sequence.iter().map(|n| (*n, Fact::Bool(true))).collect();
        assert_eq!(repeated_name(&context), quadratic(&context), "{sequence:?}");
    }
}

/// Beside trusted entities, the given ones are still checked against the
/// schema; one given on both sides must be the same one; action groups
/// hold as in a checked request.
#[test]
fn entities_given_beside_trusted_ones_are_still_checked() {
    let engine = PolicyEngine::builtin().unwrap();
    let user = member(json!(2));
    let trusted = with_roles_and_tenant(user.clone());
    let owner = json!({"__entity": {"type": "User", "id": "u"}});
    let t = json!({"__entity": {"type": "Tenant", "id": "t"}});
    let contact = || EntitySpec::new(EntityRef::new("Contact", "c")).parent(EntityRef::new("Tenant", "t"));
    let ask = |given: Vec<EntitySpec>| engine.evaluate_beside_trusted(&contact_update(given), &trusted);
    let valid = contact().attr("tenant", t.clone()).attr("owner", owner.clone());
    assert!(ask(vec![valid.clone()]).is_allow(), "a valid contact beside the caller's entities");
    for (name, given) in [
        ("a missing attribute", vec![contact().attr("tenant", t.clone())]),
        ("an undeclared attribute", vec![valid.clone().attr("extra", json!(true))]),
        ("a string for an entity", vec![contact().attr("tenant", json!("t")).attr("owner", owner.clone())]),
        ("the caller given again, otherwise", vec![valid.clone(), user.clone().attr("role_rank", json!(9))]),
    ] {
        let outcome = ask(given);
        assert_eq!(outcome.decision, Decision::Deny, "{name}");
        assert!(outcome.errors.iter().any(|e| e.starts_with("invalid entities")), "{name}: {outcome:?}");
    }
    assert!(ask(vec![valid, user]).is_allow(), "the caller given again, the same");
    // Implicit references (which only the schema makes entities) take the
    // way of entities that are not plainly written: checked the same.
    let implicit = |owner: Value| contact().attr("tenant", json!({"type": "Tenant", "id": "t"})).attr("owner", owner);
    assert!(ask(vec![implicit(json!({"type": "User", "id": "u"}))]).is_allow(), "implicit references");
    let outcome = ask(vec![implicit(json!({"type": "Tenant", "id": "u"}))]);
    assert_eq!(outcome.decision, Decision::Deny, "an implicit reference of the wrong type");
    assert!(outcome.errors.iter().any(|e| e.starts_with("invalid entities")), "{outcome:?}");

    let engine = read_group_engine();
    let (u, r) = (EntityRef::new("U", "u"), EntityRef::new("R", "r"));
    let ask = |action: &str| {
        let request = PolicyRequest {
            principal: u.clone(),
            action: action.into(),
            resource: r.clone(),
            context: Map::new(),
            entities: vec![EntitySpec::new(r.clone())],
        };
        engine.evaluate_beside_trusted(&request, &[EntitySpec::new(u.clone())])
    };
    assert!(ask("view").is_allow(), "view is in the read group");
    assert!(!ask("edit").is_allow());
}
