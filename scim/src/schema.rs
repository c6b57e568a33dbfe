//! The attributes Tollgate supports of the core User and Group schemas and
//! the Enterprise User extension (RFC 7643 §4), described once: requests
//! are read through it (canonical names, types checked, unknown attributes
//! dropped), PATCH asks it what is multi-valued, boolean or read-only, and
//! `/Schemas` is written from it, so the discovery documents say exactly
//! what the server does.

use serde_json::{Map, Value, json};

use crate::error::{ScimError, ScimType};
use crate::patch::Attributes;
use crate::path::AttrPath;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
pub const BULK_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// An attribute's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Boolean,
    Complex,
    DateTime,
    Reference,
}

/// Who may write an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadWrite,
    ReadOnly,
    Immutable,
}

/// One attribute of a schema.
#[derive(Debug)]
pub struct Attr {
    pub name: &'static str,
    pub kind: Kind,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub unique: bool,
    pub description: &'static str,
    pub subs: &'static [Attr],
}

const fn string(name: &'static str, description: &'static str) -> Attr {
    Attr {
        name,
        kind: Kind::String,
        multi: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        unique: false,
        description,
        subs: &[],
    }
}

const fn boolean(name: &'static str, description: &'static str) -> Attr {
    Attr { kind: Kind::Boolean, ..string(name, description) }
}

const fn reference(name: &'static str, description: &'static str) -> Attr {
    Attr { kind: Kind::Reference, case_exact: true, ..string(name, description) }
}

const fn complex(name: &'static str, description: &'static str, subs: &'static [Attr]) -> Attr {
    Attr { kind: Kind::Complex, subs, ..string(name, description) }
}

const fn multi(name: &'static str, description: &'static str, subs: &'static [Attr]) -> Attr {
    Attr { multi: true, ..complex(name, description, subs) }
}

const fn read_only(attr: Attr) -> Attr {
    Attr { mutability: Mutability::ReadOnly, ..attr }
}

const LABELLED: &[Attr] = &[
    string("value", "The value."),
    string("display", "A human-readable name."),
    string("type", "A label: `work`, `home`, `other`, ..."),
    boolean("primary", "Whether this is the preferred value."),
];

const NAME: &[Attr] = &[
    string("formatted", "The full name."),
    string("familyName", "The family name."),
    string("givenName", "The given name."),
    string("middleName", "The middle name."),
    string("honorificPrefix", "A title before the name."),
    string("honorificSuffix", "A suffix after the name."),
];

const USER_GROUPS: &[Attr] = &[
    read_only(string("value", "The group's id.")),
    read_only(reference("$ref", "The group's URI.")),
    read_only(string("display", "The group's display name.")),
    read_only(string("type", "`direct`.")),
];

/// The core User attributes supported (besides `id`, `externalId`, `meta`).
pub const USER_ATTRS: &[Attr] = &[
    Attr { required: true, unique: true, ..string("userName", "Unique per tenant; the person's sign-in name.") },
    complex("name", "The person's name.", NAME),
    string("displayName", "The name to show."),
    string("nickName", "A casual name."),
    reference("profileUrl", "A profile page."),
    string("title", "The job title."),
    string("userType", "The relation to the organization."),
    string("preferredLanguage", "A language tag."),
    string("locale", "A locale for formatting."),
    string("timezone", "An IANA time zone."),
    boolean("active", "Whether the person may sign in to the tenant; false revokes their sessions and keys."),
    multi("emails", "Email addresses; the primary one (else the first) names the account.", LABELLED),
    multi("phoneNumbers", "Phone numbers.", LABELLED),
    read_only(multi("groups", "The groups the person is in (read-only; change a group's members).", USER_GROUPS)),
];

const MANAGER: &[Attr] = &[
    string("value", "The manager's id."),
    reference("$ref", "The manager's URI."),
    read_only(string("displayName", "The manager's display name.")),
];

/// The Enterprise User extension's attributes.
pub const ENTERPRISE_ATTRS: &[Attr] = &[
    string("employeeNumber", "An employee number."),
    string("costCenter", "A cost center."),
    string("organization", "An organization."),
    string("division", "A division."),
    string("department", "A department."),
    complex("manager", "The person's manager.", MANAGER),
];

