//! SCIM filters (RFC 7644 §3.4.2.2): every comparison operator (`eq ne co
//! sw ew gt ge lt le`), presence (`pr`), `and`, `or`, `not (...)`,
//! grouping, attribute paths with sub-attributes and URIs, and value
//! filters on multi-valued attributes (`emails[type eq "work" and value co
//! "@example.com"]`, and the form `emails[type eq "work"].value co "x"`).
//! Operators and attribute names are case-insensitive; `and` binds tighter
//! than `or`. [`Filter::matches`] evaluates one against a resource in
//! memory (PATCH value filters); lists are to be filtered in the database
//! from the same tree.

use serde_json::{Number, Value};

use crate::error::{ScimError, ScimType};
use crate::path::AttrPath;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }
}

/// A comparison value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Number(Number),
    Bool(bool),
    Null,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Present(AttrPath),
    Compare(AttrPath, CompareOp, Literal),
    /// Some element of the multi-valued `attr` matches `filter`, whose paths
    /// name the elements' sub-attributes.
    Has {
        attr: AttrPath,
        filter: Box<Filter>,
    },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

/// The longest filter accepted, and the deepest nesting.
pub const MAX_FILTER_LEN: usize = 4096;
const MAX_DEPTH: usize = 32;

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::typed(ScimType::InvalidFilter, detail)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    /// A word: an attribute path, an operator or a keyword; `.sub` after `]`.
    Word(String),
    Str(String),
    Number(Number),
}

fn lex(text: &str) -> Result<Vec<Token>, ScimError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '[' => {
                tokens.push(Token::OpenBracket);
                i += 1;
            }
            ']' => {
                tokens.push(Token::CloseBracket);
                i += 1;
            }
            '"' => {
                // A JSON string: find its end honouring escapes, then decode.
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                if i >= chars.len() {
                    return Err(invalid("a string is not closed"));
                }
                i += 1;
                let raw: String = chars[start..i].iter().collect();
                let value: String =
                    serde_json::from_str(&raw).map_err(|_| invalid(format!("{raw} is not a valid string")))?;
                tokens.push(Token::Str(value));
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '-' | '+' | '.')) {
                    i += 1;
                }
                let raw: String = chars[start..i].iter().collect();
                let number: Number = raw.parse().map_err(|_| invalid(format!("`{raw}` is not a number")))?;
                tokens.push(Token::Number(number));
            }
            c if c.is_ascii_alphabetic() || c == '$' || c == '.' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '-' | ':' | '.' | '$'))
                {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return Err(invalid(format!("unexpected `{other}`"))),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Filter, ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(invalid("the filter nests too deeply"));
        }
        let mut left = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn group(&mut self) -> Result<Filter, ScimError> {
        if self.next() != Some(Token::Open) {
            return Err(invalid("expected `(`"));
        }
        let inner = self.or()?;
        if self.next() != Some(Token::Close) {
            return Err(invalid("expected `)`"));
        }
        Ok(inner)
    }

    fn unary(&mut self) -> Result<Filter, ScimError> {
        if self.keyword("not") {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.group()?)));
        }
        if self.peek() == Some(&Token::Open) {
            return self.group();
        }
        self.attribute_expression()
    }

    fn attribute_expression(&mut self) -> Result<Filter, ScimError> {
        let word = match self.next() {
            Some(Token::Word(w)) => w,
            Some(other) => return Err(invalid(format!("expected an attribute, found {other:?}"))),
            None => return Err(invalid("the filter ends too soon")),
        };
        let path = AttrPath::parse(&word).ok_or_else(|| invalid(format!("`{word}` is not an attribute path")))?;
        if self.peek() == Some(&Token::OpenBracket) {
            if path.sub.is_some() {
                return Err(invalid(format!("`{word}` cannot take a value filter")));
            }
            self.at += 1;
            let inner = self.or()?;
            if self.next() != Some(Token::CloseBracket) {
                return Err(invalid("expected `]`"));
            }
            // `emails[type eq "work"].value co "x"`: one more condition on
            // the same element.
            let inner = match self.peek() {
                Some(Token::Word(w)) if w.starts_with('.') => {
                    let sub = w[1..].to_owned();
                    self.at += 1;
                    let sub_path = AttrPath::parse(&sub).filter(|p| p.uri.is_none() && p.sub.is_none());
                    let sub_path = sub_path.ok_or_else(|| invalid(format!("`{sub}` is not a sub-attribute")))?;
                    Filter::And(Box::new(inner), Box::new(self.condition(sub_path)?))
                }
                _ => inner,
            };
            return Ok(Filter::Has { attr: path, filter: Box::new(inner) });
        }
        self.condition(path)
    }

    /// `pr`, or an operator and a value, after `path`.
    fn condition(&mut self, path: AttrPath) -> Result<Filter, ScimError> {
        let op = match self.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("pr") => return Ok(Filter::Present(path)),
            Some(Token::Word(w)) => CompareOp::parse(&w).ok_or_else(|| invalid(format!("`{w}` is not an operator")))?,
            _ => return Err(invalid(format!("expected an operator after `{path}`"))),
        };
        let value = match self.next() {
            Some(Token::Str(s)) => Literal::Str(s),
            Some(Token::Number(n)) => Literal::Number(n),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Literal::Null,
            _ => return Err(invalid(format!("expected a value after `{path}`"))),
        };
        if matches!(value, Literal::Bool(_) | Literal::Null) && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Err(invalid("booleans and null compare with `eq` and `ne` only"));
        }
        Ok(Filter::Compare(path, op, value))
    }
}

