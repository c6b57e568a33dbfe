//! The engine: an immutable, schema-validated snapshot of the policy set and
//! the evaluation of one request against it.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
// The maps here are keyed by names from the schema and the policies (never
// a request's) and looked up per request: a fast hash will do.
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

mod memo;
use memo::{Asked, ContextReads, Memo};

/// The schema compiled into the binary, the source of truth for the platform.
pub const BUILTIN_SCHEMA: &str = include_str!("../schema.cedarschema");
/// The platform policy files compiled into the binary, by file name.
pub const BUILTIN_POLICIES: &[(&str, &str)] = &[
    ("platform/guardrails.cedar", include_str!("../platform/guardrails.cedar")),
    ("platform/api.cedar", include_str!("../platform/api.cedar")),
    ("products/crm.cedar", include_str!("../products/crm.cedar")),
];

/// Why a schema or a policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid schema: {0}")]
    Schema(String),
    #[error("cannot parse `{file}`: {message}")]
    Parse { file: String, message: String },
    #[error("policy in `{file}` has no `@id` annotation")]
    MissingId { file: String },
    #[error("duplicate policy id `{0}`")]
    DuplicateId(String),
    #[error("policies do not validate against the schema: {0}")]
    Validation(String),
}

/// A reference to an entity: its Cedar type name and its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRef {
    #[serde(rename = "type")]
    pub type_name: String,
    pub id: String,
}

impl EntityRef {
    pub fn new(type_name: &str, id: impl Into<String>) -> Self {
        Self { type_name: type_name.to_owned(), id: id.into() }
    }

    fn to_json(&self) -> Value {
        json!({ "type": self.type_name, "id": self.id })
    }
}

/// One entity of a request: attributes as JSON, entity-valued attributes
/// written as `{"__entity": {"type": .., "id": ..}}`.
#[derive(Debug, Clone)]
pub struct EntitySpec {
    pub uid: EntityRef,
    pub attrs: Map<String, Value>,
    pub parents: Vec<EntityRef>,
}

impl EntitySpec {
    pub fn new(uid: EntityRef) -> Self {
        Self { uid, attrs: Map::new(), parents: Vec::new() }
    }

    pub fn attr(mut self, name: &str, value: Value) -> Self {
        self.attrs.insert(name.to_owned(), value);
        self
    }

    /// An entity-valued attribute.
    pub fn entity_attr(self, name: &str, target: &EntityRef) -> Self {
        self.attr(name, json!({ "__entity": target.to_json() }))
    }

    pub fn parent(mut self, parent: EntityRef) -> Self {
        self.parents.push(parent);
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "uid": self.uid.to_json(),
            "attrs": self.attrs,
            "parents": self.parents.iter().map(EntityRef::to_json).collect::<Vec<_>>(),
        })
    }
}

/// One value of a request's context, typed: what the standard context is
/// made of (strings, booleans, integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact<'a> {
    Str(&'a str),
    Bool(bool),
    Long(i64),
}

impl<'a> Fact<'a> {
    /// A JSON string, boolean or integer as a fact; `None` for anything else.
    pub fn from_json(value: &'a Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(Fact::Str(s)),
            Value::Bool(b) => Some(Fact::Bool(*b)),
            Value::Number(n) => n.as_i64().map(Fact::Long),
            _ => None,
        }
    }

    /// The JSON form, for requests written as JSON.
    pub fn to_json(self) -> Value {
        match self {
            Fact::Str(s) => Value::from(s),
            Fact::Bool(b) => Value::from(b),
            Fact::Long(n) => Value::from(n),
        }
    }

    fn to_cedar(self) -> RestrictedExpression {
        match self {
            Fact::Str(s) => RestrictedExpression::new_string(s.to_owned()),
            Fact::Bool(b) => RestrictedExpression::new_bool(b),
            Fact::Long(n) => RestrictedExpression::new_long(n),
        }
    }
}