const MEMBERS: &[Attr] = &[
    Attr { mutability: Mutability::Immutable, ..string("value", "A member's id (a User).") },
    Attr { mutability: Mutability::Immutable, ..reference("$ref", "The member's URI.") },
    read_only(string("display", "The member's display name.")),
    Attr { mutability: Mutability::Immutable, ..string("type", "`User`.") },
];

/// The core Group attributes supported.
pub const GROUP_ATTRS: &[Attr] = &[
    Attr { required: true, unique: true, ..string("displayName", "The group's name, unique per tenant.") },
    multi("members", "The group's members: users of the tenant.", MEMBERS),
];

/// A resource type: its schema, extensions and attributes.
#[derive(Debug, Clone, Copy)]
pub struct ResourceType {
    pub name: &'static str,
    pub endpoint: &'static str,
    pub schema: &'static str,
    pub attrs: &'static [Attr],
    pub extension: Option<(&'static str, &'static [Attr])>,
}

pub const USER: ResourceType = ResourceType {
    name: "User",
    endpoint: "/Users",
    schema: USER_SCHEMA,
    attrs: USER_ATTRS,
    extension: Some((ENTERPRISE_USER_SCHEMA, ENTERPRISE_ATTRS)),
};

pub const GROUP: ResourceType =
    ResourceType { name: "Group", endpoint: "/Groups", schema: GROUP_SCHEMA, attrs: GROUP_ATTRS, extension: None };

fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::typed(ScimType::InvalidValue, detail)
}

impl ResourceType {
    fn is_core(&self, uri: Option<&str>) -> bool {
        uri.is_none_or(|u| u.eq_ignore_ascii_case(self.schema))
    }

    /// The attribute a path names (its sub-attribute when it has one);
    /// `None` for what the schema does not have.
    pub fn attr(&self, path: &AttrPath) -> Option<&'static Attr> {
        let attrs = if self.is_core(path.uri.as_deref()) {
            self.attrs
        } else {
            match self.extension {
                Some((uri, attrs)) if path.uri.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(uri)) => attrs,
                _ => return None,
            }
        };
        let top = find(attrs, &path.attr)?;
        match &path.sub {
            Some(sub) => find(top.subs, sub),
            None => Some(top),
        }
    }

    /// Whether strings at `path` compare exactly (`id`, `externalId`,
    /// references); the rest ignore case.
    pub fn case_exact(&self, path: &AttrPath) -> bool {
        if path.sub.is_none() && (path.is("id") || path.is("externalId")) {
            return true;
        }
        self.attr(path).is_some_and(|a| a.case_exact)
    }

    /// Reads a resource as a client sent it (POST, PUT): the attributes the
    /// schema has, under their canonical names, each of its type; unknown
    /// attributes and read-only ones are dropped, as RFC 7644 §3.3 lets a
    /// server do. `externalId` is kept; `id`, `meta` and `schemas` are not.
    pub fn read(&self, input: &Value) -> Result<Value, ScimError> {
        let Value::Object(input) = input else {
            return Err(ScimError::typed(ScimType::InvalidSyntax, "the body must be a JSON object"));
        };
        let mut out = Map::new();
        for (key, value) in input {
            if key.eq_ignore_ascii_case("externalId") {
                match value {
                    Value::String(s) if !s.is_empty() => {
                        out.insert("externalId".into(), Value::String(s.clone()));
                    }
                    Value::Null => {}
                    _ => return Err(invalid("`externalId` must be a non-empty string")),
                }
                continue;
            }
            if let Some((uri, attrs)) = self.extension.filter(|(uri, _)| uri.eq_ignore_ascii_case(key)) {
                let Value::Object(inner) = value else {
                    return Err(invalid(format!("`{uri}` must be an object")));
                };
                let ext = read_attrs(attrs, inner)?;
                if !ext.is_empty() {
                    out.insert(uri.into(), Value::Object(ext));
                }
                continue;
            }
            if let Some(attr) = find(self.attrs, key).filter(|a| a.mutability != Mutability::ReadOnly)
                && let Some(v) = read_value(attr, value)?
            {
                out.insert(attr.name.into(), v);
            }
        }
        for attr in self.attrs.iter().filter(|a| a.required) {
            match out.get(attr.name) {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                _ => return Err(invalid(format!("`{}` is required", attr.name))),
            }
        }
        Ok(Value::Object(out))
    }

    /// The `/Schemas` document of this resource type's core schema.
    pub fn schema_document(&self, base: &str) -> Value {
        schema_document(self.schema, self.name, &format!("{} resource", self.name), self.attrs, base)
    }

    /// The `/Schemas` document of its extension, when it has one.
    pub fn extension_document(&self, base: &str) -> Option<Value> {
        self.extension.map(|(uri, attrs)| schema_document(uri, "EnterpriseUser", "Enterprise User", attrs, base))
    }

    /// Its `/ResourceTypes` entry.
    pub fn resource_type_document(&self, base: &str) -> Value {
        let mut doc = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": format!("{}s of the tenant", self.name),
            "schema": self.schema,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{}", self.name)},
        });
        if let Some((uri, _)) = self.extension {
            doc["schemaExtensions"] = json!([{"schema": uri, "required": false}]);
        }
        doc
    }
}