/// Parses a filter; anything malformed is `invalidFilter`.
pub fn parse(text: &str) -> Result<Filter, ScimError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(invalid(format!("a filter is at most {MAX_FILTER_LEN} characters")));
    }
    let mut parser = Parser { tokens: lex(text)?, at: 0, depth: 0 };
    if parser.tokens.is_empty() {
        return Err(invalid("the filter is empty"));
    }
    let filter = parser.or()?;
    match parser.peek() {
        None => Ok(filter),
        Some(token) => Err(invalid(format!("unexpected {token:?} after the filter"))),
    }
}

/// The values at `path` of `resource`: one for a single-valued attribute,
/// each element's for a multi-valued one (its `value` when the path names
/// no sub-attribute of complex elements).
fn values_at<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let container = match &path.uri {
        Some(uri) if !uri.to_ascii_lowercase().contains(":core:") => get(resource, uri),
        _ => Some(resource),
    };
    let Some(top) = container.and_then(|c| get(c, &path.attr)) else {
        return Vec::new();
    };
    let pick = |v: &'a Value| match &path.sub {
        Some(sub) => get(v, sub),
        None if v.is_object() => get(v, "value"),
        None => Some(v),
    };
    match top {
        Value::Array(items) => items.iter().filter_map(pick).collect(),
        Value::Object(_) if path.sub.is_some() => pick(top).into_iter().collect(),
        single => vec![single],
    }
}

/// A member of an object by a case-insensitive name.
fn get<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn compare(value: &Value, op: CompareOp, literal: &Literal, case_exact: bool) -> bool {
    use std::cmp::Ordering;
    let fold = |s: &str| if case_exact { s.to_owned() } else { s.to_lowercase() };
    match (value, literal) {
        (Value::String(v), Literal::Str(l)) => {
            let (v, l) = (fold(v), fold(l));
            match op {
                CompareOp::Eq => v == l,
                CompareOp::Ne => v != l,
                CompareOp::Co => v.contains(&l),
                CompareOp::Sw => v.starts_with(&l),
                CompareOp::Ew => v.ends_with(&l),
                CompareOp::Gt => v > l,
                CompareOp::Ge => v >= l,
                CompareOp::Lt => v < l,
                CompareOp::Le => v <= l,
            }
        }
        (Value::Number(v), Literal::Number(l)) => {
            let (Some(v), Some(l)) = (v.as_f64(), l.as_f64()) else { return false };
            let order = v.partial_cmp(&l);
            match op {
                CompareOp::Eq => order == Some(Ordering::Equal),
                CompareOp::Ne => order != Some(Ordering::Equal),
                CompareOp::Gt => order == Some(Ordering::Greater),
                CompareOp::Ge => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
                CompareOp::Lt => order == Some(Ordering::Less),
                CompareOp::Le => matches!(order, Some(Ordering::Less | Ordering::Equal)),
                CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
            }
        }
        (Value::Bool(v), Literal::Bool(l)) => match op {
            CompareOp::Eq => v == l,
            CompareOp::Ne => v != l,
            _ => false,
        },
        _ => op == CompareOp::Ne,
    }
}

fn present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => true,
    }
}