/// The entities of requests that share a principal and a resource,
/// converted to Cedar and closed (transitive closure) once, for any number
/// of evaluations with different actions and contexts. Built only from
/// entities Tollgate made itself from its own rows ([`PolicyEngine::prepare`]).
#[derive(Debug)]
pub struct PreparedEntities {
    principal: EntityUid,
    resource: EntityUid,
    entities: Entities,
    decisions: Memo,
}

/// One authorization question.
#[derive(Debug, Clone)]
pub struct PolicyRequest {
    pub principal: EntityRef,
    pub action: String,
    pub resource: EntityRef,
    pub context: Map<String, Value>,
    pub entities: Vec<EntitySpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// A policy that determined a decision, with its `@reason` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeterminingPolicy {
    pub id: String,
    pub reason: Option<String>,
}

/// The answer to a request: the decision, the policies that determined it,
/// and any errors met on the way (an error always means deny).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub decision: Decision,
    /// Shared: a remembered outcome is handed out without copying its
    /// policies' ids and reasons.
    #[serde(serialize_with = "policies_list")]
    pub determining: Arc<[DeterminingPolicy]>,
    pub errors: Vec<String>,
}

fn policies_list<S: serde::Serializer>(policies: &Arc<[DeterminingPolicy]>, to: S) -> Result<S::Ok, S::Error> {
    policies.as_ref().serialize(to)
}

impl Outcome {
    /// A deny for an error met before any policy was evaluated.
    pub fn denied_by(message: String) -> Self {
        Self { decision: Decision::Deny, determining: Arc::default(), errors: vec![message] }
    }

    pub fn is_allow(&self) -> bool {
        self.decision == Decision::Allow
    }
}

/// An immutable, validated snapshot: the schema and the policy set with each
/// policy's reason. Share it behind an `Arc`; never clone it per request.
pub struct PolicyEngine {
    schema: Schema,
    policies: PolicySet,
    /// For each action of the schema, the policies whose action scope can
    /// match it: the only ones a request for that action needs evaluated.
    by_action: HashMap<String, PolicySet>,
    reasons: HashMap<String, String>,
    authorizer: Authorizer,
    /// The schema's entity type names (and `Action`), parsed once.
    types: TypeNames,
    /// For each action of the schema, its uid and the (principal type,
    /// resource type) pairs it applies to: the request check of prepared
    /// evaluations, done without building a request against the schema.
    applies: HashMap<String, (EntityUid, Vec<(EntityTypeName, EntityTypeName)>)>,
    /// The schema's actions that belong to action groups, added to every
    /// prepared set (an action outside any group needs no entity: `in`
    /// is then equality).
    actions: Vec<Entity>,
    /// The context attributes the policies read: prepared evaluations
    /// differing in nothing else share one decision.
    reads: ContextReads,
    /// This snapshot's identity among the decisions prepared sets remember.
    generation: u64,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("policies", &self.reasons.len()).finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// The schema and platform policies compiled into the binary.
    pub fn builtin() -> Result<Self, LoadError> {
        Self::from_sources(BUILTIN_SCHEMA, BUILTIN_POLICIES.iter().copied())
    }