fn read_attrs(attrs: &[Attr], input: &Map<String, Value>) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (key, value) in input {
        if let Some(attr) = find(attrs, key).filter(|a| a.mutability != Mutability::ReadOnly)
            && let Some(v) = read_value(attr, value)?
        {
            out.insert(attr.name.into(), v);
        }
    }
    Ok(out)
}

/// The longest string value accepted.
pub const MAX_STRING: usize = 1024;
/// The most values of a multi-valued attribute accepted (group members aside).
pub const MAX_VALUES: usize = 100;

/// One attribute's value, checked and canonical; `None` to leave it out (null).
fn read_value(attr: &Attr, value: &Value) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if attr.multi {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let limit = if attr.name == "members" { usize::MAX } else { MAX_VALUES };
        if items.len() > limit {
            return Err(invalid(format!("`{}` has more than {limit} values", attr.name)));
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = read_single(attr, item)? {
                out.push(v);
            }
        }
        let primaries = out.iter().filter(|v| v.get("primary") == Some(&Value::Bool(true))).count();
        if primaries > 1 {
            return Err(invalid(format!("at most one of `{}` is primary", attr.name)));
        }
        return Ok(if out.is_empty() { None } else { Some(Value::Array(out)) });
    }
    read_single(attr, value)
}

fn read_single(attr: &Attr, value: &Value) -> Result<Option<Value>, ScimError> {
    let wrong = || invalid(format!("`{}` must be {}", attr.name, kind_name(attr.kind)));
    Ok(Some(match (attr.kind, value) {
        (_, Value::Null) => return Ok(None),
        (Kind::String | Kind::Reference | Kind::DateTime, Value::String(s)) => {
            if s.chars().count() > MAX_STRING || s.chars().any(|c| c.is_control()) {
                return Err(invalid(format!(
                    "`{}` must be at most {MAX_STRING} characters, no control characters",
                    attr.name
                )));
            }
            Value::String(s.clone())
        }
        // Entra ID sends booleans as strings.
        (Kind::Boolean, Value::Bool(b)) => Value::Bool(*b),
        (Kind::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        (Kind::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        (Kind::Complex, Value::Object(inner)) => {
            let map = read_attrs(attr.subs, inner)?;
            if map.is_empty() {
                return Ok(None);
            }
            Value::Object(map)
        }
        // A bare string for a multi-valued complex attribute is its value.
        (Kind::Complex, Value::String(_)) if attr.multi && find(attr.subs, "value").is_some() => {
            return read_single(attr, &json!({"value": value}));
        }
        _ => return Err(wrong()),
    }))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "a string",
        Kind::Boolean => "a boolean",
        Kind::Complex => "an object",
        Kind::DateTime => "a date-time",
        Kind::Reference => "a URI",
    }
}

fn attr_document(attr: &Attr) -> Value {
    let mut doc = json!({
        "name": attr.name,
        "type": match attr.kind {
            Kind::String => "string",
            Kind::Boolean => "boolean",
            Kind::Complex => "complex",
            Kind::DateTime => "dateTime",
            Kind::Reference => "reference",
        },
        "multiValued": attr.multi,
        "description": attr.description,
        "required": attr.required,
        "caseExact": attr.case_exact,
        "mutability": match attr.mutability {
            Mutability::ReadWrite => "readWrite",
            Mutability::ReadOnly => "readOnly",
            Mutability::Immutable => "immutable",
        },
        "returned": "default",
        "uniqueness": if attr.unique { "server" } else { "none" },
    });
    if attr.kind == Kind::Reference {
        doc["referenceTypes"] = json!(["external"]);
    }
    if !attr.subs.is_empty() {
        doc["subAttributes"] = attr.subs.iter().map(attr_document).collect();
    }
    doc
}

fn schema_document(uri: &str, name: &str, description: &str, attrs: &[Attr], base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": uri,
        "name": name,
        "description": description,
        "attributes": attrs.iter().map(attr_document).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{uri}")},
    })
}

