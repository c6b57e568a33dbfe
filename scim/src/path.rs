//! Attribute paths (RFC 7644 §3.10): `userName`, `name.familyName`,
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`,
//! and PATCH paths, which may select elements of a multi-valued attribute
//! (`members[value eq "2819c223"]`, `emails[type eq "work"].value`).
//! Attribute names are case-insensitive.

use crate::error::{ScimError, ScimType};
use crate::filter::{self, Filter};

/// `[uri:]attr[.sub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URI when the path names one (an extension's, or the core
    /// schema's spelled out).
    pub uri: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

/// Whether `c` may appear in an attribute name (`$ref` included).
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$'
}

fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '$') && name.chars().all(name_char)
}

impl AttrPath {
    pub fn new(attr: &str) -> Self {
        Self { uri: None, attr: attr.to_owned(), sub: None }
    }

    pub fn with_sub(attr: &str, sub: &str) -> Self {
        Self { uri: None, attr: attr.to_owned(), sub: Some(sub.to_owned()) }
    }

    /// Parses `[uri:]attr[.sub]`.
    pub fn parse(text: &str) -> Option<Self> {
        let (uri, rest) = if text.len() > 4 && text[..4].eq_ignore_ascii_case("urn:") {
            let (uri, rest) = text.rsplit_once(':')?;
            (Some(uri.to_owned()), rest)
        } else {
            (None, text)
        };
        let (attr, sub) = match rest.split_once('.') {
            Some((attr, sub)) => (attr, Some(sub)),
            None => (rest, None),
        };
        if !valid_name(attr) || sub.is_some_and(|s| !valid_name(s)) {
            return None;
        }
        Some(Self { uri, attr: attr.to_owned(), sub: sub.map(str::to_owned) })
    }

    /// Whether the attribute (ignoring the sub-attribute) is `name`.
    pub fn is(&self, name: &str) -> bool {
        self.attr.eq_ignore_ascii_case(name)
    }

    /// Whether the path is `attr.sub` (case-insensitively).
    pub fn is_sub(&self, attr: &str, sub: &str) -> bool {
        self.is(attr) && self.sub.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(sub))
    }

    /// `attr` or `attr.sub`, lower case (without the URI).
    pub fn key(&self) -> String {
        match &self.sub {
            Some(sub) => format!("{}.{}", self.attr.to_ascii_lowercase(), sub.to_ascii_lowercase()),
            None => self.attr.to_ascii_lowercase(),
        }
    }

    /// This path with `sub` below it (for a sub-attribute of a value filter).
    pub fn below(parent: &AttrPath, child: &AttrPath) -> AttrPath {
        AttrPath { uri: parent.uri.clone(), attr: parent.attr.clone(), sub: Some(child.attr.clone()) }
    }
}

impl std::fmt::Display for AttrPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(uri) = &self.uri {
            write!(f, "{uri}:")?;
        }
        write!(f, "{}", self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// The target of a PATCH operation.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchPath {
    /// An attribute or a sub-attribute.
    Attr(AttrPath),
    /// The elements of a multi-valued attribute that match `filter` (its
    /// paths relative to the elements), or their sub-attribute `sub`.
    Filtered { attr: AttrPath, filter: Filter, sub: Option<String> },
}

impl PatchPath {
    /// Parses a PATCH `path`; anything else is `invalidPath`.
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        let bad = || ScimError::typed(ScimType::InvalidPath, format!("`{text}` is not an attribute path"));
        let text = text.trim();
        let Some(open) = text.find('[') else {
            return AttrPath::parse(text).map(PatchPath::Attr).ok_or_else(bad);
        };
        let close = text.rfind(']').ok_or_else(bad)?;
        if close < open {
            return Err(bad());
        }
        let attr = AttrPath::parse(&text[..open]).filter(|a| a.sub.is_none()).ok_or_else(bad)?;
        let filter = filter::parse(&text[open + 1..close])
            .map_err(|e| ScimError::typed(ScimType::InvalidPath, format!("in `{text}`: {}", e.detail)))?;
        let sub = match &text[close + 1..] {
            "" => None,
            rest => {
                let sub = rest.strip_prefix('.').filter(|s| valid_name(s)).ok_or_else(bad)?;
                Some(sub.to_owned())
            }
        };
        Ok(PatchPath::Filtered { attr, filter, sub })
    }

    /// The attribute the path starts at.
    pub fn attr(&self) -> &AttrPath {
        match self {
            PatchPath::Attr(a) | PatchPath::Filtered { attr: a, .. } => a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{CompareOp, Literal};

    #[test]
    fn paths_with_uris_and_sub_attributes() {
        let p = AttrPath::parse("name.familyName").unwrap();
        assert!(p.is_sub("NAME", "familyname"));
        let manager =
            AttrPath::parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value").unwrap();
        assert_eq!(manager.uri.as_deref(), Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"));
        assert_eq!((manager.attr.as_str(), manager.sub.as_deref()), ("manager", Some("value")));
        assert_eq!(manager.to_string(), "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
        for bad in ["", "1abc", "a.b.c", "a b", "emails[", "name."] {
            assert_eq!(AttrPath::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn patch_paths_select_elements() {
        let p = PatchPath::parse(r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#).unwrap();
        let PatchPath::Filtered { attr, filter, sub } = p else { panic!("a filtered path") };
        assert!(attr.is("members") && sub.is_none());
        assert_eq!(
            filter,
            Filter::Compare(
                AttrPath::new("value"),
                CompareOp::Eq,
                Literal::Str("2819c223-7f76-453a-919d-413861904646".into())
            )
        );
        let p = PatchPath::parse(r#"emails[type eq "work"].value"#).unwrap();
        assert!(matches!(p, PatchPath::Filtered { sub: Some(ref s), .. } if s == "value"));
        assert_eq!(PatchPath::parse("active").unwrap(), PatchPath::Attr(AttrPath::new("active")));
        for bad in ["emails[type eq]", "emails]", "emails[type eq \"work\"]value", "", "a..b"] {
            assert_eq!(PatchPath::parse(bad).unwrap_err().scim_type, Some(ScimType::InvalidPath), "{bad:?}");
        }
    }
}