    /// `schema.cedarschema` and every `*.cedar` file under `platform/` and
    /// (when present) `products/` of `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, LoadError> {
        let schema = read(&dir.join("schema.cedarschema"))?;
        let mut files = Vec::new();
        for sub in ["platform", "products"] {
            let folder = dir.join(sub);
            if sub == "products" && !folder.exists() {
                continue;
            }
            let read_err = |source| LoadError::Read { path: folder.display().to_string(), source };
            for entry in std::fs::read_dir(&folder).map_err(read_err)? {
                let path = entry.map_err(read_err)?.path();
                if path.extension().is_some_and(|ext| ext == "cedar") {
                    files.push((path.display().to_string(), read(&path)?));
                }
            }
        }
        files.sort();
        Self::from_sources(&schema, files.iter().map(|(name, text)| (name.as_str(), text.as_str())))
    }

    /// Parses the schema and policies, gives each policy its `@id`, and
    /// validates the set strictly against the schema.
    pub fn from_sources<'a>(
        schema: &str,
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, LoadError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(schema).map_err(|e| LoadError::Schema(e.to_string()))?;
        let mut policies = PolicySet::new();
        let mut reasons = HashMap::default();
        for (file, text) in files {
            add_file(&mut policies, &mut reasons, file, text, "")?;
        }
        validate(&schema, &policies)?;
        Ok(Self::assemble(schema, policies, reasons))
    }

    fn assemble(schema: Schema, policies: PolicySet, reasons: HashMap<String, String>) -> Self {
        let action_entities = schema.action_entities().ok();
        let by_action = index_by_action(&schema, action_entities.as_ref(), &policies);
        let types = TypeNames::of(&schema);
        let applies = applies_to(&schema);
        let actions = action_entities.as_ref().map(grouped_actions).unwrap_or_default();
        let reads = ContextReads::of(&policies);
        let generation = memo::next_generation();
        Self {
            schema,
            policies,
            by_action,
            reasons,
            authorizer: Authorizer::new(),
            types,
            applies,
            actions,
            reads,
            generation,
        }
    }

    /// This snapshot plus a layer of policies (a tenant's), whose ids are
    /// prefixed with `prefix`; validated strictly against the same schema.
    /// The base's `forbid`s keep winning: a layer can only add permits and
    /// forbids of its own.
    pub fn with_layer(&self, prefix: &str, file: &str, text: &str) -> Result<Self, LoadError> {
        let mut policies = self.policies.clone();
        let mut reasons = self.reasons.clone();
        add_file(&mut policies, &mut reasons, file, text, prefix)?;
        validate(&self.schema, &policies)?;
        Ok(Self::assemble(self.schema.clone(), policies, reasons))
    }

    /// The number of policies in the snapshot.
    pub fn len(&self) -> usize {
        self.reasons.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }

    /// Evaluates one request, its entities checked against the schema. Never
    /// fails: any error is a deny with the error. For entities someone else
    /// supplied (a product's, at the decision point).
    pub fn evaluate(&self, request: &PolicyRequest) -> Outcome {
        self.evaluate_beside_trusted(request, &[])
    }

    /// Evaluates one request whose entities someone else supplied (a
    /// product's, at the decision point), checked against the schema as
    /// [`Self::evaluate`] checks them, beside `trusted` entities Tollgate
    /// built itself from its own rows (the caller, its roles, groups and
    /// tenant), taken as [`Self::evaluate_trusted`] takes them: only what
    /// came from outside pays the per-request conformance check. An entity
    /// given on both sides must be the same, or the request is denied.
    /// Never fails: any error is a deny with the error.
    pub fn evaluate_beside_trusted(&self, request: &PolicyRequest, trusted: &[EntitySpec]) -> Outcome {
        match self.try_evaluate(request, EntityCheck::Checked, trusted) {
            Ok(outcome) => outcome,
            Err(message) => Outcome::denied_by(message),
        }
    }

    /// Evaluates one request whose entities Tollgate built itself from its
    /// own rows (the caller, its roles, groups and tenant, a route's
    /// resource): they are taken as they are, without the per-request
    /// conformance check against the schema, which they pass by
    /// construction. The request itself (types of principal, action and
    /// resource, and the context) is still checked, and any error is a deny.
    pub fn evaluate_trusted(&self, request: &PolicyRequest) -> Outcome {
        match self.try_evaluate(request, EntityCheck::Trusted, &[]) {
            Ok(outcome) => outcome,
            Err(message) => Outcome::denied_by(message),
        }
    }

    /// Converts and closes trusted entities (built by Tollgate from its own
    /// rows, as for [`Self::evaluate_trusted`]) for evaluations about
    /// `principal` and `resource`, both among them. The schema's actions
    /// that belong to groups are added, so action groups hold as in a
    /// checked request.
    pub fn prepare(
        &self,
        principal: &EntityRef,
        resource: &EntityRef,
        specs: &[EntitySpec],
    ) -> Result<PreparedEntities, String> {
        let types = &self.types;
        let uid = |r: &EntityRef| types.uid(r).ok_or_else(|| format!("invalid entity `{}::{}`", r.type_name, r.id));
        let (principal, resource) = (uid(principal)?, uid(resource)?);
        let entities = plain_entities(types, specs).ok_or("entities that are not plainly written")?;
        let entities = self.closed(entities)?;
        Ok(PreparedEntities { principal, resource, entities, decisions: Memo::default() })
    }

    /// Whether any policy of this set reads the context attribute `name`
    /// (a decision on a request differing only in facts no policy reads is
    /// the same decision).
    pub fn reads_context(&self, name: &str) -> bool {
        self.reads.covers(name)
    }

    /// Evaluates `action` on prepared entities with a typed context. The
    /// request is checked as [`Self::evaluate_trusted`] checks it, by the
    /// schema's rules read once per snapshot: the action must exist and
    /// apply to the principal's and the resource's types; the context,
    /// made of typed facts, is the standard one by construction (a missing
    /// or mistyped fact makes the policies reading it fail, which denies).
    /// The decision is remembered on the prepared set for this snapshot,
    /// the action and the facts the policies read: a request differing
    /// only in facts no policy reads gets it without an evaluation.
    /// Never fails: any error is a deny with the error.
    pub fn evaluate_prepared(
        &self,
        prepared: &PreparedEntities,
        action: &str,
        context: &[(&str, Fact<'_>)],
    ) -> Outcome {
        match self.try_evaluate_prepared(prepared, action, context) {
            Ok(outcome) => outcome,
            Err(message) => Outcome::denied_by(message),
        }
    }

    fn try_evaluate_prepared(
        &self,
        prepared: &PreparedEntities,
        action: &str,
        context: &[(&str, Fact<'_>)],
    ) -> Result<Outcome, String> {
        let (action_uid, envs) =
            self.applies.get(action).ok_or_else(|| format!("invalid request: unknown action `{action}`"))?;
        let (principal_type, resource_type) = (prepared.principal.type_name(), prepared.resource.type_name());
        if !envs.iter().any(|(p, r)| p == principal_type && r == resource_type) {
            return Err(format!(
                "invalid request: `{action}` does not apply to `{principal_type}` on `{resource_type}`"
            ));
        }
        if let Some(name) = repeated_name(context) {
            return Err(format!("invalid context: `{name}` given twice"));
        }
        let asked = Asked { generation: self.generation, action, reads: &self.reads, context };
        if let Some(outcome) = prepared.decisions.recall(asked) {
            return Ok(outcome);
        }
        let cedar_context =
            Context::from_pairs(context.iter().map(|(name, fact)| ((*name).to_owned(), fact.to_cedar())))
                .map_err(|e| format!("invalid context: {e}"))?;
        let request = Request::new(
            prepared.principal.clone(),
            action_uid.clone(),
            prepared.resource.clone(),
            cedar_context,
            None,
        )
        .map_err(|e| format!("invalid request: {e}"))?;
        let outcome = self.decide(action, &request, &prepared.entities);
        prepared.decisions.remember(asked, &outcome);
        Ok(outcome)
    }

    fn try_evaluate(
        &self,
        request: &PolicyRequest,
        entities_are: EntityCheck,
        trusted: &[EntitySpec],
    ) -> Result<Outcome, String> {
        let types = &self.types;
        let uid = |r: &EntityRef| types.uid(r).ok_or_else(|| format!("invalid entity `{}::{}`", r.type_name, r.id));
        let principal = uid(&request.principal)?;
        let resource = uid(&request.resource)?;
        let action = uid(&EntityRef::new("Action", request.action.clone()))?;
        let context = match primitive_context(&request.context) {
            // Checked against the action's context type by `Request::new`.
            Some(pairs) => Context::from_pairs(pairs).map_err(|e| e.to_string()),
            None => Context::from_json_value(Value::Object(request.context.clone()), Some((&self.schema, &action)))
                .map_err(|e| e.to_string()),
        }
        .map_err(|e| format!("invalid context: {e}"))?;
        let entities = self.entities(&request.entities, entities_are, trusted)?;
        let cedar_request = Request::new(principal, action, resource, context, Some(&self.schema))
            .map_err(|e| format!("invalid request: {e}"))?;
        Ok(self.decide(&request.action, &cedar_request, &entities))
    }

    /// A request's entities: `given` checked against the schema (unless
    /// `Trusted`) and `trusted` taken as they are (see
    /// [`Self::evaluate_beside_trusted`]).
    fn entities(
        &self,
        given: &[EntitySpec],
        given_are: EntityCheck,
        trusted: &[EntitySpec],
    ) -> Result<Entities, String> {
        let types = &self.types;
        let invalid = |e: cedar_policy::entities_errors::EntitiesError| format!("invalid entities: {e}");
        let plain = plain_entities(types, given);
        if !trusted.is_empty()
            && given_are == EntityCheck::Checked
            && let Some(given) = plain
        {
            // The given entities checked on their own (a store of a few),
            // then every entity with the schema's grouped actions closed
            // once, as a prepared set is: the check runs on what came from
            // outside only.
            Entities::empty().add_entities(given.iter().cloned(), Some(&self.schema)).map_err(invalid)?;
            let trusted = plain_entities(types, trusted).ok_or("invalid entities: not plainly written")?;
            return self.closed(given.into_iter().chain(trusted));
        }
        // Checked against the schema on either path.
        let entities = match plain {
            Some(entities) if given_are == EntityCheck::Trusted => return self.closed(entities),
            Some(entities) => Entities::from_entities(entities, Some(&self.schema)),
            None => Entities::from_json_value(
                Value::Array(given.iter().map(EntitySpec::to_json).collect()),
                Some(&self.schema),
            ),
        }
        .map_err(invalid)?;
        if trusted.is_empty() {
            return Ok(entities);
        }
        let trusted = plain_entities(types, trusted).ok_or("invalid entities: not plainly written")?;
        entities.add_entities(trusted, None).map_err(invalid)
    }

    /// Entities taken as they are (checked already, or Tollgate's own),
    /// closed with the schema's grouped actions, so that action groups
    /// hold as in a checked request (which adds the schema's actions
    /// itself): the one way every unchecked set is built.
    fn closed(&self, entities: impl IntoIterator<Item = Entity>) -> Result<Entities, String> {
        Entities::from_entities(entities.into_iter().chain(self.actions.iter().cloned()), None)
            .map_err(|e| format!("invalid entities: {e}"))
    }

    /// The decision on a built request: the policies that can apply to
    /// `action`, evaluated; an error denies.
    fn decide(&self, action: &str, cedar_request: &Request, entities: &Entities) -> Outcome {
        let policies = self.by_action.get(action).unwrap_or(&self.policies);
        let response = self.authorizer.is_authorized(cedar_request, policies, entities);
        let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        let determining = response
            .diagnostics()
            .reason()
            .map(|id| DeterminingPolicy {
                id: id.to_string(),
                reason: self.reasons.get(AsRef::<str>::as_ref(id)).filter(|r| !r.is_empty()).cloned(),
            })
            .collect::<Arc<[_]>>();
        let decision = match response.decision() {
            cedar_policy::Decision::Allow if errors.is_empty() => Decision::Allow,
            _ => Decision::Deny,
        };
        Outcome { decision, determining, errors }
    }
}

/// The first name of `context` that a name before it already gave, if any.
/// Each name marks a bit chosen by its length and last byte, and only a name
/// finding its bit marked is compared with the names before it: distinct
/// names rarely share a bit, so a request's context costs a pass, not a
/// comparison of every pair.
fn repeated_name<'a>(context: &[(&'a str, Fact<'_>)]) -> Option<&'a str> {
    let mut marked = 0u64;
    for (i, (name, _)) in context.iter().enumerate() {
        let last = name.as_bytes().last().copied().map_or(0, usize::from);
        let bit = 1u64 << ((name.len() * 7 + last) % 64);
        if marked & bit != 0 && context[..i].iter().any(|(earlier, _)| earlier == name) {
            return Some(name);
        }
        marked |= bit;
    }
    None
}

/// Whether a request's entities are checked against the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntityCheck {
    /// Built by Tollgate from its own rows: conform by construction.
    Trusted,
    /// Supplied by someone else: checked.
    Checked,
}

/// Entity type names by their text, parsed once per snapshot: parsing a
/// name is dearer than cloning one.
#[derive(Debug, Clone, Default)]
struct TypeNames(Arc<HashMap<String, EntityTypeName>>);

impl TypeNames {
    fn of(schema: &Schema) -> Self {
        let mut names: HashMap<String, EntityTypeName> =
            schema.entity_types().map(|t| (t.to_string(), t.clone())).collect();
        if let Ok(action) = EntityTypeName::from_str("Action") {
            names.insert("Action".into(), action);
        }
        Self(Arc::new(names))
    }

    /// The uid of `r`; a type the schema does not name is parsed (and then
    /// refused by the request's or the entities' checks where it matters).
    fn uid(&self, r: &EntityRef) -> Option<EntityUid> {
        let type_name = match self.0.get(&r.type_name) {
            Some(known) => known.clone(),
            None => EntityTypeName::from_str(&r.type_name).ok()?,
        };
        Some(EntityUid::from_type_name_and_id(type_name, EntityId::new(&r.id)))
    }
}

/// An attribute value written plainly: a string, boolean, integer, an
/// explicit `{"__entity": ..}` reference, or a set or record of those.
fn plain_value(types: &TypeNames, value: &Value) -> Option<RestrictedExpression> {
    Some(match value {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(n.as_i64()?),
        Value::Array(items) => {
            RestrictedExpression::new_set(items.iter().map(|v| plain_value(types, v)).collect::<Option<Vec<_>>>()?)
        }
        Value::Object(map) => match map.get("__entity") {
            Some(target) if map.len() == 1 => {
                let (type_name, id) = (target.get("type")?.as_str()?, target.get("id")?.as_str()?);
                RestrictedExpression::new_entity_uid(types.uid(&EntityRef::new(type_name, id))?)
            }
            // Escapes (`__entity` beside other keys, `__extn`), and what the
            // schema may read as an entity reference (`{"type", "id"}`),
            // take the JSON path.
            _ if map.keys().any(|k| k.starts_with("__")) => return None,
            _ if map.len() == 2 && map.contains_key("type") && map.contains_key("id") => return None,
            _ => RestrictedExpression::new_record(
                map.iter().map(|(k, v)| Some((k.clone(), plain_value(types, v)?))).collect::<Option<Vec<_>>>()?,
            )
            .ok()?,
        },
        Value::Null => return None,
    })
}

/// The entities as Cedar entities without a round trip through JSON, when
/// every attribute is written plainly (as the platform's own entities are);
/// `None` when any is not, and those take the JSON path.
fn plain_entities(types: &TypeNames, specs: &[EntitySpec]) -> Option<Vec<Entity>> {
    specs
        .iter()
        .map(|spec| {
            let attrs = spec
                .attrs
                .iter()
                .map(|(name, value)| Some((name.clone(), plain_value(types, value)?)))
                .collect::<Option<std::collections::HashMap<_, _>>>()?;
            let parents =
                spec.parents.iter().map(|p| types.uid(p)).collect::<Option<std::collections::HashSet<_>>>()?;
            Entity::new(types.uid(&spec.uid)?, attrs, parents).ok()
        })
        .collect()
}

/// A context of strings, booleans and integers only (what the gateway and
/// the platform API send) as Cedar values, without a round trip through
/// JSON; `None` for anything richer, which takes the JSON path.
fn primitive_context(context: &Map<String, Value>) -> Option<Vec<(String, RestrictedExpression)>> {
    context.iter().map(|(name, value)| Some((name.clone(), Fact::from_json(value)?.to_cedar()))).collect()
}

/// The schema's action entities that have action groups above them: the
/// only ones an evaluation reads (copied into each prepared set, so the
/// others are left out).
fn grouped_actions(actions: &Entities) -> Vec<Entity> {
    actions.iter().filter(|a| actions.ancestors(&a.uid()).is_some_and(|mut up| up.next().is_some())).cloned().collect()
}

/// For each action of the schema, its uid and the (principal, resource)
/// type pairs its `appliesTo` names.
fn applies_to(schema: &Schema) -> HashMap<String, (EntityUid, Vec<(EntityTypeName, EntityTypeName)>)> {
    let mut out: HashMap<String, (EntityUid, Vec<_>)> = HashMap::default();
    for action in schema.actions() {
        out.insert(action.id().unescaped().to_owned(), (action.clone(), Vec::new()));
    }
    for env in schema.request_envs() {
        if let Some((_, pairs)) = out.get_mut(env.action().id().unescaped()) {
            pairs.push((env.principal().clone(), env.resource().clone()));
        }
    }
    out
}

/// For each action of the schema, the policies that can apply to it: those
/// without an action constraint, `action == it`, or `action in [..]` naming
/// it or one of its action groups. A policy left out could only have been
/// unsatisfied by its scope, so decisions and determining policies are the
/// same as evaluating the whole set.
fn index_by_action(schema: &Schema, groups: Option<&Entities>, policies: &PolicySet) -> HashMap<String, PolicySet> {
    let mut out = HashMap::default();
    for action in schema.actions() {
        let mut lineage: Vec<&EntityUid> = vec![action];
        if let Some(ancestors) = groups.and_then(|g| g.ancestors(action)) {
            lineage.extend(ancestors);
        }
        let mut subset = PolicySet::new();
        for policy in policies.policies() {
            let applies = match policy.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(uid) => &uid == action,
                ActionConstraint::In(uids) => uids.iter().any(|uid| lineage.contains(&uid)),
            };
            // Ids are unique in `policies`, so adding to the subset cannot fail.
            if applies && subset.add(policy.clone()).is_err() {
                return HashMap::default();
            }
        }
        out.insert(action.id().unescaped().to_owned(), subset);
    }
    out
}

/// Parses one file's policies into `policies`, each named `prefix` + its `@id`.
fn add_file(
    policies: &mut PolicySet,
    reasons: &mut HashMap<String, String>,
    file: &str,
    text: &str,
    prefix: &str,
) -> Result<(), LoadError> {
    let parsed =
        PolicySet::from_str(text).map_err(|e| LoadError::Parse { file: file.to_owned(), message: e.to_string() })?;
    if parsed.templates().next().is_some() {
        return Err(LoadError::Parse { file: file.to_owned(), message: "templates are not supported".into() });
    }
    for policy in parsed.policies() {
        let id = policy.annotation("id").ok_or_else(|| LoadError::MissingId { file: file.to_owned() })?;
        let id = format!("{prefix}{id}");
        if reasons.contains_key(&id) {
            return Err(LoadError::DuplicateId(id));
        }
        let renamed: Policy = policy.new_id(PolicyId::new(&id));
        policies.add(renamed).map_err(|_| LoadError::DuplicateId(id.clone()))?;
        reasons.insert(id, policy.annotation("reason").unwrap_or_default().to_owned());
    }
    Ok(())
}

fn validate(schema: &Schema, policies: &PolicySet) -> Result<(), LoadError> {
    let validation = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    if validation.validation_passed() {
        Ok(())
    } else {
        let messages: Vec<String> = validation.validation_errors().map(|e| e.to_string()).collect();
        Err(LoadError::Validation(messages.join("; ")))
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests;