impl Attributes for ResourceType {
    fn multi_valued(&self, attr: &str) -> bool {
        find(self.attrs, attr).is_some_and(|a| a.multi)
    }

    fn boolean(&self, path: &AttrPath) -> bool {
        self.attr(path).is_some_and(|a| a.kind == Kind::Boolean)
    }

    fn read_only(&self, attr: &str) -> bool {
        ["id", "meta", "schemas"].iter().any(|a| a.eq_ignore_ascii_case(attr))
            || find(self.attrs, attr).is_some_and(|a| a.mutability == Mutability::ReadOnly)
    }

    fn extension(&self, uri: &str) -> bool {
        self.extension.is_some_and(|(u, _)| u.eq_ignore_ascii_case(uri))
    }
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) applied to a
/// resource: `id` and `schemas` always stay.
pub fn project(resource: &mut Value, attributes: &[AttrPath], excluded: &[AttrPath]) {
    let Value::Object(map) = resource else { return };
    let always = |k: &str| k == "id" || k == "schemas";
    if !attributes.is_empty() {
        let keep = |key: &str, uri: Option<&str>| {
            attributes.iter().any(|p| match (&p.uri, uri) {
                (Some(pu), Some(u)) if !pu.to_ascii_lowercase().contains(":core:") => {
                    pu.eq_ignore_ascii_case(u) && p.attr.eq_ignore_ascii_case(key)
                }
                (Some(pu), None) if pu.to_ascii_lowercase().contains(":core:") => p.attr.eq_ignore_ascii_case(key),
                (None, None) => p.attr.eq_ignore_ascii_case(key),
                _ => false,
            })
        };
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            if always(&key) {
                continue;
            }
            if key.starts_with("urn:") {
                // An extension: keep the named attributes inside it.
                if let Some(Value::Object(inner)) = map.get_mut(&key) {
                    let whole = attributes.iter().any(|p| p.uri.is_none() && key.eq_ignore_ascii_case(&p.to_string()));
                    if !whole {
                        inner.retain(|k, _| keep(k, Some(&key)));
                    }
                    if inner.is_empty() {
                        map.remove(&key);
                    }
                }
                continue;
            }
            if !keep(&key, None) {
                map.remove(&key);
                continue;
            }
            // Only the named sub-attributes of a complex attribute.
            let subs: Vec<&str> = attributes
                .iter()
                .filter(|p| p.attr.eq_ignore_ascii_case(&key) && p.uri.as_deref().is_none_or(|u| u.contains(":core:")))
                .map(|p| p.sub.as_deref())
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default();
            if !subs.is_empty() {
                let prune = |v: &mut Value| {
                    if let Value::Object(o) = v {
                        o.retain(|k, _| subs.iter().any(|s| s.eq_ignore_ascii_case(k)));
                    }
                };
                match map.get_mut(&key) {
                    Some(Value::Array(items)) => items.iter_mut().for_each(prune),
                    Some(v) => prune(v),
                    None => {}
                }
            }
        }
    }
    for p in excluded {
        let holder = match &p.uri {
            Some(uri) if !uri.to_ascii_lowercase().contains(":core:") => {
                let key = map.keys().find(|k| k.eq_ignore_ascii_case(uri)).cloned();
                match key.and_then(|k| map.get_mut(&k)) {
                    Some(Value::Object(inner)) => inner,
                    _ => continue,
                }
            }
            _ => &mut *map,
        };
        let Some(key) = holder.keys().find(|k| k.eq_ignore_ascii_case(&p.attr)).cloned() else { continue };
        if always(&key) {
            continue;
        }
        match &p.sub {
            None => {
                holder.remove(&key);
            }
            Some(sub) => {
                let drop_sub = |v: &mut Value| {
                    if let Value::Object(o) = v {
                        o.retain(|k, _| !k.eq_ignore_ascii_case(sub));
                    }
                };
                match holder.get_mut(&key) {
                    Some(Value::Array(items)) => items.iter_mut().for_each(drop_sub),
                    Some(v) => drop_sub(v),
                    None => {}
                }
            }
        }
    }
    map.retain(|k, v| always(k) || !matches!(v, Value::Object(o) if o.is_empty() && k.starts_with("urn:")));
}

