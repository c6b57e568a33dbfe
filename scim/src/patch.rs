//! PATCH (RFC 7644 §3.5.2) applied to a resource's JSON: `add`, `replace`
//! and `remove`, with and without paths, value-filter paths, multi-valued
//! add and remove (group members), and the forms identity providers send:
//! operation names in any case (Entra ID's `Replace`), booleans as strings
//! (`"active": "False"`), a path-less `replace` whose keys are paths
//! (`"name.givenName"`), and `remove` of members listed in `value`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ScimError, ScimType};
use crate::path::{AttrPath, PatchPath};

/// The PATCH request message's schema URI.
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// What PATCH needs to know of a resource type's schema.
pub trait Attributes {
    /// Whether `attr` (top level) is multi-valued.
    fn multi_valued(&self, attr: &str) -> bool;
    /// Whether the value at `path` is a boolean (so `"False"` means false).
    fn boolean(&self, path: &AttrPath) -> bool;
    /// Whether clients may not change `attr` (`id`, `meta`, a user's `groups`).
    fn read_only(&self, attr: &str) -> bool;
    /// Whether `uri` is one of the resource type's extension schemas, whose
    /// attributes sit in an object under that key.
    fn extension(&self, uri: &str) -> bool;
}

/// One operation as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    pub op: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub value: Option<Value>,
}

/// A PATCH request as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct PatchRequest {
    pub schemas: Vec<String>,
    #[serde(rename = "Operations")]
    pub operations: Vec<Operation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

fn bad_value(detail: impl Into<String>) -> ScimError {
    ScimError::typed(ScimType::InvalidValue, detail)
}

/// `"True"` / `"false"` for boolean attributes, recursively for complex values.
fn coerce(value: Value, path: &AttrPath, attrs: &dyn Attributes) -> Value {
    match value {
        Value::String(s) if attrs.boolean(path) => match s.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(s),
        },
        Value::Object(map) if path.sub.is_none() => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let sub = AttrPath { uri: path.uri.clone(), attr: path.attr.clone(), sub: Some(k.clone()) };
                    (k, coerce(v, &sub, attrs))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| coerce(v, path, attrs)).collect()),
        other => other,
    }
}

/// The object holding `path`'s attribute: the resource, or its extension's
/// object (made when `create`).
fn holder<'a>(resource: &'a mut Value, path: &AttrPath, create: bool) -> Option<&'a mut Map<String, Value>> {
    let top = resource.as_object_mut()?;
    match &path.uri {
        Some(uri) if !uri.to_ascii_lowercase().contains(":core:") => {
            let key = top.keys().find(|k| k.eq_ignore_ascii_case(uri)).cloned().unwrap_or_else(|| uri.clone());
            if create {
                top.entry(key).or_insert_with(|| Value::Object(Map::new())).as_object_mut()
            } else {
                top.get_mut(&key)?.as_object_mut()
            }
        }
        _ => Some(top),
    }
}

/// The key under which `name` is stored in `map` (case-insensitively), or `name`.
fn key_of(map: &Map<String, Value>, name: &str) -> String {
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned().unwrap_or_else(|| name.to_owned())
}

fn as_list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        single => vec![single],
    }
}

/// Sets (replace) or adds (add) `value` at a plain attribute path.
fn set_attr(
    resource: &mut Value,
    path: &AttrPath,
    value: Value,
    op: Op,
    attrs: &dyn Attributes,
) -> Result<(), ScimError> {
    if attrs.read_only(&path.attr) {
        return Err(ScimError::typed(ScimType::Mutability, format!("`{}` cannot be changed", path.attr)));
    }
    let multi = attrs.multi_valued(&path.attr);
    let map = holder(resource, path, true).ok_or_else(|| bad_value("the resource is not an object"))?;
    let key = key_of(map, &path.attr);
    match &path.sub {
        Some(sub) => {
            if multi {
                // `emails.value` without a filter names every element.
                let items = map
                    .get_mut(&key)
                    .and_then(Value::as_array_mut)
                    .ok_or_else(|| ScimError::typed(ScimType::NoTarget, format!("`{}` has no values", path.attr)))?;
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    let k = key_of(item, sub);
                    item.insert(k, value.clone());
                }
            } else {
                let inner = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
                let inner =
                    inner.as_object_mut().ok_or_else(|| bad_value(format!("`{}` is not complex", path.attr)))?;
                let k = key_of(inner, sub);
                inner.insert(k, value);
            }
        }
        None if multi && op == Op::Add => {
            let existing = map.entry(key).or_insert_with(|| Value::Array(Vec::new()));
            if !existing.is_array() {
                *existing = Value::Array(vec![existing.take()]);
            }
            if let Value::Array(items) = existing {
                for v in as_list(value) {
                    if !items.contains(&v) {
                        items.push(v);
                    }
                }
            }
        }
        None if multi => {
            map.insert(key, Value::Array(as_list(value)));
        }
        None => match (map.get_mut(&key), value) {
            // `add` to a complex attribute merges its sub-attributes.
            (Some(Value::Object(current)), Value::Object(new)) if op == Op::Add => {
                for (k, v) in new {
                    let k2 = key_of(current, &k);
                    current.insert(k2, v);
                }
            }
            (_, value) => {
                map.insert(key, value);
            }
        },
    }
    Ok(())
}