impl Filter {
    /// Whether `resource` matches; `case_exact` says which attributes
    /// compare strings exactly (`id`, `externalId`, ...), the rest ignore case.
    pub fn matches(&self, resource: &Value, case_exact: &dyn Fn(&AttrPath) -> bool) -> bool {
        match self {
            Filter::Present(path) => values_at(resource, path).into_iter().any(present),
            Filter::Compare(path, op, literal) => {
                let values = values_at(resource, path);
                match (op, literal) {
                    (CompareOp::Eq, Literal::Null) => !values.into_iter().any(present),
                    (CompareOp::Ne, Literal::Null) => values.into_iter().any(present),
                    (CompareOp::Ne, _) => values.iter().all(|v| compare(v, *op, literal, case_exact(path))),
                    _ => values.iter().any(|v| compare(v, *op, literal, case_exact(path))),
                }
            }
            Filter::Has { attr, filter } => {
                let container = match &attr.uri {
                    Some(uri) if !uri.to_ascii_lowercase().contains(":core:") => get(resource, uri),
                    _ => Some(resource),
                };
                let elements = match container.and_then(|c| get(c, &attr.attr)) {
                    Some(Value::Array(items)) => items.iter().collect(),
                    Some(single) => vec![single],
                    None => Vec::new(),
                };
                let relative = |p: &AttrPath| case_exact(&AttrPath::below(attr, p));
                elements.into_iter().any(|e| filter.matches(e, &relative))
            }
            Filter::And(a, b) => a.matches(resource, case_exact) && b.matches(resource, case_exact),
            Filter::Or(a, b) => a.matches(resource, case_exact) || b.matches(resource, case_exact),
            Filter::Not(inner) => !inner.matches(resource, case_exact),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "bjensen",
            "userName": "Bjensen@Example.com",
            "name": {"familyName": "Jensen", "givenName": "Barbara"},
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "meta": {"lastModified": "2026-05-13T04:42:34Z", "resourceType": "User"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984", "costCenter": 4130}
        })
    }

    fn exact(path: &AttrPath) -> bool {
        path.is("id") || path.is("externalId")
    }

    /// Data-driven: each filter with whether the user matches it.
    #[test]
    fn every_operator_and_form_evaluates() {
        let u = user();
        for (filter, expected) in [
            (r#"userName eq "bjensen@example.com""#, true),
            (r#"USERNAME EQ "BJENSEN@EXAMPLE.COM""#, true),
            (r#"externalId eq "BJENSEN""#, false),
            (r#"externalId eq "bjensen""#, true),
            (r#"userName ne "someone""#, true),
            (r#"name.familyName co "ens""#, true),
            (r#"userName sw "bj""#, true),
            (r#"userName ew ".com""#, true),
            (r#"meta.lastModified gt "2026-01-01T00:00:00Z""#, true),
            (r#"meta.lastModified lt "2026-01-01T00:00:00Z""#, false),
            (r#"meta.lastModified ge "2026-05-13T04:42:34Z""#, true),
            (r#"meta.lastModified le "2026-05-13T04:42:33Z""#, false),
            ("title pr", false),
            ("name.givenName pr", true),
            ("active eq true", true),
            ("active ne true", false),
            ("nickName eq null", true),
            (r#"emails[type eq "work" and value co "@example.com"]"#, true),
            (r#"emails[type eq "home" and value co "@example.com"]"#, false),
            (r#"emails[type eq "work"].value co "@example.com""#, true),
            (r#"emails[type eq "home"].value co "@example.com""#, false),
            (r#"emails.value ew "jensen.org""#, true),
            (r#"emails co "babs""#, true),
            (r#"not (active eq false)"#, true),
            (r#"userName eq "x" or (name.givenName sw "Bar" and active eq true)"#, true),
            (r#"userName eq "x" or name.givenName sw "Bar" and active eq false"#, false),
            (r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#, true),
            (r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter gt 4000"#, true),
            (r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bjensen""#, true),
        ] {
            let parsed = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
            assert_eq!(parsed.matches(&u, &exact), expected, "{filter}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = parse(r#"a eq "1" or b eq "2" and c eq "3""#).unwrap();
        let Filter::Or(_, right) = f else { panic!("or at the top: {f:?}") };
        assert!(matches!(*right, Filter::And(_, _)));
    }

    #[test]
    fn malformed_filters_are_invalid_filter() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName eq "unclosed"#,
            r#"userName xx "a""#,
            r#"userName eq "a" and"#,
            r#"(userName eq "a""#,
            r#"userName eq "a")"#,
            r#"emails[type eq "work""#,
            r#"emails.value[type eq "work"]"#,
            "active gt true",
            r#"not userName eq "a""#,
            "userName eq 1.2.3",
            "userName eq 'single'",
            &"(".repeat(100),
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!((err.status, err.scim_type), (400, Some(ScimType::InvalidFilter)), "{bad:?}: {err}");
        }
        assert!(parse(&format!("userName eq \"{}\"", "a".repeat(MAX_FILTER_LEN))).is_err(), "too long");
    }
}