/// Parses an `attributes` or `excludedAttributes` list (comma-separated).
pub fn attribute_list(text: Option<&str>) -> Result<Vec<AttrPath>, ScimError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|part| {
            AttrPath::parse(part.trim()).ok_or_else(|| {
                ScimError::typed(ScimType::InvalidValue, format!("`{}` is not an attribute", part.trim()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_to_canonical_attributes() {
        let read = USER
            .read(&json!({
                "schemas": [USER_SCHEMA],
                "USERNAME": "bjensen@example.com",
                "id": "chosen-by-client",
                "externalId": "00u1",
                "active": "False",
                "name": {"givenname": "Barbara", "nonsense": 1},
                "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
                "groups": [{"value": "g1"}],
                "unknownAttribute": "ignored",
                ENTERPRISE_USER_SCHEMA: {"department": "Tour Operations", "manager": {"value": "m1"}},
            }))
            .unwrap();
        assert_eq!(
            read,
            json!({
                "userName": "bjensen@example.com",
                "externalId": "00u1",
                "active": false,
                "name": {"givenName": "Barbara"},
                "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
                ENTERPRISE_USER_SCHEMA: {"department": "Tour Operations", "manager": {"value": "m1"}},
            })
        );
    }

    #[test]
    fn bad_values_are_invalid_value() {
        for bad in [
            json!({"displayName": "no userName"}),
            json!({"userName": "  "}),
            json!({"userName": "a", "active": "maybe"}),
            json!({"userName": "a", "name": "flat"}),
            json!({"userName": "a", "emails": [{"value": "x", "primary": true}, {"value": "y", "primary": true}]}),
            json!({"userName": "a\u{0}b"}),
            json!({"userName": "a", "externalId": 7}),
        ] {
            assert_eq!(USER.read(&bad).unwrap_err().scim_type, Some(ScimType::InvalidValue), "{bad}");
        }
        assert_eq!(USER.read(&json!([])).unwrap_err().scim_type, Some(ScimType::InvalidSyntax));
    }

    #[test]
    fn projection_keeps_what_was_asked() {
        let full = json!({
            "schemas": [USER_SCHEMA], "id": "u1", "userName": "b", "displayName": "B",
            "name": {"givenName": "B", "familyName": "J"},
            "emails": [{"value": "b@x", "type": "work"}],
            ENTERPRISE_USER_SCHEMA: {"department": "D", "costCenter": "C"},
            "meta": {"resourceType": "User"}
        });
        let mut r = full.clone();
        let attrs = attribute_list(Some(
            "userName, name.familyName, emails.value, urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        ))
        .unwrap();
        project(&mut r, &attrs, &[]);
        assert_eq!(
            r,
            json!({"schemas": [USER_SCHEMA], "id": "u1", "userName": "b", "name": {"familyName": "J"},
                   "emails": [{"value": "b@x"}], ENTERPRISE_USER_SCHEMA: {"department": "D"}})
        );
        let mut r = full.clone();
        project(&mut r, &[], &attribute_list(Some("emails,name.givenName,id,meta")).unwrap());
        assert!(r.get("emails").is_none() && r.get("meta").is_none() && r["id"] == "u1");
        assert_eq!(r["name"], json!({"familyName": "J"}));
        assert!(attribute_list(Some("a b")).is_err());
    }

    #[test]
    fn the_schema_document_describes_the_attributes() {
        let doc = USER.schema_document("https://x/scim/v2");
        let names: Vec<&str> =
            doc["attributes"].as_array().unwrap().iter().filter_map(|a| a["name"].as_str()).collect();
        assert!(names.contains(&"userName") && names.contains(&"emails") && names.contains(&"groups"));
        let groups = doc["attributes"].as_array().unwrap().iter().find(|a| a["name"] == "groups").unwrap();
        assert_eq!(groups["mutability"], "readOnly");
        assert!(USER.case_exact(&AttrPath::new("externalId")) && !USER.case_exact(&AttrPath::new("userName")));
        assert!(USER.boolean(&AttrPath::with_sub("emails", "primary")));
    }
}