fn apply_one(resource: &mut Value, operation: &Operation, attrs: &dyn Attributes) -> Result<(), ScimError> {
    let op = match operation.op.to_ascii_lowercase().as_str() {
        "add" => Op::Add,
        "replace" => Op::Replace,
        "remove" => Op::Remove,
        other => return Err(ScimError::typed(ScimType::InvalidSyntax, format!("`{other}` is not a PATCH operation"))),
    };
    let path = match operation.path.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        Some(text) => Some(PatchPath::parse(text)?),
        None => None,
    };
    match (op, path) {
        (Op::Remove, None) => Err(ScimError::typed(ScimType::NoTarget, "`remove` needs a `path`")),
        (Op::Add | Op::Replace, None) => {
            let Some(Value::Object(values)) = operation.value.clone() else {
                return Err(bad_value("without a `path`, `value` must be an object of attributes"));
            };
            for (name, value) in values {
                if name.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                // An extension's URI as the key holds its attributes.
                if attrs.extension(&name) {
                    let Value::Object(inner) = value else {
                        return Err(bad_value(format!("`{name}` must be an object")));
                    };
                    for (k, v) in inner {
                        let path = AttrPath { uri: Some(name.clone()), attr: k, sub: None };
                        set_attr(resource, &path, coerce(v, &path, attrs), op, attrs)?;
                    }
                    continue;
                }
                // Entra ID writes paths as keys: `"name.givenName": "Ann"`.
                let target = AttrPath::parse(&name)
                    .ok_or_else(|| ScimError::typed(ScimType::InvalidPath, format!("`{name}` is not an attribute")))?;
                set_attr(resource, &target, coerce(value, &target, attrs), op, attrs)?;
            }
            Ok(())
        }
        (op, Some(PatchPath::Attr(path))) => {
            if op == Op::Remove {
                return remove_attr(resource, &path, operation.value.as_ref(), attrs);
            }
            let value = operation.value.clone().ok_or_else(|| bad_value("`value` is required"))?;
            set_attr(resource, &path, coerce(value, &path, attrs), op, attrs)
        }
        (op, Some(PatchPath::Filtered { attr, filter, sub })) => {
            if attrs.read_only(&attr.attr) {
                return Err(ScimError::typed(ScimType::Mutability, format!("`{}` cannot be changed", attr.attr)));
            }
            let map = holder(resource, &attr, false);
            let key = map.as_ref().map(|m| key_of(m, &attr.attr)).unwrap_or_default();
            let items = map.and_then(|m| m.get_mut(&key)).and_then(Value::as_array_mut);
            let no_target =
                || ScimError::typed(ScimType::NoTarget, format!("no value of `{}` matches the filter", attr.attr));
            let Some(items) = items else {
                return if op == Op::Remove { Ok(()) } else { Err(no_target()) };
            };
            let exact = |_: &AttrPath| false;
            let matching: Vec<usize> =
                items.iter().enumerate().filter(|(_, e)| filter.matches(e, &exact)).map(|(i, _)| i).collect();
            if matching.is_empty() {
                return if op == Op::Remove { Ok(()) } else { Err(no_target()) };
            }
            match (op, sub) {
                (Op::Remove, None) => {
                    let mut i = 0;
                    items.retain(|_| {
                        let keep = !matching.contains(&i);
                        i += 1;
                        keep
                    });
                }
                (Op::Remove, Some(sub)) => {
                    for i in matching {
                        if let Some(obj) = items[i].as_object_mut() {
                            let k = key_of(obj, &sub);
                            obj.remove(&k);
                        }
                    }
                }
                (_, Some(sub)) => {
                    let value = operation.value.clone().ok_or_else(|| bad_value("`value` is required"))?;
                    let path = AttrPath { uri: attr.uri.clone(), attr: attr.attr.clone(), sub: Some(sub.clone()) };
                    let value = coerce(value, &path, attrs);
                    for i in matching {
                        if let Some(obj) = items[i].as_object_mut() {
                            let k = key_of(obj, &sub);
                            obj.insert(k, value.clone());
                        }
                    }
                }
                (_, None) => {
                    let value = operation.value.clone().ok_or_else(|| bad_value("`value` is required"))?;
                    let Value::Object(new) = coerce(value, &attr, attrs) else {
                        return Err(bad_value("a filtered value must be an object"));
                    };
                    for i in matching {
                        if let Some(obj) = items[i].as_object_mut() {
                            if op == Op::Replace {
                                obj.clear();
                            }
                            for (k, v) in &new {
                                let k2 = key_of(obj, k);
                                obj.insert(k2, v.clone());
                            }
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

/// `remove` of an attribute; of a multi-valued attribute's listed values
/// when `value` lists them (how Entra ID removes group members).
fn remove_attr(
    resource: &mut Value,
    path: &AttrPath,
    listed: Option<&Value>,
    attrs: &dyn Attributes,
) -> Result<(), ScimError> {
    if attrs.read_only(&path.attr) {
        return Err(ScimError::typed(ScimType::Mutability, format!("`{}` cannot be changed", path.attr)));
    }
    let Some(map) = holder(resource, path, false) else {
        return Ok(());
    };
    let key = key_of(map, &path.attr);
    match (&path.sub, listed) {
        (None, Some(listed)) if attrs.multi_valued(&path.attr) => {
            let gone: Vec<Value> = as_list(listed.clone());
            let id_of = |v: &Value| v.get("value").cloned().unwrap_or_else(|| v.clone());
            let gone: Vec<Value> = gone.iter().map(id_of).collect();
            if let Some(items) = map.get_mut(&key).and_then(Value::as_array_mut) {
                items.retain(|item| !gone.contains(&id_of(item)));
            }
        }
        (None, _) => {
            map.remove(&key);
        }
        (Some(sub), _) => match map.get_mut(&key) {
            Some(Value::Object(inner)) => {
                let k = key_of(inner, sub);
                inner.remove(&k);
            }
            Some(Value::Array(items)) => {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    let k = key_of(item, sub);
                    item.remove(&k);
                }
            }
            _ => {}
        },
    }
    Ok(())
}

/// Applies every operation in order to a copy of `resource`; all or none.
pub fn apply(resource: &Value, request: &PatchRequest, attrs: &dyn Attributes) -> Result<Value, ScimError> {
    if !request.schemas.iter().any(|s| s == PATCH_SCHEMA) {
        return Err(ScimError::typed(ScimType::InvalidSyntax, format!("`schemas` must hold `{PATCH_SCHEMA}`")));
    }
    if request.operations.is_empty() {
        return Err(ScimError::typed(ScimType::InvalidSyntax, "`Operations` is empty"));
    }
    let mut patched = resource.clone();
    for operation in &request.operations {
        apply_one(&mut patched, operation, attrs)?;
    }
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct UserAttrs;

    impl Attributes for UserAttrs {
        fn multi_valued(&self, attr: &str) -> bool {
            ["emails", "phoneNumbers", "members", "groups"].iter().any(|a| a.eq_ignore_ascii_case(attr))
        }
        fn boolean(&self, path: &AttrPath) -> bool {
            path.is("active") || path.sub.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("primary"))
        }
        fn read_only(&self, attr: &str) -> bool {
            ["id", "meta", "groups"].iter().any(|a| a.eq_ignore_ascii_case(attr))
        }
        fn extension(&self, uri: &str) -> bool {
            uri.eq_ignore_ascii_case("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        }
    }

    fn patch(resource: &Value, ops: Value) -> Result<Value, ScimError> {
        let request: PatchRequest =
            serde_json::from_value(json!({"schemas": [PATCH_SCHEMA], "Operations": ops})).unwrap();
        apply(resource, &request, &UserAttrs)
    }

    fn user() -> Value {
        json!({
            "id": "u1", "userName": "bjensen", "active": true,
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "b@work.example", "type": "work"}, {"value": "b@home.example", "type": "home"}]
        })
    }

    #[test]
    fn the_forms_identity_providers_send() {
        // Entra ID: `Replace`, no path, a boolean as a string.
        let u = patch(&user(), json!([{"op": "Replace", "value": {"active": "False"}}])).unwrap();
        assert_eq!(u["active"], false);
        // Entra ID: a path as a key.
        let u = patch(&user(), json!([{"op": "replace", "value": {"name.givenName": "Babs"}}])).unwrap();
        assert_eq!((u["name"]["givenName"].as_str(), u["name"]["familyName"].as_str()), (Some("Babs"), Some("Jensen")));
        // Okta: replace with a path, a value-filter path with a sub-attribute.
        let u = patch(
            &user(),
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@work.example"}]),
        )
        .unwrap();
        assert_eq!(u["emails"][0]["value"], "new@work.example");
        assert_eq!(u["emails"][1]["value"], "b@home.example", "only the matching element");
        // An extension's URI as a key.
        let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let u = patch(&user(), json!([{"op": "add", "value": {ext: {"department": "Tour Operations"}}}])).unwrap();
        assert_eq!(u[ext]["department"], "Tour Operations");
    }

    #[test]
    fn add_replace_and_remove_on_multi_valued_attributes() {
        let group = json!({"id": "g1", "displayName": "Ops", "members": [{"value": "u1"}]});
        let g = patch(&group, json!([{"op": "add", "path": "members", "value": [{"value": "u2"}, {"value": "u1"}]}]))
            .unwrap();
        assert_eq!(g["members"], json!([{"value": "u1"}, {"value": "u2"}]), "added once each");
        let g2 = patch(&g, json!([{"op": "remove", "path": "members[value eq \"u1\"]"}])).unwrap();
        assert_eq!(g2["members"], json!([{"value": "u2"}]));
        // Entra ID removes members by listing them in `value`.
        let g3 = patch(&g, json!([{"op": "Remove", "path": "members", "value": [{"value": "u2"}]}])).unwrap();
        assert_eq!(g3["members"], json!([{"value": "u1"}]));
        let g4 = patch(&g, json!([{"op": "remove", "path": "members"}])).unwrap();
        assert!(g4.get("members").is_none());
        let g5 = patch(&g, json!([{"op": "replace", "path": "members", "value": [{"value": "u9"}]}])).unwrap();
        assert_eq!(g5["members"], json!([{"value": "u9"}]));
        let u = patch(
            &user(),
            json!([{"op": "add", "path": "emails", "value": {"value": "c@x.example", "type": "other"}}]),
        )
        .unwrap();
        assert_eq!(u["emails"].as_array().unwrap().len(), 3);
        let u = patch(&user(), json!([{"op": "remove", "path": "name.givenName"}])).unwrap();
        assert!(u["name"].get("givenName").is_none() && u["name"]["familyName"] == "Jensen");
    }

    #[test]
    fn errors_name_their_scim_type_and_change_nothing() {
        for (ops, scim_type) in [
            (json!([{"op": "remove"}]), ScimType::NoTarget),
            (json!([{"op": "replace", "path": "emails[type eq \"fax\"].value", "value": "x"}]), ScimType::NoTarget),
            (json!([{"op": "replace", "path": "id", "value": "other"}]), ScimType::Mutability),
            (json!([{"op": "add", "path": "groups", "value": [{"value": "g1"}]}]), ScimType::Mutability),
            (json!([{"op": "replace", "path": "emails[type eq]", "value": "x"}]), ScimType::InvalidPath),
            (json!([{"op": "move", "path": "userName", "value": "x"}]), ScimType::InvalidSyntax),
            (json!([{"op": "replace", "value": "not an object"}]), ScimType::InvalidValue),
            (json!([{"op": "replace", "path": "userName"}]), ScimType::InvalidValue),
        ] {
            let err = patch(&user(), ops.clone()).unwrap_err();
            assert_eq!(err.scim_type, Some(scim_type), "{ops}: {err}");
        }
        // All or nothing: the second operation fails, the first is not applied.
        let original = user();
        let err = patch(&original, json!([{"op": "replace", "path": "userName", "value": "x"}, {"op": "remove"}]));
        assert!(err.is_err());
        assert_eq!(original["userName"], "bjensen");
        let request: PatchRequest = serde_json::from_value(json!({"schemas": ["x"], "Operations": []})).unwrap();
        assert_eq!(apply(&user(), &request, &UserAttrs).unwrap_err().scim_type, Some(ScimType::InvalidSyntax));
    }
}
